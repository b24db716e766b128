"""Block-scaled kernels: ``_amax_kernel`` (the global amax, one read pass) and ``_block_kernel``
(block amax, scale and element rounding fused: one read and one write).

A program of ``_block_kernel`` holds ``NB`` blocks as the rows of an ``NB × BSP`` tile (``BSP``:
the block size rounded up to a power of two): block ``g`` is run ``g % nbr`` of row ``g // nbr``
of the tensor viewed as ``(-1, L)`` (``L``: the last axis; ``nbr = ceil(L / BS)`` blocks per
row).  The block amax is a register reduction over the tile's rows.  With ``GLOBAL`` the amax is
the whole tensor's (read from ``amax_ptr``, filled by ``_amax_kernel``), for whole-tensor
blocks; ``TENSOR_SCALE`` (NVFP4) uses both.

Scale rules follow ``reference.blockscale``: ``RULE`` 0-3 are the power-of-two rules (FLOOR,
CEIL, EVEN, RCEIL), whose scale ``2^k`` becomes a shift of the element format; 4 is AMAX, in
torchao's fp32 order of operations (IEEE divisions ``div_rn``, NaN-propagating clamps).
"""

import triton
import triton.language as tl

from .core import (
    _ABS_MASK, _INF_BITS, _NEAREST, _STOCHASTIC, _element_words, _load, _log2, _philox,
    _round_fixed, _round_float, _split, _store,
)

_FLOOR = tl.constexpr(0)
_CEIL = tl.constexpr(1)
_EVEN = tl.constexpr(2)
_RCEIL = tl.constexpr(3)
_AMAX = tl.constexpr(4)
_NAN = tl.constexpr(float("nan"))
_ALL = tl.constexpr(tl.PropagateNan.ALL)


@triton.jit
def _maximum(a, b):
    return tl.maximum(a, b)


# tl.max's own combine function: the interpreter recognises it and reduces with numpy in one
# call (any other combine function it runs element by element, ~100x slower).
_MAX = getattr(tl.standard, "_elementwise_max", _maximum)


@triton.jit
def _amax_kernel(
    x_ptr,  # fp32 input, contiguous
    amax_ptr,  # int32[1], zero-initialised: receives the largest |x| as fp32 bits
    n,  # number of elements
    ROWS: tl.constexpr,  # rows of 4 elements per program
):
    """The largest ``|x|`` bit pattern: NaN (any payload) above +Inf above every finite value."""
    offs = (tl.program_id(0).to(tl.int64) * ROWS + tl.arange(0, ROWS))[:, None] * 4 \
        + tl.arange(0, 4)[None, :]
    mag = _load(x_ptr, offs, n, ROWS) & _ABS_MASK  # masked lanes read +0
    tl.atomic_max(amax_ptr, tl.reduce(tl.reduce(mag, 1, _MAX), 0, _MAX))


@triton.jit
def _pow2(k):
    """fp32 ``2^k`` for integer ``k`` in [-149, 127] (``core.pow2``)."""
    bits = tl.where(k >= -126, (k + 127) << 23, 1 << tl.minimum(tl.maximum(k + 149, 0), 22))
    return bits.to(tl.float32, bitcast=True)


@triton.jit
def _scale_exponent(amax, emax_elem, k_lo, k_hi, even_add, max_e, RULE: tl.constexpr):
    """``blockscale.scale_exponent`` of fp32 patterns ``amax``: ``k`` with scale ``2^k``."""
    mag, e0, sig = _split(amax)
    if RULE == _FLOOR:
        e = e0 + tl.where(mag >= 0x800000, 23, _log2(sig)) - emax_elem
    elif RULE == _CEIL:
        e = e0 + tl.where(mag >= 0x800000, 23, _log2(sig)) - emax_elem
        e += ((sig & (sig - 1)) != 0).to(tl.int32)
    elif RULE == _EVEN:
        e = (((amax + even_add) >> 23) & 0xFF) - 127 - emax_elem
    else:
        tl.static_assert(RULE == _RCEIL)
        ratio = tl.math.div_rn(amax.to(tl.float32, bitcast=True), max_e)
        rmag, re0, rsig = _split(ratio.to(tl.int32, bitcast=True))
        e = re0 + tl.where(rmag >= 0x800000, 23, _log2(rsig))
        e += ((rsig & (rsig - 1)) != 0).to(tl.int32)
    k = tl.minimum(tl.maximum(e, k_lo), k_hi)
    return tl.where(mag == 0, k_lo, k)


@triton.jit(do_not_specialize=[
    "L", "nbr", "nblocks", "seed_lo", "seed_hi", "rbits", "emax_elem", "k_lo", "k_hi", "even_add",
    "max_e", "t_div", "s_min", "s_max", "s_emin", "s_man", "e_a", "e_b", "e_c", "e_d", "e_e",
    "e_f", "e_g", "e_h", "e_i"])
def _block_kernel(
    x_ptr, y_ptr,  # fp32 input and output, contiguous
    amax_ptr,  # int32[1]: the tensor's amax bits (GLOBAL or TENSOR_SCALE)
    n, L, BS, nbr, nblocks,  # elements, last axis, block size, blocks per row, blocks
    seed_lo: tl.uint32, seed_hi: tl.uint32, rbits: tl.int32,  # Philox key, random bits
    emax_elem: tl.int32, k_lo: tl.int32, k_hi: tl.int32,  # power-of-two rules: emax, k range
    even_add: tl.int32,  # EVEN: half an element ulp in fp32 bits
    max_e: tl.int32,  # the element format's largest value (fp32 bits, as every float here)
    t_div: tl.int32,  # TENSOR_SCALE: max_scale · max_elem
    s_min: tl.int32, s_max: tl.int32,  # AMAX: the scale's range
    s_emin: tl.int32, s_man: tl.int32,  # AMAX: the scale format's grid
    e_a: tl.int32, e_b: tl.int32, e_c: tl.int32, e_d: tl.int32, e_e: tl.int32,  # element
    e_f: tl.int32, e_g: tl.int32, e_h: tl.int32, e_i: tl.int32,  # (FloatParams/FixedParams)
    ROUNDING: tl.constexpr, RULE: tl.constexpr,  # rounding mode, scale rule
    FIXED: tl.constexpr, SUBNORMALS: tl.constexpr, SIGNED: tl.constexpr,  # element family
    WIDE: tl.constexpr,  # float element's own WIDE flag (AMAX; shifted grids always need it)
    GLOBAL: tl.constexpr, TENSOR_SCALE: tl.constexpr,  # whole-tensor amax; NVFP4's two levels
    RAGGED: tl.constexpr,  # L % BS != 0 (not GLOBAL): the last block of each row is short
    PADDED: tl.constexpr,  # BS < BSP: the tile's rows are longer than the blocks
    GROUPED: tl.constexpr,  # BS == BSP, BS % 4 == 0, L % 4 == 0: one Philox call per 4
    NB: tl.constexpr, BSP: tl.constexpr,  # blocks per program, block size as a power of two
):
    # Floats travel as fp32 bit patterns: the interpreter would type a Python float below
    # 2^-126 as fp64.
    max_e = max_e.to(tl.float32, bitcast=True)
    g = tl.program_id(0) * NB + tl.arange(0, NB)  # block ids
    j = tl.arange(0, BSP)
    if PADDED:
        bs = BS
    else:
        bs = BSP  # a compile-time block size keeps full tiles on vector loads
    if RAGGED:
        row = g // nbr
        col = (g - row * nbr) * bs
        base = row.to(tl.int64) * L + col  # index of each block's first element
        valid = (g[:, None] < nblocks) & ((col[:, None] + j[None, :]) < L)
    else:
        base = g.to(tl.int64) * bs
        valid = base[:, None] + j[None, :] < n
    if PADDED:
        valid = valid & (j[None, :] < bs)
    offs = base[:, None] + j[None, :]
    if GLOBAL:  # rows of 4: the elementwise kernels' tile, unmasked but for the last
        bits = _load(x_ptr, offs, n, NB)
        x = bits.to(tl.float32, bitcast=True)
        amax = tl.load(amax_ptr + g * 0)
    else:
        x = tl.load(x_ptr + offs, mask=valid, other=0.0)
        bits = x.to(tl.int32, bitcast=True)
        amax = tl.reduce(bits & _ABS_MASK, 1, _MAX)
    if ROUNDING == _STOCHASTIC:
        k0 = seed_lo.to(tl.uint32)
        k1 = seed_hi.to(tl.uint32)
        if GROUPED:
            ctr = (base >> 2)[:, None] + tl.arange(0, BSP // 4)[None, :]
            r0, r1, r2, r3 = _philox(ctr, k0, k1)
            word = tl.reshape(tl.join(tl.join(r0, r2), tl.join(r1, r3)), [NB, BSP])
        else:
            word = _element_words(offs, k0, k1)
    else:
        word = 0
    if RULE == _AMAX:
        y = _amax_rule(x, bits, word, amax, amax_ptr, rbits, max_e, t_div, s_min, s_max,
                       s_emin, s_man, e_a, e_b, e_c, e_d, e_e, e_f, e_g, e_h, e_i, ROUNDING,
                       FIXED, SUBNORMALS, SIGNED, WIDE, TENSOR_SCALE)
    else:
        k = _scale_exponent(amax, emax_elem, k_lo, k_hi, even_add, max_e, RULE)[:, None]
        if FIXED:  # quantize_fixed with shift k: grid 2^(k + q), bounds pow2(q') · qmin/qmax
            q = k + e_a  # (e_a, e_b, e_c, e_d, e_e, e_f) = (q, qmin, qmax, clamp, lo, hi)
            step = _pow2(tl.minimum(tl.maximum(q, -149), 127))
            lo = (e_b.to(tl.float32) * step).to(tl.int32, bitcast=True)
            hi = (e_c.to(tl.float32) * step).to(tl.int32, bitcast=True)
            y = _round_fixed(bits, word, rbits, q, lo, hi, e_d, ROUNDING)
        else:  # quantize_float with shift k: vmax = carrier_max · 2^k in fp32
            vmax = (e_c.to(tl.float32, bitcast=True) * _pow2(k)).to(tl.int32, bitcast=True)
            y = _round_float(bits, word, rbits, k, vmax, e_a, e_b, e_d, e_e, e_f, e_g, e_h,
                             e_i, ROUNDING, False, SUBNORMALS, SIGNED, True)
        y = y.to(tl.float32, bitcast=True)
    y = tl.where((amax >= _INF_BITS)[:, None], _NAN, y)  # NaN or Inf: the block is NaN
    if GLOBAL:
        _store(y_ptr, offs, n, y.to(tl.int32, bitcast=True), NB)
    else:
        tl.store(y_ptr + offs, y, mask=valid)


@triton.jit
def _amax_rule(x, bits, word, amax, amax_ptr, rbits, max_e, t_div, s_min, s_max, s_emin, s_man,
               e_a, e_b, e_c, e_d, e_e, e_f, e_g, e_h, e_i, ROUNDING: tl.constexpr,
               FIXED: tl.constexpr, SUBNORMALS: tl.constexpr, SIGNED: tl.constexpr,
               WIDE: tl.constexpr, TENSOR_SCALE: tl.constexpr):
    """``blockscale.amax_scaled``, one fp32 operation at a time in the reference's order."""
    ratio = tl.math.div_rn(amax.to(tl.float32, bitcast=True), max_e)
    s_min = s_min.to(tl.float32, bitcast=True)
    s_max = s_max.to(tl.float32, bitcast=True)
    if TENSOR_SCALE:
        amax_t = tl.load(amax_ptr + amax * 0).to(tl.float32, bitcast=True)
        p = tl.math.div_rn(amax_t, t_div.to(tl.float32, bitcast=True))
        # blockscale.MIN_TENSOR_SCALE (2^-126); a NaN amax keeps p NaN, as torch.clamp does
        p = tl.maximum(p, 1.1754943508222875e-38, propagate_nan=_ALL)
        ratio = tl.math.div_rn(ratio, p)
        num = tl.math.div_rn(tl.full(p.shape, 1.0, tl.float32), p)  # 1.0 / p: reciprocal
    else:
        p = ratio  # unused
        num = tl.full(ratio.shape, 1.0, tl.float32)
    ratio = tl.minimum(tl.maximum(ratio, s_min, propagate_nan=_ALL), s_max, propagate_nan=_ALL)
    # The clamped ratio is positive and within the scale's normal range, so only its grid
    # matters: nearest-even onto man bits above 2^s_emin, no overflow, no specials.
    xs = _round_float(ratio.to(tl.int32, bitcast=True), 0, 32, 0, _ABS_MASK, s_emin, s_man, 1,
                      0, 0, 0, 1, 0, _NEAREST, False, True, True, True)
    xs = xs.to(tl.float32, bitcast=True)
    r = tl.minimum(tl.math.div_rn(num, xs), 3.4028234663852886e38,  # FP32_MAX, NaN kept
                   propagate_nan=_ALL)[:, None]
    scaled = tl.maximum(x * r, -max_e, propagate_nan=_ALL)
    scaled = tl.minimum(scaled, max_e, propagate_nan=_ALL).to(tl.int32, bitcast=True)
    if FIXED:
        q = _round_fixed(scaled, word, rbits, e_a, e_e, e_f, e_d, ROUNDING)
    else:
        q = _round_float(scaled, word, rbits, 0, e_c, e_a, e_b, e_d, e_e, e_f, e_g, e_h, e_i,
                         ROUNDING, False, SUBNORMALS, SIGNED, WIDE)
    q = q.to(tl.float32, bitcast=True)
    if TENSOR_SCALE:
        return q * (p * xs)[:, None]
    return q * xs[:, None]
