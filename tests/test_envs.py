"""Tests for the PyBullet environments, their experts, route classification and instructions."""

from __future__ import annotations

import json
import warnings

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

import envs
from envs.reach_around import classify_route, gap_centres, make_layout, mode_to_gaps

IDS = ["diffpolicy/ReachAround-v0", "diffpolicy/ReachAroundMaze-v0", "diffpolicy/Pick-v0"]
SHAPES = {  # id -> (action dim, observation, achieved_goal, desired_goal)
    "diffpolicy/ReachAround-v0": (2, (4,), (2,), (2,)),
    "diffpolicy/ReachAroundMaze-v0": (2, (4,), (2,), (2,)),
    "diffpolicy/Pick-v0": (4, (12,), (2,), (2,)),
}


def run_expert(env, expert, seed: int) -> dict:
    obs, info = env.reset(seed=seed)
    expert.reset(obs, info)
    steps = 0
    while True:
        obs, _, terminated, truncated, info = env.step(expert.act(obs))
        steps += 1
        if terminated or truncated:
            return {**info, "steps": steps, "terminated": terminated}


# -- gymnasium conformance -----------------------------------------------------------------------
@pytest.mark.parametrize("env_id", IDS)
def test_check_env_passes(env_id):
    env = gym.make(env_id)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        check_env(env.unwrapped)
    env.close()


@pytest.mark.parametrize("env_id", IDS)
def test_spaces_and_dtypes(env_id):
    env = gym.make(env_id)
    u = env.unwrapped
    act_dim, o_shape, ag_shape, dg_shape = SHAPES[env_id]
    assert env.action_space.shape == (act_dim,) and env.action_space.dtype == np.float32
    obs, info = env.reset(seed=0)
    assert obs["observation"].shape == o_shape
    assert obs["achieved_goal"].shape == ag_shape
    assert obs["desired_goal"].shape == dg_shape
    assert all(v.dtype == np.float32 for v in obs.values())
    assert env.observation_space.contains(obs)
    assert info["mode"] == -1 and info["mode_name"] == "none"
    assert info["is_success"] is False and info["collision"] is False
    assert len(u.mode_names) == u.num_modes
    layout = u.layout()
    assert json.loads(json.dumps(layout)) == layout
    assert env.spec.max_episode_steps is None
    env.close()


@pytest.mark.parametrize("env_id", IDS)
def test_same_seed_same_episode(env_id):
    env = gym.make(env_id)
    env.action_space.seed(3)
    actions = [env.action_space.sample() for _ in range(12)]

    def rollout(seed):
        obs, _ = env.reset(seed=seed)
        out = [obs["observation"]]
        for a in actions:
            obs, *_ = env.step(a)
            out.append(obs["observation"])
        return np.stack(out)

    first = rollout(7)
    other = rollout(8)
    again = rollout(7)
    np.testing.assert_array_equal(first, again)
    assert not np.array_equal(first[0], other[0])
    env.close()


@pytest.mark.parametrize("env_id", IDS)
def test_nan_action_is_replaced_and_warned(env_id):
    env = gym.make(env_id)
    obs, _ = env.reset(seed=1)
    bad = np.full(env.action_space.shape, np.nan, dtype=np.float32)
    with pytest.warns(RuntimeWarning, match="non-finite"):
        obs, *_ = env.step(bad)
    bad[0] = np.inf
    obs, *_ = env.step(bad)
    assert all(np.all(np.isfinite(v)) for v in obs.values())
    env.close()


@pytest.mark.parametrize("env_id", IDS)
def test_render_rgb_array(env_id):
    env = gym.make(env_id, render_mode="rgb_array")
    env.reset(seed=0)
    frame = env.render()
    assert frame.dtype == np.uint8 and frame.ndim == 3 and frame.shape[2] == 3
    assert frame.shape[0] % 16 == 0 and frame.shape[1] % 16 == 0
    assert frame.std() > 5  # not a blank image
    env.close()


# -- reach-around geometry -----------------------------------------------------------------------
@pytest.mark.parametrize("env_id", IDS[:2])
def test_collision_terminates(env_id):
    env = gym.make(env_id)
    obs, _ = env.reset(seed=0)
    x = env.unwrapped.layout()["rows"][0][0][0]
    for _ in range(40):
        obs, reward, terminated, truncated, info = env.step(np.array([x, 0.4], np.float32))
        if terminated or truncated:
            break
    assert terminated and info["collision"] and not info["is_success"]
    assert info["between_modes"] is True  # hit the start-facing side of the first obstacle
    assert info["mode"] == -1 and reward == 0.0
    env.close()


def test_truncation_and_stall_between_modes():
    env = gym.make("diffpolicy/ReachAround-v0", max_steps=15)
    env.reset(seed=0)
    for i in range(15):
        _, _, terminated, truncated, info = env.step(np.array([0.5, -0.19], np.float32))
        assert not terminated
        assert truncated == (i == 14)
    assert info["between_modes"] is True and info["mode_switches"] == 0
    env.reset(seed=0)  # staying at the start is not "between modes"
    for _ in range(15):
        *_, truncated, info = env.step(np.array([0.5, -0.28], np.float32))
    assert truncated and info["between_modes"] is False
    env.close()


def test_mode_switches_count_weaving():
    env = gym.make("diffpolicy/ReachAround-v0")
    env.reset(seed=0)
    path = [
        (0.40, -0.20),
        (0.40, -0.168),
        (0.60, -0.168),
        (0.60, -0.169),
        (0.40, -0.169),
        (0.40, -0.16),
        (0.40, -0.05),
        (0.50, 0.08),
    ]
    for p in path:
        for _ in range(8):
            _, _, terminated, truncated, info = env.step(np.array(p, np.float32))
            if terminated or truncated:
                break
        if terminated or truncated:
            break
    assert info["is_success"] and info["mode"] == 0 and info["mode_name"] == "left"
    assert info["mode_switches"] == 2
    assert info["between_modes"] is False
    env.close()


def test_classify_route_all_maze_routes():
    layout = make_layout("maze")
    centres = gap_centres(layout)
    names = set()
    for mode in range(24):
        gaps = mode_to_gaps(mode, layout)
        pts = [(0.52, -0.28)]
        for k, y in enumerate(layout["row_y"]):
            pts += [(centres[k][gaps[k]], y - 0.05), (centres[k][gaps[k]], y + 0.05)]
        pts.append((pts[-1][0], 0.38))
        assert classify_route(np.array(pts), layout) == mode
        assert classify_route(np.array(pts[:-3]), layout) == -1  # last row never crossed
        names.add(layout["mode_names"][mode])
    assert len(names) == 24 and "L-M-M1" in names


def test_classify_route_reach_around_and_recrossing():
    layout = make_layout("reach_around")
    left = np.array([[0.5, -0.28], [0.4, -0.15], [0.4, -0.05], [0.5, 0.08]])
    right = left * [[-1, 1]] + [[1.0, 0.0]]
    assert classify_route(left, layout) == 0
    assert classify_route(right, layout) == 1
    assert classify_route(left[:2], layout) == -1
    back = np.array([[0.4, -0.2], [0.4, 0.0], [0.4, -0.2], [0.6, -0.2], [0.6, 0.0]])
    assert classify_route(back, layout) == 1  # the last upward crossing counts


# -- experts -------------------------------------------------------------------------------------
def _expert_check(env_id, modes, episodes_per_mode, seed0=0):
    env = gym.make(env_id)
    rng = np.random.default_rng(seed0)
    for mode in modes:
        expert = envs.make_expert(env, mode=mode, rng=rng)
        results = [
            run_expert(env, expert, seed0 + 1000 * mode + i) for i in range(episodes_per_mode)
        ]
        assert expert.mode == mode
        success = [r for r in results if r["is_success"]]
        assert len(success) >= 0.98 * episodes_per_mode, (mode, results)
        correct = sum(r["mode"] == mode for r in success)
        assert correct >= 0.98 * len(success), (mode, [r["mode"] for r in success])
        assert not any(r["collision"] for r in success)
    env.close()


def test_expert_reach_around():
    _expert_check("diffpolicy/ReachAround-v0", range(2), 40)


def test_expert_maze_all_routes():
    _expert_check("diffpolicy/ReachAroundMaze-v0", range(24), 2)


def test_expert_pick():
    _expert_check("diffpolicy/Pick-v0", range(2), 20)


@pytest.mark.slow
@pytest.mark.parametrize(
    "env_id,modes,n",
    [
        ("diffpolicy/ReachAround-v0", range(2), 200),
        ("diffpolicy/ReachAroundMaze-v0", range(24), 20),
        ("diffpolicy/Pick-v0", range(2), 100),
    ],
)
def test_expert_many_episodes(env_id, modes, n):
    _expert_check(env_id, modes, n, seed0=12345)


@pytest.mark.parametrize("env_id", IDS)
def test_expert_random_mode_and_variation(env_id):
    env = gym.make(env_id)
    expert = envs.make_expert(env, rng=np.random.default_rng(0))
    seen, firsts = set(), []
    for seed in range(6):
        obs, info = env.reset(seed=seed)
        expert.reset(obs, info)
        seen.add(expert.mode)
        firsts.append(expert.act(obs))
    assert seen <= set(range(env.unwrapped.num_modes)) and len(seen) >= 2
    assert len({tuple(a) for a in firsts}) == len(firsts)  # demos vary
    assert all(a.dtype == np.float32 and env.action_space.contains(a) for a in firsts)
    env.close()


def test_pick_close_between_cubes_is_between_modes():
    env = gym.make("diffpolicy/Pick-v0", max_steps=20)
    obs, _ = env.reset(seed=4)
    o = obs["observation"]
    mid = (o[4:6] + o[8:10]) / 2
    info = {}
    for t in range(20):
        z, grip = (0.02, 1.0) if t < 12 else (0.02, -1.0)
        _, _, terminated, truncated, info = env.step(np.array([*mid, z, grip], np.float32))
    assert truncated and not terminated
    assert info["between_modes"] is True and info["mode"] == -1
    assert info["mode_switches"] == 0
    env.close()


def test_make_expert_rejects_bad_mode():
    env = gym.make("diffpolicy/ReachAround-v0")
    with pytest.raises(ValueError, match="mode=5"):
        envs.make_expert(env, mode=5)
    env.close()


# -- instructions --------------------------------------------------------------------------------
# -- bad actions ---------------------------------------------------------------------------------
@pytest.mark.parametrize("env_id", ["diffpolicy/ReachAround-v0", "diffpolicy/Pick-v0"])
def test_env_never_passes_bad_actions_to_physics(env_id, monkeypatch):
    from envs import make_env

    env = make_env(env_id)
    try:
        u = env.unwrapped
        seen = []
        real = u.scene.teleport_ee

        def spy(pos, *a, **kw):
            seen.append(np.asarray(pos, dtype=float))
            return real(pos, *a, **kw)

        monkeypatch.setattr(u.scene, "teleport_ee", spy)
        env.reset(seed=0)
        low, high = env.action_space.low, env.action_space.high
        bad = [np.full(low.shape, np.nan), np.full(low.shape, np.inf), np.full(low.shape, -np.inf),
               high + 1e6, low - 1e6, np.where(np.arange(len(low)) == 0, np.nan, high * 10)]  # noqa: E501  # fmt: skip
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            for a in bad:
                obs, *_ = env.step(a.astype(np.float32))
                assert all(np.isfinite(v).all() for v in obs.values())
        assert any(issubclass(w.category, RuntimeWarning) for w in caught)
        assert seen and all(np.isfinite(p).all() for p in seen)
        xyz = np.stack(seen)[:, : len(u._ws_low)]
        assert (xyz >= u._ws_low - 1e-9).all() and (xyz <= u._ws_high + 1e-9).all()
    finally:
        env.close()
