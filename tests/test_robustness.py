# ruff: noqa: E501
"""Faults: kills and Ctrl-C during training and collection, physics failures and NaNs during
rollouts, leaked clients and processes; bad input at the CLI (exit 2, one line, nothing lost).

Kills use os.fork(): the child inherits the imported modules, so a kill costs no interpreter
start-up; only the Ctrl-C test of the real CLI starts a new interpreter.
"""

from __future__ import annotations

import multiprocessing
import os
import random
import re
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import h5py
import numpy as np
import pybullet
import pytest
import torch
from helpers import bimodal_demos, write_bimodal

from diffpolicy import cli
from diffpolicy.checkpoint import (
    checkpoint_dirs,
    load_policy,
    load_run_config,
    read_metrics,
    read_train_state,
    read_weights,
)
from diffpolicy.config import config_from_dict, load_config
from diffpolicy.dataset import load_demos, write_demos
from diffpolicy.errors import CheckpointError, UserError
from diffpolicy.train import train, train_from_cli

ROOT = Path(__file__).resolve().parents[1]
DEBUG = ROOT / "configs" / "debug.yaml"
COMMON = ("train.steps=30", "train.checkpoint_every=5", "train.log_every=5", "train.val_every=10")


def debug_cfg(dataset, *overrides):
    cfg = load_config(DEBUG, overrides)
    cfg.data.dataset = str(dataset)
    return cfg


def fork(fn) -> int:
    """Run fn() in a forked child; the child exits with fn's return value (or 1 on error)."""
    pid = os.fork()
    if pid == 0:  # pragma: no cover - child
        code = 1
        try:
            code = int(fn() or 0)
        except KeyboardInterrupt:
            code = 130
        except BaseException:
            code = 1
        finally:
            os._exit(code)
    return pid


def wait(pid: int, timeout: float = 60.0) -> int:
    """Exit status of a child: its code, or -signal when killed."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status)
        time.sleep(0.01)
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    raise AssertionError(f"child {pid} did not finish in {timeout} s")


def kill_self(*_, **__):
    os.kill(os.getpid(), signal.SIGKILL)


def children_of(pid: int) -> list[int]:
    """Process ids whose parent is `pid` (from /proc; psutil is not needed), leaving out
    multiprocessing's resource tracker (one per process, started with the first 'spawn')."""
    out = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                status = (d / "status").read_text()
                if b"resource_tracker" in (d / "cmdline").read_bytes():
                    continue
            except OSError:
                continue
            ppid = next(ln for ln in status.splitlines() if ln.startswith("PPid:"))
            if int(ppid.split()[1]) == pid:
                out.append(int(d.name))
    return out


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    return "State:\tZ" not in state


def bullet_clients() -> int:
    """Connected PyBullet clients of this process."""
    return sum(pybullet.getConnectionInfo(physicsClientId=i)["isConnected"] for i in range(64))


PROGRESS = re.compile(r"^(train|eval|collect \S+): .*\|")


def one_line_exit_2(capsys, argv, message=None):
    try:
        code = cli.main(argv)
    except SystemExit as e:  # argparse errors
        code = e.code
    err = capsys.readouterr().err
    # progress bars (tqdm, on stderr) are not messages: drop them, keep everything else
    lines = [ln for ln in err.splitlines() if ln.strip() and not PROGRESS.match(ln)]
    assert code == 2, (argv, code, err)
    assert len(lines) == 1, err
    if message:
        assert message in lines[0], lines[0]
    return lines[0]


# ------------------------------------------------------------------------------------ training


def assert_run_dir_consistent(run: Path) -> int:
    """Every published checkpoint is complete and readable; return the newest step (0: none)."""
    dirs = checkpoint_dirs(run)
    if dirs:
        assert load_run_config(run).dims["obs_dim"] == 2
    for d in dirs:
        assert {p.name for p in d.iterdir()} == {"model.safetensors", "train_state.pt"}, d
        read_weights(d, "ema")
        read_weights(d, "raw")
        assert read_train_state(d)["step"] == int(d.name[5:])
    return int(dirs[-1].name[5:]) if dirs else 0


@pytest.mark.parametrize(
    "n_random", [2, pytest.param(20, marks=pytest.mark.slow)], ids=["fast", "many"]
)
def test_sigkill_at_random_points_and_inside_checkpoint_writes(tmp_path, toy_demo_file, n_random):
    ref = train(debug_cfg(toy_demo_file, *COMMON), tmp_path / "ref", progress=False)
    run = tmp_path / "cut"
    rng = random.Random(7 + n_random)
    # (what, argument): a kill from outside after a random delay, or a kill from inside at a
    # chosen point of a checkpoint/config/metrics write
    # (the n-th call: a checkpoint fsyncs 2 files, torch.saves 1, renames 1; a resumed run
    # first renames its config.yaml and metrics.jsonl into place; pruning starts at the 3rd)
    # The injected kills come first, while the run is surely unfinished; then the random ones
    # (on a fast machine a late random kill may find the run already complete).
    plans = [("fsync", 3), ("torch.save", 2), ("replace", 1), ("replace", 3), ("rmtree", 1)]
    rng.shuffle(plans)
    plans += [("delay", rng.uniform(0.3, 2.0)) for _ in range(n_random)]
    newest, killed, newest_after_injected = 0, 0, None
    for what, arg in plans:

        def child(what=what, arg=arg):
            import diffpolicy.checkpoint as ck

            calls = {"n": 0}

            def at_call(real):
                def wrapper(*a, **kw):
                    calls["n"] += 1
                    if calls["n"] == arg:
                        if real is torch.save:  # half a file, then die
                            real(*a, **kw)
                            p = Path(a[1])
                            p.write_bytes(p.read_bytes()[: p.stat().st_size // 2])
                        kill_self()
                    return real(*a, **kw)

                return wrapper

            if what == "fsync":
                ck.os.fsync = at_call(os.fsync)
            elif what == "torch.save":
                ck.torch.save = at_call(torch.save)
            elif what == "replace":
                os.replace = at_call(os.replace)
            elif what == "rmtree":
                ck.shutil.rmtree = at_call(ck.shutil.rmtree)
            resume = bool(checkpoint_dirs(run))
            cfg = load_run_config(run) if resume else debug_cfg(toy_demo_file, *COMMON)
            train(cfg, run, resume=resume, progress=False)

        pid = fork(child)
        if what == "delay":
            time.sleep(arg)
            os.kill(pid, signal.SIGKILL)
        code = wait(pid)
        killed += what != "delay" and code == -signal.SIGKILL
        step = assert_run_dir_consistent(run)
        assert step >= newest, (what, step, newest)  # a kill never loses a published checkpoint
        newest = step
        if what != "delay":
            newest_after_injected = step
        if what == "delay" and step:  # the state a kill in the middle of a metrics line leaves
            with open(run / "metrics.jsonl", "a") as f:
                f.write('{"step": 3, "lo')
    assert killed == 5, killed  # every injected kill hit
    assert newest_after_injected < 30  # the chain was really cut short
    train(load_run_config(run), run, resume=True, progress=False)  # finish
    for which in ("raw", "ema"):
        a, _ = load_policy(ref, which=which)
        b, _ = load_policy(run, which=which)
        for (k, x), (_, y) in zip(a.state_dict().items(), b.state_dict().items()):
            torch.testing.assert_close(x, y, rtol=1e-5, atol=1e-6, msg=k)
    ref_log = [(m["step"], m["loss"]) for m in read_metrics(ref) if "loss" in m]
    cut_log = [(m["step"], m["loss"]) for m in read_metrics(run) if "loss" in m]
    assert [s for s, _ in cut_log] == [s for s, _ in ref_log]  # no duplicates, no partial lines
    np.testing.assert_allclose([v for _, v in cut_log], [v for _, v in ref_log], rtol=1e-4)
    leftovers = [p.name for p in run.rglob(".*")]
    assert leftovers == [], leftovers  # stale temporary checkpoint dirs / files cleaned up


def test_sigint_writes_checkpoint_exits_130_and_resumes(tmp_path, toy_demo_file):
    run = tmp_path / "run"
    env = {**os.environ, "WANDB_MODE": "disabled", "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "diffpolicy", "train", str(DEBUG), "--dataset", toy_demo_file,
         "--out", str(run), "train.steps=200", "train.checkpoint_every=10", "train.val_every=1"],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    deadline = time.time() + 90
    while time.time() < deadline and not (run / "checkpoints" / "step_00000010").exists():
        time.sleep(0.02)
    time.sleep(0.15)  # land between checkpoints
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err[-2000:]
    assert err.strip().splitlines()[-1] == "diffpolicy train: interrupted"
    assert "Traceback" not in err
    step = int(out.split("checkpoint written at step ")[1].split(";")[0])
    assert 10 <= step < 200
    assert checkpoint_dirs(run)[-1].name == f"step_{step:08d}"  # at the interrupted step
    assert assert_run_dir_consistent(run) == step
    train_from_cli(None, None, None, str(run), ["train.steps=" + str(step + 5)], progress=False)
    assert checkpoint_dirs(run)[-1].name == f"step_{step + 5:08d}"


def test_non_finite_loss_names_the_step_and_keeps_the_last_good_checkpoint(
    tmp_path, toy_demo_file, capsys
):
    run = tmp_path / "run"
    train(debug_cfg(toy_demo_file, "train.steps=10"), run, progress=False)
    good = checkpoint_dirs(run)[-1]
    before = {p.name: p.read_bytes() for p in good.iterdir()}
    # a real trigger: an absurd learning rate makes the weights overflow within a step or two
    with pytest.raises(UserError, match=r"non-finite loss .* at step 1\d; last good checkpoint: "):
        train_from_cli(None, None, None, str(run), ["train.lr=1e30", "train.steps=30"], False)
    assert checkpoint_dirs(run) == [good]
    assert {p.name: p.read_bytes() for p in good.iterdir()} == before
    # the same from the CLI: exit 2, one line naming the step, nothing written
    line = one_line_exit_2(
        capsys,
        ["train", str(DEBUG), "--dataset", toy_demo_file, "--out", str(tmp_path / "r2"),
         "train.lr=1e30"],
        "non-finite loss",
    )  # fmt: skip
    assert "at step " in line and not checkpoint_dirs(tmp_path / "r2")
    # resuming the good run with a sane lr continues from the kept checkpoint
    train_from_cli(None, None, None, str(run), ["train.lr=1e-3", "train.steps=15"], False)
    assert checkpoint_dirs(run)[-1].name == "step_00000015"


# ---------------------------------------------------------------------------------- collection


def collect_child(out, episodes=40, workers=1, argv_extra=()):
    def run():
        return cli.main(
            ["collect", "diffpolicy/ReachAround-v0", "--episodes", str(episodes), "--out",
             str(out), "--workers", str(workers), *argv_extra]
        )  # fmt: skip

    return run


def test_collection_kill_or_ctrl_c_never_damages_the_output(tmp_path):
    out = tmp_path / "demos.hdf5"
    write_demos(out, bimodal_demos(n=3))
    original = out.read_bytes()
    rng = random.Random(3)
    outcomes = []
    for sig, delay in [(signal.SIGKILL, rng.uniform(0.2, 1.5)) for _ in range(3)] + [
        (signal.SIGINT, rng.uniform(0.3, 1.0))
    ]:
        pid = fork(collect_child(out))
        time.sleep(delay)
        os.kill(pid, sig)
        code = wait(pid)
        outcomes.append(code)
        if code == 0:  # finished first: then the file is the new, valid one
            assert len(load_demos(out).episodes) == 40
            write_demos(out, bimodal_demos(n=3))
        else:
            assert code in (-signal.SIGKILL, 130), code
            assert out.read_bytes() == original
    assert outcomes.count(130) + outcomes.count(0) >= 1  # Ctrl-C: clean exit code
    # a kill in the middle of the write itself: the old file stays, a stale temp file is left
    import diffpolicy.dataset as ds

    def killed_in_write():
        ds.os.replace = kill_self
        return collect_child(out, episodes=3)()

    assert wait(fork(killed_in_write)) == -signal.SIGKILL
    assert out.read_bytes() == original
    stale = [p.name for p in tmp_path.glob(".demos.hdf5.*.tmp")]
    assert len(stale) == 1
    # the next write to the same file removes temp files of writers that are gone
    assert wait(fork(collect_child(out, episodes=3))) == 0
    assert len(load_demos(out).episodes) == 3
    assert sorted(p.name for p in tmp_path.iterdir()) == ["demos.hdf5"]


def test_collection_with_workers_leaves_no_processes(tmp_path):
    from diffpolicy.collect import collect

    collect("diffpolicy/ReachAround-v0", 4, str(tmp_path / "a.hdf5"), workers=2, progress=False)
    assert multiprocessing.active_children() == []
    assert children_of(os.getpid()) == []
    assert len(load_demos(tmp_path / "a.hdf5").episodes) == 4
    # SIGKILL of a collecting parent: its worker processes go away too, and no file appears
    pid = fork(collect_child(tmp_path / "b.hdf5", episodes=400, workers=2))
    deadline = time.time() + 60
    workers: list[int] = []
    while time.time() < deadline and len(workers) < 2:
        workers = [w for w in children_of(pid) if alive(w)]
        time.sleep(0.05)
    assert len(workers) >= 2, workers
    time.sleep(0.3)
    os.kill(pid, signal.SIGKILL)
    wait(pid)
    deadline = time.time() + 30
    while time.time() < deadline and any(alive(w) for w in workers):
        time.sleep(0.1)
    assert not any(alive(w) for w in workers)
    assert not (tmp_path / "b.hdf5").exists()


# ------------------------------------------------------------------------------------ rollouts


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

    def predict_action_chunk(self, obs, **kw):
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
        def predict_action_chunk(self, obs, **kw):
            if self.calls == 1:  # the physics server of env 0 goes away mid-episode
                made[0].unwrapped.scene.client.disconnect()
            if self.calls == 4:  # and env 1's, later
                made[1].unwrapped.scene.client.disconnect()
            return super().predict_action_chunk(obs, **kw)

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


@pytest.mark.parametrize("env_id", ["diffpolicy/ReachAround-v0", "diffpolicy/Pick-v0"])
def test_env_never_passes_bad_actions_to_physics(env_id, monkeypatch):
    from diffpolicy.collect import make_env

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
               high + 1e6, low - 1e6, np.where(np.arange(len(low)) == 0, np.nan, high * 10)]  # fmt: skip
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


# ------------------------------------------------------------------------------- bad input, CLI


@pytest.fixture(scope="module")
def toy_run(tmp_path_factory):
    d = tmp_path_factory.mktemp("toyrun")
    data = write_bimodal(d / "toy.hdf5")
    return train(debug_cfg(data, "train.steps=5"), d / "run", progress=False)


def copy_run(src: Path, dst: Path) -> Path:
    import shutil

    shutil.copytree(src, dst)
    return dst


def test_checkpoint_problems_are_refused_with_one_line(toy_run, tmp_path, capsys):
    ck = checkpoint_dirs(toy_run)[-1].name
    cases = {}
    r = copy_run(toy_run, tmp_path / "no_weights")
    (r / "checkpoints" / ck / "model.safetensors").unlink()
    cases["no_weights"] = (r, "model.safetensors is missing")
    r = copy_run(toy_run, tmp_path / "no_config")
    (r / "config.yaml").unlink()
    cases["no_config"] = (r, "no config.yaml")
    r = copy_run(toy_run, tmp_path / "no_ckpt")
    import shutil

    shutil.rmtree(r / "checkpoints")
    cases["no_ckpt"] = (r, "has no checkpoint")
    r = copy_run(toy_run, tmp_path / "shape")
    text = (r / "config.yaml").read_text().replace("- 16\n  - 32", "- 32\n  - 64")
    (r / "config.yaml").write_text(text)
    cases["shape"] = (r, "has shape")
    r = copy_run(toy_run, tmp_path / "type")
    (r / "config.yaml").write_text(
        (r / "config.yaml").read_text().replace("type: diffusion", "type: mse")
    )
    cases["type"] = (r, "holds a 'diffusion' policy, config.yaml says 'mse'")
    r = copy_run(toy_run, tmp_path / "levels")
    text = (r / "config.yaml").read_text().replace("- 16\n  - 32", "- 16\n  - 32\n  - 64")
    (r / "config.yaml").write_text(text)
    cases["levels"] = (r, "do not match the config")
    for run, message in cases.values():
        with pytest.raises(CheckpointError, match=message.replace("(", r"\(")):
            load_policy(run)
        one_line_exit_2(capsys, ["eval", str(run), "--episodes", "1"], message)
    # resume without the training state
    r = copy_run(toy_run, tmp_path / "no_state")
    (r / "checkpoints" / ck / "train_state.pt").unlink()
    one_line_exit_2(capsys, ["train", "--resume", str(r)], "train_state.pt is missing")
    assert checkpoint_dirs(r)[-1].name == ck  # nothing lost
    assert not (tmp_path / "no_state" / "checkpoints" / ck / "train_state.pt").exists()


@pytest.mark.parametrize(
    "argv, message",
    [
        (["collect", "diffpolicy/Nope-v0", "--episodes", "2", "--out", "OUT"], "unknown env id"),
        (["collect", "ReachAround", "--episodes", "2", "--out", "OUT"], "unknown env id"),
        (["collect", "diffpolicy/ReachAround-v0", "--episodes", "two", "--out", "OUT"],
         "'two' is not an integer"),
        (["collect", "diffpolicy/ReachAround-v0", "--episodes", "-3", "--out", "OUT"], ">= 0"),
        (["collect", "diffpolicy/ReachAround-v0", "--episodes", "2", "--out", "OUT",
          "--workers", "0"], "must be >= 1"),
        (["collect", "diffpolicy/ReachAround-v0", "--episodes", "1e3", "--out", "OUT"],
         "not an integer"),
        (["eval", "RUN", "--episodes", "2", "--guidance", "nan"], "must be finite"),
        (["eval", "RUN", "--episodes", "2", "--guidance", "abc"], "is not a number"),
        (["eval", "RUN", "--episodes", "2", "--mode", "left"], "must be an integer or 'all'"),
        (["eval", "RUN", "--episodes", "2", "--envs", "0"], "must be >= 1"),
        (["train", "CFG", "--dataset", "DATA", "--out", "OUT", "train.steps=abc"],
         "train.steps='abc' must be an integer"),
        (["train", "CFG", "--dataset", "DATA", "--out", "OUT", "train.lr=-1"],
         "train.lr=-1.0 must be a positive number"),
        (["train", "CFG", "--dataset", "DATA", "--out", "OUT", "data.horizon=13"],
         "data.horizon=13 must be a positive multiple"),
        (["train", "CFG", "--dataset", "DATA", "--out", "OUT", "data.n_action_steps=9"],
         "data.n_action_steps=9 must be <="),
        (["train", "CFG", "--dataset", "DATA", "--out", "OUT", "data.obs_keys=[pixels]"],
         "no key 'pixels'"),
        (["train", "CFG", "--dataset", "DATA", "--out", "OUT", "data.goal_key=nope"],
         "no key 'nope'"),
        (["train", "CFG", "--dataset", "DATA", "--out", "OUT", "train.device=tpu"],
         "train.device='tpu' must be one of"),
        (["train", "CFG", "--dataset", "DATA", "--out", "OUT", "nonsense"], "unrecognized arguments"),
        (["train", "CFG", "--dataset", "NOTHDF5", "--out", "OUT"], "is not an HDF5 file"),
        (["info", "NOTHDF5"], "is not an HDF5 file"),
    ],
)  # fmt: skip
def test_cli_bad_input_exit_2_one_line_nothing_written(argv, message, toy_run, tmp_path, capsys):
    (tmp_path / "not.hdf5").write_text("plain text")
    data = write_bimodal(tmp_path / "toy.hdf5")
    subst = {"RUN": str(toy_run), "CFG": str(DEBUG), "DATA": data,
             "OUT": str(tmp_path / "out"), "NOTHDF5": str(tmp_path / "not.hdf5")}  # fmt: skip
    before = sorted(p.name for p in tmp_path.iterdir())
    one_line_exit_2(capsys, [subst.get(a, a) for a in argv], message)
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # nothing written


def test_broken_dataset_files_refused_by_info_and_train(tmp_path, capsys):
    def build(name, fn):
        path = tmp_path / name
        with h5py.File(path, "w") as f:
            fn(f)
        return str(path)

    def ep(f, T=4, obs=None, actions=None, i=0):
        f.create_dataset(
            f"data/demo_{i}/actions", data=np.zeros((T, 2)) if actions is None else actions
        )
        f.create_dataset(
            f"data/demo_{i}/obs/observation", data=np.zeros((T, 2)) if obs is None else obs
        )
        f.create_dataset(f"data/demo_{i}/obs/desired_goal", data=np.zeros((T, 2)))

    good = write_bimodal(tmp_path / "good.hdf5", n=4)
    raw = Path(good).read_bytes()
    (tmp_path / "trunc.hdf5").write_bytes(raw[: len(raw) // 3])
    files = {
        "missing": (str(tmp_path / "missing.hdf5"), "not found"),
        "truncated": (str(tmp_path / "trunc.hdf5"), "trunc.hdf5"),
        "no_data": (build("a.h5", lambda f: f.create_group("x")), "no 'data' group"),
        "no_actions": (build("b.h5", lambda f: f.create_group("data/demo_0/obs")), "no 'actions'"),
        "zero_len": (build("c.h5", lambda f: ep(f, T=0)), "zero length"),
        "inf": (build("d.h5", lambda f: ep(f, obs=np.full((4, 2), np.inf))), "NaN or inf"),
        "f64_overflow": (build("e.h5", lambda f: ep(f, actions=np.full((4, 2), 1e300))), "NaN or inf"),
        "wrong_dtype": (build("g.h5", lambda f: ep(f, actions=np.zeros((4, 2), complex))), "dtype"),
        "obs_mismatch": (build("h.h5", lambda f: (ep(f), ep(f, obs=np.zeros((4, 3)), i=1))), "inconsistent"),
        "obs_is_dataset": (build("i.h5", lambda f: (f.create_dataset("data/demo_0/actions", data=np.zeros((3, 2))),
                                                    f.create_dataset("data/demo_0/obs", data=np.zeros(3)))),
                           "no 'obs' group"),
        "mode_huge": (build("j.h5", lambda f: (ep(f), f["data/demo_0"].attrs.__setitem__("mode", 10**12))),
                      "mode="),
    }  # fmt: skip
    for name, (path, message) in files.items():
        one_line_exit_2(capsys, ["info", path], message)
        out = tmp_path / f"run_{name}"
        one_line_exit_2(
            capsys, ["train", str(DEBUG), "--dataset", path, "--out", str(out)], message
        )
        assert not out.exists(), name
    assert Path(good).read_bytes() == raw
