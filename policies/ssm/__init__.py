"""Selective state-space layers: Mamba on cfbench's own selective scan, with step scaling.

- ``scan``: the selective scan, mamba-ssm's ``selective_scan_fn`` signature and semantics, on
  a pure-PyTorch reference, a fused C++ CPU kernel (``selective_scan.cpp``, compiled on first
  use) or mamba-ssm's CUDA kernel; optionally zero-order hold instead of Euler's B̄ = ΔB;
- ``mamba``: the Mamba mixer and block on that scan (D-Ma's blocks, and DiSPo's without conv1d).

Step scaling is what DiSPo adds to the SSM: each token's step size is stretched by a factor r,
Δ = r · softplus(dt + bias), so one model runs at any rate: r = 1 at the rate it learned,
r = 1/8 for tokens eight times denser, and r = 0 for padding no time passes over.
"""
