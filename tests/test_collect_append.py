"""`diffpolicy collect --append` (diffpolicy.collect): episodes added with seeds after the
file's, the original episodes unchanged, a kill at any point leaving the file byte for byte
as it was, demos of another task refused in one line."""

import os
import random
import signal
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
from faults import fork_quiet, hidden
from helpers import kill_self, one_line_exit_2, wait

from diffpolicy import cli
from diffpolicy.dataset import load_demos

ENV = "diffpolicy/ReachAround-v0"


def collect(*args) -> list[str]:
    return ["collect", ENV, *map(str, args)]


def assert_same_episodes(a, b) -> None:
    assert len(a) == len(b)
    for x, y in zip(a, b):
        assert (x.seed, x.mode, x.mode_name, x.instruction) == (
            y.seed,
            y.mode,
            y.mode_name,
            y.instruction,
        )
        np.testing.assert_array_equal(x.actions, y.actions)
        np.testing.assert_array_equal(x.rewards, y.rewards)
        assert x.obs.keys() == y.obs.keys()
        for k in x.obs:
            np.testing.assert_array_equal(x.obs[k], y.obs[k])


def test_append_adds_episodes_with_later_seeds_and_keeps_the_originals(tmp_path):
    out = tmp_path / "demos.hdf5"
    assert cli.main(collect("--episodes", 3, "--out", out, "--seed", 5)) == 0
    first = load_demos(out)
    assert cli.main(collect("--episodes", 2, "--out", out, "--append")) == 0
    both = load_demos(out)
    assert len(both.episodes) == 5
    assert_same_episodes(both.episodes[:3], first.episodes)
    old = [e.seed for e in first.episodes]
    new = [e.seed for e in both.episodes[3:]]
    assert min(new) > max(old) >= 7, (old, new)  # seeds continue after the file's largest
    assert len(set(old + new)) == 5
    assert both.env_id == first.env_id == ENV and both.mode_names == first.mode_names
    with h5py.File(out) as f:
        assert f["data"].attrs["total"] == sum(len(e) for e in both.episodes)
    # the appended episodes are those a plain collect from that seed gives
    alone = tmp_path / "alone.hdf5"
    assert cli.main(collect("--episodes", 2, "--out", alone, "--seed", min(new))) == 0
    assert_same_episodes(both.episodes[3:], load_demos(alone).episodes)
    assert hidden(tmp_path) == []


def _kill_at(what: str):
    """Make this (child) process SIGKILL itself at `what` of the write."""
    import diffpolicy.files as files

    if what == "fsync":  # the new file is complete, not yet renamed over the old one
        files.os.fsync = kill_self
    elif what == "dataset":  # halfway through writing the HDF5 datasets
        real, calls = h5py.Group.create_dataset, {"n": 0}

        def create_dataset(self, *a, **kw):
            calls["n"] += 1
            if calls["n"] == 40:
                kill_self()
            return real(self, *a, **kw)

        h5py.Group.create_dataset = create_dataset


@pytest.mark.parametrize("what", ["fsync", "dataset", "delay"])
def test_sigkill_mid_append_leaves_the_file_byte_identical(what, tmp_path, capsys):
    out = tmp_path / "demos.hdf5"
    assert cli.main(collect("--episodes", 2, "--out", out)) == 0
    before = out.read_bytes()

    def child():
        _kill_at(what)
        return cli.main(collect("--episodes", 30, "--out", out, "--append"))

    pid = fork_quiet(child)
    if what == "delay":  # from outside, at a random moment of the collection
        time.sleep(random.Random(3).uniform(0.2, 0.6))
        os.kill(pid, signal.SIGKILL)
    assert wait(pid) == -signal.SIGKILL
    assert out.read_bytes() == before
    if what != "delay":  # killed inside the write: its temporary file is left behind
        assert any(".tmp" in name for name in hidden(tmp_path)), hidden(tmp_path)
    assert len(load_demos(out).episodes) == 2
    # the next append works, and removes the killed writer's temporary file
    assert cli.main(collect("--episodes", 1, "--out", out, "--append")) == 0
    assert len(load_demos(out).episodes) == 3
    assert sorted(p.name for p in tmp_path.iterdir()) == ["demos.hdf5"]
    capsys.readouterr()


def test_append_to_demos_of_another_task_or_no_file_is_one_line(tmp_path, toy_demo_file, capsys):
    out = tmp_path / "maze.hdf5"
    assert (
        cli.main(["collect", "diffpolicy/ReachAroundMaze-v0", "--episodes", "1", "--out", str(out)])
        == 0
    )
    before = out.read_bytes()
    line = one_line_exit_2(capsys, collect("--episodes", 1, "--out", out, "--append"))
    assert "'diffpolicy/ReachAroundMaze-v0'" in line and f"not '{ENV}'" in line, line
    assert out.read_bytes() == before
    raw = Path(toy_demo_file).read_bytes()  # demos of no env at all
    one_line_exit_2(
        capsys, collect("--episodes", 1, "--out", toy_demo_file, "--append"), "holds demos of 'toy'"
    )
    assert Path(toy_demo_file).read_bytes() == raw
    one_line_exit_2(
        capsys,
        collect("--episodes", 1, "--out", tmp_path / "none.hdf5", "--append"),
        "does not exist",
    )
    junk = tmp_path / "junk.hdf5"
    junk.write_text("not hdf5")
    one_line_exit_2(
        capsys, collect("--episodes", 1, "--out", junk, "--append"), "is not an HDF5 file"
    )
    assert junk.read_text() == "not hdf5"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["junk.hdf5", "maze.hdf5", "toy.hdf5"]
