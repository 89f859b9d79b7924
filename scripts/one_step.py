"""Few-step student vs its teacher: quality (rollouts) and chunk latency, in one run.

    python benchmarks/one_step.py TEACHER_RUN STUDENT_RUN [--episodes 200] [--seeds 1000 2000]
        [--name one_step] [--skip-teacher-eval]

Quality: success, normalized entropy, TV to the demos and interpolation over `--episodes`
rollouts per evaluation seed, for the teacher (its own sampler) and the student (its 1 or 2
steps).
Latency: median and p95 at batch 1 on one CPU thread for both, and for the published low-dim
configuration sampled as published (DDPM-100), so the speed-up is a ratio taken in one process.
"""

import argparse
import time

import torch
from common import write_result

from diffpolicy import bench
from diffpolicy.checkpoint import load_policy, read_metrics
from diffpolicy.evaluate import evaluate_run

KEYS = (
    "success_rate",
    "success_rate_ci95",
    "normalized_entropy",
    "tv_to_demos",
    "interpolation_rate",
    "interpolation_rate_ci95",
    "collision_rate",
    "mode_probs",
    "demo_mode_probs",
    "sampler",
    "steps",
)


def latency(run_dir: str, reps: int) -> dict:
    policy, cfg = load_policy(run_dir)
    p = cfg.policy
    return bench._latency_row(policy, cfg, run_dir, 1, 1, p.sampler, p.num_inference_steps, reps)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("teacher")
    ap.add_argument("student")
    ap.add_argument("--episodes", type=int, default=200)
    ap.add_argument("--seeds", type=int, nargs="+", default=[1000, 2000])
    ap.add_argument("--reps", type=int, default=41)
    ap.add_argument("--name", default="one_step", help="results file benchmarks/results/NAME.json")
    ap.add_argument("--skip-teacher-eval", action="store_true", help="rollouts of the student only")
    args = ap.parse_args()
    torch.set_num_threads(1)
    quality = {}
    runs = (("teacher", args.teacher), ("student", args.student))
    for name, run in runs[1:] if args.skip_teacher_eval else runs:
        for seed in args.seeds:
            t0 = time.perf_counter()
            r = evaluate_run(run, args.episodes, n_envs=8, seed=seed, progress=False)
            quality[f"{name}_seed{seed}"] = {k: r.get(k) for k in KEYS}
            quality[f"{name}_seed{seed}"]["seconds"] = round(time.perf_counter() - t0, 1)
            print(name, seed, {k: r.get(k) for k in KEYS[:5]}, flush=True)
    lat = {"teacher": latency(args.teacher, args.reps), "student": latency(args.student, args.reps)}
    published, pcfg = bench._policy("published_lowdim.yaml")
    published.eval()
    lat["published_ddpm100"] = bench._latency_row(
        published, pcfg, "published_lowdim.yaml", 1, 1, "ddpm", 100, 3
    )
    student_metrics = [m for m in read_metrics(args.student) if "samples_per_s" in m]
    write_result(
        args.name,
        {
            "command": "python benchmarks/one_step.py "
            + " ".join(
                [
                    args.teacher,
                    args.student,
                    "--episodes",
                    str(args.episodes),
                    "--seeds",
                    *map(str, args.seeds),
                ]
            ),
            "targets": {
                "student_latency_b1_t1_ms": "<= 10",
                "speedup_vs_published_ddpm100": ">= 1000",
                "success_rate": ">= 0.95",
                "normalized_entropy": ">= 0.95",
                "interpolation_rate": "<= 0.02",
            },
            "quality": quality,
            "latency": lat,
            "speedup_wall": lat["published_ddpm100"]["median_ms"] / lat["student"]["median_ms"],
            "speedup_cpu": lat["published_ddpm100"]["cpu_median_ms"]
            / lat["student"]["cpu_median_ms"],
            "distillation": {
                "steps": student_metrics[-1]["step"] if student_metrics else None,
                "mean_samples_per_s": sum(m["samples_per_s"] for m in student_metrics)
                / max(len(student_metrics), 1),
            },
        },
    )


if __name__ == "__main__":
    main()
