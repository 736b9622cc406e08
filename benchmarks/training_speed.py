"""A policy's training speed in this tree against another git revision, side by side.

The optimiser steps per second of the shared loop on PassagePassing 2.5 Hz demo windows, for
``--policy`` (default DiSPo). For DiSPo, whose pretraining and three fine-tuning rounds are the
README's main job (``cfbench-eval --policy dispo --source-hz 2.5``), also on the 8x fine-tuning
data (windows of 82 tokens: pseudo demos of the untrained model, the same shapes and work as the
real ones). Each tree runs in its own process (a temporary ``git worktree`` of REV),
alternating, ``--rounds`` times; the best of each is kept and the ratio printed. Any change
shows (kernel, wrapper, model, loss, optimiser), whatever the ABI.

    python benchmarks/training_speed.py --against REV [--policy dispo] [--threads 2] [--steps 30] [--rounds 3]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pandas as pd

HERE = Path(__file__).resolve().parent
TREE = HERE.parent


def measure(policy_name: str, steps: int, threads: int) -> dict[str, float]:
    """In the child: ms per optimiser step (best of 2 after a warm-up); DiSPo's also at 8x fine-tuning."""
    sys.path.insert(0, str(HERE))
    import torch
    from timing import best_ms

    import policies
    from cfbench.datasets import load_demos

    torch.set_num_threads(threads)  # directly: where the helper lives differs between revisions
    dataset = load_demos("PassagePassing", (2.5,), n=90)
    policy = policies.make(policy_name, train_steps=steps, eval_every=steps)
    work = {"training step": policy.setup(dataset)}
    if policy_name == "dispo":
        work["fine-tuning step at 8x"] = dispo_finetuning_data(policy, dataset, work["training step"])
    return {name: best_ms(lambda tensors=tensors: policy.optimise(tensors, steps, progress=False), 2) / steps
            for name, tensors in work.items()}


def dispo_finetuning_data(policy, dataset, originals: dict) -> dict:
    """DiSPo's 8x fine-tuning tensors, through the API of the tree the child runs on: methods of
    the policy since policies/dispo/ (free functions of policies/dispo_finetuning.py before)."""
    try:
        from policies.dispo.finetuning import concat_window_tensors
    except ImportError:  # a revision before the package
        from policies.dispo_finetuning import concat_window_tensors, pseudo_demonstrations

        return concat_window_tensors([originals, pseudo_demonstrations(policy, dataset, 8)])
    return concat_window_tensors([originals, policy.pseudo_demonstrations(dataset, 8)])


def run_child(tree: Path, policy_name: str, steps: int, threads: int) -> dict[str, float]:
    env = {**os.environ, "PYTHONPATH": str(tree)}
    command = [sys.executable, str(HERE / "training_speed.py"), "--child", "--policy", policy_name, "--steps",
               str(steps), "--threads", str(threads)]
    done = subprocess.run(command, env=env, cwd=tree, check=True, capture_output=True, text=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--against", metavar="REV", help="git revision to compare with (required)")
    parser.add_argument("--policy", default="dispo")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--steps", type=int, default=30, help="optimiser steps per measurement")
    parser.add_argument("--rounds", type=int, default=3, help="alternating runs of each tree")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure(args.policy, args.steps, args.threads)))
        return
    if not args.against:
        parser.error("--against REV is required")
    with tempfile.TemporaryDirectory() as scratch:
        other = Path(scratch) / "tree"
        subprocess.run(["git", "worktree", "add", "--detach", str(other), args.against], cwd=TREE, check=True,
                       capture_output=True)
        try:
            best: dict[str, dict[str, float]] = {args.against: {}, "this tree": {}}
            for _ in range(args.rounds):
                for label, tree in ((args.against, other), ("this tree", TREE)):
                    for work, ms in run_child(tree, args.policy, args.steps, args.threads).items():
                        best[label][work] = min(ms, best[label].get(work, float("inf")))
        finally:
            subprocess.run(["git", "worktree", "remove", "--force", str(other)], cwd=TREE, check=True)
    rows = [{"work": work, f"{args.against} ms/step": round(best[args.against][work], 1),
             "this tree ms/step": round(best["this tree"][work], 1),
             "speed-up": f"{best[args.against][work] / best['this tree'][work]:.3f}x"} for work in best["this tree"]]
    print(f"{args.policy} training on PassagePassing 2.5 Hz demos, {args.threads} threads, best of {args.rounds} "
          f"alternating runs of {args.steps} steps")
    print(pd.DataFrame(rows).to_string(index=False))


if __name__ == "__main__":
    main()
