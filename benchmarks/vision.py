"""Camera observations: what they cost to render, collect, train on, hold in RAM and sample.

    python benchmarks/vision.py [--quick] [--run RUN_DIR] [--student STUDENT_DIR]
                                                   -> benchmarks/results/vision_speed.json

- render: ms per frame of ReachAround-v0's top camera with the Panda's visual meshes and with
  the low-poly meshes camera envs use (envs/panda.py), at 64, 96 and 128 pixels; and ms per env
  step without and with a 64x64 camera, per task.
- collect: expert episodes/s with the task's camera (64x64), 1 and 2 workers, all three tasks.
- train: samples/s of the library's training step for configs/reach_around_vision.yaml (small
  CNN) and the same with model.vision_backbone=resnet18, on synthetic 64x64 windows, with the
  shares of the step spent gathering the batch (`take`) and converting + cropping the frames.
- memory: peak RSS of a process that loads a file of N Pick-sized image episodes (one 64x64
  camera, 22 steps each, the mean of 1,000 real Pick demos; synthetic frames) and trains 20
  steps on it, N = 1,000 and 5,000.
- latency: ms per chunk at batch 1 on one thread, encoder included, for the vision config and
  its 2-step student settings (a trained `--run` / `--student` when given, else fresh weights:
  latency does not depend on the weights).
- vector_env: env steps/s of 8 camera envs in this process and in worker processes.
- eval: episodes per minute of `--run` with 1, 2 and 8 env slots.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from diffpolicy import bench  # noqa: E402

VISION = "reach_around_vision.yaml"
PICK_STEPS = 22  # mean length of 1,000 Pick-v0 expert demos
DIMS = {**bench.DIMS, "goal_dim": 0, "image_height": 64, "image_width": 64}


def render_rows(quick: bool) -> list[dict]:
    import gymnasium

    import envs  # noqa: F401  (registers the ids)

    rows = []
    for low_poly in (False, True):
        env = gymnasium.make("diffpolicy/ReachAround-v0", cameras=("top",) if low_poly else ())
        u = env.unwrapped
        env.reset(seed=0)
        for size in (64, 96, 128):
            wall, _ = bench.time_call(
                lambda s=size, u=u: u.scene.render(s, s, **u.CAMERAS["top"]), 10 if quick else 40
            )
            rows.append({"robot_meshes": "low-poly" if low_poly else "visual", "size": size,
                         "ms_per_frame": statistics.median(wall)})  # fmt: skip
            print(f"render {rows[-1]}", flush=True)
        env.close()
    return rows


def step_rows(quick: bool) -> list[dict]:
    import gymnasium
    import numpy as np

    import envs

    rows = []
    for env_id in bench.TASKS:
        for cams in ((), (bench.CAMERA[env_id],)):
            env = gymnasium.make(env_id, cameras=cams)
            obs, _ = env.reset(seed=0)
            expert = envs.make_expert(env, rng=np.random.default_rng(0))
            expert.reset(obs)
            n, t0 = 0, time.perf_counter()
            while n < (30 if quick else 200):
                obs, _, term, trunc, _ = env.step(expert.act(obs))
                n += 1
                if term or trunc:
                    obs, _ = env.reset(seed=n)
                    expert.reset(obs)
            rows.append({"env_id": env_id, "cameras": list(cams),
                         "ms_per_step": (time.perf_counter() - t0) / n * 1e3})  # fmt: skip
            print(f"step {rows[-1]}", flush=True)
            env.close()
    return rows


def vector_rows(quick: bool) -> list[dict]:
    """Env steps/s of 8 ReachAround envs with the top camera, stepped in this process
    (gymnasium's SyncVectorEnv, as rollouts do) and one worker process each (AsyncVectorEnv)."""
    import gymnasium

    rows = []
    make = [lambda: gymnasium.make("envs:diffpolicy/ReachAround-v0", cameras=("top",))] * 8
    for name, cls in (("sync", gymnasium.vector.SyncVectorEnv),
                      ("async", gymnasium.vector.AsyncVectorEnv)):  # fmt: skip
        kwargs = {"context": "spawn"} if name == "async" else {}
        venv = cls(make, **kwargs)
        venv.reset(seed=0)
        n, t0 = 20 if quick else 200, time.perf_counter()
        for _ in range(n):
            venv.step(venv.action_space.sample())
        rows.append({"vector_env": name, "envs": 8,
                     "env_steps_per_s": 8 * n / (time.perf_counter() - t0)})  # fmt: skip
        print(f"vector {rows[-1]}", flush=True)
        venv.close()
    return rows


def train_rows(quick: bool) -> list[dict]:
    import torch

    from diffpolicy.models.vision import crop_images

    torch.set_num_threads(2)
    rows = []
    for backbone, batch in (("small", 64), ("resnet18", 16)):
        overrides = (f"model.vision_backbone={backbone}", f"train.batch_size={batch}")
        policy, cfg = bench.policy_from_config(VISION, overrides, DIMS)
        step = bench.LibraryTrainStep(policy, cfg, bench.synthetic_windows(cfg, 4096))
        for _ in range(3):
            step()
        step.reset_times()
        n = 5 if quick else 30
        for _ in range(n):
            step()
        seconds = sum(step.seconds.values())
        frames = bench.random_obs(cfg, batch)[cfg.data.image_keys[0]].flatten(0, 1)
        frames = frames.permute(0, 3, 1, 2)

        def augment(x=frames, hw=cfg.crop_hw):
            return crop_images(x.float() / 127.5 - 1.0, hw, random=True)

        wall, _ = bench.time_call(augment, 20)
        aug_s = statistics.median(wall) / 1e3 * len(cfg.data.image_keys)
        rows.append({
            "backbone": backbone, "batch": batch, "threads": 2,
            "samples_per_s": n * batch / seconds,
            "data_share": step.seconds["data"] / seconds,
            "augment_share": aug_s / (seconds / n),
        })  # fmt: skip
        print(f"train {rows[-1]}", flush=True)
    return rows


MEMORY_CHILD = """
import resource, sys, h5py, numpy as np
sys.path.insert(0, {root!r})
from diffpolicy.config import load_config, with_dataset
from diffpolicy.train import train
path, n, T = sys.argv[1], int(sys.argv[2]), {steps}
rng = np.random.default_rng(0)
base = rng.integers(0, 256, (T, 64, 64, 3), dtype=np.uint8)  # synthetic frames, reused
with h5py.File(path, "w") as f:
    f.create_group("data").attrs["env_args"] = '{{"env_name": "diffpolicy/Pick-v0"}}'
    for i in range(n):
        g = f.create_group(f"data/demo_{{i}}")
        g["actions"] = rng.normal(size=(T, 4)).astype(np.float32)
        g["obs/proprio"] = rng.normal(size=(T, 4)).astype(np.float32)
        g["obs/front_image"] = np.roll(base, i, axis=2)
cfg = load_config({config!r}, ["train.steps=20", "train.val_every=1000",
                               "train.checkpoint_every=1000"])
train(with_dataset(cfg, path), path + ".run", progress=False)
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
"""


def memory_rows(quick: bool) -> list[dict]:
    rows = []
    for n in (100,) if quick else (1000, 5000):
        with tempfile.TemporaryDirectory() as d:
            code = MEMORY_CHILD.format(
                root=str(ROOT), config=str(bench.CONFIGS / "pick_vision.yaml"), steps=PICK_STEPS
            )
            out = subprocess.run([sys.executable, "-c", code, f"{d}/x.hdf5", str(n)],
                                 capture_output=True, text=True, check=True)  # fmt: skip
        frames_gib = n * PICK_STEPS * 64 * 64 * 3 / 2**30
        rows.append({"episodes": n, "steps_per_episode": PICK_STEPS, "image": [64, 64, 3],
                     "frames_gib": frames_gib,
                     "peak_rss_gib": int(out.stdout.split()[-1]) / 2**30})  # fmt: skip
        print(f"memory {rows[-1]}", flush=True)
    return rows


def latency_rows(run: str | None, student: str | None, quick: bool) -> list[dict]:
    import torch

    from diffpolicy.checkpoint import load_policy
    from diffpolicy.config import Sampling
    from diffpolicy.policies.condition import observation_features

    reps = 20 if quick else 100
    rows = []
    for label, path, overrides in (
        ("vision", run, ()),
        ("vision 2-step student", student, bench.student_overrides()),
    ):
        if path:
            policy, cfg = load_policy(path)
        else:
            policy, cfg = bench.policy_from_config(VISION, overrides, DIMS)
            policy.eval()
        sampling = Sampling.of(cfg.policy)
        row = bench.latency_row(policy, cfg, label, 1, 1, sampling, reps)
        obs = bench.random_obs(cfg, 1)
        with torch.inference_mode():  # the camera encoder alone (eager, once per chunk)
            wall, _ = bench.time_call(lambda o=obs, p=policy: observation_features(p, o), reps)
        rows.append({**row, "weights": path or "fresh", "encoder_ms": statistics.median(wall)})
        print(f"  of which the encoder: {rows[-1]['encoder_ms']:.2f} ms", flush=True)
    return rows


def eval_rows(run: str | None, quick: bool) -> list[dict]:
    from diffpolicy.evaluate import evaluate_run

    rows = []
    if not run:
        return rows
    episodes = 8 if quick else 40
    for n_envs in (1, 2, 8):
        t0 = time.perf_counter()
        result = evaluate_run(run, episodes, n_envs=n_envs, progress=False, seed=50_000)
        minutes = (time.perf_counter() - t0) / 60
        rows.append({"envs": n_envs, "episodes": episodes, "episodes_per_min": episodes / minutes,
                     "success_rate": result["success_rate"]})  # fmt: skip
        print(f"eval {rows[-1]}", flush=True)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--run", help="a trained vision run (latency, eval throughput)")
    ap.add_argument("--student", help="its 2-step student (latency)")
    ap.add_argument("--out", default="vision_speed")
    a = ap.parse_args()
    data = {
        "render": render_rows(a.quick),
        "env_step": step_rows(a.quick),
        "vector_env": vector_rows(a.quick),
        "collect": bench.bench_collect(a.quick, 40, 20, image_size=64),
        "train": train_rows(a.quick),
        "memory": memory_rows(a.quick),
        "latency": latency_rows(a.run, a.student, a.quick),
        "eval": eval_rows(a.run, a.quick),
    }
    print("wrote", bench.write_result(a.out, data))


if __name__ == "__main__":
    main()
