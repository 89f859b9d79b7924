"""Chunk latency of the working tree against an earlier revision, in one process.

    .venv/bin/python benchmarks/latency_vs_revision.py REV [--json FILE]

Loads `diffpolicy/models/unet1d.py` and `diffpolicy/schedulers.py` as they were at git revision
REV, builds that UNet with the same weights as the current default policy, and times the old
sampling loop (model called with (x_t, t, cond) every step) against the current
`predict_action_chunk`, interleaved call by call so both see the same machine load. One thread;
wall and thread-CPU medians.
"""

import argparse
import importlib.util
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from diffpolicy.bench import _obs, _policy, machine  # noqa: E402
from diffpolicy.policies.condition import global_condition  # noqa: E402


def module_at(rev: str, path: str, name: str):
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


def timed(fn) -> tuple[float, float]:
    t0, c0 = time.perf_counter(), time.thread_time()
    fn()
    return (time.perf_counter() - t0) * 1e3, (time.thread_time() - c0) * 1e3


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("rev")
    ap.add_argument("--json")
    a = ap.parse_args()
    torch.set_num_threads(1)
    old_unet = module_at(a.rev, "diffpolicy/models/unet1d.py", "old_unet1d")
    old_sched = module_at(a.rev, "diffpolicy/schedulers.py", "old_schedulers")
    policy, cfg = _policy("reach_around.yaml")
    policy.eval()
    m = cfg.model
    old = old_unet.ConditionalUnet1D(
        cfg.dims["action_dim"],
        cfg.global_cond_dim,
        tuple(m.down_dims),
        m.kernel_size,
        m.n_groups,
        m.step_embed_dim,
    ).eval()
    old.load_state_dict(policy.model.state_dict())
    schedule = old_sched.NoiseSchedule(cfg.policy.num_train_timesteps, cfg.policy.beta_schedule)

    @torch.inference_mode()
    def old_predict(obs, sampler, steps):
        x_T = torch.randn(obs["obs"].shape[0], cfg.data.horizon, cfg.dims["action_dim"])
        cond = global_condition(policy.normalizer, policy.cond_encoder, obs)
        x0 = old_sched.sample(
            lambda x, t: old(x, t, cond), schedule, x_T, sampler=sampler, steps=steps
        ).clamp(-1, 1)
        return policy.normalizer.unnormalize("action", x0)

    rows = []
    for batch in (1, 32):
        obs = _obs(cfg, batch)
        for sampler, steps in (
            ("ddim", 10),
            ("ddim", 16),
            ("dpmpp", 10),
            ("dpmpp", 6),
            ("ddpm", 100),
        ):
            if batch > 1 and sampler == "ddpm":
                continue
            fns = (
                lambda o=obs, s=sampler, n=steps: old_predict(o, s, n),
                lambda o=obs, s=sampler, n=steps: policy.predict_action_chunk(
                    o, sampler=s, steps=n
                ),
            )
            for fn in fns * 2:
                fn()
            res = ([], [])
            for _ in range(5 if batch > 1 or steps == 100 else 25):
                for fn, r in zip(fns, res):
                    r.append(timed(fn))
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
    out = {
        "machine": machine(),
        "threads": 1,
        "revision": a.rev,
        "config": "reach_around.yaml",
        "rows": rows,
    }
    if a.json:
        Path(a.json).write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
