"""The CUDA path on a GPU: CUDA-graph sampling (exactness and latency) and fp32 / bf16 training.

    python benchmarks/gpu.py [--quick]        -> benchmarks/results/gpu.json
    python benchmarks/gpu.py --inductor       -> benchmarks/results/gpu_inductor.json
    python benchmarks/gpu.py --dry-run        (CPU, tiny, writes nothing without --results)

Sampling: each (config, sampler, steps, batch) is timed eagerly (`Sampling(compiled=False)`)
and on the compiled path (a replayed CUDA graph, diffpolicy/fastpath.py), after checking that
the graph returns the eager chunk for the same noise. Rows: the default ReachAround policy
(DPM-Solver++ 8), its 2-step student (ddim, sample prediction, trailing spacing), and the
published 65.8M config (DDPM-100 eager, which has per-step noise and is never captured, and
DPM-Solver++ 8). bf16 autocast of sampling is gone from the library (it measured slower), so
its rows are too.

With --inductor: the batch-1 chunk latency of the 2-step student and the DPM++-8 teacher when
the UNet body is compiled with torch.compile (inductor) before the CUDA graph is captured, next
to the graph of eager kernels, and the replay alone. The library keeps its graph private, so
"replay alone" times a graph this script captures with public calls: the same eager
`policy.fast.sample` (FiLM table and every step) that the library captures, from fixed buffers.

Training: samples/s of the library's training step (`diffpolicy.bench.LibraryTrainStep`:
batch gather, `diffpolicy.train.train_step` with `make_optimizer`'s fused AdamW) in fp32 (TF32)
and under bf16 autocast, per config and batch size, on synthetic windows on the GPU.

--dry-run runs every code path but the CUDA-only ones (graph capture, inductor) on the CPU with
one repeat, tiny batches and the small config only, to check the script without a GPU.
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import time
from functools import partial

import numpy as np
import torch

from diffpolicy.bench import (
    LibraryTrainStep,
    policy_from_config,
    random_obs,
    sampling_path,
    student_overrides,
    synthetic_windows,
    time_call,
    write_result,
)
from diffpolicy.config import Sampling
from diffpolicy.policies.condition import global_condition

SAMPLING = (
    ("reach_around.yaml", False, "dpmpp", 8),
    ("reach_around.yaml", True, "ddim", 2),  # True: the student's config
    ("published_lowdim.yaml", False, "dpmpp", 8),
    ("published_lowdim.yaml", False, "ddpm", 100),
)
CONFIGS = ("reach_around.yaml", "published_lowdim.yaml")


def median_ms(fn, repeats: int, warmup: int, device: torch.device) -> float:
    sync = torch.cuda.synchronize if device.type == "cuda" else None
    return statistics.median(time_call(fn, repeats, warmup, sync)[0])


def chunk(policy, obs: dict, sampling: Sampling, seed: int | None = None) -> torch.Tensor:
    """policy.predict_action_chunk with its noise drawn from `seed` (fresh noise if None)."""
    device = obs["obs"].device
    g = None if seed is None else torch.Generator(device).manual_seed(seed)
    return policy.predict_action_chunk(obs, sampling, generator=g)


def bench_sampling(batches, repeats: int, warmup: int, device, configs=CONFIGS) -> list[dict]:
    rows = []
    for config, student, sampler, steps in [s for s in SAMPLING if s[0] in configs]:
        policy, cfg = policy_from_config(config, student_overrides() if student else ())
        policy = policy.to(device).eval()
        compiled = Sampling(sampler, steps)
        eager = dataclasses.replace(compiled, compiled=False)
        for batch in batches:
            obs = random_obs(cfg, batch, device)
            row = {"config": config, "sampler": sampler, "steps": steps, "batch": batch}
            ref = chunk(policy, obs, eager, 0)  # the same noise for the exactness check
            row["eager_ms"] = median_ms(partial(chunk, policy, obs, eager), repeats, warmup, device)
            if sampler != "ddpm":
                row["compiled_path"] = sampling_path(policy, compiled, device)
                diff = (chunk(policy, obs, compiled, 0) - ref).abs().max()
                row["graph_max_abs_diff_vs_eager"] = float(diff)
                fn = partial(chunk, policy, obs, compiled)
                row["graph_ms"] = median_ms(fn, repeats, warmup, device)
            print("sampling", row, flush=True)
            rows.append(row)
    return rows


def bench_train(batches, repeats: int, warmup: int, device, configs=CONFIGS) -> list[dict]:
    rows = []
    for config in configs:
        for batch in batches:
            for bf16 in (False, True):
                torch.manual_seed(0)
                policy, cfg = policy_from_config(config, device=device)
                autocast = torch.autocast(device.type, torch.bfloat16) if bf16 else None
                data = synthetic_windows(cfg, 20_000, device)
                step = LibraryTrainStep(policy, cfg, data, batch, autocast)
                ms = median_ms(step, repeats, warmup + 2, device)
                row = {
                    "config": config,
                    "batch": batch,
                    "bf16_autocast": bf16,
                    "step_ms": ms,
                    "samples_per_s": batch / ms * 1e3,
                }
                print("train", row, flush=True)
                rows.append(row)
    return rows


def replay_only_ms(policy, obs: dict, sampling: Sampling, repeats: int) -> float:
    """Replay alone of a CUDA graph of the eager `policy.fast.sample` from fixed buffers: the
    call the library captures (see the module docstring), captured here with public calls."""
    eager = dataclasses.replace(sampling, compiled=False)
    with torch.inference_mode():
        cond = global_condition(policy, obs)
        x_T = torch.randn(len(cond), policy.horizon, policy.action_dim, device=cond.device)
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):  # warm-up outside the capture (allocator, kernels, plans)
            for _ in range(2):
                policy.fast.sample(cond, x_T, eager)
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            policy.fast.sample(cond, x_T, eager)
    return median_ms(graph.replay, repeats, 10, cond.device)


def graph_timings(policy, obs: dict, sampling: Sampling, repeats: int, prefix: str, row: dict):
    """row[PREFIX graph_ms, graph_p95_ms, graph_replay_only_ms] of the call and of a replay."""
    wall, _ = time_call(partial(chunk, policy, obs, sampling), repeats, 10, torch.cuda.synchronize)
    row[f"{prefix}graph_ms"] = statistics.median(wall)
    row[f"{prefix}graph_p95_ms"] = float(np.percentile(wall, 95))
    row[f"{prefix}graph_replay_only_ms"] = replay_only_ms(policy, obs, sampling, repeats)


def bench_inductor(repeats: int = 200) -> dict:
    out = {}
    device = torch.device("cuda")
    for name, student, sampling in (
        ("student_ddim2", True, Sampling("ddim", 2)),
        ("teacher_dpmpp8", False, Sampling("dpmpp", 8)),
    ):
        overrides = student_overrides() if student else ()
        policy, cfg = policy_from_config("reach_around.yaml", overrides, device=device)
        policy.eval()
        obs = random_obs(cfg, 1, device)
        ref, row = chunk(policy, obs, sampling, 0), {}
        graph_timings(policy, obs, sampling, repeats, "", row)
        t0 = time.perf_counter()
        policy.model.forward_film = torch.compile(policy.model.forward_film, dynamic=False)
        policy.fast.clear()  # the next call captures a graph of the compiled body
        row["inductor_max_abs_diff"] = float((chunk(policy, obs, sampling, 0) - ref).abs().max())
        row["compile_s"] = time.perf_counter() - t0
        graph_timings(policy, obs, sampling, repeats, "inductor_", row)
        print(name, row, flush=True)
        out[name] = row
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer repeats and batch sizes")
    ap.add_argument("--inductor", action="store_true", help="only the torch.compile comparison")
    ap.add_argument("--dry-run", action="store_true", help="CPU, one repeat, tiny batches")
    ap.add_argument("--results", help="directory of the results file (default: benchmarks/results)")
    args = ap.parse_args()
    if not args.dry_run and not torch.cuda.is_available():
        raise SystemExit("benchmarks/gpu.py needs a CUDA device (or --dry-run)")
    device = torch.device("cpu" if args.dry_run else "cuda")
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    if args.inductor:
        if args.dry_run:
            raise SystemExit("--inductor captures CUDA graphs: it has no dry run")
        write_result("gpu_inductor", {"rows": bench_inductor()}, args.results)
        return
    reps, warmup = (1, 1) if args.dry_run else (5, 3) if args.quick else (30, 3)
    batches = (1,) if args.dry_run else (1, 32) if args.quick else (1, 32, 256)
    configs = CONFIGS[:1] if args.dry_run else CONFIGS  # the published 65.8M: minutes on CPU
    sampling = bench_sampling(batches, reps, warmup, device, configs)
    train_batches = (8,) if args.dry_run else (256,) if args.quick else (256, 1024)
    train = bench_train(train_batches, reps, warmup, device, configs)
    result = {
        "settings": {"quick": args.quick, "dry_run": args.dry_run, "repeats": reps, "tf32": True},
        "sampling": sampling,
        "train": train,
    }
    if not args.dry_run or args.results:
        write_result("gpu_dry_run" if args.dry_run else "gpu", result, args.results)


if __name__ == "__main__":
    main()
