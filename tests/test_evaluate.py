"""Evaluation (diffpolicy.evaluate): aggregate metrics from episode records, and the commanded
mode / instruction for each episode (make_condition_fn)."""

import numpy as np
import pytest
from helpers import DEBUG

from diffpolicy import language
from diffpolicy.config import load_config
from diffpolicy.errors import UserError
from diffpolicy.evaluate import aggregate
from diffpolicy.rollout import EpisodeRecord


def test_aggregate_metrics_from_records():
    recs = []
    for i in range(10):
        mode = 0 if i < 6 else 1
        recs.append(
            EpisodeRecord(
                episode=i,
                seed=i,
                success=i != 9,
                mode=mode if i != 9 else -1,
                collision=i == 9,
                between_modes=i == 9,
            )
        )
    out = aggregate(recs, 2, [0.5, 0.5], [1.0, 3.0], [8, 8])
    assert out["episodes"] == 10 and out["success_rate"] == 0.9
    assert out["collision_rate"] == 0.1 and out["interpolation_rate"] == 0.1
    assert out["mode_probs"] == pytest.approx([6 / 9, 3 / 9])
    assert out["tv_to_demos"] == pytest.approx(1 / 6)
    p = np.array([6 / 9, 3 / 9])
    assert out["normalized_entropy"] == pytest.approx(-(p * np.log(p)).sum() / np.log(2))
    lo, hi = out["success_rate_ci95"]
    assert lo <= 0.9 <= hi
    assert out["commanded_mode_accuracy"] is None and out["chunk_latency_ms"] == 2.0


# ------------------------------------------------------------------------- commanded modes


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
