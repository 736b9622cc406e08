"""ClampPassing: thread a square ring clamp onto a pipe and slide it off the far end, untouched.

## Description
Paper (DiSPo, section V): "A gripper agent (yellow) manipulates a clamp (green) to precisely
approach and pass through a 2D pipe (red) without collision." The scene is planar, seen from
above:

* The **pipe** is a square-section bar lying in the plane (random length, thickness, centre,
  orientation). Its near end is the one the clamp must enter; the scene features give the
  passing direction, so the policy knows which end that is.
* The **clamp** is a square ring whose opening is the pipe's section plus ``CLEARANCE`` on every
  side. The yellow gripper holds it by one side wall. The agent pose is the ring's centre; yaw
  is the ring's axis, so the ring slides along the pipe when yaw is the pipe's direction (either
  way round: the ring is symmetric). It starts within ``START_YAW_RANGE`` of that.

Physics: pybullet in DIRECT mode holds the pipe and the 3-D ring + gripper as static bodies.
The agent is a PD servo (as in PushT) on (x, y, yaw) that this file integrates itself in
sub-steps (semi-implicit Euler, plain floats: cheap and exactly deterministic); after every
sub-step the agent body is placed with ``resetBasePositionAndOrientation`` and checked with
``getClosestPoints`` (about 2 us per query, exact for boxes). Letting pybullet step a dynamic
body would need constraints or velocity control for the same servo and would only add cost.

The expert: start pose -> straight approach, rotating to the nearer of the two axis-aligned
yaws -> a rounded corner (radius 15) onto the axis, ending ``PRE_INSERTION`` before the ring
meets the pipe -> straight along the axis past the far end. It passes the corner at about
190 units/s, so a 2.5 Hz plan (samples ~75 units apart) almost always joins the axis only after
the ring has reached the pipe: its chord cuts the corner into the pipe end.

## Action space
``Box([0, 0, -2 pi], [512, 512, 2 pi], (3,), float32)``: the absolute target pose (x, y, yaw) of
the ring's centre, world units and radians. Actions and the agent's pose are clipped to these
bounds; a wrong shape or a NaN raises ``ValueError``.

## Observation space
- ``state`` (default): ``Box((9,), float32)``: the ring's pose (x, y, yaw), the pipe's centre
  (x, y), the passing direction (cos, sin), the pipe's length and thickness.
- ``pixels``: ``{"global", "local"}``, each a 96x96 RGB ``uint8`` image: the whole world, and a
  view centred on the ring, turned so that the ring's axis points up.
- ``pixels_state``: ``{"state": ..., "pixels": ...}``.

## Success and failure
Success (reward 1, terminated): the ring has come off the **far** end (its rear face
``EXIT_MARGIN`` past it) after the pipe went through it from the near end ("threaded": the ring
centre was over the pipe body without contact; backing out past the near end un-threads it).
Alignment needs no separate test: without contact, a ring leaving the far end is within
``CLEARANCE`` of the axis. Failure (terminated): any contact between agent (ring or gripper) and
pipe. Truncated after 10 s. ``info`` carries ``is_success``, ``is_collision``, ``agent_pose``,
``time`` and ``sim_state``.

## Reset options
``reset(seed=s, options={"reset_to_state": env.unwrapped.sim_state()})`` restarts the scene of seed
``s`` with the agent in that state: ``(x, y, yaw, vx, vy, vyaw, threaded, time)``, the ring's
pose, its velocity, whether the pipe is through it (1 or 0), and the episode time. The same
actions from there repeat the episode exactly.

## Arguments
``gym.make("cfbench/ClampPassing-v1", obs_mode="state", render_mode=None, control_hz=20.0)``;
``render_mode`` is ``"rgb_array"`` or ``"human"``. The physics runs at 200 Hz underneath any
control rate.

## Version history
- v1 (round 2): learnable from 20 Hz demos. In v0 the best learner from 20 Hz demos reached
  32 % (DP-T) while the Tracker reached 100 %: the failures (``benchmarks/clamp_failures.py``)
  were insertions using the whole 2-unit clearance and rings turned 20-55 degrees off the axis
  on the approach. Changes: clearance 2 -> 4 units; the start yaw within 45 degrees of the axis
  (v0: any), so the turn to the nearer axis-aligned yaw is never a near tie; a faster corner
  (acceleration limit 1500 -> 2500 units/s^2, ~150 -> ~190 units/s through it) and a shorter
  straight run onto the axis (5.5 -> 3 units), which keep the 2.5 Hz chord cutting the corner
  into the pipe end with the wider clearance; the state layout declares the ring's yaw period
  (pi), with which policies take yaw actions in the task frame (``policies/frames.py``).
  Tracker, test seeds 20000-20099: 11 % at 2.5 Hz, 37 % at 5 Hz, 100 % at 10 and 20 Hz; the
  expert tracked at 20 Hz keeps at least 1.9 of the 4 units of clearance.
- v0 (round 1): first release; its records are in ``results/archive/ClampPassing-v0/``. Tracker,
  test seeds 20000-20099: 2 % at 2.5 Hz, 25 % at 5 Hz, 100 % at 10 and 20 Hz.
"""

from __future__ import annotations

import math

import numpy as np
import pybullet

from cfbench.envs.core import Canvas, CoarseToFineEnv, StateLayout, box_corners
from cfbench.expert import ExpertTrajectory, rounded_polyline, time_parametrize

WORLD_SIZE = 512.0

# Pipe geometry (world units).
PIPE_LENGTH = (180.0, 280.0)
PIPE_THICKNESS = (10.0, 22.0)

# Clamp: square ring around the pipe's section, held by a gripper on one side wall.
CLEARANCE = 4.0  # gap between ring and pipe on every side (v0: 2.0)
RING_WALL = 5.0  # wall thickness of the ring
RING_DEPTH = 14.0  # ring extent along its axis
GRIPPER_LENGTH = 26.0  # how far the gripper sticks out sideways from the ring
GRIPPER_WIDTH = 10.0

# Start pose relative to the pre-insertion corner: the approach comes in at TURN_ANGLE to the
# pipe axis from APPROACH_LENGTH away (either side of the axis, any start yaw).
TURN_ANGLE = (np.deg2rad(75.0), np.deg2rad(110.0))
APPROACH_LENGTH = (140.0, 220.0)
START_YAW_RANGE = np.deg2rad(45.0)  # v0: any start yaw
WORLD_MARGIN = 50.0  # every planned pose keeps this far from the world's edge

# PD servo toward the target pose (critically damped, natural frequency 27 rad/s).
K_P = 729.0
K_V = 54.0
#: pybullet's contact test is skipped only where the ring is surely this far from the pipe
#: (bullet's own tolerances are hundredths of a unit)
CONTACT_SLACK = 1.0

# Expert: geometry of the path and toppra limits (per axis: x, y in units, yaw in radians).
PRE_INSERTION = 3.0  # straight run on the axis from the corner's end to the ring meeting the pipe (v0: 5.5)
CORNER_RADIUS = 15.0
EXIT_MARGIN = 2.0  # success: the ring's rear face this far past the far end
OVERRUN = 15.0  # the expert ends this far beyond the success line
EXPERT_MAX_VELOCITY = np.array([200.0, 200.0, 2.0])
EXPERT_MAX_ACCELERATION = np.array([2500.0, 2500.0, 8.0])  # v0: 1500 units/s^2

PIPE_COLOR = (200, 40, 40)
CLAMP_COLOR = (30, 150, 60)
GRIPPER_COLOR = (235, 200, 30)
OUTLINE_COLOR = (90, 70, 0)


class ClampPassingEnv(CoarseToFineEnv):
    """Pass a gripper-held square ring clamp along a randomly placed pipe without touching it."""

    views = ("global", "local")
    # yaw: the expert stays within 1.5 pi of zero (start in [-pi, pi], turns at most pi / 4)
    pose_low = np.array([0.0, 0.0, -2.0 * np.pi], dtype=np.float32)
    pose_high = np.array([WORLD_SIZE, WORLD_SIZE, 2.0 * np.pi], dtype=np.float32)
    #: pipe centre (x, y), passing direction (cos, sin), length, thickness
    scene_dim = 6
    scene_bound = WORLD_SIZE  # every feature is a world coordinate, a length or a unit vector
    # state: ring (x, y, yaw), pipe centre, passing direction (cos, sin), length, thickness
    state_layout = StateLayout(points=(0, 3), directions=(5,), angles=(2,), frame_direction=5, angle_period=np.pi)
    sim_state_fields = {
        **{name: (float(low), float(high)) for name, low, high in zip(("x", "y", "yaw"), pose_low, pose_high)},
        **{name: (-np.inf, np.inf) for name in ("vx", "vy", "vyaw")},
        "threaded": (0.0, 1.0),
    }
    max_episode_seconds = 10.0  # the expert needs 1.8-3 s
    physics_hz = 200.0
    world_bounds = (0.0, 0.0, WORLD_SIZE, WORLD_SIZE)
    local_view_size = 96.0

    def __init__(self, obs_mode: str = "state", render_mode: str | None = None, control_hz: float = 20.0):
        super().__init__(obs_mode=obs_mode, render_mode=render_mode, control_hz=control_hz)
        self._client: int | None = None  # pybullet DIRECT client, connected on the first reset
        self._pose = [0.0, 0.0, 0.0]
        self._velocity = [0.0, 0.0, 0.0]

    # ---------------------------------------------------------------- scene
    def _build_scene(self, rng: np.random.Generator) -> None:
        while True:  # rejection-sample until the whole task fits in the world
            length = rng.uniform(*PIPE_LENGTH)
            thickness = rng.uniform(*PIPE_THICKNESS)
            direction = rng.uniform(-np.pi, np.pi)
            turn = rng.uniform(*TURN_ANGLE)
            side = rng.choice([-1.0, 1.0])
            approach = rng.uniform(*APPROACH_LENGTH)
            # the ring starts within START_YAW_RANGE of the axis (either way round): the expert's
            # turn to the nearer axis-aligned yaw is never a near tie between two directions
            start_yaw = direction + rng.uniform(-START_YAW_RANGE, START_YAW_RANGE) + rng.choice([0.0, np.pi])
            start_yaw = (start_yaw + np.pi) % (2 * np.pi) - np.pi
            # Key points in the pipe frame (axial, lateral) relative to the pipe centre.
            # The rounded corner ends (joins the axis) PRE_INSERTION before the ring meets the pipe.
            run_up = PRE_INSERTION + CORNER_RADIUS * np.tan(turn / 2)
            corner = np.array([-(length / 2 + RING_DEPTH / 2 + run_up), 0.0])
            start = corner - approach * np.array([np.cos(turn), side * np.sin(turn)])
            end = np.array([length / 2 + RING_DEPTH / 2 + EXIT_MARGIN + OVERRUN, 0.0])
            c, s = np.cos(direction), np.sin(direction)
            points = np.stack([start, corner, end]) @ np.array([[c, s], [-s, c]])
            low = WORLD_MARGIN - points.min(axis=0)
            high = WORLD_SIZE - WORLD_MARGIN - points.max(axis=0)
            if np.all(low <= high):
                break
        self._pipe_centre = rng.uniform(low, high)
        self._pipe_length = length
        self._pipe_thickness = thickness
        self._axis = np.array([c, s])
        self._frame = (*self._pipe_centre.tolist(), float(c), float(s))  # Python floats for the physics loop
        self._pipe_yaw = math.atan2(s, c)
        self._start_pose = np.array([*(self._pipe_centre + points[0]), start_yaw])
        self._corner = self._pipe_centre + points[1]
        self._end = self._pipe_centre + points[2]
        self._pose = [float(v) for v in self._start_pose]
        self._velocity = [0.0, 0.0, 0.0]
        self._threaded = False
        self._build_bodies()
        self._place_agent()

    def _build_bodies(self) -> None:
        """Pipe and agent as static pybullet bodies; the agent is a 3-D square ring + gripper."""
        if self._client is None:
            self._client = pybullet.connect(pybullet.DIRECT)
        pb, cid = pybullet, self._client
        pb.resetSimulation(physicsClientId=cid)
        half_t = self._pipe_thickness / 2
        pipe_shape = pb.createCollisionShape(
            pb.GEOM_BOX, halfExtents=[self._pipe_length / 2, half_t, half_t], physicsClientId=cid
        )
        yaw = self._pipe_yaw
        self._pipe = pb.createMultiBody(
            0.0,
            pipe_shape,
            basePosition=[*self._pipe_centre, 0.0],
            baseOrientation=[0.0, 0.0, math.sin(yaw / 2), math.cos(yaw / 2)],
            physicsClientId=cid,
        )
        # The ring's walls: two side walls (in the plane) and top/bottom bars above and below it.
        inner = half_t + CLEARANCE
        mid, outer = inner + RING_WALL / 2, inner + RING_WALL
        d = RING_DEPTH / 2
        # every box of the agent lies within this distance of its centre, seen from above
        self._reach = math.hypot(d, outer + GRIPPER_LENGTH)
        self._drawn_boxes = [  # what the top view shows: side walls, gripper (agent frame)
            ((0.0, mid), (d, RING_WALL / 2)),
            ((0.0, -mid), (d, RING_WALL / 2)),
            ((0.0, -outer - GRIPPER_LENGTH / 2), (GRIPPER_WIDTH / 2, GRIPPER_LENGTH / 2)),
        ]
        agent_shape = pb.createCollisionShapeArray(
            [pb.GEOM_BOX] * 5,
            halfExtents=[
                [d, RING_WALL / 2, outer],
                [d, RING_WALL / 2, outer],
                [d, inner, RING_WALL / 2],
                [d, inner, RING_WALL / 2],
                [GRIPPER_WIDTH / 2, GRIPPER_LENGTH / 2, RING_WALL / 2],
            ],
            collisionFramePositions=[
                [0.0, mid, 0.0],
                [0.0, -mid, 0.0],
                [0.0, 0.0, mid],
                [0.0, 0.0, -mid],
                [0.0, -outer - GRIPPER_LENGTH / 2, 0.0],
            ],
            physicsClientId=cid,
        )
        self._agent = pb.createMultiBody(0.0, agent_shape, physicsClientId=cid)

    def _place_agent(self) -> None:
        x, y, yaw = self._pose
        pybullet.resetBasePositionAndOrientation(
            self._agent, [x, y, 0.0], [0.0, 0.0, math.sin(yaw / 2), math.cos(yaw / 2)],
            physicsClientId=self._client,
        )

    def _agent_pose(self) -> np.ndarray:
        return np.array(self._pose)

    def _sim_state(self) -> list[float]:
        return [*self._pose, *self._velocity, float(self._threaded)]

    def _check_sim_state(self, state: np.ndarray) -> str | None:
        return None if state[6] in (0.0, 1.0) else f"threaded = {state[6]:g} must be 0 or 1"

    def _set_sim_state(self, state: np.ndarray) -> None:
        self._pose, self._velocity = state[:3].tolist(), state[3:6].tolist()
        self._threaded = bool(state[6])
        self._place_agent()

    def _scene_features(self) -> np.ndarray:
        return np.array([*self._pipe_centre, *self._axis, self._pipe_length, self._pipe_thickness])

    def _pipe_frame(self, x: float, y: float) -> tuple[float, float]:
        """(axial, lateral) coordinates of a world point relative to the pipe centre."""
        cx, cy, c, s = self._frame
        dx, dy = x - cx, y - cy
        return dx * c + dy * s, dy * c - dx * s

    # -------------------------------------------------------------- physics
    def _simulate(self, target: list[float]) -> bool:
        pose, velocity, dt = self._pose, self._velocity, self.physics_dt
        low, high = self._pose_bounds
        half_length, half_thickness = self._pipe_length / 2, self._pipe_thickness / 2
        for _ in range(self.substeps):
            for i in range(3):
                velocity[i] += (K_P * (target[i] - pose[i]) - K_V * velocity[i]) * dt
                pose[i] += velocity[i] * dt
                if not low[i] <= pose[i] <= high[i]:  # the workspace ends where actions do
                    pose[i] = min(max(pose[i], low[i]), high[i])
                    velocity[i] = 0.0
            axial, lateral = self._pipe_frame(pose[0], pose[1])
            if self._may_touch(axial, lateral, pose[2]) and self._touches():
                return True
            # The ring centre over the pipe body without contact means the pipe is through the
            # ring; leaving backwards past the near end un-threads it.
            if abs(axial) <= half_length and abs(lateral) <= half_thickness:
                self._threaded = True
            elif axial < -half_length:
                self._threaded = False
        return False

    def _may_touch(self, axial: float, lateral: float, yaw: float) -> bool:
        """False where the ring at (``axial``, ``lateral``, ``yaw``) is surely ``CONTACT_SLACK``
        clear of the pipe, so pybullet's contact test (most of a sub-step's cost) need not run:
        the ring out of reach of the pipe, or the pipe through its opening.

        Through the opening: the side walls and the gripper lie within ``RING_DEPTH / 2`` of the
        ring's mid-plane and at least ``inner = half-thickness + CLEARANCE`` off its axis (the
        bars above and below the pipe stay ``CLEARANCE`` away in height). Within that depth the
        pipe, taken as endless and ``CONTACT_SLACK`` thicker, at angle ``turn`` to the ring's
        axis, keeps within ``(|lateral| + RING_DEPTH / 2 |sin turn| + half-thickness +
        CONTACT_SLACK) / |cos turn|`` of the ring's axis: less than ``inner``, it touches nothing.
        """
        half_thickness = self._pipe_thickness / 2
        reach = self._reach + CONTACT_SLACK
        if abs(axial) - self._pipe_length / 2 > reach or abs(lateral) - half_thickness > reach:
            return False
        turn = yaw - self._pipe_yaw
        inner = half_thickness + CLEARANCE
        spread = abs(lateral) + RING_DEPTH / 2 * abs(math.sin(turn)) + half_thickness + CONTACT_SLACK
        return spread >= inner * abs(math.cos(turn))

    def _touches(self) -> bool:
        """Whether the agent, placed at its pose, touches the pipe (pybullet's contact test)."""
        self._place_agent()
        return bool(pybullet.getClosestPoints(self._agent, self._pipe, 0.0, physicsClientId=self._client))

    def _is_success(self) -> bool:
        axial, _ = self._pipe_frame(self._pose[0], self._pose[1])
        return self._threaded and axial >= self._pipe_length / 2 + RING_DEPTH / 2 + EXIT_MARGIN

    # -------------------------------------------------------------- drawing
    def _draw(self, canvas: Canvas) -> None:
        half = (self._pipe_length / 2, self._pipe_thickness / 2)
        canvas.polygon(box_corners(self._pipe_centre, half, self._pipe_yaw), PIPE_COLOR)
        x, y, agent_yaw = self._pose
        c, s = math.cos(agent_yaw), math.sin(agent_yaw)
        frame = np.array([[c, s], [-s, c]])
        centre = np.array([x, y])
        (wall_a, wall_b, gripper) = [
            box_corners(centre + np.array(offset) @ frame, extents, agent_yaw)
            for offset, extents in self._drawn_boxes
        ]
        canvas.polygon(gripper, GRIPPER_COLOR)
        canvas.line(np.vstack([gripper, gripper[:1]]), OUTLINE_COLOR)
        canvas.polygon(wall_a, CLAMP_COLOR)
        canvas.polygon(wall_b, CLAMP_COLOR)
        # The ring's top bar crosses above the pipe: drawn as its two edges so the pipe shows.
        canvas.line([wall_a[0], wall_b[3]], CLAMP_COLOR, width=1.5)
        canvas.line([wall_a[1], wall_b[2]], CLAMP_COLOR, width=1.5)

    def _local_view(self) -> tuple[np.ndarray, float]:
        """Centred on the ring, turned with the gripper so that the ring's axis points up."""
        return np.array(self._pose[:2]), self._pose[2] - np.pi / 2

    # --------------------------------------------------------------- expert
    def _expert_path(self) -> ExpertTrajectory:
        axis = self._axis
        start, corner = self._start_pose[:2], self._corner
        xy = rounded_polyline(np.stack([start, corner, self._end]), CORNER_RADIUS, spacing=1.0)
        # Turn to the nearer of the two axis-aligned yaws during the approach, done well before
        # the corner (a cosine ramp in arc length: no kink for toppra), then hold it.
        start_yaw = self._start_pose[2]
        pipe_yaw = math.atan2(axis[1], axis[0])
        goal_yaw = start_yaw + (pipe_yaw - start_yaw + np.pi / 2) % np.pi - np.pi / 2
        arc = np.concatenate([[0.0], np.cumsum(np.linalg.norm(np.diff(xy, axis=0), axis=1))])
        ramp_end = np.linalg.norm(corner - start) - 2 * CORNER_RADIUS
        ramp = np.clip(arc / ramp_end, 0.0, 1.0)
        yaw = start_yaw + (goal_yaw - start_yaw) * (1 - np.cos(np.pi * ramp)) / 2
        return time_parametrize(np.column_stack([xy, yaw]), EXPERT_MAX_VELOCITY, EXPERT_MAX_ACCELERATION)

    def close(self):
        if self._client is not None:
            pybullet.disconnect(physicsClientId=self._client)
            self._client = None
        super().close()
