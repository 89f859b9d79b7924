"""Per-dimension min-max normalization to [-1, 1], stored as buffers so it is saved with a policy.

Constant dimensions (range below `eps`) map to 0 instead of dividing by zero.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn


class Normalizer(nn.Module):
    """Holds `<name>_min` / `<name>_max` buffers for each normalized field (obs, action, goal).

    Example:
        norm = Normalizer({"obs": 4, "action": 2})
        norm.fit({"obs": obs_array (N, 4), "action": act_array (N, 2)})
        x = norm.normalize("obs", obs)   # (..., 4) in [-1, 1]
    """

    def __init__(self, dims: dict[str, int], eps: float = 1e-6):
        super().__init__()
        self.eps = eps
        self.names = tuple(dims)
        for name, d in dims.items():
            self.register_buffer(f"{name}_min", -torch.ones(d))
            self.register_buffer(f"{name}_max", torch.ones(d))

    def fit(self, data: dict[str, np.ndarray]) -> None:
        """Set min/max from arrays of shape (N, D) (flattened over time)."""
        for name, x in data.items():
            x = torch.as_tensor(np.asarray(x, dtype=np.float32)).reshape(-1, x.shape[-1])
            getattr(self, f"{name}_min").copy_(x.min(0).values)
            getattr(self, f"{name}_max").copy_(x.max(0).values)

    def _scale_offset(self, name: str) -> tuple[torch.Tensor, torch.Tensor]:
        lo, hi = getattr(self, f"{name}_min"), getattr(self, f"{name}_max")
        span = hi - lo
        constant = span < self.eps
        scale = torch.where(constant, torch.ones_like(span), 2.0 / span.clamp_min(self.eps))
        offset = torch.where(constant, -lo, -1.0 - lo * scale)
        return scale, offset

    def normalize(self, name: str, x: torch.Tensor) -> torch.Tensor:
        """(..., D) env units -> (..., D) in [-1, 1] on the training data's range."""
        scale, offset = self._scale_offset(name)
        return x * scale + offset

    def unnormalize(self, name: str, x: torch.Tensor) -> torch.Tensor:
        """(..., D) normalized -> (..., D) env units."""
        scale, offset = self._scale_offset(name)
        return (x - offset) / scale
