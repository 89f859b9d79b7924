"""Shared helpers of the benchmark scripts: machine description and JSON output."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from diffpolicy.bench import machine  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
LOAD_AT_START = os.getloadavg()[0]  # before the benchmark adds its own load


def load_avg() -> float:
    """1-minute load average: > cores means the numbers were taken on a busy machine."""
    return os.getloadavg()[0]


def write_result(name: str, data: dict) -> Path:
    """benchmarks/results/<name>.json with the machine and load attached."""
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"{name}.json"
    out = {
        "machine": machine(),
        "load_avg_1min_at_start": LOAD_AT_START,
        "load_avg_1min_at_end": load_avg(),
        **data,
    }
    path.write_text(json.dumps(out, indent=2))
    print(f"wrote {path}")
    return path


def train_budget(run: str, trained_on: str | None = None) -> dict:
    """What training a run cost, read from its config.yaml and metrics.jsonl: steps, batch,
    model size, device, `trained_on` (the machine, as the caller names it) and wall minutes."""
    from diffpolicy.checkpoint import load_run_config, read_metrics

    cfg = load_run_config(run)
    sps = [m["samples_per_s"] for m in read_metrics(run) if "samples_per_s" in m]
    minutes = sum(cfg.train.log_every * cfg.train.batch_size / x for x in sps) / 60
    return {
        "run_dir": run,
        "dataset": cfg.data.dataset,
        "down_dims": list(cfg.model.down_dims),
        "steps": cfg.train.steps,
        "batch_size": cfg.train.batch_size,
        "threads": cfg.train.threads,
        "device": cfg.train.device,
        "trained_on": trained_on,
        "train_minutes": round(minutes, 1),
        "mean_steps_per_s": sum(sps) / len(sps) / cfg.train.batch_size if sps else None,
    }
