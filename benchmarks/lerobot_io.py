"""LeRobotDataset v3: export / import time on 200-episode ReachAround files, the round trip, and
the check against the real lerobot library.   -> benchmarks/results/lerobot.json

    python benchmarks/lerobot_io.py [--lerobot-python PATH] [--episodes 200]

- time: wall seconds of `diffpolicy export` and `diffpolicy import` (whole commands, start-up
  included) for a state-only file and one with a 64x64 front camera (target: each < 60 s);
- round trip: HDF5 -> LeRobot -> HDF5, the arrays and attributes that differ (none expected)
  and the camera frames' mean |error| per uint8 value (AV1 is lossy);
- with --lerobot-python (the Python of a venv with `pip install lerobot`; lerobot 0.4.4 pins
  torch < 2.11, so it cannot share diffpolicy's venv): lerobot's LeRobotDataset opens both
  exports and serves the same states, actions, tasks and frames; a dataset written by
  LeRobotDataset's own API (benchmarks/lerobot_side.py write) imports and a policy trains on
  it (the debug config, state + camera).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from diffpolicy import bench, lerobot  # noqa: E402
from diffpolicy.collect import collect  # noqa: E402
from diffpolicy.dataset import load_demos  # noqa: E402

SIDE = ROOT / "benchmarks" / "lerobot_side.py"


def timed_cli(*args: str) -> float:
    return bench.run_cli(*args)[1]


def side(python: str, *args: str) -> dict:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "SVT_LOG": "1"}
    p = subprocess.run([python, str(SIDE), *args], check=True, capture_output=True, text=True,
                       env=env)  # fmt: skip
    return json.loads(p.stdout.strip().splitlines()[-1])


def lerobot_view(python: str, exported: Path, demos, work: Path) -> dict:
    """What lerobot's LeRobotDataset serves for `exported`, compared with the HDF5 `demos`."""
    meta = side(python, "read", str(exported), str(work / "read.npz"))
    got = np.load(work / "read.npz")
    groups = json.loads((exported / "meta/info.json").read_text())["diffpolicy"]["state_keys"]
    eps = demos.episodes
    out = {"seconds": meta["seconds"], "versions": meta["versions"], "fps": meta["fps"],
           "episodes": meta["num_episodes"], "frames": meta["num_frames"]}  # fmt: skip
    for name, keys in groups.items():
        want = np.concatenate([np.concatenate([e.obs[k].reshape(len(e), -1) for k, _ in keys], 1)
                               for e in eps])  # fmt: skip
        out[f"{name}_identical"] = bool(np.array_equal(got[name], want))
    out["action_identical"] = bool(
        np.array_equal(got["action"], np.concatenate([e.actions for e in eps]))
    )
    tasks = [e.instruction for e in eps for _ in range(len(e))]
    out["tasks_identical"] = [str(t) for t in got["tasks"]] == tasks
    out["modes_identical"] = got["mode"].tolist() == [e.mode for e in eps for _ in range(len(e))]
    for cam in meta["cameras"]:
        key = lerobot.video_name(cam)
        frames = np.concatenate([e.obs[key] for e in eps])
        out[f"{cam}_pixel_error"] = float(np.abs(got[cam].astype(np.int16) - frames).mean())
    return out


def lerobot_written(python: str, work: Path, episodes: int) -> dict:
    """A dataset written by lerobot's API: import it, compare, train the debug config on it."""
    made = side(python, "write", str(work / "written"), str(work / "given.npz"),
                "--episodes", str(episodes), "--size", "64")  # fmt: skip
    seconds = timed_cli("import", str(work / "written"), "--out", str(work / "written.hdf5"))
    d = load_demos(work / "written.hdf5")
    given = np.load(work / "given.npz")
    frames = np.concatenate([e.obs["cam_image"] for e in d.episodes])
    train = ["train", "configs/debug.yaml", "--dataset", str(work / "written.hdf5"),
             "--out", str(work / "run"), "data.obs_keys=[state]", "data.image_keys=[cam_image]",
             "data.goal_key=null", "train.steps=200"]  # fmt: skip
    train_seconds = timed_cli(*train)
    log = [json.loads(x) for x in (work / "run/metrics.jsonl").read_text().splitlines() if x]
    val = [r["val_loss"] for r in log if "val_loss" in r]
    return {
        "written_by": made,
        "import_seconds": seconds,
        "episodes": len(d.episodes),
        "state_identical": bool(
            np.array_equal(np.concatenate([e.obs["state"] for e in d.episodes]), given["state"])
        ),
        "action_identical": bool(
            np.array_equal(np.concatenate([e.actions for e in d.episodes]), given["action"])
        ),
        "tasks_identical": [e.instruction for e in d.episodes]
        == [str(given["tasks"][m]) for m in given["mode"]],
        "pixel_error": float(np.abs(frames.astype(np.int16) - given["image"]).mean()),
        "train_command": "diffpolicy " + " ".join(train).replace(str(work), "<tmp>"),
        "train_seconds": train_seconds,
        "trained_steps": log[-1]["step"],
        "val_loss_first_last": [val[0], val[-1]],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--episodes", type=int, default=200)
    ap.add_argument("--lerobot-python", help="python of a venv with lerobot installed")
    ap.add_argument("--results", default=str(bench.RESULTS))
    a = ap.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        camera = {"cameras": ["front"], "image_size": 64}
        files = {"state": (work / "state.hdf5", {}),
                 "front camera 64x64": (work / "camera.hdf5", camera)}  # fmt: skip
        for name, (path, kwargs) in files.items():
            collect("diffpolicy/ReachAround-v0", a.episodes, str(path), workers=2, seed=0,
                    progress=False, env_kwargs=kwargs)  # fmt: skip
            out, back = work / f"{path.stem}_lerobot", work / f"{path.stem}_back.hdf5"
            row = {"file": name, "episodes": a.episodes, "hdf5_mb": path.stat().st_size / 2**20}
            row["export_seconds"] = timed_cli("export", str(path), "--out", str(out))
            row["import_seconds"] = timed_cli("import", str(out), "--out", str(back))
            row["lerobot_mb"] = sum(f.stat().st_size for f in out.rglob("*") if f.is_file()) / 2**20
            demos = load_demos(path)
            row["round_trip"] = lerobot.differences(demos, load_demos(back))
            if a.lerobot_python:
                row["lerobot_reads"] = lerobot_view(a.lerobot_python, out, demos, work)
            rows.append(row)
            print(json.dumps(row))
        written = lerobot_written(a.lerobot_python, work, 20) if a.lerobot_python else None
    import importlib.metadata as md

    bench.write_result(
        "lerobot",
        {
            "rows": rows,
            "target_seconds_each": 60,
            "lerobot_written_dataset": written,
            "versions_here": {n: md.version(n) for n in ("pyarrow", "pandas", "av", "torch")},
            "video": lerobot.VIDEO,
            "note": None if a.lerobot_python else "lerobot not checked: no --lerobot-python",
        },
        a.results,
    )


if __name__ == "__main__":
    main()
