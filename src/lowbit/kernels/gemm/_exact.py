"""One rounding of an exact real number onto a format: the arithmetic every simulated GEMM
operation reduces to.

An operation's exact result ``x`` (a product of two fp32 values, or the sum of two such
terms) is held as an unevaluated pair ``x = hi + lo`` of float64 values: ``hi = fl64(x)`` and
``lo`` its exact error (``two_sum``, Knuth TAOCP vol. 2 §4.2.2).  Every such ``x`` is a
multiple of 2^-298 of magnitude below 2^257, so ``hi`` is a normal float64 (or zero, and then
``lo = 0``) and ``|lo| <= ulp(hi) / 2``.

``round_pair`` rounds ``x`` itself, once, onto a target grid ``k · 2^q``: it forms the integer
``N = floor(|x| / 2^(q - 32))`` exactly from ``hi``'s 53-bit significand and ``lo``, with a
sticky flag for anything below, so ``k = N >> 32`` is the kept integer and ``r = N mod 2^32``
the remainder in units of 2^-32 of a step.  Then, as ``reference.core.round_to_quantum``:

* nearest: up iff ``r > 2^31``, or ``r == 2^31`` and (sticky or ``k`` odd);
* nearest_away: up iff ``r >= 2^31``; toward_zero: never; up/down: iff inexact and the sign
  is +/-; odd: iff inexact and ``k`` even;
* stochastic: up iff ``r + R >= 2^32`` with ``R`` the event's 32-bit random word, so
  P(up) = floor(2^32 · frac) / 2^32 where ``frac`` is the exact fraction of a step (bias below
  2^-32 of a step, none when the remainder has at most 32 bits).

The grid exponent is the format's: ``q = max(floor(log2 |x|), emin) - man`` for floats (flushed
formats: ``emin`` below it), ``q = -fl`` for fixed point, never below 2^-149, the fp32
carrier's smallest step, so the result is one fp32 value (a format whose grid passes the
carrier's rounds within it, as ``lowbit.quantize`` does).  Overflow, saturation, the format's
specials, its sign and -0 rules then follow ``lowbit.quantize`` exactly; ±Inf and NaN results
(``hi`` non-finite) are passed to the reference quantizer as fp32 values.
"""

from __future__ import annotations

from typing import Optional, Tuple

import torch

from ...formats import FixedPoint, FloatFormat, IntFormat, Rounding
from ..reference.scalar import apply_overflow, carrier_max, quantize_fixed, quantize_float

__all__ = ["two_sum", "round_pair", "add_round", "pow2_f64"]

_FRAC52 = (1 << 52) - 1
_HIDDEN = 1 << 52
_LOW32 = (1 << 32) - 1
_HALF = 1 << 31
_NAN = float("nan")
_INF = float("inf")
#: The fp32 carrier's smallest step, 2^-149: no grid rounds finer than the carrier holds.
CARRIER_QMIN = -149
# Fixed-point grids: steps above 2^(etrue - 28) leave k < 2^29 (so N < 2^61); a value that far
# above its grid step is past every bounded fixed-point range and is clamped anyway.
_FIXED_SPAN = 28


def two_sum(a: torch.Tensor, b: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """``(s, e)`` with ``s = fl(a + b)`` and ``s + e = a + b`` exactly (float64, no overflow)."""
    s = a + b
    bb = s - a
    return s, (a - (s - bb)) + (b - bb)


def pow2_f64(e: torch.Tensor) -> torch.Tensor:
    """Exact float64 ``2^e`` for integer ``e`` in the normal range [-1022, 1023]."""
    return ((e + 1023) << 52).view(torch.float64)


def _grid_exponent(etrue: torch.Tensor, fmt) -> torch.Tensor:
    if isinstance(fmt, FloatFormat):
        if fmt.subnormals:
            q = torch.clamp(etrue, min=fmt.emin) - fmt.man
        else:  # flush zone: the grid {0, 2^emin}
            q = torch.where(etrue < fmt.emin, torch.full_like(etrue, fmt.emin), etrue - fmt.man)
        return q.clamp(min=CARRIER_QMIN)
    return torch.clamp(etrue - _FIXED_SPAN, min=fmt.quantum_exp)


def _decide(k: torch.Tensor, rem: torch.Tensor, sticky: torch.Tensor, neg: torch.Tensor,
            rounding: Rounding, words: Optional[torch.Tensor]) -> torch.Tensor:
    inexact = (rem != 0) | sticky
    odd = (k & 1) == 1
    if rounding is Rounding.NEAREST:
        return (rem > _HALF) | ((rem == _HALF) & (sticky | odd))
    if rounding is Rounding.NEAREST_AWAY:
        return rem >= _HALF
    if rounding is Rounding.TOWARD_ZERO:
        return torch.zeros_like(inexact)
    if rounding is Rounding.UP:
        return inexact & ~neg
    if rounding is Rounding.DOWN:
        return inexact & neg
    if rounding is Rounding.ODD:
        return inexact & ~odd
    if words is None:
        raise ValueError("stochastic rounding needs random words")
    return (rem + words) > _LOW32


def _round_magnitude(hi: torch.Tensor, lo: torch.Tensor, fmt, rounding: Rounding,
                     words: Optional[torch.Tensor]) -> Tuple[torch.Tensor, torch.Tensor]:
    """``(|v|, neg)``: ``|x|`` rounded onto the grid (unbounded above) as fp32, and the sign."""
    bits = hi.view(torch.int64)
    neg = bits < 0
    mag = bits & 0x7FFF_FFFF_FFFF_FFFF
    field = mag >> 52
    sig = torch.where(field > 0, (mag & _FRAC52) | _HIDDEN, 0)
    e0 = field.clamp(min=1) - 1075
    opposite = (lo != 0) & ((lo < 0) != neg)  # |x| = |hi| - |lo|
    # floor(log2 |x|): one less than hi's exponent when hi is a power of two and |x| < |hi|.
    etrue = e0 + 52 - ((sig == _HIDDEN) & opposite).to(torch.int64)
    q = _grid_exponent(etrue, fmt)
    t = q - 32 - e0  # N = floor(|x| · 2^-(q-32)) = floor(sig · 2^-t + lo')
    # t >= 0: lo' is below half a unit, so it only matters where sig's dropped bits are zero.
    sh = t.clamp(0, 60)
    kept = sig >> sh
    dropped = sig - (kept << sh)
    n_right = kept - ((dropped == 0) & opposite).to(torch.int64)
    sticky_right = (dropped != 0) | (lo != 0)
    # t < 0 (t >= -9 by the bounds on q): lo' in units is an exact float64; take its floor.
    lo_units = torch.where(opposite, -lo.abs(), lo.abs()) * pow2_f64(32 - q)
    lo_floor = torch.floor(lo_units)
    n_left = (sig << (-t).clamp(0, 9)) + lo_floor.to(torch.int64)
    right = t >= 0
    n = torch.where(right, n_right, n_left)
    sticky = torch.where(right, sticky_right, lo_floor != lo_units)
    k = n >> 32
    k = k + _decide(k, n & _LOW32, sticky, neg, rounding, words).to(torch.int64)
    # k · 2^q is exact in float64; to fp32 it is exact too (k <= 2^24 for floats, q >= -149)
    # or +Inf past fp32's range (fixed-point values that far out are clamped anyway).
    return (k.double() * pow2_f64(q.clamp(max=200))).float(), neg


def _finish_float(v: torch.Tensor, neg: torch.Tensor, fmt: FloatFormat,
                  rounding: Rounding) -> torch.Tensor:
    """Overflow (IEEE 754 §7.4), sign, unsigned and -0 rules of ``quantize_float``."""
    beyond = fmt.exceeds_carrier
    vmax = carrier_max(fmt)
    if fmt.saturate and not beyond:
        v = torch.clamp(v, max=vmax)
    else:
        v = apply_overflow(v, neg, vmax, rounding, _INF if beyond or fmt.has_inf else _NAN)
    v = torch.where(neg, -v, v)
    if not fmt.signed:
        v = torch.where(neg & (v != 0), _NAN if fmt.has_nan else 0.0, v)
    if not fmt.has_neg_zero:
        v = torch.where(v == 0, torch.zeros_like(v), v)
    return v


def _finish_fixed(v: torch.Tensor, neg: torch.Tensor, fmt) -> torch.Tensor:
    """Sign, clamp into [qmin, qmax] steps (kept when equal, so -0 stays), no -0 when qmin = 0."""
    v = torch.where(neg, -v, v)
    step = 2.0 ** fmt.quantum_exp
    lo, hi = step * fmt.qmin, step * fmt.qmax
    v = torch.where(v < lo, lo, torch.where(v > hi, hi, v))
    if fmt.qmin == 0:
        v = torch.where(v == 0, torch.zeros_like(v), v)
    return v


def round_pair(hi: torch.Tensor, lo: torch.Tensor, fmt, rounding: Rounding,
               words: Optional[torch.Tensor]) -> torch.Tensor:
    """fp32 ``Q(hi + lo)``: the exact value rounded once onto ``fmt`` (a ``FloatFormat``, a
    clamped ``FixedPoint`` or an ``IntFormat``); ``words`` are int64 tensors of uint32 for
    ``stochastic`` (ignored otherwise)."""
    v, neg = _round_magnitude(hi, lo, fmt, rounding, words)
    if isinstance(fmt, FloatFormat):
        v = _finish_float(v, neg, fmt, rounding)
        special = quantize_float
    else:
        v = _finish_fixed(v, neg, fmt)
        special = quantize_fixed
    # A sum of finite values below 2^257 cannot overflow float64: one cheap test for Inf/NaN.
    if not bool(torch.isfinite(hi.sum())):
        nonfinite = ~torch.isfinite(hi)
        carrier = torch.where(nonfinite, hi, 0.0).to(torch.float32)
        zeros = torch.zeros_like(carrier, dtype=torch.int64)
        v = torch.where(nonfinite, special(carrier, fmt, rounding, zeros, 32), v)
    return v


def add_round(x: torch.Tensor, y: torch.Tensor, fmt, rounding: Rounding,
              words: Optional[torch.Tensor]) -> torch.Tensor:
    """fp32 ``Q(x + y)`` for float64 tensors holding fp32 values or exact fp32 products
    (broadcast); the sum is exact before its one rounding.  An exact zero sum is -0 only when
    both terms are -0 (IEEE 754 §6.3 under round-to-nearest), whatever the rounding mode."""
    hi, lo = two_sum(x, y)
    return round_pair(hi, lo, fmt, rounding, words)


def validate_family(fmt, param: str) -> None:
    """Raise unless ``fmt`` can hold running sums and products (see ``round_pair``)."""
    if isinstance(fmt, FloatFormat) or isinstance(fmt, IntFormat):
        return
    if isinstance(fmt, FixedPoint):
        if not fmt.clamp:
            raise ValueError(f"{param}={fmt!r}: an unclamped fixed-point grid has no bound, so "
                             "its sums need not fit the fp32 carrier; use clamp=True")
        return
    raise ValueError(f"{param} must be a FloatFormat, a clamped FixedPoint or an IntFormat; got "
                     f"{fmt!r} ({type(fmt).__name__})")
