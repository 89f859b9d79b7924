"""README's execution table: samplers and delay strategies side by side on one trained run.

    python scripts/execution.py RUN_DIR [--student RUN] [--episodes 200] [--seed 11000]
    python scripts/execution.py MAZE_RUN --rows maze --episodes 480   # -> execution_maze.json
    python scripts/execution.py --print-only [--rows maze]  # the table from its results file

Each row is one evaluation of RUN_DIR (200 episodes, one seed) with another sampler, with the
chunk's lowest temporal frequencies kept (`--lowpass`), or with a simulated inference delay D
executed naively or with real-time chunking (and, with --student, the student's rows):
success, entropy, TV, interpolation, path roughness relative to the demos', chunk-boundary
jump relative to the within-chunk step, mode-switch rate and chunk latency (batch of the
re-planning slots, one thread). Choices (samplers, D, lowpass K) are made on other seeds than
the one reported (`--seed`; K = 6 on seed 1000: benchmarks/results/lowpass_*1000*.json).
"""

import argparse

from diffpolicy.bench import RESULTS, SAMPLER_NAMES, markdown_table, read_result, write_result
from diffpolicy.checkpoint import load_run_config
from diffpolicy.errors import UserError
from diffpolicy.evaluate import evaluate_run

ROWS = (  # (label, evaluate_run keyword arguments); {run}: the run's own sampler and steps
    ("DDPM-100", {"sampler": "ddpm", "steps": 100}),
    ("DDIM-16", {"sampler": "ddim", "steps": 16}),
    ("DDIM-8", {"sampler": "ddim", "steps": 8}),
    ("DDIM-4", {"sampler": "ddim", "steps": 4}),
    ("DPM-Solver++ 8", {"sampler": "dpmpp", "steps": 8}),
    ("{run} (default)", {}),
    ("{run}, D=2 naive", {"delay": 2}),
    ("{run}, D=2 real-time chunking", {"delay": 2, "rtc": True}),
    ("{run}, D=0 real-time chunking", {"rtc": True}),
    ("{run}, temporal ensembling", {"temporal_ensemble": 0.01}),  # ACT's m; re-plans every step
    ("{run}, lowpass 6", {"lowpass": 6}),
    ("{run}, lowpass 6 + real-time chunking", {"lowpass": 6, "rtc": True}),
)
MAZE_ROWS = (  # does real-time chunking let the maze re-plan 4x less often?
    ("Ta 2 (the maze config)", {}),
    ("Ta 8, naive", {"action_steps": 8}),
    ("Ta 8, real-time chunking", {"action_steps": 8, "rtc": True}),
    ("Ta 8, lowpass 6 + real-time chunking", {"action_steps": 8, "rtc": True, "lowpass": 6}),
)
STUDENT_ROWS = (  # a distilled student's defaults are lowpass 6 + real-time chunking
    ("2-step student (lowpass 6 + real-time chunking)", {}),
    ("2-step student, D=2 (lowpass 6 + real-time chunking)", {"delay": 2}),
    ("2-step student, no lowpass, no real-time chunking", {"lowpass": 0, "rtc": False}),
)
KEYS = (
    "success_rate", "normalized_entropy", "tv_to_demos", "interpolation_rate",
    "path_roughness_rel_demos", "action_roughness_rel_demos", "boundary_jump_ratio",
    "mode_switch_rate", "chunk_latency_ms", "success_rate_ci95", "path_roughness_rel_demos_ci95",
    "boundary_jump_ratio_ci95", "sampler", "steps", "lowpass", "action_steps", "delay", "rtc",
    "temporal_ensemble", "seed", "episodes", "mean_batch_size",
)  # fmt: skip
HEAD = ["setting", "success", "entropy", "TV", "interp.", "path rough. / demos",
        "action rough. / demos", "boundary jump", "mode switch", "latency ms"]  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run", nargs="?")
    ap.add_argument("--student", help="a distilled student of RUN: its rows too")
    ap.add_argument("--episodes", type=int, default=200)
    ap.add_argument("--seed", type=int, default=11000, help="report seed (not used for choices)")
    ap.add_argument("--envs", type=int, default=8)
    ap.add_argument("--results", default=str(RESULTS))
    ap.add_argument("--print-only", action="store_true")
    ap.add_argument("--rows", choices=("reach", "maze"), default="reach")
    args = ap.parse_args()
    name = "execution_maze" if args.rows == "maze" else "execution"
    if not args.print_only:
        try:
            p = load_run_config(args.run).policy
        except UserError as e:
            ap.error(str(e))
        run = f"{SAMPLER_NAMES[p.sampler]} {p.num_inference_steps}"
        rows = [(label.format(run=run), args.run, kw)
                for label, kw in (MAZE_ROWS if args.rows == "maze" else ROWS)]  # fmt: skip
        if args.student:
            rows += [(label, args.student, kw) for label, kw in STUDENT_ROWS]
        results = {}
        for label, run, kw in rows:
            r = evaluate_run(run, args.episodes, n_envs=args.envs, seed=args.seed, **kw)
            results[label] = {k: r.get(k) for k in KEYS} | {"run_dir": run}
            print(label, {k: results[label][k] for k in KEYS[:9]}, flush=True)
        write_result(name, {"episodes": args.episodes, "rows": results}, args.results)
    rows = read_result(name, args.results)["rows"]
    print(markdown_table(HEAD, [[k, *(v[m] for m in KEYS[:9])] for k, v in rows.items()]))


if __name__ == "__main__":
    main()
