"""``Pick-v0``: lift one of two cubes (red or blue) with a Panda; which cube is the mode."""

from __future__ import annotations

import copy
import math

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from envs.base import PandaEnv
from envs.panda import CONTROL_HZ, FINGER_MAX, SUBSTEPS, Scene

HALF = 0.02  # cube half size (4 cm cubes)
LIFT = 0.10  # success: cube bottom this high above the table ...
HOLD_STEPS = 3  # ... while touched by both fingers, for this many consecutive steps
MODE_LIFT = 0.05  # a cube whose bottom rises this high decides the mode
CUBES = ("red", "blue")
NEAREST_HYSTERESIS = 0.01  # m; the nearer cube must be nearer by this much to change sides


def _wrap_yaw(yaw: float) -> float:
    """Cube yaw folded by its 90-degree symmetry into [-pi/4, pi/4)."""
    return (yaw + math.pi / 4) % (math.pi / 2) - math.pi / 4


class PickEnv(PandaEnv):
    """Pick up either of two cubes with a Franka Panda.

    ## Description
    A red and a blue 4 cm cube lie at random, non-overlapping positions (at least 12 cm apart,
    yaw within +-0.3 rad) on a table in front of the Panda. The episode starts with the open
    gripper, pointing down, 20 cm above the midpoint of the two cubes (so neither cube is
    favoured). The arm and fingers are driven by position motors at 240 Hz physics (24
    substeps per 10 Hz control step); targets come from null-space IK.

    ## Action space
    ``Box(4,)`` float32:

    | idx | meaning | range |
    |-----|---------|-------|
    | 0-2 | ee (grasp point) target x, y, z (m) | x [0.3, 0.75], y [-0.3, 0.35], z [0.005, 0.35] |
    | 3 | gripper command: > 0 open (8 cm), <= 0 close (40 N per finger) | [-1, 1] |

    The position target is rate-limited to ``max_step_size`` (4 cm) per step. Non-finite entries
    are replaced (position: current ee; gripper: keep open) with one ``RuntimeWarning``.

    ## Observation space
    ``Dict`` of float32 boxes:

    | key | shape | content |
    |-----|-------|---------|
    | observation | (12,) | ee xyz, finger opening (m), red xyz + yaw, blue xyz + yaw |
    | achieved_goal | (2,) | height of the red / blue cube's bottom above the table (m) |
    | desired_goal | (2,) | (0.1, 0.1): the lift height |
    | proprio | (4,) | what the robot senses of itself: ee xyz, finger opening (m) |
    | front_image | (S, S, 3) uint8 | only with ``cameras=("front",)``: facing the robot |

    ``observation`` holds the cube poses (privileged); ``proprio`` and the images do not.

    Cube yaw is folded into [-pi/4, pi/4) (the cube's symmetry).

    ## Rewards
    1.0 on the success step, else 0.0.

    ## Success and termination
    A cube's bottom is >= 10 cm above the table while both fingers touch it, for 3
    consecutive control steps: terminated with ``is_success``. ``truncated`` at ``max_steps``.

    ## Modes
    0 ``"red"``, 1 ``"blue"``: the first cube whose bottom rises 5 cm; -1 before.

    ## Info
    Every step: ``is_success``, ``collision`` (always False), ``mode``, ``mode_name``. At the
    episode's end also ``between_modes`` (ended without success with the gripper closed on
    nothing while the ee is between the cubes: within 3 cm of the red-blue segment, over its
    middle half) and ``mode_switches`` (changes of the cube nearest to the ee in xy, 1 cm
    hysteresis, before the gripper first closes).

    ## Arguments
    ``render_mode`` (None | "rgb_array"), ``max_steps`` (default 80), ``max_step_size``
    (default 0.04), ``width``/``height`` (default 320x240), ``cameras`` (default none),
    ``image_size`` (side of camera frames, default 64).
    """

    metadata = {"render_modes": ["rgb_array"], "render_fps": CONTROL_HZ}
    # facing the robot across the cube region: both cubes, the gripper and the lift in view (a
    # camera from above sees mostly the arm)
    CAMERAS = {
        "front": {"target": (0.52, 0.02, 0.03), "distance": 0.45, "yaw": -90.0, "pitch": -45.0}
    }

    def __init__(
        self,
        render_mode: str | None = None,
        max_steps: int = 80,
        max_step_size: float = 0.04,
        width: int = 320,
        height: int = 240,
        cameras=(),
        image_size: int = 64,
    ) -> None:
        super().__init__(
            render_mode,
            max_steps,
            max_step_size,
            width,
            height,
            camera={"target": (0.52, 0.02, 0.05), "distance": 0.85, "yaw": 50.0, "pitch": -55.0},
            cameras=cameras,
            image_size=image_size,
        )
        self.task_name = "pick"
        self.num_modes = 2
        self.mode_names = CUBES
        self._ws_low = np.array([0.30, -0.30, 0.005])
        self._ws_high = np.array([0.75, 0.35, 0.35])
        self._cube_low, self._cube_high = np.array([0.42, -0.15]), np.array([0.62, 0.18])
        self.action_space = spaces.Box(
            np.array([*self._ws_low, -1.0], dtype=np.float32),
            np.array([*self._ws_high, 1.0], dtype=np.float32),
            dtype=np.float32,
        )
        q = math.pi / 4
        cube_lo, cube_hi = [-1.0, -1.0, -1.0, -q], [2.0, 2.0, 2.0, q]
        self._obs_low = np.array([*(self._ws_low - 0.1), 0.0, *cube_lo, *cube_lo], np.float32)
        self._obs_high = np.array([*(self._ws_high + 0.1), 0.09, *cube_hi, *cube_hi], np.float32)
        goal_box = spaces.Box(-1.0, 2.0, shape=(2,), dtype=np.float32)
        self.observation_space = spaces.Dict(
            {
                "observation": spaces.Box(self._obs_low, self._obs_high, dtype=np.float32),
                "achieved_goal": goal_box,
                "desired_goal": goal_box,
                "proprio": spaces.Box(self._obs_low[:4], self._obs_high[:4], dtype=np.float32),
                **self.image_spaces(),
            }
        )
        self.scene = Scene(finger_friction=2.0, low_poly=bool(self.cameras))
        self.scene.add_box("red", HALF, 0.08, (0.85, 0.15, 0.15, 1.0), friction=1.2)
        self.scene.add_box("blue", HALF, 0.08, (0.15, 0.3, 0.85, 1.0), friction=1.2)
        self.scene.save()
        self._goal = np.full(2, LIFT)
        self._reset_episode_state()

    def layout(self) -> dict:
        """Workspace and cube sampling region (JSON-serialisable), for plotting."""
        return copy.deepcopy(
            {
                "name": "pick",
                "workspace": {"low": self._ws_low.tolist(), "high": self._ws_high.tolist()},
                "cube_region": {"low": self._cube_low.tolist(), "high": self._cube_high.tolist()},
                "cube_size": 2 * HALF,
                "lift_height": LIFT,
                "mode_names": list(CUBES),
                "obstacles": [],
            }
        )

    def compute_reward(self, achieved_goal, desired_goal, info) -> np.ndarray:
        """1.0 where any cube is lifted to the desired height (holding not checked)."""
        ag, dg = np.asarray(achieved_goal), np.asarray(desired_goal)
        return np.any(ag >= dg, axis=-1).astype(np.float64)

    # -- PandaEnv hooks -------------------------------------------------------------------------
    def _reset_scene(self, rng: np.random.Generator) -> None:
        s = self.scene
        while True:
            xy = rng.uniform(self._cube_low, self._cube_high, size=(2, 2))
            if np.linalg.norm(xy[0] - xy[1]) >= 0.12:
                break
        for name, p in zip(CUBES, xy):
            s.respawn_box(name, (*p, HALF), yaw=rng.uniform(-0.3, 0.3))
        start = np.array([*(xy.mean(0) + rng.uniform(-0.01, 0.01, size=2)), 0.20])
        s.teleport_ee(start, finger=FINGER_MAX, tol=5e-4, iters=10)
        self._q_target = s.arm_q()
        self._finger_target = FINGER_MAX
        s.drive(self._q_target, self._finger_target)
        for _ in range(4):
            s.client.stepSimulation()

    def _apply_action(self, a: np.ndarray) -> tuple[bool, bool]:
        s = self.scene
        ee = s.ee_pos()
        a = self._finite_action(a, np.array([*ee, 1.0]))
        pos = self._limit_target(a[:3], ee)
        close = a[3] <= 0.0
        self._finger_target = 0.0 if close else FINGER_MAX
        self._ever_closed |= bool(close)
        self._q_target = s.ik(pos)
        s.drive(self._q_target, self._finger_target)
        for _ in range(SUBSTEPS):
            s.client.stepSimulation()

        heights = self._heights()
        held = [
            h >= LIFT and s.touching(c, 9) and s.touching(c, 10) for c, h in zip(CUBES, heights)
        ]
        self._held = self._held + 1 if any(held) else 0
        if self._mode < 0 and heights.max() >= MODE_LIFT:
            self._mode = int(np.argmax(heights))
        self._track_nearest()
        return self._held >= HOLD_STEPS, False

    def _reset_episode_state(self) -> None:
        super()._reset_episode_state()
        self._held = 0
        self._mode = -1
        self._nearest: int | None = None
        self._switches = 0
        self._ever_closed = False

    def _obs(self) -> dict:
        s = self.scene
        parts = [s.ee_pos(), [s.finger_width()]]
        for c in CUBES:
            p, yaw = s.body_pose(c)
            parts += [p, [_wrap_yaw(yaw)]]
        o = np.clip(np.concatenate(parts), self._obs_low, self._obs_high).astype(np.float32)
        return {
            "observation": o,
            "achieved_goal": np.clip(self._heights(), -1.0, 2.0).astype(np.float32),
            "desired_goal": self._goal.astype(np.float32),
            "proprio": o[:4].copy(),
        }

    def action_points(self, actions) -> np.ndarray:
        """Actions (N, 4) -> the ee positions (N, 3) they command."""
        return np.asarray(actions, dtype=np.float64).reshape(-1, 4)[:, :3]

    def _info(self, success: bool, collision: bool) -> dict:
        return {
            "is_success": bool(success),
            "collision": bool(collision),
            "mode": self._mode,
            "mode_name": CUBES[self._mode] if self._mode >= 0 else "none",
        }

    def _end_info(self, success: bool, collision: bool) -> dict:
        return {
            "between_modes": (not success) and self._closed_between(),
            "mode_switches": int(self._switches),
        }

    # -- internals ------------------------------------------------------------------------------
    def _heights(self) -> np.ndarray:
        return np.array([self.scene.body_pose(c)[0][2] - HALF for c in CUBES])

    def _track_nearest(self) -> None:
        if self._ever_closed:
            return
        ee = self.scene.ee_pos()[:2]
        d = [np.linalg.norm(ee - self.scene.body_pose(c)[0][:2]) for c in CUBES]
        if abs(d[0] - d[1]) < NEAREST_HYSTERESIS:
            return
        near = int(np.argmin(d))
        if self._nearest is not None and near != self._nearest:
            self._switches += 1
        self._nearest = near

    def _closed_between(self) -> bool:
        s = self.scene
        if self._finger_target > 0 or s.finger_width() > 0.01:
            return False
        ee = s.ee_pos()[:2]
        r, b = (s.body_pose(c)[0][:2] for c in CUBES)
        seg = b - r
        t = float((ee - r) @ seg / (seg @ seg))
        dist = float(np.linalg.norm(r + t * seg - ee))
        return 0.25 <= t <= 0.75 and dist < 0.03


class PickExpert:
    """Scripted picker: above the cube, down, close, lift 15+ cm, hold.

    Noise: grasp point +-4 mm in xy and +-3 mm in z, hover height 8-12 cm, lift height
    0.17-0.22 m, speed 2.5-3.5 cm per step with +-15% per-step jitter, 3-5 steps to close.
    """

    def __init__(
        self, env: gym.Env, mode: int | None = None, rng: np.random.Generator | None = None
    ) -> None:
        if mode is not None and mode not in (0, 1):
            raise ValueError(f"mode={mode} must be 0 (red) or 1 (blue)")
        self._fixed_mode = mode
        self.max_step_size = env.unwrapped.max_step_size
        self.rng = rng if rng is not None else np.random.default_rng()
        self.mode = -1
        self.plan: list[tuple[np.ndarray, float, int]] = []

    def reset(self, obs: dict, info: dict | None = None) -> None:
        rng = self.rng
        self.mode = int(rng.integers(2)) if self._fixed_mode is None else self._fixed_mode
        o = np.asarray(obs["observation"], dtype=np.float64)
        cube = o[4 + 4 * self.mode : 7 + 4 * self.mode]
        xy = cube[:2] + rng.uniform(-0.004, 0.004, size=2)
        z_grasp = HALF + rng.uniform(-0.003, 0.003)
        # (ee target, gripper command, steps to wait after arriving)
        self.plan = [
            (np.array([*xy, rng.uniform(0.08, 0.12)]), 1.0, 0),
            (np.array([*xy, z_grasp]), 1.0, 1),
            (np.array([*xy, z_grasp]), -1.0, int(rng.integers(3, 6))),
            (np.array([*xy, rng.uniform(0.17, 0.22)]), -1.0, 10_000),
        ]
        self._idx, self._wait, self._tries = 0, 0, 0
        self._speed = rng.uniform(0.025, 0.035)

    def act(self, obs: dict) -> np.ndarray:
        ee = np.asarray(obs["observation"][:3], dtype=np.float64)
        target, grip, wait = self.plan[self._idx]
        d = target - ee
        n = float(np.linalg.norm(d))
        step = min(self._speed * self.rng.uniform(0.85, 1.15), self.max_step_size)
        pos = target if n <= step else ee + d * (step / n)
        self._tries += 1
        if (n < 0.006 or self._tries > 12) and self._idx < len(self.plan) - 1:
            self._wait += 1
            if self._wait > wait:
                self._idx, self._wait, self._tries = self._idx + 1, 0, 0
        return np.array([*pos, grip], dtype=np.float32)
