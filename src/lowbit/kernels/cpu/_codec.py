"""numba kernels of packed storage (``lowbit.encode`` / ``lowbit.decode``), one pass each way.

``encode_kernel`` (elementwise formats; blocks of ``bs`` along rows of ``L`` with power-of-two
scales) and ``encode_amax_kernel`` (the AMAX rule, NVFP4's two levels included, in the fp32
order of ``reference.blockscale.amax_scaled``) round each element with ``_scalar``'s element
functions and constants, as the quantize kernels do, turn the rounded fp32 bits into the
format's code and pack the codes into ``lowbit.ops.codec.bitstream``'s little-endian stream.
The code of a value ``P`` (``v · 2^-k`` in a block scaled by ``2^k``: two exact factors):

* floats whose finite values are fp32 numbers: ``(|P| >> (23 - man)) - ((127 - bias) << man)``
  (fp32's exponent re-biased) from ``2^emin`` up, the exact integer ``|P| · 2^(man - emin)``
  below, the sign bit on top; ±Inf and NaN take per-format codes from the host;
* fixed point and integers: ``P · 2^-q`` as an integer, two's complement, clamped at the
  extreme codes (where quantize gives fp32's ±Inf past its range).

NaN without a NaN code and values outside an unclamped word become the sentinels
``NAN_CODE`` / ``RANGE_CODE``, counted per task (NaN is then stored as ``nan_zero``; the caller
decides whether to raise; ``nan_zero < 0``: none can occur).  Codes of 4, 6, 8 and 16 bits are
packed by byte arithmetic, others by a bit accumulator.  The host picks the number of parallel
tasks (``counts.shape[0]``); a task walks whole blocks in groups of about ``SUB`` elements
whose codes stay in a scratch buffer, each group starting on a byte when rows and blocks are
multiples of 8 codes; otherwise codes go one per ``uint16`` to ``raw`` for ``pack_kernel``.

Decoding: ``_decode``.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from ._bits import band, bits_from_f32, bor, f32_from_bits, i32, sar, shl, shr, sub
from ._block import _absmax, scale_exp
from ._scalar import (
    CHUNK, _AWAY, _DOWN, _NEAREST, _ODD, _STOCHASTIC, _TOWARD_ZERO, _UP, _fixed_det, _float_det,
    _float_sr, _fixed_finish, _magnitude, _up_sr, fill_words,
)

__all__ = ["encode_kernel", "encode_amax_kernel", "pack_kernel", "NAN_CODE", "RANGE_CODE", "SUB"]

#: Elements per serial sub-block (a multiple of 8).
SUB = 1 << 12
NAN_CODE = 1 << 16
RANGE_CODE = 1 << 17

_INF = np.int32(0x7F800000)
_NAN = np.int32(0x7FC00000)
_ABS = np.int32(0x7FFFFFFF)
_0 = np.int32(0)
_1 = np.int32(1)
_U4 = np.uint64(4)
_ONE = np.float32(1.0)
_F32_MAX = np.float32(3.4028234663852886e38)

_jit = njit(cache=True, forceinline=True)


# -- rounded value -> code ----------------------------------------------------------------------
@_jit
def _float_code(v, cc):
    """``cc`` = (T, bits of 2^(man-emin), 23 - man, rebias, sign bit, code of +Inf, of -Inf,
    of +NaN, of -NaN): see the module.  (-0 keeps its sign: quantize gives no -0 where the
    format has none.)"""
    sub_t, sub_mul, rshift, rebias, sign_bit, inf_p, inf_n, nan_p, nan_n = cc
    a = band(v, _ABS)
    neg = sar(v, 31)
    if a < sub_t:
        body = i32(np.int32(f32_from_bits(a) * f32_from_bits(sub_mul)))
    else:
        body = sub(shr(a, rshift), rebias)
    code = bor(body, band(neg, sign_bit))
    if a >= _INF:
        if a == _INF:
            code = inf_n if neg != 0 else inf_p
        else:
            code = nan_n if neg != 0 else nan_p
    return code


@_jit
def _fixed_code(v, cc):
    """``cc`` = (bits of 2^-q, bits of qmin, bits of qmax, code mask, clamp, ...)."""
    mul, lo, hi, mask, clamp = cc[0], cc[1], cc[2], cc[3], cc[4]
    f = f32_from_bits(v) * f32_from_bits(mul)
    flo = f32_from_bits(lo)
    fhi = f32_from_bits(hi)
    k = f if f > flo else flo
    k = k if k < fhi else fhi
    code = band(i32(np.int32(k)), mask)
    if clamp == 0 and k != f:
        code = np.int32(RANGE_CODE)
    if band(v, _ABS) > _INF:
        code = np.int32(NAN_CODE)
    return code


@_jit
def _code(v, m1, m2, cc, float_elem):
    p = bits_from_f32(f32_from_bits(v) * m1 * m2)
    return _float_code(p, cc) if float_elem else _fixed_code(p, cc)


# -- round and encode ---------------------------------------------------------------------------
@_jit
def _elems(x, lo, m, mode, words, woff, topmask, row, m1, m2, cc, codes, coff, float_elem,
           exact):
    """``codes[coff + j]`` = code of ``x[lo + j]`` (``j < m``, uint64) rounded on the grid
    ``row`` (a ``_block.float_table`` / ``fixed_table`` row; ``exact`` as in ``_scalar``), times
    ``m1 · m2``; its random word is ``words[woff + j]``.  Inlined where ``mode`` is known, so
    that each loop is specialised to one mode (as ``_scalar._float_loop``)."""
    if float_elem:
        t, q1, q2, qt = row[0], row[1], row[2], row[3]
        c = (row[4], row[5], row[6], row[7], row[8], row[9], row[10])
        for j in range(m):
            if mode == _STOCHASTIC:
                v = _float_sr(x[lo + j], words[woff + j], topmask, t, q1, q2, qt, c, exact)
            else:
                v = _float_det(x[lo + j], mode, t, q1, q2, qt, c, exact)
            codes[coff + j] = _code(v, m1, m2, cc, True)
    else:
        q150, q_bits, keep = row[0], row[1], row[4]
        vlo = f32_from_bits(row[2])
        vhi = f32_from_bits(row[3])
        for j in range(m):
            b = x[lo + j]
            if mode == _STOCHASTIC:
                a = band(b, _ABS)
                em = max(shr(a, 23), _1)
                s = max(sub(q150, em), _0)
                v = _magnitude(a, s, _up_sr(a, em, s, words[woff + j], topmask), q_bits)
                v = _fixed_finish(b, a, v, vlo, vhi, keep)
            else:
                v = _fixed_det(b, mode, q150, q_bits, vlo, vhi, keep)
            codes[coff + j] = _code(v, m1, m2, cc, False)


@_jit
def _span(row, jb, geo):
    """Elements ``[lo, hi)`` of block ``jb`` of row ``row``; ``geo`` = (row length, block
    size, blocks per row)."""
    lo = row * geo[0] + jb * geo[1]
    return np.uint64(lo), np.uint64(min(lo + geo[1], row * geo[0] + geo[0]))


@_jit
def _walk(blk, geo):
    """(row, block in the row) of block ``blk``: then ``_step`` from block to block, as a
    64-bit division per block costs as much as its elements."""
    row = blk // geo[2]
    return row, blk - row * geo[2]


@_jit
def _step(row, jb, geo):
    return (row + 1, 0) if jb + 1 == geo[2] else (row, jb + 1)


@_jit
def _bounds(blk, geo):
    return _span(*_walk(blk, geo), geo)


@_jit
def _group_body(x, xbase, s0, s1, glo, ghi, mode, words, wbase, topmask, geo, blocked, rp,
                table, stable, cc, float_elem, exact, codes, scodes, scale_nan, cnt):
    if not blocked:
        _elems(x, glo - xbase, ghi - glo, mode, words, glo - wbase, topmask, table[0], _ONE,
               _ONE, cc, codes, np.uint64(0), float_elem, exact)
        return
    row, jb = _walk(s0, geo)
    for blk in range(s0, s1):
        lo, hi = _span(row, jb, geo)
        row, jb = _step(row, jb, geo)
        m = _absmax(x, lo, hi)
        if m >= _INF:  # NaN or Inf: the block decodes to NaN
            for j in range(lo - glo, hi - glo):
                codes[j] = 0
            scodes[blk] = scale_nan
            cnt[2] += 1
            continue
        r = scale_exp(m, rp) - rp[2]
        scodes[blk] = stable[r, 0]
        _elems(x, lo, hi - lo, mode, words, lo - wbase, topmask, table[r],
               f32_from_bits(stable[r, 1]), f32_from_bits(stable[r, 2]), cc, codes, lo - glo,
               float_elem, True)


@njit(cache=True)
def _group(x, xbase, s0, s1, glo, ghi, mode, words, wbase, topmask, geo, blocked, rp, table,
           stable, cc, float_elem, exact, codes, scodes, scale_nan, cnt):
    """Codes of elements ``glo .. ghi - 1`` (blocks ``s0 .. s1 - 1``, or one run when not
    ``blocked``; ``x[i - xbase]`` is element ``i``); each branch fixes ``mode`` when inlined."""
    a = (x, xbase, s0, s1, glo, ghi)
    z = (words, wbase, topmask, geo, blocked, rp, table, stable, cc, float_elem, exact, codes,
         scodes, scale_nan, cnt)
    if mode == _STOCHASTIC:
        _group_body(*a, _STOCHASTIC, *z)
    elif mode == _NEAREST:
        _group_body(*a, _NEAREST, *z)
    elif mode == _AWAY:
        _group_body(*a, _AWAY, *z)
    elif mode == _TOWARD_ZERO:
        _group_body(*a, _TOWARD_ZERO, *z)
    elif mode == _UP:
        _group_body(*a, _UP, *z)
    elif mode == _DOWN:
        _group_body(*a, _DOWN, *z)
    elif mode == _ODD:
        _group_body(*a, _ODD, *z)


@_jit
def _geometry(n, L, bs):
    """(geo, groups, blocks per group): blocks along rows, or runs of ``SUB`` (``bs = 0``)."""
    if bs == 0:
        geo = (n, SUB, (n + SUB - 1) // SUB)
        return geo, geo[2], 1
    geo = (L, bs, (L + bs - 1) // bs)
    return geo, (n // L) * geo[2], max(1, SUB // bs)


@njit(parallel=True, cache=True)
def encode_kernel(x, out, raw, scodes, mode, k0, k1, topmask, L, bs, rp, table, stable, cc,
                  float_elem, exact, b, nan_zero, scale_nan, counts):
    """Round the fp32 bits ``x`` and write packed ``b``-bit codes to ``out`` (or one per
    element to ``raw`` when it is not empty).

    ``bs = 0``: elementwise on the grid ``table[0]`` (``exact`` as ``_scalar``'s).  Else blocks
    of ``bs`` along rows of ``L``, scale exponent ``k`` from ``rp`` (``_block.rule_params``),
    element grid ``table[k - lo]`` and ``stable[k - lo]`` = (scale code, bits of the two exact
    factors of ``2^-k``); a block holding NaN or ±Inf gets codes 0 and the scale code
    ``scale_nan``.  Tasks: ``counts.shape[0]``; ``counts[task]`` = (NaN sentinels, range
    sentinels, NaN/Inf blocks).
    """
    n = x.size
    geo, ngroups, per = _geometry(n, L, bs)
    cap = ((per * geo[1] + 7) // 4) * 4
    ntask = counts.shape[0]
    tper = (ngroups + ntask - 1) // ntask
    for task in prange(ntask):
        codes = np.empty(cap, np.int32)
        words = np.empty(cap, np.int32)
        planar = np.empty(cap, np.int32)
        cnt = counts[task]
        g1 = min(task * tper + tper, ngroups)
        for s0 in range(task * tper, g1, per):
            s1 = min(s0 + per, g1)
            glo, ghi = _bounds(s0, geo)[0], _bounds(s1 - 1, geo)[1]
            wbase = (glo >> np.uint64(2)) << np.uint64(2)
            if mode == _STOCHASTIC:
                fill_words(words, planar, wbase, ghi, k0, k1)
            _group(x, np.uint64(0), s0, s1, glo, ghi, mode, words, wbase, topmask, geo, bs > 0,
                   rp, table, stable, cc, float_elem, exact, codes, scodes, scale_nan, cnt)
            _emit(codes, ghi - glo, out, raw, glo, b, nan_zero, cnt)


@_jit
def _amax_block(x, lo, hi, tmp, toff, sc, consts):
    """Block scale X (fp32 bits) of the AMAX rule, with ``tmp[toff + j]`` = bits of
    ``clamp(x · r, ±max_elem)``, in ``amax_scaled``'s fp32 order; ``sc``: the scale format's
    grid and constants (``_block.float_table`` layout, nearest); ``consts`` = (max_elem, p,
    1/p, scale clamp low, high, two-level).  Returns (X bits, the block holds NaN or Inf)."""
    max_e, p, recip, slo, shi, two = consts
    m = _absmax(x, lo, hi)
    ratio = f32_from_bits(m) / max_e
    if two:
        ratio = ratio / p
    ratio = ratio if ratio > slo or ratio != ratio else slo  # torch.clamp: NaN stays NaN
    ratio = ratio if ratio < shi or ratio != ratio else shi
    xs = _float_det(bits_from_f32(ratio), _NEAREST, sc[0], sc[1], sc[2], sc[3],
                    (sc[4], sc[5], sc[6], sc[7], sc[8], sc[9], sc[10]), True)
    r = recip / f32_from_bits(xs)
    r = r if r < _F32_MAX or r != r else _F32_MAX
    for j in range(hi - lo):
        s = f32_from_bits(x[lo + j]) * r
        s = s if s > -max_e or s != s else -max_e
        s = s if s < max_e or s != s else max_e
        tmp[toff + j] = bits_from_f32(s)
    return xs, m >= _INF


@njit(parallel=True, cache=True)
def encode_amax_kernel(x, out, raw, scodes, mode, k0, k1, topmask, L, bs, etable, sc, consts,
                       cc, scc, b, scale_nan, zero_all, counts):
    """The AMAX rule on blocks of ``bs`` along rows of ``L`` (see ``_amax_block``): element
    grid ``etable[0]``, element codes ``cc``, scale codes ``scc`` (float formats); ``zero_all``
    (the tensor scale is NaN): every element code 0, as ``lowbit.ops.codec.block``."""
    n = x.size
    geo, ngroups, per = _geometry(n, L, bs)
    cap = ((per * bs + 7) // 4) * 4
    ntask = counts.shape[0]
    tper = (ngroups + ntask - 1) // ntask
    rp = (0, 0, 0, 0, 0, 0)
    for task in prange(ntask):
        codes = np.empty(cap, np.int32)
        tmp = np.empty(cap, np.int32)
        words = np.empty(cap, np.int32)
        planar = np.empty(cap, np.int32)
        bad = np.empty(per, np.bool_)
        cnt = counts[task]
        g1 = min(task * tper + tper, ngroups)
        for s0 in range(task * tper, g1, per):
            s1 = min(s0 + per, g1)
            glo, ghi = _bounds(s0, geo)[0], _bounds(s1 - 1, geo)[1]
            wbase = (glo >> np.uint64(2)) << np.uint64(2)
            if mode == _STOCHASTIC:
                fill_words(words, planar, wbase, ghi, k0, k1)
            row, jb = _walk(s0, geo)
            for blk in range(s0, s1):
                lo, hi = _span(row, jb, geo)
                row, jb = _step(row, jb, geo)
                xs, isbad = _amax_block(x, lo, hi, tmp, lo - glo, sc, consts)
                bad[blk - s0] = isbad
                scodes[blk] = _float_code(xs, scc)
            _group(tmp, glo, s0, s1, glo, ghi, mode, words, wbase, topmask, geo, False, rp,
                   etable, etable, cc, True, False, codes, scodes, scale_nan, cnt)
            row, jb = _walk(s0, geo)
            for blk in range(s0, s1):
                lo, hi = _span(row, jb, geo)
                row, jb = _step(row, jb, geo)
                if bad[blk - s0]:  # NaN or Inf: the block decodes to NaN
                    scodes[blk] = scale_nan
                    cnt[2] += 1
                if bad[blk - s0] or zero_all:
                    for j in range(lo - glo, hi - glo):
                        codes[j] = 0
            _emit(codes, ghi - glo, out, raw, glo, b, -1, cnt)


# -- sentinels and packing ------------------------------------------------------------------------
@_jit
def _settle(codes, m, nan_zero, counts):
    """Replace NaN sentinels by ``nan_zero``; count both sentinels into ``counts``."""
    top = _0
    for j in range(m):
        top = max(top, codes[j])
    if top < NAN_CODE:
        return
    for j in range(m):
        c = codes[j]
        if c == NAN_CODE:
            counts[0] += 1
            codes[j] = nan_zero
        elif c == RANGE_CODE:
            counts[1] += 1


@njit(cache=True)
def _emit(codes, m, out, raw, base, b, nan_zero, counts):
    if nan_zero >= 0:  # sentinels may occur
        _settle(codes, m, nan_zero, counts)
    if raw.size:
        for j in range(m):
            raw[base + j] = codes[j]
    else:
        _pack(codes, m, out, base, b)


@_jit
def _pack(codes, m, out, base, b):
    """Pack ``codes[:m]`` (``m`` uint64) of ``b`` bits into ``out`` from element ``base`` on
    (``base · b`` a multiple of 8; the byte holding the last code's bits is written whole)."""
    off = (base * np.uint64(b)) >> np.uint64(3)
    if b == 8:
        for j in range(m):
            out[off + j] = codes[j]
    elif b == 4:
        half = m >> np.uint64(1)
        for j in range(half):
            out[off + j] = bor(codes[2 * j], shl(codes[2 * j + 1], 4))
        if m & np.uint64(1):
            out[off + half] = codes[m - np.uint64(1)]
    elif b == 16:
        for j in range(m):
            out[off + 2 * j] = codes[j]
            out[off + 2 * j + 1] = shr(codes[j], 8)
    elif b == 6:
        groups = m >> np.uint64(2)
        for g in range(groups):
            c0, c1 = codes[4 * g], codes[4 * g + 1]
            c2, c3 = codes[4 * g + 2], codes[4 * g + 3]
            out[off + 3 * g] = bor(c0, shl(c1, 6))
            out[off + 3 * g + 1] = bor(shr(c1, 2), shl(c2, 4))
            out[off + 3 * g + 2] = bor(shr(c2, 4), shl(c3, 2))
        _pack_bits(codes, groups * _U4, m, out, off + np.uint64(3) * groups, b)
    else:
        _pack_bits(codes, np.uint64(0), m, out, off, b)


@njit(cache=True)
def _pack_bits(codes, j0, m, out, off, b):
    """Codes ``j0 .. m - 1`` from byte ``off`` on, through a bit accumulator (any ``b``)."""
    acc = np.uint64(0)
    nacc = np.uint64(0)
    for j in range(j0, m):
        acc |= np.uint64(codes[j]) << nacc
        nacc += np.uint64(b)
        while nacc >= np.uint64(8):
            out[off] = acc & np.uint64(0xFF)
            off += np.uint64(1)
            acc >>= np.uint64(8)
            nacc -= np.uint64(8)
    if nacc:
        out[off] = acc


@njit(parallel=True, cache=True)
def pack_kernel(raw, out, b):
    """Pack uint16 codes ``raw`` (one per element) of ``b`` bits into ``out``."""
    n = raw.size
    for t in prange((n + CHUNK - 1) // CHUNK):
        lo = np.uint64(t * CHUNK)
        m = min(np.uint64(CHUNK), np.uint64(n) - lo)
        codes = np.empty(CHUNK, np.int32)
        for j in range(m):
            codes[j] = raw[lo + j]
        _pack(codes, m, out, lo, b)
