"""Gaussian-mixture baseline (robomimic's GMM head) over the whole flattened chunk.

    p(a | o) = sum_k pi_k(o) N(vec(a); mu_k(o), diag(sigma_k(o)^2)),   vec(a) in R^(Tp*A)

mu_k and sigma_k come from the diffusion policy's UNet (zero input chunk, step 0, like the MSE
baseline) with 2*K*A output channels, so all three policies share the backbone and its capacity;
the temporal convolutions give every component a smooth chunk. The mixture logits pi_k(o) are a
function of the observation only, so they come from a small MLP on the global condition (the
UNet's outputs are per time step). sigma = softplus(.) + min_std (robomimic). Evaluation samples a
component from the logits and outputs its mean ("low-noise" evaluation, as in robomimic).
Batch keys as in `diffusion.py`.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn
from torch.distributions import Categorical, Independent, MixtureSameFamily, Normal

from diffpolicy.config import Config, Sampling
from diffpolicy.policies.condition import (
    ConditionEncoder,
    condition_dropout,
    global_condition,
    make_image_encoder,
    make_normalizer,
    make_unet,
)


class GMMPolicy(nn.Module):
    def __init__(self, cfg: Config):
        super().__init__()
        self.cfg = cfg
        self.horizon, self.action_dim = cfg.data.horizon, cfg.dims["action_dim"]
        self.k = cfg.policy.gmm_components
        self.min_std = cfg.policy.gmm_min_std
        self.normalizer = make_normalizer(cfg)
        self.image_encoder = make_image_encoder(cfg)
        self.cond_encoder = ConditionEncoder(cfg)
        self.model = make_unet(cfg, output_dim=2 * self.k * self.action_dim)
        hidden = cfg.model.down_dims[-1]
        self.logits_head = nn.Sequential(
            nn.Linear(cfg.global_cond_dim, hidden),
            nn.Mish(),
            nn.Linear(hidden, hidden),
            nn.Mish(),
            nn.Linear(hidden, self.k),
        )

    def reset(self) -> None:
        """Stateless between chunks."""

    def forward(
        self, batch: dict[str, Tensor], drop: Tensor | None = None
    ) -> tuple[Tensor, Tensor, Tensor]:
        """logits (B, K), means (B, K, Tp*A), stds (B, K, Tp*A), in normalized units."""
        cond = global_condition(self, batch, drop)  # (B, Gc)
        zeros = cond.new_zeros((cond.shape[0], self.horizon, self.action_dim))
        out = self.model(zeros, 0, cond)  # (B, Tp, 2*K*A)
        out = rearrange(out, "b t (two k a) -> two b k (t a)", two=2, k=self.k)
        means, stds = out[0], F.softplus(out[1]) + self.min_std
        return self.logits_head(cond), means, stds

    def compute_loss(self, batch: dict[str, Tensor]) -> Tensor:
        """Mixture NLL of the normalized chunk per action dimension, over unpadded steps.

        Padded steps are marginalized out: there every component gets mean 0, std 1 and target 0,
        which adds the same constant to each component's log-likelihood; the constant is removed.
        """
        target = self.normalizer.normalize("action", batch["action"].float())  # (B, Tp, A)
        B = target.shape[0]
        logits, means, stds = self(batch, condition_dropout(self.cfg, B, target.device))
        x = rearrange(target, "b t a -> b (t a)")  # (B, Tp*A)
        n_dims = x.shape[1]
        mask = batch.get("action_mask")
        if mask is not None:
            keep = mask.bool().repeat_interleave(self.action_dim, dim=1)  # (B, Tp*A)
            x = torch.where(keep, x, torch.zeros_like(x))
            means = torch.where(keep[:, None], means, torch.zeros_like(means))
            stds = torch.where(keep[:, None], stds, torch.ones_like(stds))
            n_padded = (~keep).sum(1).to(x.dtype)  # (B,)
            n_kept = keep.sum(1).to(x.dtype)
        else:
            n_padded = torch.zeros(B, device=x.device)
            n_kept = torch.full((B,), float(n_dims), device=x.device)
        mixture = MixtureSameFamily(Categorical(logits=logits), Independent(Normal(means, stds), 1))
        log_prob = mixture.log_prob(x) + n_padded * 0.5 * math.log(2 * math.pi)  # (B,)
        return -(log_prob.sum() / n_kept.sum().clamp_min(1.0))

    @torch.inference_mode()
    def predict_action_chunk(
        self,
        obs: dict[str, Tensor],
        sampling: Sampling | None = None,
        *,
        generator: torch.Generator | None = None,
    ) -> Tensor:
        """Sample a component from the logits, output its mean: (B, Tp, A) in env units.
        (`sampling` has no meaning for a mixture head and is ignored.)"""
        logits, means, _ = self(obs)
        k = torch.multinomial(logits.softmax(-1), 1, generator=generator)  # (B, 1)
        mean = means.gather(1, k[:, :, None].expand(-1, 1, means.shape[-1]))[:, 0]  # (B, Tp*A)
        chunk = rearrange(mean, "b (t a) -> b t a", a=self.action_dim)
        return self.normalizer.unnormalize("action", chunk)
