"""LeRobotDataset v3 export and import: the same demos as a robomimic HDF5 file, in the layout
lerobot, GR00T and openpi read.

A dataset directory (LeRobotDataset codebase v3.0):

    meta/info.json            fps, features (dtype, shape, names), paths; here also "diffpolicy":
                              env_args, mode_names, layout and which HDF5 keys each state
                              feature concatenates, so an import restores them
    meta/stats.json           per feature: min, max, mean, std, count, q01..q99 (cameras: per
                              channel in [0, 1], shape (3, 1, 1))
    meta/tasks.parquet        task string -> task_index
    meta/episodes/chunk-000/file-000.parquet
                              per episode: length, tasks, frame range in the data file, video
                              file and time range per camera; "diffpolicy/episode" (JSON: mode
                              name, instruction, paraphrases, seed)
    data/chunk-000/file-000.parquet
                              one row per frame: observation.state (proprioception),
                              observation.environment_state (privileged object and goal state),
                              action, next.reward, next.done, mode, timestamp, frame_index,
                              episode_index, index, task_index
    videos/observation.images.<cam>/chunk-000/file-000.mp4
                              every episode's frames of `<cam>_image`, back to back (AV1,
                              yuv420p, as lerobot writes them: lossy, about 3/255 per pixel)

Everything is written into a temporary directory beside the target and renamed into place, so
a failure leaves no half dataset. Reading accepts any v3.0 dataset: `observation.images.<cam>`
(video or image features) become `<cam>_image`, other `observation.<name>` features become
obs key `<name>`, `action` the actions; `next.reward`, `next.done` and `mode` when present.
Needs the optional packages pyarrow, pandas and av (`pip install 'diffpolicy[lerobot]'`).
"""

from __future__ import annotations

import json
import os
from fractions import Fraction
from pathlib import Path

import numpy as np

from diffpolicy.dataset import Demos, Episode, is_image, load_demos, write_demos
from diffpolicy.errors import DatasetError, UserError
from diffpolicy.files import atomic_dir, check_output, write_json

VERSION = "v3.0"
STATE, ENV_STATE = "observation.state", "observation.environment_state"
IMAGES = "observation.images."
DATA_FILE = "data/chunk-000/file-000.parquet"
EPISODES_FILE = "meta/episodes/chunk-000/file-000.parquet"
DATA_PATH = "data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet"
VIDEO_PATH = "videos/{video_key}/chunk-{chunk_index:03d}/file-{file_index:03d}.mp4"
INDEX_FEATURES = ("timestamp", "frame_index", "episode_index", "index", "task_index")
QUANTILES = (0.01, 0.10, 0.50, 0.90, 0.99)
VIDEO = {"codec": "libsvtav1", "pix_fmt": "yuv420p", "g": 2, "crf": 30, "preset": 8}
V21_HINT = (
    "convert it to v3.0 with lerobot>=0.4: "
    "python -m lerobot.datasets.v30.convert_dataset_v21_to_v30 --repo-id=<id> --root=<dir>"
)


def _packages():
    """(pyarrow, pyarrow.parquet, pandas, av), or a one-line UserError naming the extra."""
    try:
        import av
        import pandas
        import pyarrow
        import pyarrow.parquet as pq
    except ModuleNotFoundError as e:
        raise UserError(
            f"LeRobotDataset files need the package '{e.name}': pip install 'diffpolicy[lerobot]'"
        ) from None
    os.environ.setdefault("SVT_LOG", "1")  # the AV1 encoder's banner: errors only
    return pyarrow, pq, pandas, av


# ---------------------------------------------------------------------------------------- export


def env_facts(env_args: dict, fps: float | None) -> tuple[float, tuple | None, str | None]:
    """(fps, proprioception keys or None, robot type) of the env a file was recorded in.

    fps: the given one, else the env's `metadata["render_fps"]` (diffpolicy envs: the control
    rate), else 1 / `dt`. Making the env must work unless fps is given.
    """
    from envs import make_env

    name = env_args.get("env_name")
    if not name:
        if fps is None:
            raise UserError("the file records no env (data.env_args.env_name): give --fps")
        return float(fps), None, None
    try:
        env = make_env(name, **dict(env_args.get("env_kwargs") or {}))
    except UserError as e:
        if fps is None:
            raise UserError(f"{e}; or give --fps to export without making the env") from None
        return float(fps), None, None
    try:
        u = env.unwrapped
        rate = fps or u.metadata.get("render_fps") or (1.0 / u.dt if getattr(u, "dt", 0) else None)
        if not rate:
            raise UserError(f"{name} declares no control rate (render_fps, dt): give --fps")
        keys = getattr(u, "proprio_keys", None)
        return rate, (tuple(keys) if keys else None), getattr(u, "robot_type", None)
    finally:
        env.close()


def _state_groups(demos: Demos, proprio: tuple[str, ...] | None) -> dict[str, list[str]]:
    """LeRobot state feature -> the low-dim HDF5 obs keys it concatenates (in file order)."""
    lowdim = [k for k, v in demos.episodes[0].obs.items() if not is_image(v)]
    if proprio is None:
        return {STATE: lowdim} if lowdim else {}
    groups = {
        STATE: [k for k in lowdim if k in proprio],
        ENV_STATE: [k for k in lowdim if k not in proprio],
    }
    return {name: keys for name, keys in groups.items() if keys}


def _stats(x: np.ndarray) -> dict:
    """min, max, mean, std, count and quantiles over axis 0 of (N, ...) values, as lists."""
    x = x.astype(np.float64)
    q = np.quantile(x, QUANTILES, axis=0)
    out = {"min": x.min(0), "max": x.max(0), "mean": x.mean(0), "std": x.std(0)}
    out.update({f"q{round(p * 100):02d}": q[i] for i, p in enumerate(QUANTILES)})
    out = {k: np.atleast_1d(v).tolist() for k, v in out.items()}
    out["count"] = [len(x)]
    return out


def _image_stats(frames: np.ndarray) -> dict:
    """Per-channel stats of uint8 (N, H, W, 3) frames in [0, 1], each of shape (3, 1, 1)."""
    x = frames.reshape(-1, 3).astype(np.float64) / 255.0
    s = _stats(x)
    shaped = {k: [[[v]] for v in s[k]] for k in s if k != "count"}
    return {**shaped, "count": [len(frames)]}


def _encode_video(av, path: Path, frames: np.ndarray, fps: float) -> None:
    """Write uint8 (N, H, W, 3) frames as one mp4; frame i has pts i in time base 1/fps."""
    path.parent.mkdir(parents=True, exist_ok=True)
    rate = Fraction(fps).limit_denominator(1000)
    with av.open(str(path), "w") as container:
        options = {"g": str(VIDEO["g"]), "crf": str(VIDEO["crf"]), "preset": str(VIDEO["preset"])}
        stream = container.add_stream(VIDEO["codec"], rate=rate, options=options)
        stream.height, stream.width = frames.shape[1:3]
        stream.pix_fmt = VIDEO["pix_fmt"]
        stream.time_base = 1 / rate
        for i, frame in enumerate(frames):
            vf = av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")
            vf.pts = i
            container.mux(stream.encode(vf))
        container.mux(stream.encode())


def _column(pa, x: np.ndarray):
    """A parquet column for (N,) scalars or (N, D) vectors (fixed-size lists)."""
    if x.ndim == 1:
        return pa.array(x)
    flat = pa.array(np.ascontiguousarray(x).reshape(-1))
    return pa.FixedSizeListArray.from_arrays(flat, x.shape[1])


def _task(ep: Episode, env_name: str) -> str:
    return ep.instruction or (ep.mode_name if ep.mode_name != "none" else "") or env_name or "demo"


def write_lerobot(demos: Demos, root: Path, fps: float, proprio, robot_type=None) -> dict:
    """Write `demos` as a LeRobotDataset v3.0 into the (empty or new) directory `root`."""
    pa, pq, pd, av = _packages()
    eps = demos.episodes
    lengths = np.array([len(e) for e in eps])
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    total = int(lengths.sum())
    ep_tasks = [_task(e, demos.env_id) for e in eps]
    tasks = list(dict.fromkeys(ep_tasks))
    task_index = {t: i for i, t in enumerate(tasks)}
    groups = _state_groups(demos, proprio)
    cameras = [k for k, v in eps[0].obs.items() if is_image(v)]
    video_keys = {k: IMAGES + k.removesuffix("_image") for k in cameras}

    columns: dict[str, np.ndarray] = {}
    features: dict[str, dict] = {}
    slices: dict[str, list] = {}
    for name, keys in groups.items():
        parts = [np.concatenate([e.obs[k].reshape(len(e), -1) for e in eps]) for k in keys]
        columns[name] = np.concatenate(parts, axis=1).astype(np.float32)
        names = [f"{k}.{i}" for k, part in zip(keys, parts) for i in range(part.shape[1])]
        features[name] = {"dtype": "float32", "shape": [len(names)], "names": names}
        slices[name] = [[k, list(eps[0].obs[k].shape[1:])] for k in keys]
    actions = np.concatenate([e.actions for e in eps]).astype(np.float32)
    columns["action"] = actions
    features["action"] = {
        "dtype": "float32", "shape": [actions.shape[1]],
        "names": [f"action.{i}" for i in range(actions.shape[1])],
    }  # fmt: skip
    columns["next.reward"] = np.concatenate([e.rewards for e in eps]).astype(np.float32)
    columns["next.done"] = np.concatenate([e.dones for e in eps]).astype(bool)
    columns["mode"] = np.repeat([e.mode for e in eps], lengths).astype(np.int64)
    for name, dtype in (("next.reward", "float32"), ("next.done", "bool"), ("mode", "int64")):
        features[name] = {"dtype": dtype, "shape": [1], "names": None}
    frame_index = np.concatenate([np.arange(n) for n in lengths]).astype(np.int64)
    columns["timestamp"] = (frame_index / fps).astype(np.float32)
    columns["frame_index"] = frame_index
    columns["episode_index"] = np.repeat(np.arange(len(eps)), lengths).astype(np.int64)
    columns["index"] = np.arange(total, dtype=np.int64)
    columns["task_index"] = np.repeat([task_index[t] for t in ep_tasks], lengths)
    for name in INDEX_FEATURES:
        dtype = "float32" if name == "timestamp" else "int64"
        features[name] = {"dtype": dtype, "shape": [1], "names": None}

    stats = {name: _stats(x) for name, x in columns.items()}
    episodes: dict[str, list] = {
        "episode_index": list(range(len(eps))),
        "tasks": [[t] for t in ep_tasks],
        "length": lengths.tolist(),
        "data/chunk_index": [0] * len(eps),
        "data/file_index": [0] * len(eps),
        "dataset_from_index": starts.tolist(),
        "dataset_to_index": (starts + lengths).tolist(),
    }
    for key, vkey in video_keys.items():
        frames = np.concatenate([e.obs[key] for e in eps])
        h, w = frames.shape[1:3]
        video = root / VIDEO_PATH.format(video_key=vkey, chunk_index=0, file_index=0)
        _encode_video(av, video, frames, fps)
        step = max(1, len(frames) // 1000)
        stats[vkey] = _image_stats(frames[::step])
        features[vkey] = {
            "dtype": "video", "shape": [h, w, 3], "names": ["height", "width", "channels"],
            "info": {
                "video.height": h, "video.width": w, "video.codec": "av1",
                "video.pix_fmt": VIDEO["pix_fmt"], "video.is_depth_map": False,
                "video.fps": fps, "video.channels": 3, "has_audio": False,
            },
        }  # fmt: skip
        episodes[f"videos/{vkey}/chunk_index"] = [0] * len(eps)
        episodes[f"videos/{vkey}/file_index"] = [0] * len(eps)
        episodes[f"videos/{vkey}/from_timestamp"] = (starts / fps).tolist()
        episodes[f"videos/{vkey}/to_timestamp"] = ((starts + lengths) / fps).tolist()
    episodes["meta/episodes/chunk_index"] = [0] * len(eps)
    episodes["meta/episodes/file_index"] = [0] * len(eps)
    episodes["diffpolicy/episode"] = [
        json.dumps(
            {"mode_name": e.mode_name, "instruction": e.instruction,
             "paraphrases": list(e.paraphrases), "seed": int(e.seed)}
        )
        for e in eps
    ]  # fmt: skip

    (root / "data/chunk-000").mkdir(parents=True, exist_ok=True)
    order = [n for n in features if n in columns]
    table = pa.table({n: _column(pa, columns[n]) for n in order})
    pq.write_table(table, root / DATA_FILE, compression="snappy")
    (root / EPISODES_FILE).parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table(episodes), root / EPISODES_FILE)
    index = pd.Index(tasks, name="task")
    pd.DataFrame({"task_index": np.arange(len(tasks))}, index=index).to_parquet(
        root / "meta/tasks.parquet"
    )
    info = {
        "codebase_version": VERSION,
        "robot_type": robot_type,
        "total_episodes": len(eps),
        "total_frames": total,
        "total_tasks": len(tasks),
        "chunks_size": 1000,
        "data_files_size_in_mb": 100,
        "video_files_size_in_mb": 200,
        "fps": fps,
        "splits": {"train": f"0:{len(eps)}"},
        "data_path": DATA_PATH,
        "video_path": VIDEO_PATH if video_keys else None,
        "features": features,
        "diffpolicy": {
            "env_args": demos.env_args,
            "mode_names": list(demos.mode_names),
            "layout": demos.layout,
            "state_keys": slices,
            "video_keys": {v: k for k, v in video_keys.items()},
        },
    }
    write_json(root / "meta/info.json", info)
    write_json(root / "meta/stats.json", stats)
    return {"episodes": len(eps), "frames": total, "fps": fps, "tasks": len(tasks),
            "state_features": {n: len(features[n]["names"]) for n in groups},
            "cameras": sorted(video_keys.values())}  # fmt: skip


def export_lerobot(src: str | Path, out: str | Path, fps: float | None = None) -> dict:
    """`diffpolicy export FILE --format lerobot --out DIR`: HDF5 demos to a LeRobotDataset."""
    _packages()
    with atomic_dir(out) as tmp:  # checked before the file is read
        demos = load_demos(src)
        rate, proprio, robot = env_facts(demos.env_args, fps)
        rate = int(rate) if float(rate).is_integer() else float(rate)  # lerobot writes an int
        return write_lerobot(demos, tmp, rate, proprio, robot)


# ---------------------------------------------------------------------------------------- import


def video_name(feature: str) -> str:
    """The HDF5 camera key of a LeRobot camera feature: observation.images.top -> top_image."""
    return feature.removeprefix(IMAGES).replace(".", "_") + "_image"


def _read_info(root: Path) -> dict:
    """meta/info.json of a v3 dataset, or a one-line DatasetError saying what `root` is."""
    if not root.is_dir():
        raise DatasetError(f"{root} is not a directory (a LeRobotDataset is a directory)")
    path = root / "meta/info.json"
    if not path.is_file():
        raise DatasetError(f"{root} is not a LeRobotDataset: it has no meta/info.json")
    try:
        info = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise DatasetError(f"{path} is not valid JSON: {e}") from None
    if not isinstance(info, dict) or not isinstance(info.get("features"), dict):
        raise DatasetError(f"{path} has no 'features' object: not a LeRobotDataset")
    version = str(info.get("codebase_version", "?"))
    if version.startswith(("v1", "v2")):
        raise DatasetError(f"{root} is a LeRobotDataset {version}; this reads v3.0: {V21_HINT}")
    if not version.startswith("v3"):
        raise DatasetError(f"{root}: codebase_version {version!r} is not a LeRobotDataset v3.0")
    if not info.get("fps"):
        raise DatasetError(f"{path} has no fps")
    return info


def _read_parquet(pa, pq, files: list[Path], what: str):
    if not files:
        raise DatasetError(f"no {what} parquet files found")
    try:
        return pa.concat_tables([pq.read_table(f) for f in files])
    except (OSError, ValueError) as e:  # ArrowInvalid is a ValueError
        raise DatasetError(f"cannot read the {what} parquet files: {e}") from None


def _numpy(table, name: str) -> np.ndarray:
    """(N,) or (N, D) array of a scalar or list column."""
    import pyarrow as pa

    col = table.column(name).combine_chunks()
    t = pa.types
    if t.is_list(col.type) or t.is_fixed_size_list(col.type) or t.is_large_list(col.type):
        flat = col.flatten().to_numpy(zero_copy_only=False)
        return flat.reshape(len(col), -1) if len(col) else flat.reshape(0, 0)
    return col.to_numpy(zero_copy_only=False)


def _decode_video(av, path: Path, fps: float) -> dict[int, np.ndarray]:
    """Frame number (round(t * fps)) -> uint8 (H, W, 3) frame, for every frame of an mp4."""
    if not path.is_file():
        raise DatasetError(f"missing video file {path}")
    frames = {}
    try:
        with av.open(str(path)) as container:
            for frame in container.decode(video=0):
                t = frame.time if frame.pts is None else frame.pts * frame.time_base
                frames[round(float(t) * fps)] = frame.to_ndarray(format="rgb24")
    except av.error.FFmpegError as e:
        raise DatasetError(f"cannot decode video file {path}: {e}") from None
    return frames


def _image_column(table, name: str) -> list[np.ndarray]:
    """Frames of an `image` feature (PNG/JPEG bytes in parquet) as uint8 (H, W, 3) arrays."""
    import io

    from PIL import Image

    out = []
    for cell in table.column(name).to_pylist():
        data = cell.get("bytes") if isinstance(cell, dict) else cell
        out.append(np.asarray(Image.open(io.BytesIO(data)).convert("RGB")))
    return out


def _arrays(data, features: dict, state_keys: dict, root: Path) -> dict[str, np.ndarray]:
    """Per-frame arrays of the non-camera features: "obs/<key>" for observations, else the
    feature's own name (action, next.reward, next.done, mode)."""
    arrays: dict[str, np.ndarray] = {}
    for name, ft in features.items():
        if name in INDEX_FEATURES or ft.get("dtype") in ("video", "image", "string"):
            continue
        if name not in data.column_names:
            raise DatasetError(f"{root}: feature '{name}' has no column in the data files")
        x = _numpy(data, name)
        if name in state_keys:  # written here: split back into the HDF5 keys
            at = 0
            for key, shape in state_keys[name]:
                size = int(np.prod(shape)) if shape else 1
                arrays[f"obs/{key}"] = x[:, at : at + size].reshape(len(x), *shape)
                at += size
        elif name.startswith("observation."):
            arrays["obs/" + name.removeprefix("observation.").replace(".", "_")] = x
        else:
            arrays[name] = x
    return arrays


def _camera_frames(av, root, info, name, by_episode, ep_col, frame_col) -> list[np.ndarray]:
    """Every data row's frame of the video feature `name`, decoded from its episode's file."""
    fps = float(info["fps"])
    decoded: dict[tuple, dict] = {}
    frames = []
    for e, i in zip(ep_col, frame_col):
        r = by_episode.get(int(e))
        if r is None or f"videos/{name}/from_timestamp" not in r:
            raise DatasetError(f"{root}: meta/episodes has no {name} video for episode {e}")
        file = (int(r[f"videos/{name}/chunk_index"]), int(r[f"videos/{name}/file_index"]))
        if file not in decoded:
            rel = info["video_path"].format(video_key=name, chunk_index=file[0], file_index=file[1])
            decoded[file] = _decode_video(av, root / rel, fps)
        n = round(float(r[f"videos/{name}/from_timestamp"]) * fps) + int(i)
        if n not in decoded[file]:
            raise DatasetError(f"{root}: {name} has no frame at {n / fps:.3f} s of file {file}")
        frames.append(decoded[file][n])
    return frames


def read_lerobot(root: str | Path) -> Demos:
    """A LeRobotDataset v3 directory as Demos (every episode in RAM); DatasetError (one line)
    for anything that is not one or is inconsistent."""
    root = Path(root)
    try:
        return _read(root)
    except (KeyError, IndexError, TypeError, ValueError, OSError) as e:
        raise DatasetError(f"{root}: malformed LeRobotDataset ({type(e).__name__}: {e})") from None


def _read(root: Path) -> Demos:
    pa, pq, pd, av = _packages()
    info = _read_info(root)
    features = info["features"]
    extra = info.get("diffpolicy") if isinstance(info.get("diffpolicy"), dict) else {}
    mode_names = [str(m) for m in extra.get("mode_names") or []]
    if "action" not in features:
        raise DatasetError(f"{root}: the dataset has no 'action' feature")
    data = _read_parquet(pa, pq, sorted((root / "data").glob("*/*.parquet")), f"{root} data")
    meta_files = sorted((root / "meta/episodes").glob("*/*.parquet"))
    by_episode = {
        int(r["episode_index"]): r
        for r in _read_parquet(pa, pq, meta_files, f"{root} episodes").to_pylist()
    }
    missing = [n for n in ("episode_index", "frame_index", "action") if n not in data.column_names]
    if missing:
        raise DatasetError(f"{root}: the data files have no column {', '.join(missing)}")
    order = np.lexsort((_numpy(data, "frame_index"), _numpy(data, "episode_index")))
    data = data.take(pa.array(order))
    ep_col = _numpy(data, "episode_index").astype(np.int64)
    frame_col = _numpy(data, "frame_index").astype(np.int64)
    task_col = _numpy(data, "task_index") if "task_index" in data.column_names else None
    tasks = {}
    if (root / "meta/tasks.parquet").is_file():
        tdf = pd.read_parquet(root / "meta/tasks.parquet")
        texts = tdf["task"] if "task" in tdf.columns else tdf.index
        tasks = dict(zip(tdf["task_index"].astype(int), map(str, texts)))

    arrays = _arrays(data, features, extra.get("state_keys") or {}, root)
    video_names = extra.get("video_keys") or {}
    for name, ft in features.items():
        if ft.get("dtype") not in ("video", "image") or not name.startswith(IMAGES):
            continue
        key = video_names.get(name) or video_name(name)
        frames = (
            _image_column(data, name)
            if ft["dtype"] == "image"
            else _camera_frames(av, root, info, name, by_episode, ep_col, frame_col)
        )
        arrays[f"obs/{key}"] = np.stack(frames).astype(np.uint8)
    if not any(k.startswith("obs/") for k in arrays):
        raise DatasetError(f"{root}: the dataset has no observation.* feature")

    rewards = arrays.get("next.reward", np.zeros(len(ep_col), np.float32)).reshape(-1)
    dones = arrays.get("next.done", np.zeros(len(ep_col), bool)).reshape(-1).astype(bool)
    episodes = []
    bounds = np.flatnonzero(np.diff(ep_col)) + 1
    for lo, hi in zip([0, *bounds], [*bounds, len(ep_col)]):
        obs = {k.removeprefix("obs/"): v[lo:hi] for k, v in arrays.items() if k.startswith("obs/")}
        obs = {k: v if is_image(v) else v.astype(np.float32) for k, v in obs.items()}
        T = hi - lo
        mode = int(arrays["mode"][lo]) if "mode" in arrays else -1
        attrs = json.loads(by_episode.get(int(ep_col[lo]), {}).get("diffpolicy/episode") or "{}")
        task = tasks.get(int(task_col[lo]), "") if task_col is not None else ""
        named = mode_names[mode] if 0 <= mode < len(mode_names) else "none"
        episodes.append(
            Episode(
                obs=obs,
                actions=arrays["action"][lo:hi].astype(np.float32).reshape(T, -1),
                rewards=rewards[lo:hi].astype(np.float32),
                dones=dones[lo:hi],
                mode=mode,
                mode_name=attrs.get("mode_name", named),
                instruction=attrs.get("instruction", task),
                paraphrases=list(attrs.get("paraphrases", [])),
                seed=int(attrs.get("seed", -1)),
            )
        )
    env_args, layout = dict(extra.get("env_args") or {}), dict(extra.get("layout") or {})
    return Demos(episodes, env_args, mode_names, layout)


def differences(a: Demos, b: Demos) -> dict:
    """How two Demos differ: the names of arrays and attributes that are not identical (camera
    frames excluded) and the mean |error| per uint8 value of the camera frames."""
    diff: list[str] = []
    for name in ("env_args", "mode_names", "layout"):
        if getattr(a, name) != getattr(b, name):
            diff.append(name)
    if len(a.episodes) != len(b.episodes):
        return {"different": [*diff, "episodes"], "pixel_error": None}
    errors = []
    for i, (x, y) in enumerate(zip(a.episodes, b.episodes)):
        if sorted(x.obs) != sorted(y.obs):
            diff.append(f"demo_{i}/obs keys")
            continue
        for key in x.obs:
            u, v = x.obs[key], y.obs[key]
            if u.dtype != v.dtype or u.shape != v.shape:
                diff.append(f"demo_{i}/obs/{key}")
            elif is_image(u):
                errors.append(np.abs(u.astype(np.int16) - v).mean())
            elif not np.array_equal(u, v):
                diff.append(f"demo_{i}/obs/{key}")
        for name in ("actions", "rewards", "dones", "mode", "mode_name", "instruction",
                     "paraphrases", "seed"):  # fmt: skip
            if not np.array_equal(getattr(x, name), getattr(y, name)):
                diff.append(f"demo_{i}/{name}")
    return {"different": diff, "pixel_error": float(np.mean(errors)) if errors else None}


def import_lerobot(src: str | Path, out: str | Path) -> dict:
    """`diffpolicy import DIR --out FILE`: a LeRobotDataset v3 to a robomimic-layout HDF5 file."""
    check_output(out)
    demos = read_lerobot(src)
    write_demos(out, demos)
    return {"episodes": len(demos.episodes), "frames": sum(len(e) for e in demos.episodes),
            "obs_keys": sorted(demos.episodes[0].obs), "env": demos.env_id or None}  # fmt: skip
