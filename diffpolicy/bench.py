"""Benchmarks: `diffpolicy bench` and the shared pieces of benchmarks/*.py and scripts/*.py.

    diffpolicy bench [--quick] [--json FILE] [--only NAME ...]

- `write_result(name, data)`: benchmarks/results/NAME.json with the machine (`machine()`), its
  load, the command line, the git revision and the torch version attached, so numbers from
  different machines or revisions are never mixed up; `read_result(name)` reads one back.
- `time_call(fn, repeats)`: the one timing helper (wall and thread-CPU milliseconds).
- `policy_from_config`, `random_obs`, `synthetic_windows`: a policy built from a config with
  synthetic dims, and inputs for it, without a dataset.
- `latency_row`: times the library's sampling call, `predict_action_chunk(obs, Sampling(...))`
  (`compiled=False` for the eager rows). `LibraryTrainStep`: one step of the library's own
  training loop (`diffpolicy.train.train_step` with `make_optimizer`), with the batch gather
  timed apart from the step.
- `train_budget(run)`: what training a run cost, from its config.yaml and metrics.jsonl.

Every figure is the median of repeated runs after warm-up.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import os
import platform
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "configs"
RESULTS = ROOT / "benchmarks" / "results"
TASKS = ("diffpolicy/ReachAround-v0", "diffpolicy/ReachAroundMaze-v0", "diffpolicy/Pick-v0")
DIMS = {"obs_dim": 4, "action_dim": 2, "goal_dim": 2, "num_modes": 2, "lang_dim": 0}
"""Synthetic dims of a ReachAround-shaped policy (x, y, vx, vy observation, (x, y) goal)."""
LOAD_AT_START = os.getloadavg()[0]  # when a script starts, before it adds its own load


# ------------------------------------------------------------------------------ results files


def machine() -> dict:
    """CPU, cores, load, torch / CUDA / Python versions and the date, with a note when the
    machine was shared (wall times inflated)."""
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


def git_revision() -> str | None:
    """HEAD of the checkout this package runs from, "+dirty" when tracked files differ."""
    try:
        git = ["git", "-C", str(ROOT)]
        rev = subprocess.run([*git, "rev-parse", "HEAD"], capture_output=True, text=True)
        status = subprocess.run(
            [*git, "status", "--porcelain", "--untracked-files=no"], capture_output=True, text=True
        )
    except OSError:
        return None
    if rev.returncode != 0:
        return None
    return rev.stdout.strip() + ("+dirty" if status.stdout.strip() else "")


def command_line() -> str:
    """The command that is running, as a reader would type it in the repository root."""
    argv0 = Path(sys.argv[0])
    if argv0.name in ("__main__.py", "diffpolicy"):
        head = ["diffpolicy"]
    else:
        try:
            head = ["python", str(argv0.resolve().relative_to(ROOT))]
        except ValueError:
            head = ["python", str(argv0)]
    return shlex.join(head + sys.argv[1:])


def run_cli(*args: str) -> tuple[str, float]:
    """(stdout, wall seconds) of `diffpolicy ARGS` in a fresh process from the repository root;
    a failure ends the benchmark with the command and the end of its stderr."""
    t = time.perf_counter()
    p = subprocess.run([sys.executable, "-m", "diffpolicy", *args], cwd=ROOT, text=True,
                       capture_output=True)  # fmt: skip
    if p.returncode != 0:
        raise SystemExit(f"diffpolicy {' '.join(args)} failed:\n{p.stderr[-2000:]}")
    return p.stdout, time.perf_counter() - t


def result_path(name: str | Path, results_dir: str | Path | None = None) -> Path:
    """RESULTS_DIR/NAME.json (default benchmarks/results/); a Path, or a name with a "/" or
    ending in ".json", is a file path, used as it is."""
    if isinstance(name, Path) or "/" in name or name.endswith(".json"):
        return Path(name)
    return Path(results_dir or RESULTS) / f"{name}.json"


def read_result(name: str | Path, results_dir: str | Path | None = None) -> dict:
    """The results file `name` (see `result_path`), or {} when there is none."""
    path = result_path(name, results_dir)
    return json.loads(path.read_text()) if path.is_file() else {}


def write_result(name: str | Path, data: dict, results_dir: str | Path | None = None) -> Path:
    """Write `data` to the results file `name` (see `result_path`), atomically, with the
    machine, the load at start and end, the command line, the git revision and the torch
    version attached (these replace any older ones in `data`). Returns the path."""
    import torch

    from diffpolicy.files import write_json

    path = result_path(name, results_dir)
    attached = {
        "machine": machine(),
        "load_avg_1min_at_start": LOAD_AT_START,
        "load_avg_1min_at_end": os.getloadavg()[0],
        "command": command_line(),
        "git_revision": git_revision(),
        "torch": torch.__version__,
    }
    write_json(path, attached | {k: v for k, v in data.items() if k not in attached})
    print(f"wrote {path}")
    return path


def markdown_table(header: list[str], rows: list[list]) -> str:
    """A table in the README's markdown layout (floats with 3 decimals, None as "—")."""

    def cell(v) -> str:
        return "—" if v is None else f"{v:.3f}" if isinstance(v, float) else str(v)

    sep = "|" + "|".join("-" * (len(h) + 2) for h in header) + "|"
    lines = ["| " + " | ".join(header) + " |", sep]
    return "\n".join(lines + ["| " + " | ".join(cell(v) for v in r) + " |" for r in rows])


def train_budget(run: str, trained_on: str | None = None) -> dict:
    """What training a run cost, read from its config.yaml and metrics.jsonl: steps, batch,
    model size, device, `trained_on` (the machine, as the caller names it) and wall minutes."""
    from diffpolicy.checkpoint import load_run_config, read_metrics

    cfg = load_run_config(run)
    metrics = read_metrics(run)
    sps = [m["samples_per_s"] for m in metrics if "samples_per_s" in m]
    spent = [m["time_s"] for m in metrics if isinstance(m.get("time_s"), dict)]
    if spent:  # each process's own account; one killed without a signal leaves none
        minutes = sum(sum(d.values()) for d in spent) / 60
    else:  # runs from before train wrote time_s: the logged samples/s
        minutes = sum(cfg.train.log_every * cfg.train.batch_size / x for x in sps) / 60
    return {
        "run_dir": str(run),
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


# ------------------------------------------------------------------------- timing and inputs


def time_call(
    fn: Callable[[], object], repeats: int, warmup: int = 2, sync: Callable | None = None
) -> tuple[list[float], list[float]]:
    """Wall and thread-CPU times (ms) of `repeats` calls after `warmup` calls.

    On a shared machine the wall time includes time spent waiting for a core; the CPU time of
    the calling thread does not (for one-thread work it is close to the idle-machine latency).
    `sync` (e.g. torch.cuda.synchronize) runs inside each timed call, after fn.
    """
    for _ in range(warmup):
        fn()
    if sync is not None:
        sync()
    wall, cpu = [], []
    for _ in range(repeats):
        t0, c0 = time.perf_counter(), time.thread_time()
        fn()
        if sync is not None:
            sync()
        cpu.append((time.thread_time() - c0) * 1e3)
        wall.append((time.perf_counter() - t0) * 1e3)
    return wall, cpu


def policy_from_config(
    config: str, overrides: tuple[str, ...] = (), dims: dict | None = None, device="cpu"
):
    """(policy, cfg) from a config file (a name in configs/ or a path) with synthetic `dims`
    (default `DIMS`), freshly initialized, in training mode, on `device`."""
    from diffpolicy.config import load_config
    from diffpolicy.policies import make_policy

    path = CONFIGS / config if (CONFIGS / config).is_file() else Path(config)
    cfg = dataclasses.replace(load_config(path, overrides), dims=dict(dims or DIMS))
    return make_policy(cfg).to(device), cfg


def random_obs(cfg, batch: int, device="cpu") -> dict:
    """Random observations for a policy of `cfg`: obs (B, To, Do), goal (B, G) if any, and
    uint8 frames (B, To, H, W, 3) per camera key."""
    import torch

    d, To = cfg.dims, cfg.data.n_obs_steps
    obs = {"obs": torch.randn(batch, To, d["obs_dim"], device=device)}
    if d.get("goal_dim"):
        obs["goal"] = torch.randn(batch, d["goal_dim"], device=device)
    for k in cfg.data.image_keys:
        shape = (batch, To, d["image_height"], d["image_width"], 3)
        obs[k] = torch.randint(0, 256, shape, dtype=torch.uint8, device=device)
    return obs


def synthetic_windows(cfg, n: int, device="cpu") -> dict:
    """`n` random training windows shaped like diffpolicy.train's (obs, goal, action, mask;
    with camera keys `frames/<key>` (n, H, W, 3) and `frame_index` (n, To), as `take` reads)."""
    import torch

    data = random_obs(cfg, n, device)
    if cfg.data.image_keys:
        for k in cfg.data.image_keys:
            data[f"frames/{k}"] = data.pop(k)[:, -1]
        To = cfg.data.n_obs_steps
        steps = torch.arange(n, device=device)[:, None] + torch.arange(-To + 1, 1, device=device)
        data["frame_index"] = steps.clamp_min(0)
    data["action"] = torch.randn(n, cfg.data.horizon, cfg.dims["action_dim"], device=device)
    data["action_mask"] = torch.ones(n, cfg.data.horizon, dtype=torch.bool, device=device)
    return data


def sampling_path(policy, sampling, device) -> str:
    """Which path `predict_action_chunk` takes, as diffpolicy/fastpath.py decides it: "graph"
    (a CUDA graph), "jit" (a frozen trace of the UNet body on CPU) or "eager"; a label only."""
    fast = getattr(policy, "fast", None)
    guided = policy.cfg.policy.condition != "none" and sampling.guidance not in (0.0, 1.0)
    if fast is None or not sampling.compiled or guided:
        return "eager"
    if str(device).startswith("cuda"):
        return "graph" if sampling.sampler != "ddpm" else "eager"
    return "jit" if fast.traceable and not policy.training else "eager"


def latency_row(policy, cfg, label: str, threads: int, batch: int, sampling, reps: int) -> dict:
    """Median / p95 latency (ms) of `policy.predict_action_chunk(obs, sampling)` on random
    observations of batch `batch` with `threads` torch threads (CPU time at one thread)."""
    import torch

    torch.set_num_threads(threads)
    device = next(policy.parameters()).device
    obs = random_obs(cfg, batch, device)
    sync = torch.cuda.synchronize if device.type == "cuda" else None
    wall, cpu = time_call(lambda: policy.predict_action_chunk(obs, sampling), reps, 1, sync)
    row = {
        "config": label,
        "threads": threads,
        "batch": batch,
        "sampler": sampling.sampler,
        "steps": sampling.steps,
        "path": sampling_path(policy, sampling, device),
        "median_ms": statistics.median(wall),
        "p95_ms": float(np.percentile(wall, 95)),
        "cpu_median_ms": statistics.median(cpu) if threads == 1 else None,
        "repeats": reps,
    }
    print(
        f"latency {label} t={threads} b={batch} {sampling.sampler}-{sampling.steps} "
        f"{row['path']}: {row['median_ms']:.2f} ms (p95 {row['p95_ms']:.2f}, "
        f"cpu {row['cpu_median_ms']})",
        flush=True,
    )
    return row


class LibraryTrainStep:
    """One call = one step of diffpolicy.train's loop on `data` (e.g. `synthetic_windows`):
    the batch gather (`batch_indices`, `take`), then `train_step` (loss, backward, clip, AdamW
    with `make_optimizer`'s weight-decay split, EMA) at the schedule's LR and EMA decay.

    `seconds` accumulates the wall time of the two parts ("data", "train_step"); on CUDA they
    run asynchronously, so there only the total of a synchronized call is meaningful.
    """

    def __init__(self, policy, cfg, data: dict, batch_size: int | None = None, autocast=None):
        from diffpolicy.train import PolicyLoss, make_optimizer

        self.policy, self.cfg, self.data, self.autocast = policy.train(), cfg, data, autocast
        self.device = data["obs"].device
        self.ema = copy.deepcopy(policy).requires_grad_(False).eval()
        self.optimizer = make_optimizer(policy, cfg, self.device)
        self.loss_fn = PolicyLoss(policy)
        self.batch_size = batch_size or cfg.train.batch_size
        self.step, self.seconds = 0, {"data": 0.0, "train_step": 0.0}

    def __call__(self):
        from diffpolicy.train import batch_indices, ema_decay, lr_at, take, train_step

        cfg, s = self.cfg, self.step
        t0 = time.perf_counter()
        idx = batch_indices(s, len(self.data["obs"]), self.batch_size, cfg.train.seed, 0, 1)
        batch = take(self.data, idx.to(self.device))
        t1 = time.perf_counter()
        loss = train_step(
            self.loss_fn, batch, self.policy, self.ema, self.optimizer, lr_at(s, cfg),
            ema_decay(s, cfg), cfg.train.grad_clip, self.autocast,
        )  # fmt: skip
        self.seconds["data"] += t1 - t0
        self.seconds["train_step"] += time.perf_counter() - t1
        self.step += 1
        return loss

    def shares(self) -> dict:
        total = sum(self.seconds.values()) or 1.0
        return {k: round(v / total, 4) for k, v in self.seconds.items()}

    def reset_times(self) -> None:
        self.seconds = dict.fromkeys(self.seconds, 0.0)


# ------------------------------------------------------------------------------- benchmarks


CAMERA = {
    "diffpolicy/ReachAround-v0": "top",
    "diffpolicy/ReachAroundMaze-v0": "top",
    "diffpolicy/Pick-v0": "front",
}
"""The camera each task's vision configs observe."""


def bench_collect(
    quick: bool, reach_episodes: int = 200, other_episodes: int = 50, image_size: int = 0
) -> list[dict]:
    """Expert episodes per second with 1 and 2 workers, per task (200 ReachAround demos: the
    foundation target is <= 60 s with 2 workers); `image_size` > 0: with the task's camera."""
    from diffpolicy.collect import collect

    rows = []
    for env_id in TASKS:
        n = reach_episodes if env_id.endswith("ReachAround-v0") else other_episodes
        n = min(n, 20) if quick else n
        for workers in (1, 2):
            kwargs = {"cameras": [CAMERA[env_id]], "image_size": image_size} if image_size else {}
            with tempfile.TemporaryDirectory() as d:
                stats = collect(
                    env_id, n, f"{d}/x.hdf5", workers=workers, progress=False, env_kwargs=kwargs
                )
            rows.append(
                {
                    "env_id": env_id,
                    "env_kwargs": kwargs,
                    "workers": workers,
                    "episodes": n,
                    "tried": stats.tried,
                    "seconds": stats.seconds,
                    "episodes_per_s": stats.episodes_per_s,
                }
            )
            print(f"collect {env_id} workers={workers}: {stats.episodes_per_s:.1f} ep/s")
    return rows


# the default config's sampler (chosen on validation seeds by scripts/sampler_choice.py)
FAST = ("dpmpp", 4)
SAMPLER_NAMES = {"ddpm": "DDPM", "ddim": "DDIM", "dpmpp": "DPM-Solver++", "euler": "Euler",
                 "heun": "Heun"}  # fmt: skip


# the issues' targets per task, that scripts choose settings against: (metric, ">=" | "<=", bound)
TARGETS = {
    "diffpolicy/ReachAround-v0": (("success_rate", ">=", 0.95), ("normalized_entropy", ">=", 0.95),
                                  ("tv_to_demos", "<=", 0.05), ("interpolation_rate", "<=", 0.02)),
    "diffpolicy/Pick-v0": (("success_rate", ">=", 0.90), ("tv_to_demos", "<=", 0.10)),
    "diffpolicy/ReachAroundMaze-v0": (("success_rate", ">=", 0.97),
                                      ("normalized_entropy", ">=", 0.95)),
}  # fmt: skip


def meets(r: dict, env_id: str) -> bool:
    """Whether evaluation `r` meets env_id's TARGETS (a metric that is None, such as TV without
    demos, does not)."""
    value = {k: r[k] for k, _, _ in TARGETS[env_id]}
    return all(
        value[k] is not None and (value[k] >= b if op == ">=" else value[k] <= b)
        for k, op, b in TARGETS[env_id]
    )


def unet_calls(sampler: str, steps: int) -> int:
    """UNet calls per chunk: Heun evaluates twice per step except into t = 0 (2K - 1)."""
    return 2 * steps - 1 if sampler == "heun" else steps


SAMPLERS = (("ddpm", 100), ("ddim", 10), ("ddim", 16), ("dpmpp", 10), ("ddim", 8), ("dpmpp", 8),
            ("dpmpp", 6), FAST)  # fmt: skip
# few-step students of the default policy (diffpolicy distill): one or two UNet calls per chunk
STUDENT_STEPS = (1, 2)


def student_overrides() -> tuple[str, ...]:
    """Config overrides that make a policy a few-step student (diffpolicy/distill.py)."""
    from diffpolicy.distill import STUDENT_POLICY

    return tuple(f"policy.{k}={v}" for k, v in STUDENT_POLICY.items())


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

    Default config: every sampler at batch 1 and 32, 1 and all threads, plus the eager
    (`Sampling(compiled=False)`: no TorchScript trace) call at batch 1 for an in-run ratio. A
    distilled student of the default config (config "student": x0 prediction, trailing DDIM)
    with 1 and 2 steps. Published config: DDPM-100 as published (batch 1), DDIM-10 and the fast
    setting.
    """
    from diffpolicy.config import Sampling

    threads = sorted({1, os.cpu_count() or 1})
    reps = 5 if quick else 21
    gflops_before = matmul_gflops()
    rows = []
    policy, cfg = policy_from_config("reach_around.yaml")
    policy.eval()
    for n_threads in threads:
        for batch in (1, 32):
            for sampler, steps in SAMPLERS:
                r = 3 if sampler == "ddpm" and (quick or batch > 1) else reps
                r = min(r, 7) if batch > 1 else r
                if n_threads > 1 and sampler == "ddpm":
                    continue  # 2 threads on a shared 2-core machine: minutes per row
                r = min(r, 3) if n_threads > 1 else r
                s = Sampling(sampler, steps)
                rows.append(latency_row(policy, cfg, "reach_around.yaml", n_threads, batch, s, r))
    for sampler, steps in (("ddim", 10), FAST):
        s = Sampling(sampler, steps, compiled=False)
        rows.append(latency_row(policy, cfg, "reach_around.yaml", 1, 1, s, reps))
    student, cfg = policy_from_config("reach_around.yaml", student_overrides())
    student.eval()
    for n_threads in threads:
        for batch in (1, 32):
            for steps in STUDENT_STEPS:
                r = reps if n_threads == 1 else 7
                s = Sampling("ddim", steps)
                rows.append(latency_row(student, cfg, "student", n_threads, batch, s, r))
    policy, cfg = policy_from_config("published_lowdim.yaml")
    policy.eval()
    for n_threads in threads:
        if not quick and n_threads == 1:  # ~10 s per call; 2 threads on a shared machine: x5
            s = Sampling("ddpm", 100)
            rows.append(latency_row(policy, cfg, "published_lowdim.yaml", n_threads, 1, s, 2))
        # batch 1 only: batch 32 of the 65.8M model takes minutes per row on 2 cores
        for sampler, steps in (("ddim", 10), FAST):
            s, r = Sampling(sampler, steps), 3 if n_threads > 1 else 5
            rows.append(latency_row(policy, cfg, "published_lowdim.yaml", n_threads, 1, s, r))

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
    """Training throughput (samples/s) of the library's training step (`LibraryTrainStep`) per
    config and thread count, on in-RAM synthetic windows, with the share of step time spent
    gathering the batch ("data") and in `diffpolicy.train.train_step` ("train_step")."""
    import torch

    rows = []
    for config in ("reach_around.yaml", "published_lowdim.yaml"):
        policy, cfg = policy_from_config(config)
        step = LibraryTrainStep(policy, cfg, synthetic_windows(cfg, 20_000))
        for n_threads in sorted({1, os.cpu_count() or 1}):
            torch.set_num_threads(n_threads)
            step()  # warm-up
            step.reset_times()
            ms, _ = time_call(step, 2 if quick else 3, warmup=0)
            med = statistics.median(ms)
            B = step.batch_size
            rows.append(
                {
                    "config": config,
                    "threads": n_threads,
                    "batch": B,
                    "step_ms": med,
                    "samples_per_s": B / med * 1e3,
                    "share": step.shares(),
                    "step": "diffpolicy.train.train_step, optimizer from make_optimizer",
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
    """Run the selected benchmarks; returns the JSON-ready result (`write_result` attaches
    the machine)."""
    parts = {"collect": bench_collect, "latency": bench_latency, "train": bench_train}
    result: dict = {"quick": quick}
    for name, fn in parts.items():
        if only and name not in only:
            continue
        result[name] = fn(quick)
    return result
