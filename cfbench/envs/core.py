"""What every cfbench environment shares: observation modes, action checks, timing, drawing.

A concrete environment (one file each, like gym-pusht) supplies the scene: how it is sampled
from the seed, how the agent is simulated toward a target pose, what counts as success or
collision, how it is drawn, and the expert's collision-free path. This base class turns that
into the Gymnasium API, identically for all three environments.

Replaying from a state (gym-pusht's ``reset_to_state``): ``env.sim_state()`` is everything the
physics carries from one step to the next (the agent's body state, named by
``sim_state_fields``, then the episode time); the scene is not in it, the seed makes that.
``reset(seed=s, options={"reset_to_state": state})`` rebuilds scene ``s`` with the agent in that
state, and stepping the episode's remaining actions then repeats its rest.
"""

from __future__ import annotations

import operator
import os
from abc import ABC, abstractmethod
from typing import Any, ClassVar

os.environ.setdefault("PYGAME_HIDE_SUPPORT_PROMPT", "1")

from dataclasses import asdict, dataclass

import gymnasium as gym
import numpy as np
import pygame
import pymunk
from gymnasium import spaces

from cfbench.expert import ExpertTrajectory

OBS_MODES = ("state", "pixels", "pixels_state")
RESET_OPTIONS = ("reset_to_state",)
PIXEL_SIZE = 96
#: rollout-video overlays (``render_annotated``): the expert path, 1 px, and the target dots
PATH_COLOR = (170, 170, 240)
TARGET_COLOR = (0, 190, 220)
TARGET_DOT_PIXELS = 3


@dataclass(frozen=True)
class StateLayout:
    """What the entries of the state vector are, so a policy can re-express observations in an
    agent-centred, task-aligned frame (the scene is randomised in position and orientation;
    90 demos cannot teach a network those symmetries). Indices count from the state's start;
    the agent's position is always entries 0 and 1.
    """

    points: tuple[int, ...]  # index of each 2-D point's x (y follows)
    directions: tuple[int, ...]  # index of each unit vector's cos (sin follows)
    angles: tuple[int, ...]  # yaw-like entries, in radians
    frame_direction: int  # the direction that becomes the task frame's x axis
    #: the period of the angle entries and of the action's yaw: pi for an agent that looks the
    #: same turned half way round (ClampPassing's ring), else a full turn
    angle_period: float = 2 * np.pi

    def to_dict(self) -> dict:
        return {key: list(value) if isinstance(value, tuple) else value for key, value in asdict(self).items()}


class CoarseToFineEnv(gym.Env, ABC):
    """Base class. Subclasses set the class attributes below and implement the hooks."""

    metadata: ClassVar[dict[str, Any]] = {"render_modes": ["rgb_array", "human"], "render_fps": 20}

    #: names of the pixel views, in observation order ("global" first)
    views: ClassVar[tuple[str, ...]] = ("global", "local")
    #: lower/upper bounds of an absolute target pose (the action) in world units
    pose_low: ClassVar[np.ndarray]
    pose_high: ClassVar[np.ndarray]
    #: length of the scene-geometry part of the state vector, and a bound on its entries' magnitude
    scene_dim: ClassVar[int]
    scene_bound: ClassVar[float] = np.inf
    state_layout: ClassVar[StateLayout]
    #: the agent's entries of ``sim_state()`` (what ``reset_to_state`` restores): name ->
    #: (low, high); the episode time in seconds follows them in every env
    sim_state_fields: ClassVar[dict[str, tuple[float, float]]]
    #: episode time limit in seconds (truncation), independent of the control rate
    max_episode_seconds: ClassVar[float]
    #: physics rate; each control step runs round(physics_hz / control_hz) sub-steps
    physics_hz: ClassVar[float] = 200.0
    #: world extent shown by the global view (x0, y0, x1, y1) and the local view's side length
    world_bounds: ClassVar[tuple[float, float, float, float]]
    local_view_size: ClassVar[float] = 0.0
    render_size: ClassVar[int] = 384

    def __init__(
        self,
        obs_mode: str = "state",
        render_mode: str | None = None,
        control_hz: float = 20.0,
    ):
        if obs_mode not in OBS_MODES:
            raise ValueError(f"unknown obs_mode {obs_mode!r}; choose one of {OBS_MODES}")
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise ValueError(
                f"unknown render_mode {render_mode!r}; choose one of {self.metadata['render_modes']}"
            )
        if isinstance(control_hz, bool) or not isinstance(control_hz, (int, float, np.number)) or not (
                np.isfinite(control_hz) and control_hz > 0):
            raise ValueError(f"control_hz must be a positive number, got {control_hz!r}")
        if abs(self.physics_hz / control_hz - round(self.physics_hz / control_hz)) > 1e-9:
            raise ValueError(f"control_hz={control_hz!r} must divide the physics rate {self.physics_hz:g} Hz "
                             "(e.g. 2.5, 5, 10, 20, 40), so that every control step is whole physics steps")
        self.obs_mode = obs_mode
        self.render_mode = render_mode
        self.control_hz = float(control_hz)
        self.substeps = max(1, round(self.physics_hz / self.control_hz))
        self.physics_dt = 1.0 / (self.control_hz * self.substeps)
        self.max_episode_steps = int(np.ceil(self.max_episode_seconds * self.control_hz))
        self.metadata = {**self.metadata, "render_fps": self.control_hz}

        pose_dim = len(self.pose_low)
        self.action_space = spaces.Box(
            np.asarray(self.pose_low, dtype=np.float32), np.asarray(self.pose_high, dtype=np.float32), dtype=np.float32
        )
        self._pose_bounds = (self.action_space.low.tolist(), self.action_space.high.tolist())
        state_low = np.concatenate([self.pose_low, np.full(self.scene_dim, -self.scene_bound)])
        state_high = np.concatenate([self.pose_high, np.full(self.scene_dim, self.scene_bound)])
        state_space = spaces.Box(
            state_low.astype(np.float32), state_high.astype(np.float32), dtype=np.float32
        )
        pixel_space = spaces.Dict(
            {
                view: spaces.Box(0, 255, (PIXEL_SIZE, PIXEL_SIZE, 3), dtype=np.uint8)
                for view in self.views
            }
        )
        self.observation_space = {
            "state": state_space,
            "pixels": pixel_space,
            "pixels_state": spaces.Dict({"state": state_space, "pixels": pixel_space}),
        }[obs_mode]
        self.pose_dim = pose_dim
        fields = {**self.sim_state_fields, "time": (0.0, self.max_episode_seconds)}
        self.sim_state_names = tuple(fields)
        self.sim_state_space = spaces.Box(*np.array(list(fields.values())).T, dtype=np.float64)
        self._canvas = Canvas(PIXEL_SIZE)
        self._render_canvas: Canvas | None = None
        self._window = None  # pygame display for render_mode="human"
        self._clock = None
        self._steps = 0
        self._expert: ExpertTrajectory | None = None

    # ----------------------------------------------------------------- hooks
    @abstractmethod
    def _build_scene(self, rng: np.random.Generator) -> None:
        """Sample the scene and the agent's start pose from ``rng``; (re)build the simulation."""

    @abstractmethod
    def _agent_pose(self) -> np.ndarray:
        """Current agent pose in world units (the same coordinates as an action)."""

    @abstractmethod
    def _scene_features(self) -> np.ndarray:
        """Fixed-length vector describing the randomised scene (length ``scene_dim``); read once
        a reset, as the scene does not move."""

    @abstractmethod
    def _simulate(self, target: list[float]) -> bool:
        """Advance ``self.substeps`` physics steps toward ``target`` (Python floats: the physics
        loops run in Python, where numpy scalars cost more than they compute); True if a
        collision occurred."""

    @abstractmethod
    def _sim_state(self) -> list[float]:
        """The agent's state that the physics carries between steps, as ``sim_state_fields`` names it."""

    @abstractmethod
    def _set_sim_state(self, state: np.ndarray) -> None:
        """Put the agent of the freshly built scene in ``state`` (checked by ``_check_sim_state``)."""

    def _check_sim_state(self, state: np.ndarray) -> str | None:
        """What makes a ``state`` inside the bounds one the physics cannot take, or None."""
        return None

    @abstractmethod
    def _is_success(self) -> bool:
        """Whether the task is solved in the current state."""

    @abstractmethod
    def _draw(self, canvas: Canvas) -> None:
        """Draw the scene onto ``canvas`` (world coordinates; the canvas holds the view)."""

    def _local_view(self) -> tuple[np.ndarray, float]:
        """Centre (world) and rotation (radians) of the agent-centred view (envs with a "local" view)."""
        raise NotImplementedError(f"{type(self).__name__} has no local view")

    @abstractmethod
    def _expert_path(self) -> ExpertTrajectory:
        """The expert's collision-free trajectory for the current scene, from the start pose."""

    # ------------------------------------------------------------- gym API
    def reset(self, *, seed: int | None = None, options: dict | None = None):
        """A new episode in the scene of ``seed``; ``options={"reset_to_state": state}`` (a
        ``sim_state()`` of an episode with that seed) starts it from that state instead of the
        scene's start. The expert trajectory stays the scene's, from its start."""
        state = self._reset_to_state(seed, options or {})
        super().reset(seed=seed)
        self._build_scene(self.np_random)
        self._state_template = np.concatenate([np.zeros(self.pose_dim), self._scene_features()]).astype(np.float32)
        self._steps = 0
        if state is not None:
            self._set_sim_state(state[:-1])
            self._steps = round(state[-1] * self.control_hz)
        self._expert = None
        if self.render_mode == "human":
            self.render()
        pose = self._agent_pose()
        return self._observation(pose), self._info(pose, success=False, collision=False)

    def step(self, action):
        target = self._check_action(action)
        collision = self._simulate(target)
        self._steps += 1
        success = (not collision) and self._is_success()
        terminated = success or collision
        truncated = (not terminated) and self._steps >= self.max_episode_steps
        reward = 1.0 if success else 0.0
        if self.render_mode == "human":
            self.render()
        pose = self._agent_pose()
        return (
            self._observation(pose),
            reward,
            terminated,
            truncated,
            self._info(pose, success=success, collision=collision),
        )

    def render(self):
        if self.render_mode is None:
            return None
        if self._render_canvas is None:
            self._render_canvas = Canvas(self.render_size)
        self._render_canvas.begin(*self._global_view())
        self._draw(self._render_canvas)
        if self.render_mode == "rgb_array":
            return self._render_canvas.pixels()
        if self._window is None:  # human: a window at the control rate (needs a display)
            pygame.display.init()
            self._window = pygame.display.set_mode((self.render_size, self.render_size))
            pygame.display.set_caption(type(self).__name__)
            self._clock = pygame.time.Clock()
        self._window.blit(self._render_canvas.surface, (0, 0))
        pygame.event.pump()
        pygame.display.flip()
        self._clock.tick(self.control_hz)
        return None

    def render_annotated(self, *, path=None, targets=None) -> np.ndarray:
        """The ``rgb_array`` frame with the expert's ``path`` (N, 2) drawn faintly over the scene
        and the ``targets`` (M, >=2 world poses, e.g. the policy's current action chunk) as
        dots: what a rollout video shows beside the scene."""
        if self.render_mode != "rgb_array":
            raise ValueError(f"render_annotated needs render_mode='rgb_array', not {self.render_mode!r}")
        self.render()
        canvas = self._render_canvas
        if path is not None and len(path) > 1:
            canvas.line(np.asarray(path)[:, :2], PATH_COLOR, width=0.0)  # one pixel wide
        if targets is not None:
            for target in np.asarray(targets)[:, :2]:
                canvas.dot(target, TARGET_DOT_PIXELS, TARGET_COLOR)
        return canvas.pixels()

    def render_extent(self) -> tuple[float, float, float, float]:
        """The world rectangle (left, right, bottom, top) that ``render()`` shows, for drawing
        in world coordinates over a frame (matplotlib's ``imshow(frame, extent=...)``)."""
        centre, extent, _ = self._global_view()
        return (centre[0] - extent / 2, centre[0] + extent / 2, centre[1] - extent / 2, centre[1] + extent / 2)

    def close(self):
        self._render_canvas = None
        if self._window is not None:
            pygame.display.quit()
            self._window = None

    # ------------------------------------------------------- expert access
    def expert_trajectory(self) -> ExpertTrajectory:
        """The expert trajectory of the current episode (computed once per reset)."""
        if self._expert is None:
            self._expert = self._expert_path()
        return self._expert

    # ------------------------------------------------------------ helpers
    def _check_action(self, action) -> list[float]:
        """The action clipped to the pose bounds, as Python floats (``_simulate``'s target)."""
        action = np.asarray(action, dtype=np.float64)
        if action.shape != self.action_space.shape:
            raise ValueError(
                f"{type(self).__name__}: action must have shape {self.action_space.shape} "
                f"(an absolute target pose), got shape {action.shape}"
            )
        target, (low, high) = action.tolist(), self._pose_bounds
        if all(map(operator.lt, low, target)) and all(map(operator.lt, target, high)):
            return target  # strictly inside (so no NaN or inf): np.clip would return it as it is
        if not np.all(np.isfinite(action)):
            raise ValueError(f"{type(self).__name__}: action contains NaN or inf: {action}")
        return np.clip(action, self.pose_low, self.pose_high).tolist()

    def _reset_to_state(self, seed: int | None, options: dict) -> np.ndarray | None:
        """The checked ``reset_to_state`` option (None when not given); checked before the reset
        changes anything, so a refused one leaves the episode running."""
        where = f"{type(self).__name__}.reset"
        unknown = sorted(set(options) - set(RESET_OPTIONS))
        if unknown:
            raise ValueError(f"{where}: unknown options {unknown}; known: {list(RESET_OPTIONS)}")
        if options.get("reset_to_state") is None:  # gym-pusht's way of saying "from the start"
            return None
        if seed is None:
            raise ValueError(f"{where}: reset_to_state needs the seed of the episode the state comes from "
                             "(the seed makes the scene; the state holds only the agent)")
        try:
            state = np.asarray(options["reset_to_state"], dtype=np.float64)
        except (TypeError, ValueError) as error:
            raise ValueError(f"{where}: reset_to_state is not a vector of numbers ({error})") from None
        names = self.sim_state_names
        if state.shape != (len(names),):
            raise ValueError(f"{where}: reset_to_state must have shape ({len(names)},), entries {names} "
                             f"(a sim_state()), got shape {state.shape}")
        for name, value, low, high in zip(names, state, self.sim_state_space.low, self.sim_state_space.high):
            if not np.isfinite(value):
                raise ValueError(f"{where}: reset_to_state's {name} is {value}, not a finite number")
            if not low <= value <= high:
                raise ValueError(f"{where}: reset_to_state's {name} = {value:g} is outside [{low:g}, {high:g}]")
        steps = state[-1] * self.control_hz
        if abs(steps - round(steps)) > 1e-6:
            raise ValueError(f"{where}: reset_to_state's time = {state[-1]:g} s is not a whole number of "
                             f"{self.control_hz:g} Hz control steps")
        problem = self._check_sim_state(state[:-1])
        if problem:
            raise ValueError(f"{where}: reset_to_state: {problem}")
        return state

    def _state(self, pose: np.ndarray) -> np.ndarray:
        """The agent's ``pose`` then the scene's features, in float32 (a new array each step:
        callers keep observation histories)."""
        state = self._state_template.copy()
        state[: self.pose_dim] = pose
        return state

    def _pixels(self) -> dict[str, np.ndarray]:
        frames = {}
        for view in self.views:
            frame = self._global_view() if view == "global" else self._local_frame()
            self._canvas.begin(*frame)
            self._draw(self._canvas)
            frames[view] = self._canvas.pixels()
        return frames

    def _global_view(self) -> tuple[np.ndarray, float, float]:
        x0, y0, x1, y1 = self.world_bounds
        return np.array([(x0 + x1) / 2, (y0 + y1) / 2]), max(x1 - x0, y1 - y0), 0.0

    def _local_frame(self) -> tuple[np.ndarray, float, float]:
        centre, angle = self._local_view()
        return centre, self.local_view_size, angle

    def _observation(self, pose: np.ndarray):
        """The observation with the agent at ``pose`` (``_agent_pose()``, read once a step)."""
        if self.obs_mode == "state":
            return self._state(pose)
        if self.obs_mode == "pixels":
            return self._pixels()
        return {"state": self._state(pose), "pixels": self._pixels()}

    def _info(self, pose: np.ndarray, *, success: bool, collision: bool) -> dict[str, Any]:
        return {
            "is_success": bool(success),
            "is_collision": bool(collision),
            "agent_pose": np.array(pose, dtype=np.float64),
            "time": self._steps / self.control_hz,
        }

    def sim_state(self) -> np.ndarray:
        """What the physics carries from this step to the next (``sim_state_names``), the episode
        time last: ``reset(seed=s, options={"reset_to_state": env.sim_state()})`` replays from here.
        A method, not an ``info`` entry, so that stepping pays nothing for it (vector envs:
        ``envs.call("sim_state")``)."""
        return np.array([*self._sim_state(), self._steps / self.control_hz])


class Canvas:
    """A square pygame surface with a world-to-pixel transform (y up, optional rotation).

    Drawing the planar scene directly is far cheaper than a 3-D renderer at 96x96 and gives
    the same picture for the physics engines used here.
    """

    def __init__(self, size: int):
        self.size = size
        self.surface = pygame.Surface((size, size))
        self._centre = np.zeros(2)
        self._scale = 1.0
        self._rotation = np.eye(2)

    def begin(self, centre: np.ndarray, extent: float, angle: float = 0.0, background=(255, 255, 255)):
        """Start a frame showing a square of side ``extent`` around ``centre``, rotated by ``-angle``."""
        self._centre = np.asarray(centre, dtype=np.float64)
        self._scale = self.size / extent
        c, s = np.cos(-angle), np.sin(-angle)
        self._rotation = np.array([[c, -s], [s, c]])
        self.surface.fill(background)

    def to_pixels(self, points) -> np.ndarray:
        p = (np.atleast_2d(np.asarray(points, dtype=np.float64)) - self._centre) @ self._rotation.T
        return np.stack([p[:, 0] * self._scale + self.size / 2, self.size / 2 - p[:, 1] * self._scale], 1)

    def polygon(self, points, color) -> None:
        pygame.draw.polygon(self.surface, color, self.to_pixels(points).tolist())

    def circle(self, centre, radius: float, color) -> None:
        (px,) = self.to_pixels(centre)
        pygame.draw.circle(self.surface, color, px.tolist(), max(1.0, radius * self._scale))

    def dot(self, centre, pixels: float, color) -> None:
        """A dot of a fixed size on screen (``circle`` scales with the world)."""
        (px,) = self.to_pixels(centre)
        pygame.draw.circle(self.surface, color, px.tolist(), pixels)

    def line(self, points, color, width: float = 1.0) -> None:
        pygame.draw.lines(
            self.surface, color, False, self.to_pixels(points).tolist(), max(1, round(width * self._scale))
        )

    def pixels(self) -> np.ndarray:
        return np.ascontiguousarray(pygame.surfarray.pixels3d(self.surface).transpose(1, 0, 2))


def chipmunk_handles(space: pymunk.Space, *bodies: pymunk.Body) -> tuple:
    """The C handles of a pymunk ``space`` and ``bodies``, for a physics loop that calls chipmunk
    through pymunk's own binding (``pymunk.cp``) rather than pymunk's Python layer.

    That layer costs 0.1-0.4 us a call (a ``Vec2d`` built per read, a ``__setattr__`` override
    per write, ``Space.step``'s bookkeeping for bodies added or removed during a step, which
    the envs never do): as much as chipmunk's step of these small scenes, ten times a control
    step. The same C functions run, so the same bits come out.
    """
    return (space._space, *(body._body for body in bodies))


def box_corners(centre, half_extents, angle: float = 0.0) -> np.ndarray:
    """The four corners of a rotated rectangle, counter-clockwise."""
    hx, hy = half_extents
    local = np.array([[-hx, -hy], [hx, -hy], [hx, hy], [-hx, hy]])
    c, s = np.cos(angle), np.sin(angle)
    return local @ np.array([[c, s], [-s, c]]) + np.asarray(centre)
