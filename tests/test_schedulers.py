"""Noise schedule and samplers: equivalence with diffusers, DDIM/DDPM sanity, x0 trace."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from diffpolicy.schedulers import NoiseSchedule, sample

T = 100


def toy_model(prediction_type: str):
    """A fixed nonlinear 'denoiser' (x_t, t) -> output, shared by both implementations."""
    torch.manual_seed(0)
    W = torch.randn(2, 2) * 0.3

    def f(x_t, t):
        s = (t.float() / T).view(-1, 1, 1)
        out = torch.tanh(x_t @ W) * (1 - s) + 0.5 * s * x_t
        return out if prediction_type == "epsilon" else out.clamp(-1.5, 1.5)

    return f


def diffusers_loop(sched, f, x_T, steps, generator=None):
    sched.set_timesteps(steps)
    x = x_T.clone()
    for t in sched.timesteps:
        out = f(x, t.expand(x.shape[0]))
        kw = {"generator": generator} if generator is not None else {}
        x = sched.step(out, t, x, **kw).prev_sample
    return x


def make_diffusers(sampler, prediction_type, clip, spacing, beta_schedule="squaredcos_cap_v2"):
    diffusers = pytest.importorskip("diffusers")
    common = dict(
        num_train_timesteps=T, beta_schedule=beta_schedule, prediction_type=prediction_type
    )
    if sampler == "ddpm":
        return diffusers.DDPMScheduler(
            **common, variance_type="fixed_small", clip_sample=clip, timestep_spacing=spacing
        )
    if sampler == "ddim":
        return diffusers.DDIMScheduler(
            **common, clip_sample=clip, set_alpha_to_one=True, timestep_spacing=spacing
        )
    return diffusers.DPMSolverMultistepScheduler(
        **common, algorithm_type="dpmsolver++", solver_order=2, solver_type="midpoint"
    )


@pytest.mark.parametrize("beta_schedule", ["squaredcos_cap_v2", "linear"])
def test_alphas_cumprod_match_diffusers(beta_schedule):
    diffusers = pytest.importorskip("diffusers")
    ref = diffusers.DDPMScheduler(num_train_timesteps=T, beta_schedule=beta_schedule)
    ours = NoiseSchedule(T, beta_schedule)
    assert ours.alphas_cumprod.dtype == torch.float32
    torch.testing.assert_close(ours.alphas_cumprod, ref.alphas_cumprod, rtol=0, atol=1e-7)
    x0, noise = torch.randn(5, 16, 2), torch.randn(5, 16, 2)
    t = torch.tensor([0, 10, 50, 98, 99])
    torch.testing.assert_close(ours.add_noise(x0, noise, t), ref.add_noise(x0, noise, t))


def test_a_schedule_that_underflows_float32_still_samples_finite_values():
    # T = 1000 linear betas 0.001..0.2 (the mode study's paper-style detector): in float32
    # alpha_bar turns subnormal near t = 900 and its ratios lose all precision; floored at 1e-30
    # (from t = 804), DDPM still runs end to end
    s = NoiseSchedule(1000, "linear", beta_range=(0.001, 0.2))
    assert s.alphas_cumprod.min() > 0 and s.alphas_cumprod[-1] < 1e-20
    ref = torch.cumprod(1 - torch.linspace(0.001, 0.2, 1000, dtype=torch.float64), 0)
    ok = ref > 1e-20  # where float32 holds it, the floor changes nothing
    torch.testing.assert_close(s.alphas_cumprod[ok].double(), ref[ok], rtol=1e-4, atol=0)
    x0, trace = sample(lambda x, t: 0.1 * x, s, torch.randn(64, 2), sampler="ddpm", steps=1000,
                       clip_sample=False, generator=torch.Generator().manual_seed(0),
                       return_x0=True)  # fmt: skip
    assert torch.isfinite(x0).all() and torch.isfinite(trace[-10:]).all()


CASES = [
    (s, pt, clip, spacing, steps)
    for s in ("ddpm", "ddim")
    for pt in ("epsilon", "sample")
    for clip in (True, False)
    for spacing in ("leading", "trailing")
    for steps in (10, 7, 100)
    if not (s == "ddpm" and steps == 100 and spacing == "trailing")
] + [
    ("dpmpp", pt, False, "leading", steps)
    for pt in ("epsilon", "sample")
    for steps in (10, 7, 1, 25)
]


@pytest.mark.parametrize("sampler,prediction_type,clip,spacing,steps", CASES)
def test_sampler_matches_diffusers(sampler, prediction_type, clip, spacing, steps):
    ref_sched = make_diffusers(sampler, prediction_type, clip, spacing)
    f = toy_model(prediction_type)
    x_T = torch.randn(4, 16, 2, generator=torch.Generator().manual_seed(1))
    ref = diffusers_loop(ref_sched, f, x_T, steps, torch.Generator().manual_seed(2))
    ours = sample(
        f,
        NoiseSchedule(T, timestep_spacing=spacing),
        x_T,
        sampler=sampler,
        steps=steps,
        prediction_type=prediction_type,
        clip_sample=clip,
        generator=torch.Generator().manual_seed(2),
    )
    # The toy model is no real denoiser: unclipped epsilon runs reach magnitudes in the hundreds,
    # where float32 rounding alone is ~1e-5 relative; compare relative to the largest value.
    scale = max(1.0, ref.abs().max().item())
    torch.testing.assert_close(ours, ref, rtol=0, atol=1e-4 * scale)


def test_ddim_full_steps_equals_ddpm_posterior_mean():
    """With S = T and no noise, the DDPM step mean and the DDIM step differ only by eta; at the
    last step (t=0 -> alpha_bar_prev = 1) both return x0_hat. A denoiser that always predicts
    the same x0 makes both samplers land exactly on that x0."""
    target = torch.rand(3, 8, 2) * 2 - 1
    f = lambda x_t, t: target  # noqa: E731  sample prediction
    sched = NoiseSchedule(T)
    x_T = torch.randn(3, 8, 2)
    ddim = sample(f, sched, x_T, sampler="ddim", steps=T, prediction_type="sample")
    ddpm = sample(
        f,
        sched,
        x_T,
        sampler="ddpm",
        steps=T,
        prediction_type="sample",
        generator=torch.Generator().manual_seed(0),
    )
    torch.testing.assert_close(ddim, target, atol=1e-5, rtol=0)
    torch.testing.assert_close(ddpm, target, atol=1e-5, rtol=0)


@pytest.mark.parametrize("sampler", ["ddpm", "ddim", "dpmpp"])
def test_return_x0_trace_and_plan_cache(sampler):
    sched = NoiseSchedule(T)
    f = toy_model("epsilon")
    x_T = torch.randn(2, 16, 2)
    x0, trace = sample(
        f,
        sched,
        x_T,
        sampler=sampler,
        steps=5,
        return_x0=True,
        generator=torch.Generator().manual_seed(0),
    )
    assert trace.shape == (5, 2, 16, 2) and x0.shape == (2, 16, 2)
    assert trace.abs().max() <= 1.0  # clipped x0_hat
    assert len(sched._plans) == 1
    sample(f, sched, x_T, sampler=sampler, steps=5, generator=torch.Generator().manual_seed(0))
    assert len(sched._plans) == 1  # reused


@pytest.mark.parametrize("sampler", ["ddpm", "ddim", "dpmpp"])
@pytest.mark.parametrize("spacing", ["leading", "trailing"])
def test_indexed_denoiser_gets_plan_steps(sampler, spacing):
    """indexed=True calls denoiser(x_t, i) with i into the plan's timesteps: same result."""
    sched = NoiseSchedule(T, timestep_spacing=spacing)
    f = toy_model("epsilon")
    x_T = torch.randn(3, 16, 2)
    ts = sched.plan(sampler, 6).timesteps
    seen = []

    def by_index(x_t, i):
        seen.append(i)
        return f(x_t, ts[i].expand(x_t.shape[0]))

    kw = dict(sampler=sampler, steps=6)
    ref = sample(f, sched, x_T, generator=torch.Generator().manual_seed(0), **kw)
    out = sample(
        by_index, sched, x_T, generator=torch.Generator().manual_seed(0), indexed=True, **kw
    )
    assert seen == list(range(6))
    torch.testing.assert_close(out, ref, atol=0, rtol=0)


def test_bad_arguments():
    sched = NoiseSchedule(T)
    x = torch.randn(1, 4, 2)
    with pytest.raises(ValueError):
        sample(lambda x, t: x, sched, x, sampler="euler")
    with pytest.raises(ValueError):
        sample(lambda x, t: x, sched, x, steps=T + 1)
    with pytest.raises(ValueError):
        NoiseSchedule(T, "cosine")


@pytest.mark.parametrize("sampler", ["euler", "heun"])
@pytest.mark.parametrize("steps", [1, 3, 8])
def test_flow_samplers_integrate_straight_paths_exactly(sampler, steps):
    """A constant velocity v = eps - x0 is a straight path: Euler and Heun land on x_T - v for
    any step count; for a point mass at c the velocity field (x_t - c) / t takes Euler to c."""
    sched = NoiseSchedule(100)
    x_T = torch.randn(4, 6, 2, generator=torch.Generator().manual_seed(0))
    v = torch.randn(4, 6, 2, generator=torch.Generator().manual_seed(1))
    x0 = sample(lambda x, t: v, sched, x_T, sampler=sampler, steps=steps,
                prediction_type="velocity", clip_sample=False)  # fmt: skip
    torch.testing.assert_close(x0, x_T - v, atol=1e-5, rtol=1e-5)
    plan = sched.plan(sampler, steps)
    assert plan.timesteps.tolist() == pytest.approx(np.linspace(100, 0, steps + 1).tolist())
    if sampler == "euler":
        c = torch.full_like(x_T, 0.3)
        field = lambda x, t: (x - c) / (t[:, None, None] / 100)  # noqa: E731
        out = sample(field, sched, x_T, sampler="euler", steps=steps, prediction_type="velocity",
                     clip_sample=False)  # fmt: skip
        torch.testing.assert_close(out, c, atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="cannot sample"):
        sample(lambda x, t: v, sched, x_T, sampler=sampler, steps=steps)
