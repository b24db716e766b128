"""Triton device functions shared by every kernel: the rounding of
``lowbit.kernels.reference.core`` on fp32 bit patterns held as int32.

The kernels compute what the reference computes, in fewer integer operations:

* ``|x| = sig · 2^e0`` with ``e0 = max(field, 1) - 150`` and ``sig = |bits| - (max(field, 1)
  - 1) · 2^23`` (the hidden bit included for normals);
* the count of dropped bits ``s = max(q - e0, 0)`` comes straight from the format (no
  ``floor(log2)`` of normal inputs is needed: it is 23);
* the rounded magnitude is composed in the encoding itself: for ``s <= 23``, ``k · 2^(e0 + s)``
  is ``|bits|`` with its low ``s`` bits cleared, and adding ``2^s`` to it carries into the
  exponent field exactly as the value moves to the next binade (up to +Inf at the top); for
  ``s >= 24``, ``k`` is 0 and the result is 0 or the normal power ``2^(e0 + s)``.

All of it is integer arithmetic (the one float operation, an exact int-to-fp32 conversion for
``floor(log2)`` of subnormal inputs, runs only where a format needs it), so results cannot
depend on a GPU's denormal flushing or FMA contraction.  (The block kernels' scale arithmetic
is fp32 by definition; it uses IEEE ``div_rn`` and plain multiplies, which Triton compiles
without flushing.)  Shift amounts stay below 32: a shift
by the word width is undefined in LLVM.

Compile-time parameters are the rounding mode and a few family flags (``EXP``, ``SUBNORMALS``,
``SIGNED``, ``WIDE``); every numeric parameter is a runtime scalar.
"""

import triton
import triton.language as tl

from ....formats.modes import Rounding

__all__ = ["ROUNDING_CODE"]

#: The ``ROUNDING`` constexpr of each mode.
ROUNDING_CODE = {mode: i for i, mode in enumerate(Rounding)}

_NEAREST = tl.constexpr(ROUNDING_CODE[Rounding.NEAREST])
_NEAREST_AWAY = tl.constexpr(ROUNDING_CODE[Rounding.NEAREST_AWAY])
_TOWARD_ZERO = tl.constexpr(ROUNDING_CODE[Rounding.TOWARD_ZERO])
_UP = tl.constexpr(ROUNDING_CODE[Rounding.UP])
_DOWN = tl.constexpr(ROUNDING_CODE[Rounding.DOWN])
_ODD = tl.constexpr(ROUNDING_CODE[Rounding.ODD])
_STOCHASTIC = tl.constexpr(ROUNDING_CODE[Rounding.STOCHASTIC])

# The dropped-bit count is clamped at 56 as in ``round_to_quantum``: sig < 2^24, so the aligned
# remainder is 0 from there on and the clamp only bounds the shifts
# (tests/kernels/test_triton.py::test_far_below_the_grid_step ties the two together).
_MAX_SHIFT = tl.constexpr(56)
_INF_BITS = tl.constexpr(0x7F800000)
_SIGN_BIT = tl.constexpr(-(2**31))  # 0x80000000 as an int32
_ABS_MASK = tl.constexpr(0x7FFFFFFF)


@triton.jit
def _load(x_ptr, offs, n, ROWS: tl.constexpr):
    """Load a tile of fp32 as int32 patterns; only the last, partial tile is masked, so full
    tiles keep vector loads whatever ``n`` is."""
    if (tl.program_id(0).to(tl.int64) + 1) * (ROWS * 4) <= n:
        x = tl.load(x_ptr + offs)
    else:
        x = tl.load(x_ptr + offs, mask=offs < n, other=0.0)
    return x.to(tl.int32, bitcast=True)


@triton.jit
def _store(y_ptr, offs, n, bits, ROWS: tl.constexpr):
    """Store int32 patterns as fp32 (masked in the last, partial tile only)."""
    y = bits.to(tl.float32, bitcast=True)
    if (tl.program_id(0).to(tl.int64) + 1) * (ROWS * 4) <= n:
        tl.store(y_ptr + offs, y)
    else:
        tl.store(y_ptr + offs, y, mask=offs < n)


@triton.jit
def _philox(ctr, k0, k1):
    """Philox4x32-10 of counter ``(ctr mod 2^32, ctr >> 32, 0, 0)`` (int64 ``ctr``) under key
    ``(k0, k1)`` (uint32): the four uint32 words of ``tl.randint4x(seed, ctr)`` with ``seed =
    k0 + 2^32 k1``, written out here so that the kernels call no Triton library function (a
    kernel module can then be loaded both compiled and interpreted, see ``lowbit.kernels.triton``).
    Round constants of Salmon et al. (SC'11)."""
    c0 = ctr.to(tl.uint32)
    c1 = (ctr >> 32).to(tl.uint32)
    c2 = c0 * 0
    c3 = c2
    for _ in tl.static_range(10):
        h0 = tl.umulhi(c0, 0xD2511F53)
        h2 = tl.umulhi(c2, 0xCD9E8D57)
        l0 = c0 * 0xD2511F53
        l2 = c2 * 0xCD9E8D57
        c0, c1, c2, c3 = h2 ^ c1 ^ k0, l2, h0 ^ c3 ^ k1, l0
        k0 = k0 + 0x9E3779B9
        k1 = k1 + 0xBB67AE85
    return c0, c1, c2, c3


@triton.jit
def _words(ctr, k0, k1):
    """The stream's words for a tile of shape ``[ROWS, 4]`` whose row ``i`` holds the four
    elements of Philox counter ``ctr[i]``: word ``j`` to column ``j`` (``lowbit.kernels.philox``;
    one Philox call serves four elements)."""
    r0, r1, r2, r3 = _philox(ctr, k0, k1)
    j = tl.arange(0, 4)[None, :]
    return tl.where(j == 0, r0[:, None],
                    tl.where(j == 1, r1[:, None], tl.where(j == 2, r2[:, None], r3[:, None])))


@triton.jit
def _element_words(n, k0, k1):
    """The word of each logical element index ``n`` (int64, any shape): one Philox call per
    element, for layouts whose groups of four are not rows of a tile."""
    r0, r1, r2, r3 = _philox(n >> 2, k0, k1)
    j = n & 3
    return tl.where(j == 0, r0, tl.where(j == 1, r1, tl.where(j == 2, r2, r3)))


@triton.jit
def _split(bits):
    """``core.decompose``, the parts every format needs: (mag, e0, sig)."""
    mag = bits & _ABS_MASK
    f1 = tl.maximum(mag >> 23, 1)
    return mag, f1 - 150, mag - ((f1 - 1) << 23)


@triton.jit
def _log2(sig):
    """``floor(log2 sig)`` for ``0 <= sig < 2^24`` (-127 for 0), from the exponent of the exact
    conversion of ``sig`` to fp32."""
    return (sig.to(tl.float32).to(tl.int32, bitcast=True) >> 23) - 127


@triton.jit
def _round_bits(mag, sig, e0, s, neg, word, rbits, ROUNDING: tl.constexpr):
    """``core.round_to_quantum`` then ``core.compose``: the fp32 pattern of ``|x|`` rounded to
    a multiple of ``2^(e0 + s)`` (``s >= 0`` dropped bits of ``sig``), +Inf past fp32."""
    s24 = tl.minimum(s, 24)  # sig < 2^24: dropping 24 or more bits leaves k = 0, rem = sig
    low = (1 << s24) - 1
    rem = sig & low
    inexact = rem != 0
    if ROUNDING == _NEAREST:
        # rem > half, or rem == half and k odd  <=>  2·rem + (k & 1) > 2^s (false for s = 0,
        # where rem = 0; past s = 25 the power exceeds every 2·rem + 1 < 2^25).
        up = (rem * 2 + ((sig >> s24) & 1)) > (1 << tl.minimum(s, 25))
    elif ROUNDING == _NEAREST_AWAY:
        up = (rem * 2) >= (1 << tl.minimum(s, 25))  # rem >= half, and rem > 0
    elif ROUNDING == _TOWARD_ZERO:
        up = inexact & False
    elif ROUNDING == _UP:
        up = inexact & (neg == 0)
    elif ROUNDING == _DOWN:
        up = inexact & (neg != 0)
    elif ROUNDING == _ODD:
        up = inexact & (((sig >> s24) & 1) == 0)
    else:
        tl.static_assert(ROUNDING == _STOCHASTIC)
        # The reference: up iff rem · 2^(rbits - s) (truncated, s clamped at 56) + R >= 2^rbits,
        # R the word's top rbits bits.  As aligned <= mask = 2^rbits - 1: up iff R > mask -
        # aligned, in uint32.
        sc = tl.minimum(s, _MAX_SHIFT)
        drop = (32 - rbits).to(tl.uint32)
        r = word >> drop
        mask = tl.full(word.shape, 0xFFFFFFFF, tl.uint32) >> drop
        remu = rem.to(tl.uint32)
        down_sh = tl.minimum(tl.maximum(sc - rbits, 0), 31).to(tl.uint32)
        up_sh = tl.minimum(tl.maximum(rbits - sc, 0), 31).to(tl.uint32)
        aligned = tl.where(sc >= rbits, remu >> down_sh, remu << up_sh)
        up = r > (mask - aligned)
    kept = (mag & ~low) + (up.to(tl.int32) << s24)
    # s >= 24: k is 0 and 2^(e0 + s) >= 2^-125 is normal (or past fp32: +Inf).
    power = tl.minimum(e0 + s + 127, 255) << 23
    return tl.where(s <= 23, kept, tl.where(up, power, 0))


@triton.jit
def _round_float(bits, word, rbits, shift, vmax, emin, man, saturate, ovf, inf_out, neg_out,
                 neg_zero, zero, ROUNDING: tl.constexpr, EXP: tl.constexpr,
                 SUBNORMALS: tl.constexpr, SIGNED: tl.constexpr, WIDE: tl.constexpr):
    """``scalar.quantize_float`` (``EXP``: ``quantize_exp``) on int32 fp32 patterns.

    ``shift`` scales the format by ``2^shift`` and ``vmax`` is the fp32 pattern of its largest
    value (block formats pass per-element tensors).  ``WIDE`` is needed when the grid reaches
    below fp32's normals (``emin + shift < -126``) or subnormals are flushed: ``floor(log2)`` of
    subnormal inputs then matters.  The other parameters encode the format's specials
    (``float_params`` in ``_scalar`` derives them)."""
    mag, e0, sig = _split(bits)
    if EXP:
        neg = bits < -(2**31)  # never: ExpFormat rounds |x|
    else:
        neg = bits < 0
    # s = max(q - e0, 0), q = max(etrue, emin) - man (flushing: etrue < emin ? emin : etrue - man)
    lo = emin + shift - e0  # emin - e0
    if WIDE:
        lg = tl.where(mag >= 0x800000, 23, _log2(sig))  # etrue - e0
        if SUBNORMALS:
            s = tl.maximum(tl.maximum(lg, lo) - man, 0)
        else:
            s = tl.maximum(tl.where(lg < lo, lo, lg - man), 0)
    else:  # etrue - e0 is 23, or too small to matter (emin >= -126): s >= 23 - man >= 0
        tl.static_assert(SUBNORMALS)
        s = tl.maximum(lo, 23) - man
    v = _round_bits(mag, sig, e0, s, neg, word, rbits, ROUNDING)
    if EXP:
        v = tl.where(v == 0, zero, v)  # ExpFormat has no zero: its smallest power instead
    # IEEE 754 §7.4 on the magnitude (the bit patterns of non-negative floats are ordered).
    over = v > vmax
    if ROUNDING == _TOWARD_ZERO or ROUNDING == _ODD:
        ovf_dir = over & False
    elif ROUNDING == _UP:
        ovf_dir = over & (neg == 0)
    elif ROUNDING == _DOWN:
        ovf_dir = over & neg
    else:
        ovf_dir = over
    v = tl.where(over, tl.where(ovf_dir & (saturate == 0), ovf, vmax), v)
    if EXP:
        sign = 0
    else:
        sign = bits & _SIGN_BIT
    v = v | sign
    v = tl.where(mag >= _INF_BITS, tl.where(mag > _INF_BITS, bits, inf_out | sign), v)
    if not SIGNED:
        v = tl.where(neg & (mag <= _INF_BITS) & ((v & _ABS_MASK) != 0), neg_out, v)
    return tl.where((v == _SIGN_BIT) & (neg_zero == 0), 0, v)


@triton.jit
def _round_fixed(bits, word, rbits, q, lo, hi, clamp, ROUNDING: tl.constexpr):
    """``scalar.quantize_fixed`` on int32 fp32 patterns: the grid ``k · 2^q``, then (when
    ``clamp``) ``min(max(v, lo), hi)`` with ``lo <= 0 < hi`` the fp32 patterns of the bounds."""
    mag, e0, sig = _split(bits)
    neg = bits < 0
    v = _round_bits(mag, sig, e0, tl.maximum(q - e0, 0), neg, word, rbits, ROUNDING)
    # torch.maximum/minimum keep v when it equals the bound (so -0 stays -0 against +0).
    bound = tl.where(neg, lo, hi)
    # A bound of +0 (unsigned integers) turns -0 into +0 too (see the tests).
    v = tl.where((clamp != 0) & (v >= (bound & _ABS_MASK)), bound, v | tl.where(neg, _SIGN_BIT, 0))
    # ±Inf without clamping and NaN keep x.
    return tl.where((mag > _INF_BITS) | ((mag == _INF_BITS) & (clamp == 0)), bits, v)
