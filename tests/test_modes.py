"""Tests of the toy mode study (diffpolicy.modes), including the whole `--quick` run."""

import json

import numpy as np
import pytest
import torch

from diffpolicy import metrics as M
from diffpolicy import modes
from diffpolicy.schedulers import NoiseSchedule


@pytest.fixture(autouse=True)
def _one_thread():
    """Small MLPs: two threads on a shared 2-core machine are many times slower than one."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _mix(name):
    return next(m for m in modes.study_mixtures(quick=False) if m.name == name)


def test_mixtures_and_true_samples_score_as_expected():
    names = [m.name for m in modes.study_mixtures(quick=False)]
    assert {"1d_2modes_5s", "1d_2modes_40s", "1d_3modes_20s", "ring8", "grid5x5"} <= set(names)
    assert any(min(m.weights) < max(m.weights) for m in modes.study_mixtures(quick=False))
    ring = _mix("ring8")
    assert ring.centers.shape == (8, 2) and ring.separation == pytest.approx(15.31, abs=0.01)
    x, m = modes.sample_mixture(ring, 4000, np.random.default_rng(0))
    assert np.abs(x / modes.mixture_scale(ring)).max() <= 1.0 + 1e-9  # inside the clip range
    r = modes.score_samples(ring, x)
    assert r["interpolation_rate"] < 0.005 and r["within_3sigma"] > 0.98
    assert r["modes_covered"] == 8 and r["normalized_entropy"] > 0.99 and r["tv_to_true"] < 0.05
    assert r["hist_kl"] < 0.6  # finite-sample floor of a 50x50 histogram
    assert (M.assign_modes(x, ring.centers) == m).mean() > 0.999


def test_average_of_modes_scores_as_interpolation():
    mix = _mix("1d_2modes_20s")
    r = modes.score_samples(mix, np.zeros((100, 1)))
    assert r["interpolation_rate"] == 1.0 and r["modes_covered"] == 0 and r["tv_to_true"] == 1.0
    assert r["hist_kl"] > 5.0


def test_gmm_with_too_few_components_merges_modes():
    ring = _mix("ring8")
    x, _ = modes.sample_mixture(ring, 4000, np.random.default_rng(0))
    few = modes.score_samples(ring, modes.gmm_samples(x, 2, 2000, seed=0))
    equal = modes.score_samples(ring, modes.gmm_samples(x, 8, 2000, seed=0))
    assert few["interpolation_rate"] > 0.5 and few["modes_covered"] < 8
    assert equal["interpolation_rate"] < 0.02 and equal["modes_covered"] == 8


def test_regression_collapses_to_the_mean():
    mix = _mix("1d_2modes_20s")
    x, _ = modes.sample_mixture(mix, 4000, np.random.default_rng(0))
    scale = modes.mixture_scale(mix)
    y = modes.regression_samples(x / scale, 200, steps=300, seed=0) * scale
    assert np.abs(y - x.mean()).max() < 2.0  # within 2 sigma of the average of the modes
    assert modes.score_samples(mix, y)["interpolation_rate"] > 0.9


def test_denoiser_trains_and_samples_with_trace():
    mix = _mix("1d_3modes_20s")
    x, m = modes.sample_mixture(mix, 2000, np.random.default_rng(0))
    scale = modes.mixture_scale(mix)
    schedule = NoiseSchedule(100)
    net = modes.train_denoiser(x / scale, schedule, steps=300, seed=0, modes=m, num_modes=3)
    asked = np.arange(300) % 3
    x0, trace = modes.diffusion_samples(net, schedule, 300, "ddim", 8, seed=1, mode=asked)
    assert x0.shape == (300, 1) and trace.shape == (8, 300, 1)
    assert np.abs(x0).max() <= 1.0 + 1e-6  # clip_sample
    np.testing.assert_allclose(trace[-1], x0, atol=1e-5)
    hit = M.assign_modes(x0 * scale, mix.centers) == asked
    assert hit.mean() > 0.6  # even briefly trained, the mode embedding steers samples
    # Chance is 1/3 and an embedding that reaches only two of the three modes scores 2/3, so
    # 0.6 proved little. Measured over data seeds 0-2 x train seeds 0-2 x sampling seeds 1-3:
    # overall 0.997-1.0 (this test's seeds: 1.0), every mode at least 0.99.
    assert hit.mean() > 0.95, hit.mean()
    per_mode = [hit[asked == k].mean() for k in range(3)]
    assert min(per_mode) > 0.9, per_mode  # each of the three modes is reached when asked
    assert M.x0_variance_score(trace, 2).shape == (300,)


def test_markdown_report_renders_minimal_result():
    mix = _mix("1d_3modes_20s")
    row = modes.score_samples(mix, modes.sample_mixture(mix, 500, np.random.default_rng(0))[0])
    ds = {
        "num_modes": 3,
        "dim": 1,
        "separation_sigma": 20.0,
        "weights": [1 / 3] * 3,
        "models": {"data": row},
        "detector": {},
    }
    ref = {
        str(s): {"reference": modes.REFERENCE_INTERP.get(s), "ddpm": 0.1, "ddim": 0.2}
        for s in modes.STEPS
    }
    result = {
        "config": {"quick": True, "train_steps": 1, "n_eval": 1, "seed": 0},
        "datasets": {"1d_3modes_20s": ds},
        "reference_check": ref,
    }
    md = modes.markdown_report(result)
    assert "| data |" in md and "| 100 | 0.10% |" in md
    json.dumps(result)


def test_quick_study_shows_the_qualitative_ordering(tmp_path):
    r = modes.run_study(quick=True, out_dir=tmp_path, seed=0)
    assert (tmp_path / "modes.json").exists() and (tmp_path / "modes.md").exists()
    for f in r["figures"]:
        assert (tmp_path / f).stat().st_size > 1000
    assert json.loads((tmp_path / "modes.json").read_text())["config"]["quick"] is True
    ring = r["datasets"]["ring8"]["models"]
    assert ring["ddpm_100"]["modes_covered"] == 8  # diffusion covers the ring
    assert ring["gmm_2"]["modes_covered"] < 8  # two components cannot
    assert ring["gmm_2"]["interpolation_rate"] > 0.5
    assert ring["regression"]["interpolation_rate"] > 0.9  # regression lands in the middle
    three = r["datasets"]["1d_3modes_20s"]["models"]
    assert three["regression"]["modes_covered"] == 1  # the average is the middle mode
    rates = [three[f"ddim_{s}"]["interpolation_rate"] for s in (4, 8, 100)]
    assert rates[0] > rates[1] > rates[2]  # fewer DDIM steps -> more interpolation
    assert three["ddim_4"]["interpolation_rate"] > 3 * three["ddpm_100"]["interpolation_rate"]
    cond = r["datasets"]["ring8"]["conditional"]
    assert cond["ddpm_100"]["accuracy"] > 0.9  # asked mode is the mode we get
    # flow matching (same architecture and budget, Euler / Heun): it keeps every mode of the
    # ring, and it too interpolates more with fewer steps (seed 0, quick: Euler 39.4% / 7.8% /
    # 0.9% at 4 / 8 / 100 steps, Heun 23.8% / 0.6% at 4 / 100)
    flow = [three[f"euler_{s}"]["interpolation_rate"] for s in (4, 8, 100)]
    assert flow[0] > flow[1] > flow[2] and flow[0] > 3 * flow[2], flow
    assert three["heun_4"]["interpolation_rate"] > 3 * three["heun_100"]["interpolation_rate"]
    assert ring["euler_100"]["modes_covered"] == 8 and ring["heun_100"]["modes_covered"] == 8
    # the detector as Aithal et al. compute it (T = 1000 DDPM, last 10 steps): seed 0, quick:
    # 3.7% interpolated, 64% of them removed at 96% kept, AUC 0.96 (chance 0.5)
    paper = r["datasets"]["1d_3modes_20s"]["paper_detector"]
    assert paper["sampler"] == "ddpm_1000" and paper["num_bad"] > 20
    assert paper["auc"] > 0.85 and paper["removed_bad_at_keep"] > 0.3, paper["auc"]
