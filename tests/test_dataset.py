"""Demo files (diffpolicy.dataset): round trip, windows, splits, broken and foreign files,
atomic writes, and payloads in a file read as plain data, never unpickled or evaluated."""

from pathlib import Path

import h5py
import numpy as np
import pytest
from helpers import bimodal_demos, payload_bytes, write_bimodal

from diffpolicy.dataset import (
    DatasetError,
    load_demos,
    make_windows,
    split_episodes,
    summarize,
    write_demos,
)
from diffpolicy.errors import UserError


def test_roundtrip_keeps_arrays_and_attrs(tmp_path):
    demos = bimodal_demos(n=6, length=9)
    write_demos(tmp_path / "d.hdf5", demos)
    back = load_demos(tmp_path / "d.hdf5")
    assert len(back.episodes) == 6 and back.mode_names == ["left", "right"]
    assert back.env_id == "toy" and back.layout == demos.layout
    for a, b in zip(demos.episodes, back.episodes):
        np.testing.assert_array_equal(a.actions, b.actions)
        np.testing.assert_array_equal(a.obs["observation"], b.obs["observation"])
        assert (a.mode, a.mode_name, a.instruction, a.seed) == (
            b.mode,
            b.mode_name,
            b.instruction,
            b.seed,
        )
    assert back.mode_counts().tolist() == [3, 3]
    with h5py.File(tmp_path / "d.hdf5") as f:
        assert f["data"].attrs["total"] == 6 * 9
        assert f["data/demo_0"].attrs["num_samples"] == 9


def test_windows_pad_and_mask():
    demos = bimodal_demos(n=2, length=5)
    w = make_windows(
        demos, np.array([0]), ("observation",), "desired_goal", n_obs_steps=2, horizon=4
    )
    assert w["obs"].shape == (5, 2, 2) and w["action"].shape == (5, 4, 2)
    assert w["goal"].shape == (5, 2) and w["mode"].tolist() == [0] * 5
    ep = demos.episodes[0]
    # first window: obs t=-1 repeats t=0; action t=-1 is padding (masked out)
    np.testing.assert_array_equal(w["obs"][0, 0], ep.obs["observation"][0])
    assert w["action_mask"][0].tolist() == [False, True, True, True]
    np.testing.assert_array_equal(w["action"][0, 1:], ep.actions[0:3])
    # last window: actions past the end hold the last action and stay in the loss
    np.testing.assert_array_equal(w["action"][4, 2:], np.stack([ep.actions[4]] * 2))
    assert w["action_mask"][4].all()
    np.testing.assert_array_equal(w["obs"][3, 1], ep.obs["observation"][3])


def test_split_is_seeded_and_disjoint():
    tr, va = split_episodes(50, 0.2, seed=3)
    tr2, va2 = split_episodes(50, 0.2, seed=3)
    assert len(va) == 10 and not set(tr) & set(va) and len(tr) + len(va) == 50
    assert tr.tolist() == tr2.tolist() and va.tolist() == va2.tolist()
    assert len(split_episodes(1, 0.5, 0)[0]) == 1


def test_summarize_counts_modes():
    s = summarize(bimodal_demos(n=5, length=4))
    assert s["episodes"] == 5 and s["steps"] == 20 and s["modes"] == {"left": 3, "right": 2}
    assert s["instructions"] == ["go left", "go right"]


def _write_raw(path, build):
    with h5py.File(path, "w") as f:
        build(f)
    return path


@pytest.mark.parametrize(
    "build, message",
    [
        (lambda f: f.create_group("other"), "no 'data' group"),
        (lambda f: f.create_group("data"), "no episodes"),
        (lambda f: f.create_dataset("data/demo_0/actions", data=np.zeros((0, 2))), "zero length"),
        (
            lambda f: f.create_dataset("data/demo_0/actions", data=np.zeros((3, 2))),
            "no 'obs' group",
        ),
        (
            lambda f: (
                f.create_dataset("data/demo_0/actions", data=np.zeros((3, 2))),
                f.create_dataset("data/demo_0/obs/observation", data=np.zeros((4, 2))),
            ),
            "has \\(4,\\) steps, actions have 3",
        ),
        (
            lambda f: (f.create_dataset("data/demo_0/actions", data=np.full((3, 2), np.nan)),),
            "NaN or inf",
        ),
        (lambda f: (f.create_dataset("data/demo_0/actions", data=np.zeros(3)),), "must be 2-D"),
        (
            lambda f: (f.create_dataset("data/demo_0/actions", data=np.array([b"a", b"b"])),),
            "non-numeric",
        ),
    ],
)
def test_broken_files_give_one_clear_error(tmp_path, build, message):
    path = _write_raw(tmp_path / "bad.hdf5", build)
    with pytest.raises(DatasetError, match=message):
        load_demos(path)


def test_not_hdf5_missing_and_truncated(tmp_path):
    with pytest.raises(DatasetError, match="not found"):
        load_demos(tmp_path / "missing.hdf5")
    (tmp_path / "text.hdf5").write_text("hello")
    with pytest.raises(DatasetError, match="not an HDF5 file"):
        load_demos(tmp_path / "text.hdf5")
    write_demos(tmp_path / "good.hdf5", bimodal_demos(n=4))
    data = (tmp_path / "good.hdf5").read_bytes()
    (tmp_path / "trunc.hdf5").write_bytes(data[: len(data) // 2])
    with pytest.raises(DatasetError):
        load_demos(tmp_path / "trunc.hdf5")


def test_missing_obs_key_is_named(tmp_path):
    write_demos(tmp_path / "d.hdf5", bimodal_demos(n=2))
    with pytest.raises(DatasetError, match="no key 'pixels'"):
        load_demos(tmp_path / "d.hdf5", obs_keys=("pixels",))


def test_foreign_robomimic_file_without_our_attrs_loads(tmp_path):
    def build(f):
        for i in range(2):
            f.create_dataset(f"data/demo_{i}/actions", data=np.ones((4, 7)))
            f.create_dataset(f"data/demo_{i}/obs/robot0_eef_pos", data=np.zeros((4, 3)))
        f["data"].attrs["env_args"] = '{"env_name": "Lift", "env_type": 1, "env_kwargs": {}}'

    demos = load_demos(_write_raw(tmp_path / "foreign.hdf5", build))
    assert demos.env_id == "Lift" and len(demos.episodes) == 2 and demos.num_modes == 0
    assert demos.episodes[0].mode == -1


def test_write_is_atomic_on_failure(tmp_path):
    path = tmp_path / "d.hdf5"
    write_demos(path, bimodal_demos(n=2))
    before = path.read_bytes()
    broken = bimodal_demos(n=2)
    broken.episodes[1].obs = None  # makes the writer fail half-way
    with pytest.raises(AttributeError):
        write_demos(path, broken)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["d.hdf5"]


# ------------------------------------------------------------------------------ planted payloads


def _dataset_plants(path: Path, marker: Path):
    blob = np.void(payload_bytes(marker))
    return {
        "env_args_blob": lambda f: f["data"].attrs.__setitem__("env_args", blob),
        "mode_names_blob": lambda f: f["data"].attrs.__setitem__("mode_names", blob),
        "layout_blob": lambda f: f["data"].attrs.__setitem__("layout", blob),
        "episode_attr_blob": lambda f: f["data/demo_0"].attrs.__setitem__("mode_name", blob),
        "instruction_blob": lambda f: f["data/demo_0"].attrs.__setitem__("instruction", blob),
        "mode_attr_blob": lambda f: f["data/demo_0"].attrs.__setitem__("mode", blob),
        "object_dataset": lambda f: (
            f["data/demo_0"].__delitem__("actions"),
            f["data/demo_0"].create_dataset(
                "actions",
                data=np.array([payload_bytes(marker, 0)] * 12, dtype=object),
                dtype=h5py.special_dtype(vlen=bytes),
            ),
        ),
        "object_obs": lambda f: f["data/demo_0/obs"].create_dataset(
            "evil",
            data=np.array([payload_bytes(marker, 0)] * 12, dtype=object),
            dtype=h5py.special_dtype(vlen=bytes),
        ),
        "opaque_dataset": lambda f: f["data/demo_0/obs"].create_dataset(
            "blob", data=np.array([blob] * 12)
        ),
        "python_expression_attr": lambda f: f["data"].attrs.__setitem__(
            "env_args", f"__import__('os').system('touch {marker}')"
        ),
    }


def test_dataset_payloads_are_data_never_evaluated(tmp_path, no_unpickling):
    marker = tmp_path / "pwned"
    names = list(_dataset_plants(tmp_path, marker))
    refused = 0
    for name in names:
        path = Path(write_bimodal(tmp_path / f"{name}.hdf5", n=2))
        with h5py.File(path, "r+") as f:
            _dataset_plants(path, marker)[name](f)
        try:
            demos = load_demos(path)
        except UserError:
            refused += 1
        else:  # loaded: the blob stayed an opaque string, never an object
            for e in demos.episodes:
                assert isinstance(e.mode_name, str) and isinstance(e.instruction, str)
                assert all(v.dtype == np.float32 for v in e.obs.values())
        assert not marker.exists(), name
    assert refused >= 5, refused
