"""README's vision table: policies from a camera + proprioception, chosen and reported apart.

    python scripts/vision.py NAME RUN [RUN ...] [--episodes 200] [--select-seeds 1000 2000]
        [--seed 13000] [--action-steps 4 8]
    python scripts/vision.py NAME --print-only     # the table from results/vision_NAME.json

Each (run, Ta) candidate is evaluated on the selection seeds; the cheapest run (training
minutes) that meets the targets on all of them wins, Ta breaking ties (the best mean success
if none meets them). The choice is then reported on the report seed, which no choice saw, and
evaluated there once more with every camera frame replaced by grey (`--constant-images`): the
image carries the information if success falls by at least half.
"""

import argparse

from diffpolicy.bench import (
    RESULTS,
    TARGETS,
    markdown_table,
    meets,
    read_result,
    train_budget,
    write_result,
)
from diffpolicy.checkpoint import load_run_config
from diffpolicy.errors import UserError
from diffpolicy.evaluate import evaluate_run

KEYS = ("success_rate", "normalized_entropy", "tv_to_demos", "interpolation_rate",
        "collision_rate", "chunk_latency_ms", "success_rate_ci95", "tv_to_demos_ci95", "mode_probs",
        "demo_mode_probs", "seed")  # fmt: skip
HEAD = ["run", "Ta", "train min", "seed", "images", "success", "entropy", "TV", "interp.",
        "collision", "latency ms"]  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("name", help="results/vision_NAME.json (e.g. reach_around, pick)")
    ap.add_argument("runs", nargs="*")
    ap.add_argument("--episodes", type=int, default=200)
    ap.add_argument("--select-seeds", type=int, nargs="+", default=[1000, 2000])
    ap.add_argument("--seed", type=int, default=13000, help="report seed")
    ap.add_argument("--action-steps", type=int, nargs="+", default=[4, 8])
    ap.add_argument("--results", default=str(RESULTS))
    ap.add_argument("--print-only", action="store_true")
    a = ap.parse_args()
    out = f"vision_{a.name}"
    if not a.print_only:
        if not a.runs:
            ap.error("RUN [RUN ...] is needed (or --print-only)")
        try:
            envs = {load_run_config(run).env_id for run in a.runs}
        except UserError as e:
            ap.error(str(e))
        if len(envs) != 1 or not envs <= set(TARGETS):
            ap.error(f"the runs' envs {sorted(envs)} must be one of {', '.join(TARGETS)}")
        (env_id,) = envs

        def ev(run, ta, seed, grey=None):
            r = evaluate_run(run, a.episodes, seed=seed, action_steps=ta, constant_images=grey)
            print(run, ta, seed, grey, {k: r[k] for k in KEYS[:5]}, flush=True)
            return {k: r.get(k) for k in KEYS}

        budgets = {run: train_budget(run, "this 2-core CPU") for run in a.runs}
        selection = {f"{run} Ta={ta}": [ev(run, ta, s) for s in a.select_seeds]
                     for run in a.runs for ta in a.action_steps}  # fmt: skip
        sel = {(run, ta): selection[f"{run} Ta={ta}"] for run in a.runs for ta in a.action_steps}
        passing = [c for c, rs in sel.items() if all(meets(r, env_id) for r in rs)]
        run, ta = (min(passing, key=lambda c: (budgets[c[0]]["train_minutes"], c[1])) if passing
                   else max(sel, key=lambda c: sum(r["success_rate"] for r in sel[c])))  # fmt: skip
        report = {"camera": ev(run, ta, a.seed), "grey": ev(run, ta, a.seed, grey=True)}
        data = {"episodes": a.episodes, "select_seeds": a.select_seeds, "report_seed": a.seed,
                "chosen": {"run": run, "action_steps": ta, "met_targets": bool(passing)},
                "budgets": budgets, "selection": selection, "report": report}  # fmt: skip
        write_result(out, data, a.results)
    res = read_result(out, a.results)
    run, ta = res["chosen"]["run"], res["chosen"]["action_steps"]
    minutes = res["budgets"][run]["train_minutes"]
    table = [[run.rstrip("/").split("/")[-1], ta, minutes, r["seed"], images,
              *(r[k] for k in KEYS[:6])]
             for images, r in res["report"].items()]  # fmt: skip
    print(markdown_table(HEAD, table))
    camera, grey = (res["report"][k]["success_rate"] for k in ("camera", "grey"))
    print(f"chosen on seeds {res['select_seeds']} (targets met there: "
          f"{res['chosen']['met_targets']}); reported on seed {res['report_seed']}; "
          f"success with grey frames / with the camera {grey / max(camera, 1e-9):.2f}")  # fmt: skip


if __name__ == "__main__":
    main()
