"""Noise schedule and reverse-process samplers (DDPM, DDIM, DPM-Solver++ 2M; Euler and Heun for
flow matching, which share DDIM's step function).

Small and fast: every per-step coefficient is computed once per (sampler, steps, timestep_spacing,
device) and cached on the schedule as Python floats, so the loop itself only runs the denoiser
and a few fused tensor ops. Numerically these match diffusers' schedulers with the settings
Diffusion Policy uses (verified in tests/test_schedulers.py when diffusers is installed):

- betas: `squaredcos_cap_v2` (cosine alpha_bar, betas clipped at 0.999) or `linear`
  (1e-4 .. 0.02), alphas_cumprod in float32 exactly as diffusers builds them.
- "ddpm": `DDPMScheduler(variance_type="fixed_small")` including strided DDPM (steps < T).
- "ddim": `DDIMScheduler(set_alpha_to_one=True, eta=0)`.
- "dpmpp": `DPMSolverMultistepScheduler(algorithm_type="dpmsolver++", solver_order=2,
  solver_type="midpoint", lower_order_final=True, final_sigmas_type="zero")` with its default
  `timestep_spacing="linspace"`. diffusers has no `clip_sample` for it; here `clip_sample`
  clips its x0 prediction like the other samplers (pass `clip_sample=False` for exact parity).

Timestep spacing for ddpm/ddim: `"leading"` (default; diffusers' default and what Diffusion Policy
ran: T=100, 10 steps -> t = 90, 80, ..., 0) or `"trailing"` (t = 99, 89, ..., 9, which starts at
the pure-noise end). Both mirror diffusers' `timestep_spacing` setting of the same name, including
its step targets: DDIM steps from t to t - T // steps, DDPM to the next timestep of the plan.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from diffpolicy.config import SAMPLERS


def make_betas(
    num_train_timesteps: int, beta_schedule: str, beta_range: tuple[float, float] = (1e-4, 0.02)
) -> Tensor:
    """(T,) float32 betas, built exactly like diffusers (`beta_range`: linear's first and last)."""
    T = num_train_timesteps
    if beta_schedule == "squaredcos_cap_v2":

        def alpha_bar(s: float) -> float:
            return math.cos((s + 0.008) / 1.008 * math.pi / 2) ** 2

        betas = [min(1 - alpha_bar((i + 1) / T) / alpha_bar(i / T), 0.999) for i in range(T)]
        return torch.tensor(betas, dtype=torch.float32)
    if beta_schedule == "linear":
        return torch.linspace(*beta_range, T, dtype=torch.float32)
    raise ValueError(f"beta_schedule={beta_schedule!r} must be squaredcos_cap_v2 or linear")


ALPHA_BAR_FLOOR = 1e-30


@dataclass
class Plan:
    """Per-step coefficients of one sampler run; index i is the i-th reverse step."""

    timesteps: Tensor  # (S,) int64, on the sampling device
    coef: list[tuple[float, ...]]  # per-step Python floats, meaning depends on the sampler
    order: list[int]  # dpmpp: 1 or 2 per step; other samplers: all 1


class NoiseSchedule:
    """Forward process q(x_t | x_0) = N(sqrt(alpha_bar_t) x_0, (1 - alpha_bar_t) I).

    Attributes:
        alphas_cumprod: (T,) float32, alpha_bar_t.
        timestep_spacing: "leading" | "trailing" for ddpm/ddim plans.
    """

    def __init__(
        self,
        num_train_timesteps: int = 100,
        beta_schedule: str = "squaredcos_cap_v2",
        timestep_spacing: str = "leading",
        beta_range: tuple[float, float] = (1e-4, 0.02),
    ):
        if timestep_spacing not in ("leading", "trailing"):
            raise ValueError(f"timestep_spacing={timestep_spacing!r} must be leading or trailing")
        self.num_train_timesteps = num_train_timesteps
        self.beta_schedule = beta_schedule
        self.timestep_spacing = timestep_spacing
        self.betas = make_betas(num_train_timesteps, beta_schedule, beta_range)
        # (T,) float32; where a long, steep schedule takes alpha_bar below float32's normal
        # range (subnormal, then 0), it is floored, so x0 = (x_t - sqrt(1 - ab) eps) / sqrt(ab)
        # and the DDPM coefficients stay finite; the configs' schedules end above 1e-7
        self.alphas_cumprod = torch.cumprod(1.0 - self.betas, dim=0).clamp_min(ALPHA_BAR_FLOOR)
        self._sqrt_ab: dict[torch.device, tuple[Tensor, Tensor]] = {}
        self._plans: dict[tuple, Plan] = {}

    def to(self, device: torch.device | str) -> NoiseSchedule:
        """Move the tables to `device` (plans are cached per device anyway)."""
        self.alphas_cumprod = self.alphas_cumprod.to(device)
        self.betas = self.betas.to(device)
        return self

    def add_noise(self, x0: Tensor, noise: Tensor, t: Tensor) -> Tensor:
        """x_t = sqrt(alpha_bar_t) x0 + sqrt(1 - alpha_bar_t) noise.

        x0, noise: (B, ...); t: (B,) int64. Returns x_t (B, ...).
        """
        sqrt_ab, sqrt_one_minus_ab = self._sqrt_tables(t.device)
        shape = (-1,) + (1,) * (x0.dim() - 1)
        return sqrt_ab[t].view(shape) * x0 + sqrt_one_minus_ab[t].view(shape) * noise

    def _sqrt_tables(self, device: torch.device) -> tuple[Tensor, Tensor]:
        if device not in self._sqrt_ab:
            ab = self.alphas_cumprod.to(device)
            self._sqrt_ab[device] = (ab.sqrt(), (1.0 - ab).sqrt())
        return self._sqrt_ab[device]

    # ------------------------------------------------------------------------------ plans

    def plan(self, sampler: str, steps: int, device: torch.device | str = "cpu") -> Plan:
        """Cached coefficient plan for `sampler` with `steps` reverse steps."""
        device = torch.device(device)
        key = (sampler, steps, self.timestep_spacing, device)
        if key not in self._plans:
            if not 1 <= steps <= self.num_train_timesteps:
                raise ValueError(f"steps={steps} must be in [1, {self.num_train_timesteps}]")
            if sampler == "ddpm":
                plan = self._ddpm_plan(steps)
            elif sampler == "ddim":
                plan = self._ddim_plan(steps)
            elif sampler == "dpmpp":
                plan = self._dpmpp_plan(steps)
            elif sampler in ("euler", "heun"):
                plan = self._flow_plan(steps, 2 if sampler == "heun" else 1)
            else:
                raise ValueError(f"sampler={sampler!r} must be one of {', '.join(SAMPLERS)}")
            plan.timesteps = plan.timesteps.to(device)
            self._plans[key] = plan
        return self._plans[key]

    def _spaced_timesteps(self, steps: int) -> tuple[np.ndarray, np.ndarray]:
        """ddpm/ddim timesteps (S,) descending and their predecessors t - T // S (S,)."""
        T = self.num_train_timesteps
        if self.timestep_spacing == "leading":
            ts = (np.arange(0, steps) * (T // steps)).round()[::-1].astype(np.int64)
        else:
            ts = np.round(np.arange(T, 0, -T / steps)).astype(np.int64) - 1
        return ts, ts - T // steps

    def _ab(self, t: int) -> float:
        """alpha_bar_t as float32-rounded Python float; alpha_bar_{t<0} = 1 (set_alpha_to_one)."""
        return float(self.alphas_cumprod[t]) if t >= 0 else 1.0

    def _ddpm_plan(self, steps: int) -> Plan:
        ts, _ = self._spaced_timesteps(steps)
        prev = np.append(ts[1:], -1)  # DDPM steps to the next timestep of the plan (diffusers)
        coef = []
        for t, tp in zip(ts.tolist(), prev.tolist()):
            alpha_bar_t, alpha_bar_prev = self._ab(t), self._ab(tp)
            alpha_t = alpha_bar_t / alpha_bar_prev
            beta_t = 1.0 - alpha_t
            c_x0 = math.sqrt(alpha_bar_prev) * beta_t / (1.0 - alpha_bar_t)
            c_xt = math.sqrt(alpha_t) * (1.0 - alpha_bar_prev) / (1.0 - alpha_bar_t)
            var = max((1.0 - alpha_bar_prev) / (1.0 - alpha_bar_t) * beta_t, 1e-20)
            sigma_t = math.sqrt(var) if t > 0 else 0.0
            coef.append((math.sqrt(alpha_bar_t), math.sqrt(1.0 - alpha_bar_t), c_x0, c_xt, sigma_t))
        return Plan(torch.from_numpy(ts.copy()), coef, [1] * steps)

    def _ddim_plan(self, steps: int) -> Plan:
        ts, prev = self._spaced_timesteps(steps)
        coef = []
        for t, tp in zip(ts.tolist(), prev.tolist()):
            alpha_bar_t, alpha_bar_prev = self._ab(t), self._ab(tp)
            coef.append(
                (
                    math.sqrt(alpha_bar_t),
                    math.sqrt(1.0 - alpha_bar_t),
                    math.sqrt(alpha_bar_prev),
                    math.sqrt(1.0 - alpha_bar_prev),
                )
            )
        return Plan(torch.from_numpy(ts.copy()), coef, [1] * steps)

    def _flow_plan(self, steps: int, order: int) -> Plan:
        """Flow matching from t = 1 (noise) to t = 0 in `steps` uniform steps: the step from t
        to t' is the DDIM step with alpha = 1 - t, sigma = t (x_t = (1 - t) x0 + t eps), which
        for a velocity prediction v = eps - x0 is Euler's x_t + (t' - t) v. Timesteps (S + 1,)
        hold t * T (the model's time input, float; index S, t = 0, is never evaluated)."""
        t = np.linspace(1.0, 0.0, steps + 1)
        coef = [(1.0 - t[i], t[i], 1.0 - t[i + 1], t[i + 1]) for i in range(steps)]
        timesteps = torch.tensor(t * self.num_train_timesteps, dtype=torch.float32)
        return Plan(timesteps, [tuple(map(float, c)) for c in coef], [order] * steps)

    def _dpmpp_plan(self, steps: int) -> Plan:
        """DPM-Solver++(2M) in data prediction, lambda = log(alpha_t / sigma_t)."""
        T = self.num_train_timesteps
        ts = np.linspace(0, T - 1, steps + 1).round()[::-1][:-1].copy().astype(np.int64)
        ab = self.alphas_cumprod.double().cpu().numpy()
        sigmas_all = ((1 - ab) / ab) ** 0.5
        sig = np.interp(ts, np.arange(T), sigmas_all)
        sig = np.concatenate([sig, [0.0]]).astype(np.float32).astype(np.float64)  # (S+1,)
        alpha = 1.0 / np.sqrt(sig**2 + 1.0)  # alpha_t of the VP process
        sigma = sig * alpha  # sigma_t
        with np.errstate(divide="ignore"):
            lam = np.log(alpha) - np.log(sigma)  # (S+1,), +inf at the end
        coef, order = [], []
        for i in range(steps):
            h = lam[i + 1] - lam[i]
            phi = alpha[i + 1] * (math.exp(-h) - 1.0)  # 0 - alpha at the final sigma = 0
            first = i == 0 or i == steps - 1  # warm start; lower_order_final
            r = 1.0 if first else (lam[i] - lam[i - 1]) / h
            coef.append((float(sig[i]), float(alpha[i]), float(sigma[i + 1] / sigma[i]), phi, r))
            order.append(1 if first else 2)
        return Plan(torch.from_numpy(ts), coef, order)


def x0_and_eps(
    x_t: Tensor, out: Tensor, sqrt_ab_t: float, sqrt_1m_ab_t: float, prediction_type: str
) -> tuple[Tensor, Tensor]:
    """(x0_hat, eps) implied by a model output at x_t = sqrt_ab_t x0 + sqrt_1m_ab_t eps.

    For "velocity" (flow matching) the two coefficients are alpha = 1 - t and sigma = t, and
    the output is v = eps - x0: x0 = x_t - t v, eps = x_t + (1 - t) v."""
    if prediction_type == "epsilon":
        return (x_t - sqrt_1m_ab_t * out) / sqrt_ab_t, out
    if prediction_type == "velocity":
        return x_t - sqrt_1m_ab_t * out, x_t + sqrt_ab_t * out
    return out, (x_t - sqrt_ab_t * out) / sqrt_1m_ab_t


X0Guide = Callable[[Tensor], Tensor]
"""x0_hat (B, ...) -> x0_hat (B, ...) applied at every reverse step after clipping, e.g. the
inpainting of real-time chunking: x0_hat + w * (y - x0_hat) pulls the entries with weight w
towards a target y (w = 1 fixes them: the final sample holds y exactly there)."""


def ddim_step(
    x_t: Tensor,
    out: Tensor,
    coef: tuple[float, ...],
    prediction_type: str,
    clip_sample: bool,
    x0_guide: X0Guide | None = None,
) -> tuple[Tensor, Tensor]:
    """One DDIM step (eta = 0) from x_t (B, ...) given the model output at x_t.

    coef = (sqrt(alpha_bar_t), sqrt(1 - alpha_bar_t), sqrt(alpha_bar_prev),
    sqrt(1 - alpha_bar_prev)), one entry of a "ddim" plan. Returns (x_prev, x0_hat), with x0_hat
    clipped to [-1, 1] when `clip_sample` (then guided); eps is the unclipped model noise, as in
    diffusers.
    """
    sqrt_ab_t, sqrt_1m_ab_t, sqrt_ab_prev, sqrt_1m_ab_prev = coef
    x0_hat, eps = x0_and_eps(x_t, out, sqrt_ab_t, sqrt_1m_ab_t, prediction_type)
    if clip_sample:
        x0_hat = x0_hat.clamp(-1.0, 1.0)
    if x0_guide is not None:
        x0_hat = x0_guide(x0_hat)
    return sqrt_ab_prev * x0_hat + sqrt_1m_ab_prev * eps, x0_hat


def sample(
    denoiser: Callable[[Tensor, Tensor], Tensor],
    schedule: NoiseSchedule,
    x_T: Tensor,
    *,
    sampler: str = "ddim",
    steps: int = 10,
    prediction_type: str = "epsilon",
    clip_sample: bool = True,
    generator: torch.Generator | None = None,
    return_x0: bool = False,
    indexed: bool = False,
    x0_guide: X0Guide | None = None,
) -> Tensor | tuple[Tensor, Tensor]:
    """Run the reverse process from x_T to x_0.

    Args:
        denoiser: (x_t (B, ...), t (B,) int64) -> eps or x0 prediction (B, ...); with
            `indexed`, (x_t, i) where i is the step index into
            `schedule.plan(sampler, steps).timesteps` (so the denoiser can precompute its
            per-step inputs, e.g. FiLM parameters, once per run).
        schedule: the training noise schedule.
        x_T: (B, ...) initial Gaussian noise (the caller draws it, for reproducibility).
        sampler: "ddpm" | "ddim" | "dpmpp".
        steps: number of reverse steps (denoiser calls).
        prediction_type: "epsilon" or "sample" (what the denoiser predicts).
        clip_sample: clip the predicted clean sample x0_hat to [-1, 1] at every step.
        generator: RNG of DDPM's per-step noise.
        return_x0: also return x0_hat of every step, stacked (S, B, ...).
        indexed: call the denoiser with the step index instead of the timestep tensor.
        x0_guide: applied to x0_hat at every step, after clipping (see `X0Guide`).

    Returns:
        x_0 (B, ...), or (x_0, x0_trace (S, B, ...)) when `return_x0`.
    """
    if prediction_type not in ("epsilon", "sample", "velocity"):
        raise ValueError(f"prediction_type={prediction_type!r} must be epsilon, sample or velocity")
    if (prediction_type == "velocity") != (sampler in ("euler", "heun")):
        raise ValueError(f"sampler={sampler!r} cannot sample prediction_type={prediction_type!r}")
    plan = schedule.plan(sampler, steps, x_T.device)
    B = x_T.shape[0]
    # the denoiser's second argument per plan timestep, built before the loop
    S = len(plan.timesteps)
    step_args = list(range(S)) if indexed else list(plan.timesteps[:, None].expand(S, B))
    x_t = x_T
    trace = x_T.new_empty((steps, *x_T.shape)) if return_x0 else None

    if sampler == "ddim":
        for i in range(steps):
            out = denoiser(x_t, step_args[i])
            x_t, x0_hat = ddim_step(x_t, out, plan.coef[i], prediction_type, clip_sample, x0_guide)
            if trace is not None:
                trace[i] = x0_hat

    elif sampler in ("euler", "heun"):
        for i in range(steps):
            out = denoiser(x_t, step_args[i])  # velocity eps - x0 at t_i
            if sampler == "heun" and plan.coef[i][3] > 0.0:
                # average with the velocity at the Euler prediction of t_i+1; not into t = 0,
                # where the velocity field of concentrated data is degenerate (-x: EDM's rule)
                x_euler, _ = ddim_step(x_t, out, plan.coef[i], prediction_type, False)
                out = 0.5 * (out + denoiser(x_euler, step_args[i + 1]))
            x_t, x0_hat = ddim_step(x_t, out, plan.coef[i], prediction_type, clip_sample, x0_guide)
            if trace is not None:
                trace[i] = x0_hat

    elif sampler == "ddpm":
        for i in range(steps):
            out = denoiser(x_t, step_args[i])
            sqrt_ab_t, sqrt_1m_ab_t, c_x0, c_xt, sigma_t = plan.coef[i]
            x0_hat, _ = x0_and_eps(x_t, out, sqrt_ab_t, sqrt_1m_ab_t, prediction_type)
            if clip_sample:
                x0_hat = x0_hat.clamp(-1.0, 1.0)
            if x0_guide is not None:
                x0_hat = x0_guide(x0_hat)
            if trace is not None:
                trace[i] = x0_hat
            # posterior mean mu(x_t, x0_hat) + sigma_t z
            x_prev = c_x0 * x0_hat + c_xt * x_t
            if sigma_t > 0.0:
                z = torch.randn(x_t.shape, generator=generator, dtype=x_t.dtype, device=x_t.device)
                x_prev = x_prev + sigma_t * z
            x_t = x_prev

    elif sampler == "dpmpp":
        x0_prev = None  # data prediction of the previous step (m1)
        for i in range(steps):
            out = denoiser(x_t, step_args[i])
            sig_t, alpha_t, sigma_ratio, phi, r = plan.coef[i]
            if prediction_type == "epsilon":
                # x_t = alpha_t (x0 + sig_t eps) with sig_t = sigma_t / alpha_t
                x0_hat = x_t / alpha_t - sig_t * out
            else:
                x0_hat = out
            if clip_sample:
                x0_hat = x0_hat.clamp(-1.0, 1.0)
            if x0_guide is not None:
                x0_hat = x0_guide(x0_hat)
            if trace is not None:
                trace[i] = x0_hat
            if plan.order[i] == 1:
                D = x0_hat
            else:  # midpoint 2M: D0 + 0.5 * D1, D1 = (m0 - m1) / r
                D = x0_hat + (0.5 / r) * (x0_hat - x0_prev)
            x_t = sigma_ratio * x_t - phi * D
            x0_prev = x0_hat
    else:
        raise ValueError(f"sampler={sampler!r} must be one of {', '.join(SAMPLERS)}")

    return (x_t, trace) if return_x0 else x_t


def lowpass_projector(horizon: int, k: int, device=None):
    """x (B, Tp, A) -> its projection onto the first k orthonormal DCT-II basis vectors over
    time: the chunk's k lowest temporal frequencies (k = Tp is the identity)."""
    proj = _lowpass_matrix(horizon, k, str(torch.device(device or "cpu")))  # (Tp, Tp)
    return lambda x: torch.matmul(proj, x)


@functools.lru_cache(maxsize=16)
def _lowpass_matrix(horizon: int, k: int, device: str) -> Tensor:
    """(Tp, Tp) projector B B^T onto the first k DCT-II basis vectors, built once per shape."""
    n = torch.arange(horizon, dtype=torch.float64)
    basis = torch.stack([torch.cos(math.pi * (n + 0.5) * f / horizon) for f in range(k)], 1)
    basis = basis / basis.norm(dim=0, keepdim=True)  # (Tp, k), orthonormal columns
    return (basis @ basis.T).float().to(device)


def with_lowpass(guide: X0Guide | None, lowpass: int, x_T: Tensor) -> X0Guide | None:
    """`guide` after a projection onto the chunk's `lowpass` lowest temporal frequencies
    (x_T (B, Tp, A) gives Tp and the device; lowpass 0: `guide` unchanged). Smoothing comes
    first, so an inpainting guide keeps its prefix exact."""
    if not lowpass:
        return guide
    project = lowpass_projector(x_T.shape[1], lowpass, x_T.device)
    return project if guide is None else (lambda x0: guide(project(x0)))
