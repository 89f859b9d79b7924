"""Time to quality: success and mode coverage against training minutes, one curve per recipe.

    python benchmarks/time_to_quality.py NAME CONFIG --dataset FILE --steps 250 500 1000 \\
        [--set KEY=VALUE ...] [--run EXISTING_RUN ...] [--sampler S --inference-steps K] \\
        [--episodes 200] [--seed 19000] [--runs-dir outputs/ttq]
    python benchmarks/time_to_quality.py --print-only      # the table from the results file

Each point is its own training run of CONFIG with `train.steps=S` (so its learning rate decays
to 0 at S, as a user's run of that budget would), trained in a fresh process on this machine,
then evaluated on `--seed`; `--run` adds runs trained earlier with the same recipe at other
budgets. Minutes are the `train` process's own account (`time_s` in metrics.jsonl: set-up,
steps, validation, checkpoints). A run directory that already holds its final checkpoint is
evaluated again without retraining. -> results/time_to_quality.json, under NAME (others kept).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from diffpolicy import bench  # noqa: E402

METRICS = ("success_rate", "success_rate_ci95", "normalized_entropy", "tv_to_demos",
           "interpolation_rate", "modes_covered", "num_modes",
           "path_roughness_rel_demos")  # fmt: skip


def trained(run: Path) -> bool:
    from diffpolicy.checkpoint import checkpoint_dirs, load_run_config

    dirs = checkpoint_dirs(run)
    return bool(dirs) and int(dirs[-1].name.split("_")[-1]) == load_run_config(run).train.steps


def table(results: dict) -> str:
    rows = []
    for name, e in results.items():
        if not isinstance(e, dict) or "points" not in e:
            continue
        for p in e["points"]:
            t = p["train"]
            quality = [p[k] for k in METRICS[:1] + METRICS[2:5]]
            rows.append([name, t["steps"], t["batch_size"], t["train_minutes"], *quality])
    head = ["recipe", "steps", "batch", "train min", "success", "entropy", "TV", "interp."]
    return bench.markdown_table(head, rows)


def main() -> None:
    from diffpolicy.evaluate import evaluate_run

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("name", nargs="?", help="key in the results file, e.g. reach_around_flow")
    ap.add_argument("config", nargs="?")
    ap.add_argument("--dataset")
    ap.add_argument("--steps", type=int, nargs="*", default=[])
    ap.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="config overrides")
    ap.add_argument("--run", nargs="*", default=[], help="runs trained earlier, same recipe")
    ap.add_argument("--sampler")
    ap.add_argument("--inference-steps", type=int)
    ap.add_argument("--episodes", type=int, default=200)
    ap.add_argument("--seed", type=int, default=19000)
    ap.add_argument("--runs-dir", default="outputs/ttq")
    ap.add_argument("--results", default=str(bench.RESULTS))
    ap.add_argument("--print-only", action="store_true")
    a = ap.parse_args()
    if a.print_only:
        return print(table(bench.read_result("time_to_quality", a.results)))
    if not (a.name and a.config and a.dataset):
        ap.error("NAME, CONFIG and --dataset are needed to measure (or --print-only)")
    runs = [Path(r) for r in a.run]
    for s in a.steps:
        run = Path(a.runs_dir) / a.name / f"steps_{s}"
        if not trained(run):
            every = [f"train.{k}={max(1, s // 2)}" for k in ("val_every", "checkpoint_every")]
            args = ["train", a.config, "--dataset", a.dataset, "--out", str(run)]
            if run.exists():
                args = ["train", "--resume", str(run)]
            bench.run_cli(*args, *a.set, f"train.steps={s}", *every)
        runs.append(run)
    points = []
    for run in runs:
        r = evaluate_run(run, a.episodes, seed=a.seed, sampler=a.sampler, steps=a.inference_steps,
                         progress=False)  # fmt: skip
        budget = bench.train_budget(str(run))
        points.append({"train": budget, **{k: r.get(k) for k in METRICS}})
        print(f"{run}: {budget['train_minutes']} min, success {r['success_rate']:.3f}, "
              f"entropy {r['normalized_entropy']:.3f}")  # fmt: skip
    points.sort(key=lambda p: p["train"]["train_minutes"])
    results = bench.read_result("time_to_quality", a.results)
    results[a.name] = {
        "command": bench.command_line(),
        "git_revision": bench.git_revision(),
        "config": a.config,
        "overrides": a.set,
        "dataset": a.dataset,
        "sampler": a.sampler,
        "inference_steps": a.inference_steps,
        "episodes": a.episodes,
        "seed": a.seed,
        "points": points,
    }
    bench.write_result("time_to_quality", results, a.results)


if __name__ == "__main__":
    main()
