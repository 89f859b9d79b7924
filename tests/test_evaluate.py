"""Evaluation (diffpolicy.evaluate): aggregate metrics from episode records, and the commanded
mode / instruction for each episode (make_condition_fn)."""

from types import SimpleNamespace

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


def _lang_cfg(fake_encoder, grounding="none", env_id="diffpolicy/ReachAround-v0"):
    cfg = load_config(
        DEBUG,
        [
            "policy.condition=language",
            f"policy.language_grounding={grounding}",
            f"policy.language_model={fake_encoder.path}",
        ],
    )
    cfg.env_id = env_id
    cfg.dims = {"obs_dim": 4, "action_dim": 2, "goal_dim": 2, "num_modes": 2, "lang_dim": 16}
    return cfg


def test_instruction_file_cycles_its_commanded_lines(fake_encoder, tmp_path):
    """Episode i commands the i-th commanded line in turn; off-task lines ("-") are grounded,
    never rolled out; without a grounder the policy gets each line's embedding."""
    from diffpolicy.evaluate import make_condition_fn

    f = tmp_path / "mine.tsv"
    f.write_text("left\tgo left please\n# a comment\n-\tmake me a sandwich\n1\tgo right\n")
    cfg = _lang_cfg(fake_encoder)
    policy = SimpleNamespace(cond_encoder=SimpleNamespace())  # reads embeddings: no grounder
    fn, summary = make_condition_fn(cfg, policy, None, None, str(f), 2)
    assert summary is None  # no grounder in this run
    cmds = [fn(i) for i in range(4)]
    assert [(k, t) for _, k, t in cmds] == [(0, "go left please"), (1, "go right")] * 2
    np.testing.assert_array_equal(
        cmds[1][0]["lang"], language.embed(["go right"], fake_encoder.path)[0]
    )


def test_condition_commands_are_checked(fake_encoder):
    from diffpolicy.evaluate import check_command, make_condition_fn

    cfg = _lang_cfg(fake_encoder)
    with pytest.raises(UserError, match="--mode needs a mode-conditioned run"):
        check_command(cfg, 0, None, None, 2)
    with pytest.raises(UserError, match="must not be empty"):
        check_command(cfg, None, "  ", None, 2)
    with pytest.raises(UserError, match="only one of"):
        check_command(cfg, None, "go left", "val", 2)
    mode_cfg = load_config(DEBUG, ["policy.condition=mode"])
    with pytest.raises(UserError, match="--instructions needs a language-conditioned run"):
        check_command(mode_cfg, None, None, "train", 2)
    with pytest.raises(UserError, match="out of range"):
        check_command(mode_cfg, 2, None, None, 2)
    fn, _ = make_condition_fn(mode_cfg, None, "all", None, None, 2)
    assert [fn(i)[1] for i in range(4)] == [0, 1, 0, 1]
