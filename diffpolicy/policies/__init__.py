"""Policies (diffusion, mse, gmm) sharing one protocol:

    compute_loss(batch) -> scalar
    predict_action_chunk(obs, sampling: Sampling | None = None, *, generator=None)
        -> (B, Tp, A) in env units (sampling: the run's own when None; only diffusion uses it)
    reset()
    .normalizer (fit by the trainer), .cfg

Batch keys and shapes: see `diffusion.py`.
"""

from __future__ import annotations

from torch import nn

from diffpolicy.config import Config
from diffpolicy.policies.diffusion import DiffusionPolicy
from diffpolicy.policies.gmm import GMMPolicy
from diffpolicy.policies.mse import MSEPolicy

__all__ = ["DiffusionPolicy", "GMMPolicy", "MSEPolicy", "make_policy"]


def make_policy(cfg: Config) -> nn.Module:
    """Build the policy named by cfg.policy.type; cfg.dims must be filled from the dataset."""
    for key in ("obs_dim", "action_dim"):
        if key not in cfg.dims:
            raise ValueError(f"cfg.dims lacks {key!r}: fill cfg.dims from the dataset first")
    if cfg.policy.type == "diffusion":
        return DiffusionPolicy(cfg)
    elif cfg.policy.type == "mse":
        return MSEPolicy(cfg)
    elif cfg.policy.type == "gmm":
        return GMMPolicy(cfg)
    raise ValueError(f"policy.type={cfg.policy.type!r} must be diffusion, mse or gmm")
