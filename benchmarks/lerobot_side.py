"""The lerobot side of benchmarks/lerobot_io.py: run by the Python of an environment that has the
real `lerobot` package (it pins an older torch than diffpolicy, so it cannot share a venv).
It imports nothing from diffpolicy.

    python benchmarks/lerobot_side.py read DIR OUT.npz
        open DIR with lerobot's LeRobotDataset and save every frame it serves (state, action,
        task, camera frames as uint8 HWC) and its versions to OUT.npz
    python benchmarks/lerobot_side.py write DIR OUT.npz [--episodes N] [--size S]
        write a new dataset with LeRobotDataset.create / add_frame / save_episode (a point that
        moves to the left or the right goal, a camera drawing it) and save what it was given
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

TASKS = ("move the point to the left goal", "move the point to the right goal")


def versions() -> dict:
    import importlib.metadata as md

    names = ("lerobot", "torch", "torchvision", "datasets", "pyarrow", "av", "huggingface-hub")
    return {n: md.version(n) for n in names}


def read(root: Path, out: Path) -> None:
    from lerobot.datasets.lerobot_dataset import LeRobotDataset

    t0 = time.perf_counter()
    ds = LeRobotDataset("local/diffpolicy-export", root=root, video_backend="pyav")
    cams = list(ds.meta.video_keys) + list(ds.meta.image_keys)
    keys = [k for k in ("observation.state", "observation.environment_state", "action")
            if k in ds.features]  # fmt: skip
    got: dict[str, list] = {k: [] for k in [*keys, *cams, "episode_index", "frame_index", "mode"]}
    tasks = []
    for i in range(len(ds)):
        item = ds[i]
        for k in keys:
            got[k].append(item[k].numpy())
        for k in cams:  # float CHW in [0, 1] -> uint8 HWC
            got[k].append((item[k].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8))
        for k in ("episode_index", "frame_index", "mode"):
            if k in item:
                got[k].append(int(item[k]))
        tasks.append(item["task"])
    arrays = {k: np.stack(v) for k, v in got.items() if v}
    meta = {
        "versions": versions(),
        "fps": ds.fps,
        "num_episodes": ds.num_episodes,
        "num_frames": ds.num_frames,
        "cameras": cams,
        "stats_keys": sorted(ds.meta.stats),
        "seconds": time.perf_counter() - t0,
    }
    np.savez_compressed(out, tasks=np.array(tasks), meta=json.dumps(meta), **arrays)
    print(json.dumps(meta))


def write(root: Path, out: Path, episodes: int, size: int) -> None:
    from lerobot.datasets.lerobot_dataset import LeRobotDataset

    features = {
        "observation.state": {"dtype": "float32", "shape": (2,), "names": ["x", "y"]},
        "action": {"dtype": "float32", "shape": (2,), "names": ["vx", "vy"]},
        "observation.images.cam": {
            "dtype": "video", "shape": (size, size, 3), "names": ["height", "width", "channels"],
        },
    }  # fmt: skip
    ds = LeRobotDataset.create("local/lerobot-written", fps=10, features=features, root=root,
                               use_videos=True, robot_type="point")  # fmt: skip
    rng = np.random.default_rng(0)
    given: dict[str, list] = {"state": [], "action": [], "image": [], "mode": [], "length": []}
    for e in range(episodes):
        mode = e % 2
        goal = np.array([-0.5 if mode == 0 else 0.5, 1.0])
        pos = rng.uniform(-0.1, 0.1, 2)
        length = int(rng.integers(12, 20))
        for _ in range(length):
            action = np.clip((goal - pos) * 0.5, -0.1, 0.1).astype(np.float32)
            image = np.zeros((size, size, 3), np.uint8)
            r, c = (np.clip((1 - pos[::-1] * [1, -1]) * size / 2, 0, size - 2)).astype(int)
            image[max(r - 2, 0) : r + 2, max(c - 2, 0) : c + 2] = (255, 200, 40)
            frame = {"observation.state": pos.astype(np.float32), "action": action,
                     "observation.images.cam": image, "task": TASKS[mode]}  # fmt: skip
            ds.add_frame(frame)
            given["state"].append(pos.astype(np.float32))
            given["action"].append(action)
            given["image"].append(image)
            pos = pos + action
        ds.save_episode()
        given["mode"].append(mode)
        given["length"].append(length)
    ds.finalize()
    arrays = {k: np.stack(v) if k in ("state", "action", "image") else np.array(v)
              for k, v in given.items()}  # fmt: skip
    np.savez_compressed(out, tasks=np.array(TASKS), versions=json.dumps(versions()), **arrays)
    print(json.dumps({"episodes": episodes, "frames": int(sum(given["length"])), **versions()}))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("action", choices=("read", "write"))
    ap.add_argument("root", type=Path)
    ap.add_argument("out", type=Path)
    ap.add_argument("--episodes", type=int, default=20)
    ap.add_argument("--size", type=int, default=32)
    a = ap.parse_args()
    if a.action == "read":
        read(a.root, a.out)
    else:
        write(a.root, a.out, a.episodes, a.size)


if __name__ == "__main__":
    main()
