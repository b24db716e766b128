"""Block scales: the power-of-two rules (FLOOR, CEIL, EVEN, RCEIL) and the AMAX rule.

The power-of-two rules follow OCP MX v1.0 §6.3 and torchao's ``ScaleCalculationMode``
(torchao 0.18, read from its code): the exponent is read from the fp32 bits of the block amax,
``k = e - emax_elem`` clamped to the scale format's range.  Where torchao's CPU fallback
differs from its own definition, lowbit keeps the definition:

* RCEIL is ``2^ceil(log2(amax / max_elem))`` exactly (the hardware ``cvt.rp`` rounding);
  torchao's CPU path takes ``ceil(log2f(.))``, which returns ``k`` instead of ``k + 1`` for a
  ratio just above ``2^k`` once ``|k| >= 4``.
* A scale of ``2^emin`` is used as such; torchao divides by at least 2^-126 but multiplies
  back by 2^-127 for the code-0 scale.
"""

from __future__ import annotations

from typing import Callable, Optional

import torch

from ...formats import FP32_MAX, BlockFormat, ExpFormat, Rounding, ScaleRule
from .core import decompose
from .scalar import quantize_exp, quantize_float

__all__ = ["scale_exponent", "amax_scaled"]


def _scale_range(fmt: BlockFormat) -> tuple:
    s = fmt.scale
    if isinstance(s, ExpFormat):
        return s.emin, min(s.emax, 127)
    lo = s.emin - s.man if s.subnormals else s.emin
    return max(lo, -149), min(s.emax, 127)


def _is_pow2(sig: torch.Tensor) -> torch.Tensor:
    return (sig & (sig - 1)) == 0


def _floor_exp(amax: torch.Tensor, fmt: BlockFormat) -> torch.Tensor:
    return decompose(amax).etrue - fmt.emax_elem


def _ceil_exp(amax: torch.Tensor, fmt: BlockFormat) -> torch.Tensor:
    d = decompose(amax)
    return d.etrue + (~_is_pow2(d.sig)).to(torch.int64) - fmt.emax_elem


def _even_exp(amax: torch.Tensor, fmt: BlockFormat) -> torch.Tensor:
    # amax rounded to the element's mantissa width by adding half an element ulp to the
    # bits (half up, as torchao's EVEN), so an amax that rounds to the next binade moves up.
    man = fmt.element.significand_bits - 1
    bits = amax.view(torch.int32).to(torch.int64)
    if man < 23:
        bits = bits + (1 << (22 - man))
    return ((bits >> 23) & 0xFF) - 127 - fmt.emax_elem


def _rceil_exp(amax: torch.Tensor, fmt: BlockFormat) -> torch.Tensor:
    d = decompose(amax / fmt.element.max)  # fp32 division, round to nearest even
    return d.etrue + (~_is_pow2(d.sig)).to(torch.int64)


_RULES = {
    ScaleRule.FLOOR: _floor_exp,
    ScaleRule.CEIL: _ceil_exp,
    ScaleRule.EVEN: _even_exp,
    ScaleRule.RCEIL: _rceil_exp,
}


def scale_exponent(amax: torch.Tensor, fmt: BlockFormat) -> torch.Tensor:
    """``k`` of the block scale ``X = 2^k`` (int64, amax's shape), clamped to the scale
    format's powers of two.  An all-zero block gets the smallest (its elements stay 0)."""
    lo, hi = _scale_range(fmt)
    k = _RULES[fmt.scale_rule](amax, fmt).clamp(lo, hi)
    return torch.where(amax == 0, torch.full_like(k, lo), k)


def _round_scale(r: torch.Tensor, fmt: BlockFormat) -> torch.Tensor:
    s = fmt.scale
    r = r.clamp(min=s.min_normal, max=min(s.max, 3.0e38))
    fn = quantize_exp if isinstance(s, ExpFormat) else quantize_float
    return fn(r.contiguous(), s, Rounding.NEAREST, None, 32)


#: Floor of the two-level tensor scale p: fp32's smallest normal, so 1 / p is finite.
MIN_TENSOR_SCALE = 2.0**-126


def amax_scaled(view: torch.Tensor, amax: torch.Tensor, fmt: BlockFormat, rounding: Rounding,
                words: Optional[torch.Tensor], rbits: int, elem: Callable) -> torch.Tensor:
    """The AMAX rule, optionally two-level, in torchao's NVFP4 fp32 order of operations:

    * tensor scale ``p = amax_t / (max_scale · max_elem)`` (fp32 division);
    * block scale ``X = round_scale(clamp((amax_b / max_elem) / p, min_normal_scale,
      max_scale))`` (without a tensor scale, ``p`` is left out);
    * elements ``P = round_elem(clamp(x · r, ±max_elem))`` with ``r = (1 / p) / X``
      (without a tensor scale ``r = 1 / X``);
    * result ``P · (p · X)``, each product rounded in fp32.

    The multiplier ``r`` is clamped to fp32's max, and ``p`` is floored at fp32's smallest normal 2^-126 (``MIN_TENSOR_SCALE``) so that ``1 / p``
    is finite: a tensor whose amax is below 2^-126 · max_scale · max_elem (3.2e-35 for NVFP4)
    is rounded on that coarser grid, and an all-zero tensor gives zeros (torchao divides 0 by 0
    there and returns NaN, and turns zeros of such tiny tensors into NaN through 0 · Inf).
    """
    max_e = fmt.element.max
    ratio = amax / max_e
    if fmt.tensor_scale:
        amax_t = view.abs().amax()
        p = (amax_t / (fmt.scale.max * max_e)).clamp(min=MIN_TENSOR_SCALE)
        ratio = ratio / p
        recip_p = 1.0 / p
    x_scale = _round_scale(ratio, fmt)
    # Clamped so that a block too small for the scale range keeps its zeros (0 · Inf = NaN).
    r = (recip_p / x_scale if fmt.tensor_scale else 1.0 / x_scale).clamp(max=FP32_MAX)
    scaled = (view * r).clamp(-max_e, max_e)
    w = words.contiguous() if words is not None else None
    q = elem(scaled.contiguous(), fmt.element, rounding, w, rbits)
    return q * (p * x_scale) if fmt.tensor_scale else q * x_scale
