"""Roll a policy out in K environments at once and keep one record per episode.

Environments are stepped in this process, one after another (a synchronous vector env): a
control step costs ~1-3 ms of physics here, too little for worker processes to pay off on two
cores, and the policy call -- batched over all slots that need a chunk -- dominates anyway.
Episode i always runs with seed `seed + i`, whatever K is.

A NaN from the policy or an exception from the physics client ends that episode with an
`error` in its record; the env is rebuilt and the evaluation goes on.

Any gymnasium env works (`module:EnvId` ids import `module`): a Box observation is shown to the
controller as `{data.obs_keys[0]: obs}`; success is `info["is_success"]`, else
`info["success"]`, else `terminated` (`envs.episode_success`); the ee path exists only for Dict
observations whose `observation` has >= 2 entries; modes only where the env reports
`info["mode"]`.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
from tqdm import tqdm

from diffpolicy.controller import RecedingHorizonController
from diffpolicy.errors import UserError
from envs import episode_success, make_env


@dataclass
class EpisodeRecord:
    episode: int
    seed: int
    success: bool = False
    collision: bool = False
    timeout: bool = False
    mode: int = -1
    mode_name: str = "none"
    between_modes: bool = False
    mode_switches: int = 0
    mode_reported: bool = False  # the env classified the episode (info["mode"] at the end)
    length: int = 0
    commanded_mode: int | None = None
    instruction: str | None = None
    refused: bool = False  # grounding refused the instruction: counted as a miss
    error: str | None = None
    path: list = field(default_factory=list)  # ee (x, y) per step, for plots
    actions: list = field(default_factory=list)  # (A,) executed action per step
    boundaries: list = field(default_factory=list)  # per step: the action began a new chunk

    def summary(self) -> dict:
        """JSON-ready record without the per-step lists."""
        d = dict(self.__dict__)
        for key in ("path", "actions", "boundaries"):
            d.pop(key)
        return d


def as_dict(obs, cfg) -> dict:
    """An observation as {key: array}: a Box observation (an array) is the run's first
    observation key, `{cfg.data.obs_keys[0]: obs}`."""
    return obs if isinstance(obs, dict) else {cfg.data.obs_keys[0]: obs}


def ee_xy(obs) -> list[float] | None:
    """End-effector (x, y): the first two entries of a Dict observation's `observation`; None
    for any other observation (no path is recorded)."""
    if not isinstance(obs, dict) or "observation" not in obs:
        return None
    x = np.asarray(obs["observation"]).reshape(-1)
    return x[:2].tolist() if len(x) >= 2 else None


def shown(obs, cfg) -> dict:
    """What the policy is shown of an observation (`as_dict`): with `eval.constant_images` (an
    ablation) every camera frame is replaced by one grey image."""
    obs = as_dict(obs, cfg)
    if not cfg.eval.constant_images:
        return obs
    return {**obs, **{k: np.full_like(obs[k], 127) for k in cfg.data.image_keys}}


def check_observations(space, cfg) -> None:
    """One line (UserError) unless the env observes the keys and sizes the run was trained on
    (a run evaluated in another task's env), checked once before the first episode."""
    d, dims = cfg.data, cfg.dims
    keys = (*d.obs_keys, *((d.goal_key,) if d.goal_key else ()), *d.image_keys)
    spaces = getattr(space, "spaces", None)
    if spaces is None:  # a Box observation, shown as the first observation key (`as_dict`)
        spaces = {d.obs_keys[0]: space}
    if any(k not in spaces for k in keys):
        raise UserError(
            f"{cfg.env_id} observations have keys {sorted(spaces)}; the run needs {list(keys)}"
        )

    def size(ks) -> int:
        return sum(int(np.prod(spaces[k].shape)) for k in ks)

    for k in d.image_keys:
        want_shape = (dims.get("image_height"), dims.get("image_width"), 3)
        if tuple(spaces[k].shape) != want_shape or spaces[k].dtype != np.uint8:
            raise UserError(
                f"{cfg.env_id} camera key '{k}' gives {spaces[k].dtype} frames of shape "
                f"{tuple(spaces[k].shape)}; the run was trained on uint8 {want_shape}"
            )
    got = (size(d.obs_keys), size((d.goal_key,)) if d.goal_key else 0)
    want = (dims.get("obs_dim") or got[0], dims.get("goal_dim", got[1]))  # 0: not recorded
    if got != want:
        raise UserError(
            f"{cfg.env_id} gives observations of size {got[0]} (goal {got[1]}); the run was "
            f"trained on size {want[0]} (goal {want[1]}): data of another task?"
        )


def env_kwargs(cfg) -> dict:
    """Arguments of the evaluation env: the demos' (`cfg.env_kwargs`: cameras, image size) and
    `eval.max_steps` as the env's own `max_steps` (diffpolicy envs) or gymnasium's
    `max_episode_steps` (any other env)."""
    kwargs = dict(cfg.env_kwargs)
    if cfg.eval.max_steps:
        own = cfg.env_id.startswith("diffpolicy/")
        kwargs["max_steps" if own else "max_episode_steps"] = cfg.eval.max_steps
    return kwargs


def rollout(
    policy,
    cfg,
    episodes: int,
    n_envs: int = 8,
    seed: int = 1000,
    condition_fn: Callable[[int], tuple[dict, int | None, str | None]] | None = None,
    video_episodes: int = 0,
    progress: bool = True,
) -> tuple[list[EpisodeRecord], dict]:
    """Run `episodes` episodes in `n_envs` slots, controlled as `cfg.control` and sampled as
    `cfg.policy` say.

    condition_fn(i) -> (controller condition dict, commanded mode or None, instruction or None)
    Returns (records ordered by episode, stats {"latency_ms": [...], "batch_sizes": [...],
    "seconds", "policy_seconds", "frames": {episode: [frames]}}).
    """
    n_envs = max(1, min(n_envs, episodes))
    kwargs = env_kwargs(cfg)
    first = make_env(cfg.env_id, **kwargs)
    if video_episodes and "rgb_array" in first.metadata.get("render_modes", ()):
        first.close()
        kwargs["render_mode"] = "rgb_array"
        first = make_env(cfg.env_id, **kwargs)
    elif video_episodes:  # the env renders no frames: no videos
        video_episodes = 0
    envs = [first]
    try:
        check_observations(first.observation_space, cfg)
        envs += [make_env(cfg.env_id, **kwargs) for _ in range(n_envs - 1)]
    except UserError:
        for env in envs:
            env.close()
        raise
    ctrl = RecedingHorizonController(policy, cfg, n_envs, seed=seed)
    records: dict[int, EpisodeRecord] = {}
    frames: dict[int, list] = {}
    slot_episode: list[int | None] = [None] * n_envs
    slot_obs: list[dict | None] = [None] * n_envs
    next_episode = 0
    t0 = time.perf_counter()
    bar = tqdm(total=episodes, desc="eval", unit="ep", disable=not progress)

    def rebuild(slot: int) -> None:
        envs[slot].close()
        envs[slot] = make_env(cfg.env_id, **kwargs)

    def start(slot: int) -> None:
        """Begin the next episode in `slot`; an episode whose reset fails is recorded and
        skipped (the env is rebuilt), so the slot ends up running one or none is left."""
        nonlocal next_episode
        while next_episode < episodes:
            i = next_episode
            next_episode += 1
            cond, commanded, instruction = condition_fn(i) if condition_fn else ({}, None, None)
            rec = EpisodeRecord(
                episode=i,
                seed=seed + i,
                commanded_mode=commanded,
                instruction=instruction,
                refused=bool(cond.get("refused", False)),
            )
            records[i] = rec
            try:
                obs, _ = envs[slot].reset(seed=rec.seed)
            except Exception as e:  # a physics-client failure ends only this episode
                rec.error = f"env reset failed: {type(e).__name__}: {e}"
                bar.update(1)
                rebuild(slot)
                continue
            break
        else:
            return
        ctrl.reset(slot, cond)
        slot_episode[slot], slot_obs[slot] = i, shown(obs, cfg)
        if (xy := ee_xy(obs)) is not None:
            rec.path.append(xy)
        if i < video_episodes:
            frames[i] = [envs[slot].render()]

    def finish(
        slot: int, info: dict | None, error: str | None = None, terminated: bool = False
    ) -> None:
        rec = records[slot_episode[slot]]
        if info is not None:
            rec.success = episode_success(info, terminated)
            rec.mode_reported = "mode" in info
            rec.collision = bool(info.get("collision", False))
            rec.mode = int(info.get("mode", -1))
            rec.mode_name = str(info.get("mode_name", "none"))
            rec.between_modes = bool(info.get("between_modes", False))
            rec.mode_switches = int(info.get("mode_switches", 0))
        rec.error = error
        slot_episode[slot] = None
        bar.update(1)

    try:
        for s in range(n_envs):
            start(s)
        while any(e is not None for e in slot_episode):
            active = {s: slot_obs[s] for s in range(n_envs) if slot_episode[s] is not None}
            actions = ctrl.act(active)
            for s, action in actions.items():
                rec = records[slot_episode[s]]
                rec.actions.append(np.asarray(action, np.float32))
                rec.boundaries.append(ctrl.boundary[s])
                if not np.all(np.isfinite(action)):
                    finish(s, None, error="policy returned a non-finite action")
                else:
                    try:
                        obs, _, terminated, truncated, info = envs[s].step(action)
                    except Exception as e:  # a physics-client failure ends only this episode
                        finish(s, None, error=f"env step failed: {type(e).__name__}: {e}")
                        rebuild(s)
                    else:
                        rec.length += 1
                        slot_obs[s] = shown(obs, cfg)
                        if (xy := ee_xy(obs)) is not None:
                            rec.path.append(xy)
                        if rec.episode in frames:
                            frames[rec.episode].append(envs[s].render())
                        if terminated or truncated:
                            rec.timeout = bool(truncated and not terminated)
                            finish(s, info, terminated=bool(terminated))
                if slot_episode[s] is None and next_episode < episodes:
                    start(s)
    finally:
        bar.close()
        for env in envs:
            env.close()
    stats = {
        "latency_ms": ctrl.latencies_ms,
        "batch_sizes": ctrl.batch_sizes,
        "seconds": time.perf_counter() - t0,
        "policy_seconds": sum(ctrl.latencies_ms) / 1e3,
        "frames": frames,
    }
    return [records[i] for i in sorted(records)], stats
