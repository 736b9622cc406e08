"""Selective scan: the fused CPU path against the reference, gradients, step scaling."""

from __future__ import annotations

import os
import shutil

import pytest
import torch

from policies.ssm import scan
from policies.ssm.scan import scaled_delta, selective_scan_fn, selective_scan_ref

RTOL, ATOL = 6e-4, 2e-3  # mamba-ssm's own fp32 tolerances
#: the fused path is built with the machine's C++ compiler; without one only the fallback is testable
needs_compiler = pytest.mark.skipif(shutil.which(os.environ.get("CXX", "g++")) is None, reason="no C++ compiler")


def make_inputs(batch, dim, length, n, *, b_shape="variable", groups=1, with_z=True, with_bias=True,
                dtype=torch.float32, seed=0):
    g = torch.Generator().manual_seed(seed)

    def rand(*shape, scale=1.0):
        return (torch.randn(*shape, generator=g, dtype=dtype) * scale).requires_grad_()

    shapes = {"fixed": (dim, n), "variable": (batch, n, length), "grouped": (batch, groups, n, length)}
    return dict(
        u=rand(batch, dim, length),
        delta=rand(batch, dim, length, scale=0.5),
        A=(-torch.rand(dim, n, generator=g, dtype=dtype) * 2 - 0.1).requires_grad_(),
        B=rand(*shapes[b_shape]),
        C=rand(*shapes[b_shape]),
        D=rand(dim),
        z=rand(batch, dim, length) if with_z else None,
        delta_bias=rand(dim, scale=0.5) if with_bias else None,
    )


fused = scan.selective_scan_cpu


def outputs_and_grads(function, inputs, softplus, zoh=False):
    leaves = {k: v for k, v in inputs.items() if v is not None}
    out, last = function(**inputs, delta_softplus=softplus, return_last_state=True, zoh=zoh)
    weights = torch.randn(out.shape, generator=torch.Generator().manual_seed(1), dtype=out.dtype)
    grads = torch.autograd.grad((out * weights).sum(), list(leaves.values()))
    return out, last, dict(zip(leaves, grads))


CASES = [
    # batch, dim, length, n, B/C form, groups, z, delta_bias, softplus
    (2, 4, 8, 4, "variable", 1, True, True, True),
    (1, 3, 1, 1, "variable", 1, False, False, False),  # L = 1, N = 1, batch 1
    (3, 5, 7, 16, "variable", 1, True, False, True),  # odd D
    (2, 6, 5, 3, "grouped", 3, False, True, True),
    (4, 7, 9, 2, "fixed", 1, True, True, False),
    (1, 1, 12, 5, "variable", 1, False, True, True),
    (5, 8, 20, 16, "grouped", 2, True, True, True),
    (2, 260, 6, 4, "variable", 1, True, True, True),  # blocks of 128 + 128 + 4 channels
]


@needs_compiler
@pytest.mark.parametrize("zoh", [False, True], ids=["euler", "zoh"])
@pytest.mark.parametrize("batch,dim,length,n,b_shape,groups,with_z,with_bias,softplus", CASES)
def test_fast_path_matches_reference_values_and_all_gradients(batch, dim, length, n, b_shape, groups, with_z,
                                                              with_bias, softplus, zoh):
    inputs = make_inputs(batch, dim, length, n, b_shape=b_shape, groups=groups, with_z=with_z, with_bias=with_bias)
    ref_out, ref_last, ref_grads = outputs_and_grads(selective_scan_ref, inputs, softplus, zoh)
    out, last, grads = outputs_and_grads(fused, inputs, softplus, zoh)
    torch.testing.assert_close(out, ref_out, rtol=RTOL, atol=ATOL)
    torch.testing.assert_close(last, ref_last, rtol=RTOL, atol=ATOL)
    assert grads.keys() == ref_grads.keys()
    for name in grads:
        torch.testing.assert_close(grads[name], ref_grads[name], rtol=RTOL, atol=ATOL,
                                   msg=lambda m, name=name: f"{name}: {m}")


@needs_compiler
@pytest.mark.parametrize("zoh", [False, True], ids=["euler", "zoh"])
@pytest.mark.parametrize("b_shape,groups", [("variable", 1), ("grouped", 2), ("fixed", 1)])
def test_fast_path_gradcheck_float64(b_shape, groups, zoh):
    inputs = make_inputs(2, 4, 5, 3, b_shape=b_shape, groups=groups, dtype=torch.float64)
    names = list(inputs)

    def function(*tensors):
        return fused(**dict(zip(names, tensors)), delta_softplus=True, zoh=zoh)

    assert torch.autograd.gradcheck(function, tuple(inputs.values()), eps=1e-6, atol=1e-5)


def test_scaled_delta_with_r_one_equals_unscaled_scan():
    inputs = make_inputs(2, 4, 6, 3)
    dt, bias = inputs.pop("delta"), inputs.pop("delta_bias")
    unscaled = selective_scan_fn(**inputs, delta=dt, delta_bias=bias, delta_softplus=True)
    scaled = selective_scan_fn(**inputs, delta=scaled_delta(dt, 1.0, bias), delta_softplus=False)
    torch.testing.assert_close(scaled, unscaled)
    torch.testing.assert_close(scaled_delta(dt, torch.full((6,), 0.125), bias), 0.125 * scaled_delta(dt, 1.0, bias))


def test_scaled_delta_rejects_negative_r():
    with pytest.raises(ValueError, match=">= 0"):
        scaled_delta(torch.zeros(1, 2, 3), torch.tensor([1.0, -0.5, 1.0]))


STEP_SCALES = {"number": 0.125, "per token": torch.tensor([1.0, 0.5, 0.0, 0.125, 2.0, 0.25]),
               "per row": torch.tensor([[1.0, 0.5, 0.0, 0.125, 2.0, 0.25], [0.0, 0.0, 1.0, 1.0, 0.5, 0.5]])}


@pytest.mark.parametrize("zoh", [False, True], ids=["euler", "zoh"])
@pytest.mark.parametrize("function", [selective_scan_ref, pytest.param(fused, marks=needs_compiler)],
                         ids=["reference", "fused"])
@pytest.mark.parametrize("r", STEP_SCALES.values(), ids=STEP_SCALES.keys())
def test_step_scale_equals_scaling_delta_first(r, function, zoh):
    """step_scale=r (in the kernel on the fused path) = scanning r * softplus(dt + bias):
    values and the gradients of every input, r = 0 padding included."""
    inputs = make_inputs(2, 4, 6, 3)
    dt, bias = inputs.pop("delta"), inputs.pop("delta_bias")
    leaves = [*(v for v in inputs.values() if v is not None), dt, bias]
    weights = torch.randn(2, 4, 6, generator=torch.Generator().manual_seed(1))

    def run(**scan_inputs):
        out = function(**inputs, **scan_inputs, zoh=zoh)
        return out, torch.autograd.grad((out * weights).sum(), leaves)

    in_scan = run(delta=dt, delta_bias=bias, delta_softplus=True, step_scale=r)
    first = run(delta=scaled_delta(dt, r, bias), delta_softplus=False)
    torch.testing.assert_close(in_scan, first, rtol=RTOL, atol=ATOL)


@needs_compiler
def test_step_scale_gradcheck_float64():
    inputs = make_inputs(2, 4, 6, 3, dtype=torch.float64)
    names = list(inputs)
    r = STEP_SCALES["per row"].double()

    def function(*tensors):
        return fused(**dict(zip(names, tensors)), delta_softplus=True, zoh=True, step_scale=r)

    assert torch.autograd.gradcheck(function, tuple(inputs.values()), eps=1e-6, atol=1e-5)


@pytest.mark.parametrize("r,softplus,match", [
    (torch.tensor([1.0, -0.5, 1.0, 1.0, 1.0, 1.0]), True, ">= 0"),
    (torch.ones(5), True, "step_scale must be"),
    (torch.ones(3, 6), True, "step_scale must be"),
    (1.0, False, "delta_softplus=True"),
])
def test_bad_step_scales_name_the_problem(r, softplus, match):
    inputs = {k: v.detach() if v is not None else None for k, v in make_inputs(2, 4, 6, 3).items()}
    with pytest.raises(ValueError, match=match):
        selective_scan_fn(**inputs, delta_softplus=softplus, step_scale=r)


def _split_step(scan_function, zoh, pieces):
    """Last states of a linear SSM (fixed B, C, held input) after one step of dt and after
    ``pieces`` steps of dt / pieces; float64, several channels and state entries."""
    g = torch.Generator().manual_seed(3)
    u = torch.randn(2, 3, 1, generator=g, dtype=torch.float64)
    dt = torch.rand(2, 3, 1, generator=g, dtype=torch.float64) * 0.5 + 0.05
    A = -torch.rand(3, 4, generator=g, dtype=torch.float64) * 3 - 0.1
    B, C = torch.randn(3, 4, generator=g, dtype=torch.float64), torch.randn(3, 4, generator=g, dtype=torch.float64)
    one = scan_function(u, dt, A, B, C, return_last_state=True, zoh=zoh)[1]
    split = scan_function(u.expand(-1, -1, pieces), dt.expand(-1, -1, pieces) / pieces, A, B, C,
                          return_last_state=True, zoh=zoh)[1]
    return one, split


@pytest.mark.parametrize("function", [selective_scan_ref, pytest.param(fused, marks=needs_compiler)],
                         ids=["reference", "fused"])
def test_zoh_splits_a_step_exactly(function):
    """Paper Eq. 1: with zero-order hold, 8 steps of Δ/8 on a held input equal one step of Δ (a
    finer step scale r describes the same continuous system), to float64 precision."""
    one, split = _split_step(function, zoh=True, pieces=8)
    torch.testing.assert_close(split, one, rtol=1e-12, atol=1e-12)


def test_euler_splits_a_step_only_to_first_order():
    """mamba-ssm's B̄ = ΔB: 8 steps of Δ/8 miss one step of Δ by O(Δ·|A|) (why ZOH is an option)."""
    one, split = _split_step(selective_scan_ref, zoh=False, pieces=8)
    error = ((split - one).abs() / one.abs().clamp(min=1e-9)).max()
    assert 1e-3 < error < 1.0
    torch.testing.assert_close(split, one, rtol=1.0, atol=0.2)


@pytest.mark.parametrize("zoh", [False, True], ids=["euler", "zoh"])
def test_zero_step_scale_makes_a_token_invisible(zoh):
    """r = 0 (padding): the state passes the token unchanged, so the tokens after it see the
    same state as if it were not there."""
    inputs = {k: (v.detach() if v is not None else None) for k, v in make_inputs(2, 4, 6, 3).items()}
    out = selective_scan_fn(**inputs, delta_softplus=True, zoh=zoh, step_scale=torch.tensor([1.0, 1, 0, 0, 1, 1]))
    keep = [0, 1, 4, 5]
    short = {k: (v[..., keep] if k in ("u", "delta", "z", "B", "C") else v) for k, v in inputs.items()}
    expected = selective_scan_fn(**short, delta_softplus=True, zoh=zoh)
    torch.testing.assert_close(out[..., keep], expected)


@pytest.mark.parametrize("bad,match", [
    (dict(A=torch.zeros(5, 3)), "A must be"),
    (dict(B=torch.zeros(2, 3, 7)), "B must be"),
    (dict(z=torch.zeros(2, 4, 5)), "z must be"),
    (dict(D=torch.zeros(3)), "D must be"),
])
def test_bad_shapes_name_the_problem(bad, match):
    inputs = {k: v.detach() if v is not None else None for k, v in make_inputs(2, 4, 6, 3).items()}
    inputs.update(bad)
    with pytest.raises(ValueError, match=match):
        selective_scan_fn(**inputs)


def test_backend_variable_selects_the_reference(monkeypatch):
    inputs = {k: v.detach() if v is not None else None for k, v in make_inputs(2, 4, 6, 3).items()}
    monkeypatch.setattr(scan, "selective_scan_cpu", lambda *a, **k: pytest.fail("fast path used"))
    monkeypatch.setenv(scan.BACKEND_VARIABLE, "reference")
    selective_scan_fn(**inputs)
    monkeypatch.setenv(scan.BACKEND_VARIABLE, "bogus")
    with pytest.raises(ValueError, match="CFBENCH_SCAN"):
        selective_scan_fn(**inputs)


def test_unbuildable_fast_path_warns_once_and_falls_back(monkeypatch, tmp_path):
    monkeypatch.setattr(scan, "_library", None)
    monkeypatch.setattr(scan, "_library_error", None)
    monkeypatch.setenv("CXX", str(tmp_path / "no-such-compiler"))
    monkeypatch.setenv("CFBENCH_CACHE", str(tmp_path))
    inputs = {k: v.detach() if v is not None else None for k, v in make_inputs(2, 4, 6, 3).items()}
    with pytest.warns(RuntimeWarning, match="slow reference"):
        out = selective_scan_fn(**inputs)
    torch.testing.assert_close(out, selective_scan_ref(**inputs))
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        selective_scan_fn(**inputs)  # warned once only
    with pytest.raises(RuntimeError, match="unavailable"):
        scan._fast_library(required=True)


@needs_compiler
@pytest.mark.parametrize("zoh", [False, True], ids=["euler", "zoh"])
def test_fast_path_keeps_float_precision_over_the_whole_decay_range(zoh):
    """The kernel's inlined float exp, over decays exp(dt A) from 1 (padding, dt = 0) down to
    exp(-87) and below (clamped), against the float64 reference: as close as the kernel with
    glibc's exp came (1.9e-4 absolute, 4.3e-5 relative here)."""
    inputs = make_inputs(2, 16, 40, 8, with_z=False, with_bias=False)
    with torch.no_grad():
        inputs["delta"].copy_(torch.linspace(0, 6, 2 * 16 * 40).reshape(2, 16, 40))
        inputs["A"].copy_(-torch.logspace(-3, 1.3, 16 * 8).reshape(16, 8))  # dt A from 0 to -120
    out = fused(**inputs, zoh=zoh)
    reference = selective_scan_ref(**{k: v.double() if v is not None else None for k, v in inputs.items()}, zoh=zoh)
    torch.testing.assert_close(out.double(), reference, rtol=1e-4, atol=3e-4)


@needs_compiler
def test_several_threads_agree_with_one():
    inputs = make_inputs(5, 300, 7, 4, b_shape="grouped", groups=2)  # 150 channels a group: blocks of 128 + 22
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = outputs_and_grads(fused, inputs, True)
        torch.set_num_threads(3)
        several = outputs_and_grads(fused, inputs, True)
    finally:
        torch.set_num_threads(threads)
    torch.testing.assert_close(several, one)


def test_mamba_mixer_on_fast_path_matches_reference_and_r_one_is_plain(monkeypatch):
    from policies.ssm.mamba import MambaMixer

    torch.manual_seed(0)
    mixer = MambaMixer(8, d_state=4, d_conv=4)
    hidden = torch.randn(3, 6, 8)
    fast = mixer(hidden)
    fast_grads = torch.autograd.grad(fast.square().sum(), list(mixer.parameters()))
    monkeypatch.setenv(scan.BACKEND_VARIABLE, "reference")
    reference = mixer(hidden)
    reference_grads = torch.autograd.grad(reference.square().sum(), list(mixer.parameters()))
    torch.testing.assert_close(fast, reference, rtol=RTOL, atol=ATOL)
    for got, expected in zip(fast_grads, reference_grads):
        torch.testing.assert_close(got, expected, rtol=RTOL, atol=ATOL)
    torch.testing.assert_close(mixer(hidden, step_scale=1.0), reference)
    assert not torch.allclose(mixer(hidden, step_scale=torch.full((6,), 0.125)), reference)


def bidirectional_inputs(batch, dim, length, n, dtype=torch.float32, seed=0):
    """The fused bidirectional scan's inputs (channels last, 2 dim channels, one B/C group a
    direction) with a step scale that pads the last two tokens (r = 0) and varies elsewhere."""
    g = torch.Generator().manual_seed(seed)
    rand = lambda *shape, scale=1.0: (torch.randn(*shape, generator=g, dtype=dtype) * scale).requires_grad_()  # noqa: E731
    step_scale = torch.rand(batch, length, generator=g, dtype=dtype) + 0.2
    step_scale[:, -2:] = 0
    return dict(u=rand(batch, length, 2 * dim), delta=rand(batch, length, 2 * dim, scale=0.5),
                A=(-torch.rand(2 * dim, n, generator=g, dtype=dtype) * 2 - 0.1).requires_grad_(),
                B=rand(batch, 2, length, n), C=rand(batch, 2, length, n), D=rand(2 * dim),
                z=rand(batch, length, 2 * dim), delta_bias=rand(2 * dim, scale=0.5)), step_scale


@needs_compiler
@pytest.mark.parametrize("zoh", [False, True], ids=["euler", "zoh"])
@pytest.mark.parametrize("batch,dim,length,n", [(3, 4, 7, 4), (2, 150, 5, 3), (1, 1, 1, 1)])
def test_fused_bidirectional_scan_matches_the_two_reference_scans(monkeypatch, zoh, batch, dim, length, n):
    """Values and every gradient of the one-call kernel (reverse_half; blocks of 128 + 22
    channels a direction; a single token) against the two-call path on the reference scan
    (which the mixer test below checks against flipped sequences)."""
    inputs, step_scale = bidirectional_inputs(batch, dim, length, n)
    results = []
    for backend in ("reference", "fast"):
        monkeypatch.setenv(scan.BACKEND_VARIABLE, backend)
        out = scan.selective_scan_bidirectional(**inputs, zoh=zoh, step_scale=step_scale)
        weights = torch.randn(out.shape, generator=torch.Generator().manual_seed(1))
        results.append((out, torch.autograd.grad((out * weights).sum(), list(inputs.values()))))
    (expected, expected_grads), (out, grads) = results
    torch.testing.assert_close(out, expected, rtol=RTOL, atol=ATOL)
    for name, got, want in zip(inputs, grads, expected_grads):
        torch.testing.assert_close(got, want, rtol=RTOL, atol=ATOL, msg=lambda m, name=name: f"{name}: {m}")


@needs_compiler
@pytest.mark.parametrize("zoh", [False, True], ids=["euler", "zoh"])
def test_bidirectional_scan_gradcheck_float64_and_threads_agree(zoh):
    inputs, step_scale = bidirectional_inputs(2, 3, 5, 2, dtype=torch.float64)
    names = list(inputs)

    def function(*tensors):
        return scan.selective_scan_bidirectional(**dict(zip(names, tensors)), zoh=zoh, step_scale=step_scale)

    assert torch.autograd.gradcheck(function, tuple(inputs.values()), eps=1e-6, atol=1e-5)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = function(*inputs.values())
        torch.set_num_threads(3)
        several = function(*inputs.values())
    finally:
        torch.set_num_threads(threads)
    torch.testing.assert_close(several, one)


def test_bidirectional_scan_rejects_bad_shapes():
    inputs, step_scale = bidirectional_inputs(2, 3, 5, 2)
    with pytest.raises(ValueError, match="bidirectional scan"):
        scan.selective_scan_bidirectional(**{**inputs, "B": inputs["B"][:, :1]}, step_scale=step_scale)
    with pytest.raises(ValueError, match="step_scale"):
        scan.selective_scan_bidirectional(**inputs, step_scale=step_scale[:, :3])


@pytest.mark.parametrize("backend", ["auto", "reference"])
@pytest.mark.parametrize("zoh", [False, True], ids=["euler", "zoh"])
def test_bidirectional_mixer_equals_two_mixers_over_flipped_tokens(monkeypatch, backend, zoh):
    """DiSPo's bidirectional block: one layer of twice the width computes what the two mixers
    compute on the tokens and on the flipped tokens, gradients included (fused kernel, and the
    two-call path that CUDA and the reference take)."""
    from policies.ssm.mamba import BidirectionalMixer, MambaMixer

    monkeypatch.setenv(scan.BACKEND_VARIABLE, backend)
    torch.manual_seed(0)
    forward, reverse = (MambaMixer(16, d_state=4, d_conv=0, zoh=zoh) for _ in range(2))
    fused = BidirectionalMixer(16, d_state=4, zoh=zoh)
    fused.load_state_dict(BidirectionalMixer.fuse_state(forward.state_dict(), reverse.state_dict()))
    hidden = torch.randn(3, 7, 16, requires_grad=True)
    step_scale = torch.rand(3, 7) + 0.2
    step_scale[:, -2:] = 0
    expected = forward(hidden, step_scale) + reverse(hidden.flip(1), step_scale.flip(-1)).flip(1)
    expected.square().sum().backward()
    out = fused(hidden, step_scale)
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-6)
    expected_grad = hidden.grad.clone()
    hidden.grad = None
    out.square().sum().backward()
    torch.testing.assert_close(hidden.grad, expected_grad, rtol=1e-5, atol=1e-5)
    grads = lambda mixer: {name: p.grad for name, p in mixer.named_parameters()}  # noqa: E731
    expected_grads = BidirectionalMixer.fuse_state(grads(forward), grads(reverse))
    for name, parameter in fused.named_parameters():
        torch.testing.assert_close(parameter.grad, expected_grads[name], rtol=1e-5, atol=1e-5, msg=name)


def test_bidirectional_mixer_is_initialised_as_its_two_mixers():
    """Built from the same random state, the fused layer holds exactly the two mixers' weights
    (so the fused layer did not change DiSPo's initialisation), out_proj rescaled per direction."""
    from policies.ssm.mamba import BidirectionalMixer, MambaMixer, rescale_residual_projections

    torch.manual_seed(1)
    pair = torch.nn.ModuleList(MambaMixer(16, d_state=4, d_conv=0) for _ in range(2))
    rescale_residual_projections(pair, n_layer=4)
    torch.manual_seed(1)
    fused = BidirectionalMixer(16, d_state=4)
    rescale_residual_projections(fused, n_layer=4)
    expected = BidirectionalMixer.fuse_state(pair[0].state_dict(), pair[1].state_dict())
    for name, tensor in fused.state_dict().items():
        torch.testing.assert_close(tensor, expected[name], rtol=0, atol=0, msg=name)


def test_cuda_path_takes_mamba_ssm_kernel_when_it_imports(monkeypatch):
    """No GPU here: check the import path of mamba-ssm's kernel with a stand-in module."""
    import sys
    import types

    assert scan._mamba_kernel() is None  # mamba-ssm is a CUDA-only optional extra
    kernel = object()
    interface = types.ModuleType("mamba_ssm.ops.selective_scan_interface")
    interface.selective_scan_fn = kernel
    for name in ("mamba_ssm", "mamba_ssm.ops"):
        monkeypatch.setitem(sys.modules, name, types.ModuleType(name))
    monkeypatch.setitem(sys.modules, "mamba_ssm.ops.selective_scan_interface", interface)
    assert scan._mamba_kernel() is kernel


def test_causal_depthwise_conv_equals_nn_conv1d():
    from policies.ssm.mamba import causal_depthwise_conv

    torch.manual_seed(0)
    conv = torch.nn.Conv1d(6, 6, 4, groups=6, padding=3)
    x = torch.randn(2, 6, 9)
    torch.testing.assert_close(causal_depthwise_conv(x, conv.weight, conv.bias), conv(x)[..., :9])
