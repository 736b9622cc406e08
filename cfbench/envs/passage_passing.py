"""PassagePassing: a rectangular agent threads a narrow passage with sharp corners.

## Description
Paper (DiSPo, section V): "A rectangular agent (pink) precisely maneuvers through a narrow 2D
passage (gray) navigating corners without collision. The observation includes the agent's pose
(in R^2) and two RGB images (global scene and agent-centred local view). The action is the 2D
target position. We randomize the passage's shape, width, and orientation."

The passage is a closed corridor of constant width around a centreline with right-angle
corners, rotated as a whole. The agent does not rotate: it stays aligned with the passage, long
side along the first segment, so it fits every segment but with less room in the segments that
run across its long side. The agent is a PD servo (pymunk) toward the commanded position. The
expert runs along the centreline and turns each corner on a small arc without stopping, so
straight lines between coarse samples of it cut the inner corners: at 2.5 Hz they hit a wall,
at 20 Hz they stay clear (see ``_expert_path``).

## Action space
``Box(0, 512, (2,), float32)``: the absolute target position (x, y) of the agent's centre in
world units. Actions are clipped to the world; a wrong shape or a NaN raises ``ValueError``.

## Observation space
- ``state`` (default): ``Box((17,), float32)``: the agent's centre (x, y), the 6 centreline
  corners (entrance first, exit last), the passage width, and the passage direction (cos, sin).
- ``pixels``: ``{"global", "local"}``, each a 96x96 RGB ``uint8`` image: the whole world, and a
  view centred on the agent.
- ``pixels_state``: ``{"state": ..., "pixels": ...}``.

## Success and failure
Success (reward 1, terminated): the agent's centre lies in the green goal area past the exit
line. Failure (terminated): the agent touches a wall. Truncated after 10 s. ``info`` carries
``is_success``, ``is_collision``, ``agent_pose``, ``time`` and ``sim_state``.

## Reset options
``reset(seed=s, options={"reset_to_state": env.unwrapped.sim_state()})`` restarts the scene of seed
``s`` with the agent in that state: ``(x, y, vx, vy, time)``, the agent's centre, its velocity
and the episode time. The same actions from there repeat the episode's observations, rewards
and flags exactly.

## Arguments
``gym.make("cfbench/PassagePassing-v0", obs_mode="state", render_mode=None, control_hz=20.0)``;
``render_mode`` is ``"rgb_array"`` or ``"human"``. The physics runs at 200 Hz underneath any
control rate.

## Version history
- v0: first release (round 1). Tracker calibration, test seeds 20000-20099: 0 % at 2.5 Hz,
  29 % at 5 Hz, 100 % at 10 and 20 Hz.
"""

from __future__ import annotations

import math

import numpy as np
import pymunk

from cfbench.envs.core import Canvas, CoarseToFineEnv, StateLayout, box_corners, chipmunk_handles
from cfbench.expert import ExpertTrajectory, rounded_polyline, time_parametrize

WORLD_SIZE = 512.0
#: agent half extents in the passage frame (long side along the first segment)
AGENT_HALF = np.array([10.0, 6.0])
#: passage shape: segments joined by right-angle turns, each to the left or right
N_SEGMENTS = 5
SEGMENT_LENGTH = (60.0, 120.0)
#: clearance on each side in the tight segments (those across the agent's long side); the
#: passage width is 2 * (AGENT_HALF[0] + clearance)
CLEARANCE = (3.0, 6.0)
#: room between the agent's back edge and the closed entrance at the start
ENTRANCE_ROOM = 10.0
#: corridor length beyond the exit line (the goal area) and where the expert comes to rest in it
GOAL_DEPTH = 40.0
EXPERT_STOP = 18.0
#: sampled passages keep non-adjacent segments this far apart (beyond the walls) and stay
#: this far inside the world
SEGMENT_GAP = 20.0
WORLD_MARGIN = 16.0
#: servo: PD on velocity, critically damped at 50 rad/s (stiff enough to follow the expert
#: within half a unit at 20 Hz); the speed limit keeps every sub-step (2.5 units) far below
#: the agent's thickness, so no command can jump it over a wall between collision checks
K_P = 2500.0
K_V = 100.0
MAX_SPEED = 500.0
#: expert: per-axis limits in the passage frame
EXPERT_VELOCITY = 150.0
EXPERT_ACCELERATION = 1500.0

AGENT_COLOR = (240, 90, 170)
PASSAGE_COLOR = (190, 190, 190)
GOAL_COLOR = (120, 210, 120)
WALL_COLOR = (40, 40, 40)
_AGENT, _WALL = 1, 2


class PassagePassingEnv(CoarseToFineEnv):
    """Move the pink rectangle through the gray passage and out into the green goal area."""

    views = ("global", "local")
    pose_low = np.zeros(2, dtype=np.float32)
    pose_high = np.full(2, WORLD_SIZE, dtype=np.float32)
    #: passage corners (N_SEGMENTS + 1 points, entrance first, exit last), width, cos/sin(orientation)
    scene_dim = 2 * (N_SEGMENTS + 1) + 3
    scene_bound = WORLD_SIZE  # every feature is a world coordinate, a length or a unit vector
    # state: agent (x, y), 6 centreline corners, width, passage direction (cos, sin)
    state_layout = StateLayout(points=(0, 2, 4, 6, 8, 10, 12), directions=(15,), angles=(), frame_direction=15)
    sim_state_fields = {"x": (0.0, WORLD_SIZE), "y": (0.0, WORLD_SIZE), "vx": (-np.inf, np.inf),
                        "vy": (-np.inf, np.inf)}
    max_episode_seconds = 10.0
    world_bounds = (0.0, 0.0, WORLD_SIZE, WORLD_SIZE)
    local_view_size = 96.0

    # ------------------------------------------------------------- scene
    def _build_scene(self, rng: np.random.Generator) -> None:
        """Width, orientation and shape, then a placement that keeps the whole passage in the world."""
        self._width = 2.0 * (AGENT_HALF[0] + rng.uniform(*CLEARANCE))
        self._angle = rng.uniform(-np.pi, np.pi)
        rotation = _rotation(self._angle)
        while True:
            local = _sample_centreline(rng, self._width)
            outline = _corridor_outline(local, self._width) @ rotation.T
            low, high = outline.min(0), outline.max(0)
            slack = (WORLD_SIZE - 2 * WORLD_MARGIN) - (high - low)
            if np.all(slack > 0):
                break
        offset = WORLD_MARGIN - low + rng.uniform(0.0, slack)
        self._local_corners = local
        self._rotation = rotation
        self._offset = offset
        self._corners = local @ rotation.T + offset
        self._outline = outline + offset
        exit_dir = _unit(local[-1] - local[-2])
        across = _left_normal(exit_dir) * self._width / 2
        near, far = local[-1], local[-1] + GOAL_DEPTH * exit_dir
        goal_area = np.array([near - across, far - across, far + across, near + across])
        self._goal_area = goal_area @ rotation.T + offset
        self._exit_frame = np.array([exit_dir, _left_normal(exit_dir)]) @ rotation.T
        # around the goal area, a circle 1 unit wider: outside it, the exact test is not needed
        goal_centre = self._corners[-1] + GOAL_DEPTH / 2 * self._exit_frame[0]
        self._goal_circle = (*goal_centre.tolist(), (math.hypot(GOAL_DEPTH / 2, self._width / 2) + 1.0) ** 2)
        self._build_space()

    def _build_space(self) -> None:
        self._space = pymunk.Space()
        self._agent = pymunk.Body(1.0, float("inf"))
        self._agent.position = tuple(self._corners[0])
        self._agent.angle = self._angle
        agent_shape = pymunk.Poly.create_box(self._agent, tuple(2 * AGENT_HALF))
        agent_shape.collision_type = _AGENT
        self._space.add(self._agent, agent_shape)
        # Zero-thickness walls along the outline: the corridor's edge exactly, corners sharp.
        for a, b in zip(self._outline, np.roll(self._outline, -1, axis=0)):
            wall = pymunk.Segment(self._space.static_body, tuple(a), tuple(b), 0.0)
            wall.collision_type = _WALL
            self._space.add(wall)
        self._collided = False
        self._space.on_collision(_AGENT, _WALL, begin=self._on_wall_contact)

    def _on_wall_contact(self, arbiter, space, data) -> None:
        self._collided = True

    # ---------------------------------------------------------- dynamics
    def _simulate(self, target: list[float]) -> bool:
        """PD servo toward ``target``, one velocity update per physics sub-step (as in PushT)."""
        tx, ty = target
        space, body = chipmunk_handles(self._space, self._agent)
        cp, dt = pymunk.cp, self.physics_dt
        for _ in range(self.substeps):
            position, velocity = cp.cpBodyGetPosition(body), cp.cpBodyGetVelocity(body)
            vx = velocity.x + (K_P * (tx - position.x) - K_V * velocity.x) * dt
            vy = velocity.y + (K_P * (ty - position.y) - K_V * velocity.y) * dt
            speed = (vx * vx + vy * vy) ** 0.5
            if speed > MAX_SPEED:
                vx, vy = vx * MAX_SPEED / speed, vy * MAX_SPEED / speed
            cp.cpBodySetVelocity(body, (vx, vy))
            cp.cpSpaceStep(space, dt)
            if self._collided:
                return True
        return False

    def _agent_pose(self) -> np.ndarray:
        return np.array(self._agent.position)

    def _sim_state(self) -> list[float]:
        return [*self._agent.position, *self._agent.velocity]

    def _set_sim_state(self, state: np.ndarray) -> None:
        self._agent.position, self._agent.velocity = tuple(state[:2]), tuple(state[2:])

    def _is_success(self) -> bool:
        """The agent's centre lies in the goal area: past the exit line, inside the corridor."""
        (x, y), (cx, cy, radius2) = self._agent.position, self._goal_circle
        if (x - cx) ** 2 + (y - cy) ** 2 > radius2:
            return False
        along, across = self._exit_frame @ (self._agent_pose() - self._corners[-1])
        return 0.0 <= along <= GOAL_DEPTH and abs(across) <= self._width / 2

    def _scene_features(self) -> np.ndarray:
        return np.concatenate(
            [self._corners.ravel(), [self._width, np.cos(self._angle), np.sin(self._angle)]]
        )

    # ------------------------------------------------------------ expert
    def _expert_path(self) -> ExpertTrajectory:
        """Centreline with arcs at the corners, timed in the passage frame, ending in the goal area.

        Every corner joins a tight and a roomy segment; an arc whose radius is the roomy side's
        clearance is the widest turn that still keeps the tight side's full clearance from the
        inner corner, so the expert stays as far from every wall as the centreline does. Timing
        in the passage frame makes the expert's speed independent of the passage's orientation.
        """
        local = self._local_corners
        stop = local[-1] + EXPERT_STOP * _unit(local[-1] - local[-2])
        radius = self._width / 2 - AGENT_HALF[1]
        path = rounded_polyline(np.vstack([local[:-1], stop]), radius, spacing=1.0)
        limits = np.ones(2)
        timed = time_parametrize(path, EXPERT_VELOCITY * limits, EXPERT_ACCELERATION * limits)
        return ExpertTrajectory(times=timed.times, poses=timed.poses @ self._rotation.T + self._offset)

    # ----------------------------------------------------------- drawing
    def _draw(self, canvas: Canvas) -> None:
        canvas.polygon(self._outline, PASSAGE_COLOR)
        canvas.polygon(self._goal_area, GOAL_COLOR)
        canvas.line(np.vstack([self._outline, self._outline[:1]]), WALL_COLOR, width=2.0)
        canvas.polygon(box_corners(self._agent_pose(), AGENT_HALF, self._angle), AGENT_COLOR)

    def _local_view(self) -> tuple[np.ndarray, float]:
        return self._agent_pose(), self._angle


# ------------------------------------------------------------- geometry
def _rotation(angle: float) -> np.ndarray:
    c, s = np.cos(angle), np.sin(angle)
    return np.array([[c, -s], [s, c]])


def _unit(v: np.ndarray) -> np.ndarray:
    return v / np.linalg.norm(v)


def _left_normal(u: np.ndarray) -> np.ndarray:
    return np.array([-u[1], u[0]])


def _sample_centreline(rng: np.random.Generator, width: float) -> np.ndarray:
    """Corners of a random right-angled centreline in the passage frame (first segment along +x).

    Resampled until segments that do not share a corner stay clear of each other, counting the
    closed entrance behind the first and the goal area after the last segment.
    """
    while True:
        direction = np.array([1.0, 0.0])
        points = [np.zeros(2)]
        for i in range(N_SEGMENTS):
            if i > 0:
                direction = _left_normal(direction) * rng.choice([-1.0, 1.0])
            points.append(points[-1] + rng.uniform(*SEGMENT_LENGTH) * direction)
        points = np.array(points)
        ends = _corridor_ends(points)
        if all(
            _box_distance(ends[i], ends[i + 1], ends[j], ends[j + 1]) > width + SEGMENT_GAP
            for i in range(N_SEGMENTS)
            for j in range(i + 2, N_SEGMENTS)
        ):
            return points


def _box_distance(a0, a1, b0, b1) -> float:
    """Distance between two axis-aligned segments (each is its own bounding box)."""
    low_a, high_a = np.minimum(a0, a1), np.maximum(a0, a1)
    low_b, high_b = np.minimum(b0, b1), np.maximum(b0, b1)
    gap = np.maximum(0.0, np.maximum(low_a - high_b, low_b - high_a))
    return float(np.hypot(*gap))


def _corridor_outline(points: np.ndarray, width: float) -> np.ndarray:
    """Closed outline (counter-clockwise) of the corridor of ``width`` around the centreline.

    The corridor is closed behind the agent's start and ``GOAL_DEPTH`` beyond the exit line. At a
    right-angle corner the offset lines meet at corner + (n_in + n_out) * width / 2.
    """
    ends = _corridor_ends(points)
    normals = np.array([_left_normal(_unit(b - a)) for a, b in zip(ends[:-1], ends[1:])])
    joint = np.vstack([normals[:1], normals[:-1] + normals[1:], normals[-1:]]) * width / 2
    return np.vstack([ends - joint, (ends + joint)[::-1]])


def _corridor_ends(points: np.ndarray) -> np.ndarray:
    """The centreline extended back to the closed entrance and on through the goal area."""
    ends = points.copy()
    ends[0] -= (AGENT_HALF[0] + ENTRANCE_ROOM) * _unit(points[1] - points[0])
    ends[-1] += GOAL_DEPTH * _unit(points[-1] - points[-2])
    return ends
