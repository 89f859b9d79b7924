"""Chunk latency of the working tree against an earlier revision, in one process.

    python benchmarks/latency_vs_revision.py REV [--quick]   -> results/latency_vs_REV.json

Loads `diffpolicy/models/unet1d.py` and `diffpolicy/schedulers.py` as they were at git revision
REV (their `ConditionalUnet1D(...)`, `NoiseSchedule(T, beta_schedule)` and
`sample(denoiser, schedule, x_T, sampler=, steps=)`, as at 7ea7e28), builds that UNet with the
same weights as the current default policy, and times the old sampling loop (model called with
(x_t, t, cond) every step) against the current `predict_action_chunk(obs, Sampling(...))`,
interleaved call by call so both see the same machine load. One thread; wall and thread-CPU
medians.
"""

import argparse
import importlib.util
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

from diffpolicy.bench import ROOT, policy_from_config, random_obs, time_call, write_result
from diffpolicy.config import Sampling
from diffpolicy.policies.condition import global_condition

SETTINGS = (("ddim", 10), ("ddim", 16), ("dpmpp", 10), ("dpmpp", 6), ("ddpm", 100))


def module_at(rev: str, path: str, name: str):
    """The module `path` as it was at git revision `rev`, imported under `name`."""
    src = subprocess.run(
        ["git", "-C", str(ROOT), "show", f"{rev}:{path}"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    file = Path(tempfile.mkdtemp()) / f"{name}.py"
    file.write_text(src)
    spec = importlib.util.spec_from_file_location(name, file)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    spec.loader.exec_module(mod)
    return mod


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("rev")
    ap.add_argument("--quick", action="store_true", help="3 repeats, batch 1, no DDPM-100")
    ap.add_argument("--results", help="directory of the results file (default: benchmarks/results)")
    a = ap.parse_args()
    torch.set_num_threads(1)
    old_unet = module_at(a.rev, "diffpolicy/models/unet1d.py", "old_unet1d")
    old_sched = module_at(a.rev, "diffpolicy/schedulers.py", "old_schedulers")
    policy, cfg = policy_from_config("reach_around.yaml")
    policy.eval()
    m, p = cfg.model, cfg.policy
    old = old_unet.ConditionalUnet1D(
        cfg.dims["action_dim"],
        cfg.global_cond_dim,
        tuple(m.down_dims),
        m.kernel_size,
        m.n_groups,
        m.step_embed_dim,
    ).eval()
    old.load_state_dict(policy.model.state_dict())
    schedule = old_sched.NoiseSchedule(p.num_train_timesteps, p.beta_schedule)

    @torch.inference_mode()
    def old_predict(obs, sampler, steps):
        x_T = torch.randn(obs["obs"].shape[0], cfg.data.horizon, cfg.dims["action_dim"])
        cond = global_condition(policy, obs)
        x0 = old_sched.sample(
            lambda x, t: old(x, t, cond), schedule, x_T, sampler=sampler, steps=steps
        ).clamp(-1, 1)
        return policy.normalizer.unnormalize("action", x0)

    rows = []
    for batch in (1,) if a.quick else (1, 32):
        obs = random_obs(cfg, batch)
        for sampler, steps in SETTINGS:
            if (batch > 1 or a.quick) and sampler == "ddpm":
                continue
            new = Sampling(sampler, steps)
            fns = (
                lambda o=obs, s=sampler, n=steps: old_predict(o, s, n),
                lambda o=obs, s=new: policy.predict_action_chunk(o, s),
            )
            for fn in fns * 2:
                fn()
            res = ([], [])
            for _ in range(3 if a.quick else 5 if batch > 1 or steps == 100 else 25):
                for fn, r in zip(fns, res):
                    wall, cpu = time_call(fn, 1, warmup=0)
                    r.append((wall[0], cpu[0]))
            (bw, bc), (aw, ac) = [[statistics.median(x[k] for x in r) for k in (0, 1)] for r in res]
            rows.append(
                {
                    "batch": batch,
                    "sampler": sampler,
                    "steps": steps,
                    "before_wall_ms": bw,
                    "before_cpu_ms": bc,
                    "after_wall_ms": aw,
                    "after_cpu_ms": ac,
                    "speedup_wall": bw / aw,
                    "speedup_cpu": bc / ac,
                }
            )
            print(json.dumps(rows[-1]), flush=True)
    out = {"threads": 1, "revision": a.rev, "config": "reach_around.yaml", "rows": rows}
    write_result(f"latency_vs_{a.rev}", out, a.results)


if __name__ == "__main__":
    main()
