"""ButtonTouch: a two-link planar arm touches a button at the end of a narrow, bent slot.

## Description
Paper (DiSPo, section V): "A two-link planar arm precisely touches a button (blue) without
causing a collision between the button and wall. The observation consists of the end-effector
position and an RGB image. The action is the desired end-effector position. We randomize the
initial arm configuration and button placement."

The scene is seen from above. A grey wall block has a narrow L-shaped slot cut into one face:
an entry leg straight into the wall, then a branch turning sideways, with the blue button at
the branch's end. Only the fingertip (red disk at the end of the second link) reaches down to
the wall's height; the links pass above it, so the one way to fail is the fingertip touching
the wall. Wall position, orientation and size, slot width, depth, branch length and side, the
start position of the fingertip and the elbow branch are drawn from the seed.

The arm is simulated in pymunk: two dynamic links joined by pivot joints to a fixed base at
the world centre, driven by a joint-space PD servo toward the inverse kinematics of the
commanded fingertip position. The servo multiplies its PD acceleration by the arm's inertia
matrix (Coriolis terms are left out), so both joints respond alike in every configuration.
The elbow keeps the branch of the episode's initial configuration.

The expert moves in fingertip space: straight from the start to a point just in front of the
slot on its axis, straight in, and sideways along the branch onto the button, through two
rounded 90-degree corners without stopping. The start is always off to the side of the slot,
so the first corner is sharp too. Straight lines between coarse (2.5 Hz) samples cut these
corners into the wall, while 20 Hz tracking stays inside the slot. The bent slot is there for
calibration: with a single corner, a coarse sample that happens to land on the corner gets
through, about one episode in ten; with two corners a coarse plan has to be that lucky twice.

## Action space
``Box(0, 512, (2,), float32)``: the desired fingertip position (x, y) in world units; positions
out of the arm's reach are clamped radially into it. A wrong shape or a NaN raises
``ValueError``.

## Observation space
- ``state`` (default): ``Box((12,), float32)``: the fingertip (x, y), then the scene features
  listed in ``ButtonTouchEnv``'s docstring.
- ``pixels``: ``{"global"}``, one 96x96 RGB ``uint8`` image of the whole world (the paper's
  single image).
- ``pixels_state``: ``{"state": ..., "pixels": ...}``.

## Success and failure
Success (reward 1, terminated): the fingertip touches the button. Failure (terminated): the
fingertip touches the wall. Truncated after 8 s. ``info`` carries ``is_success``,
``is_collision``, ``agent_pose`` (the fingertip), ``time`` and ``sim_state``.

## Reset options
``reset(seed=s, options={"reset_to_state": env.unwrapped.sim_state()})`` restarts the scene of seed
``s`` with the arm in that state: each link's pymunk body state, ``(x, y, angle, vx, vy,
angular_velocity)`` of the upper link's centre then of the forearm's, and the episode time.
The same actions from there repeat the episode's rewards and flags exactly and its poses to
1e-11 units (pymunk warm-starts the pivot joints with impulses that are not in the state).
The joint angles alone would not do: the pivots stretch by up to 1.6 units in fast motion, and
leaving that out moves the replayed fingertip by up to 0.08 units.

## Arguments
``gym.make("cfbench/ButtonTouch-v0", obs_mode="state", render_mode=None, control_hz=20.0)``;
``render_mode`` is ``"rgb_array"`` or ``"human"``. The physics runs at 200 Hz underneath any
control rate.

## Version history
- v0: first release (round 1). Tracker calibration, test seeds 20000-20099: 0 % at 2.5 Hz,
  55 % at 5 Hz, 100 % at 10 and 20 Hz.
"""

from __future__ import annotations

import math

import numpy as np
import pymunk

from cfbench.envs.core import Canvas, CoarseToFineEnv, StateLayout, chipmunk_handles
from cfbench.expert import ExpertTrajectory, rounded_polyline, time_parametrize

# ---------------------------------------------------------------- world and arm
WORLD_SIZE = 512.0
BASE = (256.0, 256.0)  # the arm's fixed shoulder, at the world centre
LINK_LENGTHS = (130.0, 110.0)
LINK_MASSES = (1.0, 0.6)
TIP_RADIUS = 9.0
#: the inverse kinematics clamps commanded positions into this annulus around the base
REACH = (30.0, 238.0)

# ---------------------------------------------------------------- servo
#: joint-space PD on acceleration: critically damped at 45 rad/s, so the tip lags the
#: commanded position by about one 20 Hz control period (the lead an expert action has)
K_P = 2025.0
K_V = 90.0
#: joint errors are clipped, which caps the joint speed at K_P * MAX_JOINT_ERROR / K_V
MAX_JOINT_ERROR = 0.18
#: reset_to_state refuses links further apart than this at a pivot (fast motion stretches
#: a pivot by up to 1.6 units)
PIVOT_TOLERANCE = 5.0

# ---------------------------------------------------------------- scene sampling
SLOT_CLEARANCE = (2.5, 4.0)  # free space on each side of the fingertip inside the slot
BEND_DEPTH = (45.0, 60.0)  # from the wall face to the centre line of the slot's branch
BRANCH_LENGTH = (30.0, 45.0)  # from the entry leg's centre line to the button's face
BUTTON_THICKNESS = 10.0
WALL_BESIDE_BUTTON = (15.0, 40.0)  # wall beyond the button, along the face
WALL_BEHIND_SLOT = (14.0, 30.0)  # wall behind the branch
BASE_CLEARANCE = 25.0  # the arm's base stays this far from the wall block
MOUTH_RADIUS = (110.0, 200.0)  # distance of the slot mouth from the base
START_LATERAL = (150.0, 260.0)  # start offset along the face, to either side of the axis
START_STANDOFF = (20.0, 80.0)  # start distance in front of the face
EDGE_MARGIN = 16.0  # the wall stays this far inside the world box
PATH_REACH_MARGIN = (30.0, 10.0)  # expert path stays this far inside the reach annulus

# ---------------------------------------------------------------- expert
APPROACH_STANDOFF = 13.0  # the pre-insertion point's distance in front of the face
CORNER_RADIUS = 10.0
PRESS_DEPTH = 2.0  # the final target lies this far behind the button's face
EXPERT_MAX_VELOCITY = np.array([95.0, 95.0])
EXPERT_MAX_ACCELERATION = np.array([2000.0, 2000.0])

# ---------------------------------------------------------------- drawing
BACKGROUND = (255, 255, 255)
WALL_COLOR = (110, 110, 110)
BUTTON_COLOR = (30, 80, 230)
LINK_COLORS = ((235, 150, 40), (245, 190, 60))
JOINT_COLOR = (40, 40, 40)
TIP_COLOR = (220, 30, 30)
LINK_WIDTH = 10.0

# pymunk collision types
_TIP, _WALL, _BUTTON = 1, 2, 3


class ButtonTouchEnv(CoarseToFineEnv):
    """Touch the blue button at the bottom of a slot with the arm's fingertip, never the wall.

    Action: desired fingertip position (x, y) in world units, anywhere in the 512 x 512 world
    (positions out of the arm's reach are clamped radially into it).
    State observation: fingertip position, then the scene features

        [button face centre (2), entry direction into the wall (cos, sin), side the
         branch turns to (+1 left / -1 right of the entry direction), slot width, depth of
         the branch's centre line, branch length to the button face, wall half-length
         along the face, elbow branch of the arm (+1 / -1)].

    Pixel observation: one 96x96 RGB view of the whole world (the paper's single image).
    """

    views = ("global",)
    pose_low = np.array([0.0, 0.0], dtype=np.float32)
    pose_high = np.array([WORLD_SIZE, WORLD_SIZE], dtype=np.float32)
    scene_dim = 10
    scene_bound = WORLD_SIZE  # every feature is a world coordinate, a length or a unit vector
    # state: fingertip (x, y), button-face centre, direction into the slot, then scalars
    state_layout = StateLayout(points=(0, 2), directions=(4,), angles=(), frame_direction=4)
    sim_state_fields = {
        f"{link}_{name}": (0.0, WORLD_SIZE) if name in ("x", "y") else (-np.inf, np.inf)
        for link in ("upper", "fore")
        for name in ("x", "y", "angle", "vx", "vy", "angular_velocity")
    }
    max_episode_seconds = 8.0
    physics_hz = 200.0
    world_bounds = (0.0, 0.0, WORLD_SIZE, WORLD_SIZE)

    # ------------------------------------------------------------ scene
    def _build_scene(self, rng: np.random.Generator) -> None:
        while not self._sample_scene(rng):  # rejection sampling: redraw until every rule holds
            pass
        self._build_space()

    def _sample_scene(self, rng: np.random.Generator) -> bool:
        """Draw one candidate scene and start; False when it breaks a placement rule."""
        base = np.array(BASE)
        bearing = rng.uniform(-np.pi, np.pi)
        mouth = base + rng.uniform(*MOUTH_RADIUS) * np.array([np.cos(bearing), np.sin(bearing)])
        facing = rng.uniform(-np.pi, np.pi)  # direction of the face's outward normal
        normal = np.array([np.cos(facing), np.sin(facing)])
        tangent = np.array([normal[1], -normal[0]])  # along the face, left of the way in
        half_width = TIP_RADIUS + rng.uniform(*SLOT_CLEARANCE)
        bend = rng.uniform(*BEND_DEPTH)
        reach_in = rng.uniform(*BRANCH_LENGTH)
        side = rng.choice([-1.0, 1.0])  # the branch turns left (+1) or right (-1)
        half_length = reach_in + BUTTON_THICKNESS + rng.uniform(*WALL_BESIDE_BUTTON)
        back = bend + half_width + rng.uniform(*WALL_BEHIND_SLOT)
        lateral = rng.choice([-1.0, 1.0]) * rng.uniform(*START_LATERAL)
        start = mouth + lateral * tangent + rng.uniform(*START_STANDOFF) * normal
        elbow = float(rng.choice([-1.0, 1.0]))  # a Python float: numpy scalars slow the physics loop

        def point(x, z):  # x along the face toward the branch side, z depth into the wall
            return mouth + side * x * tangent - z * normal

        def box(x0, x1, z0, z1):
            return np.array([point(x0, z0), point(x1, z0), point(x1, z1), point(x0, z1)])

        button_end = reach_in + BUTTON_THICKNESS
        walls = [
            box(-half_length, -half_width, 0.0, back),  # beside the entry leg, away from the branch
            box(half_width, half_length, 0.0, bend - half_width),  # between the face and the branch
            box(-half_width, half_length, bend + half_width, back),  # behind the slot
            box(button_end, half_length, bend - half_width, bend + half_width),  # behind the button
        ]
        button = box(reach_in, button_end, bend - half_width, bend + half_width)
        # for drawing: the whole block, then the slot carved out of it (no seams between pieces)
        block = box(-half_length, half_length, 0.0, back)
        slot = [
            box(-half_width, half_width, 0.0, bend + half_width),
            box(0.0, reach_in, bend - half_width, bend + half_width),
        ]
        approach = mouth + APPROACH_STANDOFF * normal
        corner = point(0.0, bend)
        goal = point(reach_in - TIP_RADIUS + PRESS_DEPTH, bend)

        if block.min() < EDGE_MARGIN or block.max() > WORLD_SIZE - EDGE_MARGIN:
            return False
        if np.any(start < EDGE_MARGIN) or np.any(start > WORLD_SIZE - EDGE_MARGIN):
            return False
        # the base must stay clear of the wall (it is drawn, and the arm folds around it)
        rel = base - mouth
        beside, behind = abs(rel @ tangent), -(rel @ normal)
        if beside < half_length + BASE_CLEARANCE and -BASE_CLEARANCE < behind < back + BASE_CLEARANCE:
            return False
        # the whole expert path stays well inside the reachable annulus
        path = np.concatenate([np.linspace(start, approach, 40), [corner, goal]])
        radius = np.linalg.norm(path - base, axis=1)
        if radius.min() < REACH[0] + PATH_REACH_MARGIN[0] or radius.max() > REACH[1] - PATH_REACH_MARGIN[1]:
            return False

        self._walls, self._button, self._block, self._slot = walls, button, block, slot
        self._start, self._waypoints = start, np.array([approach, corner, goal])
        self._elbow = elbow
        self._features = np.array(
            [*point(reach_in, bend), *-normal, side, 2 * half_width, bend, reach_in, half_length, elbow]
        )
        return True

    def _build_space(self) -> None:
        """A fresh pymunk space: static wall and button, two dynamic links in the start pose."""
        space = pymunk.Space()
        space.iterations = 20
        for poly in self._walls:
            shape = pymunk.Poly(space.static_body, poly.tolist())
            shape.collision_type = _WALL
            space.add(shape)
        shape = pymunk.Poly(space.static_body, self._button.tolist())
        shape.collision_type = _BUTTON
        space.add(shape)

        (l1, l2), (m1, m2) = LINK_LENGTHS, LINK_MASSES
        q1, q2 = _inverse_kinematics(self._start[0], self._start[1], self._elbow)
        upper = pymunk.Body(m1, m1 * l1**2 / 12.0)  # uniform rods, origin at the centre
        fore = pymunk.Body(m2, m2 * l2**2 / 12.0)
        shoulder = np.array(BASE)
        elbow = shoulder + l1 * np.array([np.cos(q1), np.sin(q1)])
        upper.angle, fore.angle = q1, q1 + q2
        upper.position = tuple(shoulder + 0.5 * l1 * np.array([np.cos(q1), np.sin(q1)]))
        fore.position = tuple(elbow + 0.5 * l2 * np.array([np.cos(q1 + q2), np.sin(q1 + q2)]))
        tip = pymunk.Circle(fore, TIP_RADIUS, (0.5 * l2, 0.0))
        tip.collision_type = _TIP
        space.add(
            upper, fore, tip,
            pymunk.PivotJoint(space.static_body, upper, BASE),
            pymunk.PivotJoint(upper, fore, tuple(elbow)),
        )
        space.on_collision(_TIP, _WALL, begin=self._on_wall)
        space.on_collision(_TIP, _BUTTON, begin=self._on_button)

        self._space, self._upper, self._fore = space, upper, fore
        self._hit_wall = False
        self._touched = False
        # inertia matrix M(q2) = [[a + 2 b cos q2, c + b cos q2], [c + b cos q2, c]]
        i1, i2 = upper.moment, fore.moment
        self._inertia = (
            i1 + i2 + m1 * (l1 / 2) ** 2 + m2 * (l1**2 + (l2 / 2) ** 2),
            m2 * l1 * l2 / 2,
            i2 + m2 * (l2 / 2) ** 2,
        )

    def _on_wall(self, arbiter, space, data) -> None:
        """pymunk callback: the fingertip began touching the wall."""
        self._hit_wall = True

    def _on_button(self, arbiter, space, data) -> None:
        """pymunk callback: the fingertip began touching the button."""
        self._touched = True

    # ------------------------------------------------------------ simulation
    def _agent_pose(self) -> np.ndarray:
        fore = self._fore
        half = 0.5 * LINK_LENGTHS[1]
        x, y = fore.position
        a = fore.angle
        return np.array([x + half * math.cos(a), y + half * math.sin(a)])

    def _scene_features(self) -> np.ndarray:
        return self._features

    def _sim_state(self) -> list[float]:
        return [value for body in (self._upper, self._fore)
                for value in (*body.position, body.angle, *body.velocity, body.angular_velocity)]

    def _check_sim_state(self, state: np.ndarray) -> str | None:
        """The links must hang together: the upper one on the base, the forearm on its end."""
        (upper, fore), (l1, l2) = state.reshape(2, 6), LINK_LENGTHS

        def end(link, length, sign):
            return link[:2] + sign * 0.5 * length * np.array([math.cos(link[2]), math.sin(link[2])])

        for pivot, gap in (("shoulder", end(upper, l1, -1) - BASE), ("elbow", end(fore, l2, -1) - end(upper, l1, 1))):
            if np.hypot(*gap) > PIVOT_TOLERANCE:
                return f"the links are {np.hypot(*gap):.3g} units apart at the {pivot} (at most {PIVOT_TOLERANCE:g})"
        return None

    def _set_sim_state(self, state: np.ndarray) -> None:
        for body, (x, y, angle, vx, vy, spin) in zip((self._upper, self._fore), state.reshape(2, 6)):
            body.position, body.angle, body.velocity, body.angular_velocity = (x, y), angle, (vx, vy), spin

    def _simulate(self, target: list[float]) -> bool:
        space, upper, fore = chipmunk_handles(self._space, self._upper, self._fore)
        cp, dt = pymunk.cp, self.physics_dt
        goal1, goal2 = _inverse_kinematics(*target, self._elbow)
        # the shoulder target is unwrapped next to the current angle (no full turns)
        angle = self._upper.angle
        goal1 = angle + (goal1 - angle + math.pi) % (2 * math.pi) - math.pi
        a, b, c = self._inertia
        limit = MAX_JOINT_ERROR
        for _ in range(self.substeps):
            t1, t2 = cp.cpBodyGetAngle(upper), cp.cpBodyGetAngle(fore)
            w1, w2 = cp.cpBodyGetAngularVelocity(upper), cp.cpBodyGetAngularVelocity(fore)
            q2, dq2 = t2 - t1, w2 - w1
            acc1 = K_P * min(max(goal1 - t1, -limit), limit) - K_V * w1
            acc2 = K_P * min(max(goal2 - q2, -limit), limit) - K_V * dq2
            cos2 = math.cos(q2)
            m11, m12 = a + 2 * b * cos2, c + b * cos2
            tau1, tau2 = m11 * acc1 + m12 * acc2, m12 * acc1 + c * acc2
            cp.cpBodySetTorque(upper, tau1 - tau2)  # the elbow torque reacts on the upper link
            cp.cpBodySetTorque(fore, tau2)
            cp.cpSpaceStep(space, dt)
            if self._hit_wall or self._touched:
                break
        return self._hit_wall

    def _is_success(self) -> bool:
        return self._touched

    # ------------------------------------------------------------ drawing
    def _draw(self, canvas: Canvas) -> None:
        canvas.polygon(self._block, WALL_COLOR)
        for poly in self._slot:
            canvas.polygon(poly, BACKGROUND)
        canvas.polygon(self._button, BUTTON_COLOR)
        shoulder = np.array(BASE)
        t1 = self._upper.angle
        elbow = shoulder + LINK_LENGTHS[0] * np.array([math.cos(t1), math.sin(t1)])
        tip = self._agent_pose()
        canvas.line([shoulder, elbow], LINK_COLORS[0], LINK_WIDTH)
        canvas.line([elbow, tip], LINK_COLORS[1], LINK_WIDTH)
        canvas.circle(shoulder, 9.0, JOINT_COLOR)
        canvas.circle(elbow, 6.0, JOINT_COLOR)
        canvas.circle(tip, TIP_RADIUS, TIP_COLOR)

    # ------------------------------------------------------------ expert
    def _expert_path(self) -> ExpertTrajectory:
        """Start, a point in front of the slot, the bend, the button: a polyline with rounded corners."""
        corners = np.concatenate([self._start[None], self._waypoints])
        path = rounded_polyline(corners, CORNER_RADIUS, spacing=1.0)
        return time_parametrize(path, EXPERT_MAX_VELOCITY, EXPERT_MAX_ACCELERATION)


def _inverse_kinematics(x: float, y: float, elbow: float) -> tuple[float, float]:
    """Shoulder and (relative) elbow angle putting the fingertip at (x, y), clamped into reach."""
    l1, l2 = LINK_LENGTHS
    dx, dy = x - BASE[0], y - BASE[1]
    r = math.hypot(dx, dy)
    clamped = min(max(r, REACH[0]), REACH[1])
    cos2 = (clamped**2 - l1**2 - l2**2) / (2 * l1 * l2)
    q2 = elbow * math.acos(min(max(cos2, -1.0), 1.0))
    q1 = math.atan2(dy, dx) - math.atan2(l2 * math.sin(q2), l1 + l2 * math.cos(q2))
    return q1, q2

