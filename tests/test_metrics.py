"""Unit tests of the shared mode metrics (diffpolicy.metrics)."""

import numpy as np
import pytest
import torch

from diffpolicy import metrics as M


def test_normalized_entropy_reference_values():
    assert M.normalized_entropy([0.6, 0.4]) == pytest.approx(0.971, abs=5e-4)
    assert M.normalized_entropy([0.7, 0.3]) == pytest.approx(0.881, abs=5e-4)
    assert M.normalized_entropy([0.25] * 4) == pytest.approx(1.0)
    assert M.normalized_entropy([1.0, 0.0, 0.0]) == 0.0
    assert M.normalized_entropy([1.0]) == 0.0
    assert M.normalized_entropy([0.0, 0.0]) == 0.0
    assert M.normalized_entropy([3, 2]) == pytest.approx(0.971, abs=5e-4)  # counts normalize


def test_mode_probs_ignores_no_mode():
    p = M.mode_probs(np.array([0, 0, 1, -1, -1, 2, 0]), 4)
    np.testing.assert_allclose(p, [0.6, 0.2, 0.2, 0.0])
    np.testing.assert_array_equal(M.mode_probs(np.array([-1, -1]), 2), [0.0, 0.0])


def test_tv_kl_and_coverage():
    assert M.tv_distance([0.5, 0.5], [0.5, 0.5]) == 0.0
    assert M.tv_distance([1, 0], [0, 1]) == 1.0
    assert M.tv_distance([0.7, 0.3], [0.5, 0.5]) == pytest.approx(0.2)
    assert M.tv_distance([0, 0], [0.5, 0.5]) == 1.0
    assert M.kl_divergence([0.5, 0.5], [0.5, 0.5]) == pytest.approx(0.0, abs=1e-9)
    kl = M.kl_divergence([0.7, 0.3], [0.5, 0.5], eps=0)
    assert kl == pytest.approx(0.7 * np.log(1.4) + 0.3 * np.log(0.6))
    assert np.isfinite(M.kl_divergence([1, 0], [0, 1]))
    assert M.modes_covered([0.5, 0.45, 0.05], 1 / 12) == 2
    assert M.modes_covered([0.5, 0.45, 0.05], [0.1, 0.1, 0.05]) == 3


def test_bootstrap_ci_binary_and_generic():
    rng = np.random.default_rng(0)
    x = (rng.random(400) < 0.3).astype(int)
    lo, hi = M.bootstrap_ci(x, seed=1)
    se = np.sqrt(0.3 * 0.7 / 400)
    assert lo < x.mean() < hi
    assert hi - lo == pytest.approx(2 * 1.96 * se, rel=0.25)
    lo2, hi2 = M.bootstrap_ci(x, stat_fn=np.mean, seed=1)  # resampling path, same width
    assert hi2 - lo2 == pytest.approx(hi - lo, rel=0.25)
    modes = rng.integers(0, 2, 200)
    lo3, hi3 = M.bootstrap_ci(modes, lambda m: M.normalized_entropy(M.mode_probs(m, 2)), 200)
    assert 0.9 < lo3 <= hi3 <= 1.0
    assert np.isnan(M.bootstrap_ci(np.array([]))[0])


def test_assign_and_interpolation_flags():
    centers = np.array([[0.0, 0.0], [10.0, 0.0]])
    x = np.array([[0.5, 0.0], [9.0, 1.0], [5.0, 0.0], [3.9, 0.0], [0.0, -4.5]])
    np.testing.assert_array_equal(M.assign_modes(x, centers), [0, 1, 0, 0, 0])
    np.testing.assert_array_equal(
        M.interpolation_flags(x, centers, sigma=1.0), [False, False, True, False, True]
    )
    # sigma scales distances; per-mode sigma allowed; 1D input as (N,)
    assert not M.interpolation_flags(x, centers, sigma=2.0)[2]
    assert M.interpolation_flags(np.array([5.0]), np.array([0.0, 10.0]), 1.0).tolist() == [True]
    flags = M.interpolation_flags(np.array([5.0]), np.array([0.0, 10.0]), np.array([1.0, 2.0]))
    assert flags.tolist() == [False]


def test_x0_variance_score():
    trace = np.zeros((5, 3, 2))  # (S, B, D)
    trace[-2:, 1, 0] = [1.0, -1.0]  # sample 1 jumps in the last two steps
    trace[0, 2, :] = 5.0  # sample 2 jumps only early
    s = M.x0_variance_score(trace, last_k=2)
    assert s.shape == (3,)
    np.testing.assert_allclose(s, [0.0, 1.0, 0.0])
    assert M.x0_variance_score(torch.as_tensor(trace), last_k=99)[2] > 0  # all steps, tensor


def test_detector_threshold_and_tradeoff():
    rng = np.random.default_rng(0)
    good, bad = rng.random(1000), 2.0 + rng.random(200)
    t = M.detector_threshold(good, keep=0.96)
    assert (good <= t).mean() == pytest.approx(0.96, abs=0.002)
    scores = np.concatenate([good, bad])
    is_bad = np.r_[np.zeros(1000, bool), np.ones(200, bool)]
    d = M.detector_tradeoff(scores, is_bad)
    assert d["removed_bad_at_keep"] == 1.0 and d["auc"] == pytest.approx(1.0)
    assert d["kept_good_at_keep"] == pytest.approx(0.96, abs=0.002)
    assert len(d["keep_good"]) == len(d["removed_bad"]) == len(d["thresholds"])
    assert np.all(np.diff(d["keep_good"]) >= 0) and np.all(np.diff(d["removed_bad"]) <= 0)
    same = M.detector_tradeoff(rng.random(2000), rng.random(2000) < 0.5)
    assert same["auc"] == pytest.approx(0.5, abs=0.05)
    empty = M.detector_tradeoff(good, np.zeros(1000, bool))
    assert empty["removed_bad_at_keep"] is None and empty["num_bad"] == 0


def test_roughness_and_chunk_boundary_jumps():
    t = np.linspace(0, 1, 21)[:, None]
    line = np.hstack([t, 2 * t])  # constant velocity: no second or third difference
    assert M.roughness(line) == pytest.approx((0.0, 0.0), abs=1e-12)
    zigzag = line + np.where(np.arange(21) % 2, 0.01, -0.01)[:, None]
    second, jerk = M.roughness(zigzag)
    assert second == pytest.approx(0.04 * np.sqrt(2)) and jerk == pytest.approx(2 * 0.08**2)
    # steps of 0.1 inside chunks, a step of 0.5 into each new chunk (every 4th action)
    steps = np.where(np.arange(1, 12) % 4 == 0, 0.5, 0.1)  # into t = 1..11
    a = np.concatenate([[0.0], np.cumsum(steps)])[:, None]
    b = np.arange(12) % 4 == 0
    sums = M.step_jumps(a, b)
    assert sums[1] == 2 and sums[3] == 9  # boundaries at t = 4, 8 (t = 0 has no step)
    assert M.jump_ratio(sums[None]) == pytest.approx(5.0)
