"""The selective scan of Mamba, with mamba-ssm's ``selective_scan_fn`` signature and semantics.

Three implementations behind one function, chosen by the tensors' device:

- ``selective_scan_ref``: pure PyTorch, readable, the ground truth of the tests;
- ``selective_scan_cpu``, the fused CPU path (``selective_scan.cpp``: forward and hand-written
  backward in C++ with OpenMP on torch's own thread team, compiled on first use with the
  machine's g++ and called through ctypes); the default on CPU, falling back to the reference
  with a one-time warning if it cannot be built;
- mamba-ssm's CUDA kernel for CUDA tensors when ``mamba_ssm`` imports (``pip install cfbench[cuda]``).

DiSPo's step scaling, delta = r * softplus(dt + bias), is ``step_scale=r`` (with
``delta_softplus=True``): the fused CPU path applies it inside the kernel; the reference and
CUDA paths compute it first with ``scaled_delta`` and scan the result without softplus.

Discretisation: mamba-ssm's kernels use B̄ = ΔB (Euler); ``zoh=True`` gives the paper's Eq. 1,
zero-order hold, B̄ = (exp(ΔA) - 1) / A · B, under which k steps of Δ/k with a held input equal
one step of Δ (what lets a step scale r split a step exactly). mamba-ssm has no ZOH kernel, so
CUDA tensors with ``zoh`` take the reference.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import platform
import subprocess
import tempfile
import threading
import warnings
from pathlib import Path

import torch
import torch.nn.functional as F

SOURCE = Path(__file__).with_name("selective_scan.cpp")
COMPILE_FLAGS = ("-O3", "-march=native", "-mprefer-vector-width=512", "-ffast-math", "-fopenmp", "-fPIC", "-shared",
                 "-std=c++17")
#: "auto" (fast path where possible), "reference" or "fast" (error if it cannot be used)
BACKEND_VARIABLE = "CFBENCH_SCAN"


def selective_scan_ref(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False,
                       return_last_state=False, zoh=False, step_scale=None):
    """mamba-ssm's reference semantics, computed in float32 (float64 stays float64).

    u, delta, z: (batch, dim, L); A: (dim, N); B, C: (dim, N), (batch, N, L) or
    (batch, groups, N, L); D, delta_bias: (dim,); step_scale: see ``selective_scan_fn``.
    Returns out (batch, dim, L) in u's dtype, and the last state (batch, dim, N) when
    ``return_last_state``.
    """
    step_scale = _step_scale_rows(step_scale, delta_softplus, u)
    if step_scale is not None:
        delta, delta_bias, delta_softplus = scaled_delta(delta, step_scale, delta_bias), None, False
    dtype_in = u.dtype
    compute = torch.float64 if dtype_in == torch.float64 else torch.float32
    u, delta, A, B, C = (x.to(compute) for x in (u, delta, A, B, C))
    if delta_bias is not None:
        delta = delta + delta_bias.to(compute)[:, None]
    if delta_softplus:
        delta = F.softplus(delta)
    batch, dim, length = u.shape
    B, C = (_per_channel(x, dim, length) for x in (B, C))  # (batch or 1, dim, N, L)
    delta_A = torch.einsum("bdl,dn->bdln", delta, A)
    decay = torch.exp(delta_A)
    hold = torch.expm1(delta_A) / A[:, None] if zoh else delta[..., None]  # B̄ / B: ZOH, or Euler's Δ
    drive = hold * torch.einsum("bdnl,bdl->bdln", B.expand(batch, -1, -1, -1), u)
    state = u.new_zeros(batch, dim, A.shape[1])
    outputs = []
    for t in range(length):
        state = decay[:, :, t] * state + drive[:, :, t]
        outputs.append(torch.einsum("bdn,bdn->bd", state, C[..., t].expand(batch, -1, -1)))
    out = torch.stack(outputs, dim=2)
    if D is not None:
        out = out + u * D.to(compute)[:, None]
    if z is not None:
        out = out * F.silu(z.to(compute))
    out = out.to(dtype_in)
    return (out, state) if return_last_state else out


def _per_channel(x: torch.Tensor, dim: int, length: int) -> torch.Tensor:
    """B or C as (batch or 1, dim, N, L): each channel's own input matrix."""
    if x.dim() == 2:  # (dim, N): the same for every step
        return x[None, :, :, None].expand(-1, -1, -1, length)
    if x.dim() == 3:  # (batch, N, L): one group
        x = x[:, None]
    return x.repeat_interleave(dim // x.shape[1], dim=1)


def selective_scan_fn(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False,
                      return_last_state=False, zoh=False, step_scale=None):
    """Selective scan on the best implementation for the tensors' device (see module doc).

    step_scale r (DiSPo): None, a number, (L,), (batch, L) or (batch, 1, L) of factors >= 0;
    the step size becomes r * softplus(delta + delta_bias) (needs ``delta_softplus=True``).
    r is data here, not a parameter: it gets no gradient.
    """
    _check(u, delta, A, B, C, D, z, delta_bias)
    step_scale = _step_scale_rows(step_scale, delta_softplus, u)
    args = (u, delta, A, B, C, D, z, delta_bias, delta_softplus, return_last_state, zoh, step_scale)
    backend = _backend()
    if backend == "reference":
        return selective_scan_ref(*args)
    if u.is_cuda:
        cuda_scan = _mamba_kernel()
        if cuda_scan is not None and not zoh:
            if step_scale is not None:  # mamba-ssm's kernel has no step scale: scale first
                args = (u, scaled_delta(delta, step_scale, delta_bias), A, B, C, D, z, None, False)
            return cuda_scan(*args[:9], return_last_state=return_last_state)
        if backend == "fast":
            raise RuntimeError("mamba_ssm is not installed: pip install cfbench[cuda]")
        return selective_scan_ref(*args)
    library = _fast_library(required=backend == "fast")
    return selective_scan_ref(*args) if library is None else selective_scan_cpu(*args)


def _backend() -> str:
    """The scan implementation ``CFBENCH_SCAN`` asks for, checked."""
    backend = os.environ.get(BACKEND_VARIABLE, "auto")
    if backend not in ("auto", "reference", "fast"):
        raise ValueError(f"{BACKEND_VARIABLE} must be 'auto', 'reference' or 'fast', got {backend!r}")
    return backend


def scaled_delta(dt: torch.Tensor, r: torch.Tensor | float, bias: torch.Tensor | None = None) -> torch.Tensor:
    """delta = r * softplus(dt + bias): the step size stretched per token by the factor r.

    dt: (batch, dim, L); bias: (dim,); r: a number, (L,), (batch, L) or (batch, 1, L). With r = 1
    the scan equals the unscaled one; r < 1 makes finer steps (e.g. 2.5 / 20 for 20 Hz actions
    from a 2.5 Hz model). r = 0 leaves the state untouched: a padding token is invisible to
    the tokens around it, in either scan direction. Pass the result with ``delta_softplus=False``.
    """
    if bias is not None:
        dt = dt + bias[:, None]
    return _as_rows(r, dt)[:, None, :] * F.softplus(dt)


def _as_rows(r, x: torch.Tensor) -> torch.Tensor:
    """Step-scale factors r as (batch, L) rows in the dtype of x (batch, dim, L), checked."""
    batch, _, length = x.shape
    r = torch.as_tensor(r, dtype=x.dtype, device=x.device)
    if r.dim() == 3 and r.shape[1] == 1:
        r = r[:, 0]
    if r.dim() > 2 or (r.dim() >= 1 and r.shape[-1] != length) or (r.dim() == 2 and r.shape[0] not in (1, batch)):
        raise ValueError(f"step_scale must be a number, (L,), (batch, L) or (batch, 1, L) with batch={batch}, "
                         f"L={length}; got {tuple(r.shape)}")
    if (r < 0).any():
        raise ValueError("step-scale factors r must be >= 0 (0: a padding token no time passes over)")
    return r.expand(batch, length)


def _step_scale_rows(r, delta_softplus: bool, u: torch.Tensor) -> torch.Tensor | None:
    """``step_scale`` as contiguous (batch, L) rows without gradient, checked; None stays None."""
    if r is None:
        return None
    if not delta_softplus:
        raise ValueError("step_scale scales softplus(delta + delta_bias): pass delta_softplus=True")
    return _as_rows(r, u).detach().contiguous()


def _check(u, delta, A, B, C, D, z, delta_bias) -> None:
    if u.dim() != 3 or delta.shape != u.shape:
        raise ValueError(f"u and delta must both be (batch, dim, L); got {tuple(u.shape)} and {tuple(delta.shape)}")
    batch, dim, length = u.shape
    if A.dim() != 2 or A.shape[0] != dim or A.is_complex():
        raise ValueError(f"A must be a real (dim={dim}, N) tensor; got {tuple(A.shape)} {A.dtype}")
    n = A.shape[1]
    for name, x in (("B", B), ("C", C)):
        valid = (x.shape == (dim, n) or x.shape == (batch, n, length)
                 or (x.dim() == 4 and x.shape[0] == batch and x.shape[2:] == (n, length)
                     and dim % x.shape[1] == 0))
        if not valid:
            raise ValueError(f"{name} must be (dim, N), (batch, N, L) or (batch, groups, N, L) with "
                             f"dim={dim}, N={n}, L={length}, groups dividing dim; got {tuple(x.shape)}")
    for name, x in (("D", D), ("delta_bias", delta_bias)):
        if x is not None and x.shape != (dim,):
            raise ValueError(f"{name} must be ({dim},); got {tuple(x.shape)}")
    if z is not None and z.shape != u.shape:
        raise ValueError(f"z must be shaped like u {tuple(u.shape)}; got {tuple(z.shape)}")


# ------------------------------------------------------------------------- mamba-ssm on CUDA
def _mamba_kernel():
    try:
        from mamba_ssm.ops.selective_scan_interface import selective_scan_fn as kernel
    except ImportError:
        return None
    return kernel


# --------------------------------------------------------------------------- fused CPU path
_library_lock = threading.Lock()
_library: ctypes.CDLL | None = None
_library_error: str | None = None


def _fast_library(required: bool = False) -> ctypes.CDLL | None:
    """The compiled kernel, built once per machine and source; None (warned once) if it cannot be."""
    global _library, _library_error
    with _library_lock:
        if _library is None and _library_error is None:
            try:
                _library = _load_library()
            except (OSError, subprocess.CalledProcessError) as error:
                detail = getattr(error, "stderr", "") or error
                _library_error = f"{type(error).__name__}: {detail}"
                if not required:
                    warnings.warn(f"fast CPU selective scan unavailable, using the slow reference ({_library_error})",
                                  RuntimeWarning, stacklevel=3)
    if _library is None and required:
        raise RuntimeError(f"fast CPU selective scan unavailable: {_library_error}")
    return _library


def _load_library() -> ctypes.CDLL:
    source = SOURCE.read_bytes()
    cpu = next((line for line in _cpuinfo() if line.startswith("flags")), platform.processor())
    key = hashlib.sha256(source + " ".join(COMPILE_FLAGS).encode() + cpu.encode()).hexdigest()[:16]
    cache = Path(os.environ.get("CFBENCH_CACHE", Path.home() / ".cache" / "cfbench"))
    target = cache / f"selective_scan-{key}.so"
    if not target.exists():
        cache.mkdir(parents=True, exist_ok=True)
        compiler = os.environ.get("CXX", "g++")
        with tempfile.TemporaryDirectory(dir=cache) as build:
            built = Path(build) / target.name
            subprocess.run([compiler, *COMPILE_FLAGS, str(SOURCE), "-o", str(built)], check=True,
                           capture_output=True, text=True)
            os.replace(built, target)  # atomic: a concurrent build never sees half a library
    library = ctypes.CDLL(str(target))
    sizes, pointers = [ctypes.c_int64] * 4, [ctypes.c_void_p] * 9  # (dim, L, N, groups), the inputs
    for suffix in ("f32", "f64"):
        getattr(library, f"scan_forward_{suffix}").argtypes = (
            [ctypes.c_int64] + sizes + pointers + [ctypes.c_int] * 3 + [ctypes.c_void_p] * 2)
        getattr(library, f"scan_backward_{suffix}").argtypes = (
            [ctypes.c_int64] * 2 + sizes + pointers + [ctypes.c_int] * 3 + [ctypes.c_void_p] * 9)
    return library


def _cpuinfo() -> list[str]:
    try:
        return Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return []


def _backward_parts(batch: int) -> int:
    """Batch slices of the backward pass, one per torch thread (each keeps its own partial sums)."""
    return max(1, min(torch.get_num_threads(), batch))


def _pointer(x: torch.Tensor | None):
    return None if x is None else x.data_ptr()


class _FusedScan(torch.autograd.Function):
    """Fused forward/backward on the kernel's channels-last layouts: u, delta, z (batch, L, dim);
    A (N, dim); B, C (batch, groups, L, N); step scale (batch, L); all contiguous. Returns out
    (batch, L, dim) and the last state (batch, N, dim). ``reverse_half``: the second half of the
    groups scans backward in time."""

    @staticmethod
    def forward(ctx, library, u, delta, A, B, C, D, z, delta_bias, step_scale, delta_softplus, zoh,
                reverse_half=False):
        suffix = "f64" if u.dtype == torch.float64 else "f32"
        batch, length, dim = u.shape
        sizes = (dim, length, A.shape[0], B.shape[1])
        tensors = (u, delta, A, B, C, D, z, delta_bias, step_scale)
        out = torch.empty_like(u)
        last_state = u.new_empty(batch, A.shape[0], dim)
        flags = (int(delta_softplus), int(zoh), int(reverse_half))
        getattr(library, f"scan_forward_{suffix}")(batch, *sizes, *map(_pointer, tensors), *flags, out.data_ptr(),
                                                   last_state.data_ptr())
        ctx.save_for_backward(*tensors)
        ctx.library, ctx.suffix, ctx.sizes, ctx.flags = library, suffix, sizes, flags
        ctx.mark_non_differentiable(last_state)
        return out, last_state

    @staticmethod
    def backward(ctx, grad_out, _grad_last_state):
        u, delta, A, B, C, D, z, delta_bias, step_scale = ctx.saved_tensors
        grad_out = grad_out.contiguous()
        parts = _backward_parts(u.shape[0])
        dim = u.shape[2]
        grad_u, grad_delta = torch.empty_like(u), torch.empty_like(delta)
        grad_B, grad_C = torch.zeros_like(B), torch.zeros_like(C)
        grad_z = torch.empty_like(z) if z is not None else None
        # one partial sum over the batch per part, reduced below
        grad_A = A.new_empty(parts, *A.shape)
        grad_D = A.new_empty(parts, dim) if D is not None else None
        grad_bias = A.new_empty(parts, dim) if delta_bias is not None else None
        getattr(ctx.library, f"scan_backward_{ctx.suffix}")(
            u.shape[0], parts, *ctx.sizes, *map(_pointer, (u, delta, A, B, C, D, z, delta_bias, step_scale)),
            *ctx.flags, grad_out.data_ptr(), grad_u.data_ptr(), grad_delta.data_ptr(), grad_A.data_ptr(),
            grad_B.data_ptr(), grad_C.data_ptr(), _pointer(grad_D), _pointer(grad_z), _pointer(grad_bias))
        total = lambda x: None if x is None else x.sum(0)  # noqa: E731
        return (None, grad_u, grad_delta, total(grad_A), grad_B, grad_C, total(grad_D), grad_z, total(grad_bias),
                None, None, None, None)


def selective_scan_cpu(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False,
                       return_last_state=False, zoh=False, step_scale=None):
    """The fused CPU path (an error if it cannot be built); float64 stays float64, else float32."""
    _check(u, delta, A, B, C, D, z, delta_bias)
    step_scale = _step_scale_rows(step_scale, delta_softplus, u)
    library = _fast_library(required=True)
    dtype_in = u.dtype
    compute = torch.float64 if dtype_in == torch.float64 else torch.float32
    batch, dim, length = u.shape

    def input_matrix(x):  # B or C -> (batch, groups, L, N)
        x = x.to(compute)
        if x.dim() == 2:  # (dim, N): a fixed matrix per channel
            return x[None, :, None, :].expand(batch, dim, length, x.shape[1]).contiguous()
        if x.dim() == 3:
            x = x[:, None]
        return x.transpose(2, 3).contiguous()

    def channels_last(x):  # (batch, dim, L) -> (batch, L, dim)
        return None if x is None else x.to(compute).transpose(1, 2).contiguous()

    def vector(x):
        return None if x is None else x.to(compute).contiguous()

    out, last_state = _FusedScan.apply(library, channels_last(u), channels_last(delta), A.to(compute).T.contiguous(),
                                       input_matrix(B), input_matrix(C), vector(D), channels_last(z),
                                       vector(delta_bias), vector(step_scale), bool(delta_softplus), bool(zoh))
    out = out.transpose(1, 2).to(dtype_in)
    return (out, last_state.transpose(1, 2)) if return_last_state else out


def selective_scan_bidirectional(u, delta, A, B, C, D, z, delta_bias, zoh=False, step_scale=None):
    """A bidirectional layer's two scans as one: the first half of the channels scans forward in
    time, the second half backward, every token with its own step scale r in both; delta always
    through softplus, Δ = r · softplus(delta + delta_bias). Channels-last layouts, as the layer
    computes them: u, delta, z (batch, L, 2 dim); A (2 dim, N); B, C (batch, 2, L, N) (one
    group per direction); D, delta_bias (2 dim,); step_scale None, a number, (L,) or (batch, L).
    Returns (batch, L, 2 dim), both halves in time order: what ``selective_scan_fn`` gives for
    the first half and, on flipped sequences (flipped back), for the second. On CPU one fused
    kernel call, no flipped or transposed copies; elsewhere those two calls."""
    batch, length, channels = u.shape
    if (channels % 2 or delta.shape != u.shape or z.shape != u.shape or A.shape[0] != channels
            or B.shape != (batch, 2, length, A.shape[1]) or C.shape != B.shape):
        raise ValueError(f"bidirectional scan: u, delta, z (batch, L, 2 dim), A (2 dim, N), B, C (batch, 2, L, N); "
                         f"got u {tuple(u.shape)}, delta {tuple(delta.shape)}, z {tuple(z.shape)}, A {tuple(A.shape)}, "
                         f"B {tuple(B.shape)}, C {tuple(C.shape)}")
    as_rows = None if step_scale is None else _step_scale_rows(step_scale, True, u.transpose(1, 2))
    backend = _backend()
    library = None if u.is_cuda or backend == "reference" else _fast_library(required=backend == "fast")
    if library is None:
        return _bidirectional_by_halves(u, delta, A, B, C, D, z, delta_bias, zoh, as_rows)
    compute = torch.float64 if u.dtype == torch.float64 else torch.float32
    contiguous = lambda x: None if x is None else x.to(compute).contiguous()  # noqa: E731
    out, _ = _FusedScan.apply(library, contiguous(u), contiguous(delta), contiguous(A.T), contiguous(B),
                              contiguous(C), contiguous(D), contiguous(z), contiguous(delta_bias),
                              contiguous(as_rows), True, bool(zoh), True)
    return out.to(u.dtype)


def _bidirectional_by_halves(u, delta, A, B, C, D, z, delta_bias, zoh, step_scale):
    """The bidirectional scan as two ``selective_scan_fn`` calls (CUDA, the reference backend)."""
    half = u.shape[2] // 2
    outputs = []
    for direction, channels in enumerate((slice(0, half), slice(half, None))):
        def in_time(x, reverse=direction == 1):  # scan order
            return x.flip(-1) if reverse else x

        def per_channel(x, channels=channels):  # this direction's (batch, dim, L)
            return None if x is None else in_time(x[..., channels].transpose(1, 2))

        out = selective_scan_fn(per_channel(u), per_channel(delta), A[channels],
                                in_time(B[:, direction].transpose(1, 2)), in_time(C[:, direction].transpose(1, 2)),
                                None if D is None else D[channels], per_channel(z),
                                None if delta_bias is None else delta_bias[channels], delta_softplus=True, zoh=zoh,
                                step_scale=None if step_scale is None else in_time(step_scale))
        outputs.append(in_time(out).transpose(1, 2))
    return torch.cat(outputs, dim=2)
