"""Nothing from a run directory or dataset is unpickled or evaluated: a crafted payload that
would create a file when unpickled (or YAML-constructed) is planted in every file the loaders
read; each is refused or read as plain data, and the file is never created."""

from __future__ import annotations

import os
import pickle
import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from helpers import write_bimodal

from diffpolicy.checkpoint import checkpoint_dirs, load_policy, load_run_config, read_metrics
from diffpolicy.config import load_config
from diffpolicy.dataset import load_demos
from diffpolicy.errors import UserError
from diffpolicy.train import train, train_from_cli

ROOT = Path(__file__).resolve().parents[1]


class Payload:
    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def payload_bytes(marker, protocol=None) -> bytes:
    return pickle.dumps({"step": 5, "x": Payload(marker)}, protocol=protocol)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    d = tmp_path_factory.mktemp("sec")
    cfg = load_config(ROOT / "configs" / "debug.yaml", ("train.steps=5",))
    cfg.data.dataset = write_bimodal(d / "toy.hdf5")
    return train(cfg, d / "run", progress=False)


@pytest.fixture
def no_unpickling(monkeypatch):
    """Any use of the pickle module's loaders fails the test (torch's weights-only loader has
    its own restricted unpickler and is the one allowed path)."""

    def forbidden(*a, **kw):
        raise AssertionError("something was unpickled")

    monkeypatch.setattr(pickle, "load", forbidden)
    monkeypatch.setattr(pickle, "loads", forbidden)
    monkeypatch.setattr(pickle, "Unpickler", forbidden)


def plant(run: Path, tmp_path: Path, name: str, how) -> tuple[Path, Path]:
    dst = tmp_path / name
    shutil.copytree(run, dst)
    marker = tmp_path / f"pwned_{name}"
    how(dst, checkpoint_dirs(dst)[-1], marker)
    return dst, marker


def torch_zip_payload(path, marker):
    torch.save({"step": 5, "optimizer": Payload(marker)}, path)  # torch's own zip format


PLANTS = {
    "train_state_raw_pickle": lambda r, c, m: (c / "train_state.pt").write_bytes(payload_bytes(m)),
    "train_state_torch_zip": lambda r, c, m: torch_zip_payload(c / "train_state.pt", m),
    "weights_pickle": lambda r, c, m: (c / "model.safetensors").write_bytes(payload_bytes(m)),
    "weights_torch_zip": lambda r, c, m: torch_zip_payload(c / "model.safetensors", m),
    "config_yaml_tag": lambda r, c, m: (r / "config.yaml").write_text(
        f"env_id: !!python/object/apply:os.system ['touch {m}']\n" + (r / "config.yaml").read_text()
    ),
    "config_yaml_tag_value": lambda r, c, m: (r / "config.yaml").write_text(
        (r / "config.yaml")
        .read_text()
        .replace("lr: 0.001", f"lr: !!python/object/new:os.system ['touch {m}']")
    ),
    "config_pickle": lambda r, c, m: (r / "config.yaml").write_bytes(payload_bytes(m)),
    "metrics_pickle": lambda r, c, m: (r / "metrics.jsonl").write_bytes(
        payload_bytes(m) + b"\n" + (r / "metrics.jsonl").read_bytes()
    ),
}


@pytest.mark.parametrize("name", sorted(PLANTS))
def test_run_directory_payloads_are_refused_never_run(name, run, tmp_path, no_unpickling):
    dst, marker = plant(run, tmp_path, name, PLANTS[name])
    outcomes = []
    for load in (
        lambda: load_policy(dst),
        lambda: load_run_config(dst),
        lambda: read_metrics(dst),
        lambda: train_from_cli(None, None, None, str(dst), ["train.steps=6"], progress=False),
    ):
        try:
            load()
            outcomes.append("ok")
        except UserError as e:
            outcomes.append(str(e))
    assert not marker.exists()
    if name.startswith("metrics"):  # a bad line is skipped as data, training resumes
        assert outcomes == ["ok"] * 4
        assert all(isinstance(m, dict) for m in read_metrics(dst))
    else:
        assert any(o != "ok" for o in outcomes), outcomes


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
