"""Policies: shapes, losses, the two-mode toy (diffusion keeps both modes, mse averages),
classifier-free guidance paths, mode conditioning, latency print."""

from __future__ import annotations

import dataclasses
import time

import numpy as np
import pytest
import torch

from diffpolicy.config import Config, DataConfig, ModelConfig, PolicyConfig, validate
from diffpolicy.policies import DiffusionPolicy, GMMPolicy, MSEPolicy, make_policy

# One intra-op thread for the whole session, set before any parallel region runs: on a 2-core
# machine switching 2 -> 1 threads later leaves OpenMP workers spinning (tests 5-10x slower).
torch.set_num_threads(1)


TINY = ModelConfig(
    down_dims=(16, 32), kernel_size=3, n_groups=4, step_embed_dim=16, cond_embed_dim=8
)


def make_cfg(
    policy_type="diffusion",
    *,
    goal_dim=0,
    condition="none",
    model=TINY,
    horizon=8,
    action_dim=2,
    obs_dim=3,
    **policy_kw,
) -> Config:
    cfg = Config(
        data=DataConfig(n_obs_steps=2, horizon=horizon, n_action_steps=4),
        model=model,
        policy=PolicyConfig(type=policy_type, condition=condition, **policy_kw),
        dims={
            "obs_dim": obs_dim,
            "action_dim": action_dim,
            "goal_dim": goal_dim,
            "num_modes": 2,
            "lang_dim": 6,
        },
    )
    return validate(cfg)


def make_batch(cfg: Config, B=4, with_action=True) -> dict[str, torch.Tensor]:
    d, To, Tp = cfg.dims, cfg.data.n_obs_steps, cfg.data.horizon
    batch = {"obs": torch.randn(B, To, d["obs_dim"])}
    if with_action:
        batch["action"] = torch.rand(B, Tp, d["action_dim"]) * 4 - 2
        mask = torch.ones(B, Tp, dtype=torch.bool)
        mask[0, :2] = False
        batch["action_mask"] = mask
    if d["goal_dim"] > 0:
        batch["goal"] = torch.randn(B, d["goal_dim"])
    if cfg.policy.condition == "mode":
        batch["mode"] = torch.randint(0, d["num_modes"], (B,))
    if cfg.policy.condition == "language":
        batch["lang"] = torch.randn(B, d["lang_dim"])
    return batch


@pytest.mark.parametrize(
    "ptype,cls", [("diffusion", DiffusionPolicy), ("mse", MSEPolicy), ("gmm", GMMPolicy)]
)
@pytest.mark.parametrize("condition,goal_dim", [("none", 0), ("mode", 2), ("language", 0)])
def test_shapes_and_loss(ptype, cls, condition, goal_dim):
    cfg = make_cfg(ptype, goal_dim=goal_dim, condition=condition, cond_dropout=0.2)
    policy = make_policy(cfg)
    assert isinstance(policy, cls) and policy.cfg is cfg
    names = {"obs", "action"} | ({"goal"} if goal_dim else set())
    assert set(policy.normalizer.names) == names
    batch = make_batch(cfg)
    policy.normalizer.fit(
        {
            "obs": batch["obs"].numpy(),
            "action": batch["action"].numpy(),
            **({"goal": batch["goal"].numpy()} if goal_dim else {}),
        }
    )
    loss = policy.compute_loss(batch)
    assert loss.dim() == 0 and torch.isfinite(loss)
    loss.backward()
    policy.reset()
    obs = make_batch(cfg, with_action=False)
    out = policy.predict_action_chunk(
        obs, sampler="ddim", steps=3, guidance=2.0, generator=torch.Generator().manual_seed(0)
    )
    assert out.shape == (4, 8, 2) and out.dtype == torch.float32
    # sampled actions stay in the training action range (clipped in normalized space)
    lo, hi = batch["action"].amin((0, 1)), batch["action"].amax((0, 1))
    if ptype == "diffusion":
        assert (out >= lo - 1e-4).all() and (out <= hi + 1e-4).all()


def test_diffusion_guidance_paths_and_trace():
    cfg = make_cfg("diffusion", condition="mode", cond_dropout=0.1)
    policy = make_policy(cfg).eval()
    obs = make_batch(cfg, with_action=False)
    g = lambda: torch.Generator().manual_seed(3)  # noqa: E731
    outs = {
        w: policy.predict_action_chunk(obs, guidance=w, steps=4, generator=g())
        for w in (0.0, 1.0, 3.0)
    }
    for w, out in outs.items():
        assert out.shape == (4, 8, 2) and torch.isfinite(out).all(), w
    # guided = uncond + w (cond - uncond): w=0 and w=1 reproduce the single-pass paths
    den0, den1 = policy.denoiser(obs, 0.0), policy.denoiser(obs, 1.0)
    den_mix = policy.denoiser(obs, 0.5)
    x, t = torch.randn(4, 8, 2), torch.full((4,), 50)
    with torch.no_grad():
        torch.testing.assert_close(
            den_mix(x, t), 0.5 * (den0(x, t) + den1(x, t)), atol=1e-5, rtol=1e-5
        )
    acts, trace = policy.predict_action_chunk(obs, steps=5, return_x0=True, sampler="dpmpp")
    assert acts.shape == (4, 8, 2) and trace.shape == (5, 4, 8, 2)


def test_ddpm_and_dpmpp_override():
    cfg = make_cfg("diffusion")
    policy = make_policy(cfg)
    obs = make_batch(cfg, B=2, with_action=False)
    for sampler, steps in (("ddpm", 100), ("ddpm", 10), ("dpmpp", 10)):
        out = policy.predict_action_chunk(
            obs, sampler=sampler, steps=steps, generator=torch.Generator().manual_seed(0)
        )
        assert out.shape == (2, 8, 2) and torch.isfinite(out).all()


def test_fast_sampling_path_matches_reference_loop():
    """FiLM tables + frozen trace give the plain denoiser loop; weight changes rebuild it."""
    from diffpolicy.schedulers import sample

    torch.manual_seed(0)  # the same weights whatever ran before in this process
    cfg = make_cfg("diffusion", goal_dim=2, condition="mode", cond_dropout=0.1)
    policy = make_policy(cfg).eval()
    obs = make_batch(cfg, B=3, with_action=False)
    for sampler, steps, w in (("ddim", 4, 1.0), ("dpmpp", 5, 0.0), ("ddpm", 6, 1.0)):
        g = torch.Generator().manual_seed(7)
        x_T = torch.randn((3, 8, 2), generator=g)
        with torch.no_grad():
            ref = sample(
                policy.denoiser(obs, w),
                policy.schedule,
                x_T,
                sampler=sampler,
                steps=steps,
                generator=g,
            ).clamp(-1, 1)
        ref = policy.normalizer.unnormalize("action", ref)
        for jit in (True, False):
            policy.jit = jit
            out = policy.predict_action_chunk(
                obs,
                sampler=sampler,
                steps=steps,
                guidance=w,
                generator=torch.Generator().manual_seed(7),
            )
            torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)
    policy.jit = True
    for B in (2, 4):  # other batch sizes: their own traces
        sub = {k: v[:B] if B <= 3 else torch.cat((v, v[:1])) for k, v in obs.items()}
        outs = []
        for jit in (True, False):
            policy.jit = jit
            g = torch.Generator().manual_seed(2)
            outs.append(policy.predict_action_chunk(sub, generator=g))
        torch.testing.assert_close(outs[0], outs[1], atol=1e-5, rtol=1e-5)
    policy.jit = True
    assert len([k for k in policy._compiled if k[0] == "jit"]) == 3
    before = policy.predict_action_chunk(obs, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        policy.model.head[1].bias.add_(0.5)  # an in-place weight change (optimizer, EMA, load)
    after = policy.predict_action_chunk(obs, generator=torch.Generator().manual_seed(1))
    assert not torch.allclose(before, after)
    policy.jit = False
    eager = policy.predict_action_chunk(obs, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(after, eager, atol=1e-5, rtol=1e-5)


# ----------------------------------------------------------------------------- two-mode toy


def toy_batch(B, Tp=8, mode=None, generator=None):
    """Identical observations; the chunk is all +1 or all -1 (A = 1). Mode 0 = +1, 1 = -1."""
    if mode is None:
        mode = torch.randint(0, 2, (B,), generator=generator)
    sign = 1.0 - 2.0 * mode.float()  # (B,)
    action = sign[:, None, None].expand(B, Tp, 1).clone()
    return {"obs": torch.zeros(B, 2, 1), "action": action, "mode": mode}


def train(policy, steps, B=32, lr=3e-3, seed=0):
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    policy.normalizer.fit({"obs": np.array([[0.0], [1.0]]), "action": np.array([[-1.0], [1.0]])})
    opt = torch.optim.Adam(policy.parameters(), lr=lr)
    losses = []
    for _ in range(steps):
        loss = policy.compute_loss(toy_batch(B, generator=gen))
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return losses


def test_two_mode_toy_diffusion_keeps_both_modes_mse_averages():
    diff = make_policy(make_cfg("diffusion", action_dim=1, obs_dim=1))
    losses = train(diff, 120)
    assert np.mean(losses[-20:]) < 0.6 * np.mean(losses[:20])
    obs = {"obs": torch.zeros(64, 2, 1)}
    chunk_mean = diff.predict_action_chunk(obs, generator=torch.Generator().manual_seed(0)).mean(
        (1, 2)
    )  # (64,)
    frac_pos = (chunk_mean > 0.5).float().mean().item()
    frac_neg = (chunk_mean < -0.5).float().mean().item()
    assert frac_pos > 0.15 and frac_neg > 0.15, (frac_pos, frac_neg)

    mse = make_policy(make_cfg("mse", action_dim=1, obs_dim=1))
    train(mse, 100)
    out = mse.predict_action_chunk(obs)
    assert out.abs().max() < 0.3  # the average of +1 and -1

    gmm = make_policy(make_cfg("gmm", action_dim=1, obs_dim=1, gmm_min_std=1e-2))
    losses = train(gmm, 60)
    assert losses[-1] < losses[0]
    out = gmm.predict_action_chunk(obs, generator=torch.Generator().manual_seed(0))
    assert out.shape == (64, 8, 1) and torch.isfinite(out).all()


@pytest.mark.slow
def test_mode_conditioning_selects_sign():
    policy = make_policy(
        make_cfg("diffusion", action_dim=1, obs_dim=1, condition="mode", cond_dropout=0.1)
    )
    train(policy, 300)
    for mode, sign in ((0, 1.0), (1, -1.0)):
        obs = {"obs": torch.zeros(32, 2, 1), "mode": torch.full((32,), mode)}
        chunk_mean = policy.predict_action_chunk(
            obs, generator=torch.Generator().manual_seed(1)
        ).mean((1, 2))
        assert (chunk_mean * sign > 0.5).float().mean() > 0.9, (mode, chunk_mean)


def test_language_separates_near_identical_embeddings():
    """Two instruction embeddings with cosine 0.98 map to clearly different condition vectors
    after standardization with the dataset statistics."""
    cfg = make_cfg("diffusion", condition="language")
    policy = make_policy(cfg)
    base = torch.randn(6)
    base = base / base.norm()
    d = torch.randn(6)
    d = d - (d @ base) * base
    d = 0.1 * d / d.norm()
    left, right = base + d, base - d
    assert torch.cosine_similarity(left, right, dim=0) > 0.97
    policy.train()
    for _ in range(5):  # running statistics accumulate in training
        lang = torch.stack([left, right] * 8)
        policy.cond_encoder({"lang": lang}, 16)
    enc = policy.cond_encoder.eval()
    z = (torch.stack([left, right]) - enc.lang_mean) / torch.sqrt(enc.lang_var + 1e-6)
    assert torch.cosine_similarity(z[0], z[1], dim=0) < -0.9


def test_latency_print():
    """Per-chunk latency of the default config, batch 1, 1 thread, DDIM-10 (printed only)."""
    cfg = validate(Config(dims={"obs_dim": 10, "action_dim": 2, "goal_dim": 2}))
    policy = make_policy(cfg).eval()
    obs = {"obs": torch.randn(1, 2, 10), "goal": torch.randn(1, 2)}
    policy.predict_action_chunk(obs)
    t0 = time.perf_counter()
    for _ in range(2):
        policy.predict_action_chunk(obs)
    ms = (time.perf_counter() - t0) / 2 * 1e3
    n = sum(p.numel() for p in policy.parameters())
    print(f"default config ({n / 1e6:.2f}M params): DDIM-10 {ms:.1f} ms per chunk")


def test_make_policy_rejects_unknown_and_missing_dims():
    cfg = make_cfg("diffusion")
    with pytest.raises(ValueError):
        make_policy(dataclasses.replace(cfg, dims={}))
