"""README's flow-matching tables: flow and diffusion runs of the same UNet, data and budget.

    python scripts/flow.py FLOW_RUN DIFFUSION_RUN [--episodes 200] [--select-seed 5000]
        [--seed 9000] [--name flow] [--flow euler-4 heun-3 ...] [--diffusion dpmpp-8 ...]
    python scripts/flow.py --print-only [--name flow]   # the table from results/NAME.json

Every flow sampler setting (--flow) is evaluated on the selection seed; the fewest UNet calls
that meet the task's targets there (bench.TARGETS: ReachAround success >= 0.95, entropy >= 0.95,
TV <= 0.05, interpolation <= 0.02; Pick success >= 0.90, TV <= 0.10; the maze success >= 0.97,
entropy >= 0.95) is the chosen one. Every row, and the diffusion run at each --diffusion
setting, is then reported on the report seed, which no choice saw. -> results/NAME.json
"""

import argparse

from diffpolicy import bench
from diffpolicy.bench import RESULTS, markdown_table, read_result, write_result
from diffpolicy.checkpoint import load_run_config
from diffpolicy.errors import UserError
from diffpolicy.evaluate import evaluate_run

FLOW = ("euler-1", "euler-2", "euler-4", "heun-2", "heun-3")  # 1, 2, 4, 3, 5 UNet calls
DIFFUSION = ("dpmpp-8", "ddim-4")
KEYS = ("success_rate", "normalized_entropy", "tv_to_demos", "interpolation_rate",
        "path_roughness_rel_demos", "chunk_latency_ms", "success_rate_ci95", "seed")  # fmt: skip
HEAD = ["run", "sampler", "UNet calls", "success", "entropy", "TV", "interp.", "path rough.",
        "latency ms"]  # fmt: skip


def setting(name: str) -> tuple[str, int]:
    sampler, _, steps = name.rpartition("-")
    if sampler not in bench.SAMPLER_NAMES or not steps.isdigit() or int(steps) < 1:
        raise argparse.ArgumentTypeError(f"{name!r} is not SAMPLER-STEPS (e.g. heun-3)")
    return sampler, int(steps)


def checked(name: str) -> str:  # argparse type: the name, once it parses
    setting(name)
    return name


def calls(name: str) -> int:
    return bench.unet_calls(*setting(name))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("flow_run", nargs="?")
    ap.add_argument("diffusion_run", nargs="?")
    ap.add_argument("--episodes", type=int, default=200)
    ap.add_argument("--select-seed", type=int, default=5000)
    ap.add_argument("--seed", type=int, default=9000, help="report seed")
    ap.add_argument("--name", default="flow", help="results file name")
    ap.add_argument("--flow", nargs="+", type=checked, default=list(FLOW), metavar="SAMPLER-STEPS")
    ap.add_argument("--diffusion", nargs="+", type=checked, default=list(DIFFUSION),
                    metavar="SAMPLER-STEPS")  # fmt: skip
    ap.add_argument("--results", default=str(RESULTS))
    ap.add_argument("--print-only", action="store_true")
    a = ap.parse_args()
    if not a.print_only:
        if not (a.flow_run and a.diffusion_run):
            ap.error("FLOW_RUN and DIFFUSION_RUN are needed (or --print-only)")
        if a.select_seed == a.seed:
            ap.error("the selection seed and the report seed must differ")
        try:
            env_id = load_run_config(a.flow_run).env_id
        except UserError as e:
            ap.error(str(e))
        if env_id not in bench.TARGETS:
            ap.error(f"no targets for {env_id}: one of {', '.join(bench.TARGETS)}")

        def ev(run, name, seed):
            sampler, steps = setting(name)
            r = evaluate_run(run, a.episodes, seed=seed, sampler=sampler, steps=steps,
                             progress=False)  # fmt: skip
            print(run, name, seed, {k: r[k] for k in KEYS[:4]}, flush=True)
            return {k: r.get(k) for k in KEYS}

        selection = {name: ev(a.flow_run, name, a.select_seed) for name in a.flow}
        passing = [(calls(n), n) for n in a.flow if bench.meets(selection[n], env_id)]
        rows = [("flow", n, a.flow_run) for n in a.flow]
        rows += [("diffusion", n, a.diffusion_run) for n in a.diffusion]
        report = {f"{kind} {n}": ev(run, n, a.seed) | {"calls": calls(n)}
                  for kind, n, run in rows}  # fmt: skip
        data = {"env_id": env_id, "episodes": a.episodes, "select_seed": a.select_seed,
                "report_seed": a.seed, "chosen": min(passing)[1] if passing else None,
                "selection": selection, "report": report, "flow_run": a.flow_run,
                "diffusion_run": a.diffusion_run}  # fmt: skip
        write_result(a.name, data, a.results)
    res = read_result(a.name, a.results)
    table = [
        [*name.split(" "), r["calls"], *(r[k] for k in KEYS[:6])]
        for name, r in res["report"].items()
    ]
    print(markdown_table(HEAD, table))
    seeds = f"chosen on seed {res['select_seed']}: {res['chosen']}"
    print(f"{seeds}; reported on seed {res['report_seed']}")


if __name__ == "__main__":
    main()
