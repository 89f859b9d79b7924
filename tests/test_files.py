"""Writing files (diffpolicy.files) through the real commands: an unusable output path is
refused in one line before any work; a full disk (a real tiny tmpfs, and an injected ENOSPC)
is one line, exit 2, and leaves every file whole; one writer per run directory and output
file, and a writer killed while holding its lock never blocks the next one."""

import errno
import json
import os
import signal
import time
from pathlib import Path

import pytest
import torch
from faults import (
    HalfThenFull,
    MountUnavailable,
    fill,
    fork_quiet,
    hidden,
    lock_holders,
    mount_tmpfs,
    remount,
    snapshot,
    umount,
    wait_for_lock,
)
from helpers import DEBUG, debug_cfg, one_line_exit_2, wait, write_bimodal

import diffpolicy.checkpoint as ck
from diffpolicy import cli
from diffpolicy.checkpoint import (
    checkpoint_dirs,
    load_policy,
    read_metrics,
    read_train_state,
    read_weights,
)
from diffpolicy.dataset import load_demos
from diffpolicy.train import train

ENV = "diffpolicy/ReachAround-v0"


@pytest.fixture
def tmpfs(tmp_path):
    """mount(name, options) -> a tmpfs mounted at tmp_path/name, unmounted after the test."""
    mounted = []

    def mount(name: str, options: str) -> Path:
        try:
            path = mount_tmpfs(tmp_path / name, options)
        except MountUnavailable as e:
            pytest.skip(str(e))
        mounted.append(path)
        return path

    yield mount
    for path in reversed(mounted):
        umount(path)


@pytest.fixture(scope="module")
def read_only(tmp_path_factory):
    """(a read-only file system: a tmpfs mounted ro, or None, why not)."""
    target = tmp_path_factory.mktemp("ro")
    try:
        mount_tmpfs(target, "size=1m,ro")
    except MountUnavailable as e:
        yield None, str(e)
        return
    yield target, ""
    umount(target)


@pytest.fixture(scope="module")
def reach_run(tmp_path_factory):
    """A 2-step debug run on 3 collected ReachAround demos (a run eval can roll out)."""
    from diffpolicy.collect import collect

    d = tmp_path_factory.mktemp("reach")
    collect(ENV, 3, str(d / "demos.hdf5"), progress=False)
    return train(debug_cfg(d / "demos.hdf5", "train.steps=2"), d / "run", progress=False)


def tree(*roots: Path) -> list[str]:
    return sorted(str(p) for root in roots for p in root.rglob("*"))


def same_weights(a: Path, b: Path) -> None:
    for which in ("raw", "ema"):
        pa, _ = load_policy(a, which=which)
        pb, _ = load_policy(b, which=which)
        for (k, x), (_, y) in zip(pa.state_dict().items(), pb.state_dict().items()):
            assert torch.equal(x, y), (which, k)


def assert_run_loads(run: Path) -> int:
    """Every published checkpoint is whole, no temporary checkpoint is left, every metrics
    line is a JSON object, config.yaml loads; returns the newest step."""
    dirs = checkpoint_dirs(run)
    for d in dirs:
        assert {p.name for p in d.iterdir()} == {"model.safetensors", "train_state.pt"}, d
        read_weights(d, "raw")
        read_weights(d, "ema")
        assert read_train_state(d)["step"] == int(d.name[5:])
    load_policy(run)
    assert [p.name for p in (run / "checkpoints").iterdir() if p.name.startswith(".")] == []
    text = (run / "metrics.jsonl").read_text()
    assert text.endswith("\n") and all(json.loads(ln) for ln in text.splitlines()), text
    return int(dirs[-1].name[5:])


# ------------------------------------------------------------------ unusable output paths


class WorkStarted(BaseException):
    """The command got past its output checks (a BaseException: nothing catches it)."""


def _no_work(*a, **kw):
    raise WorkStarted()


@pytest.fixture
def no_work(monkeypatch):
    """Every command's work fails the test: the output checks must come first."""
    import diffpolicy.bench
    import diffpolicy.collect
    import diffpolicy.dataset
    import diffpolicy.distill
    import diffpolicy.evaluate
    import diffpolicy.modes
    import diffpolicy.quickstart
    import diffpolicy.train

    for module, name in [
        (diffpolicy.train, "train"),
        (diffpolicy.distill, "train_student"),
        (diffpolicy.distill, "distill"),
        (diffpolicy.evaluate, "evaluate_run"),
        (diffpolicy.modes, "run_study"),
        (diffpolicy.quickstart, "quickstart"),
        (diffpolicy.bench, "run_bench"),
        (diffpolicy.collect, "collect"),
        (diffpolicy.dataset, "load_demos"),
    ]:
        monkeypatch.setattr(module, name, _no_work)


OUTPUTS = {  # command -> (what it writes there, argv given the path and the inputs)
    "train --out": ("dir", lambda o, i: ["train", str(DEBUG), "--dataset", i.data, "--out", o]),
    "eval --json": ("file", lambda o, i: ["eval", i.run, "--episodes", "1", "--json", o]),
    "eval --report": ("dir", lambda o, i: ["eval", i.run, "--episodes", "1", "--report", o]),
    "eval --video": ("dir", lambda o, i: ["eval", i.run, "--episodes", "1", "--video", o]),
    "modes --out": ("dir", lambda o, i: ["modes", "--quick", "--out", o]),
    "modes --json": ("file", lambda o, i: ["modes", "--quick", "--out", i.free, "--json", o]),
    "quickstart --out": ("dir", lambda o, i: ["quickstart", "--out", o, "--episodes", "2"]),
    "info --plot": ("file", lambda o, i: ["info", i.data, "--plot", o]),
    "info --json": ("file", lambda o, i: ["info", i.data, "--json", o]),
    "collect --out": ("file", lambda o, i: ["collect", ENV, "--episodes", "1", "--out", o]),
    "distill --out": ("dir", lambda o, i: ["distill", i.run, "--out", o]),
    "bench --json": ("file", lambda o, i: ["bench", "--quick", "--json", o]),
}


class Inputs:
    def __init__(self, tmp: Path, run: Path):
        (tmp / "in").mkdir()
        self.data = write_bimodal(tmp / "in" / "toy.hdf5")
        self.run, self.free = str(run), str(tmp / "free")  # `free`: a usable, absent directory


@pytest.mark.parametrize("kind", ["under_a_file", "wrong_kind", "read_only"])
@pytest.mark.parametrize("command", sorted(OUTPUTS))
def test_unusable_output_path_refused_before_any_work(
    command, kind, tmp_path, toy_run, read_only, no_work, capsys
):
    what, argv = OUTPUTS[command]
    read_only, why = read_only
    if kind == "read_only" and read_only is None:
        pytest.skip(f"no read-only location: {why}")
    read_only = read_only or tmp_path
    inputs = Inputs(tmp_path, toy_run)
    (tmp_path / "a_file").write_text("a regular file\n")
    (tmp_path / "a_dir").mkdir()
    name = "out.json" if what == "file" else "out"
    out = {
        "under_a_file": tmp_path / "a_file" / name,  # a parent that is a regular file
        "wrong_kind": tmp_path / ("a_dir" if what == "file" else "a_file"),
        "read_only": read_only / name,
    }[kind]
    before = tree(tmp_path, read_only)
    t0 = time.perf_counter()
    line = one_line_exit_2(capsys, argv(str(out), inputs))
    seconds = time.perf_counter() - t0
    assert str(out) in line, line
    expected = {
        "under_a_file": "is a file",
        "read_only": "Read-only file system",
        "wrong_kind": "is a directory" if what == "file" else "is a file",
    }[kind]
    assert expected in line, line
    assert seconds < 5, seconds  # refused at once
    assert tree(tmp_path, read_only) == before  # nothing created (no probe, lock or directory)


# ------------------------------------------------------------------------ a full disk, for real


def test_full_disk_collect_append_keeps_the_file_whole(tmpfs, capsys):
    mnt = tmpfs("disk", "size=256k")
    out = mnt / "demos.hdf5"
    assert cli.main(["collect", ENV, "--episodes", "2", "--out", str(out)]) == 0
    before = out.read_bytes()
    fill(mnt, leave=24 << 10)  # room for part of the new file: the write fails midway
    line = one_line_exit_2(
        capsys, ["collect", ENV, "--episodes", "4", "--out", str(out), "--append"]
    )
    assert "No space left on device" in line and str(out) in line, line
    assert out.read_bytes() == before
    assert len(load_demos(out).episodes) == 2
    assert sorted(p.name for p in mnt.iterdir()) == ["demos.hdf5", "filler"]  # no temp, no lock
    (mnt / "filler").unlink()
    assert cli.main(["collect", ENV, "--episodes", "2", "--out", str(out), "--append"]) == 0
    assert len(load_demos(out).episodes) == 4
    assert sorted(p.name for p in mnt.iterdir()) == ["demos.hdf5"]


@pytest.fixture(scope="module")
def ref10(tmp_path_factory):
    """The uninterrupted 10-step run (checkpoints at 5 and 10) that interrupted ones match."""
    d = tmp_path_factory.mktemp("ref10")
    data = write_bimodal(d / "toy.hdf5")
    run = train(
        debug_cfg(data, "train.steps=10", "train.checkpoint_every=5"), d / "run", progress=False
    )
    return data, run


TRAIN10 = ["train.steps=10", "train.checkpoint_every=5"]


@pytest.mark.parametrize("fails_in", ["model.safetensors", "train_state.pt"])
def test_full_disk_during_a_checkpoint_keeps_the_previous_one(fails_in, tmpfs, ref10, capsys):
    data, ref = ref10
    first = checkpoint_dirs(ref)[0]
    model, state = ((first / n).stat().st_size for n in ("model.safetensors", "train_state.pt"))
    # room for one checkpoint (and config.yaml, metrics.jsonl), then part of the second
    extra = model // 2 if fails_in == "model.safetensors" else model + state // 2
    mnt = tmpfs("disk", f"size={(model + state + extra) // 1024 + 12}k")
    run = mnt / "run"
    argv = ["train", str(DEBUG), "--dataset", data, "--out", str(run), *TRAIN10]
    line = one_line_exit_2(capsys, argv, "No space left on device")
    assert "step_00000010" in line, line  # names the checkpoint it could not write
    assert [d.name for d in checkpoint_dirs(run)] == ["step_00000005"]
    assert assert_run_loads(run) == 5
    remount(mnt, "size=8m")  # room again: resuming finishes the run, nothing left over
    assert cli.main(["train", "--resume", str(run)]) == 0
    assert assert_run_loads(run) == 10
    same_weights(ref, run)
    assert hidden(run) == []


def test_full_disk_eval_and_info_outputs_keep_the_previous_files(reach_run, tmpfs, capsys):
    mnt = tmpfs("disk", "size=2m")
    ev = ["eval", str(reach_run), "--episodes", "1", "--envs", "1"]
    data = str(reach_run.parent / "demos.hdf5")
    js, rep, vid, info = mnt / "eval.json", mnt / "rep", mnt / "vid", mnt / "info.json"
    assert cli.main([*ev, "--json", str(js), "--report", str(rep), "--video", str(vid)]) == 0
    assert cli.main(["info", data, "--json", str(info), "--plot", str(mnt / "p.png")]) == 0
    capsys.readouterr()
    before = snapshot(mnt)
    for argv, target in [
        ([*ev, "--json", str(js)], js),
        ([*ev, "--report", str(rep)], rep),
        ([*ev, "--video", str(vid)], vid),
        (["info", data, "--json", str(info)], info),
        (["info", data, "--plot", str(mnt / "p.png")], mnt / "p.png"),
    ]:
        fill(mnt)  # again: a failed write gives back the pages it had taken
        line = one_line_exit_2(capsys, argv, "No space left on device")
        assert str(target) in line, line
        assert snapshot(mnt) == before, argv  # every previous file byte for byte, no temp file
    (mnt / "filler").unlink()
    assert cli.main([*ev, "--json", str(js), "--report", str(rep), "--video", str(vid)]) == 0
    assert hidden(mnt) == []
    for path in mnt.rglob("*"):  # every file loads
        if path.suffix == ".json":
            assert json.loads(path.read_text())
        elif path.suffix == ".png":
            from PIL import Image

            Image.open(path).verify()
        elif path.suffix == ".mp4":
            assert path.read_bytes()[4:8] == b"ftyp"


# ----------------------------------------------------------------------- ENOSPC by injection


def test_enospc_appending_metrics_leaves_no_half_line(monkeypatch, ref10, tmp_path, capsys):
    import diffpolicy.train as tr

    data, ref = ref10
    run = tmp_path / "run"
    calls = {"n": 0}

    def opener(path, mode="r", *a, **kw):
        f = open(path, mode, *a, **kw)  # noqa: SIM115 - the caller's with-block closes it
        if Path(path).name == "metrics.jsonl" and "a" in mode:
            calls["n"] += 1
            if calls["n"] == 3:  # the log line of step 15 (step 10 is checkpointed)
                return HalfThenFull(f)
        return f

    monkeypatch.setattr(tr, "open", opener, raising=False)
    argv = [
        "train",
        str(DEBUG),
        "--dataset",
        data,
        "--out",
        str(run),
        "train.steps=20",
        "train.checkpoint_every=10",
        "train.log_every=5",
        "train.val_every=100",
    ]
    one_line_exit_2(capsys, argv, "No space left on device")
    assert calls["n"] == 3
    assert [m["step"] for m in read_metrics(run)] == [5, 10]
    assert assert_run_loads(run) == 10  # every line whole: the half line was taken back
    monkeypatch.undo()
    assert cli.main(["train", "--resume", str(run)]) == 0
    assert [m["step"] for m in read_metrics(run) if "loss" in m] == [5, 10, 15, 20]
    assert hidden(run) == []


@pytest.mark.parametrize("writer", ["save_file", "torch.save"])
def test_enospc_writing_a_checkpoint_keeps_the_previous_one(
    writer, monkeypatch, ref10, tmp_path, capsys
):
    data, ref = ref10
    run = tmp_path / "run"
    real = ck.save_file if writer == "save_file" else torch.save
    calls = {"n": 0}

    def half_then_full(obj, path, *a, **kw):
        calls["n"] += 1
        if calls["n"] < 2:
            return real(obj, path, *a, **kw)
        real(obj, path, *a, **kw)
        Path(path).write_bytes(Path(path).read_bytes()[: Path(path).stat().st_size // 2])
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(
        *((ck, "save_file") if writer == "save_file" else (ck.torch, "save")), half_then_full
    )
    argv = ["train", str(DEBUG), "--dataset", data, "--out", str(run), *TRAIN10]
    one_line_exit_2(capsys, argv, "No space left on device")
    assert calls["n"] == 2
    assert [d.name for d in checkpoint_dirs(run)] == ["step_00000005"]
    assert assert_run_loads(run) == 5
    monkeypatch.undo()
    assert cli.main(["train", "--resume", str(run)]) == 0
    same_weights(ref, run)
    assert hidden(run) == []


# ------------------------------------------------------------------------ concurrent writers

TRIALS = 5


def test_second_train_into_a_run_directory_is_refused_every_time(tmp_path, capsys):
    """N trials: a training process holds the run directory; a second `train` into it is
    refused in one line; the holder, SIGKILLed, never blocks the next run there."""
    data = write_bimodal(tmp_path / "toy.hdf5")
    for trial in range(TRIALS):
        run = tmp_path / f"run{trial}"
        holder = fork_quiet(
            lambda run=run: cli.main(
                [
                    "train",
                    str(DEBUG),
                    "--dataset",
                    data,
                    "--out",
                    str(run),
                    "train.steps=100000",
                    "train.checkpoint_every=100000",
                ]
            )
        )
        try:
            wait_for_lock(run / ".lock", holder)
            while not (run / "metrics.jsonl").is_file():  # logging: set up, config written
                time.sleep(0.01)
            t0 = time.perf_counter()
            argv = ["train", str(DEBUG), "--dataset", data, "--out", str(run), "train.steps=3"]
            one_line_exit_2(capsys, argv, f"run directory {run} is in use by another")
            assert time.perf_counter() - t0 < 5
            argv = ["train", "--resume", str(run)]  # no checkpoint yet: refused by the lock
            one_line_exit_2(capsys, argv, "is in use by another")
            assert lock_holders(run / ".lock") == {holder}  # the holder was not disturbed
        finally:
            os.kill(holder, signal.SIGKILL)
            assert wait(holder) == -signal.SIGKILL
        assert not checkpoint_dirs(run)
        # the killed holder's lock file is still there; it blocks nothing
        assert (
            cli.main(["train", str(DEBUG), "--dataset", data, "--out", str(run), "train.steps=3"])
            == 0
        )
        assert [d.name for d in checkpoint_dirs(run)] == ["step_00000003"]
        steps = [m["step"] for m in read_metrics(run) if "loss" in m]
        assert steps == [3]  # none of the killed run's lines
        assert not (run / ".lock").exists()
    capsys.readouterr()


def test_second_collect_to_an_output_file_is_refused_every_time(tmp_path, capsys):
    out = tmp_path / "demos.hdf5"
    for _ in range(TRIALS):
        holder = fork_quiet(
            lambda: cli.main(["collect", ENV, "--episodes", "100000", "--out", str(out)])
        )
        lock = tmp_path / ".demos.hdf5.lock"
        try:
            wait_for_lock(lock, holder)
            for argv in (
                ["collect", ENV, "--episodes", "1", "--out", str(out)],
                ["collect", ENV, "--episodes", "1", "--out", str(out), "--append"],
            ):
                t0 = time.perf_counter()
                one_line_exit_2(capsys, argv, f"output {out} is in use by another")
                assert time.perf_counter() - t0 < 5
        finally:
            os.kill(holder, signal.SIGKILL)
            assert wait(holder) == -signal.SIGKILL
        assert cli.main(["collect", ENV, "--episodes", "1", "--out", str(out)]) == 0
        assert len(load_demos(out).episodes) == 1
        assert sorted(p.name for p in tmp_path.iterdir()) == ["demos.hdf5"]
    capsys.readouterr()
