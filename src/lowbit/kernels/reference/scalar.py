"""Reference rounding onto scalar formats (float, power-of-two, fixed point, integer).

Each function takes a contiguous fp32 tensor and returns the rounded fp32 tensor.  ``shift``
(an int64 tensor or 0) multiplies the format by ``2^shift`` element by element: block formats
round ``x / 2^shift`` onto the element format exactly this way, without a lossy division.
"""

from __future__ import annotations

from typing import Optional

import torch

from ...formats import FP32_MAX, ExpFormat, FixedPoint, FloatFormat, IntFormat, Rounding
from ...formats.modes import Specials
from .core import IntLike, as_tensor, compose, decompose, pow2, round_to_quantum

__all__ = ["quantize_float", "quantize_exp", "quantize_fixed", "carrier_max", "apply_overflow"]

_NAN = float("nan")
_INF = float("inf")


def carrier_max(fmt: FloatFormat) -> float:
    """The largest value of ``fmt`` that fp32 can hold: ``fmt.max``, or its top grid value
    below 2^128 when the format's range passes fp32's (then fp32's overflow applies)."""
    return (2.0 - 2.0**-fmt.man) * 2.0**127 if fmt.max > FP32_MAX else fmt.max


def apply_overflow(v: torch.Tensor, neg: torch.Tensor, vmax: torch.Tensor, rounding: Rounding,
              overflow_value: float) -> torch.Tensor:
    """Apply IEEE 754 §7.4 to rounded magnitudes ``v`` (> ``vmax`` means past the range):
    ``toward_zero``/``odd`` give ±max, ``up``/``down`` overflow only in their direction."""
    over = v > vmax
    if rounding in (Rounding.TOWARD_ZERO, Rounding.ODD):
        ovf = torch.zeros_like(over)
    elif rounding is Rounding.UP:
        ovf = over & ~neg
    elif rounding is Rounding.DOWN:
        ovf = over & neg
    else:
        ovf = over
    v = torch.where(over, vmax, v)
    return torch.where(ovf, torch.full_like(v, overflow_value), v)


def quantize_float(x: torch.Tensor, fmt: FloatFormat, rounding: Rounding,
                   words: Optional[torch.Tensor], rbits: int, shift: IntLike = 0) -> torch.Tensor:
    """Round onto ``fmt`` (times ``2^shift``) with the semantics of ``lowbit.quantize``."""
    d = decompose(x)
    shift = as_tensor(shift, d.e0)
    emin = shift + fmt.emin
    if fmt.subnormals:
        q = torch.maximum(d.etrue, emin) - fmt.man
    else:  # flush zone: the grid {0, 2^emin}
        q = torch.where(d.etrue < emin, emin, d.etrue - fmt.man)
    k, q_out = round_to_quantum(d, q, rounding, words, rbits)
    v = compose(k, q_out, torch.zeros_like(d.neg))
    beyond = fmt.max > FP32_MAX
    vmax = carrier_max(fmt) * pow2(shift.clamp(-149, 127))
    if fmt.saturate and not beyond:
        v = torch.minimum(v, vmax)
    else:
        v = apply_overflow(v, d.neg, vmax, rounding, _INF if beyond or fmt.has_inf else _NAN)
    v = torch.where(d.neg, -v, v)
    v = _specials(x, v, d, fmt, vmax, beyond)
    if not fmt.has_neg_zero:
        v = torch.where(v == 0, torch.zeros_like(v), v)
    return v


def _specials(x: torch.Tensor, v: torch.Tensor, d, fmt: FloatFormat, vmax: torch.Tensor,
              beyond: bool) -> torch.Tensor:
    inf = d.nonfinite & ~d.nan
    if beyond or (fmt.has_inf and not fmt.saturate):
        inf_out = x
    elif fmt.saturate:
        inf_out = torch.where(d.neg, -vmax, vmax)
    else:
        inf_out = torch.full_like(x, _NAN)
    v = torch.where(inf, inf_out, v)
    v = torch.where(d.nan, x, v)
    if not fmt.signed:
        neg_out = _NAN if fmt.has_nan else 0.0
        v = torch.where(d.neg & ~d.nan & (v != 0), torch.full_like(v, neg_out), v)
    return v


def quantize_exp(x: torch.Tensor, fmt: ExpFormat, rounding: Rounding,
                 words: Optional[torch.Tensor], rbits: int, shift: IntLike = 0) -> torch.Tensor:
    """Round ``|x|`` onto the powers of two ``2^emin .. 2^emax`` (see ``ExpFormat``)."""
    a = x.abs()
    d = decompose(a)
    q = torch.maximum(d.etrue, as_tensor(fmt.emin, d.e0))
    k, q_out = round_to_quantum(d, q, rounding, words, rbits)
    v = compose(k, q_out, d.neg)
    v = torch.where(v == 0, torch.full_like(v, fmt.min_normal), v)
    vmax = min(fmt.max, 2.0**127)
    # |x| is positive, so down and odd behave as toward_zero at the top.
    if rounding in (Rounding.TOWARD_ZERO, Rounding.ODD, Rounding.DOWN):
        over = torch.zeros_like(d.neg)
    else:
        over = v > vmax
    v = torch.where(v > vmax, torch.full_like(v, vmax), v)
    if not fmt.saturate:
        v = torch.where(over | d.nonfinite, torch.full_like(v, _NAN), v)
    return torch.where(d.nan, torch.full_like(v, _NAN), v)


def quantize_fixed(x: torch.Tensor, fmt, rounding: Rounding, words: Optional[torch.Tensor],
                   rbits: int, shift: IntLike = 0) -> torch.Tensor:
    """Round onto ``k · 2^(quantum_exp + shift)`` and clamp ``k`` to [qmin, qmax]
    (``FixedPoint`` with ``clamp=False`` leaves the grid unbounded; NaN stays NaN)."""
    d = decompose(x)
    q = as_tensor(shift, d.e0) + fmt.quantum_exp
    k, q_out = round_to_quantum(d, q, rounding, words, rbits)
    v = compose(k, q_out, d.neg)
    if fmt.clamp:
        step = pow2(q.clamp(-149, 127))
        v = torch.minimum(torch.maximum(v, step * fmt.qmin), step * fmt.qmax)
    v = torch.where(d.nonfinite & ~d.nan & (not fmt.clamp), x, v)
    if fmt.qmin == 0:  # unsigned integers have no -0
        v = torch.where(v == 0, torch.zeros_like(v), v)
    return torch.where(d.nan, x, v)
