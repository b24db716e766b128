"""Philox4x32-10 in numba: the stream of ``lowbit.kernels.philox``, one call per 4 elements.

All state is int32 holding uint32 bit patterns (``_bits``); each round's two 32x32 -> 64-bit
products are split into ``mulhi`` and the wrapping 32-bit ``mul``, which LLVM lowers to vector
``pmuludq`` when it vectorises a loop of calls.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from ._bits import add, bxor, i32, mul, mulhi

__all__ = ["philox4x32_10"]

_M0 = np.int32(np.uint32(0xD2511F53).view(np.int32))
_M1 = np.int32(np.uint32(0xCD9E8D57).view(np.int32))
_W0 = np.int32(np.uint32(0x9E3779B9).view(np.int32))
_W1 = np.int32(np.uint32(0xBB67AE85).view(np.int32))
_ZERO = np.int32(0)


@njit(cache=True, forceinline=True)
def philox4x32_10(c0, c1, k0, k1):
    """Words (int32 bit patterns) of Philox4x32-10 for counter ``(c0, c1, 0, 0)`` and key
    ``(k0, k1)``; the arguments' low 32 bits are used."""
    c0 = i32(c0)
    c1 = i32(c1)
    k0 = i32(k0)
    k1 = i32(k1)
    c2 = _ZERO
    c3 = _ZERO
    for _ in range(10):
        hi0 = mulhi(c0, _M0)
        lo0 = mul(c0, _M0)
        hi1 = mulhi(c2, _M1)
        lo1 = mul(c2, _M1)
        c0, c1, c2, c3 = bxor(bxor(hi1, c1), k0), lo1, bxor(bxor(hi0, c3), k1), lo0
        k0 = add(k0, _W0)
        k1 = add(k1, _W1)
    return c0, c1, c2, c3
