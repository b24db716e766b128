"""One rounded GEMM operation, ``Q(a·b + c)`` for fp32 tiles, in three exact ways.

* ``_round_exact``: the general path, ``_exact.round_pair`` of the reference on float64 pairs
  (``hi = fl64(c + a·b)``, ``lo`` its TwoSum error; the product is exact in float64) with
  int64 integer arithmetic.  Every format and mode, stochastic included.
* FAST: ``ro = RO24(a·b + c)``, the exact value rounded to odd at fp32's 24 bits, then the
  elementwise rounding of ``ro`` (``_round_float`` / ``_round_fixed`` / ``_round_uniform``).
  Rounding to odd at p + 2 bits and then to p bits in any non-stochastic mode equals one
  rounding to p bits (Boldo & Melquiond, "Emulation of FMA and correctly rounded sums: proved
  algorithms using rounding to odd", IEEE TC 2008), so this is exact wherever every decision
  point of the format (grid values and midpoints, to 2^-148) is a multiple of two fp32 ulps:
  ``man <= 21`` and a smallest step of at least 2^-147 (the wrapper checks).  On the GPU,
  ``RO24`` is three fused multiply-adds with directed roundings (``rz | (ru != rd)``); in the
  interpreter it is ``_round_exact`` onto fp32 with ``odd``.
* NATIVE (fp32 to nearest, GPU): the hardware FMA, one IEEE rounding.

Operation flags are ints (``.._flags``); the eight format scalars ``x0..x7`` are
``_scalar.FloatParams``' ``emin, man, vmax, saturate, ovf, inf_out, neg_out, neg_zero`` for
floats and ``q, 0, lo, hi, clamp, 0, 0, 0`` for fixed point.
"""

import triton
import triton.language as tl

from .. import _flags
from ._core import (
    _DOWN, _NEAREST, _NEAREST_AWAY, _ODD, _STOCHASTIC, _TOWARD_ZERO, _UP, _round_fixed,
    _round_float,
)

_PRESENT = tl.constexpr(_flags.PRESENT)
_FIXED = tl.constexpr(_flags.FIXED)
_SUBNORMALS = tl.constexpr(_flags.SUBNORMALS)
_SIGNED = tl.constexpr(_flags.SIGNED)
_WIDE = tl.constexpr(_flags.WIDE)
_FAST = tl.constexpr(_flags.FAST)
_UNIFORM = tl.constexpr(_flags.UNIFORM)
_SATURATE = tl.constexpr(_flags.SATURATE)
_NATIVE = tl.constexpr(_flags.NATIVE)
_RSHIFT = tl.constexpr(_flags.ROUNDING_SHIFT)
# In the interpreter a constexpr argument is a plain int, and constexpr has no reflected
# bitwise operators: flag tests keep the constexpr on the left.
_RDIV = tl.constexpr(1 << _flags.ROUNDING_SHIFT)
_HIDDEN = tl.constexpr(1 << 52)
_FRAC52 = tl.constexpr((1 << 52) - 1)
_ABS64 = tl.constexpr(0x7FFFFFFFFFFFFFFF)
_HALF = tl.constexpr(1 << 31)
_LOW32 = tl.constexpr(0xFFFFFFFF)
_FP32_MAX_BITS = tl.constexpr(0x7F7FFFFF)
_INF_BITS = tl.constexpr(0x7F800000)
_QNAN_BITS = tl.constexpr(0x7FC00000)
_SIGN32 = tl.constexpr(-(2**31))  # 0x80000000 as an int32


@triton.jit
def _two_sum(a, b):
    """Knuth's TwoSum on float64: ``(s, e)``, ``s = fl(a + b)``, ``s + e = a + b``."""
    s = a + b
    bb = s - a
    return s, (a - (s - bb)) + (b - bb)


@triton.jit
def _negate(x):
    """``-x`` for fp32 by its sign bit: Triton's unary minus is ``0 - x``, which gives +0 for
    +0 (IEEE 754 §6.3), so it cannot make a -0."""
    return (x.to(tl.int32, bitcast=True) ^ _SIGN32).to(tl.float32, bitcast=True)


@triton.jit
def _signed(v, neg):
    """``v`` (a magnitude, +0 included) with the sign ``neg``."""
    return (v.to(tl.int32, bitcast=True) | tl.where(neg, _SIGN32, 0)).to(tl.float32, bitcast=True)


@triton.jit
def _pow2_f64(e):
    return ((e + 1023) << 52).to(tl.float64, bitcast=True)


@triton.jit
def _pow2_f32(e):
    """Exact fp32 ``2^e`` for int32 ``e`` in [-149, 127] (``reference.core.pow2``)."""
    sub = 1 << tl.minimum(tl.maximum(e + 149, 0), 22)
    return tl.where(e >= -126, (e + 127) << 23, sub).to(tl.float32, bitcast=True)


@triton.jit
def _round_grid(hi, lo, word, emin, man, q_fixed, FIXED: tl.constexpr,
                SUBNORMALS: tl.constexpr, ROUNDING: tl.constexpr):
    """``_exact._round_magnitude``: ``(|v|, neg)``, ``|hi + lo|`` rounded onto the format's
    grid (unbounded above, +Inf past fp32) and the sign."""
    bits = hi.to(tl.int64, bitcast=True)
    neg = bits < 0
    mag = bits & _ABS64
    field = mag >> 52
    sig = tl.where(field > 0, (mag & _FRAC52) | _HIDDEN, 0)
    e0 = tl.maximum(field, 1) - 1075
    opposite = (lo != 0) & ((lo < 0) != neg)
    etrue = e0 + 52 - ((sig == _HIDDEN) & opposite).to(tl.int64)
    if FIXED:
        q = tl.maximum(etrue - 28, q_fixed)
    else:
        if SUBNORMALS:
            q = tl.maximum(etrue, emin) - man
        else:
            q = tl.where(etrue < emin, emin, etrue - man)
        q = tl.maximum(q, -149)
    t = q - 32 - e0
    sh = tl.minimum(tl.maximum(t, 0), 60)
    dropped = sig & ((tl.full(sh.shape, 1, tl.int64) << sh) - 1)
    n_right = (sig >> sh) - ((dropped == 0) & opposite).to(tl.int64)
    lo_abs = tl.abs(lo)
    lo_units = tl.where(opposite, -lo_abs, lo_abs) * _pow2_f64(32 - q)
    trunc = lo_units.to(tl.int64)
    lo_floor = trunc - (trunc.to(tl.float64) > lo_units).to(tl.int64)
    n_left = (sig << tl.minimum(tl.maximum(-t, 0), 9)) + lo_floor
    right = t >= 0
    n = tl.where(right, n_right, n_left)
    sticky = tl.where(right, (dropped != 0) | (lo != 0), lo_floor.to(tl.float64) != lo_units)
    k = n >> 32
    rem = n & _LOW32
    inexact = (rem != 0) | sticky
    odd = (k & 1) == 1
    if ROUNDING == _NEAREST:
        up = (rem > _HALF) | ((rem == _HALF) & (sticky | odd))
    elif ROUNDING == _NEAREST_AWAY:
        up = rem >= _HALF
    elif ROUNDING == _TOWARD_ZERO:
        up = inexact & False
    elif ROUNDING == _UP:
        up = inexact & (neg == 0)
    elif ROUNDING == _DOWN:
        up = inexact & neg
    elif ROUNDING == _ODD:
        up = inexact & (odd == 0)
    else:
        tl.static_assert(ROUNDING == _STOCHASTIC)
        up = (rem + word.to(tl.int64)) > _LOW32
    k = k + up.to(tl.int64)
    qc = tl.minimum(q, 200).to(tl.int32)
    qa = tl.minimum(qc, 127)
    return k.to(tl.float32) * _pow2_f32(qa) * _pow2_f32(qc - qa), neg


@triton.jit
def _round_exact(hi, lo, word, x0, x1, x2, x3, x4, x5, x6, x7, F: tl.constexpr):
    """``_exact.round_pair``: fp32 ``Q(hi + lo)`` onto the format of flags ``F``."""
    ROUNDING: tl.constexpr = (F // _RDIV) % 16
    FIXED: tl.constexpr = (_FIXED & F) != 0
    SUBNORMALS: tl.constexpr = (_SUBNORMALS & F) != 0
    v, neg = _round_grid(hi, lo, word, x0, x1, x0, FIXED, SUBNORMALS, ROUNDING)
    h32 = hi.to(tl.float32).to(tl.int32, bitcast=True)  # ±Inf or NaN where it matters
    if FIXED:
        lo_f = x2.to(tl.float32, bitcast=True)
        hi_f = x3.to(tl.float32, bitcast=True)
        v = _signed(v, neg)
        v = tl.where(v < lo_f, lo_f, tl.where(v > hi_f, hi_f, v))
        v = tl.where((v == 0) & (x2 == 0), 0.0, v)  # unsigned: the lower bound is +0
        special = _round_fixed(h32, 0, 32, x0, x2, x3, x4, _NEAREST)
    else:
        vmax = x2.to(tl.float32, bitcast=True)
        over = v > vmax
        if ROUNDING == _TOWARD_ZERO or ROUNDING == _ODD:
            ovf_dir = over & False
        elif ROUNDING == _UP:
            ovf_dir = over & (neg == 0)
        elif ROUNDING == _DOWN:
            ovf_dir = over & neg
        else:
            ovf_dir = over
        v = tl.where(over, tl.where(ovf_dir & (x3 == 0), x4.to(tl.float32, bitcast=True), vmax), v)
        v = _signed(v, neg)
        if (_SIGNED & F) == 0:
            v = tl.where(neg & (v != 0), x6.to(tl.float32, bitcast=True), v)
        v = tl.where((v == 0) & (x7 == 0), 0.0, v)
        special = _round_float(h32, 0, 32, 0, x2, x0, x1, x3, x4, x5, x6, x7, 0, _NEAREST, False,
                               SUBNORMALS, (_SIGNED & F) != 0, (_WIDE & F) != 0)
    nonfinite = (hi.to(tl.int64, bitcast=True) & _ABS64) >= (0x7FF << 52)
    return tl.where(nonfinite, special.to(tl.float32, bitcast=True), v)


@triton.jit
def _ro_fma(a, b, c, ASM: tl.constexpr):
    """int32 bits of ``RO24(a·b + c)``: the exact value rounded to odd onto fp32."""
    if ASM:
        return tl.inline_asm_elementwise(
            asm="""{
            .reg .f32 ru, rd, rz;
            .reg .pred inexact;
            fma.rp.f32 ru, $1, $2, $3;
            fma.rm.f32 rd, $1, $2, $3;
            fma.rz.f32 rz, $1, $2, $3;
            setp.neu.f32 inexact, ru, rd;
            mov.b32 $0, rz;
            @inexact or.b32 $0, $0, 1;
            }""",
            constraints="=r,f,f,f", args=[a, b, c], dtype=tl.int32, is_pure=True, pack=1)
    else:
        hi, lo = _two_sum(c.to(tl.float64), a.to(tl.float64) * b.to(tl.float64))
        vmax = tl.full([], _FP32_MAX_BITS, tl.int32)  # fp32's own FloatParams
        inf = tl.full([], _INF_BITS, tl.int32)
        v = _round_exact(hi, lo, 0, -126, 23, vmax, 0, inf, inf, 0, 1,
                         _PRESENT | _SUBNORMALS | _SIGNED | (_ODD << _RSHIFT))
        return v.to(tl.int32, bitcast=True)


@triton.jit
def _round_uniform(bits, man, vmax, SATURATE: tl.constexpr, NAN_FREE: tl.constexpr,
                   ROUNDING: tl.constexpr):
    """``_round_float`` for IEEE formats with fp32's exponent range (bf16, tf32, e8mX): the
    grid is the encoding with its ``23 - man`` low bits cleared, at every magnitude, so the
    rounding is an integer add and mask; the carry reaches +Inf exactly where IEEE overflows
    (never for ``toward_zero``/``odd``, only outward for ``up``/``down``), and Inf and quiet
    NaN have no low bits to round."""
    s = 23 - man
    low = (1 << s) - 1
    if NAN_FREE and not SATURATE and (ROUNDING == _NEAREST or ROUNDING == _TOWARD_ZERO):
        # The sign bit never receives a carry from a finite or infinite magnitude.
        if ROUNDING == _NEAREST:
            return (bits + (low >> 1) + ((bits >> s) & 1)) & ~low
        return bits & ~low
    mag = bits & 0x7FFFFFFF
    sign = bits ^ mag
    mag = tl.minimum(mag, _QNAN_BITS)  # any NaN becomes the quiet NaN, which rounds to itself
    if ROUNDING == _NEAREST:
        kept = (mag + (low >> 1) + ((mag >> s) & 1)) & ~low
    elif ROUNDING == _NEAREST_AWAY:
        kept = (mag + ((low + 1) >> 1)) & ~low
    elif ROUNDING == _TOWARD_ZERO:
        kept = mag & ~low
    elif ROUNDING == _UP:
        kept = tl.where(sign == 0, mag + low, mag) & ~low
    elif ROUNDING == _DOWN:
        kept = tl.where(sign != 0, mag + low, mag) & ~low
    else:
        tl.static_assert(ROUNDING == _ODD)
        kept = (mag & ~low) | (((mag & low) != 0).to(tl.int32) << s)
    if SATURATE:
        kept = tl.where(mag <= _INF_BITS, tl.minimum(kept, vmax), kept)
    return kept | sign


@triton.jit
def _qfma(a, b, c, word, x0, x1, x2, x3, x4, x5, x6, x7, F: tl.constexpr, ASM: tl.constexpr,
          NAN_FREE: tl.constexpr):
    """fp32 ``Q(a·b + c)``: the exact value of the fused multiply-add rounded once onto the
    format of flags ``F`` (same-shape fp32 tiles; ``word`` the stochastic words)."""
    ROUNDING: tl.constexpr = (F // _RDIV) % 16
    if ASM and (_NATIVE & F) != 0:
        return tl.fma(a, b, c)
    elif (_FAST & F) != 0:
        ro = _ro_fma(a, b, c, ASM)
        if (_UNIFORM & F) != 0:
            out = _round_uniform(ro, x1, x2, (_SATURATE & F) != 0, NAN_FREE, ROUNDING)
        elif (_FIXED & F) != 0:
            out = _round_fixed(ro, 0, 32, x0, x2, x3, x4, ROUNDING)
        else:
            out = _round_float(ro, 0, 32, 0, x2, x0, x1, x3, x4, x5, x6, x7, 0, ROUNDING, False,
                               (_SUBNORMALS & F) != 0, (_SIGNED & F) != 0, (_WIDE & F) != 0)
        return out.to(tl.float32, bitcast=True)
    else:
        hi, lo = _two_sum(c.to(tl.float64), a.to(tl.float64) * b.to(tl.float64))
        return _round_exact(hi, lo, word, x0, x1, x2, x3, x4, x5, x6, x7, F)
