"""README's quickstart table: collect -> train diffusion, mse, gmm -> evaluate -> report, timed.

    python scripts/quickstart.py [--out outputs/quickstart_bench] [key=value ...]
    python scripts/quickstart.py --print-only        # the table from results/quickstart.json

Target (issue: evaluation and quickstart): within 15 minutes on a 2-core machine after install.
"""

import argparse
import json
import time
from pathlib import Path

from diffpolicy.bench import RESULTS, SAMPLER_NAMES, markdown_table, read_result, write_result
from diffpolicy.config import load_config
from diffpolicy.quickstart import CONFIG, quickstart

KEYS = (
    "success_rate", "collision_rate", "normalized_entropy", "tv_to_demos", "interpolation_rate",
    "mode_probs", "demo_mode_probs", "chunk_latency_ms", "episodes", "success_rate_ci95",
    "normalized_entropy_ci95", "sampler", "steps", "action_steps", "seed",
)  # fmt: skip


def table(result: dict) -> str:
    cfg = load_config(CONFIG, tuple(result.get("overrides", ())))
    p = cfg.policy
    labels = {
        "diffusion": f"diffusion ({SAMPLER_NAMES[p.sampler]}, {p.num_inference_steps} steps)",
        "mse": "mse (regression)",
        "gmm": f"gmm ({p.gmm_components} components)",
    }
    keys = KEYS[:5]
    rows = [[labels.get(k, k), *(r.get(m) for m in keys)] for k, r in result["policies"].items()]
    head = ["policy", "success", "collision", "entropy", "TV to demos", "interpolation"]
    wall = f"{result['wall_seconds'] / 60:.1f} min end to end"
    return markdown_table(head, rows) + f"\n\n{wall} (target {result['target_seconds'] / 60:g})"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="outputs/quickstart_bench")
    ap.add_argument("--episodes", type=int, default=200, help="demos to collect")
    ap.add_argument("--eval-episodes", type=int, default=200)
    ap.add_argument("--results", default=str(RESULTS), help="directory of the results file")
    ap.add_argument("--print-only", action="store_true", help="print the table, run nothing")
    ap.add_argument("overrides", nargs="*", metavar="key=value")
    args = ap.parse_args()
    if not args.print_only:
        t0 = time.perf_counter()
        summary = quickstart(
            args.out, args.episodes, args.eval_episodes, overrides=tuple(args.overrides),
            progress=False,
        )  # fmt: skip
        wall = time.perf_counter() - t0
        data = {
            "wall_seconds": round(wall, 1),
            "target_seconds": 900,
            "stages": json.loads((Path(args.out) / "timings.json").read_text()),
            "overrides": args.overrides,
            "settings": {
                "demos": args.episodes,
                "eval_episodes": args.eval_episodes,
                "train_seed": load_config(CONFIG, tuple(args.overrides)).train.seed,
            },
            "policies": {k: {m: v.get(m) for m in KEYS} for k, v in summary.items()},
        }
        write_result("quickstart", data, args.results)
    print(table(read_result("quickstart", args.results)))


if __name__ == "__main__":
    main()
