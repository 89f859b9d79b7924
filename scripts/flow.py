"""README's flow-matching table: flow and diffusion runs of the same UNet, data and budget.

    python scripts/flow.py FLOW_RUN DIFFUSION_RUN [--episodes 200] [--select-seed 5000]
        [--seed 7000]
    python scripts/flow.py --print-only           # the table from results/flow.json

Every flow sampler setting is evaluated on the selection seed; the fewest UNet calls that meet
the ReachAround targets there (success >= 0.95, entropy >= 0.95, TV <= 0.05, interpolation
<= 0.02) is the chosen one. Every row is then reported on the report seed, which no choice saw.
"""

import argparse

from diffpolicy.bench import RESULTS, markdown_table, read_result, write_result
from diffpolicy.evaluate import evaluate_run

FLOW = (("euler", 1), ("euler", 2), ("euler", 4), ("heun", 2), ("heun", 3))  # 1, 2, 4, 3, 5 calls
DIFFUSION = (("dpmpp", 8), ("ddim", 4))
KEYS = ("success_rate", "normalized_entropy", "tv_to_demos", "interpolation_rate",
        "path_roughness_rel_demos", "chunk_latency_ms", "success_rate_ci95", "seed")  # fmt: skip
HEAD = ["run", "sampler", "UNet calls", "success", "entropy", "TV", "interp.", "path rough.",
        "latency ms"]  # fmt: skip


def meets(r: dict) -> bool:
    return (r["success_rate"] >= 0.95 and r["normalized_entropy"] >= 0.95
            and (r["tv_to_demos"] or 1) <= 0.05 and r["interpolation_rate"] <= 0.02)  # fmt: skip


def calls(sampler: str, steps: int) -> int:
    return 2 * steps - 1 if sampler == "heun" else steps  # Heun: no correction into t = 0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("flow_run", nargs="?")
    ap.add_argument("diffusion_run", nargs="?")
    ap.add_argument("--episodes", type=int, default=200)
    ap.add_argument("--select-seed", type=int, default=5000)
    ap.add_argument("--seed", type=int, default=7000, help="report seed")
    ap.add_argument("--results", default=str(RESULTS))
    ap.add_argument("--print-only", action="store_true")
    a = ap.parse_args()
    if not a.print_only:

        def ev(run, sampler, steps, seed):
            r = evaluate_run(run, a.episodes, seed=seed, sampler=sampler, steps=steps)
            print(run, sampler, steps, seed, {k: r[k] for k in KEYS[:4]}, flush=True)
            return {k: r.get(k) for k in KEYS}

        selection = {f"{s}-{k}": ev(a.flow_run, s, k, a.select_seed) for s, k in FLOW}
        passing = [(calls(s, k), f"{s}-{k}") for s, k in FLOW if meets(selection[f"{s}-{k}"])]
        rows = [("flow", s, k, a.flow_run) for s, k in FLOW]
        rows += [("diffusion", s, k, a.diffusion_run) for s, k in DIFFUSION]
        report = {f"{n} {s}-{k}": ev(run, s, k, a.seed) | {"calls": calls(s, k)}
                  for n, s, k, run in rows}  # fmt: skip
        data = {"episodes": a.episodes, "select_seed": a.select_seed, "report_seed": a.seed,
                "chosen": min(passing)[1] if passing else None, "selection": selection,
                "report": report, "flow_run": a.flow_run,
                "diffusion_run": a.diffusion_run}  # fmt: skip
        write_result("flow", data, a.results)
    res = read_result("flow", a.results)
    table = [
        [*name.split(" "), r["calls"], *(r[k] for k in KEYS[:6])]
        for name, r in res["report"].items()
    ]
    print(markdown_table(HEAD, table))
    seeds = f"chosen on seed {res['select_seed']}: {res['chosen']}"
    print(f"{seeds}; reported on seed {res['report_seed']}")


if __name__ == "__main__":
    main()
