"""numba kernels of ``lowbit.decode``: each code looked up in a table of fp32 bits (the
format's values), times the block's factor in block formats (``_codec`` writes the stream)."""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from ._bits import band, bits_from_f32, bor, f32_from_bits, i32, shl, shr, sub
from ._codec import _geometry, _span, _step, _walk
from ._scalar import CHUNK

__all__ = ["decode_kernel", "decode_block_kernel"]

_NAN = np.int32(0x7FC00000)
_ONE = np.float32(1.0)

_jit = njit(cache=True, forceinline=True)


@_jit
def _code_at(data, i, b):
    """The ``b``-bit code of element ``i`` (uint64) in the stream ``data``."""
    bit = i * np.uint64(b)
    j = bit >> np.uint64(3)
    w = i32(data[j])
    if j + np.uint64(1) < data.size:
        w = bor(w, shl(data[j + np.uint64(1)], 8))
    if j + np.uint64(2) < data.size:
        w = bor(w, shl(data[j + np.uint64(2)], 16))
    return band(shr(w, band(bit, 7)), sub(shl(1, b), 1))


@_jit
def _val(bits, f, scaled):
    return bits_from_f32(f32_from_bits(bits) * f) if scaled else bits


@_jit
def _lookup(data, lo, m, table, y, f, scaled, b):
    """``y[lo + j]`` = ``table[code of element lo + j]`` for ``j < m`` (uint64), times ``f``
    when ``scaled``.  Byte-aligned groups of 4- and 6-bit codes are read whole; the scalar
    lookups are left unvectorised on purpose (gathers are slower here)."""
    if b == 8:
        for k in range(m):
            y[lo + k] = _val(table[data[lo + k]], f, scaled)
        return
    if b == 16:
        for k in range(m):
            c = bor(i32(data[2 * (lo + k)]), shl(data[2 * (lo + k) + 1], 8))
            y[lo + k] = _val(table[c], f, scaled)
        return
    j = np.uint64(0)
    g = np.uint64(1 if b == 4 else 3)  # codes per byte-aligned group, minus 1
    while j < m and (b == 4 or b == 6) and ((lo + j) & g) != 0:
        y[lo + j] = _val(table[_code_at(data, lo + j, b)], f, scaled)
        j += np.uint64(1)
    i0 = lo + j
    if b == 4:
        byte0 = i0 >> np.uint64(1)
        for p in range((m - j) >> np.uint64(1)):
            d = data[byte0 + p]
            y[i0 + 2 * p] = _val(table[band(d, 15)], f, scaled)
            y[i0 + 2 * p + 1] = _val(table[shr(d, 4)], f, scaled)
        j += ((m - j) >> np.uint64(1)) << np.uint64(1)
    elif b == 6:
        byte0 = (i0 >> np.uint64(2)) * np.uint64(3)
        for q in range((m - j) >> np.uint64(2)):
            w = bor(bor(i32(data[byte0 + 3 * q]), shl(data[byte0 + 3 * q + 1], 8)),
                    shl(data[byte0 + 3 * q + 2], 16))
            y[i0 + 4 * q] = _val(table[band(w, 63)], f, scaled)
            y[i0 + 4 * q + 1] = _val(table[band(shr(w, 6), 63)], f, scaled)
            y[i0 + 4 * q + 2] = _val(table[band(shr(w, 12), 63)], f, scaled)
            y[i0 + 4 * q + 3] = _val(table[shr(w, 18)], f, scaled)
        j += ((m - j) >> np.uint64(2)) << np.uint64(2)
    for k in range(j, m):
        y[lo + k] = _val(table[_code_at(data, lo + k, b)], f, scaled)


@njit(parallel=True, cache=True)
def decode_kernel(data, y, table, b):
    """``y[i]`` = ``table[code i]`` (fp32 bits) for every element of ``y``."""
    n = y.size
    for t in prange((n + CHUNK - 1) // CHUNK):
        lo = np.uint64(t * CHUNK)
        _lookup(data, lo, min(np.uint64(CHUNK), np.uint64(n) - lo), table, y, _ONE, False, b)


@njit(parallel=True, cache=True)
def decode_block_kernel(data, scodes, y, table, stable, L, bs, ts, b):
    """Blocks of ``bs`` along rows of ``L``: ``y[i]`` = ``table[code i] · (ts · S)`` with ``S``
    = ``stable[s]`` (fp32 bits) for the block's scale code ``s``: the power-of-two factor, or
    the scale value with ``ts`` the tensor scale (1 when there is none: the product is then
    exact), and NaN where ``S`` is NaN."""
    geo, ngroups, per = _geometry(y.size, L, bs)
    for task in prange((ngroups + per - 1) // per):
        row, jb = _walk(task * per, geo)
        for blk in range(task * per, min(task * per + per, ngroups)):
            lo, hi = _span(row, jb, geo)
            row, jb = _step(row, jb, geo)
            s = f32_from_bits(stable[scodes[blk]])
            if s != s:  # torch.where(s_nan, nan, y): the canonical NaN
                for i in range(lo, hi):
                    y[i] = _NAN
            else:
                _lookup(data, lo, hi - lo, table, y, ts * s, True, b)
