"""Evaluation throughput: episodes/min with 1, 2 and 8 envs, and where the time goes.

    python benchmarks/eval_throughput.py RUN_DIR [--episodes 48]

Time shares: policy = inside predict_action_chunk; physics = inside env.step; the rest is
controller/bookkeeping overhead.
"""

import argparse
import time

import torch
from common import write_result

from diffpolicy.checkpoint import load_policy
from diffpolicy.rollout import rollout


def timed_env_step(counter: dict):
    """Wrap gymnasium's Env.step of the diffpolicy envs to accumulate physics time."""
    import envs.pick
    import envs.reach_around

    for cls in (envs.reach_around.ReachAroundEnv, envs.pick.PickEnv):
        original = cls.step

        def step(self, action, _orig=original):
            t0 = time.perf_counter()
            try:
                return _orig(self, action)
            finally:
                counter["physics_s"] += time.perf_counter() - t0

        cls.step = step


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("run_dir")
    ap.add_argument("--episodes", type=int, default=48)
    args = ap.parse_args()
    torch.set_num_threads(1)
    policy, cfg = load_policy(args.run_dir)
    counter = {"physics_s": 0.0}
    timed_env_step(counter)
    rows = []
    for n_envs in (1, 2, 8):
        counter["physics_s"] = 0.0
        records, stats = rollout(policy, cfg, args.episodes, n_envs=n_envs, progress=False)
        total = stats["seconds"]
        rows.append(
            {
                "envs": n_envs,
                "episodes": args.episodes,
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
    )


if __name__ == "__main__":
    main()
