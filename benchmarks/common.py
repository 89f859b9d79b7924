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
