"""Rollout videos: GIFs of chosen test episodes, replayed from what the evaluator recorded.

``cfbench-eval ... --videos N`` films the first N test episodes and the first N failures among
the others (seed order), as ``seed<k>_<success|collision|timeout>.gif``. The evaluator keeps
each episode's executed targets and action chunks (``evaluate(traces=True)``: arrays, nothing
drawn), and the chosen episodes are replayed afterwards in one rendering env: the envs are
deterministic in (seed, actions), and a replay whose outcome differs from the episode's is an
error. So only the filmed episodes cost any drawing, however rare failures are, and the vector
env's kind does not matter.

A frame is drawn before every control step and one after the last (``steps + 1`` frames), at
the control rate, with the expert's path drawn faintly and the executing chunk's targets as
dots. The files go to a staging folder first and replace the previous videos of the same record
only when all are written, so an interrupted run leaves the old set whole.
"""

from __future__ import annotations

import io
import shutil
from collections.abc import Callable
from pathlib import Path

import gymnasium as gym
import numpy as np
from PIL import Image

from cfbench.files import atomic_write_bytes

#: the expert path is drawn through at most this many of its points (a dense path costs drawing time)
PATH_POINTS = 200


def outcome_name(success: bool, collision: bool) -> str:
    return "success" if success else ("collision" if collision else "timeout")


def chosen(rows: list[dict], count: int) -> list[dict]:
    """The first ``count`` episodes and the first ``count`` failures after them, in seed order."""
    rows = sorted(rows, key=lambda row: row["seed"])
    failures = [row for row in rows[count:] if not row["success"]][:count]
    return rows[:count] + failures


def _replay(env_id: str, control_hz: float, row: dict, view: Callable) -> None:
    """Replay one traced episode from its seed and actions, calling ``view(env, path, chunk,
    last)`` before every step (``last`` False) and once after the last one (``last`` True), with
    the expert's path thinned to ``PATH_POINTS`` and the chunk being executed."""
    env = gym.make(env_id, control_hz=control_hz, render_mode="rgb_array")
    try:
        env.reset(seed=row["seed"])
        path = env.unwrapped.expert_trajectory().poses[:, :2]
        path = path[np.linspace(0, len(path) - 1, min(len(path), PATH_POINTS)).round().astype(int)]
        starts = {first: chunk for first, chunk in row["chunks"]}
        chunk, ended = None, []
        for step, action in enumerate(row["actions"]):
            chunk = starts.get(step, chunk)
            view(env.unwrapped, path, chunk, False)
            _, _, terminated, truncated, info = env.step(action)
            if terminated or truncated:
                ended.append((step + 1, bool(info["is_success"]), bool(info["is_collision"])))
        view(env.unwrapped, path, chunk, True)
    finally:
        env.close()
    if ended[:1] != [(row["steps"], row["success"], row["collision"])]:
        raise RuntimeError(f"{env_id} seed {row['seed']}: the replayed episode ended differently from the "
                           "evaluated one; the env is not deterministic in (seed, actions)")


def replay_frames(env_id: str, control_hz: float, row: dict) -> list[np.ndarray]:
    """The annotated frames of one traced episode (expert path and executing chunk drawn)."""
    frames = []

    def draw(env, path, chunk, last):
        frames.append(env.render_annotated(path=path, targets=chunk))

    _replay(env_id, control_hz, row, draw)
    return frames


def final_scene(env_id: str, control_hz: float, row: dict) -> np.ndarray:
    """The plain scene where one traced episode ended (nothing else is drawn)."""
    scene = []

    def draw_the_end(env, path, chunk, last):
        if last:
            scene.append(env.render())

    _replay(env_id, control_hz, row, draw_the_end)
    return scene[0]


def gif_bytes(frames: list[np.ndarray], control_hz: float) -> bytes:
    """An animated GIF at the control rate (fast octree palettes: the scenes have few colours)."""
    images = [Image.fromarray(frame).quantize(method=Image.Quantize.FASTOCTREE) for frame in frames]
    buffer = io.BytesIO()
    images[0].save(buffer, format="GIF", save_all=True, append_images=images[1:],
                   duration=round(1000 / control_hz), loop=0)
    return buffer.getvalue()


def write_videos(env_id: str, control_hz: float, rows: list[dict], count: int, directory: Path) -> list[Path]:
    """Film the chosen episodes of an evaluation into ``directory`` (replacing what it held)."""
    if count < 1:
        raise ValueError(f"the number of videos must be at least 1, got {count}")
    directory = Path(directory)
    staging = directory.with_name(directory.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    try:
        names = []
        for row in chosen(rows, count):
            name = f"seed{row['seed']}_{outcome_name(row['success'], row['collision'])}.gif"
            atomic_write_bytes(staging / name, gif_bytes(replay_frames(env_id, control_hz, row), control_hz))
            names.append(name)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    shutil.rmtree(directory, ignore_errors=True)
    staging.rename(directory)
    return [directory / name for name in names]
