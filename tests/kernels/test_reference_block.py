"""Block formats against an exact rational reference written from the OCP MX v1.0 rules."""

from __future__ import annotations

import bisect
import math
from fractions import Fraction

import pytest
import torch

import lowbit as lb
from lowbit.formats import PRESETS, BlockFormat, FixedPoint, FloatFormat

MX = ["mxfp8_e4m3", "mxfp8_e5m2", "mxfp6_e3m2", "mxfp6_e2m3", "mxfp4", "mxint8"]


def _element_values(elem) -> list:
    """Sorted non-negative values of an element format, enumerated from its fields."""
    if isinstance(elem, FixedPoint):
        return [Fraction(k, 2**elem.fl) for k in range(0, elem.qmax + 1)]
    vals = {Fraction(0)}
    for e in range(0, 2**elem.exp):
        for m in range(2**elem.man):
            if e == 0:
                v = Fraction(m, 2**elem.man) * Fraction(2) ** (1 - elem.bias)
            else:
                v = (1 + Fraction(m, 2**elem.man)) * Fraction(2) ** (e - elem.bias)
            if v <= Fraction(elem.max):
                vals.add(v)
    return sorted(vals)


def _round_nearest_even(v: Fraction, grid: list) -> Fraction:
    """Nearest grid value to |v| (ties to the even index: the even last digit), saturating."""
    a = abs(v)
    if a >= grid[-1]:
        r = grid[-1]
    else:
        i = bisect.bisect_left(grid, a)
        if grid[i] == a:
            r = a
        else:
            lo, hi = grid[i - 1], grid[i]
            d = (a - lo) - (hi - a)
            r = lo if d < 0 or (d == 0 and (i - 1) % 2 == 0) else hi
    return -r if v < 0 else r


def _floor_log2(a: Fraction) -> int:
    e = a.numerator.bit_length() - a.denominator.bit_length()
    while Fraction(2) ** e > a:
        e -= 1
    while Fraction(2) ** (e + 1) <= a:
        e += 1
    return e


def _emax_elem(elem) -> int:
    if isinstance(elem, FloatFormat):
        return elem.emax
    return math.floor(math.log2(elem.qmax)) - elem.fl


def _reference_mx(x: torch.Tensor, fmt: BlockFormat, rule: str = "floor") -> list:
    """OCP MX v1.0 §6.3 (FLOOR) or CEIL on one 1-D run of blocks along the last axis."""
    grid = _element_values(fmt.element)
    out = []
    flat = [Fraction(v) for v in x.tolist()]
    k = fmt.block_size
    for start in range(0, len(flat), k):
        block = flat[start:start + k]
        amax = max(abs(v) for v in block)
        if amax == 0:
            out += [Fraction(0)] * len(block)
            continue
        e = _floor_log2(amax)
        if rule == "ceil" and Fraction(2) ** e != amax:
            e += 1
        shared = max(-127, min(127, e - _emax_elem(fmt.element)))
        scale = Fraction(2) ** shared
        out += [_round_nearest_even(v / scale, grid) * scale for v in block]
    return out


def _inputs(n: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    mag = torch.exp2(torch.randint(-20, 20, (n // 32, 1), generator=g).float())
    return (torch.randn(n // 32, 32, generator=g) * mag).flatten()


@pytest.mark.parametrize("name", MX)
def test_mx_presets_match_exact_ocp_floor(name):
    fmt = PRESETS[name]
    x = _inputs(32 * 64, seed=1)
    got = lb.quantize(x, fmt).tolist()
    want = _reference_mx(x, fmt)
    assert [Fraction(g) for g in got] == want


@pytest.mark.parametrize("name", ["mxfp8_e4m3", "mxfp4"])
def test_ceil_rule_matches_exact_reference(name):
    fmt = PRESETS[name]
    ceil = BlockFormat(fmt.element, scale=fmt.scale, block_size=32, scale_rule="ceil")
    x = _inputs(32 * 64, seed=2)
    assert [Fraction(g) for g in lb.quantize(x, ceil).tolist()] == _reference_mx(x, ceil, "ceil")


def test_floor_clamps_block_max_957_to_896():
    # microxcaling#4: floor(log2 957) = 9, X = 2^(9-8) = 2, 957/2 = 478.5 saturates to 448.
    x = torch.zeros(32)
    x[0] = 957.0
    assert lb.quantize(x, "mxfp8_e4m3")[0].item() == 896.0


def test_ragged_last_block_equals_padded_block():
    fmt = PRESETS["mxfp4"]
    x = _inputs(32 * 3, seed=3)[:80]
    padded = torch.cat([x, torch.zeros(16)])
    assert torch.equal(lb.quantize(x, fmt), lb.quantize(padded, fmt)[:80])


def test_block_along_other_axis_equals_transposed():
    x = _inputs(32 * 32, seed=4).view(32, 32)
    along0 = BlockFormat(PRESETS["mxfp4"].element, scale="e8m0fnu", block_size=32, axis=0)
    assert torch.equal(lb.quantize(x, along0), lb.quantize(x.t().contiguous(), "mxfp4").t())


def test_2d_tiles_share_one_scale():
    x = torch.zeros(32, 32)
    x[0, 0] = 6.0 * 2**5  # one large value sets the scale of its 16x16 tile only
    x[1, 1] = 1.0
    x[20, 20] = 1.0
    tiles = BlockFormat("e2m1fn", scale="e8m0fnu", block_size=(16, 16), axis=(-2, -1))
    y = lb.quantize(x, tiles)
    assert y[1, 1].item() == 0.0  # 1.0 / 2^5 is below half the smallest e2m1 step
    assert y[20, 20].item() == 1.0


def test_nan_or_inf_makes_its_block_nan_only():
    x = torch.ones(64)
    x[3] = float("nan")
    x[40] = float("inf")
    y = lb.quantize(torch.cat([x, torch.ones(32)]), "mxfp8_e4m3")
    assert torch.isnan(y[:64]).all() and torch.equal(y[64:], torch.ones(32))


def test_all_zero_block_gives_zeros():
    assert torch.equal(lb.quantize(torch.zeros(64), "mxfp4"), torch.zeros(64))


def test_bfp_shares_one_exponent_over_tensor():
    # QPyTorch bfp: e = floor(log2 amax) = 1 for amax 3, step 2^(e + 2 - wl) = 2^-3 at wl=6.
    x = torch.tensor([3.0, 0.3, -0.06, 0.0625])
    y = lb.quantize(x, "bfp6")
    assert y.tolist() == [3.0, 0.25, -0.0, 0.0]  # 0.0625 is a tie: to even (0)


def test_block_axis_out_of_range():
    fmt = BlockFormat("e2m1fn", scale="e8m0fnu", block_size=32, axis=2)
    with pytest.raises(ValueError, match="axis"):
        lb.quantize(torch.ones(4, 32), fmt)


def test_bf16_input_gives_bf16_for_mx_and_fp16_is_refused():
    x = _inputs(64, seed=5)
    y = lb.quantize(x.bfloat16(), "mxfp8_e4m3")
    assert y.dtype == torch.bfloat16
    assert torch.equal(y.float(), lb.quantize(x.bfloat16().float(), "mxfp8_e4m3"))
    with pytest.raises(ValueError, match="fp32"):
        lb.quantize(x.half(), "mxfp4")


@pytest.mark.parametrize("backend", ["reference", "cpu", "triton"])
@pytest.mark.parametrize("amax", [1e-36, 1e-41, 2.0**-149])
def test_nvfp4_tiny_tensor_floors_the_tensor_scale(backend, amax):
    """Below amax 2^-126 · 448 · 6 the tensor scale p would be subnormal and 1/p could be Inf
    (torchao then returns NaN for zeros): p is floored at 2^-126, so zeros stay zeros and every
    element is P · (p · X) with P on e2m1's grid (checked against the grid with fractions)."""
    x = torch.zeros(2, 32)
    x[0, :16] = amax * torch.linspace(-1, 1, 16)
    x[1, 5] = amax
    y = lb.quantize(x, "nvfp4", backend=backend)
    assert not bool(y.isnan().any())
    assert bool((y[x == 0] == 0).all())
    if amax == 1e-36:  # large enough for the floored grid to keep nonzero values
        assert bool((y != 0).any())
    packed = lb.encode(x, "nvfp4")
    assert torch.equal(lb.decode(packed), y)
    p = Fraction(2) ** -126
    grid = [Fraction(v) for v in (0, 0.5, 1, 1.5, 2, 3, 4, 6)]
    for value in y[x != 0].tolist():
        ratio = abs(Fraction(value)) / p  # P · X with X a ue4m3 value
        assert ratio == 0 or any(g != 0 and (ratio / g) in _UE4M3 for g in grid), value



# UE4M3 (NVFP4's block scale): bias 7, subnormals m/8 · 2^-6, no Inf, NaN at e=15, m=7.
_UE4M3 = {Fraction(m, 8) * Fraction(2) ** -6 for m in range(1, 8)} | {
    (1 + Fraction(m, 8)) * Fraction(2) ** (e - 7)
    for e in range(1, 16) for m in range(8) if (e, m) != (15, 7)}
