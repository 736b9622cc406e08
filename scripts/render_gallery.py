"""Pictures for the README: every env's views and a Tracker rollout from 2.5 Hz vs 20 Hz samples.

For each env it writes ``docs/img/<Env>_views.png`` (the rendered scene and the 96x96 pixel
observations) and ``docs/img/<Env>_tracker.png`` (frames of the Tracker from 2.5 Hz and from
20 Hz samples on the same env: the coarse one cuts a corner and collides) plus an animated
``docs/img/<Env>_tracker.gif`` of the two side by side.

    python scripts/render_gallery.py [--seed 20000] [--out docs/img] [--env ClampPassing ...]
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

os.environ.setdefault("SDL_VIDEODRIVER", "dummy")

import gymnasium as gym
import imageio.v3 as iio
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

import cfbench
from policies.interpolation import upsample

RATES = (2.5, 20.0)
FRAMES_PER_STRIP = 6


def tracker_frames(env_id: str, seed: int, source_hz: float) -> tuple[list[np.ndarray], dict]:
    """Rendered frames of one Tracker episode (what ``cfbench-eval --policy tracker`` runs)."""
    env = gym.make(env_id, render_mode="rgb_array")
    env.reset(seed=seed)
    coarse = env.unwrapped.expert_trajectory().sample(source_hz)
    plan = upsample(coarse[0], coarse[1:], source_hz, env.unwrapped.control_hz)
    frames, info = [env.render()], {}
    for step in range(env.unwrapped.max_episode_steps):
        _, _, terminated, truncated, info = env.step(plan[min(step, len(plan) - 1)])
        frames.append(env.render())
        if terminated or truncated:
            break
    env.close()
    return frames, info


def outcome(info: dict) -> str:
    return "success" if info["is_success"] else ("collision" if info["is_collision"] else "time out")


def views_figure(env_id: str, seed: int, path: Path) -> None:
    env = gym.make(env_id, obs_mode="pixels", render_mode="rgb_array")
    obs, _ = env.reset(seed=seed)
    panels = [("render (rgb_array)", env.render())] + [(f"{v} view 96x96", obs[v]) for v in env.unwrapped.views]
    env.close()
    fig, axes = plt.subplots(1, len(panels), figsize=(3.2 * len(panels), 3.4))
    for ax, (title, image) in zip(np.atleast_1d(axes), panels):
        ax.imshow(image, interpolation="nearest")
        ax.set_title(title, fontsize=10)
        ax.axis("off")
    fig.suptitle(f"{env_id}  (seed {seed})", fontsize=11)
    fig.tight_layout()
    fig.savefig(path, dpi=80, metadata={"Software": None})
    plt.close(fig)


def tracker_figure(env_id: str, seed: int, png: Path, gif: Path) -> None:
    runs = {hz: tracker_frames(env_id, seed, hz) for hz in RATES}
    fig, axes = plt.subplots(len(RATES), FRAMES_PER_STRIP, figsize=(2.1 * FRAMES_PER_STRIP, 2.4 * len(RATES)))
    for row, hz in enumerate(RATES):
        frames, info = runs[hz]
        picks = np.linspace(0, len(frames) - 1, FRAMES_PER_STRIP).round().astype(int)
        for col, index in enumerate(picks):
            ax = axes[row, col]
            ax.imshow(frames[index])
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_title(f"t = {index / 20:.2f} s", fontsize=8)
        axes[row, 0].set_ylabel(f"Tracker from {hz:g} Hz\n{outcome(info)}", fontsize=9)
    fig.suptitle(f"{env_id}: the same env (seed {seed}) followed from 2.5 Hz vs 20 Hz samples", fontsize=10)
    fig.tight_layout()
    fig.savefig(png, dpi=70, metadata={"Software": None})
    plt.close(fig)

    length = max(len(frames) for frames, _ in runs.values())
    side_by_side = [
        np.concatenate([frames[min(i, len(frames) - 1)][::2, ::2] for frames, _ in runs.values()], axis=1)
        for i in range(length)
    ]
    iio.imwrite(gif, np.stack(side_by_side), duration=50, loop=0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seed", type=int, default=20000)
    parser.add_argument("--out", type=Path, default=Path("docs/img"))
    parser.add_argument("--env", nargs="+", default=list(cfbench.ENV_IDS), choices=list(cfbench.ENV_IDS))
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    for name in args.env:
        env_id = cfbench.ENV_IDS[name]
        views_figure(env_id, args.seed, args.out / f"{name}_views.png")
        tracker_figure(env_id, args.seed, args.out / f"{name}_tracker.png", args.out / f"{name}_tracker.gif")
        print(f"wrote {args.out}/{name}_views.png, {name}_tracker.png, {name}_tracker.gif")


if __name__ == "__main__":
    main()
