"""Evaluation throughput: episodes/min with 1, 2 and 8 envs, and where the time goes.

    python benchmarks/eval_throughput.py RUN_DIR [--episodes 48]

Time shares: policy = inside predict_action_chunk; physics = inside env.step; the rest is
controller/bookkeeping overhead.
"""

import argparse
import time

import torch

from diffpolicy.bench import RESULTS, write_result
from diffpolicy.checkpoint import load_policy
from diffpolicy.rollout import rollout


def timed_env_step(counter: dict) -> None:
    """Wrap the step of every task env (envs.base.PandaEnv.step) to accumulate physics time."""
    from envs.base import PandaEnv

    original = PandaEnv.step

    def step(self, action):
        t0 = time.perf_counter()
        try:
            return original(self, action)
        finally:
            counter["physics_s"] += time.perf_counter() - t0

    PandaEnv.step = step


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run_dir")
    ap.add_argument("--episodes", type=int, default=48)
    ap.add_argument("--envs", type=int, nargs="+", default=[1, 2, 8])
    ap.add_argument("--results", default=str(RESULTS), help="directory of the results file")
    args = ap.parse_args()
    torch.set_num_threads(1)
    policy, cfg = load_policy(args.run_dir)
    counter = {"physics_s": 0.0}
    timed_env_step(counter)
    rows = []
    for n_envs in args.envs:
        counter["physics_s"] = 0.0
        records, stats = rollout(
            policy, cfg, args.episodes, n_envs=n_envs, seed=cfg.eval.seed, progress=False
        )
        total = stats["seconds"]
        rows.append(
            {
                "envs": n_envs,
                "episodes": args.episodes,
                "seed": cfg.eval.seed,
                "seconds": round(total, 2),
                "episodes_per_min": round(60 * args.episodes / total, 1),
                "share_policy": round(stats["policy_seconds"] / total, 3),
                "share_physics": round(counter["physics_s"] / total, 3),
                "share_overhead": round(
                    1 - (stats["policy_seconds"] + counter["physics_s"]) / total, 3
                ),
                "success_rate": sum(r.success for r in records) / len(records),
            }
        )
        print(rows[-1])
    write_result(
        "eval_throughput",
        {
            "run_dir": args.run_dir,
            "env_id": cfg.env_id,
            "sampler": cfg.policy.sampler,
            "steps": cfg.policy.num_inference_steps,
            "rows": rows,
        },
        args.results,
    )


if __name__ == "__main__":
    main()
