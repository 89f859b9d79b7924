"""The quickstart end to end (collect -> train x3 -> evaluate x3 -> report), timed.

    python benchmarks/quickstart.py [--out outputs/quickstart_bench]

Target (issue: evaluation and quickstart): within 15 minutes on a 2-core machine after install.
Records the wall time per stage and the comparison table's numbers.
"""

import argparse
import json
import time
from pathlib import Path

from common import write_result

from diffpolicy.quickstart import quickstart


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="outputs/quickstart_bench")
    ap.add_argument("overrides", nargs="*")
    args = ap.parse_args()
    t0 = time.perf_counter()
    summary = quickstart(args.out, overrides=tuple(args.overrides), progress=False)
    wall = time.perf_counter() - t0
    timings = json.loads((Path(args.out) / "timings.json").read_text())
    keys = (
        "success_rate",
        "collision_rate",
        "normalized_entropy",
        "tv_to_demos",
        "interpolation_rate",
        "mode_probs",
        "demo_mode_probs",
        "chunk_latency_ms",
        "episodes",
        "success_rate_ci95",
        "normalized_entropy_ci95",
    )
    write_result(
        "quickstart",
        {
            "wall_seconds": round(wall, 1),
            "target_seconds": 900,
            "stages": timings,
            "overrides": args.overrides,
            "policies": {k: {m: v.get(m) for m in keys} for k, v in summary.items()},
        },
    )


if __name__ == "__main__":
    main()
