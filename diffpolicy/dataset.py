"""Demonstration files (robomimic HDF5 layout) and training windows.

File layout (one file, documented by robomimic as "Dataset Structure"):

    data/                     attrs: total (int), env_args (JSON: env_name, env_type, env_kwargs),
                                     mode_names (JSON list), layout (JSON, for plots)
    data/demo_<i>/            attrs: num_samples, mode, mode_name, instruction, seed,
                                     paraphrases (JSON list: other phrasings of the command)
        actions   (T, A)
        rewards   (T,)
        dones     (T,)
        obs/<key> (T, ...)

Any file in this layout loads, including ones this project did not write; attributes it lacks get
defaults (mode -1, empty instruction, no paraphrases). Attributes are parsed as JSON, never
evaluated.
Camera frames (`obs/<camera>_image`, uint8 (T, H, W, 3)) stay uint8 in RAM and are written
chunked per frame and gzip-compressed; every other array is float32.

Windows: sample i at time t of an episode holds observations t-To+1 .. t and actions
t-To+1 .. t-To+Tp. Indices before the start repeat the first frame and are masked out
(`action_mask` False); indices after the end repeat the last action ("hold still") and stay in
the loss.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from diffpolicy.errors import DatasetError
from diffpolicy.files import atomic_path

MAX_MODES = 4096
"""Largest accepted number of modes (mode labels are -1 or in [0, MAX_MODES))."""


@dataclass
class Episode:
    """One demonstration. Arrays are time-major; T >= 1."""

    obs: dict[str, np.ndarray]  # key -> (T, ...) float32; camera keys (T, H, W, 3) uint8
    actions: np.ndarray  # (T, A) float32
    rewards: np.ndarray  # (T,) float32
    dones: np.ndarray  # (T,) bool
    mode: int = -1
    mode_name: str = "none"
    instruction: str = ""
    paraphrases: list[str] = field(default_factory=list)  # other phrasings of the same command
    seed: int = -1

    def __len__(self) -> int:
        return len(self.actions)


@dataclass
class Demos:
    """All episodes of a file, in RAM."""

    episodes: list[Episode]
    env_args: dict = field(default_factory=dict)
    mode_names: list[str] = field(default_factory=list)
    layout: dict = field(default_factory=dict)

    @property
    def env_id(self) -> str:
        return str(self.env_args.get("env_name", ""))

    @property
    def num_modes(self) -> int:
        if self.mode_names:
            return len(self.mode_names)
        return max([e.mode for e in self.episodes] + [-1]) + 1

    def mode_counts(self) -> np.ndarray:
        """(K,) episodes per mode (episodes with mode -1 are not counted)."""
        modes = np.array([e.mode for e in self.episodes], dtype=np.int64)
        return np.bincount(modes[modes >= 0], minlength=self.num_modes)[: self.num_modes]


def is_image(x: np.ndarray) -> bool:
    """A stack of camera frames: uint8 (T, H, W, 3)."""
    return x.dtype == np.uint8 and x.ndim == 4 and x.shape[-1] == 3


# ---------------------------------------------------------------------------------------- writing


def write_demos(path: str | Path, demos: Demos) -> None:
    """Write `demos` to `path` atomically (temporary file + rename)."""
    import h5py

    with atomic_path(path, parents=False) as tmp, h5py.File(tmp, "w") as f:
        data = f.create_group("data")
        total = 0
        for i, ep in enumerate(demos.episodes):
            g = data.create_group(f"demo_{i}")
            g.create_dataset("actions", data=ep.actions.astype(np.float32))
            g.create_dataset("rewards", data=ep.rewards.astype(np.float32))
            g.create_dataset("dones", data=ep.dones.astype(np.int64))
            for key, value in ep.obs.items():
                if is_image(value):
                    g.create_dataset(
                        f"obs/{key}",
                        data=value,
                        chunks=(1, *value.shape[1:]),
                        compression="gzip",
                        compression_opts=4,
                    )
                else:
                    g.create_dataset(f"obs/{key}", data=value.astype(np.float32))
            g.attrs.update(
                num_samples=len(ep),
                mode=int(ep.mode),
                mode_name=ep.mode_name,
                instruction=ep.instruction,
                seed=int(ep.seed),
            )
            if ep.paraphrases:
                g.attrs["paraphrases"] = json.dumps(list(ep.paraphrases))
            total += len(ep)
        data.attrs["total"] = total
        data.attrs["env_args"] = json.dumps(demos.env_args)
        data.attrs["mode_names"] = json.dumps(list(demos.mode_names))
        data.attrs["layout"] = json.dumps(demos.layout)


# ---------------------------------------------------------------------------------------- reading


def _json_attr(attrs, key: str, default, path: Path):
    if key not in attrs:
        return default
    raw = attrs[key]
    if isinstance(raw, bytes):
        raw = raw.decode("utf-8", "replace")
    try:
        return json.loads(str(raw))
    except json.JSONDecodeError:
        raise DatasetError(f"{path}: attribute data.{key} is not valid JSON") from None


def _str_attr(attrs, key: str, default: str) -> str:
    v = attrs.get(key, default)
    return v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v)


def _array(group, key: str, path: Path, name: str) -> np.ndarray:
    if key not in group:
        raise DatasetError(f"{path}: {name} has no '{key}'")
    ds = group[key]
    if not hasattr(ds, "dtype"):
        raise DatasetError(f"{path}: {name}/{key} is not an array")
    if ds.dtype.kind not in "fiub":
        raise DatasetError(f"{path}: {name}/{key} has non-numeric dtype {ds.dtype}")
    try:
        x = ds[()]
    except (OSError, ValueError) as e:
        raise DatasetError(f"{path}: cannot read {name}/{key}: {e}") from None
    x = np.asarray(x)
    # checked after the cast to float32: float64 values beyond its range would become inf
    with np.errstate(over="ignore"):
        finite = x.dtype.kind != "f" or np.isfinite(x.astype(np.float32)).all()
    if not finite:
        raise DatasetError(f"{path}: {name}/{key} contains NaN or inf (or values beyond float32)")
    return x


def load_demos(path: str | Path, obs_keys: tuple[str, ...] | None = None) -> Demos:
    """Read a robomimic-layout HDF5 file fully into RAM, validating as it goes.

    Raises DatasetError (one line) for a missing, truncated, foreign or inconsistent file.
    `obs_keys` limits which observation keys are loaded (all when None) and must all exist.
    """
    import h5py

    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"dataset file not found: {path}")
    try:
        ok = h5py.is_hdf5(path)
    except OSError:
        ok = False
    if not ok:
        raise DatasetError(f"{path} is not an HDF5 file")
    try:
        f = h5py.File(path, "r")
    except OSError as e:
        raise DatasetError(f"{path} cannot be opened (truncated or damaged?): {e}") from None
    with f:
        if "data" not in f or not isinstance(f["data"], h5py.Group):
            raise DatasetError(f"{path} has no 'data' group: not a robomimic-layout dataset")
        data = f["data"]
        names = [k for k in data if k.startswith("demo_")]
        if not names:
            raise DatasetError(f"{path} contains no episodes (no data/demo_* groups)")

        def order(name: str):
            suffix = name[len("demo_") :]
            return (0, int(suffix), "") if suffix.isdigit() else (1, 0, suffix)

        episodes = []
        first_keys = None
        for name in sorted(names, key=order):
            try:
                g = data[name]
                episodes.append(_read_episode(g, path, name, obs_keys))
            except DatasetError:
                raise
            except (OSError, KeyError, ValueError, TypeError, AttributeError, RuntimeError) as e:
                raise DatasetError(f"{path}: cannot read data/{name}: {e}") from None
            keys = set(episodes[-1].obs)
            if first_keys is None:
                first_keys = keys
            elif keys != first_keys:
                raise DatasetError(
                    f"{path}: data/{name} has observation keys {sorted(keys)}, "
                    f"the first episode has {sorted(first_keys)}"
                )
            shapes = {k: v.shape[1:] for k, v in episodes[-1].obs.items()}
            if shapes != {k: v.shape[1:] for k, v in episodes[0].obs.items()}:
                raise DatasetError(
                    f"{path}: data/{name} has observation shapes {shapes}, "
                    "inconsistent with the first episode"
                )
            if episodes[-1].actions.shape[1:] != episodes[0].actions.shape[1:]:
                raise DatasetError(
                    f"{path}: data/{name}/actions has shape "
                    f"{episodes[-1].actions.shape}, inconsistent with other episodes"
                )
        env_args = _json_attr(data.attrs, "env_args", {}, path)
        mode_names = _json_attr(data.attrs, "mode_names", [], path)
        layout = _json_attr(data.attrs, "layout", {}, path)
    if not isinstance(env_args, dict) or not isinstance(mode_names, list):
        raise DatasetError(f"{path}: data.env_args must be a JSON object and mode_names a list")
    return Demos(
        episodes, env_args, [str(m) for m in mode_names], layout if isinstance(layout, dict) else {}
    )


def _read_episode(g, path: Path, name: str, obs_keys) -> Episode:
    actions = _array(g, "actions", path, f"data/{name}").astype(np.float32)
    if actions.ndim != 2:
        raise DatasetError(f"{path}: data/{name}/actions must be 2-D (T, A), got {actions.shape}")
    T = len(actions)
    if T == 0:
        raise DatasetError(f"{path}: data/{name} has zero length")
    if actions.shape[1] == 0:
        raise DatasetError(f"{path}: data/{name}/actions has zero action dimensions")
    if "obs" not in g or not hasattr(g["obs"], "keys"):
        raise DatasetError(f"{path}: data/{name} has no 'obs' group")
    keys = list(obs_keys) if obs_keys is not None else list(g["obs"].keys())
    if not keys:
        raise DatasetError(f"{path}: data/{name}/obs holds no observation keys")
    obs = {}
    for key in keys:
        if key not in g["obs"]:
            raise DatasetError(
                f"{path}: data/{name}/obs has no key '{key}' "
                f"(it has: {', '.join(sorted(g['obs'].keys()))})"
            )
        x = _array(g["obs"], key, path, f"data/{name}/obs")
        x = x if is_image(x) else x.astype(np.float32)
        if x.ndim < 1 or len(x) != T:
            raise DatasetError(
                f"{path}: data/{name}/obs/{key} has {x.shape[:1]} steps, actions have {T}"
            )
        if x.size == 0:
            raise DatasetError(f"{path}: data/{name}/obs/{key} has shape {x.shape}: no features")
        obs[key] = x.reshape(T, -1) if x.ndim == 1 else x
    rewards = _array(g, "rewards", path, f"data/{name}") if "rewards" in g else np.zeros(T)
    dones = _array(g, "dones", path, f"data/{name}") if "dones" in g else np.zeros(T)
    if rewards.shape != (T,) or dones.shape != (T,):
        raise DatasetError(
            f"{path}: data/{name} rewards/dones must have shape ({T},) like the actions"
        )
    a = g.attrs
    try:
        mode = int(a.get("mode", -1))
        seed = int(a.get("seed", -1))
    except (TypeError, ValueError):
        raise DatasetError(f"{path}: data/{name} attrs mode/seed must be integers") from None
    if not -1 <= mode < MAX_MODES:
        raise DatasetError(
            f"{path}: data/{name} attr mode={mode} must be -1 or in [0, {MAX_MODES})"
        )
    paraphrases = _json_attr(a, "paraphrases", [], path)
    if not isinstance(paraphrases, list) or not all(isinstance(t, str) for t in paraphrases):
        raise DatasetError(f"{path}: data/{name} attr paraphrases must be a JSON list of strings")
    return Episode(
        obs=obs,
        actions=actions,
        rewards=rewards.astype(np.float32),
        dones=dones.astype(bool),
        mode=mode,
        mode_name=_str_attr(a, "mode_name", "none"),
        instruction=_str_attr(a, "instruction", ""),
        paraphrases=paraphrases,
        seed=seed,
    )


def summarize(demos: Demos, n_instructions: int = 5) -> dict:
    """Counts for `diffpolicy info`: episodes, steps, lengths, modes, sample instructions."""
    lengths = np.array([len(e) for e in demos.episodes])
    names = list(demos.mode_names) or [str(k) for k in range(demos.num_modes)]
    counts = demos.mode_counts()
    modes = {names[k]: int(c) for k, c in enumerate(counts)}
    unlabeled = sum(e.mode < 0 for e in demos.episodes)
    if unlabeled:
        modes["(none)"] = int(unlabeled)
    seen: list[str] = []
    for e in demos.episodes:
        if e.instruction and e.instruction not in seen:
            seen.append(e.instruction)
    first = demos.episodes[0]
    return {
        "env_id": demos.env_id,
        "episodes": len(demos.episodes),
        "steps": int(lengths.sum()),
        "length_min": int(lengths.min()),
        "length_mean": float(lengths.mean()),
        "length_max": int(lengths.max()),
        "obs_shapes": {k: list(v.shape[1:]) for k, v in first.obs.items()},
        "action_dim": int(first.actions.shape[1]),
        "modes": modes,
        "instructions": seen[:n_instructions],
    }


# ---------------------------------------------------------------------------------------- windows


def split_episodes(n: int, val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Seeded split by episode -> (train_ids, val_ids). At least one training episode."""
    perm = np.random.default_rng(seed).permutation(n)
    n_val = min(int(round(n * val_fraction)), n - 1)
    return np.sort(perm[n_val:]), np.sort(perm[:n_val])


def episode_obs(ep: Episode, obs_keys: tuple[str, ...]) -> np.ndarray:
    """(T, Do): the chosen observation keys concatenated in order."""
    missing = [k for k in obs_keys if k not in ep.obs]
    if missing:
        raise DatasetError(
            f"observation key(s) {missing} not in dataset (it has: "
            f"{', '.join(sorted(ep.obs))}); check data.obs_keys"
        )
    return np.concatenate([ep.obs[k].reshape(len(ep), -1) for k in obs_keys], axis=1)


def make_windows(
    demos: Demos,
    ids: np.ndarray,
    obs_keys: tuple[str, ...],
    goal_key: str | None,
    n_obs_steps: int,
    horizon: int,
    image_keys: tuple[str, ...] = (),
) -> dict[str, np.ndarray]:
    """One training window per time step of each chosen episode.

    Returns arrays with N = total steps of the episodes `ids`:
        obs (N, To, Do), action (N, Tp, A), action_mask (N, Tp) bool, goal (N, G) [if goal_key],
        mode (N,) int64, episode (N,) int64 (index into demos.episodes);
    with image keys also frame_index (N, To) int64 and, per camera key,
        `frames/<key>` (N, H, W, 3) uint8: every frame once (not per window); window i's
        frames are frames[frame_index[i]] (see `frames_of`).
    """
    To, Tp = n_obs_steps, horizon
    out: dict[str, list] = {"obs": [], "action": [], "action_mask": [], "mode": [], "episode": []}
    if goal_key:
        out["goal"] = []
    if image_keys:
        out["frame_index"] = []
        out.update({f"frames/{k}": [] for k in image_keys})
    start = 0  # index of the episode's first frame among all frames of `ids`
    for i in ids:
        ep = demos.episodes[int(i)]
        T = len(ep)
        obs = episode_obs(ep, obs_keys)
        t = np.arange(T)[:, None]  # (T, 1) current step of each window
        obs_idx = np.clip(t + np.arange(-To + 1, 1)[None], 0, T - 1)  # (T, To)
        act_idx = t + np.arange(-To + 1, -To + 1 + Tp)[None]  # (T, Tp)
        out["obs"].append(obs[obs_idx])
        out["action"].append(ep.actions[np.clip(act_idx, 0, T - 1)])
        out["action_mask"].append(act_idx >= 0)
        out["mode"].append(np.full(T, ep.mode, dtype=np.int64))
        out["episode"].append(np.full(T, int(i), dtype=np.int64))
        if goal_key:
            if goal_key not in ep.obs:
                raise DatasetError(
                    f"goal key '{goal_key}' not in dataset observations "
                    f"({', '.join(sorted(ep.obs))}); check data.goal_key"
                )
            out["goal"].append(ep.obs[goal_key].reshape(T, -1))
        if image_keys:
            out["frame_index"].append(start + obs_idx)
            for k in image_keys:
                out[f"frames/{k}"].append(episode_images(ep, k))
        start += T
    windows = {k: np.concatenate(v) for k, v in out.items()}
    for k in ("obs", "action", "goal"):
        if k in windows:
            windows[k] = windows[k].astype(np.float32)
    return windows


def episode_images(ep: Episode, key: str) -> np.ndarray:
    """(T, H, W, 3) uint8 frames of camera key `key`; DatasetError naming the key otherwise."""
    if key not in ep.obs:
        raise DatasetError(
            f"camera key '{key}' not in dataset (it has: {', '.join(sorted(ep.obs))}); "
            "check data.image_keys"
        )
    x = ep.obs[key]
    if not is_image(x):
        raise DatasetError(
            f"obs/{key} has shape {tuple(x.shape)} and dtype {x.dtype}: a camera key holds "
            "uint8 frames (T, H, W, 3)"
        )
    return x


def frames_of(windows: dict, rows, image_keys: tuple[str, ...]) -> dict:
    """Camera frames of the windows `rows`: key -> (len(rows), To, H, W, 3) (numpy or torch)."""
    idx = windows["frame_index"][rows]
    return {k: windows[f"frames/{k}"][idx] for k in image_keys}


def normalizer_data(windows: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Arrays for Normalizer.fit: every observation, action and goal frame, flattened to (N, D)."""
    data = {
        "obs": windows["obs"].reshape(-1, windows["obs"].shape[-1]),
        "action": windows["action"].reshape(-1, windows["action"].shape[-1]),
    }
    if "goal" in windows:
        data["goal"] = windows["goal"]
    return data
