"""The CUDA scan against the CPU scan on the same inputs: values and gradients (benchmarks/gpu_check.sh).

On CUDA tensors ``policies.ssm.scan.selective_scan_fn`` runs mamba-ssm's kernel when it imports;
this compares its forward and backward with the fused CPU path (and the reference) at D-Ma's and
DiSPo's settings: plain Euler scans, DiSPo's step-scaled softplus delta, and the zero-order hold
(which CUDA tensors run through the reference: mamba-ssm has no such kernel). Exit code 1 if
any difference exceeds the tolerance.

    python benchmarks/scan_check.py [--device cuda] [--tolerance 1e-3]   # --device cpu: reference vs fused
"""

from __future__ import annotations

import argparse
import os

import pandas as pd
import torch

from policies.ssm.scan import BACKEND_VARIABLE, _mamba_kernel, selective_scan_fn

#: (name, keyword arguments beyond the inputs)
CASES = [("Euler (D-Ma)", {}), ("step-scaled (DiSPo)", {"step_scale": 0.125}),
         ("step-scaled, zero-order hold", {"step_scale": 0.125, "zoh": True})]


def inputs(batch=4, dim=32, length=24, n=16) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return {"u": torch.randn(batch, dim, length, generator=g), "delta": torch.randn(batch, dim, length, generator=g),
            "A": -torch.rand(dim, n, generator=g) - 0.5, "B": torch.randn(batch, n, length, generator=g),
            "C": torch.randn(batch, n, length, generator=g), "D": torch.randn(dim, generator=g),
            "z": torch.randn(batch, dim, length, generator=g), "delta_bias": torch.randn(dim, generator=g) * 0.1}


def forward_backward(scan, tensors: dict, device: str, **options) -> tuple[torch.Tensor, dict]:
    leaves = {k: v.clone().to(device).requires_grad_() for k, v in tensors.items()}
    out = scan(**leaves, delta_softplus=True, **options)
    out.square().sum().backward()
    return out.detach().cpu(), {k: v.grad.detach().cpu().clone() for k, v in leaves.items()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--tolerance", type=float, default=1e-3, help="largest relative difference allowed")
    args = parser.parse_args()
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit("no CUDA device: nothing to compare (run on a GPU machine)")
    kernel = "mamba-ssm" if args.device.startswith("cuda") and _mamba_kernel() is not None else "reference"
    os.environ.pop(BACKEND_VARIABLE, None)
    tensors, rows, worst = inputs(), [], 0.0
    for name, options in CASES:
        want_out, want_grads = forward_backward(selective_scan_fn, tensors, "cpu", **options)
        if args.device == "cpu":  # a dry run of the comparison: the reference against the fused path
            os.environ[BACKEND_VARIABLE] = "reference"
        out, grads = forward_backward(selective_scan_fn, tensors, args.device, **options)
        os.environ.pop(BACKEND_VARIABLE, None)
        differences = {"output": out - want_out, **{f"d{k}": grads[k] - want_grads[k] for k in grads}}
        scale = {"output": want_out, **{f"d{k}": want_grads[k] for k in want_grads}}
        relative = {k: (d.abs().max() / scale[k].abs().max().clamp(min=1e-12)).item() for k, d in differences.items()}
        worst = max(worst, *relative.values())
        rows.append({"case": name, "kernel": "reference" if options.get("zoh") else kernel,
                     **{k: f"{v:.1e}" for k, v in relative.items()}})
    print(f"{args.device} scan against the fused CPU scan, relative max difference (tolerance {args.tolerance:g})")
    print(pd.DataFrame(rows).to_string(index=False))
    return int(worst > args.tolerance)


if __name__ == "__main__":
    raise SystemExit(main())
