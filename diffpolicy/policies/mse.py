"""Regression baseline: the diffusion policy's UNet predicts the normalized chunk directly.

Same architecture as the denoiser (the UNet with a zero input chunk and diffusion step 0), so the
comparison isolates the training objective: with multi-modal demonstrations the MSE optimum is
the conditional mean, i.e. this policy averages modes. Batch keys as in `diffusion.py`.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from diffpolicy.config import Config, Sampling
from diffpolicy.policies.condition import (
    ConditionEncoder,
    condition_dropout,
    global_condition,
    make_image_encoder,
    make_normalizer,
    make_unet,
    masked_mean,
)


class MSEPolicy(nn.Module):
    def __init__(self, cfg: Config):
        super().__init__()
        self.cfg = cfg
        self.horizon, self.action_dim = cfg.data.horizon, cfg.dims["action_dim"]
        self.normalizer = make_normalizer(cfg)
        self.image_encoder = make_image_encoder(cfg)
        self.cond_encoder = ConditionEncoder(cfg)
        self.model = make_unet(cfg)

    def reset(self) -> None:
        """Stateless between chunks."""

    def forward(self, batch: dict[str, Tensor], drop: Tensor | None = None) -> Tensor:
        """Normalized chunk (B, Tp, A) from the global condition."""
        cond = global_condition(self, batch, drop)  # (B, Gc)
        zeros = cond.new_zeros((cond.shape[0], self.horizon, self.action_dim))
        return self.model(zeros, 0, cond)

    def compute_loss(self, batch: dict[str, Tensor]) -> Tensor:
        """MSE to the normalized target chunk over unpadded steps."""
        target = self.normalizer.normalize("action", batch["action"].float())  # (B, Tp, A)
        drop = condition_dropout(self.cfg, target.shape[0], target.device)
        return masked_mean((self(batch, drop) - target) ** 2, batch.get("action_mask"))

    @torch.inference_mode()
    def predict_action_chunk(
        self,
        obs: dict[str, Tensor],
        sampling: Sampling | None = None,
        *,
        generator: torch.Generator | None = None,
    ) -> Tensor:
        """Deterministic chunk (B, Tp, A) in env units (`sampling` and `generator` unused)."""
        return self.normalizer.unnormalize("action", self(obs))
