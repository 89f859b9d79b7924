"""Demo collection (diffpolicy.collect): kills and Ctrl-C never damage the output file, and
worker processes never outlive the collection."""

from __future__ import annotations

import multiprocessing
import os
import random
import signal
import time
from pathlib import Path

from helpers import bimodal_demos, children_of, fork, kill_self, wait

from diffpolicy import cli
from diffpolicy.dataset import load_demos, write_demos


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    return "State:\tZ" not in state


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
    import diffpolicy.files as files

    def killed_in_write():
        files.os.replace = kill_self
        return collect_child(out, episodes=3)()

    assert wait(fork(killed_in_write)) == -signal.SIGKILL
    assert out.read_bytes() == original
    stale = [p.name for p in tmp_path.glob(".demos.hdf5.*.tmp*")]
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
