"""Run directories and checkpoints: data only, never pickled objects.

    RUN/config.yaml                         resolved config (with dims), YAML
    RUN/metrics.jsonl                       one JSON object per log step (and a process's time_s)
    RUN/checkpoints/step_<N>/model.safetensors   EMA ("ema.*") and raw ("raw.*") weights,
                                            normalizer statistics included (buffers)
    RUN/checkpoints/step_<N>/train_state.pt optimizer, RNG states, step: plain tensors and
                                            numbers, read with torch.load(weights_only=True)

A checkpoint directory is written under a temporary name and renamed into place, so it is either
complete or absent; the newest complete one wins and older ones beyond `keep` are removed.
"""

from __future__ import annotations

import json
import os
import pickle
import shutil
import tempfile
import warnings
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from diffpolicy.config import Config, ConfigError, load_config
from diffpolicy.errors import CheckpointError
from diffpolicy.files import write_error

FORMAT = "diffpolicy-1"


def checkpoint_dirs(run_dir: str | Path) -> list[Path]:
    """Complete checkpoint directories of a run, oldest first."""
    root = Path(run_dir) / "checkpoints"
    if not root.is_dir():
        return []
    dirs = [
        p
        for p in root.iterdir()
        if p.is_dir() and p.name.startswith("step_") and p.name[5:].isdigit()
    ]
    return sorted(dirs, key=lambda p: int(p.name[5:]))


def save_checkpoint(
    run_dir: str | Path,
    step: int,
    cfg: Config,
    raw: nn.Module,
    ema: nn.Module,
    train_state: dict,
    keep: int = 2,
) -> Path:
    """Write checkpoints/step_<step>/ atomically; return its path."""
    root = Path(run_dir) / "checkpoints"
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"step_{step:08d}"
    for stale in root.glob(".step_*"):  # left by a writer killed mid-checkpoint (one per run)
        shutil.rmtree(stale, ignore_errors=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".step_{step:08d}.", dir=root))
    try:
        tensors = {f"ema.{k}": v.detach().cpu().contiguous() for k, v in ema.state_dict().items()}
        tensors.update(
            {f"raw.{k}": v.detach().cpu().contiguous() for k, v in raw.state_dict().items()}
        )
        meta = {"format": FORMAT, "step": str(step), "policy_type": cfg.policy.type}
        try:  # a full disk: these raise their own types, not OSError
            save_file(tensors, tmp / "model.safetensors", metadata=meta)
            torch.save({**train_state, "step": step}, tmp / "train_state.pt")
        except (SafetensorError, RuntimeError) as e:
            failure = write_error(e, final)
            if failure is None:
                raise
            raise failure from None
        for f in tmp.iterdir():  # make the data durable before the rename publishes it
            with open(f, "rb") as fh:
                os.fsync(fh.fileno())
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    for old in checkpoint_dirs(run_dir)[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def read_weights(ckpt_dir: Path, which: str) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Read `which` ("ema" | "raw") weights and the metadata of a checkpoint directory."""
    path = ckpt_dir / "model.safetensors"
    if not path.is_file():
        raise CheckpointError(f"{path} is missing")
    try:
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
        tensors = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(f"{path} is not a valid safetensors file: {e}") from None
    if meta.get("format") != FORMAT:
        raise CheckpointError(
            f"{path} was not written by diffpolicy (format {meta.get('format')!r})"
        )
    prefix = f"{which}."
    state = {k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)}
    if not state:
        raise CheckpointError(f"{path} holds no '{which}' weights")
    return state, meta


def read_train_state(ckpt_dir: Path) -> dict:
    """Load train_state.pt with weights_only=True: a crafted pickle is refused, never run."""
    path = ckpt_dir / "train_state.pt"
    if not path.is_file():
        raise CheckpointError(f"{path} is missing")
    try:
        with warnings.catch_warnings():  # torch warns about foreign pickle protocols
            warnings.simplefilter("ignore")
            state = torch.load(path, map_location="cpu", weights_only=True)
    except (
        pickle.UnpicklingError,
        RuntimeError,
        EOFError,
        OSError,
        AttributeError,
        ValueError,
    ) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CheckpointError(
            f"{path} refused: not a plain training-state file ({first[:200]})"
        ) from None
    if not isinstance(state, dict) or "step" not in state:
        raise CheckpointError(f"{path} is not a diffpolicy training state")
    return state


def load_state_into(module: nn.Module, state: dict[str, torch.Tensor], where: str) -> None:
    """load_state_dict with one-line errors for missing keys and shape mismatches."""
    own = module.state_dict()
    missing = sorted(set(own) - set(state))
    extra = sorted(set(state) - set(own))
    if missing or extra:
        raise CheckpointError(
            f"{where}: weights do not match the config "
            f"(missing {missing[:3]}, unexpected {extra[:3]})"
        )
    for k, v in state.items():
        if own[k].shape != v.shape:
            raise CheckpointError(
                f"{where}: '{k}' has shape {tuple(v.shape)}, the config "
                f"builds {tuple(own[k].shape)}"
            )
    module.load_state_dict(state)


def load_run_config(run_dir: str | Path, overrides: tuple[str, ...] = ()) -> Config:
    """The resolved config of a run directory (dims included)."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise CheckpointError(f"run directory not found: {run_dir}")
    path = run_dir / "config.yaml"
    if not path.is_file():
        raise CheckpointError(f"{run_dir} is not a run directory (no config.yaml)")
    try:
        cfg = load_config(path, overrides)
    except ConfigError as e:
        raise CheckpointError(f"{path}: {e}") from None
    for key in ("obs_dim", "action_dim"):
        if cfg.dims.get(key, 0) <= 0:
            raise CheckpointError(f"{path} lacks dims.{key}: not a trained run's config")
    return cfg


def load_policy(
    run_dir: str | Path,
    which: str = "ema",
    device: str | torch.device = "cpu",
    cfg: Config | None = None,
):
    """Rebuild a trained policy from config + newest checkpoint, without the trainer.

    `cfg`: the run's config with evaluation-time changes (sampling, control); default: the
    run's config.yaml. Returns (policy in eval mode on `device`, Config).
    """
    from diffpolicy.policies import make_policy

    cfg = load_run_config(run_dir) if cfg is None else cfg
    dirs = checkpoint_dirs(run_dir)
    if not dirs:
        raise CheckpointError(f"{run_dir} has no checkpoint (checkpoints/step_*/)")
    state, meta = read_weights(dirs[-1], which)
    if meta.get("policy_type") != cfg.policy.type:
        raise CheckpointError(
            f"{dirs[-1]} holds a '{meta.get('policy_type')}' policy, "
            f"config.yaml says '{cfg.policy.type}'"
        )
    policy = make_policy(cfg)
    load_state_into(policy, state, str(dirs[-1]))
    return policy.to(device).eval(), cfg


def read_metrics(run_dir: str | Path) -> list[dict]:
    """Parsed lines of RUN/metrics.jsonl (malformed lines skipped)."""
    path = Path(run_dir) / "metrics.jsonl"
    if not path.is_file():
        return []
    out = []
    for line in path.read_text(errors="replace").splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(record, dict):
            out.append(record)
    return out
