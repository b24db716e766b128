"""Block-scaled formats (``BlockFormat``) with power-of-two scales on the CPU.

Layouts served here, as the Triton backend's:

* blocks of ``k`` along the last axis (``block_size=k, axis=-1``; a ragged last block per row
  included) and one block per row (``block_size=None, axis=-1``): one pass, fused per block:
  the block's amax (the max of the |x| bit patterns; a NaN or Inf makes the block NaN), its
  scale exponent by the rule (FLOOR, CEIL, EVEN, RCEIL, as ``reference.blockscale``), then the
  element rounding of ``_scalar`` on the element format times ``2^k``;
* one block for the whole tensor (``axis=None``, or ``block_size=None`` over every axis, as
  ``bfp<wl>``): a parallel amax pass, then the scalar kernel of the shifted element format.

The per-shift constants of the element format (``_params``, with ``shift=k``) are tabulated
once per (format, rounding) for every ``k`` of the scale format's range, so a block only looks
its row up.  The stochastic stream follows the logical element index, as everywhere.  Other
layouts (blocks along another axis, 2-D tiles) and the AMAX rule (NVFP4) use the reference.
"""

from __future__ import annotations

import functools
from typing import Optional, Tuple

import numpy as np
from numba import njit, prange

from ...formats import BlockFormat, Rounding, ScaleRule
from ..reference.block import normalize_axes
from ..reference.blockscale import _scale_range
from ._bits import band, bits_from_f32, f32_from_bits
from ._params import f32_bits, fixed_params, float_params, i32_tuple
from ._scalar import CHUNK, _STOCHASTIC, _fixed_loop, _float_loop, fill_words

__all__ = ["layout", "rule_params", "float_table", "fixed_table", "scale_exp", "absmax_bits",
           "block_kernel"]

_RULE_CODE = {ScaleRule.FLOOR: 0, ScaleRule.CEIL: 1, ScaleRule.EVEN: 2, ScaleRule.RCEIL: 3}
_FLOOR, _CEIL, _EVEN, _RCEIL = range(4)
_INF = np.int32(0x7F800000)
_NAN = np.int32(0x7FC00000)
_ABS = np.int32(0x7FFFFFFF)
_I32_0 = np.int32(0)


# -- host side ----------------------------------------------------------------------------------
def layout(fmt: BlockFormat, shape: Tuple[int, ...]) -> Optional[Tuple[int, int]]:
    """(row length L, block size) for blocks along the last axis, (0, 0) for one block over
    the whole tensor, None for a layout served by the reference."""
    if len(shape) == 0:
        return None
    sizes, axes = normalize_axes(fmt, len(shape))
    if sizes is None and sorted(axes) == list(range(len(shape))):
        return 0, 0
    if axes != (len(shape) - 1,) or shape[-1] == 0:
        return None
    L = shape[-1]
    return L, (L if sizes is None else min(sizes[0], L))


def rule_params(fmt: BlockFormat) -> tuple:
    """(rule, emax_elem, lowest k, highest k, EVEN's half-ulp, bits of fp32 max_elem)."""
    man = fmt.element.significand_bits - 1
    lo, hi = _scale_range(fmt)
    return (_RULE_CODE[fmt.scale_rule], fmt.emax_elem, lo, hi,
            (1 << (22 - man)) if man < 23 else 0, f32_bits(fmt.element.max))


@functools.lru_cache(maxsize=64)
def float_table(fmt: BlockFormat, rounding: Rounding) -> np.ndarray:
    """Row ``k - lowest k``: the grid and constants of the element format times ``2^k``."""
    _, _, lo, hi, _, _ = rule_params(fmt)
    rows = [sum(float_params(fmt.element, rounding, k), ()) for k in range(lo, hi + 1)]
    return np.array(rows, dtype=np.int32)


@functools.lru_cache(maxsize=64)
def fixed_table(fmt: BlockFormat, rounding: Rounding) -> np.ndarray:
    """Row ``k - lowest k``: (q + 150, bits of 2^q, bits of lo, bits of hi, keep)."""
    _, _, lo, hi, _, _ = rule_params(fmt)
    rows = []
    for k in range(lo, hi + 1):
        q150, q_bits, vlo, vhi, keep = fixed_params(fmt.element, rounding, k)
        rows.append(i32_tuple((q150, q_bits, f32_bits(vlo), f32_bits(vhi), keep)))
    return np.array(rows, dtype=np.int32)


# -- scale exponents ----------------------------------------------------------------------------
@njit(cache=True)
def _etrue(b):
    """floor(log2 v) of the finite fp32 v >= 0 with bits ``b`` (-276 for 0, as the reference)."""
    field = b >> 23
    if field != 0:
        return field - 127
    return -149 + (((bits_from_f32(np.float32(b & 0x7FFFFF)) >> 23) & 0xFF) - 127)


@njit(cache=True)
def _pow2_sig(b):
    """The significand of the fp32 bits ``b`` is a power of two (or zero)."""
    sig = b & 0x7FFFFF
    if (b >> 23) != 0:
        sig |= 0x800000
    return (sig & (sig - 1)) == 0


@njit(cache=True)
def scale_exp(m, rp):
    """``k`` of a block's scale 2^k from the bits ``m`` of its (finite) amax, as
    ``reference.blockscale.scale_exponent``; ``rp`` from ``rule_params``."""
    rule, emax_elem, lo, hi, even_add, max_e = rp
    m = np.int64(m)
    if m == 0:
        return lo
    if rule == _RCEIL:
        r = np.int64(bits_from_f32(f32_from_bits(m) / f32_from_bits(max_e)))
        e = _etrue(r) + (0 if _pow2_sig(r) else 1)
    elif rule == _EVEN:
        e = (((m + even_add) >> 23) & 0xFF) - 127 - emax_elem
    else:
        e = _etrue(m) - emax_elem
        if rule == _CEIL and not _pow2_sig(m):
            e += 1
    return min(max(e, lo), hi)


@njit(cache=True)
def _absmax(x, lo, hi):
    m = _I32_0
    for i in range(lo, hi):
        m = max(m, band(x[i], _ABS))
    return m


@njit(parallel=True, cache=True)
def absmax_bits(x):
    """max |x| bit pattern over the tensor (above 0x7F800000 for NaN; equal for Inf)."""
    n = x.size
    tasks = (n + CHUNK - 1) // CHUNK
    part = np.zeros(tasks, np.int32)
    for t in prange(tasks):
        lo = np.uint64(t * CHUNK)
        part[t] = _absmax(x, lo, min(lo + np.uint64(CHUNK), np.uint64(n)))
    return part.max()


# -- fused block kernels ------------------------------------------------------------------------
@njit(cache=True)
def _task_words(lo, hi, mode, k0, k1):
    """Random words of elements ``lo .. hi - 1``: (words, first element they start at)."""
    if mode != _STOCHASTIC:
        return np.empty(0, np.int32), lo
    wbase = (lo >> np.uint64(2)) << np.uint64(2)
    size = ((hi - wbase + np.uint64(3)) >> np.uint64(2)) << np.uint64(2)
    words = np.empty(size, np.int32)
    fill_words(words, np.empty(size, np.int32), wbase, hi, k0, k1)
    return words, wbase


@njit(cache=True)
def _block_bounds(blk, L, bs, nbr):
    row = blk // nbr
    lo = row * L + (blk - row * nbr) * bs
    return np.uint64(lo), np.uint64(min(lo + bs, row * L + L))


@njit(parallel=True, cache=True)
def block_kernel(x, y, mode, k0, k1, topmask, L, bs, rp, table, float_elem):
    """Blocks of ``bs`` along rows of ``L`` elements (see the module); ``table`` row ``r`` holds
    the element grid for the block scale 2^(r + lo_k): ``float_table`` for FloatFormat
    elements (``float_elem``), ``fixed_table`` for fixed-point or integer ones."""
    nbr = (L + bs - 1) // bs
    nblocks = (x.size // L) * nbr
    per = max(1, CHUNK // bs)
    lo_k = rp[2]
    for task in prange((nblocks + per - 1) // per):
        b0 = task * per
        b1 = min(b0 + per, nblocks)
        words, wbase = _task_words(_block_bounds(b0, L, bs, nbr)[0],
                                   _block_bounds(b1 - 1, L, bs, nbr)[1], mode, k0, k1)
        for blk in range(b0, b1):
            lo, hi = _block_bounds(blk, L, bs, nbr)
            m = _absmax(x, lo, hi)
            if m >= _INF:  # NaN or Inf: the block is NaN
                for i in range(lo, hi):
                    y[i] = _NAN
                continue
            r = scale_exp(m, rp) - lo_k
            if float_elem:
                grid = (table[r, 0], table[r, 1], table[r, 2], table[r, 3])
                c = (table[r, 4], table[r, 5], table[r, 6], table[r, 7], table[r, 8],
                     table[r, 9], table[r, 10])
                _float_loop(x, y, lo, hi, mode, words, wbase, topmask, grid, c, True)
            else:
                _fixed_loop(x, y, lo, hi, mode, words, wbase, topmask, table[r, 0],
                            table[r, 1], f32_from_bits(table[r, 2]),
                            f32_from_bits(table[r, 3]), table[r, 4])
