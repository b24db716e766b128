"""Elementwise kernels: ``_float_kernel`` (``FloatFormat``, ``ExpFormat``) and ``_fixed_kernel``
(``FixedPoint``, ``IntFormat``), one pass over memory each.

A program rounds a tile of ``ROWS × 4`` consecutive elements; row ``i`` holds the four elements
that share Philox counter ``n >> 2``, so one Philox call serves four elements.  Offsets are
int64 (tensors past 2^31 elements).  Numeric format parameters are runtime scalars, annotated
and never specialised, so a sweep over formats compiles one variant per rounding mode and
family flags.
"""

import triton
import triton.language as tl

from .core import (
    _STOCHASTIC, _element_words, _load, _round_fixed, _round_float, _store, _words,
)


@triton.jit(do_not_specialize=["seed_lo", "seed_hi", "rbits", "emin", "man", "vmax",
                               "saturate", "ovf", "inf_out", "neg_out", "neg_zero", "zero"])
def _float_kernel(
    x_ptr, y_ptr,  # fp32 input and output, contiguous
    n,  # number of elements
    seed_lo: tl.uint32, seed_hi: tl.uint32, rbits: tl.int32,  # Philox key, random bits
    emin: tl.int32, man: tl.int32,  # smallest normal exponent, mantissa bits
    vmax: tl.int32, saturate: tl.int32,  # largest value (fp32 bits); overflow clamps to it
    ovf: tl.int32, inf_out: tl.int32,  # bits for overflow; magnitude bits for ±Inf inputs
    neg_out: tl.int32, neg_zero: tl.int32,  # unsigned formats' negatives; -0 kept
    zero: tl.int32,  # what a rounded zero becomes (ExpFormat: its smallest power)
    ROUNDING: tl.constexpr,  # ROUNDING_CODE of the mode
    EXP: tl.constexpr, SUBNORMALS: tl.constexpr, SIGNED: tl.constexpr,  # family flags
    WIDE: tl.constexpr,  # emin < -126 or no subnormals: log2 of subnormal inputs matters
    ROWS: tl.constexpr,  # rows of 4 elements per program
):
    ctr = tl.program_id(0).to(tl.int64) * ROWS + tl.arange(0, ROWS)  # Philox counters n >> 2
    offs = ctr[:, None] * 4 + tl.arange(0, 4)[None, :]
    bits = _load(x_ptr, offs, n, ROWS)
    if ROUNDING == _STOCHASTIC:
        word = _words(ctr, seed_lo.to(tl.uint32), seed_hi.to(tl.uint32))
    else:
        word = 0
    y = _round_float(bits, word, rbits, 0, vmax, emin, man, saturate, ovf, inf_out, neg_out,
                     neg_zero, zero, ROUNDING, EXP, SUBNORMALS, SIGNED, WIDE)
    _store(y_ptr, offs, n, y, ROWS)


@triton.jit(do_not_specialize=["seed_lo", "seed_hi", "rbits", "q", "lo", "hi", "clamp"])
def _fixed_kernel(
    x_ptr, y_ptr,  # fp32 input and output, contiguous
    n,  # number of elements
    seed_lo: tl.uint32, seed_hi: tl.uint32, rbits: tl.int32,  # Philox key, random bits
    q: tl.int32,  # grid step 2^q
    lo: tl.int32, hi: tl.int32, clamp: tl.int32,  # fp32 bits of the bounds; clamp flag
    ROUNDING: tl.constexpr,  # ROUNDING_CODE of the mode
    ROWS: tl.constexpr,  # rows of 4 elements per program
):
    ctr = tl.program_id(0).to(tl.int64) * ROWS + tl.arange(0, ROWS)
    offs = ctr[:, None] * 4 + tl.arange(0, 4)[None, :]
    bits = _load(x_ptr, offs, n, ROWS)
    if ROUNDING == _STOCHASTIC:
        word = _words(ctr, seed_lo.to(tl.uint32), seed_hi.to(tl.uint32))
    else:
        word = 0
    y = _round_fixed(bits, word, rbits, q, lo, hi, clamp, ROUNDING)
    _store(y_ptr, offs, n, y, ROWS)


@triton.jit
def _words_kernel(
    out_ptr,  # int64 output: the uint32 word of each element
    start, n,  # logical index of the first element, number of elements
    seed_lo: tl.uint32, seed_hi: tl.uint32,  # Philox key
    BLOCK: tl.constexpr,  # elements per program
):
    """The stream itself (for tests): element ``start + i`` gets its word."""
    i = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    w = _element_words(start + i, seed_lo.to(tl.uint32), seed_hi.to(tl.uint32))
    tl.store(out_ptr + i, w.to(tl.int64), mask=i < n)
