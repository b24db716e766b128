"""Triton device code of packed storage: round, emit codes and pack in one pass; decode.

``_encode_kernel`` rounds a tile of ``ROWS × 4`` elements as the elementwise kernels do
(``_round_float`` / ``_round_fixed``, row ``i`` = the four elements of Philox counter ``i``)
or, with ``BLOCKED``, ``NB`` blocks of ``BS`` elements as ``_block_kernel`` does (power-of-two
rules or AMAX; blocks along rows whose length is a multiple of ``BS``, a power of two >= 4, so
the tile is a contiguous run and reshapes to rows of 4).  The code of a rounded value is read
from its fp32 bits as in ``lowbit.kernels.cpu._codec`` (same constants, from the host), and
each row of four codes becomes 4, 3, 2 or 8 bytes of the little-endian stream (``BITS`` = 8,
6, 4 or 16).  ``_decode_kernel`` reads each code's bytes and looks its value up in a table
(times the block's factor with ``BLOCKED``).  Only integer operations and IEEE fp32 products
and ``div_rn`` divisions, as the rounding kernels.
"""

import triton
import triton.language as tl

from .block import _MAX, _pow2, _scale_exponent
from .core import _ABS_MASK, _INF_BITS, _NEAREST, _STOCHASTIC, _round_fixed, _round_float, _words

_ALL = tl.constexpr(tl.PropagateNan.ALL)


@triton.jit
def _add(a, b):
    return a + b


# tl.sum's combine function, which the interpreter reduces with numpy (see block._MAX).
_SUM = getattr(tl.standard, "_sum_combine", _add)
_NAN_CODE = tl.constexpr(1 << 16)
_RANGE_CODE = tl.constexpr(1 << 17)


@triton.jit
def _f32(bits):
    return bits.to(tl.float32, bitcast=True)


@triton.jit
def _float_code(v, c0, c1, c2, c3, c4, c5, c6, c7, c8):
    """The code of fp32 patterns ``v`` on a float grid; ``c0..c8`` = (T, bits of
    2^(man-emin), 23 - man, rebias, sign bit, codes of +Inf, -Inf, +NaN, -NaN)."""
    a = v & _ABS_MASK
    neg = v < 0
    sub_body = (_f32(a) * _f32(c1)).to(tl.int32)  # exact: a subnormal's mantissa
    code = tl.where(a < c0, sub_body, (a >> c2) - c3) | tl.where(neg, c4, 0)
    code = tl.where(a == _INF_BITS, tl.where(neg, c6, c5), code)
    return tl.where(a > _INF_BITS, tl.where(neg, c8, c7), code)


@triton.jit
def _fixed_code(v, c0, c1, c2, c3, c4):
    """Two's complement codes; ``c0..c4`` = (bits of 2^-q, of qmin, of qmax, mask, clamp)."""
    f = _f32(v) * _f32(c0)
    k = tl.minimum(tl.maximum(f, _f32(c1)), _f32(c2))
    code = k.to(tl.int32) & c3
    code = tl.where((c4 == 0) & (k != f), _RANGE_CODE, code)
    return tl.where((v & _ABS_MASK) > _INF_BITS, _NAN_CODE, code)


@triton.jit
def _codes(v, c0, c1, c2, c3, c4, c5, c6, c7, c8, FIXED: tl.constexpr):
    if FIXED:
        return _fixed_code(v, c0, c1, c2, c3, c4)
    return _float_code(v, c0, c1, c2, c3, c4, c5, c6, c7, c8)


@triton.jit
def _settle(code, valid, counts_ptr, nan_zero):
    """Count the sentinels (NaN without a NaN code, values outside an unclamped word) and
    store NaN as ``nan_zero``."""
    is_nan = valid & (code == _NAN_CODE)
    outside = valid & (code == _RANGE_CODE)
    tl.atomic_add(counts_ptr, tl.reduce(tl.reduce(is_nan.to(tl.int32), 1, _SUM), 0, _SUM))
    tl.atomic_add(counts_ptr + 1, tl.reduce(tl.reduce(outside.to(tl.int32), 1, _SUM), 0, _SUM))
    return tl.where(is_nan, nan_zero, code)


@triton.jit
def _pack_store(out_ptr, ctr, code, n, BITS: tl.constexpr, ROWS: tl.constexpr):
    """Store a ``[ROWS, 4]`` tile of codes (row ``i`` = elements ``4 ctr[i] .. + 3``, zero
    past ``n``) as ``BITS``-bit codes of the stream (``out_ptr``: int16 for 16 bits)."""
    nbytes = (n * BITS + 7) // 8
    if BITS == 8:
        offs = ctr[:, None] * 4 + tl.arange(0, 4)[None, :]
        tl.store(out_ptr + offs, code.to(tl.uint8), mask=offs < n)
    elif BITS == 16:
        offs = ctr[:, None] * 4 + tl.arange(0, 4)[None, :]
        tl.store(out_ptr + offs, code.to(tl.int16), mask=offs < n)
    else:
        even, odd = tl.split(tl.reshape(code, [ROWS, 2, 2]))  # columns (0, 2) and (1, 3)
        if BITS == 4:
            offs = ctr[:, None] * 2 + tl.arange(0, 2)[None, :]
            tl.store(out_ptr + offs, (even | (odd << 4)).to(tl.uint8), mask=offs < nbytes)
        else:
            tl.static_assert(BITS == 6)
            c0, c2 = tl.split(even)
            c1, c3 = tl.split(odd)
            base = ctr * 3
            tl.store(out_ptr + base, (c0 | (c1 << 6)).to(tl.uint8), mask=base < nbytes)
            tl.store(out_ptr + base + 1, ((c1 >> 2) | (c2 << 4)).to(tl.uint8),
                     mask=base + 1 < nbytes)
            tl.store(out_ptr + base + 2, ((c2 >> 4) | (c3 << 2)).to(tl.uint8),
                     mask=base + 2 < nbytes)


@triton.jit
def _pow2_rule(bits, word, amax, rbits, emax_elem, k_lo, k_hi, even_add, max_e, e_a, e_b, e_c,
               e_d, e_e, e_f, e_g, e_h, e_i, ROUNDING: tl.constexpr, RULE: tl.constexpr,
               FIXED: tl.constexpr, SUBNORMALS: tl.constexpr, SIGNED: tl.constexpr):
    """(element values ``P = v · 2^-k`` as fp32 patterns, ``k``) of power-of-two-scaled blocks
    (rows of ``bits``), ``v`` rounded as ``_block_kernel`` rounds it."""
    k = _scale_exponent(amax, emax_elem, k_lo, k_hi, even_add, max_e, RULE)
    k2 = k[:, None]
    if FIXED:
        q = k2 + e_a
        step = _pow2(tl.minimum(tl.maximum(q, -149), 127))
        lo = (e_b.to(tl.float32) * step).to(tl.int32, bitcast=True)
        hi = (e_c.to(tl.float32) * step).to(tl.int32, bitcast=True)
        v = _round_fixed(bits, word, rbits, q, lo, hi, e_d, ROUNDING)
    else:
        vmax = (_f32(e_c) * _pow2(k2)).to(tl.int32, bitcast=True)
        v = _round_float(bits, word, rbits, k2, vmax, e_a, e_b, e_d, e_e, e_f, e_g, e_h, e_i,
                         ROUNDING, False, SUBNORMALS, SIGNED, True)
    # the exact factors 2^-k of lowbit.ops.codec.block._pow2_elements
    p = _f32(v) * _pow2(tl.minimum(tl.maximum(-k2, -149), 127))
    p = p * _pow2(tl.minimum(tl.maximum(-k2 - 127, 0), 127))
    return p.to(tl.int32, bitcast=True), k


@triton.jit
def _amax_parts(bits, word, amax, pts_ptr, rbits, max_e, s_min, s_max, s_emin, s_man, e_a,
                e_b, e_c, e_d, e_e, e_f, e_g, e_h, e_i, ROUNDING: tl.constexpr,
                SUBNORMALS: tl.constexpr, SIGNED: tl.constexpr, WIDE: tl.constexpr,
                TENSOR_SCALE: tl.constexpr):
    """(element values P, block scales X) of ``blockscale.amax_scaled`` (float elements), in
    its fp32 order; ``pts_ptr`` holds the tensor scale ``p`` and ``1 / p`` (TENSOR_SCALE)."""
    ratio = tl.math.div_rn(_f32(amax), max_e)
    if TENSOR_SCALE:
        p = tl.load(pts_ptr + amax * 0)
        ratio = tl.math.div_rn(ratio, p)
        num = tl.load(pts_ptr + 1 + amax * 0)
    else:
        num = tl.full(ratio.shape, 1.0, tl.float32)
    ratio = tl.minimum(tl.maximum(ratio, _f32(s_min), propagate_nan=_ALL), _f32(s_max),
                       propagate_nan=_ALL)
    # as _block._amax_rule: the clamped ratio is a positive normal of the scale's range
    xs = _round_float(ratio.to(tl.int32, bitcast=True), 0, 32, 0, _ABS_MASK, s_emin, s_man, 1,
                      0, 0, 0, 1, 0, _NEAREST, False, True, True, True)
    r = tl.minimum(tl.math.div_rn(num, _f32(xs)), 3.4028234663852886e38, propagate_nan=_ALL)
    scaled = tl.maximum(_f32(bits) * r[:, None], -max_e, propagate_nan=_ALL)
    scaled = tl.minimum(scaled, max_e, propagate_nan=_ALL).to(tl.int32, bitcast=True)
    q = _round_float(scaled, word, rbits, 0, e_c, e_a, e_b, e_d, e_e, e_f, e_g, e_h, e_i,
                     ROUNDING, False, SUBNORMALS, SIGNED, WIDE)
    return q, xs


@triton.jit(do_not_specialize=[
    "n", "nblocks", "seed_lo", "seed_hi", "rbits", "emax_elem", "k_lo", "k_hi", "even_add",
    "max_e", "s_min", "s_max", "s_emin", "s_man", "e_a", "e_b", "e_c", "e_d", "e_e", "e_f",
    "e_g", "e_h", "e_i", "c0", "c1", "c2", "c3", "c4", "c5", "c6", "c7", "c8", "nan_zero",
    "scale_nan", "d0", "d1", "d2", "d3", "d4", "d5", "d6", "d7", "d8"])
def _encode_kernel(
    x_ptr, out_ptr,  # fp32 input; packed output (uint8, int16 for 16-bit codes)
    scodes_ptr, counts_ptr,  # int32 scale code per block; int32[2] sentinel counts
    stable_ptr, pts_ptr,  # power-of-two rules: scale code of 2^(k_lo + i); AMAX: p, 1 / p
    n, nblocks,  # elements, blocks
    seed_lo: tl.uint32, seed_hi: tl.uint32, rbits: tl.int32,  # Philox key, random bits
    emax_elem: tl.int32, k_lo: tl.int32, k_hi: tl.int32, even_add: tl.int32,  # rules
    max_e: tl.int32, s_min: tl.int32, s_max: tl.int32, s_emin: tl.int32, s_man: tl.int32,
    e_a: tl.int32, e_b: tl.int32, e_c: tl.int32, e_d: tl.int32, e_e: tl.int32,  # element
    e_f: tl.int32, e_g: tl.int32, e_h: tl.int32, e_i: tl.int32,  # (_block._element_args)
    c0: tl.int32, c1: tl.int32, c2: tl.int32, c3: tl.int32, c4: tl.int32,  # element codes
    c5: tl.int32, c6: tl.int32, c7: tl.int32, c8: tl.int32,
    nan_zero: tl.int32, scale_nan: tl.int32,  # code of NaN without a NaN code; NaN block
    d0: tl.int32, d1: tl.int32, d2: tl.int32, d3: tl.int32, d4: tl.int32,  # AMAX: scale
    d5: tl.int32, d6: tl.int32, d7: tl.int32, d8: tl.int32,  # codes (float formats)
    ROUNDING: tl.constexpr, RULE: tl.constexpr,  # rounding mode; scale rule (4: AMAX)
    BLOCKED: tl.constexpr, FIXED: tl.constexpr, SUBNORMALS: tl.constexpr,
    SIGNED: tl.constexpr, WIDE: tl.constexpr, TENSOR_SCALE: tl.constexpr,
    CHECK: tl.constexpr,  # sentinels may occur
    BITS: tl.constexpr, NB: tl.constexpr, BS: tl.constexpr, ROWS: tl.constexpr,
):
    ctr = tl.program_id(0).to(tl.int64) * ROWS + tl.arange(0, ROWS)  # Philox counters
    offs = ctr[:, None] * 4 + tl.arange(0, 4)[None, :]
    valid = offs < n
    bits = tl.load(x_ptr + offs, mask=valid, other=0.0).to(tl.int32, bitcast=True)
    if ROUNDING == _STOCHASTIC:
        word = _words(ctr, seed_lo.to(tl.uint32), seed_hi.to(tl.uint32))
    else:
        word = 0
    if BLOCKED:
        bits = tl.reshape(bits, [NB, BS])
        if ROUNDING == _STOCHASTIC:
            word = tl.reshape(word, [NB, BS])
        amax = tl.reduce(bits & _ABS_MASK, 1, _MAX)
        g = tl.program_id(0).to(tl.int64) * NB + tl.arange(0, NB)
        if RULE == 4:
            v, xs = _amax_parts(bits, word, amax, pts_ptr, rbits, _f32(max_e), s_min, s_max,
                               s_emin, s_man, e_a, e_b, e_c, e_d, e_e, e_f, e_g, e_h, e_i,
                               ROUNDING, SUBNORMALS, SIGNED, WIDE, TENSOR_SCALE)
            scode = _float_code(xs, d0, d1, d2, d3, d4, d5, d6, d7, d8)
            zero = amax >= _INF_BITS
            if TENSOR_SCALE:  # x holds NaN: every element code 0 (lowbit.ops.codec.block)
                p = tl.load(pts_ptr + g * 0)
                zero = zero | (p != p)
        else:
            v, k = _pow2_rule(bits, word, amax, rbits, emax_elem, k_lo, k_hi, even_add,
                              _f32(max_e), e_a, e_b, e_c, e_d, e_e, e_f, e_g, e_h, e_i,
                              ROUNDING, RULE, FIXED, SUBNORMALS, SIGNED)
            scode = tl.load(stable_ptr + (k - k_lo), mask=g < nblocks, other=0)
            zero = amax >= _INF_BITS
        code = _codes(v, c0, c1, c2, c3, c4, c5, c6, c7, c8, FIXED)
        code = tl.reshape(tl.where(zero[:, None], 0, code), [ROWS, 4])
        tl.store(scodes_ptr + g, tl.where(amax >= _INF_BITS, scale_nan, scode),
                 mask=g < nblocks)
    elif FIXED:
        v = _round_fixed(bits, word, rbits, e_a, e_e, e_f, e_d, ROUNDING)
        code = _fixed_code(v, c0, c1, c2, c3, c4)
    else:
        v = _round_float(bits, word, rbits, 0, e_c, e_a, e_b, e_d, e_e, e_f, e_g, e_h, e_i,
                         ROUNDING, False, SUBNORMALS, SIGNED, WIDE)
        code = _float_code(v, c0, c1, c2, c3, c4, c5, c6, c7, c8)
    if CHECK:
        code = _settle(code, valid, counts_ptr, nan_zero)
    _pack_store(out_ptr, ctr, tl.where(valid, code, 0), n, BITS, ROWS)


@triton.jit(do_not_specialize=["n", "nbytes"])
def _decode_kernel(
    data_ptr, table_ptr, y_ptr,  # packed stream (uint8); fp32 bits of every code; fp32 out
    scodes_ptr, stable_ptr, ts_ptr,  # BLOCKED: scale code per block, its factor, tensor scale
    n, nbytes,  # elements, bytes of the stream
    BITS: tl.constexpr, BLOCKED: tl.constexpr, BS: tl.constexpr, BLOCK: tl.constexpr,
):
    """``y = table[code]`` (BLOCKED: times ``ts · stable[scale code]``, NaN where that is)."""
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < n
    bit = offs * BITS
    j = bit >> 3
    w = tl.load(data_ptr + j, mask=mask, other=0).to(tl.int32)
    if BITS % 8 != 0 and 8 % BITS != 0 or BITS > 8:  # the code may reach a second byte
        w = w | (tl.load(data_ptr + j + 1, mask=mask & (j + 1 < nbytes), other=0)
                 .to(tl.int32) << 8)
    if BITS > 9:  # ... or a third
        w = w | (tl.load(data_ptr + j + 2, mask=mask & (j + 2 < nbytes), other=0)
                 .to(tl.int32) << 16)
    code = (w >> (bit & 7).to(tl.int32)) & ((1 << BITS) - 1)
    y = tl.load(table_ptr + code, mask=mask, other=0)
    if BLOCKED:
        sc = tl.load(scodes_ptr + offs // BS, mask=mask, other=0)
        s = _f32(tl.load(stable_ptr + sc, mask=mask, other=0))
        f = tl.load(ts_ptr + offs * 0) * s
        y = tl.where(s != s, 0x7FC00000, (_f32(y) * f).to(tl.int32, bitcast=True))
    tl.store(y_ptr + offs, _f32(y), mask=mask)
