"""Fixed point and integers (reference backend) against an exact Fraction reference.

DESIGN: grid k·2^-fl, k in [-2^(wl-1), 2^(wl-1)-1] (symmetric: lower bound -2^(wl-1)+1);
round, then clamp (``clamp=False``: unbounded grid, ±Inf stay ±Inf); NaN stays NaN.  A zero
result carries the input's sign, as IEEE 754's roundToIntegral does, where the range has
negative values.
"""

from __future__ import annotations

import functools
import math

import numpy as np
import pytest
import torch

import lowbit
from lowbit.formats import FixedPoint, IntFormat, get

from _backends import available_backends
from _scalar_oracles import MODES, assert_same, fp32_edge_values, random_fp32, round_fixed

BACKENDS = available_backends(FixedPoint)  # every result is checked on each of them

FORMATS = [
    FixedPoint(8, 4),
    FixedPoint(8, 4, symmetric=True),
    FixedPoint(8, 4, clamp=False),
    FixedPoint(5, 0, clamp=False, symmetric=True),
    FixedPoint(6, -2),
    FixedPoint(6, -120),
    FixedPoint(6, -120, clamp=False),  # past fp32's range: fp32's overflow to ±Inf
    FixedPoint(12, 140),               # a grid of fp32 subnormals
    FixedPoint(16, 149),
    FixedPoint(25, 0),
    FixedPoint(25, 20, symmetric=True),
    IntFormat(8),
    IntFormat(4),
    IntFormat(2),
    IntFormat(8, signed=False),
    IntFormat(1, signed=False),
    IntFormat(24, signed=False),
]


def _bounds(fmt):
    fl = getattr(fmt, "fl", 0)
    if isinstance(fmt, FixedPoint) and not fmt.clamp:
        return fl, None, None
    return fl, fmt.qmin, fmt.qmax


@functools.lru_cache(maxsize=None)
def _inputs(fmt) -> np.ndarray:
    """Grid values k·2^-fl, midpoints, both ±1 fp32 ulp, past both ends, specials, fp32
    subnormals and random fp32 (all binades, and inside the range)."""
    fl, qmin, qmax = _bounds(fmt)
    lo, hi = fmt.qmin, fmt.qmax
    if hi - lo > 600:
        rng = np.random.default_rng(hi)
        ks = np.unique(np.concatenate([np.arange(lo - 3, lo + 40), np.arange(-40, 40),
                                       np.arange(hi - 40, hi + 4),
                                       rng.integers(lo, hi, 300)]))
    else:
        ks = np.arange(lo - 4, hi + 5)
    ks = ks.astype(np.float64)
    step = math.ldexp(1.0, -fl)
    with np.errstate(over="ignore"):
        vals = np.concatenate([ks * step, (ks + 0.5) * step, [2 * hi * step, 1e30, 3e38]])
        v32 = vals.astype(np.float32)
    v32 = v32[np.isfinite(v32)]
    rng = np.random.default_rng(fmt.bits + fl + 1000)
    e = int(math.floor(math.log2(step)))
    rand = np.concatenate([
        random_fp32(600, fmt.bits),
        random_fp32(600, fmt.bits + 1, lo_exp=e - 3, hi_exp=e + fmt.bits + 2),
        (rng.uniform(lo - 2, hi + 2, 600) * step).astype(np.float32),
    ])
    x = np.concatenate([v32, np.nextafter(v32, np.float32(np.inf)),
                        np.nextafter(v32, np.float32(-np.inf)), fp32_edge_values(), rand])
    x = np.concatenate([x, -x])
    return np.unique(x.view(np.uint32)).view(np.float32)


def _expected(x: np.ndarray, fmt, mode: str) -> np.ndarray:
    fl, qmin, qmax = _bounds(fmt)
    return np.array([round_fixed(float(v), fl, qmin, qmax, mode) for v in x], np.float32)


def _quantize(x, fmt, mode: str = "nearest") -> torch.Tensor:
    """The reference backend's result, after checking that every other backend agrees."""
    xt = torch.from_numpy(x) if isinstance(x, np.ndarray) else x
    ref = lowbit.quantize(xt, fmt, rounding=mode, backend="reference")
    for b in available_backends(type(get(fmt)))[1:]:
        assert_same(lowbit.quantize(xt, fmt, rounding=mode, backend=b), ref, xt,
                    f"backend {b} vs reference ({fmt!r}, {mode})")
    return ref


def _zeros_as_plus(a: np.ndarray) -> np.ndarray:
    a = np.array(a, np.float32)
    a[a == 0] = 0.0
    return a


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("fmt", FORMATS, ids=repr)
def test_all_modes_exact(fmt, mode):
    x = _inputs(fmt).copy()
    got = _quantize(x, fmt, mode)
    exp = _expected(x, fmt, mode)
    if fmt.qmin == 0:
        # Unsigned: the sign of a zero result is pinned by test_unsigned_zero_is_positive.
        got, exp = _zeros_as_plus(got.numpy()), _zeros_as_plus(exp)
    assert_same(got, exp, x, f"({fmt!r}, {mode})")


@pytest.mark.parametrize("fmt", ["fixed<8,4>", "int8", "fixed<8,4,noclamp>",
                                 "fixed<8,4,symmetric>"])
def test_specials_and_negative_zero(fmt):
    f = get(fmt)
    x = torch.tensor([float("nan"), float("inf"), float("-inf"), -0.0, 0.0, -1e-30, 1e-30,
                      -1e38, 1e38])
    lo, hi = f.qmin * f.eps, f.qmax * f.eps
    clamp = f.clamp
    exp = torch.tensor([float("nan"), hi if clamp else float("inf"),
                        lo if clamp else float("-inf"), -0.0, 0.0, -0.0, 0.0,
                        lo if clamp else -1e38, hi if clamp else 1e38])
    for mode in ("nearest", "toward_zero"):
        assert_same(_quantize(x, f, mode), exp, x, mode)


def test_documented_values():
    x = torch.tensor([0.5, 1.5, 2.5, -0.5, -2.5, 127.4, 127.6, -128.6, 300.0, -300.0])
    nearest = torch.tensor([0.0, 2.0, 2.0, -0.0, -2.0, 127.0, 127.0, -128.0, 127.0, -128.0])
    away = torch.tensor([1.0, 2.0, 3.0, -1.0, -3.0, 127.0, 127.0, -128.0, 127.0, -128.0])
    assert_same(_quantize(x, "int8"), nearest, x)
    assert_same(_quantize(x, "int8", "nearest_away"), away, x)
    sym = _quantize(torch.tensor([-200.0, -127.6]), "fixed<8,0,symmetric>")
    assert sym.tolist() == [-127.0, -127.0]
    x = torch.tensor([0.03, 0.09, -0.03125, 7.99])
    assert_same(_quantize(x, "fixed<8,4>"), torch.tensor([0.0, 0.0625, -0.0, 7.9375]), x)


@pytest.mark.parametrize("fmt", ["uint8", "uint4"])
def test_unsigned_zero_is_positive(fmt):
    x = torch.full((37,), -0.3)
    x[::3] = -0.0
    x[1::3] = -5.0
    for backend in BACKENDS:
        y = lowbit.quantize(x, fmt, backend=backend)
        assert (y == 0).all()
        assert not torch.signbit(y).any(), (backend, torch.signbit(y).nonzero().flatten().tolist())
