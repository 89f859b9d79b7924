"""Synthetic demo files for fast tests (no simulator needed)."""

from __future__ import annotations

import numpy as np

from diffpolicy.dataset import Demos, Episode, write_demos


def bimodal_demos(n: int = 20, length: int = 12, seed: int = 0) -> Demos:
    """Planar 'reach around' toy: start near (0, 0), go to (0, 1) left (x<0) or right (x>0).

    obs/observation (T, 2) = position, obs/desired_goal (T, 2), actions (T, 2) = next position.
    """
    rng = np.random.default_rng(seed)
    episodes = []
    for i in range(n):
        mode = i % 2
        side = -1.0 if mode == 0 else 1.0
        s = np.linspace(0, 1, length + 1)
        x = side * 0.5 * np.sin(np.pi * s) + rng.normal(0, 0.01, s.shape)
        y = s + rng.normal(0, 0.01, s.shape)
        pos = np.stack([x, y], 1).astype(np.float32)
        goal = np.tile(np.array([0.0, 1.0], np.float32), (length, 1))
        episodes.append(
            Episode(
                obs={"observation": pos[:-1], "desired_goal": goal},
                actions=pos[1:],
                rewards=np.zeros(length, np.float32),
                dones=np.arange(length) == length - 1,
                mode=mode,
                mode_name=["left", "right"][mode],
                instruction=["go left", "go right"][mode],
                seed=i,
            )
        )
    return Demos(
        episodes,
        env_args={"env_name": "toy", "env_type": 2, "env_kwargs": {}},
        mode_names=["left", "right"],
        layout={"obstacles": [[0.0, 0.5, 0.2]]},
    )


def write_bimodal(path, **kw) -> str:
    write_demos(path, bimodal_demos(**kw))
    return str(path)
