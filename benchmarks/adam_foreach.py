"""The shared training loop's AdamW with multi-tensor (``foreach``) updates against the
per-tensor loop, side by side: DiSPo's pretraining on PassagePassing 2.5 Hz demos (the README's
main job), steps per second and the ratio. The two give bit-identical weights
(``scripts/fingerprint.py`` is unchanged by the switch); only the speed differs.

    python benchmarks/adam_foreach.py [--steps 300] [--threads 2]
"""

from __future__ import annotations

import argparse
import tempfile

import torch
from timing import best_ms

import policies
from cfbench.datasets import load_demos
from cfbench.runner import set_threads


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    threads = set_threads(args.threads)
    with tempfile.TemporaryDirectory() as demos:
        dataset = load_demos("PassagePassing", (2.5,), n=90, demos_dir=demos)
    policy = policies.make("dispo", finetune_steps=0, train_steps=args.steps, eval_every=args.steps)
    data = policy.setup(dataset)

    original = torch.optim.AdamW

    def optimise(foreach: bool):
        def adamw(*positional, foreach=None, **keywords):  # the loop's choice replaced by this run's
            return original(*positional, foreach=use_foreach, **keywords)

        use_foreach = foreach

        def run():
            torch.optim.AdamW = adamw
            try:
                policy.optimise(data, args.steps, progress=False)
            finally:
                torch.optim.AdamW = original
        return run

    rates = {}
    for foreach in (False, True):
        rates[foreach] = args.steps / best_ms(optimise(foreach), args.repeats) * 1000
    print(f"DiSPo pretraining, PassagePassing 2.5 Hz, {threads} threads: per-tensor AdamW {rates[False]:.1f} "
          f"steps/s, foreach {rates[True]:.1f} steps/s: {rates[True] / rates[False]:.3f}x")


if __name__ == "__main__":
    main()
