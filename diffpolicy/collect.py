"""Collect demonstrations from the scripted experts in parallel worker processes.

    collect("diffpolicy/ReachAround-v0", episodes=200, out="demos.hdf5", workers=2)

Episode k (k = 0, 1, ...) is run with seed `seed + k`, in order, so the file does not depend on
the number of workers. Failed expert episodes are dropped unless `keep_failures`; collection goes
on with further seeds until `episodes` episodes are kept. The file is written atomically.
This module does not import torch: workers stay light.
"""

from __future__ import annotations

import dataclasses
import multiprocessing as mp
import os
from dataclasses import dataclass

import numpy as np

from diffpolicy.dataset import Demos, Episode, write_demos
from diffpolicy.errors import UserError
from envs import make_env

_WORKER: dict = {}  # per-process env cache: {"env_id":..., "env":...}


@dataclass
class CollectStats:
    kept: int
    tried: int
    seconds: float
    mode_counts: list[int]

    @property
    def episodes_per_s(self) -> float:
        return self.tried / max(self.seconds, 1e-9)


def run_expert_episode(env, seed: int, mode: int | None) -> tuple[Episode, bool]:
    """Run the task's scripted expert for one episode -> (episode, success)."""
    import envs
    from envs.instructions import sample_instruction

    rng = np.random.default_rng(seed)
    expert = envs.make_expert(env, mode=mode, rng=rng)
    obs, info = env.reset(seed=seed)
    expert.reset(obs, info)
    frames: dict[str, list] = {k: [] for k in obs}
    actions, rewards, dones = [], [], []
    done = False
    while not done:
        action = expert.act(obs)
        for k, v in obs.items():
            frames[k].append(v)
        obs, reward, terminated, truncated, info = env.step(action)
        done = terminated or truncated
        actions.append(action)
        rewards.append(reward)
        dones.append(done)
    u = env.unwrapped
    ep_mode = int(info.get("mode", -1))
    episode = Episode(
        obs={k: _stack(v) for k, v in frames.items()},
        actions=np.asarray(actions, dtype=np.float32),
        rewards=np.asarray(rewards, dtype=np.float32),
        dones=np.asarray(dones, dtype=bool),
        mode=ep_mode,
        mode_name=str(info.get("mode_name", "none")),
        instruction=sample_instruction(u.task_name, ep_mode, rng) if ep_mode >= 0 else "",
        seed=seed,
    )
    return episode, bool(info.get("is_success", False))


def _stack(values: list) -> np.ndarray:
    """(T, ...) array of one observation key: camera frames stay uint8, the rest float32."""
    x = np.stack(values)
    return x if x.dtype == np.uint8 else x.astype(np.float32)


def _worker_episode(args: tuple[str, dict, int, int | None]) -> tuple[Episode, bool]:
    env_id, env_kwargs, seed, mode = args
    if _WORKER.get("env_id") != (env_id, env_kwargs):
        _WORKER["env"] = make_env(env_id, **env_kwargs)
        _WORKER["env_id"] = (env_id, env_kwargs)
    return run_expert_episode(_WORKER["env"], seed, mode)


def _init_worker() -> None:
    os.environ["OMP_NUM_THREADS"] = "1"


def collect(
    env_id: str,
    episodes: int,
    out: str,
    workers: int = 1,
    seed: int = 0,
    mode: int | None = None,
    keep_failures: bool = False,
    progress: bool = True,
    append: bool = False,
    env_kwargs: dict | None = None,
) -> CollectStats:
    """Run the expert until `episodes` episodes are kept and write them to `out` (HDF5).

    env_kwargs: arguments of the env (e.g. ``{"cameras": ["top"], "image_size": 64}``),
    recorded in the file's ``env_args`` so training and evaluation rebuild the same env.

    append: add them to the episodes already in `out` (same env id; seeds start after the
    file's largest seed unless that would repeat one); the file is replaced in one rename, so
    an interrupted append leaves it as it was. Stats count the new episodes.
    """
    import time

    from tqdm import tqdm

    env_kwargs = dict(env_kwargs or {})
    previous = _previous_episodes(out, env_id, env_kwargs) if append else []
    if previous:
        seed = max(seed, max(e.seed for e in previous) + 1)
    if episodes < 1:
        raise UserError(f"--episodes {episodes} must be >= 1")
    if workers < 1:
        raise UserError(f"--workers {workers} must be >= 1")
    probe = make_env(env_id, **env_kwargs)
    u = probe.unwrapped
    num_modes, mode_names, layout = u.num_modes, list(u.mode_names), u.layout()
    if mode is not None and not 0 <= mode < num_modes:
        raise UserError(
            f"--mode {mode} out of range: {env_id} has modes 0..{num_modes - 1} "
            f"({', '.join(mode_names)})"
        )
    kept: list[Episode] = []
    max_tries = 2 * episodes + 20
    tasks = ((env_id, env_kwargs, seed + k, mode) for k in range(max_tries))
    t0 = time.perf_counter()
    tried = 0
    bar = tqdm(total=episodes, desc=f"collect {env_id}", unit="ep", disable=not progress)
    if workers == 1:
        _WORKER.update(env_id=(env_id, env_kwargs), env=probe)
        results = map(_worker_episode, tasks)
        pool = None
    else:
        probe.close()
        pool = mp.get_context("spawn").Pool(workers, initializer=_init_worker)
        results = pool.imap(_worker_episode, tasks, chunksize=2)
    try:
        for episode, success in results:
            tried += 1
            if success or keep_failures:
                kept.append(episode)
                bar.update(1)
            if len(kept) == episodes:
                break
    finally:
        bar.close()
        if pool is not None:
            pool.terminate()
            pool.join()
        _WORKER.clear()
    if len(kept) < episodes:
        raise UserError(
            f"the expert succeeded in only {len(kept)} of {tried} episodes; asked for {episodes}"
        )
    seconds = time.perf_counter() - t0
    env_args = {"env_name": env_id, "env_type": 4, "env_kwargs": env_kwargs}
    demos = Demos(previous + kept, env_args=env_args, mode_names=mode_names, layout=layout)
    write_demos(out, demos)
    probe.close()
    new = dataclasses.replace(demos, episodes=kept).mode_counts()  # this call's episodes
    return CollectStats(len(kept), tried, seconds, new.tolist())


def _previous_episodes(out: str, env_id: str, env_kwargs: dict) -> list[Episode]:
    """Episodes of the file `out` that `--append` adds to (demos of `env_id`, same kwargs)."""
    from pathlib import Path

    from diffpolicy.dataset import load_demos

    if not Path(out).is_file():
        raise UserError(f"--append: {out} does not exist (collect without --append first)")
    demos = load_demos(out)
    if demos.env_args.get("env_name") != env_id:
        raise UserError(
            f"--append: {out} holds demos of {demos.env_args.get('env_name')!r}, not {env_id!r}"
        )
    if (demos.env_args.get("env_kwargs") or {}) != env_kwargs:
        raise UserError(
            f"--append: {out} was collected with env arguments "
            f"{demos.env_args.get('env_kwargs') or {}}, not {env_kwargs}"
        )
    return list(demos.episodes)
