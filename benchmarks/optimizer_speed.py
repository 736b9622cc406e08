"""The shared training loop's optimiser and EMA, side by side: per-tensor loops, multi-tensor
(``foreach``) AdamW with the per-tensor EMA (the loop until 2026-11-29), and the loop's
fused AdamW with a ``foreach`` EMA. DiSPo's pretraining on PassagePassing 2.5 Hz demos (the
README's main job): steps per second, the ratio to the per-tensor loops, and how far each
setup's EMA weights end from the per-tensor ones (fused kernels round differently, so not
bit-identical; foreach AdamW alone is).

    python benchmarks/optimizer_speed.py [--steps 300] [--threads 2]
"""

from __future__ import annotations

import argparse

import pandas as pd
import torch
from timing import best_ms

import policies
import policies.learning as learning
from cfbench.cli import set_threads
from cfbench.datasets import load_demos

#: name -> (AdamW keywords, EMAModel keywords); the loop's own is the last
SETUPS = {"per-tensor": ({"foreach": False}, {"foreach": False}),
          "foreach AdamW": ({"foreach": True}, {"foreach": False}),
          "fused AdamW + foreach EMA (the loop's)": ({"fused": True}, {"foreach": True})}


def train(policy, data, steps: int, initial: dict, adam_options: dict, ema_options: dict) -> torch.Tensor:
    """``steps`` of the shared loop from the ``initial`` weights with the given options; the
    final weights, flattened."""
    original_adam, original_ema = torch.optim.AdamW, learning.EMAModel

    def adamw(*positional, foreach=None, fused=None, **keywords):  # the loop's choice replaced
        return original_adam(*positional, **adam_options, **keywords)

    def ema(*positional, foreach=None, **keywords):
        return original_ema(*positional, **ema_options, **keywords)

    torch.optim.AdamW, learning.EMAModel = adamw, ema
    try:
        policy.model.load_state_dict(initial)
        policy.optimise(data, steps, progress=False)
    finally:
        torch.optim.AdamW, learning.EMAModel = original_adam, original_ema
    return torch.cat([p.detach().flatten() for p in policy.model.parameters()])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    threads = set_threads(args.threads)
    policy = policies.make("dispo", finetune_steps=0, train_steps=args.steps, eval_every=args.steps)
    data = policy.setup(load_demos("PassagePassing", (2.5,), n=90))
    initial = {k: v.clone() for k, v in policy.model.state_dict().items()}
    weights, rates = {}, {}
    for name, (adam_options, ema_options) in SETUPS.items():
        run = lambda adam=adam_options, ema=ema_options: train(policy, data, args.steps, initial, adam, ema)  # noqa: E731
        weights[name] = run()
        rates[name] = args.steps / best_ms(run, args.repeats) * 1000
    baseline = "per-tensor"
    rows = [{"setup": name, "steps/s": round(rate, 1), "speed-up": f"{rate / rates[baseline]:.3f}x",
             "max |weight - per-tensor's|": f"{(weights[name] - weights[baseline]).abs().max():.1e}"}
            for name, rate in rates.items()]
    print(f"DiSPo pretraining, PassagePassing 2.5 Hz, {args.steps} steps, {threads} threads")
    print(pd.DataFrame(rows).to_string(index=False))


if __name__ == "__main__":
    main()
