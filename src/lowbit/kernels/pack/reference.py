"""The reference of the group pack: readable torch ops, the specification the CPU and Triton
kernels are tested against bit for bit (see ``lowbit.kernels.pack`` for the contract).
"""

from __future__ import annotations

from typing import Tuple

import torch

from ..philox import random_words

__all__ = ["pack", "unpack", "bf16_down", "bf16_up", "group_bounds", "as_bf16"]

_LOW = 0xFFFF
_NAN_BF16 = 0x7FC0
_U24 = 2.0 ** -24


def _bf16_directed(v: torch.Tensor, up: bool) -> torch.Tensor:
    """The bf16 bit pattern (int32 holding 16 bits) of fp32 ``v`` rounded toward +Inf (``up``)
    or -Inf: truncation rounds toward zero, so one bf16 ulp is added to the magnitude where
    bits were dropped and the sign points the other way."""
    bits = v.view(torch.int32)
    dropped = (bits & _LOW) != 0
    away = (bits >= 0) if up else (bits < 0)  # the sign of the fp32 pattern
    trunc = bits >> 16
    return (trunc + (dropped & away).to(torch.int32)) & _LOW


def bf16_down(v: torch.Tensor) -> torch.Tensor:
    """bf16 bits of fp32 ``v`` rounded toward -Inf (every value of ``v`` stays >= the result)."""
    return _bf16_directed(v, up=False)


def bf16_up(v: torch.Tensor) -> torch.Tensor:
    """bf16 bits of fp32 ``v`` rounded toward +Inf."""
    return _bf16_directed(v, up=True)


def as_bf16(b: torch.Tensor) -> torch.Tensor:
    """The bf16 tensor whose bit patterns are the 16-bit values ``b`` (int32)."""
    return torch.where(b >= 0x8000, b - 0x10000, b).to(torch.int16).view(torch.bfloat16)


def _from_bf16_bits(b: torch.Tensor) -> torch.Tensor:
    return (b.to(torch.int32) << 16).view(torch.float32)


def group_bounds(v: torch.Tensor, valid: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """bf16 bits (int32) of each row's (lo, hi): min rounded down and max rounded up, -0 read
    as +0, and the bf16 NaN for a row holding NaN or ±Inf."""
    inf = float("inf")
    lo = torch.where(valid, v, inf).amin(dim=1)
    hi = torch.where(valid, v, -inf).amax(dim=1)
    lo = torch.where(lo == 0, 0.0, lo)  # min/max of signed zeros may pick either: fix +0
    hi = torch.where(hi == 0, 0.0, hi)
    bad = (valid & ~torch.isfinite(v)).any(dim=1)
    nan = torch.full_like(bad, _NAN_BF16, dtype=torch.int32)
    return torch.where(bad, nan, bf16_down(lo)), torch.where(bad, nan, bf16_up(hi))


def pack(x: torch.Tensor, bits: int, group_size: int, seed: int):
    """``(codes uint8[ceil(n·bits/8)], lo bf16[G], hi bf16[G])`` of ``x`` (any float dtype)."""
    xf = x.detach().reshape(-1).to(torch.float32)
    n, device = xf.numel(), xf.device
    G = -(-n // group_size)
    levels = (1 << bits) - 1
    v = torch.nn.functional.pad(xf, (0, G * group_size - n)).view(G, group_size)
    valid = (torch.arange(G * group_size, device=device) < n).view(G, group_size)
    lo_b, hi_b = group_bounds(v, valid)
    lo, hi = _from_bf16_bits(lo_b)[:, None], _from_bf16_bits(hi_b)[:, None]
    span = hi - lo
    ok = (span > 0) & (span < float("inf"))
    scale = torch.where(ok, levels / torch.where(ok, span, 1.0), 0.0)
    t = torch.where(ok & valid, (v - lo) * scale, 0.0)
    whole = torch.floor(t)
    frac = t - whole  # exact (Sterbenz)
    word = torch.zeros(G * group_size, dtype=torch.int64, device=device)
    word[:n] = random_words(n, seed, device)
    u = (word >> 8).to(torch.float32).view(G, group_size) * _U24
    q = torch.clamp(whole + (u < frac).to(torch.float32), max=levels).to(torch.int32)
    per_byte = 8 // bits
    q = q.reshape(-1, per_byte) << (bits * torch.arange(per_byte, dtype=torch.int32,
                                                                    device=device))
    codes = q.sum(dim=1).to(torch.uint8)[:-(-n * bits // 8)]
    return codes, as_bf16(lo_b), as_bf16(hi_b)


def unpack(codes: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor, bits: int, group_size: int,
           n: int, dtype: torch.dtype) -> torch.Tensor:
    """The flat tensor of ``n`` elements: ``lo + q · ((hi - lo) / (2^bits - 1))`` in fp32, then
    rounded to ``dtype`` (nearest-even)."""
    device = codes.device
    G = lo.numel()
    per_byte = 8 // bits
    c = torch.nn.functional.pad(codes.to(torch.int32), (0, G * group_size // per_byte
                                                        - codes.numel()))
    shifts = bits * torch.arange(per_byte, dtype=torch.int32, device=device)
    q = ((c[:, None] >> shifts) & ((1 << bits) - 1)).view(G, group_size).to(torch.float32)
    lo32 = lo.float()[:, None]
    step = (hi.float()[:, None] - lo32) / float((1 << bits) - 1)
    y = lo32 + q * step
    return y.reshape(-1)[:n].to(dtype)
