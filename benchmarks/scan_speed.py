"""Selective scan speed: forward + backward of the reference against the fused CPU path.

Both run side by side in one process on the same inputs (mamba-ssm layouts: u, delta, z
(B, D, L); A (D, N); input-dependent B, C (B, N, L); D and delta_bias; softplus on), and the
ratio is printed per shape. The issue's bar: fast >= 10x the reference. The fused path is also
timed with the zero-order-hold discretisation (``zoh=True``, DiSPo's ``discretization=zoh``)
beside its default Euler one.

    python benchmarks/scan_speed.py [--threads 2] [--repeats 5]
"""

from __future__ import annotations

import argparse

import pandas as pd
import torch
from timing import best_ms  # benchmarks/timing.py, beside this script

from cfbench.cli import set_threads
from policies.ssm.scan import selective_scan_cpu, selective_scan_ref

SHAPES = [(128, 128, 20, 16), (256, 256, 24, 16)]  # (B, D, L, N)


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


if __name__ == "__main__":
    main()
