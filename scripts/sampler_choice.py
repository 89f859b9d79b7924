"""The choice of a run's default sampler and re-planning period, made on validation seeds.

    python scripts/sampler_choice.py RUN_DIR [--seeds 1000 2000] [--episodes 200]
    python scripts/sampler_choice.py --print-only

Every candidate (sampler, steps, Ta; Euler / Heun for a flow-matching run) is evaluated on
every selection seed. The rule: among the candidates that meet the run's task targets on every
seed (bench.TARGETS; ReachAround: success >= 0.95, entropy >= 0.95, TV <= 0.05, interpolation
<= 0.02), the one with the fewest UNet calls per chunk (the batch-1 latency the targets bound),
then the fewest chunks per episode (the larger Ta), then the lowest worst-seed
interpolation. The report seeds (the config's eval.seed) are never evaluated here.
-> results/sampler_choice.json
"""

import argparse

from diffpolicy.bench import (
    RESULTS,
    TARGETS,
    markdown_table,
    meets,
    read_result,
    unet_calls,
    write_result,
)
from diffpolicy.checkpoint import load_run_config
from diffpolicy.errors import UserError
from diffpolicy.evaluate import evaluate_run

SAMPLERS = {  # per objective: what the run can be sampled with (flow: Euler and Heun)
    "diffusion": (("ddim", 4), ("dpmpp", 4), ("ddim", 8), ("dpmpp", 8), ("ddim", 16)),
    "velocity": (("euler", 2), ("heun", 2), ("euler", 4), ("heun", 3), ("euler", 8)),
}
LABELS = {"success_rate": "success", "normalized_entropy": "entropy", "tv_to_demos": "TV",
          "interpolation_rate": "interp."}  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run", nargs="?")
    ap.add_argument("--seeds", type=int, nargs="+", default=[1000, 2000])
    ap.add_argument("--episodes", type=int, default=200)
    ap.add_argument("--results", default=str(RESULTS))
    ap.add_argument("--print-only", action="store_true")
    a = ap.parse_args()
    if not a.print_only:
        if not a.run:
            ap.error("RUN_DIR is needed (or --print-only)")
        try:
            cfg = load_run_config(a.run)
        except UserError as e:
            ap.error(str(e))
        if cfg.eval.seed in a.seeds:
            ap.error(f"seed {cfg.eval.seed} is the run's report seed (eval.seed): choose on others")
        if cfg.env_id not in TARGETS:
            ap.error(f"no targets for {cfg.env_id}: one of {', '.join(TARGETS)}")
        targets = {k: (op, b) for k, op, b in TARGETS[cfg.env_id]}
        kind = "velocity" if cfg.policy.prediction_type == "velocity" else "diffusion"
        rows = []
        for sampler, steps, ta in [(s, k, ta) for s, k in SAMPLERS[kind] for ta in (4, 8)]:
            per_seed = {}
            for seed in a.seeds:
                r = evaluate_run(a.run, a.episodes, sampler=sampler, steps=steps,
                                 action_steps=ta, seed=seed, progress=False)  # fmt: skip
                per_seed[str(seed)] = {k: r[k] for k in (*targets, "chunk_latency_ms")}
            ok = all(meets(r, cfg.env_id) for r in per_seed.values())
            rows.append({"sampler": sampler, "steps": steps, "action_steps": ta,
                         "meets_targets_on_every_seed": ok, "seeds": per_seed})  # fmt: skip
            print(rows[-1], flush=True)
        passing = [r for r in rows if r["meets_targets_on_every_seed"]]

        def rank(r: dict) -> tuple:  # fewest UNet calls, longer period, lower worst interpolation
            worst = max(s.get("interpolation_rate") or 0.0 for s in r["seeds"].values())
            return unet_calls(r["sampler"], r["steps"]), -r["action_steps"], worst

        chosen = min(passing, key=rank, default=None)
        data = {"run_dir": a.run, "env_id": cfg.env_id, "select_seeds": a.seeds,
                "episodes": a.episodes, "targets": targets, "rows": rows,
                "chosen": chosen}  # fmt: skip
        write_result("sampler_choice", data, a.results)
    d = read_result("sampler_choice", a.results)
    if not d:
        raise SystemExit(f"no sampler_choice.json in {a.results}: run the selection first")
    table = [[f"{r['sampler']}-{r['steps']}", r["action_steps"],
              *(" / ".join(f"{s[k]:.3f}" for s in r["seeds"].values()) for k in d["targets"]),
              "yes" if r["meets_targets_on_every_seed"] else "no"] for r in d["rows"]]  # fmt: skip
    seeds = " / ".join(map(str, d["select_seeds"]))
    metrics = [LABELS.get(k, k) for k in d["targets"]]
    metrics[0] += f" ({seeds})"
    print(markdown_table(["sampler", "Ta", *metrics, "meets targets"], table))
    c = d["chosen"]
    print("chosen:", f"{c['sampler']}-{c['steps']}, Ta {c['action_steps']}" if c else "none")


if __name__ == "__main__":
    main()
