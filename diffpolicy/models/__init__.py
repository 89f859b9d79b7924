"""Networks: the conditional temporal 1D UNet shared by all policies."""

from diffpolicy.models.unet1d import ConditionalUnet1D

__all__ = ["ConditionalUnet1D"]
