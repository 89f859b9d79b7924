"""Planar reaching around obstacles: ``ReachAround-v0`` (2 routes) and ``ReachAroundMaze-v0`` (24).

Frame. All coordinates are in the D3IL "Avoiding" layout frame, which is also the world frame:
metres, table top at ``z = 0``, progress direction ``+y``. The Panda's base stands at
``panda.ROBOT_BASE = (0.10, 0.04)`` in this frame, so in robot-base coordinates every layout
point is shifted by ``(-0.10, -0.04)``. The offset keeps the whole field (x in [0.25, 0.75],
y in [-0.32, 0.40]) inside the arm's comfortable reach at table height; the obstacles' geometry
is exactly D3IL's.

Routes. Obstacles are grouped in rows (same ``y``). Where the end effector crosses a row's
line from below, the crossing ``x`` gives a gap index ``g`` = number of that row's obstacles
left of (smaller ``x`` than) the crossing. Heading ``+y``, smaller ``x`` is on the left. The
mode id is the mixed-radix number of the gaps, first row most significant:
``mode = (g1 * (n2 + 1) + g2) * (n3 + 1) + g3``. :func:`classify_route` does this for any path
without an env; the env uses the same code step by step.
"""

from __future__ import annotations

import math

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from envs.base import PandaEnv
from envs.panda import CONTROL_HZ, ROBOT_BASE, Scene

EE_Z = 0.03  # height of the ee (grasp point) above the table; fingertips ~1 cm lower
EE_RADIUS = 0.015  # half-width of the closed fingers across the direction of travel
OBSTACLE_HEIGHT = 0.05  # the hand passes above, the fingers must go around
HYSTERESIS = 0.01  # side changes closer than this to an obstacle's centre line don't count
APPROACH = 0.03  # the approach band of a row starts this far before its obstacles' faces
STALL_DISTANCE = 0.10  # "stalled in front of a row" = ended within this distance below it

LAYOUTS = ("reach_around", "maze")


def make_layout(name: str) -> dict:
    """JSON-serialisable obstacle layout; ``name`` is ``"reach_around"`` or ``"maze"``.

    Keys: ``name``, ``rows`` (list of rows, each a list of ``[x, y, r]``), ``obstacles`` (all of
    them, flat), ``row_y``, ``start_region`` / ``goal_region`` (``{"low": [x, y], "high": [x,
    y]}``), ``goal_radius`` (success distance, or ``None``), ``success_y`` (success line, or
    ``None``), ``workspace``, ``ee_z``, ``ee_radius``, ``robot_base``, ``mode_names``.
    """
    if name == "reach_around":
        rows = [[[0.50, -0.10, 0.04]]]
        start = {"low": [0.48, -0.30], "high": [0.52, -0.26]}
        goal = {"low": [0.47, 0.06], "high": [0.53, 0.10]}
        goal_radius, success_y = 0.025, None
        mode_names = ["left", "right"]
    elif name == "maze":
        rows = [
            [[0.50, -0.10, 0.03]],
            [[0.425, 0.08, 0.025], [0.575, 0.08, 0.025]],
            [[0.35, 0.26, 0.025], [0.50, 0.26, 0.025], [0.65, 0.26, 0.025]],
        ]
        start = {"low": [0.50, -0.30], "high": [0.55, -0.26]}
        goal = {"low": [0.27, 0.35], "high": [0.73, 0.40]}
        goal_radius, success_y = None, 0.35
        mode_names = _maze_mode_names(rows)
    else:
        raise ValueError(f"layout={name!r} must be one of {LAYOUTS}")
    return {
        "name": name,
        "rows": rows,
        "obstacles": [ob for row in rows for ob in row],
        "row_y": [row[0][1] for row in rows],
        "start_region": start,
        "goal_region": goal,
        "goal_radius": goal_radius,
        "success_y": success_y,
        "workspace": {"low": [0.25, -0.32], "high": [0.75, 0.40]},
        "ee_z": EE_Z,
        "ee_radius": EE_RADIUS,
        "robot_base": list(ROBOT_BASE[:2]),
        "mode_names": mode_names,
    }


def _gap_letters(n: int) -> list[str]:
    inner = ["M"] if n == 2 else [f"M{i}" for i in range(1, n)]
    return ["L", *inner, "R"]


def _maze_mode_names(rows) -> list[str]:
    names = [""]
    for row in rows:
        names = [f"{p}-{g}" if p else g for p in names for g in _gap_letters(len(row))]
    return names


def num_modes(layout: dict) -> int:
    return math.prod(len(row) + 1 for row in layout["rows"])


def gap_index(x: float, row) -> int:
    """Gap of a crossing at ``x``: how many of the row's obstacles lie left of it."""
    return int(sum(ob[0] < x for ob in row))


def gaps_to_mode(gaps, layout: dict) -> int:
    """Mixed-radix mode id of per-row gaps; -1 if any row is uncrossed (gap -1)."""
    if any(g < 0 for g in gaps):
        return -1
    mode = 0
    for g, row in zip(gaps, layout["rows"]):
        mode = mode * (len(row) + 1) + int(g)
    return mode


def mode_to_gaps(mode: int, layout: dict) -> list[int]:
    gaps = []
    for row in reversed(layout["rows"]):
        gaps.append(mode % (len(row) + 1))
        mode //= len(row) + 1
    return gaps[::-1]


def gap_centres(layout: dict) -> list[list[float]]:
    """Per row, the x of each gap's centre (outer gaps: an obstacle radius + 4.5 cm outside)."""
    out = []
    for row in layout["rows"]:
        xs = sorted(ob[0] for ob in row)
        r = row[0][2]
        mids = [(a + b) / 2 for a, b in zip(xs[:-1], xs[1:])]
        out.append([xs[0] - r - 0.045, *mids, xs[-1] + r + 0.045])
    return out


def update_crossings(gaps: list[int], p0, p1, layout: dict) -> None:
    """Record in ``gaps`` (in place) the rows that the segment ``p0 -> p1`` crosses upward.

    A later upward crossing of the same row overwrites an earlier one (the path that finally
    went through counts).
    """
    for k, (row, y) in enumerate(zip(layout["rows"], layout["row_y"])):
        if p0[1] < y <= p1[1]:
            t = (y - p0[1]) / (p1[1] - p0[1])
            gaps[k] = gap_index(p0[0] + t * (p1[0] - p0[0]), row)


def classify_route(xy_path: np.ndarray, layout: dict) -> int:
    """Mode id of an ee path ``(T, 2)`` through ``layout``; -1 if some row was never crossed."""
    xy = np.asarray(xy_path, dtype=np.float64).reshape(-1, 2)
    gaps = [-1] * len(layout["rows"])
    for p0, p1 in zip(xy[:-1], xy[1:]):
        update_crossings(gaps, p0, p1, layout)
    return gaps_to_mode(gaps, layout)


def _segment_hit(p0, p1, centre, radius):
    """First point of segment p0->p1 within ``radius`` of ``centre`` (or None)."""
    d = p1 - p0
    f = p0 - centre
    a = float(d @ d)
    c = float(f @ f) - radius * radius
    if c <= 0.0:
        return p0.copy()
    if a < 1e-12:
        return None
    b = 2.0 * float(f @ d)
    disc = b * b - 4 * a * c
    if disc < 0:
        return None
    t = (-b - math.sqrt(disc)) / (2 * a)
    return p0 + t * d if 0.0 <= t <= 1.0 else None


class ReachAroundEnv(PandaEnv):
    """Move the Panda's end effector in a plane past cylindrical obstacles to a goal.

    ## Description
    A Franka Panda with closed fingers pointing down moves its end effector (grasp point) at a
    fixed height of 3 cm over a table. Cylinders (5 cm tall) stand between the start region and
    the goal. ``layout="reach_around"``: one obstacle, two routes. ``layout="maze"``: D3IL's
    "Avoiding" field of 6 obstacles in 3 rows, 24 routes. The arm is placed kinematically (IK,
    null space pulled to a rest pose); contacts with obstacles are checked both analytically
    (the swept ee disc of radius 1.5 cm) and with PyBullet's closest points for every link.

    ## Action space
    ``Box(2,)`` float32, absolute ee target in metres (layout frame):

    | idx | meaning | range |
    |-----|---------|-------|
    | 0 | target x | clipped to [0.25, 0.75] |
    | 1 | target y | clipped to [-0.32, 0.40] |

    The target is then rate-limited to ``max_step_size`` (default 4 cm) per step. Non-finite
    entries are replaced by the current ee coordinate and a ``RuntimeWarning`` is emitted once.

    ## Observation space
    ``Dict`` of float32 boxes:

    | key | shape | content |
    |-----|-------|---------|
    | observation | (4,) | ee x, ee y (m), ee vx, ee vy (m/s, over the last control step) |
    | achieved_goal | (2,) | ee x, ee y |
    | desired_goal | (2,) | goal centre (reach_around) / (0.5, success_y) (maze) |
    | proprio | (4,) | what the robot senses of itself: the same values as ``observation`` |
    | top_image | (S, S, 3) uint8 | only with ``cameras=("top",)``: the field seen from above |
    | front_image | (S, S, 3) uint8 | only with ``cameras=("front",)``: from beyond the goal |

    ``observation`` and ``proprio`` hold no scene state; only ``desired_goal`` is privileged.
    The green disc at the goal (radius = the success radius) is drawn in camera frames.

    ## Rewards
    1.0 on the success step, else 0.0 (see :meth:`compute_reward`).

    ## Success and termination
    reach_around: ee within 2.5 cm of the goal. maze: ee ``y > 0.35``. Any contact with an
    obstacle terminates with ``info["collision"] = True`` and no success. ``truncated`` at
    ``max_steps`` (the env owns the time limit).

    ## Modes
    reach_around: 0 ``"left"`` (smaller x), 1 ``"right"``. maze: mixed-radix gaps, names like
    ``"L-M-M2"``; see the module docstring. ``info["mode"]`` is -1 until every row is crossed.

    ## Info
    Every step: ``is_success``, ``collision``, ``mode``, ``mode_name``, ``gaps`` (per row, -1
    uncrossed). At the episode's end also ``between_modes`` (collision with the start-facing
    side of an obstacle within its width, or truncated stalled less than 10 cm in front of a
    row's obstacle) and ``mode_switches`` (changes of gap side while approaching each row,
    1 cm hysteresis).

    ## Arguments
    ``layout`` ("reach_around" | "maze"), ``render_mode`` (None | "rgb_array"), ``max_steps``
    (default 60 / 100), ``max_step_size`` (m per step, default 0.04), ``width``/``height`` of
    rendered frames (default 320x240), ``cameras`` (default none; ``"top"``, ``"front"``),
    ``image_size`` (side of camera frames, default 64).
    """

    metadata = {"render_modes": ["rgb_array"], "render_fps": CONTROL_HZ}
    CAMERAS = {
        # straight down on the centre of the field, +y up in the frame; the whole field is in
        # view, but the arm hides the goal while the hand approaches it
        "top": {"target": (0.5, 0.04, 0.0), "distance": 0.84, "yaw": 0.0, "pitch": -89.9},
        # from beyond the goal, facing the robot: the arm stays behind the goal
        "front": {"target": (0.5, 0.0, 0.0), "distance": 0.85, "yaw": 180.0, "pitch": -50.0},
    }
    proprio_keys = ("observation", "proprio")

    def __init__(
        self,
        layout: str = "reach_around",
        render_mode: str | None = None,
        max_steps: int | None = None,
        max_step_size: float = 0.04,
        width: int = 320,
        height: int = 240,
        cameras=(),
        image_size: int = 64,
    ) -> None:
        super().__init__(
            render_mode,
            max_steps if max_steps is not None else (60 if layout == "reach_around" else 100),
            max_step_size,
            width,
            height,
            camera={"target": (0.5, 0.02, 0.0), "distance": 1.3, "yaw": 0.0, "pitch": -85.0},
            cameras=cameras,
            image_size=image_size,
        )
        self._layout = make_layout(layout)
        self.task_name = "reach_around" if layout == "reach_around" else "reach_around_maze"
        self.num_modes = num_modes(self._layout)
        self.mode_names = tuple(self._layout["mode_names"])
        lay = self._layout
        self._ws_low = np.array(lay["workspace"]["low"])
        self._ws_high = np.array(lay["workspace"]["high"])
        self.action_space = spaces.Box(
            self._ws_low.astype(np.float32), self._ws_high.astype(np.float32), dtype=np.float32
        )
        pos_low, pos_high = self._ws_low - 0.1, self._ws_high + 0.1
        self._obs_low = np.concatenate([pos_low, [-2.0, -2.0]]).astype(np.float32)
        self._obs_high = np.concatenate([pos_high, [2.0, 2.0]]).astype(np.float32)
        xy = spaces.Box(pos_low.astype(np.float32), pos_high.astype(np.float32), dtype=np.float32)
        self.observation_space = spaces.Dict(
            {
                "observation": spaces.Box(self._obs_low, self._obs_high, dtype=np.float32),
                "achieved_goal": xy,
                "desired_goal": xy,
                "proprio": spaces.Box(self._obs_low, self._obs_high, dtype=np.float32),
                **self.image_spaces(),
            }
        )

        self.scene = Scene(low_poly=bool(self.cameras))
        self._obstacle_names = []
        for i, (x, y, r) in enumerate(lay["obstacles"]):
            name = f"obstacle{i}"
            self.scene.add_cylinder(name, x, y, r, OBSTACLE_HEIGHT)
            self._obstacle_names.append(name)
        self.scene.add_marker("goal", 0.025, (0.2, 0.8, 0.2, 0.8))
        self.scene.save()
        self._ee = np.zeros(2)
        self._vel = np.zeros(2)
        self._goal = np.zeros(2)
        self._reset_episode_state()

    # -- public helpers -------------------------------------------------------------------------
    def layout(self) -> dict:
        """The obstacle layout (JSON-serialisable copy), for plotting and classification."""
        import copy

        return copy.deepcopy(self._layout)

    def compute_reward(self, achieved_goal, desired_goal, info) -> np.ndarray:
        """1.0 where the achieved goal satisfies the success test, else 0.0 (vectorised)."""
        ag = np.asarray(achieved_goal, dtype=np.float64)
        dg = np.asarray(desired_goal, dtype=np.float64)
        if self._layout["success_y"] is not None:
            return (ag[..., 1] > dg[..., 1]).astype(np.float64)
        return (np.linalg.norm(ag - dg, axis=-1) < self._layout["goal_radius"]).astype(np.float64)

    # -- PandaEnv hooks -------------------------------------------------------------------------
    def _reset_scene(self, rng: np.random.Generator) -> None:
        lay = self._layout
        start = rng.uniform(lay["start_region"]["low"], lay["start_region"]["high"])
        if lay["success_y"] is None:
            self._goal = rng.uniform(lay["goal_region"]["low"], lay["goal_region"]["high"])
        else:
            self._goal = np.array([0.5, lay["success_y"]])
        self.scene.place("goal", (*self._goal, 0.001))
        self.scene.teleport_ee((*start, EE_Z), finger=0.0, tol=5e-4, iters=10)
        self._ee = self.scene.ee_pos()[:2]
        self._vel = np.zeros(2)

    def _apply_action(self, a: np.ndarray) -> tuple[bool, bool]:
        a = self._limit_target(self._finite_action(a, self._ee), self._ee)
        p0 = self._ee.copy()
        self.scene.teleport_ee((*a, EE_Z), finger=0.0)
        p1 = self.scene.ee_pos()[:2]
        self._ee, self._vel = p1, (p1 - p0) * CONTROL_HZ
        self._path.append(p1.copy())

        collision = self._check_collision(p0, p1)
        update_crossings(self._gaps, p0, p1, self._layout)
        self._track_sides(p1)
        success = (not collision) and bool(self.compute_reward(p1, self._goal, None) > 0.5)
        return success, collision

    def _reset_episode_state(self) -> None:
        super()._reset_episode_state()
        n_rows = len(self._layout["rows"])
        self._gaps = [-1] * n_rows
        self._sides: list[int | None] = [None] * n_rows
        self._switches = [0] * n_rows
        self._contact: tuple[np.ndarray, list[float]] | None = None
        self._path = [self._ee.copy()]

    def _obs(self) -> dict:
        o = np.concatenate([self._ee, self._vel]).astype(np.float32)
        o = np.clip(o, self._obs_low, self._obs_high)
        ee = o[:2].copy()
        return {
            "observation": o,
            "achieved_goal": ee,
            "desired_goal": self._goal.astype(np.float32),
            "proprio": o.copy(),
        }

    def action_points(self, actions) -> np.ndarray:
        """Actions (N, 2) -> the world points (N, 3) they command (at the ee height)."""
        a = np.asarray(actions, dtype=np.float64).reshape(-1, 2)
        return np.c_[a, np.full(len(a), EE_Z)]

    def _info(self, success: bool, collision: bool) -> dict:
        mode = gaps_to_mode(self._gaps, self._layout)
        return {
            "is_success": bool(success),
            "collision": bool(collision),
            "mode": int(mode),
            "mode_name": self.mode_names[mode] if mode >= 0 else "none",
            "gaps": tuple(self._gaps),
        }

    def _end_info(self, success: bool, collision: bool) -> dict:
        return {
            "between_modes": self._between_modes(collision, success),
            "mode_switches": int(sum(self._switches)),
        }

    # -- internals ------------------------------------------------------------------------------
    def _check_collision(self, p0: np.ndarray, p1: np.ndarray) -> bool:
        for name, ob in zip(self._obstacle_names, self._layout["obstacles"]):
            centre = np.array(ob[:2])
            hit = _segment_hit(p0, p1, centre, ob[2] + EE_RADIUS)
            near = np.linalg.norm(p1 - centre) < ob[2] + 0.12
            if hit is None and near and self.scene.robot_hits(name, 0.0):
                hit = p1
            if hit is not None:
                self._contact = (hit, ob)
                return True
        return False

    def _track_sides(self, p: np.ndarray) -> None:
        for k, row in enumerate(self._layout["rows"]):
            if self._gaps[k] >= 0:
                continue
            y, r = row[0][1], max(ob[2] for ob in row)
            if not (y - r - APPROACH <= p[1] < y):
                continue
            lo, hi = gap_index(p[0] - HYSTERESIS, row), gap_index(p[0] + HYSTERESIS, row)
            if lo != hi:
                continue
            if self._sides[k] is not None and self._sides[k] != lo:
                self._switches[k] += 1
            self._sides[k] = lo

    def _between_modes(self, collision: bool, success: bool) -> bool:
        if collision and self._contact is not None:
            c, (x, y, r) = self._contact
            return bool(c[1] < y and abs(c[0] - x) < r)
        if success:
            return False
        p = self._ee
        for k, row in enumerate(self._layout["rows"]):
            if self._gaps[k] >= 0:
                continue
            y = row[0][1]
            if y - STALL_DISTANCE <= p[1] < y:
                return any(abs(p[0] - ox) < r + EE_RADIUS + 0.02 for ox, _, r in row)
            return False
        return False


class ReachAroundExpert:
    """Scripted expert for both layouts: through noisy gap centres at a noisy speed.

    ``reset(obs, info)`` picks the mode (uniform when constructed with ``mode=None``) and plans
    waypoints: for each row a point before and after the row's line at the chosen gap's centre
    (x noise +-8 mm, y noise +-5 mm), then the goal (+-5 mm) or a point past the success line.
    ``act(obs)`` advances along the polyline by a per-episode speed (2.2-3.6 cm per step)
    with +-15% per-step jitter.
    """

    def __init__(
        self, env: gym.Env, mode: int | None = None, rng: np.random.Generator | None = None
    ) -> None:
        self.layout = env.unwrapped.layout()
        self.n_modes = env.unwrapped.num_modes
        self.max_step_size = env.unwrapped.max_step_size
        if mode is not None and not 0 <= mode < self.n_modes:
            raise ValueError(f"mode={mode} must be in [0, {self.n_modes})")
        self._fixed_mode = mode
        self.rng = rng if rng is not None else np.random.default_rng()
        self.mode = -1
        self.waypoints: list[np.ndarray] = []

    def reset(self, obs: dict, info: dict | None = None) -> None:
        rng, lay = self.rng, self.layout
        self.mode = (
            int(rng.integers(self.n_modes)) if self._fixed_mode is None else self._fixed_mode
        )
        gaps = mode_to_gaps(self.mode, lay)
        centres = gap_centres(lay)
        wps = []
        x = 0.0
        for k, row in enumerate(lay["rows"]):
            y, r = row[0][1], max(ob[2] for ob in row)
            x = centres[k][gaps[k]] + rng.uniform(-0.008, 0.008)
            margin = r + 0.025
            wps.append(np.array([x, y - margin + rng.uniform(-0.005, 0.005)]))
            wps.append(np.array([x, y + margin + rng.uniform(-0.005, 0.005)]))
        if lay["success_y"] is None:
            goal = np.asarray(obs["desired_goal"], dtype=np.float64)
            wps.append(goal + rng.uniform(-0.005, 0.005, size=2))
        else:
            wps.append(np.array([x + rng.uniform(-0.01, 0.01), lay["success_y"] + 0.04]))
        self.waypoints = wps
        self._idx = 0
        self._speed = rng.uniform(0.022, 0.036)

    def act(self, obs: dict) -> np.ndarray:
        pos = np.asarray(obs["achieved_goal"], dtype=np.float64).copy()
        remaining = min(self._speed * self.rng.uniform(0.85, 1.15), self.max_step_size)
        while remaining > 1e-9 and self._idx < len(self.waypoints):
            d = self.waypoints[self._idx] - pos
            n = float(np.linalg.norm(d))
            if n <= remaining:
                pos = self.waypoints[self._idx].copy()
                remaining -= n
                self._idx += 1
            else:
                pos = pos + d * (remaining / n)
                remaining = 0.0
        if self._idx >= len(self.waypoints):
            pos = self.waypoints[-1].copy()
        return pos.astype(np.float32)
