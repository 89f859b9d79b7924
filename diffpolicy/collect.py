"""Collect demonstrations from scripted experts in parallel worker processes.

    collect("diffpolicy/ReachAround-v0", episodes=200, out="demos.hdf5", workers=2)
    collect("panda_gym:PandaReach-v3", 50, "reach.hdf5", expert="my_pkg.experts:make_reach")

Episode k (k = 0, 1, ...) is run with seed `seed + k`, in order, so the file does not depend on
the number of workers. Failed expert episodes are dropped unless `keep_failures`; collection goes
on with further seeds until `episodes` episodes are kept. The file is written atomically.
This module does not import torch: workers stay light.

Any gymnasium env with a Box action space and a Box or Dict-of-Box observation space works; the
expert is the project's own (`envs.make_expert`) or a user's `module:callable` (see
`load_expert`). An env without diffpolicy's attributes (`num_modes`, `mode_names`, `layout()`,
`task_name`) gives episodes of mode -1, no mode names, no layout and no instruction. A
diffpolicy task's episode records an instruction for its mode and PARAPHRASES other phrasings,
drawn from the task's grammar (envs/instructions.py) after the episode, so the trajectories do
not depend on them.
"""

from __future__ import annotations

import dataclasses
import importlib
import multiprocessing as mp
import os
from collections.abc import Callable
from dataclasses import dataclass

import gymnasium
import numpy as np

from diffpolicy.dataset import Demos, Episode, write_demos
from diffpolicy.errors import UserError
from envs import episode_success, make_env

PARAPHRASES = 16  # per episode, besides its instruction: what a language run's grounding learns

_WORKER: dict = {}  # per-process cache: {"env_id":..., "env":..., "expert": (spec, factory)}

ExpertFactory = Callable[..., object]
"""`factory(env, mode=None | int, rng=np.random.Generator)` -> an object with `reset(obs, info)`
and `act(obs) -> action`, the protocol of `envs.make_expert`."""


@dataclass
class CollectStats:
    kept: int
    tried: int
    seconds: float
    mode_counts: list[int]

    @property
    def episodes_per_s(self) -> float:
        return self.tried / max(self.seconds, 1e-9)


def load_expert(spec: str) -> ExpertFactory:
    """The expert factory named `module:callable` (`module:Class.attr` works too); a bad spec,
    a module that does not import or a missing or non-callable attribute is a UserError."""
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise UserError(f"--expert {spec!r} must be module:callable (e.g. my_pkg.experts:make)")
    try:
        obj = importlib.import_module(module_name)
    except ModuleNotFoundError as e:
        raise UserError(f"--expert {spec}: no module named {e.name or module_name!r}") from None
    except Exception as e:  # the user's module raised while importing
        raise UserError(f"--expert {spec}: importing {module_name} failed: {_why(e)}") from None
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise UserError(f"--expert {spec}: {module_name} has no attribute {attr!r}")
        obj = getattr(obj, part)
    if not callable(obj):
        raise UserError(f"--expert {spec}: {attr} is a {type(obj).__name__}, not a callable")
    return obj


def _why(e: BaseException) -> str:
    return f"{type(e).__name__}: {e}"


def run_expert_episode(
    env, seed: int, mode: int | None, expert_spec: str | None = None
) -> tuple[Episode, bool]:
    """Run the expert for one episode -> (episode, success). `expert_spec`: a user's
    `module:callable`, or None for the task's own scripted expert; anything a user's expert
    raises (or an action the env refuses) is a one-line UserError."""
    import envs
    from envs.instructions import NUM_MODES, paraphrases

    rng = np.random.default_rng(seed)
    if expert_spec is None:
        episode, info, terminated = _play(env, envs.make_expert(env, mode=mode, rng=rng), seed)
    else:
        try:
            expert = _expert_factory(expert_spec)(env, mode=mode, rng=rng)
            if not all(callable(getattr(expert, m, None)) for m in ("reset", "act")):
                raise UserError(
                    f"--expert {expert_spec} returned a {type(expert).__name__}, which lacks "
                    "reset(obs, info) or act(obs)"
                )
            episode, info, terminated = _play(env, expert, seed)
        except UserError:
            raise
        except Exception as e:
            raise UserError(f"--expert {expert_spec}, episode seed {seed}: {_why(e)}") from None
    task = getattr(env.unwrapped, "task_name", None)
    episode.mode = int(info.get("mode", -1))
    episode.mode_name = str(info.get("mode_name", "none"))
    if 0 <= episode.mode < NUM_MODES.get(task, 0):
        episode.instruction, *episode.paraphrases = paraphrases(
            task, episode.mode, rng, 1 + PARAPHRASES
        )
    return episode, episode_success(info, terminated)


def _play(env, expert, seed: int) -> tuple[Episode, dict, bool]:
    """One episode of `expert` in `env` -> (episode without mode labels, last info, whether
    the env terminated it)."""
    obs, info = env.reset(seed=seed)
    expert.reset(obs, info)
    frames: dict[str, list] = {k: [] for k in _as_dict(obs)}
    actions, rewards, dones = [], [], []
    done = terminated = False
    while not done:
        action = np.asarray(expert.act(obs), dtype=np.float32)
        for k, v in _as_dict(obs).items():
            frames[k].append(v)
        obs, reward, terminated, truncated, info = env.step(action)
        done = terminated or truncated
        actions.append(action)
        rewards.append(reward)
        dones.append(done)
    episode = Episode(
        obs={k: _stack(v) for k, v in frames.items()},
        actions=np.stack(actions).reshape(len(actions), -1),  # (T, A)
        rewards=np.asarray(rewards, dtype=np.float32),
        dones=np.asarray(dones, dtype=bool),
        seed=seed,
    )
    return episode, info, bool(terminated)


def _as_dict(obs) -> dict:
    """Observation as {key: array}: a Box observation is the key `observation`."""
    return obs if isinstance(obs, dict) else {"observation": obs}


def _expert_factory(spec: str) -> ExpertFactory:
    if _WORKER.get("expert", (None,))[0] != spec:
        _WORKER["expert"] = (spec, load_expert(spec))
    return _WORKER["expert"][1]


def check_spaces(env, env_id: str) -> None:
    """One line (UserError) unless the env has a Box action space and a Box or Dict-of-Box
    observation space, the ones a demo file can hold."""
    obs, act = env.observation_space, env.action_space
    subspaces = obs.spaces.values() if isinstance(obs, gymnasium.spaces.Dict) else [obs]
    if not all(isinstance(sp, gymnasium.spaces.Box) for sp in subspaces):
        raise UserError(f"{env_id}: observation space {obs} is not a Box or a Dict of Boxes")
    if not isinstance(act, gymnasium.spaces.Box):
        raise UserError(f"{env_id}: action space {act} is not a Box (continuous actions)")


def _stack(values: list) -> np.ndarray:
    """(T, ...) array of one observation key: camera frames stay uint8, the rest float32."""
    x = np.stack(values)
    return x if x.dtype == np.uint8 else x.astype(np.float32)


def _worker_episode(args: tuple[str, dict, int, int | None, str | None]) -> tuple[Episode, bool]:
    env_id, env_kwargs, seed, mode, expert = args
    if _WORKER.get("env_id") != (env_id, env_kwargs):
        _WORKER["env"] = make_env(env_id, **env_kwargs)
        _WORKER["env_id"] = (env_id, env_kwargs)
    return run_expert_episode(_WORKER["env"], seed, mode, expert)


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
    expert: str | None = None,
) -> CollectStats:
    """Run the expert until `episodes` episodes are kept and write them to `out` (HDF5).

    env_kwargs: arguments of the env (e.g. ``{"cameras": ["top"], "image_size": 64}``),
    recorded in the file's ``env_args`` so training and evaluation rebuild the same env.
    expert: ``module:callable`` of a user's expert factory, called as
    ``callable(env, mode=None | K, rng=np.random.Generator)`` and returning an object with
    ``reset(obs, info)`` and ``act(obs) -> action``; None: the task's own scripted expert (a
    diffpolicy env). Box observations are written as ``obs/observation``, Dict ones key by key.

    append: add them to the episodes already in `out` (same env id; seeds start after the
    file's largest seed unless that would repeat one); the file is replaced in one rename, so
    an interrupted append leaves it as it was. Stats count the new episodes.
    """
    import time

    env_kwargs = dict(env_kwargs or {})
    previous = _previous_episodes(out, env_id, env_kwargs) if append else []
    if previous:
        seed = max(seed, max(e.seed for e in previous) + 1)
    if episodes < 1:
        raise UserError(f"--episodes {episodes} must be >= 1")
    if workers < 1:
        raise UserError(f"--workers {workers} must be >= 1")
    if expert is not None:
        load_expert(expert)  # a bad spec fails here, before any env or worker starts
    probe = make_env(env_id, **env_kwargs)
    try:
        num_modes, mode_names, layout = _task_facts(probe, env_id, mode, expert)
        tasks = ((env_id, env_kwargs, seed + k, mode, expert) for k in range(2 * episodes + 20))
        if workers > 1:
            probe.close()
            probe = None  # the workers make their own envs
        t0 = time.perf_counter()
        kept, tried = _run_tasks(
            tasks, episodes, keep_failures, workers, probe, (env_id, env_kwargs), progress
        )
        seconds = time.perf_counter() - t0
    finally:
        if probe is not None:
            probe.close()
    if len(kept) < episodes:
        raise UserError(
            f"the expert succeeded in only {len(kept)} of {tried} episodes; asked for {episodes} "
            "(--keep-failures keeps the failed ones)"
        )
    env_args = {"env_name": env_id, "env_type": 4, "env_kwargs": env_kwargs}
    demos = Demos(previous + kept, env_args=env_args, mode_names=mode_names, layout=layout)
    write_demos(out, demos)
    new = dataclasses.replace(demos, episodes=kept).mode_counts()  # this call's episodes
    return CollectStats(len(kept), tried, seconds, new.tolist())


def _run_tasks(
    tasks, episodes: int, keep_failures: bool, workers: int, env, key: tuple, progress: bool
) -> tuple[list[Episode], int]:
    """Run episode tasks in order -- in this process on `env` (made as `key` = (env id, env
    kwargs) says), or in `workers` spawned processes -- until `episodes` are kept.
    Returns (kept episodes, episodes tried)."""
    from tqdm import tqdm

    kept: list[Episode] = []
    tried = 0
    bar = tqdm(total=episodes, desc=f"collect {key[0]}", unit="ep", disable=not progress)
    pool = None
    if workers == 1:
        _WORKER.update(env_id=key, env=env)
        results = map(_worker_episode, tasks)
    else:
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
    return kept, tried


def _task_facts(env, env_id: str, mode: int | None, expert: str | None):
    """(num_modes, mode_names, layout) of the env, defaults for an env that is not diffpolicy's
    (no modes, no names, no layout), after checking its spaces, `mode` and the expert."""
    check_spaces(env, env_id)
    u = env.unwrapped
    if expert is None and getattr(u, "task_name", None) is None:
        raise UserError(
            f"{env_id} has no scripted expert in diffpolicy: pass your own as "
            "--expert module:callable (see README, 'Adding a task')"
        )
    num_modes = int(getattr(u, "num_modes", 0))
    mode_names = list(getattr(u, "mode_names", []))
    layout = u.layout() if callable(getattr(u, "layout", None)) else {}
    if mode is not None and not 0 <= mode < num_modes:
        if num_modes == 0:
            raise UserError(f"--mode {mode}: {env_id} has no modes")
        raise UserError(
            f"--mode {mode} out of range: {env_id} has modes 0..{num_modes - 1} "
            f"({', '.join(mode_names)})"
        )
    return num_modes, mode_names, layout


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
