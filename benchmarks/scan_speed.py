"""Selective scan speed: forward + backward of the reference against the fused CPU path.

Both run side by side in one process on the same inputs (mamba-ssm layouts: u, delta, z
(B, D, L); A (D, N); input-dependent B, C (B, N, L); D and delta_bias; softplus on), and the
ratio is printed per shape. The issue's bar: fast >= 10x the reference. The fused path is also
timed with the zero-order-hold discretisation (``zoh=True``, DiSPo's ``discretization=zoh``)
beside its default Euler one.

``--against REV`` also builds the kernel source of a git revision and times it beside this one:
the scan at DiSPo's training shapes (pretraining and fine-tuning at 8x) and DiSPo's pretraining
steps per second on PassagePassing 2.5 Hz demos (the README's main job).

    python benchmarks/scan_speed.py [--threads 2] [--repeats 5] [--against REV] [--steps 100]
"""

from __future__ import annotations

import argparse
import subprocess
import tempfile
from pathlib import Path

import pandas as pd
import torch

import policies
from cfbench.datasets import load_demos
from cfbench.runner import set_threads
from policies.scan import SOURCE, selective_scan_cpu, selective_scan_ref, using_kernel
from timing import best_ms  # benchmarks/timing.py, beside this script

SHAPES = [(128, 128, 20, 16), (256, 256, 24, 16)]  # (B, D, L, N)
#: DiSPo's scans: batch 64, 128 channels, 16 states; 2 observation + 10 action tokens in
#: pretraining, 2 + 80 when fine-tuning at 8x
DISPO_SHAPES = [(64, 128, 12, 16), (64, 128, 82, 16)]


def inputs(batch: int, dim: int, length: int, n: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)

    def leaf(*shape, scale=1.0):
        return (torch.randn(*shape, generator=g) * scale).requires_grad_()

    return dict(u=leaf(batch, dim, length), delta=leaf(batch, dim, length, scale=0.5),
                A=(-torch.rand(dim, n, generator=g) - 0.1).requires_grad_(), B=leaf(batch, n, length),
                C=leaf(batch, n, length), D=leaf(dim), z=leaf(batch, dim, length), delta_bias=leaf(dim, scale=0.5))


def forward_backward_ms(scan, tensors: dict[str, torch.Tensor], repeats: int, **options) -> float:
    def run():
        for t in tensors.values():
            t.grad = None
        scan(**tensors, delta_softplus=True, **options).sum().backward()

    return best_ms(run, repeats)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--against", metavar="REV", help="also time this git revision's kernel beside this one")
    parser.add_argument("--steps", type=int, default=100, help="DiSPo pretraining steps per measurement (--against)")
    args = parser.parse_args()
    threads = set_threads(args.threads)
    rows = []
    for shape in SHAPES:
        tensors = inputs(*shape)
        reference_ms = forward_backward_ms(selective_scan_ref, tensors, args.repeats)
        fast_ms = forward_backward_ms(selective_scan_cpu, tensors, args.repeats)
        zoh_ms = forward_backward_ms(selective_scan_cpu, tensors, args.repeats, zoh=True)
        rows.append({"B, D, L, N": ", ".join(map(str, shape)), "reference ms": round(reference_ms, 2),
                     "fast ms": round(fast_ms, 2), "speed-up": f"{reference_ms / fast_ms:.1f}x",
                     "fast zoh ms": round(zoh_ms, 2), "zoh / euler": f"{zoh_ms / fast_ms:.2f}x"})
    print(f"selective scan forward+backward, fp32, {threads} torch threads (both paths)")
    print(pd.DataFrame(rows).to_string(index=False))
    if args.against:
        compare_revisions(args.against, args.repeats, args.steps, threads)


def compare_revisions(revision: str, repeats: int, steps: int, threads: int) -> None:
    """This kernel against ``revision``'s, alternating per measurement, on DiSPo's work."""
    source = subprocess.run(["git", "show", f"{revision}:policies/selective_scan.cpp"], check=True,
                            capture_output=True, cwd=SOURCE.parent).stdout
    policy = policies.make("dispo", finetune_steps=0, train_steps=steps, eval_every=steps)
    data = policy.setup(load_demos("PassagePassing", (2.5,), n=90))
    rows = []
    with tempfile.TemporaryDirectory() as build:
        old_source = Path(build) / "selective_scan.cpp"
        old_source.write_bytes(source)

        def timed(measure):  # (revision's, this one's)
            with using_kernel(old_source):
                old = measure()
            return old, measure()

        for shape in DISPO_SHAPES:
            tensors = inputs(*shape)
            old, new = timed(lambda: forward_backward_ms(selective_scan_cpu, tensors, repeats, zoh=True))
            rows.append({"work": f"scan fwd+bwd zoh {shape}", f"{revision} ms": round(old, 2),
                         "this ms": round(new, 2), "speed-up": f"{old / new:.2f}x"})
        old, new = timed(lambda: best_ms(lambda: policy.optimise(data, steps, progress=False), repeats) / steps)
        rows.append({"work": "DiSPo pretraining step", f"{revision} ms": round(old, 1), "this ms": round(new, 1),
                     "speed-up": f"{old / new:.2f}x"})
    print(f"\nthis kernel against {revision}'s, {threads} torch threads")
    print(pd.DataFrame(rows).to_string(index=False))



if __name__ == "__main__":
    main()
