"""The reference backend: readable, vectorised torch ops; the specification of every kernel."""

from __future__ import annotations

from typing import Optional

import torch

from ...formats import BlockFormat, ExpFormat, FixedPoint, FloatFormat, IntFormat, Rounding
from ..dispatch import Backend, register
from ..philox import random_words
from .block import quantize_block
from .scalar import quantize_exp, quantize_fixed, quantize_float

__all__ = ["quantize_block", "quantize_exp", "quantize_fixed", "quantize_float"]


def _words(x: torch.Tensor, rounding: Rounding, seed: Optional[int]) -> Optional[torch.Tensor]:
    if rounding is not Rounding.STOCHASTIC:
        return None
    return random_words(x.numel(), seed, x.device).view(x.shape)


def _scalar(fn):
    def run(x: torch.Tensor, fmt, rounding: Rounding, rbits: int, seed: Optional[int]):
        return fn(x, fmt, rounding, _words(x, rounding, seed), rbits)

    return run


register(Backend.REFERENCE, FloatFormat)(_scalar(quantize_float))
register(Backend.REFERENCE, ExpFormat)(_scalar(quantize_exp))
register(Backend.REFERENCE, FixedPoint)(_scalar(quantize_fixed))
register(Backend.REFERENCE, IntFormat)(_scalar(quantize_fixed))
register(Backend.REFERENCE, BlockFormat)(
    lambda x, fmt, rounding, rbits, seed: quantize_block(
        x, fmt, rounding, _words(x, rounding, seed), rbits)
)
