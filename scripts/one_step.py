"""README's distillation numbers: a few-step student against its teacher in one run: rollouts per
seed, and batch-1 one-thread chunk latency next to the published config's DDPM-100.

    python scripts/one_step.py TEACHER STUDENT [--distill [key=value ...]] [--seeds 11000]
    python scripts/one_step.py --print-only --name one_step one_step_1step
"""

import argparse

import torch

from diffpolicy import bench
from diffpolicy.checkpoint import load_policy
from diffpolicy.config import Sampling
from diffpolicy.distill import distill
from diffpolicy.evaluate import evaluate_run


def latency(run_dir: str, reps: int) -> dict:
    policy, cfg = load_policy(run_dir)
    return bench.latency_row(policy, cfg, run_dir, 1, 1, Sampling.of(cfg.policy), reps)


def tables(r: dict) -> str:
    quality, speed, ddpm = [], [], r["latency"]["published_ddpm100"]
    for key, v in r["quality"].items():  # key: WHO_seedN
        row = [v["success_rate"], v["normalized_entropy"], v["interpolation_rate"]]
        quality.append([*key.split("_seed"), f"{v['sampler']}-{v['steps']}", *row])
    for key, v in r["latency"].items():
        x = f"{int(ddpm['median_ms'] / v['median_ms'])}x"
        speed.append([key, f"{v['sampler']}-{v['steps']}", v["median_ms"], v["cpu_median_ms"], x])
    head = ["policy", "seed", "sampler", "success", "entropy", "interpolation"]
    out = bench.markdown_table(head, quality) + "\n\n"
    head = ["policy", "sampler", "ms (batch 1, 1 thread)", "CPU ms", "x vs published DDPM-100"]
    steps = f"\n\nstudent: {r['distillation']['steps']} distillation steps"
    return out + bench.markdown_table(head, speed) + steps


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("teacher", nargs="?")
    ap.add_argument("student", nargs="?")
    ap.add_argument("--distill", nargs="*", metavar="key=value", help="distill TEACHER first")
    ap.add_argument("--episodes", type=int, default=200)
    ap.add_argument("--seeds", type=int, nargs="+", default=[11000], help="report seeds")
    ap.add_argument("--reps", type=int, default=41)
    ap.add_argument("--published-reps", type=int, default=3)
    ap.add_argument("--name", nargs="+", default=["one_step"], help="results file(s) NAME.json")
    ap.add_argument("--skip-teacher-eval", action="store_true", help="rollouts of the student only")
    ap.add_argument("--results", default=str(bench.RESULTS), help="directory of the results files")
    ap.add_argument("--print-only", action="store_true", help="print the tables, run nothing")
    a = ap.parse_args()
    if not a.print_only and not (a.teacher and a.student):
        ap.error("TEACHER_RUN and STUDENT_RUN are needed (or --print-only)")
    if not a.print_only:
        if a.distill is not None:
            distill(a.teacher, a.student, a.distill, progress=False)
        torch.set_num_threads(1)
        quality = {}
        for name, run in (("teacher", a.teacher), ("student", a.student))[a.skip_teacher_eval :]:
            for seed in a.seeds:
                r = evaluate_run(run, a.episodes, seed=seed, progress=False)
                quality[f"{name}_seed{seed}"] = {k: v for k, v in r.items() if k != "records"}
        lat = {"teacher": latency(a.teacher, a.reps), "student": latency(a.student, a.reps)}
        published, cfg = bench.policy_from_config("published_lowdim.yaml")
        ddpm, reps = Sampling("ddpm", 100), a.published_reps
        row = bench.latency_row(published.eval(), cfg, "published_lowdim.yaml", 1, 1, ddpm, reps)
        lat["published_ddpm100"], student = row, lat["student"]
        data = dict(teacher=a.teacher, student=a.student, episodes=a.episodes, seeds=a.seeds)
        data |= {"quality": quality, "latency": lat, "distillation": bench.train_budget(a.student)}
        data["speedup_wall"] = row["median_ms"] / student["median_ms"]
        data["speedup_cpu"] = row["cpu_median_ms"] / student["cpu_median_ms"]
        bench.write_result(a.name[0], data, a.results)
    for name in a.name:
        print(f"{name}.json\n\n{tables(bench.read_result(name, a.results))}\n")


if __name__ == "__main__":
    main()
