"""The group pack on the CPU: numba kernels, one parallel task per group, bit-identical to
``reference``.

Importing this module imports numba through ``lowbit.kernels.cpu`` (which points numba's cache
at a writable directory first); the kernels compile on first call and are cached on disk.
"""

from __future__ import annotations

import numpy as np
import torch
from numba import njit, prange

from ..cpu._bits import band, bits_from_f32, f32_from_bits, shr
from ..cpu._philox import philox4x32_10

__all__ = ["pack", "unpack"]

_NAN_BF16 = np.int32(0x7FC0)
_LOW = np.int32(0xFFFF)
_U24 = np.float32(2.0 ** -24)


@njit(cache=True, inline="always")
def _directed(v, up):
    """bf16 bits of fp32 ``v`` rounded toward +Inf (``up``) or -Inf (``reference``)."""
    b = bits_from_f32(v)
    away = (b >= 0) if up else (b < 0)
    bump = 1 if (band(b, _LOW) != 0) and away else 0
    return band((b >> 16) + bump, _LOW)


@njit(cache=True, inline="always")
def _word(words, j):
    return words[0] if j == 0 else (words[1] if j == 1 else (words[2] if j == 2 else words[3]))


@njit(cache=True, parallel=True)
def _pack_kernel(x, codes, lo_out, hi_out, bits, gs, k0, k1):
    n = x.size
    levels = (1 << bits) - 1
    per_byte = 8 // bits
    nbytes = codes.size
    for g in prange(lo_out.size):
        start = g * gs
        stop = min(start + gs, n)
        lo = np.float32(np.inf)
        hi = np.float32(-np.inf)
        bad = False
        for i in range(start, stop):
            v = x[i]
            if not np.isfinite(v):
                bad = True
            lo = min(lo, v)
            hi = max(hi, v)
        if bad:
            lo_b = _NAN_BF16
            hi_b = _NAN_BF16
        else:
            lo_b = _directed(np.float32(0.0) if lo == 0 else lo, False)
            hi_b = _directed(np.float32(0.0) if hi == 0 else hi, True)
        lo_out[g] = lo_b
        hi_out[g] = hi_b
        lo = f32_from_bits(lo_b << 16)
        span = f32_from_bits(hi_b << 16) - lo
        ok = span > 0 and span < np.inf
        scale = np.float32(levels) / span if ok else np.float32(0.0)
        words = philox4x32_10(start >> 2, start >> 34, k0, k1)
        for byte in range(start // per_byte, min((start + gs) // per_byte, nbytes)):
            acc = 0
            for k in range(per_byte):  # groups start on bytes: a byte never spans two groups
                i = byte * per_byte + k
                if (i & 3) == 0:
                    words = philox4x32_10(i >> 2, i >> 34, k0, k1)
                if ok and i < stop:
                    t = np.float32(x[i] - lo) * scale
                    whole = np.float32(np.floor(t))
                    u = np.float32(shr(_word(words, i & 3), 8)) * _U24
                    q = min(np.int32(whole) + (1 if u < t - whole else 0), levels)
                    acc |= q << (bits * k)
            codes[byte] = acc


@njit(cache=True, parallel=True)
def _unpack_kernel(codes, lo_in, hi_in, y, bits, gs):
    n = y.size
    levels = (1 << bits) - 1
    per_byte = 8 // bits
    for g in prange(lo_in.size):
        lo = f32_from_bits(np.int32(lo_in[g]) << 16)
        step = (f32_from_bits(np.int32(hi_in[g]) << 16) - lo) / np.float32(levels)
        start = g * gs
        stop = min(start + gs, n)
        for byte in range(start // per_byte, (stop + per_byte - 1) // per_byte):
            c = np.int32(codes[byte])
            for k in range(per_byte):
                i = byte * per_byte + k
                if i < stop:
                    y[i] = lo + np.float32((c >> (bits * k)) & levels) * step


def pack(x: torch.Tensor, bits: int, group_size: int, seed: int):
    """``reference.pack`` on a CPU tensor (any float dtype; others than fp32 are converted)."""
    xf = x.detach().reshape(-1).to(torch.float32).contiguous()
    n = xf.numel()
    G = -(-n // group_size)
    codes = torch.empty(-(-n * bits // 8), dtype=torch.uint8)
    lo = torch.empty(G, dtype=torch.int16)
    hi = torch.empty(G, dtype=torch.int16)
    if n:
        _pack_kernel(xf.numpy(), codes.numpy(), lo.numpy(), hi.numpy(), bits, group_size,
                     seed & 0xFFFFFFFF, seed >> 32)
    return codes, lo.view(torch.bfloat16), hi.view(torch.bfloat16)


def unpack(codes: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor, bits: int, group_size: int,
           n: int, dtype: torch.dtype) -> torch.Tensor:
    """``reference.unpack`` on CPU tensors."""
    y = torch.empty(n, dtype=torch.float32)
    if n:
        _unpack_kernel(codes.numpy(), lo.view(torch.int16).numpy(), hi.view(torch.int16).numpy(),
                       y.numpy(), bits, group_size)
    return y if dtype == torch.float32 else y.to(dtype)
