"""Benchmarks: collection, chunk latency, training throughput, evaluation throughput.

    diffpolicy bench [--quick] [--json FILE] [--only NAME ...]

Every figure is the median of repeated runs after warm-up; results carry the machine, thread
count, torch version and settings, so numbers from different machines are never mixed up.
"""

from __future__ import annotations

import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
TASKS = ("diffpolicy/ReachAround-v0", "diffpolicy/ReachAroundMaze-v0", "diffpolicy/Pick-v0")


def machine() -> dict:
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "torch": torch.__version__,
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "python": platform.python_version(),
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
    }


def bench_collect(quick: bool) -> list[dict]:
    """Expert episodes per second with 1 and 2 workers, per task."""
    from diffpolicy.collect import collect

    n = 20 if quick else 100
    rows = []
    for env_id in TASKS:
        for workers in (1, 2):
            with tempfile.TemporaryDirectory() as d:
                stats = collect(env_id, n, f"{d}/x.hdf5", workers=workers, progress=False)
            rows.append(
                {
                    "env_id": env_id,
                    "workers": workers,
                    "episodes": n,
                    "seconds": stats.seconds,
                    "episodes_per_s": stats.episodes_per_s,
                }
            )
            print(f"collect {env_id} workers={workers}: {stats.episodes_per_s:.1f} ep/s")
    return rows


def _policy(config: str, overrides: tuple[str, ...] = (), dims: dict | None = None):
    from diffpolicy.config import load_config
    from diffpolicy.policies import make_policy

    cfg = load_config(ROOT / "configs" / config, overrides)
    cfg.dims = dims or {"obs_dim": 4, "action_dim": 2, "goal_dim": 2, "num_modes": 2, "lang_dim": 0}
    return make_policy(cfg), cfg


def _obs(cfg, batch: int):
    import torch

    d = cfg.dims
    obs = {"obs": torch.randn(batch, cfg.data.n_obs_steps, d["obs_dim"])}
    if d.get("goal_dim"):
        obs["goal"] = torch.randn(batch, d["goal_dim"])
    return obs


def time_call(fn, repeats: int, warmup: int = 2) -> list[float]:
    """Wall times (ms) of `repeats` calls after `warmup` calls."""
    for _ in range(warmup):
        fn()
    out = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        out.append((time.perf_counter() - t0) * 1e3)
    return out


def bench_latency(quick: bool) -> list[dict]:
    """Action-chunk latency (median, p95) per config, sampler, steps, batch and thread count."""
    import torch

    samplers = [("ddpm", 100), ("ddim", 10), ("ddim", 16), ("dpmpp", 10), ("ddim", 4)]
    configs = [("reach_around.yaml", samplers), ("published_lowdim.yaml", samplers[:2])]
    threads = sorted({1, os.cpu_count() or 1})
    rows = []
    for config, plan in configs:
        policy, cfg = _policy(config)
        policy.eval()
        for n_threads in threads:
            torch.set_num_threads(n_threads)
            for batch in (1, 32):
                for sampler, steps in plan:
                    slow = config.startswith("published") and sampler == "ddpm"
                    reps = 3 if slow or quick else 15
                    if quick and slow:
                        continue
                    obs = _obs(cfg, batch)
                    ms = time_call(
                        lambda: policy.predict_action_chunk(  # noqa: B023
                            obs, sampler=sampler, steps=steps
                        ),
                        reps,
                        warmup=1,
                    )  # noqa: B023
                    row = {
                        "config": config,
                        "threads": n_threads,
                        "batch": batch,
                        "sampler": sampler,
                        "steps": steps,
                        "median_ms": statistics.median(ms),
                        "p95_ms": float(np.percentile(ms, 95)),
                        "repeats": reps,
                    }
                    rows.append(row)
                    print(
                        f"latency {config} t={n_threads} b={batch} {sampler}-{steps}: "
                        f"{row['median_ms']:.2f} ms"
                    )
    return rows


def bench_train(quick: bool) -> list[dict]:
    """Training throughput (samples/s) of one optimizer step, per config and thread count."""
    import torch

    rows = []
    for config in ("reach_around.yaml", "published_lowdim.yaml"):
        policy, cfg = _policy(config)
        opt = torch.optim.AdamW(policy.parameters(), lr=1e-4)
        B = cfg.train.batch_size
        batch = _obs(cfg, B)
        batch["action"] = torch.randn(B, cfg.data.horizon, 2)
        batch["action_mask"] = torch.ones(B, cfg.data.horizon, dtype=torch.bool)

        def step():
            loss = policy.compute_loss(batch)  # noqa: B023
            opt.zero_grad(set_to_none=True)  # noqa: B023
            loss.backward()
            opt.step()  # noqa: B023

        for n_threads in sorted({1, os.cpu_count() or 1}):
            torch.set_num_threads(n_threads)
            ms = time_call(step, 2 if quick else 5, warmup=1)
            med = statistics.median(ms)
            rows.append(
                {
                    "config": config,
                    "threads": n_threads,
                    "batch": B,
                    "step_ms": med,
                    "samples_per_s": B / med * 1e3,
                }
            )
            print(f"train {config} t={n_threads} b={B}: {B / med * 1e3:.0f} samples/s")
    return rows


def run_bench(quick: bool = False, only: tuple[str, ...] = ()) -> dict:
    """Run the selected benchmarks; returns the JSON-ready result."""
    parts = {"collect": bench_collect, "latency": bench_latency, "train": bench_train}
    result = {"machine": machine(), "quick": quick}
    for name, fn in parts.items():
        if only and name not in only:
            continue
        result[name] = fn(quick)
    return result
