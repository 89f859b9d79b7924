"""Collection throughput: expert episodes/s with 1 and 2 workers for every task.

    python benchmarks/collect.py [--episodes 200]

Target (issue: foundation): 200 ReachAround-v0 demos in <= 60 s with 2 workers.
"""

import argparse
import tempfile

from common import write_result

from diffpolicy.collect import collect

TASKS = ("diffpolicy/ReachAround-v0", "diffpolicy/ReachAroundMaze-v0", "diffpolicy/Pick-v0")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--episodes", type=int, default=200, help="ReachAround episodes")
    ap.add_argument("--others", type=int, default=50, help="episodes for the other tasks")
    args = ap.parse_args()
    rows = []
    for env_id in TASKS:
        n = args.episodes if env_id.endswith("ReachAround-v0") else args.others
        for workers in (1, 2):
            with tempfile.TemporaryDirectory() as d:
                s = collect(env_id, n, f"{d}/demos.hdf5", workers=workers, progress=False)
            rows.append(
                {
                    "env_id": env_id,
                    "workers": workers,
                    "episodes": s.kept,
                    "tried": s.tried,
                    "seconds": round(s.seconds, 2),
                    "episodes_per_s": round(s.kept / s.seconds, 2),
                }
            )
            print(rows[-1])
    target = next(r for r in rows if r["env_id"].endswith("ReachAround-v0") and r["workers"] == 2)
    write_result(
        "collect",
        {
            "rows": rows,
            "target_seconds_200_reach_2_workers": 60,
            "measured_seconds": target["seconds"] * 200 / target["episodes"],
        },
    )


if __name__ == "__main__":
    main()
