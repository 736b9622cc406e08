"""DiSPo fine-tuning step: the loss cut to each row's length against the padded batch.

A fine-tuning batch mixes original windows (12 action tokens at 2.5 Hz) with 8x pseudo windows
(73), all padded to 73. ``DiSPo.loss`` runs each length as its own group; the padded reference
runs every row at 73 tokens. Both compute the same loss (tests/test_dispo.py); this times one
optimiser step's forward + backward of each, side by side, default CPU config, and prints the ratio.

    python benchmarks/dispo_finetune_speed.py [--threads 2] [--repeats 10]
"""

from __future__ import annotations

import argparse
import tempfile

import torch
from timing import best_ms  # benchmarks/timing.py, beside this script

import policies
from cfbench.cli import set_threads
from cfbench.datasets import load_demos
from policies.dispo.finetuning import concat_window_tensors


def padded_loss(policy, batch, generator):
    """The loss as the whole padded batch gives it (DiSPo.loss before it cut rows)."""
    features, noisy, steps, target = policy.noised(batch, generator)
    predicted, reconstruction = policy.model.net(noisy, steps, features, batch["step_scale"], reconstruct=True)
    mask = batch["loss_mask"][..., None]
    states = policy.model.obs_encoder.state_normalizer.normalize(batch["state"])
    return (((predicted - target).square() * mask).sum() / (mask.sum() * target.shape[-1])
            + policy.config.obs_loss_weight * (reconstruction - states).square().mean())


def step_ms(loss, policy, batch, repeats: int) -> float:
    return best_ms(lambda: loss(policy, batch, torch.Generator().manual_seed(0)).backward(), repeats)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--repeats", type=int, default=10)
    args = parser.parse_args()
    threads = set_threads(args.threads)
    with tempfile.TemporaryDirectory() as demos:
        dataset = load_demos("PassagePassing", (2.5,), n=10, demos_dir=demos)
    policy = policies.make("dispo", train_steps=1, eval_every=1, finetune_steps=0)
    policy.fit(dataset, progress=False)
    data = concat_window_tensors([policy.prepare(dataset), policy.pseudo_demonstrations(dataset, 8)])
    batch = {k: v[torch.randperm(len(v), generator=torch.Generator().manual_seed(0))[: policy.config.batch_size]]
             for k, v in data.items()}
    policy.model.train()
    grouped = step_ms(type(policy).loss, policy, batch, args.repeats)
    padded = step_ms(padded_loss, policy, batch, args.repeats)
    print(f"DiSPo 8x fine-tuning batch of {policy.config.batch_size}, {threads} threads: padded {padded:.1f} ms, "
          f"cut to length {grouped:.1f} ms per forward + backward ({padded / grouped:.2f}x)")


if __name__ == "__main__":
    main()
