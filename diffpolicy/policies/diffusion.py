"""Diffusion policy: a conditional 1D UNet denoises a chunk of Tp future actions (or, with
`prediction_type: velocity`, integrates the flow-matching velocity from noise to the chunk).

Batch (env units; normalization happens here):
    obs (B, To, Do), action (B, Tp, A), action_mask (B, Tp) bool, <camera key> (B, To, H, W, 3)
    uint8 per `data.image_keys`, goal (B, G) when
    dims["goal_dim"] > 0, mode (B,) int64 when policy.reads_mode (mode runs, grounded
    language runs), lang (B, E) for language runs without grounding.

Sampling (`predict_action_chunk`, settings in a typed `Sampling`) goes through
`diffpolicy/fastpath.py`: FiLM tables computed once per call, a frozen trace of the UNet body on
CPU, a CUDA graph of the whole call on GPU.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from diffpolicy.config import Config, Sampling
from diffpolicy.fastpath import FastSampler
from diffpolicy.policies.condition import (
    ConditionEncoder,
    condition_dropout,
    global_condition,
    make_image_encoder,
    make_normalizer,
    make_unet,
    masked_mean,
    observation_features,
)
from diffpolicy.schedulers import NoiseSchedule, sample, with_lowpass


class DiffusionPolicy(nn.Module):
    def __init__(self, cfg: Config):
        super().__init__()
        self.cfg = cfg
        p = cfg.policy
        self.horizon, self.action_dim = cfg.data.horizon, cfg.dims["action_dim"]
        self.normalizer = make_normalizer(cfg)
        self.image_encoder = make_image_encoder(cfg)
        self.cond_encoder = ConditionEncoder(cfg)
        self.model = make_unet(cfg)
        self.schedule = NoiseSchedule(p.num_train_timesteps, p.beta_schedule, p.timestep_spacing)
        self.fast = FastSampler(self.model, self.schedule, p.prediction_type, p.clip_sample)

    def reset(self) -> None:
        """Stateless between chunks."""

    def compute_loss(self, batch: dict[str, Tensor]) -> Tensor:
        """Denoising loss: MSE between the prediction and eps (or x0) over unpadded steps; for
        flow matching (prediction_type velocity) the MSE to eps - x0 at x_t = (1 - t) x0 + t eps,
        t ~ U(0, 1), the model's time input t * T."""
        x0 = self.normalizer.normalize("action", batch["action"].float())  # (B, Tp, A)
        B = x0.shape[0]
        drop = condition_dropout(self.cfg, B, x0.device)
        cond = global_condition(self, batch, drop)  # (B, Gc)
        eps = torch.randn_like(x0)
        T, kind = self.schedule.num_train_timesteps, self.cfg.policy.prediction_type
        if kind == "velocity":
            t = torch.rand((B, 1, 1), device=x0.device)
            pred = self.model((1.0 - t) * x0 + t * eps, t.view(B) * T, cond)  # (B, Tp, A)
            target = eps - x0
        else:
            t = torch.randint(0, T, (B,), device=x0.device)
            pred = self.model(self.schedule.add_noise(x0, eps, t), t, cond)  # (B, Tp, A)
            target = eps if kind == "epsilon" else x0
        return masked_mean((pred - target) ** 2, batch.get("action_mask"))

    def denoiser(self, batch: dict[str, Tensor], guidance: float):
        """(x_t (B, Tp, A), t (B,)) -> model output, with classifier-free guidance w.

        w == 1 (or no extra condition): one conditional pass. w == 0: one unconditional pass.
        Otherwise cond and uncond run as one batch of 2B:
        out = out_uncond + w * (out_cond - out_uncond).
        """
        B = batch["obs"].shape[0]
        device = batch["obs"].device
        features = observation_features(self, batch)  # the cameras are encoded once
        if self.cfg.policy.condition == "none" or guidance == 1.0:
            cond = global_condition(self, batch, features=features)
            return lambda x_t, t: self.model(x_t, t, cond)
        null = torch.ones(B, dtype=torch.bool, device=device)
        uncond = global_condition(self, batch, drop=null, features=features)
        if guidance == 0.0:
            return lambda x_t, t: self.model(x_t, t, uncond)
        cond = global_condition(self, batch, features=features)
        both = torch.cat((cond, uncond))  # (2B, Gc)

        def guided(x_t: Tensor, t: Tensor) -> Tensor:
            out = self.model(torch.cat((x_t, x_t)), torch.cat((t, t)), both)  # (2B, Tp, A)
            out_cond, out_uncond = out.chunk(2)
            return out_uncond + guidance * (out_cond - out_uncond)

        return guided

    def sample(
        self,
        obs: dict[str, Tensor],
        x_T: Tensor,
        sampling: Sampling,
        generator: torch.Generator | None = None,
        return_x0: bool = False,
    ) -> Tensor | tuple[Tensor, Tensor]:
        """The reverse process from given noise x_T (B, Tp, A) -> normalized x_0 (B, Tp, A),
        unclipped (and the x0_hat trace (S, B, Tp, A) with `return_x0`).

        Without guidance (w in {0, 1} or no extra condition) one UNet pass per step runs over
        precomputed FiLM tables (`diffpolicy/fastpath.py`); otherwise cond and uncond run as one
        batch of 2B per step (`denoiser`). With `obs["prefix_action"]` (B, Tp, A) env units and
        `obs["prefix_weight"]` (B, Tp) in [0, 1], every step's x0_hat is pulled towards the
        prefix by that weight (inpainting: real-time chunking in controller.py). With
        `sampling.lowpass` K > 0, every step's x0_hat is first projected onto the chunk's K
        lowest temporal frequencies (`lowpass_projector`).
        """
        p, w = self.cfg.policy, sampling.guidance
        guide = self.prefix_guide(obs)
        if p.condition == "none" or w in (0.0, 1.0):
            drop = None
            if p.condition != "none" and w == 0.0:
                drop = torch.ones(x_T.shape[0], dtype=torch.bool, device=x_T.device)
            cond = global_condition(self, obs, drop)  # (B, Gc)
            return self.fast.sample(cond, x_T, sampling, generator, return_x0, guide)
        return sample(
            self.denoiser(obs, w),
            self.schedule,
            x_T,
            sampler=sampling.sampler,
            steps=sampling.steps,
            prediction_type=p.prediction_type,
            clip_sample=p.clip_sample,
            generator=generator,
            return_x0=return_x0,
            x0_guide=with_lowpass(guide, sampling.lowpass, x_T),
        )

    def prefix_guide(self, obs: dict[str, Tensor]):
        """x0_hat -> x0_hat + w (y - x0_hat) for the batch's prefix (None without one)."""
        if "prefix_action" not in obs:
            return None
        y = self.normalizer.normalize("action", obs["prefix_action"].float())  # (B, Tp, A)
        w = obs["prefix_weight"].float()[..., None]  # (B, Tp, 1)
        return lambda x0_hat: x0_hat + w * (y - x0_hat)

    @torch.inference_mode()
    def predict_action_chunk(
        self,
        obs: dict[str, Tensor],
        sampling: Sampling | None = None,
        *,
        generator: torch.Generator | None = None,
        return_x0: bool = False,
    ) -> Tensor | tuple[Tensor, Tensor]:
        """Sample a chunk (B, Tp, A) in env units (`sampling`: the run's own by default).

        With `return_x0=True` also returns x0_trace (S, B, Tp, A): the predicted clean chunk
        x0_hat of every reverse step (after clipping), in env units, for the interpolation
        detector. x_T and DDPM's noise come from `generator` when given.
        """
        sampling = sampling or Sampling.of(self.cfg.policy)
        B, device = obs["obs"].shape[0], obs["obs"].device
        x_T = torch.randn((B, self.horizon, self.action_dim), generator=generator, device=device)
        out = self.sample(obs, x_T, sampling, generator, return_x0)
        if return_x0:
            x_0, trace = out
            return self.finish(x_0), self.normalizer.unnormalize("action", trace)
        return self.finish(out)

    def finish(self, x_0: Tensor) -> Tensor:
        """Normalized x_0 -> clipped (if clip_sample) chunk in env units."""
        x_0 = x_0.clamp(-1.0, 1.0) if self.cfg.policy.clip_sample else x_0
        return self.normalizer.unnormalize("action", x_0)
