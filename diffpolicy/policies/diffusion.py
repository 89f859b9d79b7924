"""Diffusion policy: a conditional 1D UNet denoises a chunk of Tp future actions.

Batch (env units; normalization happens here):
    obs (B, To, Do), action (B, Tp, A), action_mask (B, Tp) bool, goal (B, G) when
    dims["goal_dim"] > 0, mode (B,) int64 when condition == "mode", lang (B, E) when
    condition == "language".

Sampling (`predict_action_chunk`) runs the UNet body over FiLM parameters precomputed for the
whole run (`ConditionalUnet1D.film_table`): the global condition is constant over the loop.
On CPU in eval mode the body is a frozen TorchScript trace per batch shape (several times
fewer per-op overheads at batch 1), rebuilt when the weights change; on CUDA the whole
deterministic sampler call (ddim, dpmpp) is captured once per shape as a CUDA graph and replayed.
"""

from __future__ import annotations

import warnings

import torch
from torch import Tensor, nn

from diffpolicy.config import Config
from diffpolicy.models.unet1d import ConditionalUnet1D
from diffpolicy.policies.condition import (
    ConditionEncoder,
    condition_dropout,
    global_condition,
    make_normalizer,
    make_unet,
    masked_mean,
)
from diffpolicy.schedulers import NoiseSchedule, sample


class DiffusionPolicy(nn.Module):
    def __init__(self, cfg: Config):
        super().__init__()
        self.cfg = cfg
        p = cfg.policy
        self.horizon, self.action_dim = cfg.data.horizon, cfg.dims["action_dim"]
        self.normalizer = make_normalizer(cfg)
        self.cond_encoder = ConditionEncoder(cfg)
        self.model = make_unet(cfg)
        self.schedule = NoiseSchedule(p.num_train_timesteps, p.beta_schedule, p.timestep_spacing)
        # CPU: frozen TorchScript trace of the UNet body for sampling. It pays where per-op
        # overhead dominates (small models); a trace holds its own copy of the weights, so
        # large models (the published 65.8M) sample eagerly.
        self.jit = sum(q.numel() for q in self.model.parameters()) < 5_000_000
        self.cuda_graphs = True  # CUDA: replay the whole ddim/dpmpp sampler as a CUDA graph
        self.cuda_bf16 = False  # CUDA: bf16 autocast of the UNet body (opt-in)
        self._compiled: dict[tuple, object] = {}  # traced bodies / captured graphs per shape

    def reset(self) -> None:
        """Stateless between chunks."""

    def compute_loss(self, batch: dict[str, Tensor]) -> Tensor:
        """Denoising loss: MSE between the prediction and eps (or x0) over unpadded steps."""
        x0 = self.normalizer.normalize("action", batch["action"].float())  # (B, Tp, A)
        B = x0.shape[0]
        drop = condition_dropout(self.cfg, B, x0.device)
        cond = global_condition(self.normalizer, self.cond_encoder, batch, drop)  # (B, Gc)
        eps = torch.randn_like(x0)
        t = torch.randint(0, self.schedule.num_train_timesteps, (B,), device=x0.device)
        x_t = self.schedule.add_noise(x0, eps, t)
        pred = self.model(x_t, t, cond)  # (B, Tp, A)
        target = eps if self.cfg.policy.prediction_type == "epsilon" else x0
        return masked_mean((pred - target) ** 2, batch.get("action_mask"))

    def denoiser(self, batch: dict[str, Tensor], guidance: float):
        """(x_t (B, Tp, A), t (B,)) -> model output, with classifier-free guidance w.

        w == 1 (or no extra condition): one conditional pass. w == 0: one unconditional pass.
        Otherwise cond and uncond run as one batch of 2B:
        out = out_uncond + w * (out_cond - out_uncond).
        """
        B = batch["obs"].shape[0]
        device = batch["obs"].device
        if self.cfg.policy.condition == "none" or guidance == 1.0:
            cond = global_condition(self.normalizer, self.cond_encoder, batch)
            return lambda x_t, t: self.model(x_t, t, cond)
        null = torch.ones(B, dtype=torch.bool, device=device)
        uncond = global_condition(self.normalizer, self.cond_encoder, batch, drop=null)
        if guidance == 0.0:
            return lambda x_t, t: self.model(x_t, t, uncond)
        cond = global_condition(self.normalizer, self.cond_encoder, batch)
        both = torch.cat((cond, uncond))  # (2B, Gc)

        def guided(x_t: Tensor, t: Tensor) -> Tensor:
            out = self.model(torch.cat((x_t, x_t)), torch.cat((t, t)), both)  # (2B, Tp, A)
            out_cond, out_uncond = out.chunk(2)
            return out_uncond + guidance * (out_cond - out_uncond)

        return guided

    def _weights_version(self) -> tuple:
        """Changes whenever a parameter is modified in place (optimizer step, EMA, loading)."""
        return tuple(p._version for p in self.model.parameters())

    def _cache(self, key: tuple, build):
        """Compiled artifact for `key`, rebuilt after any weight change."""
        version = self._weights_version()
        hit = self._compiled.get(key)
        if hit is None or hit[0] != version:
            if len(self._compiled) >= 8:
                self._compiled.clear()
            hit = self._compiled[key] = (version, build())
        return hit[1]

    def _body(self, x: Tensor, film: Tensor):
        """(x_t (B, Tp, A), film (B, F, 1)) -> model output: eager, or a frozen trace on CPU."""
        if not (self.jit and x.device.type == "cpu" and not self.training):
            return self.model.forward_film

        def build():
            body = _FilmBody(self.model).eval()
            with torch.no_grad(), warnings.catch_warnings():
                warnings.simplefilter("ignore")  # TracerWarning / TorchScript deprecation
                traced = torch.jit.trace(body, (x, film), check_trace=False)
                return torch.jit.freeze(traced)

        # one trace per input shape: traced graphs bake in shapes (and each Conv1d's choice
        # of kernel, which depends on B and T)
        key = ("jit", tuple(x.shape), tuple(film.shape), x.dtype)
        return self._cache(key, build)

    def _sample_fast(
        self, cond: Tensor, x_T: Tensor, sampler: str, steps: int, generator, return_x0: bool
    ):
        """The sampler over precomputed FiLM tables (one UNet body call per step).

        Returns the normalized x_0 (B, Tp, A) (and the x0 trace with `return_x0`).
        """
        p = self.cfg.policy
        timesteps = self.schedule.plan(sampler, steps, x_T.device).timesteps
        kw = dict(
            sampler=sampler,
            steps=steps,
            prediction_type=p.prediction_type,
            clip_sample=p.clip_sample,
            indexed=True,
        )
        if self.cuda_graphs and x_T.device.type == "cuda" and sampler != "ddpm" and not return_x0:
            return self._cuda_graph_sample(timesteps, cond, x_T, kw)
        film = self.model.film_table(timesteps, cond)  # (S, B, F, 1)
        body = self._body(x_T, film[0])
        return sample(
            lambda x_t, i: body(x_t, film[i]),
            self.schedule,
            x_T,
            generator=generator,
            return_x0=return_x0,
            **kw,
        )

    def _finish(self, x_0: Tensor) -> Tensor:
        """Normalized x_0 -> clipped (if clip_sample) chunk in env units."""
        x_0 = x_0.clamp(-1.0, 1.0) if self.cfg.policy.clip_sample else x_0
        return self.normalizer.unnormalize("action", x_0)

    def _cuda_graph_sample(self, timesteps: Tensor, cond: Tensor, x_T: Tensor, kw: dict):
        """Replay of one captured call (FiLM table and sampler) with static (x_T, cond) input
        buffers. Returns the normalized x_0 (B, Tp, A), as `_sample_fast` does eagerly.

        ddim and dpmpp are deterministic given x_T, and their per-step coefficients are Python
        floats baked into the graph, so a replay computes exactly what an eager call would.
        """
        bf16 = self.cuda_bf16

        def run(x: Tensor, c: Tensor) -> Tensor:
            film = self.model.film_table(timesteps, c)  # (S, B, F, 1)

            def body(x_t: Tensor, i: int) -> Tensor:
                with torch.autocast("cuda", torch.bfloat16, enabled=bf16):
                    return self.model.forward_film(x_t, film[i]).float()

            return sample(body, self.schedule, x, **kw)

        def build():
            static_x, static_cond = x_T.clone(), cond.clone()
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):  # warm-up outside the capture (allocator, kernels)
                for _ in range(2):
                    run(static_x, static_cond)
            torch.cuda.current_stream().wait_stream(side)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):
                static_out = run(static_x, static_cond)
            return graph, static_x, static_cond, static_out

        key = ("cuda_graph", kw["sampler"], kw["steps"], tuple(x_T.shape), tuple(cond.shape), bf16)
        graph, static_x, static_cond, static_out = self._cache(key, build)
        static_x.copy_(x_T)
        static_cond.copy_(cond)
        graph.replay()
        return static_out.clone()

    @torch.inference_mode()
    def predict_action_chunk(
        self,
        obs: dict[str, Tensor],
        *,
        sampler: str | None = None,
        steps: int | None = None,
        guidance: float | None = None,
        generator: torch.Generator | None = None,
        return_x0: bool = False,
    ) -> Tensor | tuple[Tensor, Tensor]:
        """Sample a chunk (B, Tp, A) in env units.

        With `return_x0=True` also returns x0_trace (S, B, Tp, A): the predicted clean chunk
        x0_hat of every reverse step (after clipping), in env units, for the interpolation
        detector. x_T and DDPM's noise come from `generator` when given.
        """
        p = self.cfg.policy
        B = obs["obs"].shape[0]
        device = obs["obs"].device
        w = p.guidance if guidance is None else guidance
        sampler, steps = sampler or p.sampler, steps or p.num_inference_steps
        x_T = torch.randn((B, self.horizon, self.action_dim), generator=generator, device=device)
        if p.condition == "none" or w in (0.0, 1.0):  # one UNet pass per step: FiLM tables
            drop = (
                None
                if p.condition == "none" or w == 1.0
                else torch.ones(B, dtype=torch.bool, device=device)
            )
            cond = global_condition(self.normalizer, self.cond_encoder, obs, drop)  # (B, Gc)
            out = self._sample_fast(cond, x_T, sampler, steps, generator, return_x0)
        else:
            out = sample(
                self.denoiser(obs, w),
                self.schedule,
                x_T,
                sampler=sampler,
                steps=steps,
                prediction_type=p.prediction_type,
                clip_sample=p.clip_sample,
                generator=generator,
                return_x0=return_x0,
            )
        if return_x0:
            x_0, trace = out
            return self._finish(x_0), self.normalizer.unnormalize("action", trace)
        return self._finish(out)


class _FilmBody(nn.Module):
    """forward(x, film) = unet.forward_film(x, film), as a module for torch.jit.trace."""

    def __init__(self, unet: ConditionalUnet1D):
        super().__init__()
        self.unet = unet

    def forward(self, x: Tensor, film: Tensor) -> Tensor:
        return self.unet.forward_film(x, film)
