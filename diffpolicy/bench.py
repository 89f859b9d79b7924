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
    load = os.getloadavg()
    shared = load[0] > 0.5 * (os.cpu_count() or 1)
    return {
        "load_avg": [round(x, 2) for x in load],
        "note": (
            f"shared machine (1-min load {load[0]:.1f} on {os.cpu_count()} cores): wall times "
            "are inflated; cpu_median_ms (thread CPU time) approximates an idle machine"
        )
        if shared
        else "idle machine",
        "cpu": cpu,
        "cores": os.cpu_count(),
        "torch": torch.__version__,
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "python": platform.python_version(),
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
    }


def bench_collect(quick: bool, reach_episodes: int = 200, other_episodes: int = 50) -> list[dict]:
    """Expert episodes per second with 1 and 2 workers, per task (200 ReachAround demos: the
    foundation target is <= 60 s with 2 workers)."""
    from diffpolicy.collect import collect

    rows = []
    for env_id in TASKS:
        n = reach_episodes if env_id.endswith("ReachAround-v0") else other_episodes
        n = min(n, 20) if quick else n
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


def time_call(fn, repeats: int, warmup: int = 2) -> tuple[list[float], list[float]]:
    """Wall and thread-CPU times (ms) of `repeats` calls after `warmup` calls.

    On a shared machine the wall time includes time spent waiting for a core; the CPU time of
    the calling thread does not (for one-thread work it is close to the idle-machine latency).
    """
    for _ in range(warmup):
        fn()
    wall, cpu = [], []
    for _ in range(repeats):
        t0, c0 = time.perf_counter(), time.thread_time()
        fn()
        cpu.append((time.thread_time() - c0) * 1e3)
        wall.append((time.perf_counter() - t0) * 1e3)
    return wall, cpu


# the fast setting: DPM-Solver++(2M) with 8 steps keeps ReachAround-v0 success >= 0.95,
# entropy >= 0.95 and interpolation <= 2% on two 200-episode evaluation seeds; 6 and 7 steps
# pass on one seed each (0.97 / 0.96) and miss on the other (0.94); DDIM-4/5 and DPM++-4/5 miss
FAST = ("dpmpp", 8)
SAMPLERS = (("ddpm", 100), ("ddim", 10), ("ddim", 16), ("dpmpp", 10), FAST, ("dpmpp", 6))
# few-step students of the default policy (diffpolicy distill): one or two UNet calls per chunk
STUDENT_STEPS = (1, 2)


def _latency_row(policy, cfg, config, n_threads, batch, sampler, steps, reps, jit=True) -> dict:
    import torch

    torch.set_num_threads(n_threads)
    default_jit = policy.jit
    policy.jit = jit and default_jit  # the policy's own choice unless eager is asked for
    obs = _obs(cfg, batch)
    wall, cpu = time_call(
        lambda: policy.predict_action_chunk(obs, sampler=sampler, steps=steps), reps, warmup=1
    )
    jit, policy.jit = policy.jit, default_jit
    row = {
        "config": config,
        "threads": n_threads,
        "batch": batch,
        "sampler": sampler,
        "steps": steps,
        "path": "jit" if jit else "eager",
        "median_ms": statistics.median(wall),
        "p95_ms": float(np.percentile(wall, 95)),
        "cpu_median_ms": statistics.median(cpu) if n_threads == 1 else None,
        "repeats": reps,
    }
    print(
        f"latency {config} t={n_threads} b={batch} {sampler}-{steps} {row['path']}: "
        f"{row['median_ms']:.2f} ms (p95 {row['p95_ms']:.2f}, cpu {row['cpu_median_ms']})",
        flush=True,
    )
    return row


def matmul_gflops() -> float:
    """One-thread fp32 matmul speed now (idle on this kind of machine: ~90 GFLOP/s); the ratio
    tells how much a shared machine slows compute even in CPU time (SMT, caches)."""
    import torch

    torch.set_num_threads(1)
    x = torch.randn(256, 256)
    _, cpu = time_call(lambda: x @ x, 200, warmup=20)
    return 2 * 256**3 / statistics.median(cpu) / 1e6


def bench_latency(quick: bool) -> dict:
    """Action-chunk latency (median, p95) per config, sampler, steps, batch and thread count.

    Default config: every sampler at batch 1 and 32, 1 and all threads, plus the eager (no
    TorchScript) body at batch 1 for an in-run ratio. A distilled student of the default
    config (config "student": x0 prediction, trailing DDIM) with 1 and 2 steps. Published
    config: DDPM-100 as published (batch 1), DDIM-10 and the fast setting.
    """
    threads = sorted({1, os.cpu_count() or 1})
    reps = 5 if quick else 21
    gflops_before = matmul_gflops()
    rows = []
    policy, cfg = _policy("reach_around.yaml")
    policy.eval()
    for n_threads in threads:
        for batch in (1, 32):
            for sampler, steps in SAMPLERS:
                r = 3 if sampler == "ddpm" and (quick or batch > 1) else reps
                r = min(r, 7) if batch > 1 else r
                if n_threads > 1 and sampler == "ddpm":
                    continue  # 2 threads on a shared 2-core machine: minutes per row
                r = min(r, 3) if n_threads > 1 else r
                rows.append(
                    _latency_row(
                        policy, cfg, "reach_around.yaml", n_threads, batch, sampler, steps, r
                    )
                )
    for sampler, steps in (("ddim", 10), FAST):
        rows.append(
            _latency_row(policy, cfg, "reach_around.yaml", 1, 1, sampler, steps, reps, jit=False)
        )
    from diffpolicy.distill import STUDENT_POLICY

    student, cfg = _policy(
        "reach_around.yaml", tuple(f"policy.{k}={v}" for k, v in STUDENT_POLICY.items())
    )
    student.eval()
    for n_threads in threads:
        for batch in (1, 32):
            for steps in STUDENT_STEPS:
                r = reps if n_threads == 1 else 7
                rows.append(
                    _latency_row(student, cfg, "student", n_threads, batch, "ddim", steps, r)
                )
    policy, cfg = _policy("published_lowdim.yaml")
    policy.eval()
    for n_threads in threads:
        if not quick and n_threads == 1:  # ~10 s per call; 2 threads on a shared machine: x5
            rows.append(
                _latency_row(policy, cfg, "published_lowdim.yaml", n_threads, 1, "ddpm", 100, 2)
            )
        for batch in (1,):  # batch 32 of the 65.8M model: minutes per row on 2 cores
            for sampler, steps in (("ddim", 10), FAST):
                rows.append(
                    _latency_row(
                        policy,
                        cfg,
                        "published_lowdim.yaml",
                        n_threads,
                        batch,
                        sampler,
                        steps,
                        3 if batch > 1 or n_threads > 1 else 5,
                    )
                )

    def find(config, sampler, steps, path=None):
        for r in rows:
            key = (r["config"], r["threads"], r["batch"], r["sampler"], r["steps"])
            if key == (config, 1, 1, sampler, steps) and path in (None, r["path"]):
                return r
        return None

    fast = find("reach_around.yaml", *FAST)
    students = {k: find("student", "ddim", k) for k in STUDENT_STEPS}
    published = find("published_lowdim.yaml", "ddpm", 100)
    gflops = (gflops_before + matmul_gflops()) / 2
    summary = {
        "fast_setting": f"{FAST[0]}-{FAST[1]}",
        "fast_default_b1_t1": fast,
        **{f"student_{k}step_b1_t1": row for k, row in students.items()},
        "matmul_gflops_1thread": gflops,
        # estimate only: CPU time scaled by the matmul slowdown against an idle 90 GFLOP/s
        "fast_default_b1_t1_idle_estimate_ms": fast["cpu_median_ms"] * gflops / 90.0,
    }
    if published:
        summary["published_ddpm100_b1_t1"] = published
        for name, row in (("", fast), *((f"student_{k}step_", r) for k, r in students.items())):
            summary[f"{name}speedup_wall"] = published["median_ms"] / row["median_ms"]
            summary[f"{name}speedup_cpu"] = published["cpu_median_ms"] / row["cpu_median_ms"]
    for sampler, steps in (("ddim", 10), FAST):
        eager = find("reach_around.yaml", sampler, steps, "eager")
        jit = find("reach_around.yaml", sampler, steps, "jit")
        if eager is None or jit is None:
            continue
        summary[f"jit_speedup_{sampler}{steps}_cpu"] = eager["cpu_median_ms"] / jit["cpu_median_ms"]
    print("latency summary:", {k: v for k, v in summary.items() if not isinstance(v, dict)})
    return {"rows": rows, "summary": summary}


def bench_train(quick: bool) -> list[dict]:
    """Training throughput (samples/s) per config and thread count, and the share of step time
    of each part of diffpolicy.train's loop (batch gather, forward+backward, clip, AdamW, EMA),
    on in-RAM synthetic windows."""
    import copy

    import torch

    from diffpolicy.train import batch_indices, ema_decay, take

    rows = []
    for config in ("reach_around.yaml", "published_lowdim.yaml"):
        policy, cfg = _policy(config)
        ema = copy.deepcopy(policy).requires_grad_(False).eval()
        opt = torch.optim.AdamW(policy.parameters(), lr=1e-4)
        B, Tp, N = cfg.train.batch_size, cfg.data.horizon, 20_000
        data = _obs(cfg, N)
        data["action"] = torch.randn(N, Tp, 2)
        data["action_mask"] = torch.ones(N, Tp, dtype=torch.bool)
        parts = {"data": 0.0, "forward_backward": 0.0, "clip": 0.0, "optimizer": 0.0, "ema": 0.0}
        counter = [0]

        def step():
            t = [time.perf_counter()]
            batch = take(data, batch_indices(counter[0], N, B, 0, 0, 1))  # noqa: B023
            t.append(time.perf_counter())
            loss = policy.compute_loss(batch)  # noqa: B023
            opt.zero_grad(set_to_none=True)  # noqa: B023
            loss.backward()
            t.append(time.perf_counter())
            torch.nn.utils.clip_grad_norm_(policy.parameters(), 1.0)  # noqa: B023
            t.append(time.perf_counter())
            opt.step()  # noqa: B023
            t.append(time.perf_counter())
            with torch.no_grad():
                d = ema_decay(counter[0], cfg)  # noqa: B023
                torch._foreach_lerp_(list(ema.parameters()), list(policy.parameters()), 1 - d)  # noqa: B023
            t.append(time.perf_counter())
            for k, a, b in zip(parts, t, t[1:]):  # noqa: B023
                parts[k] += b - a  # noqa: B023
            counter[0] += 1  # noqa: B023

        for n_threads in sorted({1, os.cpu_count() or 1}):
            torch.set_num_threads(n_threads)
            step()  # warm-up
            for k in parts:
                parts[k] = 0.0
            ms, _ = time_call(step, 2 if quick else 3, warmup=0)
            med = statistics.median(ms)
            total = sum(parts.values())
            rows.append(
                {
                    "config": config,
                    "threads": n_threads,
                    "batch": B,
                    "step_ms": med,
                    "samples_per_s": B / med * 1e3,
                    "share": {k: round(v / total, 4) for k, v in parts.items()},
                    "logging": "loss.item() every log_every steps only: not timed",
                }
            )
            print(
                f"train {config} t={n_threads} b={B}: {B / med * 1e3:.1f} samples/s "
                f"shares {rows[-1]['share']}",
                flush=True,
            )
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
