"""``lowbit.quantize``: argument checking, dtypes, shapes and layouts, ``out=``, and the
straight-through gradient.  Uses the default backend (the public path)."""

from __future__ import annotations

import pytest
import torch

import lowbit
from lowbit.formats import FloatFormat, Rounding, get

from _scalar_oracles import assert_same

MODES = ["nearest", "nearest_away", "toward_zero", "up", "down", "odd", "stochastic"]


def q(x, fmt="e4m3fn", mode="nearest", **kw):
    seed = kw.pop("seed", 7 if mode == "stochastic" else None)
    return lowbit.quantize(x, fmt, rounding=mode, seed=seed, **kw)


def all_values(dtype: torch.dtype) -> torch.Tensor:
    """Every 16-bit pattern of ``dtype`` (fp16 or bf16)."""
    return torch.arange(-(2**15), 2**15, dtype=torch.int32).to(torch.int16).view(dtype)


# -- dtypes -----------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype, fmt, fits", [
    (torch.float16, "e4m3fn", True), (torch.float16, "e5m2", True),
    (torch.float16, "e4m3fnuz", True), (torch.float16, "e5m2fnuz", True),
    (torch.float16, "e2m1fn", True), (torch.float16, "fp16", True),
    (torch.float16, "int8", True), (torch.float16, "fixed<8,4>", True),
    (torch.float16, "fixed<11,4>", True), (torch.float16, "uint11", True),
    # -2048 = -2^11 needs one significant bit: every int12 value is exact in fp16
    (torch.float16, "int12", True), (torch.bfloat16, "int9", True),
    (torch.float16, "uint12", False), (torch.bfloat16, "uint9", False),
    (torch.float16, "bf16", False), (torch.float16, "fp32", False),
    (torch.float16, "e8m0fnu", False), (torch.float16, "e6m9", False),
    (torch.float16, "e5m10b13", False),  # max 2^17·(2 - 2^-10) is past fp16's
    (torch.float16, "fixed<16,8>", False), (torch.float16, "int13", False),
    (torch.float16, "fixed<8,30>", False),  # steps below fp16's smallest subnormal
    (torch.bfloat16, "e4m3fn", True), (torch.bfloat16, "e5m2", True),
    (torch.bfloat16, "bf16", True), (torch.bfloat16, "e8m0fnu", True),
    (torch.bfloat16, "int8", True), (torch.bfloat16, "e2m3fn", True),
    (torch.bfloat16, "fp16", False), (torch.bfloat16, "tf32", False),
    (torch.bfloat16, "e3m4", True), (torch.bfloat16, "e4m7", True),
    (torch.bfloat16, "e4m8", False), (torch.bfloat16, "int16", False),
    (torch.bfloat16, "fp32", False), (torch.bfloat16, "nvfp4", False),
    (torch.bfloat16, "mxfp8_e4m3", True), (torch.float16, "mxfp8_e4m3", False),
])
def test_result_dtype(dtype, fmt, fits):
    x = torch.linspace(-3, 3, 11).to(dtype)
    if fits:
        y = q(x, fmt)
        assert y.dtype == dtype
        assert torch.equal(y, q(x.float(), fmt).to(dtype))
    else:
        with pytest.raises(ValueError, match="fp32|float32|float"):
            q(x, fmt)


def test_float32_holds_everything():
    for fmt in ["fp32", "e8m0fnu", "fixed<25,149>", "int25", "e8m23fn_nonan"]:
        assert q(torch.ones(3), fmt).dtype == torch.float32


def test_float64_is_refused():
    with pytest.raises(ValueError, match="float64"):
        q(torch.ones(3, dtype=torch.float64))


@pytest.mark.parametrize("dtype", [torch.int32, torch.int64, torch.int8, torch.uint8, torch.bool,
                                   torch.complex64])
def test_non_float_dtypes_are_type_errors(dtype):
    with pytest.raises(TypeError, match="float32"):
        q(torch.ones(3, dtype=dtype))


@pytest.mark.parametrize("bad", [[1.0, 2.0], 1.0, None])
def test_x_must_be_a_tensor(bad):
    with pytest.raises(TypeError, match="x"):
        q(bad)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("dtype, fmt", [
    (torch.float16, "e4m3fn"), (torch.float16, "e5m2"), (torch.float16, "e2m1fn"),
    (torch.float16, "int8"), (torch.float16, "fixed<8,4>"), (torch.float16, "fp16"),
    (torch.bfloat16, "e4m3fn"), (torch.bfloat16, "e8m0fnu"), (torch.bfloat16, "bf16"),
    (torch.bfloat16, "e4m3fnuz"),
])
def test_half_inputs_equal_the_fp32_path(dtype, fmt, mode):
    """Every fp16/bf16 bit pattern: the result equals rounding the exact fp32 value."""
    x = all_values(dtype)
    y = q(x, fmt, mode)
    assert y.dtype == dtype
    assert_same(y.float(), q(x.float(), fmt, mode).to(dtype).float(), x.float(),
                f"({dtype}, {fmt}, {mode})")


# -- shapes and layouts -----------------------------------------------------------------------
@pytest.mark.parametrize("mode", ["nearest", "stochastic"])
@pytest.mark.parametrize("shape", [(0,), (3, 0, 2), (0, 5)])
def test_empty(shape, mode):
    for dtype in (torch.float32, torch.float16):
        x = torch.empty(shape, dtype=dtype)
        y = q(x, "e4m3fn", mode)
        assert y.shape == shape and y.dtype == dtype
        out = torch.empty(shape, dtype=dtype)
        assert q(x, "e4m3fn", mode, out=out) is out


@pytest.mark.parametrize("mode", MODES)
def test_zero_dim(mode):
    x = torch.tensor(1.3)
    y = q(x, "e4m3fn", mode)
    assert y.shape == () and y.dtype == torch.float32
    assert y.item() in (1.25, 1.375)
    if mode != "stochastic":
        assert y.item() == q(x.reshape(1), "e4m3fn", mode).item()


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("fmt", ["e4m3fn", "fixed<8,4>", "e8m0fnu"])
def test_non_contiguous_inputs(fmt, mode):
    x = torch.randn(40, 30) * 4
    for view in (x.t(), x[::2, 1::3], x.unsqueeze(1).expand(-1, 2, -1), x[:, 5]):
        y = q(view, fmt, mode)
        assert y.shape == view.shape
        assert torch.equal(y, q(view.contiguous(), fmt, mode))
    before = x.clone()
    q(x, fmt, mode)
    assert torch.equal(x, before)  # the input is never written


def test_default_rounding_is_nearest_even():
    x = torch.tensor([1.0625, 1.1875, -1.0625, 464.0])
    y = lowbit.quantize(x, "e4m3fn")
    assert y.tolist() == [1.0, 1.25, -1.0, 448.0]
    assert torch.equal(y, q(x, "e4m3fn", "nearest"))


def test_format_objects_names_and_enums_agree():
    x = torch.randn(100) * 100
    a = lowbit.quantize(x, "e4m3fn", rounding="up")
    assert torch.equal(a, lowbit.quantize(x, get("e4m3fn"), rounding=Rounding.UP))
    assert torch.equal(a, lowbit.quantize(x, FloatFormat(4, 3, specials="fn"), rounding="up"))
    assert torch.equal(a, lowbit.quantize(x, "E4M3FN", rounding="up"))


# -- out= -------------------------------------------------------------------------------------
@pytest.mark.parametrize("mode", ["nearest", "down", "stochastic"])
def test_out(mode):
    x = torch.randn(17, 5) * 10
    out = torch.full_like(x, float("nan"))
    assert q(x, "e5m2", mode, out=out) is out
    assert torch.equal(out, q(x, "e5m2", mode))
    out_nc = torch.empty(5, 17).t()
    q(x, "e5m2", mode, out=out_nc)
    assert torch.equal(out_nc, q(x, "e5m2", mode))
    h = x.half()
    out_h = torch.empty_like(h)
    q(h, "e5m2", mode, out=out_h)
    assert torch.equal(out_h, q(h, "e5m2", mode))


def test_out_may_alias_the_input():
    x = torch.randn(1000) * 10
    expected = q(x, "e4m3fn")
    assert q(x, "e4m3fn", out=x) is x
    assert torch.equal(x, expected)


@pytest.mark.parametrize("make_out, exc, match", [
    (lambda x: torch.empty(4, 3), ValueError, "shape"),
    (lambda x: torch.empty(12), ValueError, "shape"),
    (lambda x: torch.empty(3, 4, dtype=torch.float16), ValueError, "dtype"),
    (lambda x: torch.empty(3, 4, dtype=torch.float64), ValueError, "dtype"),
    (lambda x: torch.empty(3, 4, dtype=torch.int32), ValueError, "dtype"),
    (lambda x: [0.0] * 12, TypeError, "out"),
])
def test_out_mismatch(make_out, exc, match):
    x = torch.randn(3, 4)
    with pytest.raises(exc, match=match):
        q(x, "e4m3fn", out=make_out(x))


def test_out_refuses_autograd():
    x = torch.randn(5, requires_grad=True)
    with pytest.raises(ValueError, match="grad"):
        q(x, "e4m3fn", out=torch.empty(5))
    with torch.no_grad():
        out = torch.empty(5)
        q(x, "e4m3fn", out=out)
    assert torch.equal(out, q(x.detach(), "e4m3fn"))


# -- argument validation ----------------------------------------------------------------------
@pytest.mark.parametrize("rbits", [0, 33, -1, 64])
def test_rbits_out_of_range(rbits):
    with pytest.raises(ValueError, match="rbits"):
        q(torch.ones(3), mode="stochastic", rbits=rbits)


@pytest.mark.parametrize("rbits", [1.5, 8.0, "8", True])
def test_rbits_type(rbits):
    with pytest.raises(TypeError, match="rbits"):
        q(torch.ones(3), mode="stochastic", rbits=rbits)


def test_rbits_range_is_inclusive():
    for r in (1, 32):
        q(torch.ones(3), mode="stochastic", rbits=r)


@pytest.mark.parametrize("seed", [-1, 2**64, -(2**63)])
def test_seed_out_of_range(seed):
    with pytest.raises(ValueError, match="seed"):
        q(torch.ones(3), mode="stochastic", seed=seed)


@pytest.mark.parametrize("seed", [1.0, "1", True, torch.tensor(1)])
def test_seed_type(seed):
    with pytest.raises(TypeError, match="seed"):
        q(torch.ones(3), mode="stochastic", seed=seed)


def test_seed_range_is_inclusive():
    for s in (0, 2**64 - 1):
        q(torch.ones(3), mode="stochastic", seed=s)


@pytest.mark.parametrize("mode", [m for m in MODES if m != "stochastic"])
@pytest.mark.parametrize("kw, param", [(dict(seed=0), "seed"), (dict(rbits=8), "rbits"),
                                       (dict(rbits=32), "rbits")])
def test_seed_and_rbits_need_stochastic(mode, kw, param):
    with pytest.raises(ValueError, match=param):
        lowbit.quantize(torch.ones(3), "e4m3fn", rounding=mode, **kw)


@pytest.mark.parametrize("rounding", ["nearest_even", "NEAREST", "rne", "", None, 3])
def test_unknown_rounding(rounding):
    with pytest.raises(ValueError, match="rounding"):
        lowbit.quantize(torch.ones(3), "e4m3fn", rounding=rounding)


@pytest.mark.parametrize("backend", ["gpu", "cuda", "Reference", "", None])
def test_unknown_backend(backend):
    with pytest.raises(ValueError, match="backend"):
        lowbit.quantize(torch.ones(3), "e4m3fn", backend=backend)


def test_bad_formats():
    with pytest.raises(ValueError, match="e4m3zz"):
        lowbit.quantize(torch.ones(3), "e4m3zz")
    with pytest.raises(TypeError, match="fmt"):
        lowbit.quantize(torch.ones(3), 8)


# -- gradient ---------------------------------------------------------------------------------
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("fmt", ["e4m3fn", "e2m1fn", "int8", "fixed<8,4>", "e8m0fnu"])
def test_straight_through_gradient(fmt, mode):
    x = (torch.randn(6, 7) * 100).requires_grad_()
    y = q(x, fmt, mode)
    assert y.requires_grad and y.grad_fn is not None
    assert torch.equal(y.detach(), q(x.detach(), fmt, mode))
    g = torch.randn(6, 7)
    y.backward(g)
    assert torch.equal(x.grad, g)  # passes through unchanged, even where x saturates


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_straight_through_gradient_half(dtype):
    x = torch.randn(50, dtype=dtype).requires_grad_()
    y = q(x, "e4m3fn")
    assert y.dtype == dtype
    g = torch.randn(50, dtype=dtype)
    y.backward(g)
    assert x.grad.dtype == dtype and torch.equal(x.grad, g)


def test_gradient_flows_through_a_graph():
    w = torch.randn(4, 3, requires_grad=True)
    x = torch.randn(5, 4)
    loss = (x @ q(w * 2, "e5m2")).sum()
    loss.backward()
    assert torch.equal(w.grad, 2 * x.sum(0, keepdim=True).t().expand(4, 3))


def test_no_graph_without_grad():
    x = torch.randn(5, requires_grad=True)
    with torch.no_grad():
        y = q(x)
    assert not y.requires_grad
    assert not q(torch.randn(5)).requires_grad


def test_full_64_bit_seed_is_used():
    x = torch.full((64,), 1.0 + 2**-5)
    a = lowbit.quantize(x, "e4m3fn", rounding="stochastic", seed=5)
    b = lowbit.quantize(x, "e4m3fn", rounding="stochastic", seed=5 + 2**40)
    assert not torch.equal(a, b)
