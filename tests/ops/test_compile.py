"""Slow tier: ``lowbit.quantize`` inside ``torch.compile(fullgraph=True)`` (no graph break),
equal to eager, with the straight-through gradient intact."""

from __future__ import annotations

import pytest
import torch

import lowbit as lb

pytestmark = [
    pytest.mark.slow,
    # torch's inductor import path still touches torch.jit.script_method (a torch-internal
    # deprecation, not ours).
    pytest.mark.filterwarnings("ignore:`torch.jit.script_method` is deprecated:DeprecationWarning"),
]


@pytest.mark.parametrize("fmt", ["e4m3fn", "mxfp4", "fixed<8,4>"])
def test_fullgraph_compile_matches_eager(fmt):
    def f(x):
        return lb.quantize(x * 2, fmt, rounding="stochastic", seed=3) + 1

    torch._dynamo.reset()
    x = torch.randn(4, 64)
    compiled = torch.compile(f, fullgraph=True)
    assert torch.equal(compiled(x), f(x))


def test_compiled_gradient_is_straight_through():
    def f(x):
        return (lb.quantize(x, "e5m2") * 3).sum()

    torch._dynamo.reset()
    x = torch.randn(32, requires_grad=True)
    torch.compile(f, fullgraph=True)(x).backward()
    assert torch.equal(x.grad, torch.full_like(x, 3.0))


@pytest.mark.parametrize("fmt", ["e4m3fn", "e2m1fn", "nvfp4", "mxfp6_e3m2"])
def test_encode_decode_compile_fullgraph(fmt):
    """encode and decode are custom ops: a model storing a tensor packed and reading it back
    compiles without a graph break and gives eager's bits."""
    def f(x):
        packed = lb.encode(x * 2, fmt)
        return lb.decode(packed) + 1, packed.codes

    torch._dynamo.reset()
    x = torch.randn(4, 64)
    got_y, got_codes = torch.compile(f, fullgraph=True)(x)
    want_y, want_codes = f(x)
    assert torch.equal(got_y, want_y) and torch.equal(got_codes, want_codes)
