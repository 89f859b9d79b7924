"""Shared PyBullet scene: one client, a table and a Franka Panda.

Every environment owns one :class:`Scene` (one ``BulletClient`` in DIRECT mode). The scene is
built once in the env's ``__init__``; the env snapshots it with :meth:`Scene.save` and rolls back
with :meth:`Scene.restore` on every ``reset`` so that the same seed gives the same episode.

Cameras. :meth:`Scene.render` uses PyBullet's CPU tiny renderer, whose cost is the Panda's
visual meshes (about 12k triangles per link): 20 ms per 64x64 frame, against 0.7 ms with the
robot hidden. An env with camera observations builds its scene with ``low_poly=True``: the same
URDF with each link's collision mesh (about 1% of the triangles) as its visual, so dynamics and
contacts are unchanged and a 64x64 frame costs about 1.7 ms.

World frame: the table top is the plane ``z = 0``; ``x`` points away from the robot, ``y`` to
its left. The robot base stands on the table at :data:`ROBOT_BASE` (see ``reach_around.py`` for
why it is not at the origin).
"""

from __future__ import annotations

import contextlib
import functools
import os
import sys
import tempfile

import numpy as np


@contextlib.contextmanager
def _quiet_fds():
    """Silence C-level stdout/stderr: pybullet prints its build time and argv on import/connect."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = [os.dup(1), os.dup(2)]
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 1)
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        for fd in (*saved, devnull):
            os.close(fd)


with _quiet_fds():
    import pybullet
    import pybullet_data
    from pybullet_utils import bullet_client

PHYSICS_HZ = 240
CONTROL_HZ = 10
SUBSTEPS = PHYSICS_HZ // CONTROL_HZ  # 24 physics steps per control step

ROBOT_BASE = (0.10, 0.04, 0.0)
EE_LINK = 11  # panda_grasptarget: between the fingertips, ~1 cm above their lower edge
ARM_JOINTS = (0, 1, 2, 3, 4, 5, 6)
FINGER_JOINTS = (9, 10)
FINGER_MAX = 0.04  # per finger; the gripper opens to 2 * FINGER_MAX
# Null-space IK data for the 9 movable joints (7 arm + 2 fingers).
LOWER = [-2.9671, -1.8326, -2.9671, -3.1416, -2.9671, -0.0873, -2.9671, 0.0, 0.0]
UPPER = [2.9671, 1.8326, 2.9671, 0.0, 2.9671, 3.8223, 2.9671, 0.04, 0.04]
RANGES = [u - lo for u, lo in zip(UPPER, LOWER)]
REST = [0.0, 0.41, 0.0, -1.85, 0.0, 2.26, 0.79, 0.0, 0.0]
DOWN = (1.0, 0.0, 0.0, 0.0)  # x, y, z, w: gripper pointing at the table, fingers along y
ARM_FORCES = (87.0, 87.0, 87.0, 87.0, 12.0, 12.0, 12.0)


@functools.lru_cache(maxsize=1)
def low_poly_urdf() -> str:
    """Path of a copy of ``franka_panda/panda.urdf`` whose visuals are its collision meshes.

    Written once per process into the temp directory (mesh paths made absolute, so it loads from
    anywhere); identical to the packaged file in every joint, inertia and collision shape.
    """
    root = os.path.join(pybullet_data.getDataPath(), "franka_panda")
    with open(os.path.join(root, "panda.urdf")) as f:
        text = f.read()
    text = text.replace("package://meshes/visual/", f"{root}/meshes/collision/")
    text = text.replace("package://meshes/", f"{root}/meshes/")
    fd, path = tempfile.mkstemp(prefix="diffpolicy-panda-low-poly-", suffix=".urdf")
    with os.fdopen(fd, "w") as f:
        f.write(text)
    return path


def camera_matrices(
    width: int, height: int, target, distance: float, yaw: float, pitch: float
) -> tuple[list[float], list[float]]:
    """PyBullet view and projection matrices (column-major lists of 16) of a camera pose."""
    view = pybullet.computeViewMatrixFromYawPitchRoll(
        cameraTargetPosition=list(target),
        distance=distance,
        yaw=yaw,
        pitch=pitch,
        roll=0.0,
        upAxisIndex=2,
    )
    proj = pybullet.computeProjectionMatrixFOV(
        fov=50.0, aspect=width / height, nearVal=0.05, farVal=5.0
    )
    return view, proj


def project(points, width: int, height: int, **camera) -> np.ndarray:
    """World points (N, 3) -> pixel coordinates (N, 2) as (column, row) in a frame rendered
    by :meth:`Scene.render` with the same size and ``camera`` pose."""
    view, proj = camera_matrices(width, height, **camera)
    m = np.asarray(proj, dtype=np.float64).reshape(4, 4).T @ np.asarray(view).reshape(4, 4).T
    pts = np.asarray(points, dtype=np.float64).reshape(-1, 3)
    clip = np.c_[pts, np.ones(len(pts))] @ m.T  # (N, 4)
    ndc = clip[:, :2] / clip[:, 3:4]
    return np.c_[(ndc[:, 0] + 1) * 0.5 * width, (1 - ndc[:, 1]) * 0.5 * height]


class Scene:
    """A DIRECT-mode PyBullet world with a table and a Panda.

    Args:
        finger_friction: lateral friction of the finger pads (higher helps grasps).
        low_poly: draw the robot with its collision meshes (12x cheaper frames; see above).
    """

    def __init__(self, finger_friction: float = 1.5, low_poly: bool = False) -> None:
        with _quiet_fds():
            self.client = bullet_client.BulletClient(connection_mode=pybullet.DIRECT)
        c = self.client
        c.setAdditionalSearchPath(pybullet_data.getDataPath())
        c.setGravity(0.0, 0.0, -9.81)
        c.setTimeStep(1.0 / PHYSICS_HZ)
        c.setPhysicsEngineParameter(deterministicOverlappingPairs=1)
        self.bodies: dict[str, int] = {}
        self._box_args: dict[str, tuple] = {}
        table_col = c.createCollisionShape(pybullet.GEOM_BOX, halfExtents=[0.6, 0.6, 0.02])
        table_vis = c.createVisualShape(
            pybullet.GEOM_BOX, halfExtents=[0.6, 0.6, 0.02], rgbaColor=[0.82, 0.71, 0.55, 1.0]
        )
        self.bodies["table"] = c.createMultiBody(0.0, table_col, table_vis, [0.45, 0.05, -0.02])
        self.robot = c.loadURDF(
            low_poly_urdf() if low_poly else "franka_panda/panda.urdf",
            ROBOT_BASE,
            useFixedBase=True,
            flags=pybullet.URDF_ENABLE_CACHED_GRAPHICS_SHAPES,
        )
        self.bodies["robot"] = self.robot
        for j in FINGER_JOINTS:
            c.changeDynamics(self.robot, j, lateralFriction=finger_friction, spinningFriction=0.01)
        self.set_joints(REST[:7], finger=0.0)
        self._state_id: int | None = None

    # -- bodies ------------------------------------------------------------------------------
    def add_cylinder(
        self,
        name: str,
        x: float,
        y: float,
        radius: float,
        height: float,
        rgba: tuple[float, ...] = (0.35, 0.35, 0.4, 1.0),
    ) -> int:
        """Static cylinder standing on the table."""
        c = self.client
        col = c.createCollisionShape(pybullet.GEOM_CYLINDER, radius=radius, height=height)
        vis = c.createVisualShape(
            pybullet.GEOM_CYLINDER, radius=radius, length=height, rgbaColor=list(rgba)
        )
        self.bodies[name] = c.createMultiBody(0.0, col, vis, [x, y, height / 2])
        return self.bodies[name]

    def add_box(
        self, name: str, half: float, mass: float, rgba: tuple[float, ...], friction: float = 1.0
    ) -> int:
        """Dynamic cube of half-size ``half`` (placed later with :meth:`place`)."""
        c = self.client
        col = c.createCollisionShape(pybullet.GEOM_BOX, halfExtents=[half] * 3)
        vis = c.createVisualShape(pybullet.GEOM_BOX, halfExtents=[half] * 3, rgbaColor=list(rgba))
        self._box_args[name] = (mass, col, vis, friction)
        return self._spawn_box(name, [0.5, 0.0, half], (0.0, 0.0, 0.0, 1.0))

    def _spawn_box(self, name: str, xyz, orn) -> int:
        mass, col, vis, friction = self._box_args[name]
        c = self.client
        body = c.createMultiBody(mass, col, vis, list(map(float, xyz)), orn)
        c.changeDynamics(
            body, -1, lateralFriction=friction, spinningFriction=0.005, rollingFriction=0.0001
        )
        self.bodies[name] = body
        return body

    def respawn_box(self, name: str, xyz, yaw: float) -> None:
        """Remove and re-create a cube at a new pose.

        Re-creating (rather than moving) the body drops PyBullet's cached contacts with it,
        which ``restoreState`` keeps; without this the same seed does not give the same
        physics after a different episode.
        """
        self.client.removeBody(self.bodies[name])
        orn = self.client.getQuaternionFromEuler([0.0, 0.0, float(yaw)])
        self._spawn_box(name, xyz, orn)

    def add_marker(self, name: str, radius: float, rgba: tuple[float, ...]) -> int:
        """Visual-only flat disc (no collision), e.g. a goal marker."""
        c = self.client
        vis = c.createVisualShape(
            pybullet.GEOM_CYLINDER, radius=radius, length=0.002, rgbaColor=list(rgba)
        )
        self.bodies[name] = c.createMultiBody(0.0, -1, vis, [0.5, 0.0, 0.001])
        return self.bodies[name]

    def place(self, name: str, xyz, yaw: float = 0.0) -> None:
        orn = self.client.getQuaternionFromEuler([0.0, 0.0, float(yaw)])
        self.client.resetBasePositionAndOrientation(self.bodies[name], list(map(float, xyz)), orn)

    def body_pose(self, name: str) -> tuple[np.ndarray, float]:
        """(xyz, yaw) of a body."""
        pos, orn = self.client.getBasePositionAndOrientation(self.bodies[name])
        yaw = self.client.getEulerFromQuaternion(orn)[2]
        return np.asarray(pos, dtype=np.float64), float(yaw)

    # -- state -------------------------------------------------------------------------------
    def save(self) -> None:
        self._state_id = self.client.saveState()

    def restore(self) -> None:
        assert self._state_id is not None, "call save() after building the scene"
        self.client.restoreState(self._state_id)

    def close(self) -> None:
        with contextlib.suppress(pybullet.error):
            self.client.disconnect()

    # -- robot -------------------------------------------------------------------------------
    def set_joints(self, arm_q, finger: float) -> None:
        """Teleport the arm (and both fingers, per-finger opening ``finger``)."""
        for j, q in zip(ARM_JOINTS, arm_q):
            self.client.resetJointState(self.robot, j, float(q))
        for j in FINGER_JOINTS:
            self.client.resetJointState(self.robot, j, float(finger))

    def arm_q(self) -> list[float]:
        return [s[0] for s in self.client.getJointStates(self.robot, ARM_JOINTS)]

    def ik(self, pos) -> list[float]:
        """Null-space IK for the ee at ``pos`` pointing down; returns 7 arm joint angles."""
        q = self.client.calculateInverseKinematics(
            self.robot,
            EE_LINK,
            list(map(float, pos)),
            DOWN,
            lowerLimits=LOWER,
            upperLimits=UPPER,
            jointRanges=RANGES,
            restPoses=REST,
            maxNumIterations=30,
            residualThreshold=1e-4,
        )
        return list(q[:7])

    def teleport_ee(self, pos, finger: float = 0.0, tol: float = 1e-3, iters: int = 3) -> None:
        """Put the ee at ``pos`` kinematically (no dynamics), refining IK up to ``iters`` times."""
        pos = np.asarray(pos, dtype=np.float64)
        for _ in range(iters):
            self.set_joints(self.ik(pos), finger)
            if np.linalg.norm(self.ee_pos() - pos) < tol:
                break

    def ee_pos(self) -> np.ndarray:
        s = self.client.getLinkState(self.robot, EE_LINK, computeForwardKinematics=True)
        return np.asarray(s[4], dtype=np.float64)

    def ee_vel(self) -> np.ndarray:
        s = self.client.getLinkState(
            self.robot, EE_LINK, computeLinkVelocity=True, computeForwardKinematics=True
        )
        return np.asarray(s[6], dtype=np.float64)

    def finger_width(self) -> float:
        return float(sum(s[0] for s in self.client.getJointStates(self.robot, FINGER_JOINTS)))

    def drive(self, arm_q, finger_target: float, finger_force: float = 40.0) -> None:
        """Set motor targets for arm joints and fingers (real dynamics)."""
        c = self.client
        c.setJointMotorControlArray(
            self.robot,
            ARM_JOINTS,
            pybullet.POSITION_CONTROL,
            targetPositions=list(arm_q),
            forces=list(ARM_FORCES),
            positionGains=[0.3] * 7,
        )
        c.setJointMotorControlArray(
            self.robot,
            FINGER_JOINTS,
            pybullet.POSITION_CONTROL,
            targetPositions=[float(finger_target)] * 2,
            forces=[finger_force] * 2,
        )

    def touching(self, body: str, link: int | None = None) -> bool:
        """True if the robot (optionally one link) touches ``body`` (needs a stepped sim)."""
        if link is None:
            pts = self.client.getContactPoints(self.robot, self.bodies[body])
        else:
            pts = self.client.getContactPoints(self.robot, self.bodies[body], linkIndexA=link)
        return len(pts) > 0

    def robot_hits(self, body: str, margin: float = 0.0) -> list:
        """Closest points between the robot and ``body`` within ``margin`` (no sim step needed)."""
        return self.client.getClosestPoints(self.robot, self.bodies[body], margin)

    # -- rendering ---------------------------------------------------------------------------
    def render(
        self, width: int, height: int, target, distance: float, yaw: float, pitch: float
    ) -> np.ndarray:
        """(height, width, 3) uint8 RGB frame from a camera looking at ``target``."""
        view, proj = camera_matrices(width, height, target, distance, yaw, pitch)
        _, _, rgba, _, _ = self.client.getCameraImage(
            width,
            height,
            view,
            proj,
            renderer=pybullet.ER_TINY_RENDERER,
            flags=pybullet.ER_NO_SEGMENTATION_MASK,
        )
        rgb = np.asarray(rgba, dtype=np.uint8).reshape(height, width, 4)[:, :, :3]
        return np.ascontiguousarray(rgb)
