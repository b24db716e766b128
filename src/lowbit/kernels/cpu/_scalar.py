"""numba kernels for the elementwise families: FloatFormat, ExpFormat, FixedPoint/IntFormat.

Each kernel reads the int32 bit patterns of a contiguous fp32 array and writes the result's bit
patterns into a preallocated int32 array, in parallel over chunks of ``CHUNK`` elements.  The
arithmetic is the reference's (``lowbit.kernels.reference``) element by element, in 32-bit
integer lanes (``_bits``), so that each inner loop vectorises 8 wide on AVX2:

* ``|x| = sig · 2^e0`` with ``e0 = max(E, 1) - 150`` (``E`` the exponent field).  The format
  fixes the grid exponent ``q`` of ``x`` and ``s = max(q - e0, 0)`` low bits of ``sig`` are
  dropped.  For floats ``q = QT`` below the format's normal range (``P < T``) and
  ``P - 127 - man`` inside it, where ``P = floor(log2 |x|) + 127`` is ``E`` (for fp32
  subnormals it is read from ``float(sig)``, as the reference's ``etrue``, but only formats
  whose normal range starts below fp32's, ``T < 1``, need that).
* The rounding mode decides ``up`` (0 or 1) from the dropped remainder ``rem``: deterministic
  modes add an increment and look for the carry, ``up = (rem + inc) >> s`` with
  ``inc = half - 1 + odd`` (nearest-even), ``half`` (away), ``0`` (toward zero), ``2^s - 1``
  (up for +, down for -, odd when the kept digit is even).  Stochastic rounding adds the
  element's random bits under the kept digit, aligned to the top of a 32-bit word:
  ``up = carry(top_rbits(rem · 2^(32 - s)) + top_rbits(u))``, which is the reference's
  ``aligned + R >= 2^rbits`` scaled by ``2^(32 - rbits)``.
* The rounded magnitude ``(k + up) · 2^q`` is rebuilt in the bits of ``|x|``: with ``s <= 23``
  as ``((|x| >> s) + up) << s`` (a carry out of the mantissa increments the exponent, and one
  out of the largest binade gives Inf, as fp32 arithmetic does); with more dropped bits the
  kept digit is 0 and the result is ``0`` or ``2^q`` (``q = QT`` there).
* Overflow, specials and signs then follow the reference, with per-call constants folded so
  that each costs a compare and a select.

Rounding modes are int codes (``MODE_CODES``).  A kernel is a ``prange`` over chunks of
``CHUNK`` elements, each handled by a serial ``_*_range`` function that branches on the mode
once, so that every inner loop is specialised to one mode (LLVM folds the mode tests in it).
Loop indices are unsigned: numba then emits no negative-index wrap-around, and the loops
vectorise.  Random words are made ``BLOCK`` elements at a time into a scratch buffer.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from ._bits import add, band, bits_from_f32, bor, bxor, f32_from_bits, shl, shr, sub
from ._philox import philox4x32_10

__all__ = ["float_kernel", "float_kernel_exact", "exp_kernel", "fixed_kernel", "fill_words",
           "CHUNK", "BLOCK", "MODE_CODES"]

#: Elements per parallel task and per stochastic sub-block (multiples of 4, so one Philox
#: call never serves two tasks).
CHUNK = 1 << 16
BLOCK = 1 << 10

MODE_CODES = {"nearest": 0, "nearest_away": 1, "toward_zero": 2, "up": 3, "down": 4, "odd": 5,
              "stochastic": 6}
_NEAREST, _AWAY, _TOWARD_ZERO, _UP, _DOWN, _ODD, _STOCHASTIC = range(7)

# The dropped-bit count is clamped at 56 as in core.round_to_quantum: with sig < 2^24 the
# aligned remainder is already 0 there, so the clamp only keeps shifts inside 32 bits.
_S_CLAMP = np.int32(56)
_0 = np.int32(0)
_1 = np.int32(1)
_23 = np.int32(23)
_30 = np.int32(30)
_31 = np.int32(31)
_INF = np.int32(0x7F800000)
_NAN = np.int32(0x7FC00000)
_SIGN = np.int32(-(2**31))
_Q2_EXP = np.int32(23)  # q + 150 = P + 23 in the normal range of an ExpFormat (no mantissa)

_jit = njit(cache=True, forceinline=True)


# -- shared pieces ----------------------------------------------------------------------------
@_jit
def _dropped(a, em, t, q1, q2, exact):
    """Dropped bits of a float grid: ``q + 150 = Q1`` below the normal range (``P < T``),
    else ``P + Q2``; ``s = max(q - e0, 0)`` with ``e0 = em - 150``.  ``P`` is the exponent
    field, or with ``exact`` floor(log2 |x|) + 127 for fp32 subnormals too."""
    p = shr(a, 23)
    if exact and p == 0:
        p = sub(shr(bits_from_f32(np.float32(a)), 23), 149)
    return max(sub(q1 if p < t else add(p, q2), em), _0)


@_jit
def _up_det(a, em, s, neg, mode):
    """1 when the deterministic ``mode`` rounds ``sig >> s`` up, else 0 (``s >= 0``)."""
    sig = sub(a, shl(sub(em, 1), 23))
    sc = min(s, _30)  # past 24 dropped bits only "is anything dropped" matters
    one = shl(1, sc)
    mask = sub(one, 1)
    if mode == _TOWARD_ZERO:
        return _0
    if mode == _NEAREST:
        inc = band(add(sub(shr(one, 1), 1), band(shr(sig, sc), 1)), mask)
    elif mode == _AWAY:
        inc = shr(one, 1)
    elif mode == _UP:
        inc = _0 if neg else mask
    elif mode == _DOWN:
        inc = mask if neg else _0
    else:  # odd
        inc = _0 if band(shr(sig, sc), 1) != 0 else mask
    return shr(add(band(sig, mask), inc), sc)


@_jit
def _up_sr(a, em, s, u, topmask):
    """1 when the random word ``u`` rounds ``sig >> s`` up (stochastic), else 0."""
    sig = sub(a, shl(sub(em, 1), 23))
    rem = band(sig, sub(shl(1, min(s, _30)), 1))
    if s <= 32:
        aligned = shl(rem, min(sub(32, s), _31))  # rem < 2^s: nothing is lost
    else:
        aligned = shr(rem, sub(min(s, _S_CLAMP), 32))
    aligned = band(aligned, topmask)
    r = band(u, topmask)
    total = add(aligned, r)
    # carry out of the 32-bit sum: aligned + r >= 2^32
    return shr(bor(band(aligned, r), band(bor(aligned, r), bxor(total, -1))), 31)


@_jit
def _magnitude(a, s, up, qt_bits):
    """Bits of ``(floor(|x| / 2^q) + up) · 2^q`` (``2^q`` = ``qt_bits`` when ``s > 23``)."""
    if s <= 23:
        return shl(add(shr(a, s), up), s)
    return band(sub(0, up), qt_bits)


# -- FloatFormat -------------------------------------------------------------------------------
@_jit
def _float_finish(b, a, v, c):
    """Overflow, specials, sign and -0 of the rounded magnitude bits ``v``: ``c`` = (max bits
    for +, for -; result on overflow for +, for -; result for +Inf, -Inf; the bits that
    become +0)."""
    (vmax_p, vmax_n, ovf_p, ovf_n, inf_p, inf_n, negzero) = c
    neg = b < 0
    r = bor(v, band(b, _SIGN))
    if v > (vmax_n if neg else vmax_p):
        r = ovf_n if neg else ovf_p
    if a >= _INF:
        r = (inf_n if neg else inf_p) if a == _INF else b
    return _0 if r == negzero else r


@_jit
def _float_det(b, mode, t, q1, q2, qt_bits, c, exact):
    a = band(b, 0x7FFFFFFF)
    em = max(shr(a, 23), _1)  # e0 = em - 150
    s = _dropped(a, em, t, q1, q2, exact)
    return _float_finish(b, a, _magnitude(a, s, _up_det(a, em, s, b < 0, mode), qt_bits), c)


@_jit
def _float_sr(b, u, topmask, t, q1, q2, qt_bits, c, exact):
    a = band(b, 0x7FFFFFFF)
    em = max(shr(a, 23), _1)
    s = _dropped(a, em, t, q1, q2, exact)
    return _float_finish(b, a, _magnitude(a, s, _up_sr(a, em, s, u, topmask), qt_bits), c)


@njit(cache=True)
def _float_loop(x, y, lo, hi, mode, words, wbase, topmask, grid, c, exact):
    """Elements ``lo .. hi - 1`` (uint64) onto a float grid; stochastic rounding reads element
    ``i``'s word at ``words[i - wbase]``."""
    t, q1, q2, qt_bits = grid
    # One loop per mode on purpose: inside each loop ``mode`` is a known constant after
    # inlining, so LLVM drops the other modes' branches and vectorises the body.
    if mode == _STOCHASTIC:
        for i in range(lo, hi):
            y[i] = _float_sr(x[i], words[i - wbase], topmask, t, q1, q2, qt_bits, c, exact)
    elif mode == _NEAREST:
        for i in range(lo, hi):
            y[i] = _float_det(x[i], mode, t, q1, q2, qt_bits, c, exact)
    elif mode == _AWAY:
        for i in range(lo, hi):
            y[i] = _float_det(x[i], mode, t, q1, q2, qt_bits, c, exact)
    elif mode == _TOWARD_ZERO:
        for i in range(lo, hi):
            y[i] = _float_det(x[i], mode, t, q1, q2, qt_bits, c, exact)
    elif mode == _UP:
        for i in range(lo, hi):
            y[i] = _float_det(x[i], mode, t, q1, q2, qt_bits, c, exact)
    elif mode == _DOWN:
        for i in range(lo, hi):
            y[i] = _float_det(x[i], mode, t, q1, q2, qt_bits, c, exact)
    elif mode == _ODD:  # every branch tests equality, so LLVM knows `mode` in each loop
        for i in range(lo, hi):
            y[i] = _float_det(x[i], mode, t, q1, q2, qt_bits, c, exact)


@njit(cache=True)
def _float_range(x, y, lo, hi, mode, k0, k1, topmask, grid, c, exact):
    """Elements ``lo .. hi - 1`` of ``float_kernel`` (``lo`` a multiple of 4)."""
    lo = np.uint64(lo)
    hi = np.uint64(hi)
    if mode == _STOCHASTIC:
        words = np.empty(BLOCK, np.int32)
        planar = np.empty(BLOCK, np.int32)
        base = lo
        while base < hi:
            end = min(base + np.uint64(BLOCK), hi)
            fill_words(words, planar, base, end, k0, k1)
            _float_loop(x, y, base, end, mode, words, base, topmask, grid, c, exact)
            base = end
    else:
        _float_loop(x, y, lo, hi, mode, np.empty(0, np.int32), lo, topmask, grid, c, exact)


@njit(parallel=True, cache=True)
def float_kernel(x, y, mode, k0, k1, topmask, grid, consts):
    """Round the fp32 bit patterns ``x`` onto a FloatFormat into ``y`` (int32, 1-D, C).

    ``mode``: a ``MODE_CODES`` value; the Philox key ``(k0, k1)`` (the seed's low and high 32
    bits) and ``topmask`` (the top ``rbits`` bits set) serve stochastic rounding.  ``grid`` =
    (T, Q1, Q2, bits of 2^QT) and ``consts`` (see ``_float_finish``) are int32 tuples from
    ``float_params``.  For formats whose normal range starts below fp32's (T < 1) use
    ``float_kernel_exact`` (compiled only when such a format is used).
    """
    n = x.size
    for ch in prange((n + CHUNK - 1) // CHUNK):
        lo = ch * CHUNK
        _float_range(x, y, lo, min(lo + CHUNK, n), mode, k0, k1, topmask, grid, consts, False)


@njit(parallel=True, cache=True)
def float_kernel_exact(x, y, mode, k0, k1, topmask, grid, consts):
    """``float_kernel`` for formats with T < 1: fp32 subnormals need their true exponent."""
    n = x.size
    for ch in prange((n + CHUNK - 1) // CHUNK):
        lo = ch * CHUNK
        _float_range(x, y, lo, min(lo + CHUNK, n), mode, k0, k1, topmask, grid, consts, True)


# -- ExpFormat ---------------------------------------------------------------------------------
@_jit
def _exp_finish(a, v, c):
    (min_bits, vmax, can_overflow, saturate) = c
    if v == 0:
        v = min_bits
    over = can_overflow != 0 and v > vmax
    v = min(v, vmax)
    if saturate == 0 and (over or a >= _INF):
        v = _NAN
    return _NAN if a > _INF else v


@njit(cache=True)
def _exp_range(x, y, lo, hi, mode, k0, k1, topmask, grid, c):
    """Elements ``lo .. hi - 1`` of ``exp_kernel`` (scale tensors are small: one loop serves
    every deterministic mode)."""
    t, q1, qt_bits = grid
    lo = np.uint64(lo)
    hi = np.uint64(hi)
    if mode == _STOCHASTIC:
        words = np.empty(BLOCK, np.int32)
        planar = np.empty(BLOCK, np.int32)
        base = lo
        while base < hi:
            end = min(base + np.uint64(BLOCK), hi)
            fill_words(words, planar, base, end, k0, k1)
            for i in range(base, end):
                a = band(x[i], 0x7FFFFFFF)  # |x|: the sign is ignored
                em = max(shr(a, 23), _1)
                s = _dropped(a, em, t, q1, _Q2_EXP, True)
                up = _up_sr(a, em, s, words[i - base], topmask)
                y[i] = _exp_finish(a, _magnitude(a, s, up, qt_bits), c)
            base = end
    else:
        for i in range(lo, hi):
            a = band(x[i], 0x7FFFFFFF)
            em = max(shr(a, 23), _1)
            s = _dropped(a, em, t, q1, _Q2_EXP, True)
            up = _up_det(a, em, s, False, mode)
            y[i] = _exp_finish(a, _magnitude(a, s, up, qt_bits), c)


@njit(parallel=True, cache=True)
def exp_kernel(x, y, mode, k0, k1, topmask, grid, consts):
    """Round onto an ExpFormat: ``grid`` = (T, Q1, bits of 2^emin), ``consts`` = (bits of the
    value for zero, max bits, mode may overflow, saturate), int32 tuples from ``exp_params``."""
    n = x.size
    for ch in prange((n + CHUNK - 1) // CHUNK):
        lo = ch * CHUNK
        _exp_range(x, y, lo, min(lo + CHUNK, n), mode, k0, k1, topmask, grid, consts)


# -- FixedPoint / IntFormat --------------------------------------------------------------------
@_jit
def _fixed_finish(b, a, v, lo, hi, keep):
    vs = f32_from_bits(bor(v, band(b, _SIGN)))
    # torch.maximum / torch.minimum as the reference computes them (a tie keeps the bound).
    vs = vs if vs > lo else lo
    vs = vs if vs < hi else hi
    return b if a > keep else bits_from_f32(vs)


@njit(cache=True)
def _fixed_loop(x, y, lo, hi, mode, words, wbase, topmask, q150, q_bits, vlo, vhi, keep):
    """Elements ``lo .. hi - 1`` (uint64) onto a fixed-point grid (one loop per mode, as
    ``_float_loop``)."""
    if mode == _STOCHASTIC:
        for i in range(lo, hi):
            b = x[i]
            a = band(b, 0x7FFFFFFF)
            em = max(shr(a, 23), _1)
            s = max(sub(q150, em), _0)
            v = _magnitude(a, s, _up_sr(a, em, s, words[i - wbase], topmask), q_bits)
            y[i] = _fixed_finish(b, a, v, vlo, vhi, keep)
    elif mode == _NEAREST:
        for i in range(lo, hi):
            y[i] = _fixed_det(x[i], mode, q150, q_bits, vlo, vhi, keep)
    elif mode == _AWAY:
        for i in range(lo, hi):
            y[i] = _fixed_det(x[i], mode, q150, q_bits, vlo, vhi, keep)
    elif mode == _TOWARD_ZERO:
        for i in range(lo, hi):
            y[i] = _fixed_det(x[i], mode, q150, q_bits, vlo, vhi, keep)
    elif mode == _UP:
        for i in range(lo, hi):
            y[i] = _fixed_det(x[i], mode, q150, q_bits, vlo, vhi, keep)
    elif mode == _DOWN:
        for i in range(lo, hi):
            y[i] = _fixed_det(x[i], mode, q150, q_bits, vlo, vhi, keep)
    elif mode == _ODD:
        for i in range(lo, hi):
            y[i] = _fixed_det(x[i], mode, q150, q_bits, vlo, vhi, keep)


@njit(cache=True)
def _fixed_range(x, y, lo, hi, mode, k0, k1, topmask, q150, q_bits, vlo, vhi, keep):
    """Elements ``lo .. hi - 1`` of ``fixed_kernel`` (``lo`` a multiple of 4)."""
    lo = np.uint64(lo)
    hi = np.uint64(hi)
    if mode == _STOCHASTIC:
        words = np.empty(BLOCK, np.int32)
        planar = np.empty(BLOCK, np.int32)
        base = lo
        while base < hi:
            end = min(base + np.uint64(BLOCK), hi)
            fill_words(words, planar, base, end, k0, k1)
            _fixed_loop(x, y, base, end, mode, words, base, topmask, q150, q_bits, vlo, vhi,
                        keep)
            base = end
    else:
        _fixed_loop(x, y, lo, hi, mode, np.empty(0, np.int32), lo, topmask, q150, q_bits, vlo,
                    vhi, keep)


@_jit
def _fixed_det(b, mode, q150, q_bits, lo, hi, keep):
    a = band(b, 0x7FFFFFFF)
    em = max(shr(a, 23), _1)
    s = max(sub(q150, em), _0)
    v = _magnitude(a, s, _up_det(a, em, s, b < 0, mode), q_bits)
    return _fixed_finish(b, a, v, lo, hi, keep)


@njit(parallel=True, cache=True)
def fixed_kernel(x, y, mode, k0, k1, topmask, q150, q_bits, lo, hi, keep):
    """Round onto ``k · 2^q`` (``q150 = q + 150``) and clamp to [lo, hi] (fp32; ±Inf without
    a clamp); inputs with |x| bits above ``keep`` (NaN; also ±Inf without a clamp) are
    returned unchanged.  ``q150``, ``q_bits``, ``keep`` are int32, ``lo``, ``hi`` fp32
    (``fixed_params``)."""
    n = x.size
    for ch in prange((n + CHUNK - 1) // CHUNK):
        c_lo = ch * CHUNK
        _fixed_range(x, y, c_lo, min(c_lo + CHUNK, n), mode, k0, k1, topmask, q150, q_bits,
                     lo, hi, keep)


# -- the random stream -------------------------------------------------------------------------
@_jit
def fill_words(words, planar, wbase, end, k0, k1):
    """Philox words of elements ``wbase .. end - 1`` (``wbase`` a multiple of 4) into
    ``words[0 ..]``; ``planar`` is scratch of the same size (a multiple of 4 holding the
    rounded-up range).  The Philox loop stores each output word in its own quarter of
    ``planar`` (contiguous stores, so LLVM vectorises it); a second loop interleaves them."""
    g0 = wbase >> np.uint64(2)
    ng = ((end + np.uint64(3)) >> np.uint64(2)) - g0
    quarter = np.uint64(planar.size >> 2)
    for j in range(ng):
        g = g0 + j
        w0, w1, w2, w3 = philox4x32_10(g, g >> np.uint64(32), k0, k1)
        planar[j] = w0
        planar[quarter + j] = w1
        planar[np.uint64(2) * quarter + j] = w2
        planar[np.uint64(3) * quarter + j] = w3
    for j in range(ng):
        i = j << np.uint64(2)
        words[i] = planar[j]
        words[i + np.uint64(1)] = planar[quarter + j]
        words[i + np.uint64(2)] = planar[np.uint64(2) * quarter + j]
        words[i + np.uint64(3)] = planar[np.uint64(3) * quarter + j]
