"""What smooth execution costs per chunk: batch-1 latency on one CPU thread of a run's sampling
call plain, with `policy.lowpass`, and with lowpass + a real-time-chunking prefix (the inpainting
guide the controller adds), in one process, calls interleaved. -> results/smooth_latency.json

    python benchmarks/smooth_latency.py RUN_DIR [RUN_DIR ...] [--lowpass 6] [--reps 101]

Compare the rows of one run as ratios: the machine is shared and absolute times drift.
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from diffpolicy import bench  # noqa: E402


def main() -> None:
    import torch

    from diffpolicy.checkpoint import load_policy
    from diffpolicy.config import Sampling

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", nargs="+")
    ap.add_argument("--lowpass", type=int, default=6)
    ap.add_argument("--reps", type=int, default=101)
    ap.add_argument("--results", default=str(bench.RESULTS))
    a = ap.parse_args()
    torch.set_num_threads(1)
    rows = []
    for run in a.runs:
        policy, cfg = load_policy(run)
        policy.eval()
        base = dataclasses.replace(Sampling.of(cfg.policy), lowpass=0)
        obs = bench.random_obs(cfg, 1, torch.device("cpu"))
        Tp, A = cfg.data.horizon, cfg.dims["action_dim"]
        prefix = {  # what the controller sends under real-time chunking
            "prefix_action": torch.zeros(1, Tp, A),
            "prefix_weight": torch.linspace(1, 0, Tp)[None],
        }
        settings = {
            "plain": (obs, base),
            f"lowpass {a.lowpass}": (obs, dataclasses.replace(base, lowpass=a.lowpass)),
            f"lowpass {a.lowpass} + rtc prefix": (
                obs | prefix,
                dataclasses.replace(base, lowpass=a.lowpass),
            ),
        }
        calls = {name: (lambda o=o, s=sm, p=policy: p.predict_action_chunk(o, s))
                 for name, (o, sm) in settings.items()}  # fmt: skip
        times: dict[str, list[float]] = {name: [] for name in settings}
        with torch.inference_mode():
            for fn in calls.values():  # warm-up: traces, caches
                for _ in range(3):
                    fn()
            for _ in range(a.reps):  # interleaved, so drift hits every setting alike
                for name, fn in calls.items():
                    t = time.perf_counter()
                    fn()
                    times[name].append(1e3 * (time.perf_counter() - t))
        plain = statistics.median(times["plain"])
        for name, (_, sampling) in settings.items():
            rows.append({"run": run, "setting": name, "sampler": sampling.sampler,
                         "steps": sampling.steps, "median_ms": statistics.median(times[name]),
                         "ratio_to_plain": statistics.median(times[name]) / plain,
                         "repeats": a.reps})  # fmt: skip
            print(rows[-1], flush=True)
    bench.write_result("smooth_latency", {"threads": 1, "batch": 1, "rows": rows}, a.results)


if __name__ == "__main__":
    main()
