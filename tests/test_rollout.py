"""Batched rollouts (diffpolicy.rollout): NaN actions, physics and reset failures end only
their own episode, and every env client and process is closed."""

from __future__ import annotations

import multiprocessing
import os

import pybullet
import pytest
import torch
from helpers import ScriptedPolicy, children_of, tiny_cfg

from diffpolicy.config import config_from_dict
from diffpolicy.rollout import rollout


def bullet_clients() -> int:
    """Connected PyBullet clients of this process."""
    return sum(pybullet.getConnectionInfo(physicsClientId=i)["isConnected"] for i in range(64))


def test_nan_policy_is_reported_per_episode_and_evaluation_goes_on():
    cfg = tiny_cfg(obs_keys=["observation"], goal_key="desired_goal")
    records, stats = rollout(ScriptedPolicy(8, nan=True), cfg, episodes=3, n_envs=2, progress=False)
    assert len(records) == 3
    assert all(r.error and "non-finite" in r.error for r in records)
    assert all(not r.success for r in records)


class ChunkPolicy(torch.nn.Module):
    """Holds the current end-effector position (a valid action); NaN rows for chosen calls."""

    def __init__(self, horizon, nan_rows=(), fail_on_call=None):
        super().__init__()
        self.register_buffer("dummy", torch.zeros(1))
        self.horizon, self.nan_rows, self.fail_on_call, self.calls = (
            horizon,
            nan_rows,
            fail_on_call,
            0,
        )

    def predict_action_chunk(self, obs, sampling=None, *, generator=None):
        self.calls += 1
        if self.calls == self.fail_on_call:
            raise RuntimeError("policy exploded")
        x = obs["obs"][:, -1, :2]  # (B, 2) current ee (x, y)
        out = x[:, None, :].expand(-1, self.horizon, -1).clone()
        for r in self.nan_rows:
            if r < len(out):
                out[r] = float("nan")
        return out


def rollout_cfg():
    cfg = config_from_dict(
        {
            "data": {"n_obs_steps": 2, "horizon": 8, "n_action_steps": 4},
            "model": {"down_dims": [16, 32], "n_groups": 4},
            "eval": {"max_steps": 12},
        }
    )
    cfg.dims = {"obs_dim": 0, "action_dim": 2, "goal_dim": 2, "num_modes": 2, "lang_dim": 0}
    return cfg


def test_physics_failure_and_nan_end_only_their_episode_and_nothing_leaks(monkeypatch):
    import diffpolicy.rollout as ro

    made = []

    def make_env(*a, **kw):
        env = ro_make_env(*a, **kw)
        made.append(env)
        return env

    ro_make_env = ro.make_env
    monkeypatch.setattr(ro, "make_env", make_env)
    base = bullet_clients()

    class Sabotage(ChunkPolicy):
        def predict_action_chunk(self, obs, sampling=None, *, generator=None):
            if self.calls == 1:  # the physics server of env 0 goes away mid-episode
                made[0].unwrapped.scene.client.disconnect()
            if self.calls == 4:  # and env 1's, later
                made[1].unwrapped.scene.client.disconnect()
            return super().predict_action_chunk(obs, sampling, generator=generator)

    cfg = rollout_cfg()
    records, _ = ro.rollout(Sabotage(8, nan_rows=(2,)), cfg, 9, n_envs=3, progress=False)
    errors = [r.error for r in records]
    assert len(records) == 9 and [r.episode for r in records] == list(range(9))
    assert any(e and e.startswith("env step failed") for e in errors), errors
    assert any(e and "non-finite" in e for e in errors), errors
    assert sum(e is None for e in errors) >= 3, errors  # the others ran to their end
    assert all(r.length == 12 for r in records if r.error is None)
    assert bullet_clients() == base  # every env, rebuilt ones included, was closed
    # an exception that does end the evaluation still closes every client
    with pytest.raises(RuntimeError, match="exploded"):
        ro.rollout(ChunkPolicy(8, fail_on_call=3), cfg, 6, n_envs=2, progress=False)
    assert bullet_clients() == base
    assert multiprocessing.active_children() == [] and children_of(os.getpid()) == []


def test_reset_failure_is_one_episode_error(monkeypatch):
    import diffpolicy.rollout as ro

    real = ro.make_env
    state = {"n": 0}

    def make_env(*a, **kw):
        env = real(*a, **kw)
        state["n"] += 1
        if state["n"] == 1:  # the first env's physics server is gone before its first reset
            env.unwrapped.scene.client.disconnect()
        return env

    monkeypatch.setattr(ro, "make_env", make_env)
    base = bullet_clients()
    records, _ = ro.rollout(ChunkPolicy(8), rollout_cfg(), 3, n_envs=2, progress=False)
    assert records[0].error and records[0].error.startswith("env reset failed")
    assert [r.error for r in records[1:]] == [None, None]
    assert bullet_clients() == base


def test_a_run_of_another_task_is_one_line_before_any_episode():
    """Observation keys or sizes the run was not trained on: refused once, before stepping."""
    from diffpolicy.config import replace_values
    from diffpolicy.errors import UserError

    cfg = rollout_cfg()
    policy = ScriptedPolicy(8)
    wide = replace_values(cfg, {})
    wide.dims["obs_dim"] = 7  # a run trained on 7-dimensional observations
    with pytest.raises(UserError, match="gives observations of size 4 .goal 2.; the run was"):
        rollout(policy, wide, 2, n_envs=1, progress=False)
    foreign = replace_values(cfg, {"data.obs_keys": ["robot0_eef_pos"]})
    with pytest.raises(UserError, match="the run needs \\['robot0_eef_pos', 'desired_goal'\\]"):
        rollout(policy, foreign, 2, n_envs=1, progress=False)
    assert policy.calls == 0
