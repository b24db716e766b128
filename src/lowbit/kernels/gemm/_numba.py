"""numba kernels of the CPU GEMM backend: ``_exact.round_pair`` per element, and the K loop.

``round_pair`` is the reference's arithmetic transcribed to scalars: ``hi + lo`` (float64 pair)
gives the integer ``N = floor(|x| / 2^(q - 32))`` with a sticky flag, the mode decides ``up``
from ``N mod 2^32``, and ``(N >> 32) + up`` times ``2^q`` is the fp32 magnitude.  Overflow,
signs, -0 and the Inf/NaN results then reuse the elementwise CPU kernels' finishing steps
(``lowbit.kernels.cpu._scalar``), which are bit-identical with ``lowbit.quantize``.

An operation is a tuple of ``OP_FIELDS`` int64 values (``cpu.operation_row`` fills it).
A kernel runs one output row (batch, i) per parallel task: k in order in the outer loop,
the row's N outputs in the inner one, so A's value is a scalar and B's row is contiguous.
Operations are tuples, not arrays, so that their fields are loop-invariant registers.
"""

from __future__ import annotations

import numpy as np
from llvmlite import ir
from numba import njit, prange, types
from numba.extending import intrinsic

from ..cpu._bits import bits_from_f32, f32_from_bits, i32
from ..cpu._philox import philox4x32_10
from ..cpu._scalar import _fixed_finish, _float_finish

__all__ = ["OP_FIELDS", "sequential_kernel", "chunked_kernel", "kahan_kernel", "chunk_add_kernel"]

# Fields of an operation row: format family and grid, rounding code (``_scalar.MODE_CODES``),
# then the finishing constants of ``_float_finish`` (7) or ``_fixed_finish`` (lo, hi, keep).
F_FIXED, F_SUBNORMALS, F_EMIN, F_MAN, F_QFIXED, F_MODE, F_CONSTS = range(7)
OP_FIELDS = F_CONSTS + 7
SEQUENTIAL, CHUNKED, KAHAN = 0, 1, 2

_ABS64 = 0x7FFF_FFFF_FFFF_FFFF
_FRAC52 = (1 << 52) - 1
_HIDDEN = 1 << 52
_LOW32 = 0xFFFFFFFF
_HALF = 1 << 31
_SIGN32 = np.int32(-(2**31))
_ABS32 = np.int32(0x7FFFFFFF)

_jit = njit(cache=True, forceinline=True)


@intrinsic
def _f64_bits(typingctx, value):
    """The bit pattern of a float64 as an int64."""
    if value != types.float64:
        return None

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.IntType(64))

    return types.int64(value), codegen


@intrinsic
def _f64_from_bits(typingctx, bits):
    """The float64 whose bit pattern is the int64 ``bits``."""
    if bits != types.int64:
        return None

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.DoubleType())

    return types.float64(bits), codegen


@_jit
def _pow2(e):
    """Exact float64 ``2^e`` for int64 ``e`` in [-1022, 1023]."""
    return _f64_from_bits((e + 1023) << 52)


@_jit
def _up(k, rem, sticky, neg, mode, word):
    """1 when ``mode`` rounds the kept integer ``k`` up (``rem``: the next 32 bits)."""
    inexact = rem != 0 or sticky
    odd = (k & 1) == 1
    if mode == 0:  # nearest, ties to even
        up = rem > _HALF or (rem == _HALF and (sticky or odd))
    elif mode == 1:  # nearest, ties away
        up = rem >= _HALF
    elif mode == 2:  # toward zero
        up = False
    elif mode == 3:  # up
        up = inexact and not neg
    elif mode == 4:  # down
        up = inexact and neg
    elif mode == 5:  # odd
        up = inexact and not odd
    else:  # stochastic: the word is a uint32 in an int64
        up = rem + word > _LOW32
    return np.int64(1) if up else np.int64(0)


@_jit
def _magnitude(mag, neg, lo, op, word):
    """fp32 bits of ``|hi + lo|`` rounded onto the grid of ``op`` (``_exact._round_magnitude``;
    ``mag`` = |hi|'s bits, finite)."""
    field = mag >> 52
    sig = (mag & _FRAC52) | _HIDDEN if field > 0 else np.int64(0)
    e0 = max(field, 1) - 1075
    opposite = lo != 0 and (lo < 0) != neg  # |x| = |hi| - |lo|
    etrue = e0 + 52 - (1 if sig == _HIDDEN and opposite else 0)
    if op[F_FIXED] != 0:
        q = max(etrue - 28, op[F_QFIXED])
    else:
        emin = op[F_EMIN]
        if op[F_SUBNORMALS] != 0:
            q = max(etrue, emin) - op[F_MAN]
        else:  # flush zone: the grid {0, 2^emin}
            q = emin if etrue < emin else etrue - op[F_MAN]
        q = max(q, -149)
    t = q - 32 - e0
    if t >= 0:  # lo is below half a unit: it only matters where sig's dropped bits are zero
        sh = min(t, 60)
        kept = sig >> sh
        dropped = sig - (kept << sh)
        n = kept - (1 if dropped == 0 and opposite else 0)
        sticky = dropped != 0 or lo != 0
    else:  # lo in units is an exact float64: take its floor
        lo_units = (-abs(lo) if opposite else abs(lo)) * _pow2(32 - q)
        lo_floor = np.floor(lo_units)
        n = (sig << min(-t, 9)) + np.int64(lo_floor)
        sticky = lo_floor != lo_units
    k = n >> 32
    k += _up(k, n & _LOW32, sticky, neg, op[F_MODE], word)
    return bits_from_f32(np.float32(np.float64(k) * _pow2(min(q, 200))))


@_jit
def round_pair(hi, lo, op, word):
    """fp32 ``Q(hi + lo)`` onto ``op`` (an int64 row) as a float64; ``word`` is the event's
    random uint32 (as int64) for stochastic rounding."""
    hbits = _f64_bits(hi)
    mag = hbits & _ABS64
    if (mag >> 52) == 0x7FF:  # ±Inf or NaN: the format's result for that fp32 value
        b = bits_from_f32(np.float32(hi))
        a = b & _ABS32
        v = a
    else:
        b = _SIGN32 if hbits < 0 else np.int32(0)
        a = np.int32(0)
        v = _magnitude(mag, hbits < 0, lo, op, word)
    c = F_CONSTS
    if op[F_FIXED] != 0:
        r = _fixed_finish(b, a, v, f32_from_bits(op[c]), f32_from_bits(op[c + 1]), i32(op[c + 2]))
    else:
        r = _float_finish(b, a, v, (i32(op[c]), i32(op[c + 1]), i32(op[c + 2]), i32(op[c + 3]),
                                    i32(op[c + 4]), i32(op[c + 5]), i32(op[c + 6])))
    return np.float64(f32_from_bits(r))


@_jit
def add_round(x, y, op, word):
    """``Q(x + y)`` (float64 holding fp32 values or exact products) as a float64: the exact
    sum by TwoSum, rounded once."""
    s = x + y
    bb = s - x
    return round_pair(s, (x - (s - bb)) + (y - bb), op, word)


@_jit
def _words(t, group, k0, k1):
    """The four uint32 words (as int64) of Philox counter ``2·t + group``."""
    ctr = 2 * t + group
    w0, w1, w2, w3 = philox4x32_10(ctr & _LOW32, ctr >> 32, k0, k1)
    return (np.int64(w0) & _LOW32, np.int64(w1) & _LOW32, np.int64(w2) & _LOW32,
            np.int64(w3) & _LOW32)


@_jit
def _word(words, slot, j):
    return np.int64(words[slot, j]) & _LOW32


@_jit
def _step(p, j, s, c, kind, has_mul, mul, acc, chk, words):
    """Step k of output ``j`` of a row: updates ``s[j]`` (or ``c[j]``) from its product ``p``
    (exact, float64); ``words[slot, j]`` are the step's words (``_plan.Slot``, int32).  A
    chunk's sum is added to ``s`` afterwards (``_close_chunks``)."""
    w = (_word(words, 0, j), _word(words, 1, j), _word(words, 2, j), _word(words, 3, j),
         _word(words, 4, j), _word(words, 5, j))
    if has_mul:
        p = add_round(p, -0.0, mul, w[0])
    if kind == KAHAN:
        y = add_round(p, -c[j], acc, w[3])
        t = add_round(s[j], y, acc, w[1])
        z = add_round(t, -s[j], acc, w[4])
        c[j] = add_round(z, -y, acc, w[5])
        s[j] = t
    elif kind == CHUNKED:
        c[j] = add_round(c[j], p, chk, w[1])
    else:
        s[j] = add_round(s[j], p, acc, w[1])


@_jit
def _fill_words(words, r, k, n, kdim, k0, k1, group):
    """Words of slots ``4·group ..`` of step ``k`` of every output of row ``r`` into
    ``words[4·group + w, j]``: a loop of Philox calls alone, which LLVM vectorises."""
    for j in range(n):
        ctr = 2 * ((r * n + j) * kdim + k) + group
        w0, w1, w2, w3 = philox4x32_10(ctr & _LOW32, ctr >> 32, k0, k1)
        words[4 * group, j] = w0
        words[4 * group + 1, j] = w1
        words[4 * group + 2, j] = w2
        words[4 * group + 3, j] = w3


@_jit
def _steps(a, b, s, c, words, r, k, mul, acc, chk, k0, k1, kind, has_mul, random):
    """Step ``k`` of every output of row ``r`` (``_step``), drawing its words if ``random``."""
    _, m, kdim = a.shape
    n = b.shape[2]
    bi = r // m
    av = np.float64(a[bi, r - bi * m, k])
    if random:
        _fill_words(words, r, k, n, kdim, k0, k1, 0)
        if kind == KAHAN:
            _fill_words(words, r, k, n, kdim, k0, k1, 1)
    for j in range(n):
        _step(av * np.float64(b[bi, k, j]), j, s, c, kind, has_mul, mul, acc, chk, words)


@_jit
def _close_chunks(s, c, words, acc):
    """At a chunk's last step: ``s = Q_acc(s + c)`` (slot CHUNK) and the next chunk starts
    from +0.  A loop of its own, so the step loop never tests for a chunk's end."""
    for j in range(s.size):
        s[j] = add_round(s[j], c[j], acc, _word(words, 2, j))
        c[j] = 0.0


@_jit
def _row(a, b, out, r, mul, acc, chk, chunk, k0, k1, kind, has_mul, random):
    """Output row ``r = batch·M + i``: its K loop, k in order, over the row's N outputs."""
    _, m, kdim = a.shape
    n = b.shape[2]
    bi = r // m
    i = r - bi * m
    s = np.zeros(n)
    c = np.zeros(n)  # Kahan's compensation, or the running chunk sum
    words = np.zeros((8, n), np.int32)  # the step's random words, by slot (zero if unused)
    for k in range(kdim):
        _steps(a, b, s, c, words, r, k, mul, acc, chk, k0, k1, kind, has_mul, random)
        if kind == CHUNKED and ((k + 1) % chunk == 0 or k == kdim - 1):
            _close_chunks(s, c, words, acc)
    for j in range(n):
        out[bi, i, j] = np.float32(s[j])


@_jit
def _any_row(a, b, out, r, mul, acc, chk, chunk, k0, k1, kind, has_mul, random):
    """``_row`` with a literal ``has_mul`` at each call site: once inlined, LLVM folds it, so
    each copy's inner loop holds only its own operations (a runtime test there costs 5x).
    ``random`` only decides whether words are drawn before each step's loop."""
    if has_mul:
        _row(a, b, out, r, mul, acc, chk, chunk, k0, k1, kind, True, random)
    else:
        _row(a, b, out, r, mul, acc, chk, chunk, k0, k1, kind, False, random)


# One parallel kernel per structure (a module constant for ``kind``), compiled on first use.
@njit(parallel=True, cache=True)
def sequential_kernel(a, b, out, mul, acc, chk, chunk, k0, k1, has_mul, random):
    """``out[b] = a[b] · b[b]`` (fp32 (B, M, K), (B, K, N), (B, M, N), C order), each sum
    rounded onto ``acc``; ``mul``, ``acc``, ``chk`` are operation tuples (``chk`` unused);
    ``random``: draw the Philox words of key ``(k0, k1)`` for step
    ``t = ((b·M + i)·N + j)·K + k``."""
    nb, m, _ = a.shape
    for r in prange(nb * m):
        _any_row(a, b, out, r, mul, acc, chk, chunk, k0, k1, SEQUENTIAL, has_mul, random)


@njit(parallel=True, cache=True)
def chunked_kernel(a, b, out, mul, acc, chk, chunk, k0, k1, has_mul, random):
    """``sequential_kernel`` with chunk sums of ``chunk`` steps in ``chk``, each added to
    the total in ``acc``."""
    nb, m, _ = a.shape
    for r in prange(nb * m):
        _any_row(a, b, out, r, mul, acc, chk, chunk, k0, k1, CHUNKED, has_mul, random)


@njit(parallel=True, cache=True)
def kahan_kernel(a, b, out, mul, acc, chk, chunk, k0, k1, has_mul, random):
    """``sequential_kernel`` with Kahan's compensated summation, every operation in ``acc``."""
    nb, m, _ = a.shape
    for r in prange(nb * m):
        _any_row(a, b, out, r, mul, acc, chk, chunk, k0, k1, KAHAN, has_mul, random)


@njit(parallel=True, cache=True)
def chunk_add_kernel(s, part, acc, step, kdim, k0, k1, random):
    """``s = Q_acc(s + part)`` elementwise (float64 and fp32, flat, output order) for a chunk
    ending at step ``step`` of ``kdim``; stochastic words from slot CHUNK of that step."""
    for idx in prange(s.size):
        word = np.int64(0)
        if random:
            word = _words(idx * kdim + step, 0, k0, k1)[2]
        s[idx] = add_round(s[idx], np.float64(part[idx]), acc, word)
