"""README's task results (maze / Pick): trained runs evaluated, with their training budget.

    python scripts/tasks.py --run maze=RUN_DIR --episodes 480 [--previous maze=EVAL.json ...]
    python scripts/tasks.py --print-only      # the tables from benchmarks/results/tasks.json

--previous: another run's earlier `diffpolicy eval --json`, an attempt that led there."""

import argparse
import json
from pathlib import Path

from diffpolicy.bench import RESULTS, markdown_table, read_result, train_budget, write_result
from diffpolicy.evaluate import evaluate_run

KEEP = ("episodes", "success_rate", "success_rate_ci95", "collision_rate", "timeout_rate",
        "normalized_entropy", "normalized_entropy_ci95", "tv_to_demos", "modes_covered",
        "num_modes", "interpolation_rate", "mode_switch_rate", "sampler", "steps",
        "action_steps", "seed", "chunk_latency_ms", "episodes_per_min")  # fmt: skip


def same(a: dict) -> tuple:  # one attempt: the same run and evaluation settings
    keys = ("sampler", "steps", "action_steps", "seed", "episodes")
    return (a["train"]["run_dir"], *(a.get(k) for k in keys))


def keep(r: dict, trained_on: dict) -> dict:  # the numbers kept and the run's training budget
    run = r["run_dir"]
    return {k: r.get(k) for k in KEEP} | {"train": train_budget(run, trained_on.get(run))}


def tables(results: dict) -> str:
    """The final run of each task under every evaluation setting, then the runs before it."""
    final, earlier = [], []
    for name, e in [(k, e) for k, e in results.items() if isinstance(e, dict) and "result" in e]:
        for r in [e["result"], *e.get("attempts", [])]:
            t, ta = r["train"], r.get("action_steps")
            unet = "/".join(map(str, t["down_dims"]))
            if t["run_dir"] == e["result"]["train"]["run_dir"]:
                row = [ta, r["seed"], r["episodes"], r["success_rate"], r["normalized_entropy"]]
                final.append([name, *row, r["tv_to_demos"], unet, t["batch_size"], t["steps"]])
            else:
                row = [t["run_dir"], unet, t["batch_size"], t["steps"], t["device"], ta]
                earlier.append([name, *row, r["success_rate"]])
    final.sort(key=lambda r: (r[0], r[1] or 0, r[2] or 0))
    head = ["task", "Ta", "seed", "episodes", "success", "entropy", "TV to demos", "UNet", "batch"]
    before = ["task", "earlier run", "UNet", "batch", "steps", "device", "Ta", "success"]
    return markdown_table([*head, "steps"], final) + "\n\n" + markdown_table(before, earlier)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--run", action="append", default=[], metavar="NAME=RUN_DIR")
    p.add_argument("--previous", action="append", default=[], metavar="NAME=EVAL_JSON")
    p.add_argument("--episodes", type=int, default=200)
    p.add_argument("--action-steps", type=int, help="Ta at evaluation (default: the run's)")
    p.add_argument("--seed", type=int, help="first episode's seed (default: the run's)")
    p.add_argument("--trained-on", action="append", default=[], metavar="RUN_DIR=WHERE")
    p.add_argument("--results", default=str(RESULTS), help="directory of the results file")
    p.add_argument("--print-only", action="store_true", help="print the tables, run nothing")
    a = p.parse_args()
    where, results = dict(i.split("=", 1) for i in a.trained_on), read_result("tasks", a.results)
    for name, path in [] if a.print_only else [i.split("=", 1) for i in a.previous]:
        entry, new = results.setdefault(name, {}), keep(json.loads(Path(path).read_text()), where)
        entry["attempts"] = [t for t in entry.get("attempts", []) if same(t) != same(new)] + [new]
    for name, run in [] if a.print_only else [i.split("=", 1) for i in a.run]:
        r = evaluate_run(run, a.episodes, progress=False, action_steps=a.action_steps, seed=a.seed)
        entry = results.setdefault(name, {})
        old, tried = entry.get("result"), entry.setdefault("attempts", [])
        if old and all(same(t) != same(old) for t in tried):
            tried.append(old)  # the result it replaces led here
        entry |= {"env_id": r["env_id"], "result": keep(r, where), "mode_probs": r["mode_probs"]}
        entry["demo_mode_probs"] = r["demo_mode_probs"]
    if not a.print_only and (a.run or a.previous):
        write_result("tasks", results, a.results)
    print(tables(read_result("tasks", a.results)))


if __name__ == "__main__":
    main()
