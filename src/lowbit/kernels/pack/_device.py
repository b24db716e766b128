"""Triton device code of the group pack (``lowbit.kernels.pack``): ``_pack_kernel`` and
``_unpack_kernel``, bit-identical to ``reference``.

A program handles ``R`` whole groups as an ``[R, GS]`` tile.  Like ``lowbit.kernels.triton``'s
device code, this module calls no jitted Triton library function (``tl.min``, ``tl.sum``
and ``tl.randint4x`` are; reductions call ``tl.reduce`` directly), so ``_triton`` can load it
twice: compiled for CUDA tensors and interpreted for CPU tensors.  That is why the Philox rounds
are written out here (the stream of ``lowbit.kernels.philox``).  Kernels are launched with
``enable_fp_fusion=False``: the decode ``lo + q · step`` is two roundings in the reference,
never an FMA.
"""

import triton
import triton.language as tl

_NAN_BF16 = tl.constexpr(0x7FC0)
_LOW = tl.constexpr(0xFFFF)


@triton.jit
def _philox(ctr, k0, k1):
    """Philox4x32-10 of counter ``(ctr mod 2^32, ctr >> 32, 0, 0)`` under key ``(k0, k1)``
    (Salmon et al., SC'11): the four words of ``lowbit.kernels.philox.philox4x32``."""
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


# Reductions combine with Triton's own element-wise min/max/sum functions, as ``tl.min``,
# ``tl.max`` and ``tl.sum`` do: the interpreter recognises these and reduces with numpy (any
# other combine function runs one Python call per element).  Codes occupy disjoint bits, so
# their sum is their bitwise or.
_MIN = tl.standard._elementwise_min
_MAX = tl.standard._elementwise_max
_SUM = tl.standard._sum_combine


@triton.jit
def _directed(v, UP: tl.constexpr):
    """bf16 bits (int32) of fp32 ``v`` rounded toward +Inf (``UP``) or -Inf."""
    b = v.to(tl.int32, bitcast=True)
    if UP:
        away = b >= 0
    else:
        away = b < 0
    bump = ((b & _LOW) != 0) & away
    return ((b >> 16) + bump.to(tl.int32)) & _LOW


@triton.jit(do_not_specialize=["n", "nbytes", "G", "seed_lo", "seed_hi"])
def _pack_kernel(
    x_ptr,  # input, contiguous, fp32/fp16/bf16
    codes_ptr, lo_ptr, hi_ptr,  # uint8[nbytes]; int16[G] bf16 patterns of the bounds
    n, nbytes, G,  # elements, code bytes, groups
    seed_lo: tl.uint32, seed_hi: tl.uint32,  # Philox key
    BITS: tl.constexpr, GS: tl.constexpr, R: tl.constexpr,  # code width, group size, groups
):
    levels = (1 << BITS) - 1
    g = tl.program_id(0).to(tl.int64) * R + tl.arange(0, R)
    offs = g[:, None] * GS + tl.arange(0, GS)[None, :]
    valid = offs < n
    x = tl.load(x_ptr + offs, mask=valid, other=0.0).to(tl.float32)
    finite = (x == x) & (tl.abs(x) < float("inf"))
    x = tl.where(finite, x, 0.0)  # a group holding NaN or Inf is flagged below
    lo = tl.reduce(tl.where(valid, x, float("inf")), 1, _MIN)
    hi = tl.reduce(tl.where(valid, x, float("-inf")), 1, _MAX)
    bad = tl.reduce((valid & ~finite).to(tl.int32), 1, _MAX) > 0
    lo_b = tl.where(bad, _NAN_BF16, _directed(tl.where(lo == 0, 0.0, lo), False))
    hi_b = tl.where(bad, _NAN_BF16, _directed(tl.where(hi == 0, 0.0, hi), True))
    tl.store(lo_ptr + g, lo_b.to(tl.int16), mask=g < G)
    tl.store(hi_ptr + g, hi_b.to(tl.int16), mask=g < G)
    lo = (lo_b << 16).to(tl.float32, bitcast=True)
    span = (hi_b << 16).to(tl.float32, bitcast=True) - lo
    ok = (span > 0) & (span < float("inf"))
    scale = tl.where(ok, tl.math.div_rn(tl.full([R], levels, tl.float32),
                                         tl.where(ok, span, 1.0)), 0.0)
    t = tl.where(ok[:, None] & valid, (x - lo[:, None]) * scale[:, None], 0.0)
    whole = tl.floor(t)
    ctr = (g * (GS // 4))[:, None] + tl.arange(0, GS // 4)[None, :]
    r0, r1, r2, r3 = _philox(ctr, seed_lo.to(tl.uint32), seed_hi.to(tl.uint32))
    word = tl.reshape(tl.join(tl.join(r0, r2), tl.join(r1, r3)), [R, GS])  # n -> word n & 3
    u = (word >> 8).to(tl.float32) * (2.0 ** -24)
    q = tl.minimum(whole.to(tl.int32) + (u < t - whole).to(tl.int32), levels)
    PER: tl.constexpr = 8 // BITS
    NB: tl.constexpr = GS // PER
    shifts = (tl.arange(0, PER) * BITS)[None, None, :]
    byte = tl.reduce(tl.reshape(q, [R, NB, PER]) << shifts, 2, _SUM)
    boffs = g[:, None] * NB + tl.arange(0, NB)[None, :]
    tl.store(codes_ptr + boffs, byte.to(tl.uint8), mask=boffs < nbytes)


@triton.jit(do_not_specialize=["n", "nbytes", "G"])
def _unpack_kernel(
    codes_ptr, lo_ptr, hi_ptr,  # uint8[nbytes]; int16[G] bf16 patterns of the bounds
    y_ptr,  # output, contiguous, fp32/fp16/bf16
    n, nbytes, G,  # elements, code bytes, groups
    BITS: tl.constexpr, GS: tl.constexpr, R: tl.constexpr,  # code width, group size, groups
):
    levels = (1 << BITS) - 1
    PER: tl.constexpr = 8 // BITS
    NB: tl.constexpr = GS // PER
    g = tl.program_id(0).to(tl.int64) * R + tl.arange(0, R)
    boffs = g[:, None] * NB + tl.arange(0, NB)[None, :]
    byte = tl.load(codes_ptr + boffs, mask=boffs < nbytes, other=0).to(tl.int32)
    shifts = (tl.arange(0, PER) * BITS)[None, None, :]
    q = tl.reshape((byte[:, :, None] >> shifts) & levels, [R, GS]).to(tl.float32)
    lo_b = tl.load(lo_ptr + g, mask=g < G, other=0).to(tl.int32) & _LOW
    hi_b = tl.load(hi_ptr + g, mask=g < G, other=0).to(tl.int32) & _LOW
    lo = (lo_b << 16).to(tl.float32, bitcast=True)
    step = tl.math.div_rn((hi_b << 16).to(tl.float32, bitcast=True) - lo,
                          tl.full([R], levels, tl.float32))
    y = lo[:, None] + q * step[:, None]
    offs = g[:, None] * GS + tl.arange(0, GS)[None, :]
    if y_ptr.dtype.element_ty == tl.bfloat16:  # nearest-even in integers: the interpreter's
        b = y.to(tl.int32, bitcast=True)        # own bf16 cast truncates
        r = (b + 0x7FFF + ((b >> 16) & 1)) >> 16
        r = tl.where(y != y, _NAN_BF16, r)
        out = r.to(tl.int16).to(tl.bfloat16, bitcast=True)
    else:
        out = y.to(y_ptr.dtype.element_ty)
    tl.store(y_ptr + offs, out, mask=offs < n)
