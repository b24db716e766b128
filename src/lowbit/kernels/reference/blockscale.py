"""Block scales: the power-of-two rules (FLOOR, CEIL, EVEN, RCEIL) and the general path."""

from __future__ import annotations

import torch

from ...formats import BlockFormat, ExpFormat, ScaleRule
from .core import decompose

__all__ = ["scale_exponent", "general_scale"]


def _scale_range(fmt: BlockFormat) -> tuple:
    s = fmt.scale
    if isinstance(s, ExpFormat):
        return s.emin, min(s.emax, 127)
    lo = s.emin - s.man if s.subnormals else s.emin
    return max(lo, -149), min(s.emax, 127)


def scale_exponent(amax: torch.Tensor, fmt: BlockFormat) -> torch.Tensor:
    """``k`` with block scale ``X = 2^k`` from the block amax (int64, amax's shape)."""
    d = decompose(amax)
    pow2 = (d.sig & (d.sig - 1)) == 0
    rule = fmt.scale_rule
    if rule is ScaleRule.FLOOR:
        e = d.etrue
    elif rule is ScaleRule.CEIL:
        e = d.etrue + (~pow2).to(torch.int64)
    elif rule is ScaleRule.EVEN:
        raise NotImplementedError
    else:
        raise NotImplementedError
    lo, hi = _scale_range(fmt)
    return (e - fmt.emax_elem).clamp(lo, hi)


def general_scale(view, amax, fmt, rounding, words, rbits, elem, x):
    raise NotImplementedError("AMAX scale rule")
