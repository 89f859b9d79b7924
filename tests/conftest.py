"""Fixtures shared by several test files; plain helpers are in helpers.py."""

import os
import pickle
import sys
from pathlib import Path

import pytest
import torch

# One intra-op thread for the whole test process: the tensors are tiny, and switching thread
# counts mid-process (or two threads on a busy core) makes small ops many times slower.
torch.set_num_threads(1)

os.environ.setdefault("WANDB_MODE", "disabled")
sys.path.insert(0, str(Path(__file__).parent))


@pytest.fixture
def toy_demo_file(tmp_path):
    from helpers import write_bimodal

    return write_bimodal(tmp_path / "toy.hdf5")


@pytest.fixture(scope="session")
def toy_run(tmp_path_factory):
    """A 5-step debug-config run on the toy data, trained once per session. Tests copy it
    before changing anything in it."""
    from helpers import debug_cfg, write_bimodal

    from diffpolicy.train import train

    d = tmp_path_factory.mktemp("toyrun")
    data = write_bimodal(d / "toy.hdf5")
    return train(debug_cfg(data, "train.steps=5"), d / "run", progress=False)


@pytest.fixture
def no_unpickling(monkeypatch):
    """Any use of the pickle module's loaders fails the test (torch's weights-only loader has
    its own restricted unpickler and is the one allowed path)."""

    def forbidden(*a, **kw):
        raise AssertionError("something was unpickled")

    monkeypatch.setattr(pickle, "load", forbidden)
    monkeypatch.setattr(pickle, "loads", forbidden)
    monkeypatch.setattr(pickle, "Unpickler", forbidden)


@pytest.fixture
def fake_encoder(monkeypatch, tmp_path):
    """Fake encoder behind language.embed for model_path=tmp_path/"model"."""
    from helpers import FakeEncoder

    from diffpolicy import language

    enc = FakeEncoder()
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    monkeypatch.setattr(language, "load_encoder", lambda path: enc)
    monkeypatch.setattr(language, "_CACHE", {})
    monkeypatch.setattr(language, "_TOKENS", {})
    enc.path = str(model_dir)
    return enc
