"""README's smoothing table: one run sampled with its own sampler, keeping the chunk's K lowest
temporal frequencies in every reverse step (`policy.lowpass`, `eval --lowpass K`).

    python scripts/lowpass.py RUN_DIR --seed SEED [--k 0 3 4 6 8] [--rtc] [--delay D]
                              [--name NAME] [--episodes 200]
    python scripts/lowpass.py --print-only [--name NAME]

Writes benchmarks/results/NAME.json (default lowpass_<seed>): per K, success, entropy, TV,
interpolation, path and action roughness relative to the demos', boundary jump, mode-switch
rate and chunk latency. K is chosen on a validation seed and reported on another.
"""

import argparse

from execution import HEAD as EXECUTION_HEAD  # scripts/execution.py: the same columns
from execution import KEYS

from diffpolicy.bench import RESULTS, markdown_table, read_result, write_result
from diffpolicy.evaluate import evaluate_run

HEAD = ["lowpass K", *EXECUTION_HEAD[1:]]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run", nargs="?")
    ap.add_argument("--seed", type=int)
    ap.add_argument("--k", type=int, nargs="+", default=[0, 3, 4, 6, 8])
    ap.add_argument("--rtc", action="store_const", const=True, help="with real-time chunking")
    ap.add_argument("--delay", type=int, help="simulated inference delay D")
    ap.add_argument("--episodes", type=int, default=200)
    ap.add_argument("--envs", type=int, default=8)
    ap.add_argument("--name", help="results file name (default lowpass_<seed>)")
    ap.add_argument("--results", default=str(RESULTS))
    ap.add_argument("--print-only", action="store_true")
    a = ap.parse_args()
    name = a.name or f"lowpass_{a.seed}"
    if not a.print_only:
        if a.run is None or a.seed is None:
            ap.error("RUN_DIR and --seed are required unless --print-only")
        rows = {}
        for k in a.k:
            r = evaluate_run(a.run, a.episodes, n_envs=a.envs, seed=a.seed, lowpass=k,
                             rtc=a.rtc, delay=a.delay, progress=False)  # fmt: skip
            rows[str(k)] = {key: r.get(key) for key in KEYS} | {"run_dir": a.run}
            print(k, {key: rows[str(k)][key] for key in KEYS[:9]}, flush=True)
        write_result(name, {"episodes": a.episodes, "rows": rows}, a.results)
    rows = read_result(name, a.results)["rows"]
    print(markdown_table(HEAD, [[k, *(v[m] for m in KEYS[:9])] for k, v in rows.items()]))


if __name__ == "__main__":
    main()
