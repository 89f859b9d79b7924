"""Foreign gymnasium envs from other PyPI packages (the `dev` extra): a goal env (panda-gym's
PandaReach, Dict observations) and a plain one (pybullet-envs-gymnasium's Reacher, a Box
observation) go through collect (with an expert given as `module:callable`, written below) ->
info -> train -> eval, each step exit 0 without a traceback; without a mode classifier the mode
metrics are null with a note. Plus the one-line errors of a bad `--expert`.

The CLI imports this module as `tests.test_foreign_envs` for its experts, so the helpers are
imported inside the tests (`helpers` is importable only under pytest)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
REACH = "panda_gym:PandaReach-v3"
REACHER = "pybullet_envs_gymnasium:ReacherBulletEnv-v0"


# ------------------------------------------------------------------- experts (module:callable)


class GoalController:
    """Proportional control of PandaReach's end effector: action = gain * (goal - ee), clipped
    to the action space (the env moves the ee 5 cm per unit of action)."""

    def __init__(self, env, gain: float = 4.0):
        self.low, self.high, self.gain = env.action_space.low, env.action_space.high, gain

    def reset(self, obs: dict, info: dict) -> None:
        pass

    def act(self, obs: dict) -> np.ndarray:
        error = obs["desired_goal"] - obs["achieved_goal"]  # (3,)
        return np.clip(self.gain * error, self.low, self.high).astype(np.float32)


class RandomController:
    """Uniform random actions from the expert's own generator (the same seed, the same file)."""

    def __init__(self, env, rng: np.random.Generator):
        self.space, self.rng = env.action_space, rng

    def reset(self, obs, info: dict) -> None:
        pass

    def act(self, obs) -> np.ndarray:
        return self.rng.uniform(self.space.low, self.space.high).astype(np.float32)


def make_goal_controller(env, mode=None, rng=None) -> GoalController:
    return GoalController(env)


def make_random_controller(env, mode=None, rng=None) -> RandomController:
    return RandomController(env, rng if rng is not None else np.random.default_rng(0))


NOT_A_CALLABLE = 3


class _Broken(RandomController):
    def act(self, obs):
        raise ValueError("the gripper fell off")


def make_broken(env, mode=None, rng=None) -> _Broken:
    return _Broken(env, np.random.default_rng(0))


def make_nothing(env, mode=None, rng=None) -> object:
    return object()


# ----------------------------------------------------------------------------------- the flow

CASES = {  # env id, expert, collect flags, data.goal_key
    "reach": (REACH, "make_goal_controller", [], "desired_goal"),
    "reacher": (REACHER, "make_random_controller", ["--keep-failures"], "null"),
}


def cli_ok(*args) -> str:
    """Run the CLI; assert exit 0 and no traceback; return stdout."""
    from helpers import run_cli

    p = run_cli(*args, timeout=300)
    assert p.returncode == 0, (args, p.stdout, p.stderr)
    assert "Traceback" not in p.stderr + p.stdout, p.stderr
    return p.stdout


@pytest.mark.parametrize("case", sorted(CASES))
def test_foreign_env_collect_train_eval(tmp_path, case):
    from diffpolicy.dataset import load_demos

    env_id, expert, flags, goal_key = CASES[case]
    demos = tmp_path / "demos.hdf5"
    out = cli_ok(
        "collect", env_id, "--episodes", "6", "--out", str(demos),
        "--expert", f"tests.test_foreign_envs:{expert}", *flags,
    )  # fmt: skip
    assert "wrote 6 episodes" in out
    d = load_demos(demos)
    assert d.env_id == env_id and d.env_args["env_kwargs"] == {}
    assert {e.mode for e in d.episodes} == {-1} and d.mode_names == [] and d.layout == {}
    assert all(e.instruction == "" for e in d.episodes)
    if case == "reach":  # Dict observations, key by key; the controller reaches every goal
        assert sorted(d.episodes[0].obs) == ["achieved_goal", "desired_goal", "observation"]
        assert all(len(e) < 50 for e in d.episodes)  # ended by success, not the time limit
    else:  # a Box observation is `observation`; 150 steps, the env's time limit
        assert sorted(d.episodes[0].obs) == ["observation"]
        assert d.episodes[0].obs["observation"].shape == (150, 9)
        assert d.episodes[0].actions.shape == (150, 2)

    assert "episodes:    6" in cli_ok("info", str(demos))
    cli_ok("info", str(demos), "--plot", str(tmp_path / "demos.png"))
    assert (tmp_path / "demos.png").stat().st_size > 0

    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(
        f"base: {ROOT / 'configs' / 'debug.yaml'}\nenv_id: {env_id}\n"
        f"data:\n  goal_key: {goal_key}\n"
        "train:\n  steps: 6\n  val_every: 3\n  checkpoint_every: 6\neval:\n  max_steps: 12\n"
    )
    run = tmp_path / "run"
    cli_ok("train", str(cfg), "--dataset", str(demos), "--out", str(run))

    out = cli_ok(
        "eval", str(run), "--episodes", "2", "--envs", "2",
        "--json", str(tmp_path / "eval.json"), "--report", str(tmp_path / "report"),
    )  # fmt: skip
    result = json.loads((tmp_path / "eval.json").read_text())
    assert result["episodes"] == 2 and result["env_id"] == env_id
    assert isinstance(result["success_rate"], float) and 0 <= result["success_rate"] <= 1
    assert result["episode_length_mean"] <= 12  # eval.max_steps reached the foreign env
    for key in ("mode_probs", "normalized_entropy", "tv_to_demos", "interpolation_rate",
                "mode_switch_rate", "commanded_mode_accuracy"):  # fmt: skip
        assert result[key] is None, key
    assert result["demo_mode_probs"] is None
    assert "no mode metrics" in result["note"] and "\n" not in result["note"]
    assert out.count("no mode metrics") == 1  # printed once
    assert isinstance(result["action_roughness"], float)
    report = tmp_path / "report"
    assert (report / "index.html").is_file() and (report / "metrics.json").is_file()
    assert len(list((report / "videos").glob("*.mp4"))) == 2
    assert not (report / "modes.png").exists()  # no mode probabilities to draw
    if case == "reach":  # the ee path is the first two entries of `observation`
        assert isinstance(result["path_roughness"], float)
        assert (report / "paths.png").is_file()
    else:  # no ee path in a Box observation: no path metrics, no path plot
        assert result["path_roughness"] is None and result["demo_path_roughness"] is None
        assert not (report / "paths.png").exists()


# ---------------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("nosuchmodule:x", "no module named 'nosuchmodule'"),
        ("tests.test_foreign_envs:nosuch", "has no attribute 'nosuch'"),
        ("notacallable", "must be module:callable"),
        ("tests.test_foreign_envs:NOT_A_CALLABLE", "not a callable"),
        ("tests.test_foreign_envs:make_nothing", "lacks reset(obs, info) or act(obs)"),
        ("tests.test_foreign_envs:make_broken", "ValueError: the gripper fell off"),
    ],
)
def test_bad_expert_is_one_line_and_writes_nothing(tmp_path, capsys, monkeypatch, spec, message):
    from helpers import one_line_exit_2

    monkeypatch.syspath_prepend(str(ROOT))  # `tests.` importable as under `python -m pytest`
    out = tmp_path / "demos.hdf5"
    argv = ["collect", REACHER, "--episodes", "2", "--out", str(out), "--expert", spec]
    one_line_exit_2(capsys, argv, message)
    assert list(tmp_path.iterdir()) == []


def test_foreign_env_without_expert_says_to_pass_one(tmp_path, capsys):
    from helpers import one_line_exit_2

    out = tmp_path / "demos.hdf5"
    one_line_exit_2(capsys, ["collect", REACH, "--episodes", "2", "--out", str(out)], "--expert")
    assert list(tmp_path.iterdir()) == []


# ------------------------------------------------------------------------ metrics, no classifier


def test_mode_metrics_are_null_with_a_note_only_without_a_classifier():
    from diffpolicy.evaluate import MODE_METRICS, aggregate, mode_note, smoothness
    from diffpolicy.rollout import EpisodeRecord

    actions = [np.full(2, t % 3, np.float32) for t in range(8)]

    boundaries = [t % 4 == 0 for t in range(8)]

    def records(reported: bool) -> list:
        """4 successful episodes without an ee path; modes 0, 1, 0, 1 if `reported`."""
        return [
            EpisodeRecord(episode=i, seed=i, success=True, mode=i % 2 if reported else -1,
                          mode_reported=reported, actions=actions, boundaries=boundaries)
            for i in range(4)
        ]  # fmt: skip

    assert mode_note(records(True), 2, REACH) is None
    assert "no mode labels" in mode_note(records(True), 0, REACH)
    note = mode_note(records(False), 2, REACH)
    assert REACH in note and "info['mode']" in note
    with_modes = aggregate(records(True), 2, [0.5, 0.5], [1.0], [4])
    assert with_modes["mode_probs"] == [0.5, 0.5] and "note" not in with_modes
    without = aggregate(records(False), 2, [0.5, 0.5], [1.0], [4], note=note)
    assert all(without[k] is None for k in MODE_METRICS) and without["note"] == note
    assert without["success_rate"] == 1.0
    # no ee path (Box observations): path values null, also the demos'; actions still measured
    smooth = smoothness(records(False), {"path_roughness": 0.1, "action_roughness": 0.5})
    assert smooth["path_roughness"] is None and smooth["demo_path_roughness"] is None
    assert smooth["action_roughness"] > 0 and smooth["action_roughness_rel_demos"] is not None


def test_episode_success_prefers_the_envs_own_keys():
    from envs import episode_success

    assert episode_success({"is_success": np.array(True), "success": False}, False)
    assert not episode_success({"success": 0.0}, True)
    assert episode_success({}, True) and not episode_success({}, False)
