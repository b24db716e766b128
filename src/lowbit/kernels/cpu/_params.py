"""Per-call constants of the CPU kernels, computed on the host from a format.

Each function takes an optional ``shift``: the format times ``2^shift``, which is how a block
with the power-of-two scale ``2^shift`` rounds its elements (``reference.scalar``'s
``shift``).  fp32 products are formed in fp32 as the reference forms them (numpy float32
arithmetic is IEEE, as torch's), so constants such as ``max · 2^shift`` round identically.
"""

from __future__ import annotations

import numpy as np

from ...formats import FP32_MAX, ExpFormat, FloatFormat, Rounding
from ..reference.scalar import carrier_max

__all__ = ["float_params", "exp_params", "fixed_params", "pow2_bits", "i32_tuple", "f32_bits"]

_INF = 0x7F800000
_NAN = 0x7FC00000
_SIGN = 0x80000000


def pow2_bits(q: int) -> int:
    """Bits of fp32 2^q: subnormal powers down to 2^-149 (lower q give 2^-149, as reference
    ``core.pow2``), Inf from 2^128 on."""
    if q >= 128:
        return _INF
    q = max(q, -149)
    return (q + 127) << 23 if q >= -126 else 1 << (q + 149)


def _f32(value) -> np.float32:
    """``value`` rounded to fp32 as torch rounds a Python scalar (±Inf past fp32's range)."""
    with np.errstate(over="ignore"):
        return np.float32(value)


def _bits(value: np.float32) -> int:
    return int(np.array(value, dtype=np.float32).view(np.uint32))


def f32_bits(value) -> int:
    """Bits of ``value`` rounded to fp32 (as torch rounds a Python scalar)."""
    return _bits(_f32(value))


def _pow2_f32(q: int) -> np.float32:
    """fp32 2^clamp(q, -149, 127): the reference's ``pow2(shift.clamp(-149, 127))``."""
    return np.array(pow2_bits(min(max(q, -149), 127)), dtype=np.uint32).view(np.float32)[()]


def _mul(a: np.float32, b: np.float32) -> np.float32:
    with np.errstate(over="ignore", under="ignore"):
        return np.float32(a * b)


def i32_tuple(values) -> tuple:
    """Ints or 32-bit patterns as a tuple of np.int32 (their low 32 bits): kernel constants."""
    return tuple(np.uint32(int(v) & 0xFFFFFFFF).view(np.int32) for v in values)


def float_params(fmt: FloatFormat, rounding: Rounding, shift: int = 0) -> tuple:
    """(grid, consts) of ``_scalar.float_kernel`` (see ``_scalar._float_finish``)."""
    qt = (fmt.emin - fmt.man if fmt.subnormals else fmt.emin) + shift
    grid = (fmt.emin + shift + 127, qt + 150, 23 - fmt.man, pow2_bits(qt))
    beyond = fmt.max > FP32_MAX
    vmax = _bits(_mul(_f32(carrier_max(fmt)), _pow2_f32(shift)))
    if fmt.saturate and not beyond:
        ovf_pos = ovf_neg = False
    elif rounding in (Rounding.TOWARD_ZERO, Rounding.ODD):
        ovf_pos = ovf_neg = False
    else:
        ovf_pos = rounding is not Rounding.DOWN
        ovf_neg = rounding is not Rounding.UP
    special = _INF if beyond or fmt.has_inf else _NAN
    if beyond or (fmt.has_inf and not fmt.saturate):
        inf_pos, inf_neg = _INF, _INF | _SIGN
    elif fmt.saturate:
        inf_pos, inf_neg = vmax, vmax | _SIGN
    else:
        inf_pos = inf_neg = _NAN
    ovf_p = special if ovf_pos else vmax
    ovf_n = (special if ovf_neg else vmax) | _SIGN
    vmax_n = vmax
    if not fmt.signed:  # any negative non-zero result becomes NaN (or +0 without NaN)
        vmax_n = 0
        ovf_n = inf_neg = _NAN if fmt.has_nan else 0
    negzero = 0 if fmt.has_neg_zero else _SIGN
    consts = (vmax, vmax_n, ovf_p, ovf_n, inf_pos, inf_neg, negzero)
    return i32_tuple(grid), i32_tuple(consts)


def exp_params(fmt: ExpFormat, rounding: Rounding) -> tuple:
    """(grid, consts) of ``_scalar.exp_kernel``."""
    grid = (fmt.emin + 127, fmt.emin + 150, pow2_bits(fmt.emin))
    can_overflow = rounding not in (Rounding.TOWARD_ZERO, Rounding.ODD, Rounding.DOWN)
    consts = (_bits(_f32(fmt.min_normal)), _bits(_f32(min(fmt.max, 2.0**127))),
              int(can_overflow), int(fmt.saturate))
    return i32_tuple(grid), i32_tuple(consts)


def fixed_params(fmt, rounding: Rounding, shift: int = 0) -> tuple:
    """(q + 150, bits of 2^q, lo, hi, keep) of ``_scalar.fixed_kernel``: the grid step 2^q,
    the clamp bounds (fp32; ±Inf without a clamp) and the |x| bits above which the input is
    returned (NaN; ±Inf too without a clamp)."""
    q = fmt.quantum_exp + shift
    if fmt.clamp:
        step = _pow2_f32(q)
        lo, hi, keep = _mul(_f32(fmt.qmin), step), _mul(_f32(fmt.qmax), step), _INF
    else:
        lo, hi, keep = np.float32(-np.inf), np.float32(np.inf), _INF - 1
    q150, q_bits, keep = i32_tuple((q + 150, pow2_bits(q), keep))
    return q150, q_bits, lo, hi, keep
