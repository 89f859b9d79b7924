"""Controller, rollouts, evaluation JSON and the report, on tiny runs."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from diffpolicy.config import config_from_dict
from diffpolicy.controller import RecedingHorizonController
from diffpolicy.evaluate import aggregate
from diffpolicy.rollout import EpisodeRecord, rollout

ROOT = Path(__file__).resolve().parents[1]


class ScriptedPolicy(torch.nn.Module):
    """Returns chunk[b, i] = (call index, i) so tests can see which slice was executed."""

    def __init__(self, horizon, nan=False):
        super().__init__()
        self.register_buffer("dummy", torch.zeros(1))
        self.calls, self.horizon, self.nan = 0, horizon, nan
        self.seen = []

    def predict_action_chunk(self, obs, **kw):
        B = obs["obs"].shape[0]
        self.seen.append(obs)
        i = torch.arange(self.horizon, dtype=torch.float32)
        chunk = torch.stack([torch.full_like(i, float(self.calls)), i], -1)
        self.calls += 1
        out = chunk.expand(B, -1, -1).clone()
        if self.nan:
            out[:] = float("nan")
        return out


def tiny_cfg(**data):
    cfg = config_from_dict(
        {
            "data": {"n_obs_steps": 2, "horizon": 8, "n_action_steps": 4, **data},
            "model": {"down_dims": [16, 32], "n_groups": 4},
        }
    )
    cfg.dims = {"obs_dim": 4, "action_dim": 2, "goal_dim": 2, "num_modes": 2, "lang_dim": 0}
    return cfg


def fake_obs(x):
    return {"observation": np.full(4, x, np.float32), "desired_goal": np.zeros(2, np.float32)}


def test_controller_executes_the_published_slice_and_replans_every_ta_steps():
    cfg = tiny_cfg()
    policy = ScriptedPolicy(8)
    ctrl = RecedingHorizonController(policy, cfg, n_slots=2)
    ctrl.reset(0)
    ctrl.reset(1)
    actions = [ctrl.act({0: fake_obs(t), 1: fake_obs(-t)}) for t in range(9)]
    # To=2, Ta=4: steps 0-3 execute pred[To-1 : To-1+Ta] = indices 1..4 of call 0
    assert [a[0][1] for a in actions[:4]] == [1, 2, 3, 4]
    assert [a[0][0] for a in actions] == [0] * 4 + [1] * 4 + [2]
    assert policy.calls == 3  # one batched call per re-plan for both slots
    assert policy.seen[0]["obs"].shape == (2, 2, 4)
    # history: first frame padded backwards, then the last To observations
    assert policy.seen[0]["obs"][0, :, 0].tolist() == [0, 0]
    assert policy.seen[1]["obs"][0, :, 0].tolist() == [3, 4]
    assert len(ctrl.latencies_ms) == 3 and ctrl.batch_sizes == [2, 2, 2]


def test_replans_are_padded_to_a_power_of_two_batch():
    cfg = tiny_cfg()
    policy = ScriptedPolicy(8)
    ctrl = RecedingHorizonController(policy, cfg, n_slots=5)
    for s in range(5):
        ctrl.reset(s)
    out = ctrl.act({s: fake_obs(10 * s) for s in (0, 2, 4)})
    assert policy.seen[0]["obs"].shape[0] == 4  # 3 slots -> one call of batch 4
    assert policy.seen[0]["obs"][3, -1, 0] == 0  # the pad repeats the first slot
    assert sorted(out) == [0, 2, 4] and ctrl.batch_sizes == [3]
    ctrl.act({s: fake_obs(s) for s in range(5)})  # the others need a chunk: 2 -> batch 2
    assert policy.seen[1]["obs"].shape[0] == 2


def test_temporal_ensembling_replans_every_step_and_averages():
    cfg = tiny_cfg()
    policy = ScriptedPolicy(8)
    ctrl = RecedingHorizonController(policy, cfg, n_slots=1, temporal_ensemble=0.5)
    ctrl.reset(0)
    a0 = ctrl.act({0: fake_obs(0)})[0]
    a1 = ctrl.act({0: fake_obs(1)})[0]
    assert policy.calls == 2
    assert a0[1] == 1.0
    # step 1: chunk 0 proposes index 2, chunk 1 proposes index 1; weights 1 and e^-0.5
    w = np.exp(-0.5)
    assert a1[1] == pytest.approx((2 + w * 1) / (1 + w))


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


def test_nan_policy_is_reported_per_episode_and_evaluation_goes_on():
    cfg = tiny_cfg(obs_keys=["observation"], goal_key="desired_goal")
    records, stats = rollout(ScriptedPolicy(8, nan=True), cfg, episodes=3, n_envs=2, progress=False)
    assert len(records) == 3
    assert all(r.error and "non-finite" in r.error for r in records)
    assert all(not r.success for r in records)


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    from diffpolicy.collect import collect
    from diffpolicy.config import load_config
    from diffpolicy.train import train

    d = tmp_path_factory.mktemp("run")
    collect("diffpolicy/ReachAround-v0", 6, str(d / "demos.hdf5"), workers=1, progress=False)
    cfg = load_config(ROOT / "configs" / "debug.yaml", ("train.steps=20",))
    cfg.data.dataset = str(d / "demos.hdf5")
    return train(cfg, d / "run", progress=False)


def test_eval_cli_writes_json_and_report(tiny_run, tmp_path):
    out = tmp_path / "eval.json"
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "diffpolicy",
            "eval",
            str(tiny_run),
            "--episodes",
            "3",
            "--envs",
            "2",
            "--json",
            str(out),
            "--report",
            str(tmp_path / "rep"),
            "--action-steps",
            "2",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
    )
    assert r.returncode == 0, r.stderr[-2000:]
    res = json.loads(out.read_text())
    for key in (
        "episodes",
        "success_rate",
        "collision_rate",
        "mode_probs",
        "demo_mode_probs",
        "normalized_entropy",
        "tv_to_demos",
        "interpolation_rate",
        "mode_switch_rate",
        "commanded_mode_accuracy",
        "chunk_latency_ms",
        "success_rate_ci95",
    ):
        assert key in res, key
    assert res["episodes"] == 3 and len(res["records"]) == 3
    assert res["action_steps"] == 2  # Ta overridden at evaluation
    assert abs(sum(res["demo_mode_probs"]) - 1) < 1e-6
    for name in ("index.html", "paths.png", "modes.png", "metrics.json"):
        assert (tmp_path / "rep" / name).is_file(), name
    assert list((tmp_path / "rep" / "videos").glob("*.mp4"))


@pytest.mark.parametrize(
    "args, message",
    [
        (["eval", "/nonexistent/run", "--episodes", "2"], "run directory not found"),
        (["eval", "RUN", "--episodes", "2", "--mode", "0"], "--mode needs a mode-conditioned run"),
        (["eval", "RUN", "--episodes", "2", "--steps", "999"], "--steps 999 must be in"),
        (["eval", "RUN", "--episodes", "2", "--action-steps", "99"], "--action-steps 99 must be"),
        (["eval", "RUN", "--episodes", "0"], "must be >= 1"),
        (
            ["collect", "diffpolicy/Nope-v0", "--episodes", "2", "--out", "/tmp/x.hdf5"],
            "unknown env id",
        ),
        (
            [
                "collect",
                "diffpolicy/ReachAround-v0",
                "--episodes",
                "2",
                "--out",
                "/tmp/x.hdf5",
                "--mode",
                "5",
            ],
            "--mode 5 out of range",
        ),
        (
            [
                "collect",
                "diffpolicy/ReachAround-v0",
                "--episodes",
                "2",
                "--out",
                "/nonexistent/dir/x.hdf5",
            ],
            "does not exist",
        ),
        (["info", "/nonexistent.hdf5"], "not found"),
    ],
)
def test_bad_input_one_line_exit_2(tiny_run, args, message):
    args = [str(tiny_run) if a == "RUN" else a for a in args]
    r = subprocess.run(
        [sys.executable, "-m", "diffpolicy", *args],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )
    assert r.returncode == 2, (r.returncode, r.stderr[-1000:])
    lines = [ln for ln in r.stderr.strip().splitlines() if ln.strip()]
    assert len(lines) == 1 and message in lines[0], r.stderr
