"""Per-key min-max normalizer (diffpolicy.normalizer) fitted on dataset windows."""

import numpy as np
from helpers import bimodal_demos

from diffpolicy.dataset import make_windows, normalizer_data
from diffpolicy.normalizer import Normalizer


def test_normalizer_maps_to_unit_range_and_handles_constant_dims():
    demos = bimodal_demos(n=4, length=6)
    w = make_windows(demos, np.arange(4), ("observation", "desired_goal"), None, 2, 8)
    norm = Normalizer({"obs": 4, "action": 2})
    norm.fit(normalizer_data(w))
    import torch

    x = torch.from_numpy(w["obs"])
    z = norm.normalize("obs", x)
    assert torch.isfinite(z).all()
    assert z[..., :2].min() >= -1 - 1e-5 and z[..., :2].max() <= 1 + 1e-5
    assert torch.all(z[..., 2:] == 0)  # goal dims are constant in this data
    torch.testing.assert_close(norm.unnormalize("obs", z), x)
