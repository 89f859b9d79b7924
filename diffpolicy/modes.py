"""The toy mode study: how GMMs, regression and diffusion treat the modes of a Gaussian mixture.

Claims turned into numbers (all on CPU, minutes):

1. a Gaussian mixture model with the wrong component count merges modes;
2. an MSE regressor whose input does not determine the mode outputs their average;
3. a diffusion model covers the modes but puts samples between modes that are close, more so
   with fewer sampling steps (mode interpolation, Aithal et al. 2024); a denoiser of the same
   architecture trained with the flow-matching objective, sampled with Euler or Heun, is
   measured next to it;
4. the variance of the predicted clean sample x0_hat over the last reverse steps flags those
   samples (the detector of `diffpolicy.metrics`): with this study's window, and as the paper
   computes it (`paper_detector`: T = 1000 linear betas, DDPM with all 1000 steps, variance
   over the last 10, averaged over dimensions).

Data are mixtures of isotropic Gaussians with sigma = 1 in "raw" units, so distances and
separations read in sigma. Models are trained on data divided by `mixture_scale` (largest
center coordinate + 5 sigma), which puts the data inside [-1, 1]; sampling uses
`clip_sample=True` (x0_hat clipped to [-1, 1]) and samples are multiplied back before scoring.

Scoring per model and setting (see `score_samples`): share within 3 sigma of a mode,
interpolation rate (farther than 4 sigma from every mode), mode probabilities of the
non-interpolated samples (nearest mode), modes covered (mode m counts when at least w_m / 4 of
*all* samples land on it, i.e. 1/(4K) for equal weights; a broad component that sprays samples
everywhere does not cover modes by luck), normalized entropy, TV distance to the true
weights, and KL(true || samples) between histograms (exact bin probabilities of the mixture).

Entry point: `run_study(quick, out_dir, seed)`; writes modes.json, modes.md and figures.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from sklearn.mixture import GaussianMixture
from torch import nn
from tqdm import tqdm

from diffpolicy import metrics as M
from diffpolicy.files import save_figure, write_text
from diffpolicy.schedulers import NoiseSchedule, sample

STEPS = (4, 8, 16, 20, 100)
FLOW_SAMPLERS = ("euler", "heun")  # sample the flow-matching denoiser (Heun: 2S - 1 calls)
SAMPLED = ("ddpm", "ddim", *FLOW_SAMPLERS)
PAPER_DETECTOR = {"num_train_timesteps": 1000, "beta_range": (0.001, 0.2), "last_steps": 10}
"""The detector as Aithal et al. compute it (their released code for the toy Gaussians):
epsilon DDPM with T = 1000 linear betas 0.001..0.2, sampled with all 1000 steps, no clipping;
score = variance of x0_hat over the last 10 reverse steps, averaged over dimensions. (In float32
alpha_bar of that schedule leaves the normal range near t = 900; `NoiseSchedule` floors it at
1e-30 from t = 804, where x_t is pure noise, so those first reverse steps leave x_t as it is.)"""
REFERENCE_INTERP = {100: 0.001, 20: 0.01, 8: 0.06, 4: 0.32}
"""Interpolation rate against DDPM steps measured outside this repository on the same kind of
1D mixture (3 modes 20 sigma apart, a small MLP denoiser): the number of steps dominates."""


@dataclass(frozen=True)
class Mixture:
    """A mixture of isotropic Gaussians. centers (K, D) in sigma units, weights (K,)."""

    name: str
    centers: np.ndarray
    weights: np.ndarray
    separation: float  # nearest-neighbour distance between centers, in sigma
    sigma: float = 1.0


def make_mixture(name: str, centers, weights=None) -> Mixture:
    """Build a Mixture; centers (K, D) or (K,) for 1D; weights default to uniform."""
    c = np.asarray(centers, dtype=np.float64)
    c = c.reshape(len(c), -1)  # (K, D)
    w = np.full(len(c), 1.0 / len(c)) if weights is None else np.asarray(weights, float)
    d = M.mode_distances(c, c) + np.eye(len(c)) * 1e9
    return Mixture(name, c, w / w.sum(), float(d.min()) if len(c) > 1 else math.inf)


def study_mixtures(quick: bool) -> list[Mixture]:
    """The study's data sets (quick: the 1D three-mode case and the ring only)."""
    ang = np.arange(8) * 2 * np.pi / 8
    ring = make_mixture("ring8", 20.0 * np.stack([np.cos(ang), np.sin(ang)], 1))
    three = make_mixture("1d_3modes_20s", [-20.0, 0.0, 20.0])
    if quick:
        return [three, ring]
    g = np.arange(5) * 10.0 - 20.0
    grid = make_mixture("grid5x5", np.stack(np.meshgrid(g, g), -1).reshape(-1, 2))
    two = [make_mixture(f"1d_2modes_{s}s", [-s / 2, s / 2]) for s in (5, 10, 20, 40)]
    unequal = make_mixture("1d_2modes_20s_w80_20", [-10.0, 10.0], [0.8, 0.2])
    return [*two, unequal, three, ring, grid]


def mixture_scale(mix: Mixture) -> float:
    """Raw units per normalized unit: the data lie in [-scale, scale]^D up to 5-sigma tails."""
    return float(np.abs(mix.centers).max() + 5.0 * mix.sigma)


def sample_mixture(mix: Mixture, n: int, rng: np.random.Generator):
    """Draw n samples. Returns x (n, D) raw units, modes (n,) int64."""
    modes = rng.choice(len(mix.weights), size=n, p=mix.weights)
    x = mix.centers[modes] + mix.sigma * rng.standard_normal((n, mix.centers.shape[1]))
    return x, modes


def histogram_kl(mix: Mixture, x: np.ndarray, bins: int) -> float:
    """KL(true || samples) over a grid of `bins` per dimension on [-scale, scale]^D.

    True bin probabilities are exact (isotropic Gaussians factorize over dimensions).
    """
    s, dim = mixture_scale(mix), mix.centers.shape[1]
    edges = np.linspace(-s, s, bins + 1)
    # (K, D, bins) probability of each bin per component and dimension
    z = (edges[None, None, :] - mix.centers[:, :, None]) / mix.sigma
    cdf = torch.special.ndtr(torch.from_numpy(z)).numpy()  # float64 normal CDF
    per_dim = np.diff(cdf, axis=-1)
    if dim == 1:
        p_true = (mix.weights[:, None] * per_dim[:, 0]).sum(0)
    else:
        p_true = np.einsum("k,ki,kj->ij", mix.weights, per_dim[:, 0], per_dim[:, 1])
    h, _ = np.histogramdd(x, bins=[edges] * dim)
    return M.kl_divergence(p_true, h, eps=1e-6)


def score_samples(mix: Mixture, x: np.ndarray) -> dict:
    """All per-setting numbers for samples x (N, D) in raw units."""
    interp = M.interpolation_flags(x, mix.centers, mix.sigma, k=4.0)  # (N,)
    modes = np.where(interp, M.NO_MODE, M.assign_modes(x, mix.centers, mix.sigma))
    probs = M.mode_probs(modes, len(mix.weights))
    share = probs * (1.0 - interp.mean())  # share of *all* samples landing in each mode
    lo, hi = M.bootstrap_ci(interp.astype(np.int64))
    return {
        "n": int(len(x)),
        "within_3sigma": float(1.0 - M.interpolation_flags(x, mix.centers, mix.sigma, 3.0).mean()),
        "interpolation_rate": float(interp.mean()),
        "interpolation_ci95": [lo, hi],
        "mode_probs": probs.round(4).tolist(),
        "modes_covered": M.modes_covered(share, mix.weights / 4.0),
        "num_modes": len(mix.weights),
        "normalized_entropy": M.normalized_entropy(probs),
        "tv_to_true": M.tv_distance(probs, mix.weights),
        "hist_kl": histogram_kl(mix, x, bins=200 if x.shape[1] == 1 else 50),
    }


# --------------------------------------------------------------------------------------------
# baselines


def gmm_samples(x: np.ndarray, n_components: int, n: int, seed: int) -> np.ndarray:
    """Fit a full-covariance GaussianMixture to x (N, D); return n shuffled samples (n, D)."""
    gmm = GaussianMixture(n_components, covariance_type="full", random_state=seed, n_init=2)
    gmm.fit(x)
    gmm.random_state = seed
    out, _ = gmm.sample(n)
    return out[np.random.default_rng(seed).permutation(n)]


def regression_samples(x: np.ndarray, n: int, steps: int, seed: int) -> np.ndarray:
    """MSE regression of x (N, D) from a context z ~ N(0, I_2) that says nothing about the mode.

    The loss minimizer is E[x | z] = E[x], the average of the modes; returns f(z) for n fresh
    contexts, (n, D).
    """
    g = torch.Generator().manual_seed(seed)
    dim = x.shape[1]
    net = nn.Sequential(
        nn.Linear(2, 64), nn.SiLU(), nn.Linear(64, 64), nn.SiLU(), nn.Linear(64, dim)
    )
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    xt = torch.as_tensor(x, dtype=torch.float32)
    for _ in range(steps):
        idx = torch.randint(0, len(xt), (256,), generator=g)
        loss = ((net(torch.randn(256, 2, generator=g)) - xt[idx]) ** 2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        return net(torch.randn(n, 2, generator=g)).double().numpy()


# --------------------------------------------------------------------------------------------
# diffusion


def time_embedding(t: torch.Tensor, dim: int) -> torch.Tensor:
    """Sinusoidal embedding of steps t (B,), integers or flow's float t * T -> (B, dim)."""
    half = dim // 2
    freqs = torch.exp(-math.log(10000.0) * torch.arange(half, device=t.device) / half)
    arg = t.float()[:, None] * freqs[None, :]
    return torch.cat([arg.sin(), arg.cos()], dim=-1)


class Denoiser(nn.Module):
    """Epsilon- (or velocity-) prediction MLP: x_t (B, D), t (B,), optional mode id (B,) ->
    eps_hat (or v_hat) (B, D). Integer t index a table of sinusoidal embeddings; float t (flow
    matching's t * T) are embedded on the fly.

    h = W_in [x_t, sin(pi 2^f x_t), cos(pi 2^f x_t)]_{f<F} + MLP(sinusoidal(t)) [+ E[mode]];
    three residual SiLU-Linear blocks; W_out h. The Fourier features of x_t (F = 6 in the study)
    let a 64-wide MLP represent modes 0.04 wide in normalized units; without them the 5x5 grid
    model put about 33% of its DDPM-100 samples between modes instead of about 4%.
    """

    def __init__(
        self,
        dim: int,
        num_timesteps: int,
        hidden: int = 128,
        num_modes: int = 0,
        emb: int = 32,
        fourier: int = 0,
    ):
        super().__init__()
        self.register_buffer("t_sin", time_embedding(torch.arange(num_timesteps), emb))
        self.register_buffer("freqs", math.pi * 2.0 ** torch.arange(fourier).float())
        self.dim, self.emb = dim, emb
        self.inp = nn.Linear(dim * (1 + 2 * fourier), hidden)
        self.t_mlp = nn.Sequential(nn.Linear(emb, hidden), nn.SiLU(), nn.Linear(hidden, hidden))
        self.mode_emb = nn.Embedding(num_modes, hidden) if num_modes else None
        self.blocks = nn.ModuleList(
            nn.Sequential(nn.SiLU(), nn.Linear(hidden, hidden)) for _ in range(3)
        )
        self.out = nn.Sequential(nn.SiLU(), nn.Linear(hidden, dim))

    def forward(self, x: torch.Tensor, t: torch.Tensor, mode: torch.Tensor | None = None):
        if len(self.freqs):  # Fourier features of x_t: (B, D) -> (B, D * (1 + 2F))
            arg = (x[:, :, None] * self.freqs).flatten(1)
            x = torch.cat([x, arg.sin(), arg.cos()], dim=1)
        if t.is_floating_point():  # flow matching: continuous time
            h = self.inp(x) + self.t_mlp(time_embedding(t, self.emb))
        else:
            h = self.inp(x) + self.t_mlp(self.t_sin)[t]  # (T, H) table, indexed: cheap for big B
        if self.mode_emb is not None and mode is not None:
            h = h + self.mode_emb(mode)
        for block in self.blocks:
            h = h + block(h)
        return self.out(h)


def train_denoiser(
    x: np.ndarray,
    schedule: NoiseSchedule,
    steps: int,
    seed: int,
    modes: np.ndarray | None = None,
    num_modes: int = 0,
    batch: int = 256,
    hidden: int = 64,
    fourier: int = 6,
    objective: str = "epsilon",
) -> Denoiser:
    """Train on normalized data x (N, D) with the epsilon loss (`objective="velocity"`: flow
    matching's MSE to eps - x0 at x_t = (1 - t) x0 + t eps, t ~ U(0, 1), model time t * T, as
    the policies train it); conditional when num_modes > 0.

    AdamW (fused), lr 2e-3 with cosine decay to zero; no EMA (the decay plays that part here).
    """
    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)
    net = Denoiser(x.shape[1], len(schedule.alphas_cumprod), hidden, num_modes, fourier=fourier)
    opt = torch.optim.AdamW(net.parameters(), lr=2e-3, weight_decay=1e-6, fused=True)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    xt = torch.as_tensor(x, dtype=torch.float32)  # (N, D)
    mt = torch.as_tensor(modes) if modes is not None else None
    num_t, chunk = len(schedule.alphas_cumprod), 500
    for start in range(0, steps, chunk):  # randomness drawn per chunk of steps: fewer calls
        c = min(chunk, steps - start)
        idx = torch.randint(0, len(xt), (c, batch), generator=g)
        t = torch.randint(0, num_t, (c, batch), generator=g)
        eps = torch.randn(c, batch, xt.shape[1], generator=g)  # (c, B, D)
        if objective == "velocity":  # flow's t in [0, 1); epsilon draws exactly as it did before
            u = torch.rand(c, batch, 1, generator=g)
        for i in range(c):
            x0 = xt[idx[i]]
            if objective == "velocity":
                x_t, target = (1 - u[i]) * x0 + u[i] * eps[i], eps[i] - x0
                model_t = u[i, :, 0] * num_t
            else:
                x_t, model_t, target = schedule.add_noise(x0, eps[i], t[i]), t[i], eps[i]
            pred = net(x_t, model_t, mt[idx[i]] if num_modes else None)
            loss = ((pred - target) ** 2).mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
    return net.eval()


def diffusion_samples(
    net: Denoiser,
    schedule: NoiseSchedule,
    n: int,
    sampler: str,
    steps: int,
    seed: int,
    mode: np.ndarray | None = None,
    clip_sample: bool = True,
):
    """Sample n points (normalized units); euler / heun sample a velocity (flow) denoiser.
    Returns x0 (n, D) and x0_hat trace (S, n, D) numpy."""
    g = torch.Generator().manual_seed(seed)
    x_T = torch.randn(n, net.dim, generator=g)
    m = torch.as_tensor(mode) if mode is not None else None

    def denoiser(x_t, t):
        return net(x_t, t, m)

    with torch.no_grad():
        x0, trace = sample(
            denoiser,
            schedule,
            x_T,
            sampler=sampler,
            steps=steps,
            prediction_type="velocity" if sampler in FLOW_SAMPLERS else "epsilon",
            clip_sample=clip_sample,
            generator=g,
            return_x0=True,
        )
    return x0.double().numpy(), torch.as_tensor(trace).double().numpy()


# --------------------------------------------------------------------------------------------
# the study


def study_config(quick: bool) -> dict:
    """Sizes of the study (quick: small enough for a test, about a minute on 2 cores)."""
    return {
        "quick": quick,
        "n_train": 10_000 if quick else 20_000,
        "n_eval": 2_000 if quick else 4_000,
        "n_eval_reference_case": 4_000 if quick else 20_000,
        "train_steps": 1_500 if quick else 4_000,
        "conditional_train_steps": 600 if quick else 2_000,
        "regression_steps": 150 if quick else 300,
        "num_train_timesteps": 100,
        "beta_schedule": "squaredcos_cap_v2",
        "samplers": ["ddpm", "ddim"],
        "flow_samplers": list(FLOW_SAMPLERS),
        "paper_detector": {
            **PAPER_DETECTOR,
            "on": ["1d_3modes_20s"] if quick else ["1d_3modes_20s", "grid5x5"],
        },
        "steps": list(STEPS),
        "conditional": ["ring8"] if quick else ["ring8", "grid5x5"],
        "detector_last_k": "max(2, steps // 25): the final ~4% of the reverse steps",
        "detector_keep": 0.96,
        "interpolation_k_sigma": 4.0,
        "within_k_sigma": 3.0,
        "covered_rule": "mode m covered if >= w_m/4 of all samples are non-interpolated and "
        "nearest to m",
        "clip_sample": True,
        "normalization": "x / (max|center| + 5 sigma), so data lie in [-1, 1]",
    }


def detector_window(steps: int) -> int:
    """Reverse steps the x0-variance detector looks at: max(2, steps // 25).

    Chosen on a development run of the 1D three-mode case (windows of 2..S steps, ending at the
    last step or a few steps before it): the last ~4% of the trajectory separated interpolated
    samples best (AUC 0.95-0.98 at 20 and 100 steps); longer windows mix in early steps where
    every sample's x0_hat still moves, and scored near chance.
    """
    return max(2, steps // 25)


def gmm_component_counts(num_modes: int) -> dict[str, int]:
    """Fewer (K // 4, at least 1), equal (K) and more (2K) components than true modes."""
    return {"fewer": max(1, num_modes // 4), "equal": num_modes, "more": 2 * num_modes}


def study_mixture(mix: Mixture, cfg: dict, seed: int) -> tuple[dict, dict]:
    """Fit every model to one mixture and score it.

    Returns (numbers for the JSON, {setting: (n, D) raw samples and x0 scores for figures}).
    """
    rng = np.random.default_rng(seed)
    k, scale = len(mix.weights), mixture_scale(mix)
    n_eval = cfg["n_eval_reference_case"] if mix.name == "1d_3modes_20s" else cfg["n_eval"]
    x_train, m_train = sample_mixture(mix, cfg["n_train"], rng)
    x_true, _ = sample_mixture(mix, n_eval, rng)
    models: dict = {"data": {"kind": "data", **score_samples(mix, x_true)}}
    samples: dict = {"data": x_true}

    for role, c in gmm_component_counts(k).items():
        x = gmm_samples(x_train, c, n_eval, seed)
        models[f"gmm_{c}"] = {"kind": "gmm", "components": c, "role": role, **score_samples(mix, x)}
        samples[f"gmm_{c}"] = x
    x = regression_samples(x_train / scale, n_eval, cfg["regression_steps"], seed) * scale
    models["regression"] = {"kind": "regression", **score_samples(mix, x)}
    samples["regression"] = x

    schedule = NoiseSchedule(cfg["num_train_timesteps"], cfg["beta_schedule"])
    t0 = time.time()
    net = train_denoiser(x_train / scale, schedule, cfg["train_steps"], seed)
    train_s = time.time() - t0
    flow = train_denoiser(x_train / scale, schedule, cfg["train_steps"], seed, objective="velocity")
    detector: dict = {}
    for sampler in cfg["samplers"] + cfg["flow_samplers"]:
        for steps in cfg["steps"]:
            name = f"{sampler}_{steps}"
            model = flow if sampler in FLOW_SAMPLERS else net
            x0, trace = diffusion_samples(model, schedule, n_eval, sampler, steps, seed + 1)
            x = x0 * scale
            models[name] = {
                "kind": "flow" if sampler in FLOW_SAMPLERS else "diffusion",
                "sampler": sampler,
                "steps": steps,
                **score_samples(mix, x),
            }
            bad = M.interpolation_flags(x, mix.centers, mix.sigma, cfg["interpolation_k_sigma"])
            scores = M.x0_variance_score(trace, detector_window(steps))
            detector[name] = M.detector_tradeoff(scores, bad, cfg["detector_keep"], num_points=51)
            samples[name] = x
    out = {
        "num_modes": k,
        "dim": int(mix.centers.shape[1]),
        "separation_sigma": mix.separation,
        "weights": mix.weights.round(4).tolist(),
        "gmm_components": gmm_component_counts(k),
        "diffusion_train_s": round(train_s, 2),
        "models": models,
        "detector": detector,
    }
    if mix.name in cfg["conditional"]:
        out["conditional"] = conditional_study(mix, cfg, x_train, m_train, schedule, seed)
    if mix.name in cfg["paper_detector"]["on"]:
        out["paper_detector"] = paper_detector(mix, cfg, x_train, n_eval, seed)
    return out, samples


def paper_detector(mix: Mixture, cfg: dict, x_train: np.ndarray, n: int, seed: int) -> dict:
    """The x0-variance detector computed as Aithal et al. do (`PAPER_DETECTOR`), on a denoiser
    of this study's size and training budget: its model's interpolation rate and the share of
    interpolated samples removed when 96% of the others are kept."""
    p, scale = cfg["paper_detector"], mixture_scale(mix)
    schedule = NoiseSchedule(p["num_train_timesteps"], "linear", beta_range=p["beta_range"])
    net = train_denoiser(x_train / scale, schedule, cfg["train_steps"], seed)
    steps = p["num_train_timesteps"]
    x0, trace = diffusion_samples(net, schedule, n, "ddpm", steps, seed + 1, clip_sample=False)
    x = x0 * scale
    bad = M.interpolation_flags(x, mix.centers, mix.sigma, cfg["interpolation_k_sigma"])
    window = trace[-p["last_steps"] :].reshape(p["last_steps"], n, -1)  # (k, n, D)
    scores = window.var(axis=0).mean(-1)  # (n,): the paper averages over dimensions
    return {
        "sampler": f"ddpm_{steps}",
        **score_samples(mix, x),
        **M.detector_tradeoff(scores, bad, cfg["detector_keep"], num_points=51),
    }


def conditional_study(mix, cfg, x_train, m_train, schedule, seed) -> dict:
    """Train with a mode embedding; ask for each mode equally often and measure accuracy.

    accuracy = share of samples within 4 sigma of a mode whose nearest mode is the one asked.
    """
    k, scale = len(mix.weights), mixture_scale(mix)
    net = train_denoiser(
        x_train / scale, schedule, cfg["conditional_train_steps"], seed + 7, m_train, k
    )
    asked = np.arange(cfg["n_eval"]) % k
    res = {}
    for sampler, steps in (("ddim", 8), ("ddim", 16), ("ddpm", 100)):
        x0, _ = diffusion_samples(net, schedule, len(asked), sampler, steps, seed + 2, asked)
        x = x0 * scale
        interp = M.interpolation_flags(x, mix.centers, mix.sigma, cfg["interpolation_k_sigma"])
        hit = (M.assign_modes(x, mix.centers, mix.sigma) == asked) & ~interp
        res[f"{sampler}_{steps}"] = {
            "accuracy": float(hit.mean()),
            "accuracy_ci95": list(M.bootstrap_ci(hit.astype(np.int64))),
            "interpolation_rate": float(interp.mean()),
        }
    return res


def reference_check(result: dict) -> dict:
    """Interpolation vs steps on the 1D three-mode case next to `REFERENCE_INTERP`."""
    models = result["datasets"]["1d_3modes_20s"]["models"]
    return {
        str(s): {
            "reference": REFERENCE_INTERP.get(s),
            **{k: models[f"{k}_{s}"]["interpolation_rate"] for k in SAMPLED},
        }
        for s in STEPS
    }


def run_study(quick: bool = False, out_dir: str | Path = "outputs/modes", seed: int = 0) -> dict:
    """Run the whole study; write OUT/modes.json, OUT/modes.md and OUT/*.png; return the JSON.

    quick: two mixtures (1D three modes, ring of eight), shorter training (~1 min on 2 cores);
    the full study (~5-10 min) adds the separation sweep, the unequal-weights case and the grid.
    """
    t_start = time.time()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    cfg = study_config(quick)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # small MLPs: one thread is fastest and fair to a shared machine
    result: dict = {"config": {**cfg, "seed": seed}, "datasets": {}}
    all_samples = {}
    try:
        bar = tqdm(study_mixtures(quick), desc="mode study", unit="mixture")
        for mix in bar:
            bar.set_postfix_str(mix.name)
            result["datasets"][mix.name], all_samples[mix.name] = study_mixture(mix, cfg, seed)
    finally:
        torch.set_num_threads(threads)
    result["reference_check"] = reference_check(result)
    mixtures = {m.name: m for m in study_mixtures(quick)}
    result["figures"] = write_figures(result, all_samples, mixtures, out)
    result["runtime_s"] = round(time.time() - t_start, 1)
    write_text(out / "modes.json", json.dumps(result, indent=1))
    write_text(out / "modes.md", markdown_report(result))
    print(f"mode study: {result['runtime_s']} s, wrote {out / 'modes.json'} and {out / 'modes.md'}")
    return result


# --------------------------------------------------------------------------------------------
# report


def _fmt(v: float | None, pct: bool = True) -> str:
    if v is None:
        return "-"
    return f"{100 * v:.2f}%" if pct else f"{v:.3f}"


def markdown_report(result: dict) -> str:
    """Markdown tables of the study's numbers."""
    shown = {k: result["config"][k] for k in ("quick", "train_steps", "n_eval", "seed")}
    lines = ["# Mode study", "", f"Runtime {result.get('runtime_s', '?')} s; `{json.dumps(shown)}`"]
    lines += ["", "Interpolation: > 4 sigma from every mode. Covered: >= w_m/4 of all samples."]
    lines += [""]
    lines += [
        "## Interpolation vs sampling steps (1D, three modes 20 sigma apart)",
        "",
        "| steps | reference | DDPM | DDIM | flow, Euler | flow, Heun |",
        "|---|---|---|---|---|---|",
    ]
    for s, r in result["reference_check"].items():
        cells = [_fmt(r.get(k)) for k in ("reference", "ddpm", "ddim", *FLOW_SAMPLERS)]
        lines.append(f"| {s} | " + " | ".join(cells) + " |")
    for name, d in result["datasets"].items():
        lines += [
            "",
            f"## {name} (K={d['num_modes']}, D={d['dim']}, nearest modes "
            f"{d['separation_sigma']:.1f} sigma apart, weights {d['weights']})",
            "",
            "| model | within 3σ | interpolation (95% CI) | covered | entropy | TV | hist KL "
            "| detector: removed at 96% keep (AUC) |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for m, r in d["models"].items():
            det = d["detector"].get(m)
            det_s = (
                "-"
                if det is None or det["removed_bad_at_keep"] is None
                else (f"{_fmt(det['removed_bad_at_keep'])} of {det['num_bad']} ({det['auc']:.2f})")
            )
            ci = r["interpolation_ci95"]
            lines.append(
                f"| {m} | {_fmt(r['within_3sigma'])} | {_fmt(r['interpolation_rate'])} "
                f"[{_fmt(ci[0])}, {_fmt(ci[1])}] | {r['modes_covered']}/{r['num_modes']} | "
                f"{_fmt(r['normalized_entropy'], False)} | {_fmt(r['tv_to_true'], False)} | "
                f"{_fmt(r['hist_kl'], False)} | {det_s} |"
            )
        if "paper_detector" in d:
            pd, pd_cfg = d["paper_detector"], result["config"]["paper_detector"]
            lines += [
                "",
                f"Detector as the paper computes it ({pd['sampler']}, linear betas "
                f"{pd_cfg['beta_range']}, variance of x0_hat over the last "
                f"{pd_cfg['last_steps']} steps): interpolation "
                f"{_fmt(pd['interpolation_rate'])}, removed at 96% keep "
                f"{_fmt(pd['removed_bad_at_keep'])} of {pd['num_bad']} (AUC "
                + (f"{pd['auc']:.2f})" if pd["auc"] is not None else "-)"),
            ]
        if "conditional" in d:
            lines += [
                "",
                "Conditioned on a mode id (asked uniformly):",
                "",
                "| sampler | accuracy | interpolation |",
                "|---|---|---|",
            ]
            for m, r in d["conditional"].items():
                lines.append(f"| {m} | {_fmt(r['accuracy'])} | {_fmt(r['interpolation_rate'])} |")
    lines += ["", "Figures: " + ", ".join(f"`{f}`" for f in result.get("figures", [])), ""]
    return "\n".join(lines)


def write_figures(result: dict, samples: dict, mixtures: dict, out: Path) -> list[str]:
    """Sample plots per mixture, interpolation vs separation / steps, detector trade-off."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    files = []
    for name, xs in samples.items():
        mix, d = mixtures[name], result["datasets"][name]
        show = [
            "data",
            *[f"gmm_{c}" for c in d["gmm_components"].values()],
            "regression",
            "ddpm_100",
            "ddim_8",
            "ddim_4",
        ]
        fig, axes = plt.subplots(2, 4, figsize=(14, 6.5))
        for ax, m in zip(axes.flat, show):
            x, r = xs[m][:2000], d["models"][m]
            if x.shape[1] == 1:
                s = mixture_scale(mix)
                ax.hist(x[:, 0], bins=np.linspace(-s, s, 161), color="C0")
                for c in mix.centers[:, 0]:
                    ax.axvline(c, color="k", lw=0.5, ls=":")
            else:
                ax.scatter(x[:, 0], x[:, 1], s=1, alpha=0.3)
                ax.scatter(mix.centers[:, 0], mix.centers[:, 1], s=12, c="r", marker="x")
                ax.set_aspect("equal")
            ax.set_title(
                f"{m}: interp {_fmt(r['interpolation_rate'])}, "
                f"{r['modes_covered']}/{r['num_modes']} modes",
                fontsize=9,
            )
        fig.suptitle(f"{name}: samples per model")
        fig.tight_layout()
        files.append(_save(fig, out / f"samples_{name}.png", plt))

    seps = {
        d["separation_sigma"]: d
        for n, d in result["datasets"].items()
        if n.startswith("1d_2modes_") and d["weights"][0] == 0.5
    }
    if len(seps) > 1:
        fig, axes = plt.subplots(1, 2, figsize=(11, 4))
        xs_ = sorted(seps)
        for m in ("gmm_1", "gmm_2", "regression", "ddpm_100", "ddim_16", "ddim_4"):
            axes[0].plot(
                xs_, [seps[s]["models"][m]["interpolation_rate"] for s in xs_], "o-", label=m
            )
            axes[1].plot(
                xs_, [1 - seps[s]["models"][m]["within_3sigma"] for s in xs_], "o-", label=m
            )
        axes[0].set_ylabel("interpolation rate (> 4σ from every mode)")
        axes[1].set_ylabel("share farther than 3σ from every mode")
        for ax in axes:
            ax.set_xscale("log")
            ax.set_yscale("symlog", linthresh=1e-3)
            ax.set_ylim(0, 1)
            ax.set_xlabel("separation of the two modes (σ)")
        axes[0].legend(fontsize=8)
        fig.tight_layout()
        files.append(_save(fig, out / "interpolation_vs_separation.png", plt))

    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    for i, (name, d) in enumerate(result["datasets"].items()):
        for sampler, ls in (("ddpm", "--"), ("ddim", "-"), ("euler", ":"), ("heun", "-.")):
            y = [d["models"][f"{sampler}_{s}"]["interpolation_rate"] for s in STEPS]
            ax.plot(STEPS, y, ls, marker="o", color=f"C{i}", label=f"{name} {sampler}", ms=3)
    ref = sorted(REFERENCE_INTERP)
    ax.plot(ref, [REFERENCE_INTERP[s] for s in ref], "k*", ms=10, label="reference (1D 3 modes)")
    ax.set(xscale="log", xlabel="sampling steps", ylabel="interpolation rate")
    ax.set_yscale("symlog", linthresh=1e-3)
    ax.set_ylim(0, 1)
    ax.legend(fontsize=6, ncol=2)
    fig.tight_layout()
    files.append(_save(fig, out / "interpolation_vs_steps.png", plt))

    fig, ax = plt.subplots(figsize=(5.5, 4.5))
    det = result["datasets"]["1d_3modes_20s"]["detector"]
    for m in ("ddim_4", "ddim_8", "ddim_16", "ddpm_20", "ddpm_100"):
        if det[m]["removed_bad_at_keep"] is not None:
            ax.plot(
                det[m]["keep_good"],
                det[m]["removed_bad"],
                label=f"{m} (AUC {det[m]['auc']:.2f}, {det[m]['num_bad']} bad)",
            )
    ax.axvline(result["config"]["detector_keep"], color="k", ls=":", lw=0.8)
    ax.set(
        xlabel="share of good samples kept",
        ylabel="share of interpolated samples removed",
        title="x0-variance detector, 1D three modes",
    )
    ax.legend(fontsize=8)
    fig.tight_layout()
    files.append(_save(fig, out / "detector_tradeoff.png", plt))
    return files


def _save(fig, path: Path, plt) -> str:
    save_figure(fig, path, dpi=80)
    plt.close(fig)
    return path.name
