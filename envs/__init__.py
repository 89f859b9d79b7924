"""Gymnasium environments of diffpolicy; importing this package registers their ids.

| id | class | task_name | modes |
|----|-------|-----------|-------|
| ``diffpolicy/ReachAround-v0`` | :class:`envs.reach_around.ReachAroundEnv` | reach_around | 2 |
| ``diffpolicy/ReachAroundMaze-v0`` | same, ``layout="maze"`` | reach_around_maze | 24 |
| ``diffpolicy/Pick-v0`` | :class:`envs.pick.PickEnv` | pick | 2 |

The envs own their time limit (``max_steps``), so they are registered without a TimeLimit.
Both env classes share the episode skeleton of :class:`envs.base.PandaEnv`. Make an env with
:func:`make_env` (``gymnasium.make`` with a one-line ``UserError`` for an unknown id).
"""

from __future__ import annotations

import gymnasium
import numpy as np

from diffpolicy.errors import UserError
from envs.instructions import off_task_sentences, paraphrases, sample_instruction
from envs.pick import PickEnv, PickExpert
from envs.reach_around import ReachAroundEnv, ReachAroundExpert, classify_route

gymnasium.register(
    id="diffpolicy/ReachAround-v0",
    entry_point="envs.reach_around:ReachAroundEnv",
    kwargs={"layout": "reach_around"},
    max_episode_steps=None,
)
gymnasium.register(
    id="diffpolicy/ReachAroundMaze-v0",
    entry_point="envs.reach_around:ReachAroundEnv",
    kwargs={"layout": "maze"},
    max_episode_steps=None,
)
gymnasium.register(
    id="diffpolicy/Pick-v0",
    entry_point="envs.pick:PickEnv",
    max_episode_steps=None,
)


def make_env(env_id: str, **kwargs) -> gymnasium.Env:
    """gymnasium.make with a one-line UserError for an unknown id, an env whose package is not
    installed (``module:EnvId`` ids import ``module`` first, as gymnasium does) or arguments
    the env refuses (e.g. an unknown camera name)."""
    try:
        return gymnasium.make(env_id, **kwargs)
    except ModuleNotFoundError as e:
        module = e.name or env_id.partition(":")[0]
        raise UserError(
            f"env id '{env_id}' needs the Python module '{module}', which is not installed "
            f"(pip install {module.split('.')[0].replace('_', '-')})"
        ) from None
    except gymnasium.error.Error as e:
        known = sorted(k for k in gymnasium.registry if k.startswith("diffpolicy/"))
        raise UserError(
            f"unknown env id '{env_id}' ({type(e).__name__}); known ids: {', '.join(known)}"
        ) from None
    except (TypeError, ValueError) as e:
        shown = ", ".join(f"{k}={v!r}" for k, v in kwargs.items())
        raise UserError(f"{env_id} refuses the arguments ({shown}): {e}") from None


def episode_success(info: dict, terminated: bool) -> bool:
    """Success of a finished episode of any env, from its last step: ``info["is_success"]`` (the
    goal-env key, which diffpolicy envs report), else ``info["success"]``, else ``terminated``
    (the env ended the episode itself, not a time limit; envs whose episodes end on failure
    should report a success key)."""
    for key in ("is_success", "success"):
        if key in info:
            return bool(info[key])
    return bool(terminated)


def make_expert(
    env: gymnasium.Env, mode: int | None = None, rng: np.random.Generator | None = None
):
    """Scripted expert for ``env`` (any wrapper of a diffpolicy env).

    ``mode=None`` lets the expert draw a mode uniformly at each ``reset(obs, info)``; after
    ``reset`` its ``mode`` attribute says which. ``act(obs)`` returns a float32 action.
    """
    task = env.unwrapped.task_name
    if task in ("reach_around", "reach_around_maze"):
        return ReachAroundExpert(env, mode=mode, rng=rng)
    elif task == "pick":
        return PickExpert(env, mode=mode, rng=rng)
    raise ValueError(f"no expert for task_name={task!r}")


__all__ = [
    "off_task_sentences",
    "paraphrases",
    "PickEnv",
    "PickExpert",
    "ReachAroundEnv",
    "ReachAroundExpert",
    "classify_route",
    "episode_success",
    "make_env",
    "make_expert",
    "sample_instruction",
]
