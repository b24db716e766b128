"""``lowbit.quantize``'s contract at the API edge: dtypes, shapes, ``out=``, options, errors,
and the straight-through gradient."""

from __future__ import annotations

import pytest
import torch

import lowbit as lb


def test_fp16_and_bf16_inputs_keep_their_dtype_when_the_format_fits():
    x = torch.randn(257) * 10
    for dtype, fmt in [(torch.float16, "e4m3fn"), (torch.bfloat16, "e5m2"), (torch.bfloat16, "bf16")]:
        y = lb.quantize(x.to(dtype), fmt)
        assert y.dtype == dtype
        assert torch.equal(y.float(), lb.quantize(x.to(dtype).float(), fmt))


@pytest.mark.parametrize("dtype,fmt", [(torch.float16, "bf16"), (torch.bfloat16, "fp16"),
                                       (torch.bfloat16, "nvfp4"), (torch.float16, "e8m0fnu")])
def test_dtype_that_cannot_hold_the_format_asks_for_fp32(dtype, fmt):
    with pytest.raises(ValueError, match="fp32"):
        lb.quantize(torch.ones(4, 16, dtype=dtype), fmt)


def test_fp64_is_refused_and_non_float_is_a_type_error():
    with pytest.raises(ValueError, match="float64"):
        lb.quantize(torch.ones(3, dtype=torch.float64), "e4m3fn")
    for dtype in (torch.int32, torch.complex64, torch.bool):
        with pytest.raises(TypeError, match="float32"):
            lb.quantize(torch.ones(3, dtype=dtype), "e4m3fn")
    with pytest.raises(TypeError, match="torch.Tensor"):
        lb.quantize([1.0, 2.0], "e4m3fn")


def test_empty_zero_dim_and_non_contiguous():
    assert lb.quantize(torch.empty(0, 3), "e5m2").shape == (0, 3)
    assert lb.quantize(torch.tensor(1.1), "e5m2").item() == 1.0
    x = torch.randn(8, 6)
    assert torch.equal(lb.quantize(x.t(), "e4m3fn"), lb.quantize(x, "e4m3fn").t())


def test_out_is_written_and_checked():
    x = torch.randn(5, 4)
    out = torch.empty(5, 4)
    assert lb.quantize(x, "e4m3fn", out=out) is out
    assert torch.equal(out, lb.quantize(x, "e4m3fn"))
    with pytest.raises(ValueError, match="shape"):
        lb.quantize(x, "e4m3fn", out=torch.empty(4, 5))
    with pytest.raises(ValueError, match="dtype"):
        lb.quantize(x, "e4m3fn", out=torch.empty(5, 4, dtype=torch.float16))
    with pytest.raises(ValueError, match="autograd"):
        lb.quantize(x.requires_grad_(), "e4m3fn", out=out)


@pytest.mark.parametrize("kwargs,exc,match", [
    (dict(rounding="nearest_even"), ValueError, "rounding"),
    (dict(backend="gpu"), ValueError, "backend"),
    (dict(rounding="stochastic", rbits=0), ValueError, "rbits"),
    (dict(rounding="stochastic", rbits=33), ValueError, "rbits"),
    (dict(rounding="stochastic", rbits=2.0), TypeError, "rbits"),
    (dict(rounding="stochastic", seed=-1), ValueError, "seed"),
    (dict(rounding="stochastic", seed=2**64), ValueError, "seed"),
    (dict(rounding="stochastic", seed="1"), TypeError, "seed"),
    (dict(seed=1), ValueError, "seed"),
    (dict(rbits=8), ValueError, "rbits"),
])
def test_bad_options_name_the_parameter(kwargs, exc, match):
    with pytest.raises(exc, match=match):
        lb.quantize(torch.ones(3), "e4m3fn", **kwargs)


def test_unknown_format_name():
    with pytest.raises(ValueError, match="unknown format name"):
        lb.quantize(torch.ones(3), "fp7")


def test_gradient_is_straight_through():
    x = torch.randn(10, requires_grad=True)
    w = torch.randn(10)
    (lb.quantize(x, "e2m1fn") * w).sum().backward()
    assert torch.equal(x.grad, w)


def test_full_64_bit_seed_is_used():
    x = torch.full((64,), 1.0 + 2**-5)
    a = lb.quantize(x, "e4m3fn", rounding="stochastic", seed=5)
    b = lb.quantize(x, "e4m3fn", rounding="stochastic", seed=5 + 2**40)
    assert not torch.equal(a, b)
