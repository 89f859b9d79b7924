"""Mode metrics shared by the toy mode study (`modes.py`) and the rollout evaluators.

Everything here is plain numpy on small arrays:

- mode distributions: `mode_probs`, `normalized_entropy`, `tv_distance`, `kl_divergence`,
  `modes_covered`;
- uncertainty: `bootstrap_ci`;
- geometry against known mode centers: `assign_modes`, `mode_distances`, `interpolation_flags`;
- the x0-variance hallucination detector (Aithal et al. 2024, arXiv 2406.09358):
  `x0_variance_score`, `detector_threshold`, `detector_tradeoff`.

Conventions: a mode id of -1 means "no mode" (an interpolated sample, a failed episode); it is
left out of mode probabilities. Distances are measured in units of the mode's sigma.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

NO_MODE = -1


# --------------------------------------------------------------------------------------------
# mode distributions


def mode_probs(modes: np.ndarray, num_modes: int) -> np.ndarray:
    """Empirical mode probabilities.

    Args:
        modes: (N,) int mode ids in [0, num_modes) or -1 for "no mode".
        num_modes: K.
    Returns:
        (K,) float64 probabilities over the samples that have a mode (ids -1 are left out);
        all zeros when no sample has a mode.
    """
    modes = np.asarray(modes, dtype=np.int64).reshape(-1)
    valid = modes[(modes >= 0) & (modes < num_modes)]
    counts = np.bincount(valid, minlength=num_modes).astype(np.float64)
    total = counts.sum()
    return counts / total if total > 0 else counts


def normalized_entropy(probs: np.ndarray) -> float:
    """Behaviour entropy H(p) / ln K in [0, 1] (1 = all K modes used equally).

    probs: (K,) non-negative weights (normalized here). K = 1 or an all-zero vector gives 0.0.
    Example: K=2, p=(0.6, 0.4) -> 0.971; p=(0.7, 0.3) -> 0.881.
    """
    p = np.asarray(probs, dtype=np.float64).reshape(-1)
    k, total = p.size, p.sum()
    if k <= 1 or total <= 0:
        return 0.0
    p = p / total
    nz = p[p > 0]
    return float(-(nz * np.log(nz)).sum() / np.log(k))


def tv_distance(p: np.ndarray, q: np.ndarray) -> float:
    """Total-variation distance 0.5 * sum |p - q| between two (K,) distributions, in [0, 1].

    Both are normalized first; if either has no mass (all zeros) the distance is 1.0, the
    maximum (e.g. a policy whose samples all fall between modes).
    """
    p = np.asarray(p, dtype=np.float64).reshape(-1)
    q = np.asarray(q, dtype=np.float64).reshape(-1)
    if p.sum() <= 0 or q.sum() <= 0:
        return 1.0
    return float(0.5 * np.abs(p / p.sum() - q / q.sum()).sum())


def kl_divergence(p: np.ndarray, q: np.ndarray, eps: float = 1e-6) -> float:
    """KL(p || q) in nats between two distributions of the same shape (e.g. (K,) or histograms).

    `eps` is added to every bin of both before normalizing, so empty bins in q give a large but
    finite value.
    """
    p = np.asarray(p, dtype=np.float64).reshape(-1) + eps
    q = np.asarray(q, dtype=np.float64).reshape(-1) + eps
    p, q = p / p.sum(), q / q.sum()
    return float((p * np.log(p / q)).sum())


def modes_covered(probs: np.ndarray, threshold: float | np.ndarray) -> int:
    """Number of modes whose probability is at least `threshold` (a scalar or (K,) per mode).

    The study uses threshold = w_m / 4 with w_m the true weight of mode m, i.e. 1/(4K) for
    equal weights.
    """
    p = np.asarray(probs, dtype=np.float64).reshape(-1)
    return int((p >= np.asarray(threshold, dtype=np.float64)).sum())


# --------------------------------------------------------------------------------------------
# uncertainty


def bootstrap_ci(
    values: np.ndarray,
    stat_fn: Callable[[np.ndarray], float] | None = None,
    n_boot: int = 1000,
    alpha: float = 0.05,
    seed: int = 0,
) -> tuple[float, float]:
    """Percentile bootstrap (1 - alpha) interval of `stat_fn(values)`.

    Args:
        values: (N, ...) per-episode or per-sample values, resampled along axis 0 (e.g. a 0/1
            indicator per episode, or mode ids for a stat_fn computing an entropy).
        stat_fn: array (N, ...) -> float; None means the mean. For a mean of 0/1 values the
            resampled means are drawn directly as Binomial(N, mean) / N (the same distribution,
            without materializing the resamples).
    Returns:
        (lo, hi); (nan, nan) for empty input.
    """
    values = np.asarray(values)
    n = values.shape[0] if values.ndim else 0
    if n == 0:
        return float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    binary = stat_fn is None and values.ndim == 1 and np.isin(values, (0, 1)).all()
    if binary:
        stats = rng.binomial(n, float(values.mean()), size=n_boot) / n
    else:
        fn = stat_fn if stat_fn is not None else (lambda v: float(np.mean(v)))
        stats = np.array([fn(values[rng.integers(0, n, n)]) for _ in range(n_boot)])
    lo, hi = np.quantile(stats, [alpha / 2, 1 - alpha / 2])
    return float(lo), float(hi)


# --------------------------------------------------------------------------------------------
# geometry against known centers


def mode_distances(
    samples: np.ndarray, centers: np.ndarray, sigma: float | np.ndarray = 1.0
) -> np.ndarray:
    """Euclidean distance of every sample to every center, in units of sigma.

    Args:
        samples: (N, D) or (N,) for 1D.
        centers: (K, D) or (K,) for 1D.
        sigma: scalar or (K,) per-mode standard deviation.
    Returns:
        (N, K) distances / sigma.
    """
    x = np.asarray(samples, dtype=np.float64)
    c = np.asarray(centers, dtype=np.float64)
    x = x.reshape(len(x), -1)  # (N, D)
    c = c.reshape(len(c), -1)  # (K, D)
    d2 = (x * x).sum(1)[:, None] - 2.0 * x @ c.T + (c * c).sum(1)[None, :]
    d = np.sqrt(np.maximum(d2, 0.0))  # (N, K)
    return d / np.asarray(sigma, dtype=np.float64).reshape(1, -1)


def assign_modes(
    samples: np.ndarray, centers: np.ndarray, sigma: float | np.ndarray = 1.0
) -> np.ndarray:
    """(N,) int64 index of the nearest center (in sigma units) for each of (N, D) samples."""
    return mode_distances(samples, centers, sigma).argmin(1).astype(np.int64)


def interpolation_flags(
    samples: np.ndarray, centers: np.ndarray, sigma: float | np.ndarray, k: float = 4.0
) -> np.ndarray:
    """(N,) bool: True where a sample is farther than k sigma from every center.

    Note: between two modes closer than 2k sigma nothing is flagged (every point is within k
    sigma of one of them); interpolation between such modes is invisible to this test.
    """
    return mode_distances(samples, centers, sigma).min(1) > k


# --------------------------------------------------------------------------------------------
# x0-variance hallucination detector


def x0_variance_score(x0_trace: np.ndarray, last_k: int) -> np.ndarray:
    """Variance of the predicted clean sample over the last `last_k` reverse steps.

    Args:
        x0_trace: (S, B, ...) x0_hat at each of S reverse steps, in sampling order (the last
            entry is the final step). A torch tensor is accepted.
        last_k: number of final steps to use (clamped to [2, S]).
    Returns:
        (B,) sum over feature dimensions of the per-dimension variance across those steps.
        Large values flag samples whose x0 prediction kept jumping (typically between modes).
    """
    tr = np.asarray(x0_trace.detach().cpu() if hasattr(x0_trace, "detach") else x0_trace)
    tr = tr.astype(np.float64)
    s = tr.shape[0]
    k = int(min(max(last_k, 2), s))
    window = tr[s - k :].reshape(k, tr.shape[1], -1)  # (k, B, F)
    return window.var(axis=0).sum(-1)


def detector_threshold(scores_good: np.ndarray, keep: float = 0.96) -> float:
    """Score threshold that keeps a `keep` share of good samples (score <= threshold is kept)."""
    scores_good = np.asarray(scores_good, dtype=np.float64).reshape(-1)
    if scores_good.size == 0:
        return float("inf")
    return float(np.quantile(scores_good, keep))


def detector_tradeoff(
    scores: np.ndarray, is_bad: np.ndarray, keep: float = 0.96, num_points: int = 101
) -> dict:
    """Trade-off between keeping good samples and removing bad ones as the threshold moves.

    A sample is removed when its score is above the threshold.

    Args:
        scores: (N,) detector scores (e.g. `x0_variance_score`).
        is_bad: (N,) bool, True for samples that should be removed (e.g. interpolated).
        keep: the operating point reported as `removed_bad_at_keep`.
        num_points: thresholds at quantiles 0..1 of the good scores.
    Returns:
        dict with lists `keep_good` and `removed_bad` (one entry per threshold, thresholds in
        `thresholds`), `threshold` and `removed_bad_at_keep` / `kept_good_at_keep` at the
        operating point, `auc` (area under removed_bad vs keep_good; 1.0 = perfect
        separation, 0.5 = chance), and counts `num_good`, `num_bad`. Rates are None when a
        class is empty.
    """
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    is_bad = np.asarray(is_bad, dtype=bool).reshape(-1)
    good, bad = scores[~is_bad], scores[is_bad]
    out: dict = {"num_good": int(good.size), "num_bad": int(bad.size)}
    if good.size == 0 or bad.size == 0:
        out.update(
            thresholds=[],
            keep_good=[],
            removed_bad=[],
            threshold=None,
            removed_bad_at_keep=None,
            kept_good_at_keep=None,
            auc=None,
        )
        return out
    thr = np.quantile(good, np.linspace(0.0, 1.0, num_points))
    keep_good = (good[None, :] <= thr[:, None]).mean(1)
    removed_bad = (bad[None, :] > thr[:, None]).mean(1)
    # AUC = P(score_bad > score_good) (ties count half): the ROC area of the detector.
    order = np.argsort(np.concatenate([good, bad]), kind="mergesort")
    ranks = np.empty(order.size)
    ranks[order] = np.arange(1, order.size + 1)
    allv = np.concatenate([good, bad])
    _, inv, cnt = np.unique(allv, return_inverse=True, return_counts=True)
    ranks = (np.bincount(inv, ranks) / cnt)[inv]  # average ranks for ties
    auc = (ranks[good.size :].sum() - bad.size * (bad.size + 1) / 2) / (good.size * bad.size)
    t = detector_threshold(good, keep)
    out.update(
        thresholds=thr.tolist(),
        keep_good=keep_good.tolist(),
        removed_bad=removed_bad.tolist(),
        threshold=t,
        removed_bad_at_keep=float((bad > t).mean()),
        kept_good_at_keep=float((good <= t).mean()),
        auc=float(auc),
    )
    return out


# ----------------------------------------------------------------------------- smoothness


def roughness(x: np.ndarray) -> tuple[float, float]:
    """(T, D) trajectory -> (mean |second difference|, mean squared jerk |third difference|^2),
    per control step (norms over D); nan when T is too short."""
    x = np.asarray(x, dtype=np.float64)
    d2 = np.diff(x, 2, axis=0) if len(x) >= 3 else np.empty((0,))
    d3 = np.diff(x, 3, axis=0) if len(x) >= 4 else np.empty((0,))
    second = float(np.linalg.norm(d2, axis=-1).mean()) if len(d2) else math.nan
    jerk = float((np.linalg.norm(d3, axis=-1) ** 2).mean()) if len(d3) else math.nan
    return second, jerk


def step_jumps(actions: np.ndarray, boundaries: np.ndarray) -> np.ndarray:
    """(T, A) executed actions, (T,) flags "this action began a new chunk" -> (4,) sums
    [sum |a_t - a_t-1| at boundaries, their count, the same within chunks, their count]."""
    actions = np.asarray(actions, dtype=np.float64)
    if len(actions) < 2:
        return np.zeros(4)
    step = np.linalg.norm(np.diff(actions, axis=0), axis=-1)  # (T-1,): into step t = 1..T-1
    at = np.asarray(boundaries[1:], dtype=bool)
    return np.array([step[at].sum(), at.sum(), step[~at].sum(), (~at).sum()], dtype=np.float64)


def jump_ratio(sums: np.ndarray) -> float:
    """(N, 4) per-episode `step_jumps` -> mean step into a new chunk / mean step within one."""
    s = np.asarray(sums).sum(0)
    if s[1] == 0 or s[3] == 0 or s[2] == 0:
        return math.nan
    return float((s[0] / s[1]) / (s[2] / s[3]))
