"""Training, checkpoints and resume on the synthetic toy data with the debug config."""

import json
import os
import pickle
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from diffpolicy.checkpoint import checkpoint_dirs, load_policy, read_metrics
from diffpolicy.config import load_config
from diffpolicy.errors import CheckpointError
from diffpolicy.train import batch_indices, train

ROOT = Path(__file__).resolve().parents[1]
DEBUG = ROOT / "configs" / "debug.yaml"
CLI_ENV = {**os.environ, "WANDB_MODE": "disabled", "OMP_NUM_THREADS": "1"}


def debug_cfg(dataset, *overrides):
    cfg = load_config(DEBUG, overrides)
    cfg.data.dataset = str(dataset)
    return cfg


def run_cli(*args, timeout=120):
    return subprocess.run(
        [sys.executable, "-m", "diffpolicy", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
        env=CLI_ENV,
    )


@pytest.mark.parametrize("kind", ["diffusion", "mse", "gmm"])
def test_loss_falls_and_run_dir_is_complete(tmp_path, toy_demo_file, kind):
    cfg = debug_cfg(toy_demo_file, f"policy.type={kind}", "train.steps=60", "train.log_every=10")
    run = train(cfg, tmp_path / "run", progress=False)
    logs = [m for m in read_metrics(run) if "loss" in m]
    first, last = logs[0]["loss"], min(m["loss"] for m in logs[-3:])
    assert last < first, (kind, first, last)
    assert any("val_loss" in m for m in read_metrics(run))
    assert (run / "config.yaml").is_file()
    ckpt = checkpoint_dirs(run)[-1]
    assert ckpt.name == "step_00000060"
    assert {p.name for p in ckpt.iterdir()} == {"model.safetensors", "train_state.pt"}


def test_checkpoint_roundtrip_gives_identical_predictions(tmp_path, toy_demo_file):
    cfg = debug_cfg(toy_demo_file, "train.steps=10")
    run = train(cfg, tmp_path / "run", progress=False)
    policy, cfg2 = load_policy(run)
    again, _ = load_policy(run)
    obs = {"obs": torch.randn(3, 2, 2), "goal": torch.randn(3, 2)}
    a = policy.predict_action_chunk(obs, generator=torch.Generator().manual_seed(0))
    b = again.predict_action_chunk(obs, generator=torch.Generator().manual_seed(0))
    assert a.shape == (3, cfg2.data.horizon, 2)
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert cfg2.dims["obs_dim"] == 2 and cfg2.dims["goal_dim"] == 2


def test_batches_are_a_stateless_distributed_sampler():
    a = batch_indices(5, n=50, batch=8, seed=1, rank=0, world=1)
    assert torch.equal(a, batch_indices(5, n=50, batch=8, seed=1, rank=0, world=1))
    # one epoch per rank covers each index once, ranks are disjoint
    r0 = torch.cat([batch_indices(s, 40, 5, 0, 0, 2) for s in range(4)])
    r1 = torch.cat([batch_indices(s, 40, 5, 0, 1, 2) for s in range(4)])
    assert len(set(r0.tolist())) == 20 and not set(r0.tolist()) & set(r1.tolist())
    # a batch larger than the dataset still works
    assert len(batch_indices(0, n=3, batch=10, seed=0, rank=0, world=1)) == 10


def test_sigkill_then_resume_matches_uninterrupted_run(tmp_path, toy_demo_file):
    common = ["train.steps=40", "train.checkpoint_every=10", "train.log_every=10"]
    full = run_cli(
        "train", str(DEBUG), "--dataset", toy_demo_file, "--out", str(tmp_path / "full"), *common
    )
    assert full.returncode == 0, full.stderr
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "diffpolicy",
            "train",
            str(DEBUG),
            "--dataset",
            toy_demo_file,
            "--out",
            str(tmp_path / "cut"),
            *common,
            "train.val_every=1",
        ],  # slow it down a bit
        cwd=ROOT,
        env=CLI_ENV,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.time() + 90
    while time.time() < deadline and not (tmp_path / "cut/checkpoints/step_00000020").exists():
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    steps = [int(p.name[5:]) for p in checkpoint_dirs(tmp_path / "cut")]
    assert steps and max(steps) < 40, steps  # really cut short
    resumed = run_cli("train", "--resume", str(tmp_path / "cut"), "train.val_every=10")
    assert resumed.returncode == 0, resumed.stderr
    a, _ = load_policy(tmp_path / "full", which="raw")
    b, _ = load_policy(tmp_path / "cut", which="raw")
    for (k, x), (_, y) in zip(a.state_dict().items(), b.state_dict().items()):
        torch.testing.assert_close(x, y, rtol=1e-5, atol=1e-6, msg=k)
    ea, _ = load_policy(tmp_path / "full")
    eb, _ = load_policy(tmp_path / "cut")
    for (k, x), (_, y) in zip(ea.state_dict().items(), eb.state_dict().items()):
        torch.testing.assert_close(x, y, rtol=1e-5, atol=1e-6, msg=k)


class _Payload:
    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (os.system, (f"touch {self.path}",))


def test_tampered_training_state_is_refused(tmp_path, toy_demo_file):
    cfg = debug_cfg(toy_demo_file, "train.steps=10")
    run = train(cfg, tmp_path / "run", progress=False)
    marker = tmp_path / "pwned"
    state = checkpoint_dirs(run)[-1] / "train_state.pt"
    with open(state, "wb") as f:
        pickle.dump({"step": 10, "x": _Payload(marker)}, f)
    r = run_cli("train", "--resume", str(run), "train.steps=20")
    assert r.returncode == 2, r.stderr
    assert "refused" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    assert not marker.exists()
    with pytest.raises(CheckpointError, match="refused"):
        from diffpolicy.checkpoint import read_train_state

        read_train_state(state.parent)


def test_config_errors_exit_2_with_one_line(tmp_path, toy_demo_file):
    r = run_cli(
        "train", str(DEBUG), "--dataset", toy_demo_file, "--out", str(tmp_path / "r"), "train.lrr=1"
    )
    assert r.returncode == 2 and "did you mean 'train.lr'" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
    r = run_cli("train", str(DEBUG), "--dataset", str(tmp_path / "missing.hdf5"))
    assert r.returncode == 2 and "not found" in r.stderr
    assert not (tmp_path / "r").exists()


def test_ddp_two_gloo_processes_stay_in_sync(tmp_path, toy_demo_file):
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--nproc_per_node",
            "2",
            "--master_port",
            "29517",
            "-m",
            "diffpolicy",
            "train",
            str(DEBUG),
            "--dataset",
            toy_demo_file,
            "--out",
            str(tmp_path / "ddp"),
            "train.steps=40",
            "train.device=cpu",
            "train.log_every=10",
        ],
        capture_output=True,
        text=True,
        timeout=180,
        cwd=ROOT,
        env=CLI_ENV,
    )
    assert r.returncode == 0, r.stderr[-2000:]
    logs = read_metrics(tmp_path / "ddp")
    losses = [m["loss"] for m in logs if "loss" in m]
    assert losses[-1] < losses[0]
    sync = [m for m in logs if "ddp_ranks_in_sync" in m]
    assert sync and sync[-1]["ddp_ranks_in_sync"] is True and sync[-1]["world_size"] == 2
    assert json.loads((tmp_path / "ddp" / "metrics.jsonl").read_text().splitlines()[0])


def test_resume_takes_key_value_overrides(tmp_path, toy_demo_file):
    """`train --resume RUN train.steps=N` extends a finished run (the override is not a CONFIG)."""
    run = train(debug_cfg(toy_demo_file, "train.steps=10"), tmp_path / "run", progress=False)
    r = run_cli("train", "--resume", str(run), "train.steps=20")
    assert r.returncode == 0, r.stderr
    assert checkpoint_dirs(run)[-1].name == "step_00000020"
    assert load_config(run / "config.yaml").train.steps == 20
