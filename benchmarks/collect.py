"""Collection throughput: expert episodes/s with 1 and 2 workers for every task.

    python benchmarks/collect.py [--episodes 200] [--others 50]

Target (issue: foundation): 200 ReachAround-v0 demos in <= 60 s with 2 workers.
"""

import argparse

from diffpolicy.bench import RESULTS, bench_collect, write_result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--episodes", type=int, default=200, help="ReachAround episodes")
    ap.add_argument("--others", type=int, default=50, help="episodes for the other tasks")
    ap.add_argument("--results", default=str(RESULTS), help="directory of the results file")
    args = ap.parse_args()
    rows = bench_collect(False, args.episodes, args.others)
    target = next(r for r in rows if r["env_id"].endswith("ReachAround-v0") and r["workers"] == 2)
    write_result(
        "collect",
        {
            "rows": rows,
            "target_seconds_200_reach_2_workers": 60,
            "measured_seconds": target["seconds"] * 200 / target["episodes"],
        },
        args.results,
    )


if __name__ == "__main__":
    main()
