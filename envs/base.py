"""The episode skeleton that the diffpolicy task envs share.

:class:`PandaEnv` is a ``gymnasium.Env`` that owns one :class:`envs.panda.Scene` (one
``BulletClient``) per instance and runs the parts that every task does the same way: argument
checks, ``reset`` (roll the scene back to its snapshot, then let the task place things),
``step`` (step count, termination, truncation at ``max_steps``, end-of-episode info), the
non-finite-action guard, the workspace clip and rate limit of the ee target, ``render`` and
``close``, and camera observations. The task itself -- geometry, dynamics, success, modes --
stays in the subclass.

Camera observations (off by default). ``cameras=("top",)`` adds the key ``top_image`` to every
observation: a uint8 ``(image_size, image_size, 3)`` RGB frame (robomimic's ``<camera>_image``
convention) from the pose the subclass lists under that name in ``CAMERAS``, declared in the
observation space. With cameras the scene draws the robot with its low-poly meshes (see
``envs/panda.py``); without, nothing is rendered and nothing changes.
"""

from __future__ import annotations

import warnings

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from envs.panda import project

MAX_IMAGE_SIZE = 512


class PandaEnv(gym.Env):
    """Base of the Panda task envs; subclasses keep their own ``metadata`` and docstring.

    A subclass calls ``super().__init__(...)`` first in its ``__init__``, then sets
    ``action_space``, ``observation_space``, ``_ws_low`` / ``_ws_high`` (the box the ee target is
    clipped to), builds ``self.scene`` and calls ``self.scene.save()``, and finally calls
    ``self._reset_episode_state()``. It implements:

    - ``_reset_scene(rng)``: place the episode's objects and the robot; runs in ``reset`` after
      the scene is restored and before ``_reset_episode_state``;
    - ``_reset_episode_state()``: clear the per-episode counters, starting with
      ``super()._reset_episode_state()``;
    - ``_apply_action(a) -> (success, collision)``: one control step for the float64 action
      ``a`` (shaped like ``action_space``), updating the episode state;
    - ``_obs()``, ``_info(success, collision)``: observation and per-step info;
    - ``_end_info(success, collision)``: the extra info keys of an episode's last step.

    ``CAMERAS`` (class attribute) maps camera names to poses (keyword arguments of
    :meth:`envs.panda.Scene.render` besides the size); ``proprio_keys`` names the observation
    keys that hold only what the robot senses of itself (no object or goal state);
    ``robot_type`` names the robot for dataset exports (LeRobotDataset's ``robot_type``).

    Args:
        render_mode: None or ``"rgb_array"``.
        max_steps: control steps before ``truncated``.
        max_step_size: most the ee target may move per step (m).
        width, height: size of rendered frames.
        camera: keyword arguments of :meth:`envs.panda.Scene.render` besides the size.
        cameras: names from ``CAMERAS`` to observe (each adds ``<name>_image``).
        image_size: side of the square camera observations (pixels).
    """

    CAMERAS: dict[str, dict] = {}
    proprio_keys: tuple[str, ...] = ("proprio",)
    robot_type = "franka_panda"

    def __init__(
        self,
        render_mode: str | None,
        max_steps: int,
        max_step_size: float,
        width: int,
        height: int,
        camera: dict,
        cameras=(),
        image_size: int = 64,
    ) -> None:
        if render_mode not in (None, "rgb_array"):
            raise ValueError(f"render_mode={render_mode!r} must be None or 'rgb_array'")
        if isinstance(cameras, str):
            cameras = (cameras,)
        self.cameras = tuple(str(c) for c in cameras)
        unknown = [c for c in self.cameras if c not in self.CAMERAS]
        if unknown:
            raise ValueError(
                f"unknown camera(s) {unknown}; this env has: {', '.join(self.CAMERAS)}"
            )
        if len(set(self.cameras)) != len(self.cameras):
            raise ValueError(f"cameras={list(self.cameras)} names a camera twice")
        if not 8 <= int(image_size) <= MAX_IMAGE_SIZE:
            raise ValueError(f"image_size={image_size} must be in [8, {MAX_IMAGE_SIZE}]")
        self.image_size = int(image_size)
        self.render_mode = render_mode
        self.max_steps = int(max_steps)
        self.max_step_size = float(max_step_size)
        self.width, self.height = int(width), int(height)
        self._camera = dict(camera)
        self._warned_nan = False

    # -- gym API --------------------------------------------------------------------------------
    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        self.scene.restore()
        self._reset_scene(self.np_random)
        self._reset_episode_state()
        return self._observe(), self._info(False, False)

    def step(self, action):
        a = np.asarray(action, dtype=np.float64).reshape(self.action_space.shape)
        success, collision = self._apply_action(a)
        self._steps += 1
        terminated = collision or success
        truncated = (not terminated) and self._steps >= self.max_steps
        info = self._info(success, collision)
        if terminated or truncated:
            info.update(self._end_info(success, collision))
        return self._observe(), float(success), terminated, truncated, info

    def render(self):
        if self.render_mode != "rgb_array":
            return None
        return self.scene.render(self.width, self.height, **self._camera)

    def close(self) -> None:
        self.scene.close()

    # -- cameras --------------------------------------------------------------------------------
    def image_spaces(self) -> dict[str, spaces.Box]:
        """Observation-space entries of the chosen cameras: ``<name>_image`` -> uint8 box."""
        shape = (self.image_size, self.image_size, 3)
        return {f"{c}_image": spaces.Box(0, 255, shape, dtype=np.uint8) for c in self.cameras}

    def camera_pixels(self, camera: str, points) -> np.ndarray:
        """World points (N, 3) -> (N, 2) pixel (column, row) in ``<camera>_image``."""
        s = self.image_size
        return project(points, s, s, **self.CAMERAS[camera])

    def _observe(self) -> dict:
        obs = self._obs()
        s = self.image_size
        for c in self.cameras:
            obs[f"{c}_image"] = self.scene.render(s, s, **self.CAMERAS[c])
        return obs

    # -- helpers for subclasses -----------------------------------------------------------------
    def _reset_episode_state(self) -> None:
        self._steps = 0

    def _finite_action(self, a: np.ndarray, fallback) -> np.ndarray:
        """``a`` with non-finite entries taken from ``fallback``; warns once per env."""
        if not np.all(np.isfinite(a)):
            if not self._warned_nan:
                warnings.warn(
                    "non-finite action replaced by the current ee position",
                    RuntimeWarning,
                    stacklevel=4,  # the caller of step() (step -> _apply_action -> here)
                )
                self._warned_nan = True
            a = np.where(np.isfinite(a), a, fallback)
        return a

    def _limit_target(self, target: np.ndarray, ee: np.ndarray) -> np.ndarray:
        """``target`` clipped to the workspace, then at most ``max_step_size`` away from ``ee``."""
        pos = np.clip(target, self._ws_low, self._ws_high)
        delta = pos - ee
        dist = float(np.linalg.norm(delta))
        if dist > self.max_step_size:
            pos = ee + delta * (self.max_step_size / dist)
        return pos
