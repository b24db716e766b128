"""Codes and scales of block-scaled formats (``BlockFormat``).

The block view is the reference's (``kernels.reference.block.block_view``): block axes moved
last, padded with zeros to whole blocks and split into (blocks, size).  Scales are computed as
the reference computes them; element codes are read from ``lowbit.quantize``'s result (the
power-of-two rules, where that result is exactly ``P · 2^k``) or from the element values ``P``
of the AMAX rule, whose ``P · (p · X)`` product is not always invertible.

Layouts returned to ``Packed``: element codes in the logical row-major order of ``x``; the
scales tensor has ``x``'s dimensions with every block axis of length ``n`` replaced by its
number of blocks ``ceil(n / size)`` (1 for a block spanning the whole axis, every dimension
1 for ``axis=None``), so ``scales[i, j]`` is the block holding ``x[i, j*size : (j+1)*size]``
for blocks along the last axis.
"""

from __future__ import annotations

import math
from typing import Optional, Tuple

import torch

from ...formats import FP32_MAX, BlockFormat, ExpFormat, FixedPoint, FloatFormat, Rounding, ScaleRule
from ...kernels.philox import random_words
from ...kernels.reference.block import block_view, normalize_axes
from ...kernels.reference.blockscale import MIN_TENSOR_SCALE, scale_exponent
from ...kernels.reference.scalar import quantize_exp, quantize_fixed, quantize_float
from ..quantize import quantize
from .bitstream import unpack_bits
from .fast import decode_values, encode_values
from .scalar import (
    decode_exp, decode_float, decode_general, encode_exp, encode_float, fp32_exact, fp32_parts,
    has_nan_code, pow2,
)

__all__ = ["encode_block", "decode_block", "grid_shape"]

_I32 = torch.int32


class _Layout:
    """The block view of a tensor shape, and moves between grid and keepdim shapes."""

    def __init__(self, fmt: BlockFormat, shape: Tuple[int, ...]):
        self.sizes, self.axes = normalize_axes(fmt, len(shape))
        self.shape = tuple(shape)
        rest = [d for d in range(len(shape)) if d not in self.axes]
        self.perm = rest + list(self.axes)
        self.inv = [0] * len(self.perm)
        for i, p in enumerate(self.perm):
            self.inv[p] = i
        self.lead = [shape[d] for d in rest]
        if self.sizes is None:
            self.nblocks = [1] * len(self.axes)
            self.keep = self.lead + [1] * len(self.axes)
        else:
            self.nblocks = [-(-shape[a] // k) for a, k in zip(self.axes, self.sizes)]
            self.keep = self.lead + [v for n in self.nblocks for v in (n, 1)]

    @property
    def grid(self) -> Tuple[int, ...]:
        """Scales' shape: ``shape`` with each block axis replaced by its number of blocks."""
        moved = self.lead + self.nblocks
        return tuple(moved[i] for i in self.inv)

    def view(self, t: torch.Tensor):
        """``t``'s block view, its block dims and the function back to ``t``'s layout."""
        return block_view(t, self.sizes, self.axes)

    def to_grid(self, t: torch.Tensor) -> torch.Tensor:
        """A keepdim per-block tensor of the view as a grid-shaped tensor."""
        return t.reshape(self.lead + self.nblocks).permute(self.inv).contiguous()

    def from_grid(self, t: torch.Tensor) -> torch.Tensor:
        """A grid-shaped tensor as a keepdim tensor that broadcasts against the view."""
        return t.permute(self.perm).reshape(self.keep)


def grid_shape(fmt: BlockFormat, shape: Tuple[int, ...]) -> Tuple[int, ...]:
    return _Layout(fmt, shape).grid


def _scale_nan(fmt: BlockFormat, nan: str) -> int:
    """The scale code of a block holding NaN or ±Inf (all of it decodes to NaN)."""
    s = fmt.scale
    if isinstance(s, ExpFormat):
        return 2**s.bits - 1
    if has_nan_code(s):
        return int(encode_float(torch.tensor([float("nan")]), s)[0])
    if nan == "zero":
        return 0
    raise ValueError(f"x holds NaN or Inf in a block, and {fmt!r}'s scale format {s!r} has no "
                     "NaN code; pass nan='zero' to store such blocks as zeros")


def _encode_scale(v: torch.Tensor, fmt: BlockFormat) -> torch.Tensor:
    s = fmt.scale
    return encode_exp(v, s) if isinstance(s, ExpFormat) else encode_float(v, s)


def _amax_scales(amax: torch.Tensor, fmt: BlockFormat):
    """(block scales X, tensor scale p or None) of the AMAX rule, in the fp32 order of
    ``kernels.reference.blockscale.amax_scaled``.  The tensor amax is the largest block amax
    (the same number the reference reads from the whole tensor)."""
    s = fmt.scale
    max_e = fmt.element.max
    ratio = amax / max_e
    p = None
    if fmt.tensor_scale:
        p = (amax.amax() / (s.max * max_e)).clamp(min=MIN_TENSOR_SCALE)
        ratio = ratio / p
    r = ratio.clamp(min=s.min_normal, max=min(s.max, 3.0e38)).contiguous()
    x_scale = (quantize_exp if isinstance(s, ExpFormat) else quantize_float)(
        r, s, Rounding.NEAREST, None, 32)
    return x_scale, p


def _amax_elements_reference(view: torch.Tensor, x_scale: torch.Tensor, p, fmt: BlockFormat,
                             rounding: Rounding, words: Optional[torch.Tensor], rbits: int):
    """Element values P of the AMAX rule, recomputed as the reference computes them."""
    max_e = fmt.element.max
    r = ((1.0 / p) / x_scale if p is not None else 1.0 / x_scale).clamp(max=FP32_MAX)
    scaled = (view * r).clamp(-max_e, max_e)
    elem = quantize_float if isinstance(fmt.element, FloatFormat) else quantize_fixed
    w = words.contiguous() if words is not None else None
    return elem(scaled.contiguous(), fmt.element, rounding, w, rbits)


def _amax_elements_fast(vview: torch.Tensor, x_scale: torch.Tensor, p, fmt: BlockFormat,
                        bad: torch.Tensor) -> Optional[torch.Tensor]:
    """Element values P read back from quantize's ``v = P · s`` (``s = p · X``): ``v / s``
    rounded to the nearest element value.  Where every product is an fp32 normal number, ``v``
    is within 2^-24 (relative) of ``P · s``, and element values at most 21 significant bits
    wide are further apart, so the nearest one is ``P``; the products are checked anyway.
    None where these conditions fail (the caller recomputes P as the reference does)."""
    e = fmt.element
    if not fp32_exact(e) or e.significand_bits > 21:
        return None
    if p is not None and not bool(torch.isfinite(p)):
        return None
    s = torch.where(bad, 1.0, p * x_scale if p is not None else x_scale)
    tiny = 2.0**-126
    if not bool(((s >= tiny) & (s * e.min_subnormal >= tiny) & torch.isfinite(s)).all()):
        return None
    q = quantize(vview / s, e).to(torch.float32)
    if not bool(((q * s == vview) | bad).all()):
        return None
    return q


def _pow2_elements(vview: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """``v · 2^-k``, exact: the element values of a power-of-two-scaled block."""
    m = vview * pow2((-k).clamp(-149, 127))
    if bool((k < -127).any()):
        m = m * pow2((-k - 127).clamp(0, 127))
    return m


def encode_block(x: torch.Tensor, v: torch.Tensor, fmt: BlockFormat, rounding: Rounding,
                 rbits: int, seed: Optional[int], nan: str):
    """(element codes in x's row-major order as a flat integer tensor, grid-shaped scale codes,
    tensor scale or None) for ``x`` (fp32, contiguous) and ``v = quantize(x, fmt)`` (fp32)."""
    lay = _Layout(fmt, tuple(x.shape))
    view, red, undo = lay.view(x)
    # max |x| of each block (two reductions, no |x| tensor; NaN propagates, and ±0 are alike
    # to every rule), and the blocks holding NaN or ±Inf: they decode to NaN
    amax = torch.maximum(view.amax(dim=red, keepdim=True), -view.amin(dim=red, keepdim=True))
    bad = ~torch.isfinite(amax)
    any_bad = bool(bad.any())
    vview = lay.view(v)[0]
    e = fmt.element
    p, shift = None, 0
    if fmt.scale_rule is ScaleRule.AMAX:
        x_scale, p = _amax_scales(amax, fmt)
        elems = _amax_elements_fast(vview, x_scale, p, fmt, bad)
        if elems is None:
            words = None
            if rounding is Rounding.STOCHASTIC:
                words = lay.view(random_words(x.numel(), seed, x.device).view(x.shape))[0]
            elems = _amax_elements_reference(view, x_scale, p, fmt, rounding, words, rbits)
        scode = _encode_scale(torch.where(bad, 1.0, x_scale), fmt)
    else:
        k = scale_exponent(amax, fmt).to(_I32)
        k = torch.where(bad, 0, k)
        if fp32_exact(e) and bool((k >= -149).all()):
            elems = _pow2_elements(vview, k)
        else:
            elems, shift = vview, k
        if isinstance(fmt.scale, ExpFormat):
            scode = k + fmt.scale.bias
        else:
            scode = encode_float(torch.ones_like(amax), fmt.scale, -k)  # the code of 2^k
    if any_bad:
        elems = torch.where(bad, 0.0, elems)
    if isinstance(shift, int) and fmt.scale_rule is not ScaleRule.AMAX \
            and not (isinstance(e, FloatFormat) and e.has_inf) \
            and not (isinstance(e, FixedPoint) and not e.clamp) \
            and int(k.max()) + fmt.emax_elem + 1 >= 128:
        # P · 2^k past fp32's range is the carrier's ±Inf: any element of at least |P| gives
        # it again, so ±Inf is stored as the element's extreme value (NaN stays NaN)
        elems = elems.clamp(-e.max if isinstance(e, FloatFormat) else e.lowest, e.max)
    if p is not None and bool(torch.isnan(p)):  # x holds NaN: every value is NaN
        elems = torch.zeros_like(elems)
    what = f"the elements of {fmt!r} hold NaN (after rounding), and {e!r} has no NaN code"
    codes = encode_values(elems.contiguous(), e, nan, what, shift)
    if any_bad:
        scode = torch.where(bad, _scale_nan(fmt, nan), scode)
    codes = undo(codes).contiguous().view(-1)
    return codes, lay.to_grid(scode), p


def decode_block(data: torch.Tensor, scales: torch.Tensor, tensor_scale: Optional[torch.Tensor],
                 fmt: BlockFormat, shape: Tuple[int, ...]) -> torch.Tensor:
    """fp32 tensor of ``shape`` from the packed element codes and grid-shaped scale codes."""
    lay = _Layout(fmt, shape)
    sc = lay.from_grid(scales.to(_I32))
    s, e = fmt.scale, fmt.element
    n = math.prod(shape)
    if isinstance(s, ExpFormat):
        s_nan = sc == 2**s.bits - 1
        s_val = decode_exp(sc, s) if fmt.scale_rule is ScaleRule.AMAX else None
        k = sc - s.bias
    else:
        s_val = decode_float(sc, s)
        s_nan = torch.isnan(s_val)
        k = fp32_parts(s_val)[1]
    k = torch.where(s_nan, 0, k)
    if fmt.scale_rule is ScaleRule.AMAX:  # P · (p · X) or P · X, as the reference
        elems, _, undo = lay.view(decode_values(data, e, n).view(shape))
        y = elems * (tensor_scale * s_val) if fmt.tensor_scale else elems * s_val
    elif e.bits <= 16 and fp32_exact(e) and bool((k >= -149).all()):
        # element values by table lookup, in x's order, times exact powers of two
        elems, _, undo = lay.view(decode_values(data, e, n).view(shape))
        y = elems * pow2(k.clamp(-149, 127))
    else:
        cview, _, undo = lay.view(unpack_bits(data, e.bits, n).view(shape))
        y = decode_general(cview, e, k)
    if bool(s_nan.any()):
        y = torch.where(s_nan, float("nan"), y)
    return undo(y).contiguous()
