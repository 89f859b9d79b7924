"""Run directories (diffpolicy.checkpoint): round trips, damaged or mismatched checkpoints
refused with one line, and nothing in a run directory unpickled or evaluated: a crafted payload
that would create a file when unpickled (or YAML-constructed) is planted in every file the
loaders read; each is refused or read as plain data, and the file is never created."""

from __future__ import annotations

import pickle
import shutil
from pathlib import Path

import pytest
import torch
from helpers import Payload, debug_cfg, one_line_exit_2, payload_bytes, run_cli

from diffpolicy.checkpoint import checkpoint_dirs, load_policy, load_run_config, read_metrics
from diffpolicy.cli import train_from_cli
from diffpolicy.errors import CheckpointError, UserError
from diffpolicy.train import train


def test_checkpoint_roundtrip_gives_identical_predictions(tmp_path, toy_demo_file, monkeypatch):
    """The loaded policy is the trained one: the EMA weights as they were in memory when the
    last checkpoint was written (recorded by wrapping the trainer's save_checkpoint), not just
    whatever the file holds (two loads of one file agree even when the file is wrong)."""
    import diffpolicy.train as train_module
    from diffpolicy.policies import make_policy

    in_memory = []  # (step, ema state, raw state) per checkpoint, copied at the call
    real_save = train_module.save_checkpoint

    def recording_save(run_dir, step, cfg, raw, ema, train_state, **kw):
        copy = lambda m: {k: v.detach().clone() for k, v in m.state_dict().items()}  # noqa: E731
        in_memory.append((step, copy(ema), copy(raw)))
        return real_save(run_dir, step, cfg, raw, ema, train_state, **kw)

    monkeypatch.setattr(train_module, "save_checkpoint", recording_save)
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

    # the final checkpoint was written at step 10 with the trainer's EMA and raw modules
    step, ema_state, raw_state = in_memory[-1]
    assert step == 10 and [s for s, _, _ in in_memory] == [10]
    # EMA and raw really differ after 10 steps (decay 0.82 at step 9), so loading the wrong
    # one, or a lossy copy of the right one, cannot pass the comparisons below
    assert any(not torch.equal(ema_state[k], raw_state[k]) for k in ema_state)
    loaded = policy.state_dict()
    assert set(loaded) == set(ema_state)
    for k, v in ema_state.items():
        torch.testing.assert_close(loaded[k], v, rtol=0, atol=0, msg=lambda m, k=k: f"{k}: {m}")
    trained = make_policy(cfg2)
    trained.load_state_dict(ema_state)
    trained.eval()
    c = trained.predict_action_chunk(obs, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(a, c, rtol=0, atol=0)  # the in-memory EMA policy, bit for bit
    raw_policy = make_policy(cfg2)
    raw_policy.load_state_dict(raw_state)
    raw_policy.eval()
    d = raw_policy.predict_action_chunk(obs, generator=torch.Generator().manual_seed(0))
    assert not torch.allclose(a, d)  # and not the raw weights' policy
    raw_loaded, _ = load_policy(run, which="raw")
    for k, v in raw_state.items():
        got = raw_loaded.state_dict()[k]
        torch.testing.assert_close(got, v, rtol=0, atol=0, msg=lambda m, k=k: f"raw {k}: {m}")


def test_tampered_training_state_is_refused(tmp_path, toy_demo_file):
    cfg = debug_cfg(toy_demo_file, "train.steps=10")
    run = train(cfg, tmp_path / "run", progress=False)
    marker = tmp_path / "pwned"
    state = checkpoint_dirs(run)[-1] / "train_state.pt"
    with open(state, "wb") as f:
        pickle.dump({"step": 10, "x": Payload(marker)}, f)
    r = run_cli("train", "--resume", str(run), "train.steps=20")
    assert r.returncode == 2, r.stderr
    assert "refused" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    assert not marker.exists()
    with pytest.raises(CheckpointError, match="refused"):
        from diffpolicy.checkpoint import read_train_state

        read_train_state(state.parent)


# ------------------------------------------------------------------ damaged run directories


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


# ---------------------------------------------------------------------- planted payloads


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
def test_run_directory_payloads_are_refused_never_run(name, toy_run, tmp_path, no_unpickling):
    dst, marker = plant(toy_run, tmp_path, name, PLANTS[name])
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
