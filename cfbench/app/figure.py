"""``cfbench-figure``: the paper's Fig. 6 for any policies: where each one goes from one start.

    cfbench-figure --env PassagePassing --source-hz 2.5 --policies tracker dp-t dispo --seed 20000

One PNG, one panel per policy: the scene where that policy's episode ended, the expert's path
(thin), its samples at the demo rate (the dots a coarse demo holds: hollow circles), and the
targets the policy actually executed at the control rate (small dots), coloured by time, the
last one crossed. Learned policies come from the checkpoint cache and are trained first
if missing, as ``cfbench-eval`` does. A policy is named by its label, as on the leaderboard and
in its ``--compare``: ``dispo`` or ``'dispo (paper)'`` (policy, then the variant in brackets).

Each panel is one evaluator episode of that seed (``cfbench.evaluate``, one env): the episode a
record holds for the seed, up to the float rounding of batched inference.
"""

from __future__ import annotations

import io
import os
from pathlib import Path

os.environ.setdefault("SDL_VIDEODRIVER", "dummy")

import gymnasium as gym
import matplotlib
import numpy as np

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from cfbench import paths
from cfbench.app.commands import split_label
from cfbench.app.run import trained_policy
from cfbench.app.spec import RunSpec, Workspace
from cfbench.cli import Parser, command, non_negative_int, positive_int, set_threads
from cfbench.envs import ENV_IDS, resolve_env, short_name
from cfbench.evaluate import evaluate
from cfbench.files import atomic_write_bytes
from cfbench.protocol import N_DEMOS, TARGET_HZ, TEST_SEEDS, parse_rates, rates_label
from cfbench.videos import final_scene, outcome_name

#: the margin around the drawn paths, as a share of their extent
MARGIN_FRACTION = 0.08
RATE_MARKERS = ("o", "s", "D")


def rollout(spec: RunSpec, workspace: Workspace) -> dict:
    """A run's one test episode: the evaluator's row with its executed targets."""
    policy, _, reference_hz = trained_policy(spec, workspace)
    outcome = evaluate(policy, spec.env_id, reference_hz, target_hz=spec.target_hz, seeds=[spec.test_seeds[0]],
                       num_envs=1, progress=False, traces=True)
    return outcome["episodes"][0]


def draw(env_id: str, rates: tuple[float, ...], seed: int, episodes: dict[str, dict]) -> bytes:
    """The PNG: the scene, the demo-rate samples and each policy's executed targets."""
    env = gym.make(env_id, render_mode="rgb_array")
    env.reset(seed=seed)
    extent = env.unwrapped.render_extent()
    expert = env.unwrapped.expert_trajectory()
    samples = {rate: expert.sample(rate)[:, :2] for rate in rates}
    env.close()

    drawn = np.vstack([expert.poses[:, :2], *(row["actions"][:, :2] for row in episodes.values()),
                       *(row["final_pose"][None, :2] for row in episodes.values())])
    low, high = drawn.min(0), drawn.max(0)
    half = (high - low).max() / 2 * (1 + 2 * MARGIN_FRACTION)
    centre = (low + high) / 2
    fig, axes = plt.subplots(1, len(episodes), figsize=(3.6 * len(episodes), 3.9), squeeze=False)
    for ax, (label, row) in zip(axes[0], episodes.items()):
        ax.imshow(final_scene(env_id, TARGET_HZ, row), extent=extent, interpolation="bilinear")
        ax.plot(*expert.poses[:, :2].T, color="0.45", linewidth=0.8, label="expert path")
        for (rate, points), marker in zip(samples.items(), RATE_MARKERS):
            ax.scatter(*points.T, s=46, marker=marker, facecolors="none", edgecolors="black", linewidths=1.1,
                       label=f"{rate:g} Hz demo samples", zorder=3)
        targets = row["actions"][:, :2]
        ax.scatter(*targets.T, s=7, c=np.arange(len(targets)), cmap="plasma", zorder=4,
                   label=f"executed {TARGET_HZ:g} Hz targets")
        ax.scatter(*targets[-1], s=70, marker="x", color="crimson", linewidths=2, zorder=5)
        ax.set_xlim(centre[0] - half, centre[0] + half)
        ax.set_ylim(centre[1] - half, centre[1] + half)
        ax.set_xticks([])
        ax.set_yticks([])
        result = outcome_name(row["success"], row["collision"])
        ax.set_title(f"{label}: {result} ({row['steps'] / TARGET_HZ:.1f} s)", fontsize=10)
    handles, names = axes[0, 0].get_legend_handles_labels()
    wide = len(episodes) >= 3  # room for the legend on one line
    fig.legend(handles, names, loc="lower center", ncol=len(names) if wide else 2, fontsize=8, frameon=False)
    fig.suptitle(f"{short_name(env_id)}, seed {seed}\npolicies trained on {rates_label(rates)} Hz demos, "
                 f"run at {TARGET_HZ:g} Hz", fontsize=10)
    fig.tight_layout(rect=(0, 0.06 if wide else 0.12, 1, 1))
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110, metadata={"Software": None})
    plt.close(fig)
    return buffer.getvalue()


@command("cfbench-figure")
def main(argv: list[str]) -> None:
    parser = Parser("cfbench-figure", __doc__.split("\n")[0].split(": ", 1)[1])
    parser.add_argument("--env", default="PassagePassing", help=f"one of {', '.join(ENV_IDS)}")
    parser.add_argument("--source-hz", default="2.5", help="demo rates the policies learn from; '2.5+5' = mixed")
    parser.add_argument("--policies", nargs="+", default=["tracker", "dp-t", "dispo"],
                        help="policy labels, POLICY or 'POLICY (VARIANT)', one panel each")
    parser.add_argument("--seed", type=non_negative_int, default=TEST_SEEDS[0],
                        help="the env (test seed) to roll out on")
    parser.add_argument("--out", type=Path, default=None,
                        help="the PNG (default: figures/<Env>__<rates>hz__seed<k>.png in the cfbench home)")
    parser.add_argument("--n-demos", type=positive_int, default=N_DEMOS, help="training demos per dataset")
    parser.add_argument("--demos-dir", type=Path, default=paths.demos_dir())
    parser.add_argument("--checkpoints-dir", type=Path, default=paths.checkpoints_dir())
    parser.add_argument("--threads", type=positive_int, default=None,
                        help="torch threads (default: the cores nothing else is busy on at the start)")
    args = parser.parse_args(argv)
    env_id = resolve_env(args.env)
    rates = parse_rates(args.source_hz)
    # every panel is a run cfbench-eval could make, checked before anything trains
    specs = {}
    for label in args.policies:
        policy, variant = split_label(label)
        specs[label] = RunSpec(policy, env_id, rates, variant, test_seeds=(args.seed, args.seed + 1),
                               n_demos=args.n_demos)
    workspace = Workspace(args.demos_dir, args.checkpoints_dir)
    set_threads(args.threads)
    episodes = {label: rollout(spec, workspace) for label, spec in specs.items()}
    out = args.out or paths.home() / "figures" / f"{short_name(env_id)}__{rates_label(rates)}hz__seed{args.seed}.png"
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(out, draw(env_id, rates, args.seed, episodes))
    print(f"wrote {paths.shown(out)}")
