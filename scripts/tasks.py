"""Task results: success and mode coverage of trained runs on ReachAroundMaze-v0 and Pick-v0,
with the training budget that produced them.

    python benchmarks/tasks.py --run maze=runs/maze --episodes 480 \\
        [--previous maze=EVAL.json ...]

`--run NAME=RUN_DIR` evaluates the run now; `--previous NAME=EVAL_JSON` records an earlier
evaluation (a `diffpolicy eval --json` file) of another run as an attempt that led there.
Results go to benchmarks/results/tasks.json under NAME (other entries are kept).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
from common import RESULTS, machine, train_budget

from diffpolicy.evaluate import evaluate_run, write_json

KEEP = (
    "episodes", "success_rate", "success_rate_ci95", "collision_rate", "timeout_rate",
    "normalized_entropy", "normalized_entropy_ci95", "tv_to_demos", "modes_covered",
    "num_modes", "interpolation_rate", "mode_switch_rate", "sampler", "steps", "action_steps",
    "seed",
    "chunk_latency_ms", "episodes_per_min",
)  # fmt: skip


def _same(attempt: dict) -> tuple:
    """What makes two evaluations the same attempt: the run and the evaluation settings."""
    keys = ("sampler", "steps", "action_steps", "seed", "episodes")
    return (attempt["train"]["run_dir"], *(attempt.get(k) for k in keys))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--run", action="append", default=[], metavar="NAME=RUN_DIR")
    p.add_argument("--previous", action="append", default=[], metavar="NAME=EVAL_JSON")
    p.add_argument("--episodes", type=int, default=200)
    p.add_argument("--envs", type=int, default=8)
    p.add_argument("--action-steps", type=int, help="Ta at evaluation (default: the run's)")
    p.add_argument("--seed", type=int, help="seed of the first episode (default: the run's)")
    p.add_argument(
        "--trained-on", action="append", default=[], metavar="RUN_DIR=TEXT",
        help="where a run was trained, e.g. a GPU shared with other trainings",
    )  # fmt: skip
    a = p.parse_args()
    trained_on = dict(item.split("=", 1) for item in a.trained_on)

    def budget(run: str) -> dict:
        return train_budget(run, trained_on.get(run))

    torch.set_num_threads(1)
    out = RESULTS / "tasks.json"
    results = json.loads(out.read_text()) if out.is_file() else {}
    results["machine"] = machine()
    for item in a.previous:
        name, path = item.split("=", 1)
        r = json.loads(Path(path).read_text())
        entry = results.setdefault(name, {})
        new = {k: r.get(k) for k in KEEP} | {"train": budget(r["run_dir"])}
        tried = [t for t in entry.get("attempts", []) if _same(t) != _same(new)]
        tried.append(new)
        entry["attempts"] = tried
    for item in a.run:
        name, run = item.split("=", 1)
        r = evaluate_run(
            run,
            a.episodes,
            n_envs=a.envs,
            progress=False,
            action_steps=a.action_steps,
            seed=a.seed,
        )
        entry = results.setdefault(name, {})
        old = entry.get("result")
        tried = entry.setdefault("attempts", [])
        if old and all(_same(t) != _same(old) for t in tried):
            tried.append(old)  # the result it replaces led here
        entry["env_id"] = r["env_id"]
        entry["result"] = {k: r.get(k) for k in KEEP} | {"train": budget(run)}
        entry["mode_probs"], entry["demo_mode_probs"] = r["mode_probs"], r["demo_mode_probs"]
        print(name, json.dumps({k: r.get(k) for k in KEEP[:8]}), flush=True)
    write_json(out, results)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
