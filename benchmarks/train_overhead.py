"""Where `diffpolicy train`'s wall time goes at the quickstart config: training steps against
start-up (interpreter, imports, data, model), validation and checkpoints.

    python benchmarks/train_overhead.py [--config configs/reach_around.yaml] [--repeats 2]

Collects the quickstart's 200 demos (seed 0) into a temporary directory, then runs the train
command `--repeats` times in a fresh process, each its own run directory. Per run: the
command's wall time, and the split that `train` writes as the `time_s` record of its
metrics.jsonl. Two shares: of the command (with the interpreter and the imports) and of the
`train()` call (the quickstart's training stage, which runs in an already started process).
-> results/train_overhead.json
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from diffpolicy import bench  # noqa: E402


def main() -> None:
    from diffpolicy.checkpoint import read_metrics
    from diffpolicy.collect import collect

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default="configs/reach_around.yaml")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--results", default=str(bench.RESULTS))
    a = ap.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        demos = str(Path(tmp) / "demos.hdf5")
        collect("diffpolicy/ReachAround-v0", 200, demos, workers=2, seed=0, progress=False)
        for i in range(a.repeats):
            run = Path(tmp) / f"run{i}"
            _, wall = bench.run_cli("train", a.config, "--dataset", demos, "--out", str(run))
            spent = next(m["time_s"] for m in read_metrics(run) if "time_s" in m)
            inside = sum(spent.values())
            rows.append(
                {
                    "command_wall_s": wall,
                    "before_train_s": wall - inside,  # interpreter, imports, config, exit
                    **spent,
                    "non_step_share_of_command": 1 - spent["steps_s"] / wall,
                    "non_step_share_of_train_call": 1 - spent["steps_s"] / inside,
                }
            )
            print({k: round(v, 3) for k, v in rows[-1].items()})
    median = {k: statistics.median(r[k] for r in rows) for k in rows[0]}
    bench.write_result(
        "train_overhead",
        {"config": a.config, "demos": 200, "rows": rows, "median": median, "target_share": 0.05},
        a.results,
    )


if __name__ == "__main__":
    main()
