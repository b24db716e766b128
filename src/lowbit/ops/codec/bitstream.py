"""Packing ``b``-bit codes into bytes: one little-endian bit stream for every width.

Element ``i``'s code occupies stream bits ``b·i .. b·i + b - 1``, least significant bit first,
and stream bit ``j`` is bit ``j mod 8`` (value ``2^(j mod 8)``) of byte ``j // 8``.  The bytes
after the last code's bits are zero.  Special cases of this one rule:

* ``b = 8``: one byte per code;
* ``b = 4``: two codes per byte, element 0 in the low nibble (torch's ``float4_e2m1fn_x2``);
* ``b = 6``: four codes in three bytes: ``c0 | c1<<6 | c2<<12 | c3<<18`` as a 24-bit
  little-endian integer, i.e. ``byte0 = c0 | (c1 & 3) << 6``, ``byte1 = c1 >> 2 | (c2 & 15) << 4``,
  ``byte2 = c2 >> 4 | c3 << 2``;
* ``b = 16`` / ``32``: each code as a little-endian 2- / 4-byte integer.

``pack_bits`` takes any integer tensor holding the unsigned ``b``-bit patterns (int32 for
``b = 32``: the int32 with the same bits); ``unpack_bits`` returns int32.  Every path is
vectorised torch integer arithmetic; 4-, 6- and 16-bit codes take byte-level shortcuts.
"""

from __future__ import annotations

import math
import sys

import torch

__all__ = ["packed_nbytes", "pack_bits", "unpack_bits"]


_LITTLE = sys.byteorder == "little"


def packed_nbytes(n: int, b: int) -> int:
    """Bytes holding ``n`` codes of ``b`` bits: ``ceil(n·b / 8)``."""
    return -(-n * b // 8)


def _group(b: int) -> int:
    """Codes per whole number of bytes: the smallest ``g`` with ``8 | g·b``."""
    return 8 // math.gcd(b, 8)


def pack_bits(codes: torch.Tensor, b: int) -> torch.Tensor:
    """Pack a 1-D integer tensor of ``b``-bit codes (1 <= b <= 32; int32 for 32 bits) into a
    1-D uint8 stream."""
    n = codes.numel()
    nbytes = packed_nbytes(n, b)
    if b == 8:
        return codes.to(torch.uint8)
    if b == 6 and _LITTLE:  # four codes, one per byte of an int32, squeezed to 24 bits
        pad = (-n) % 4
        c = codes.to(torch.uint8)
        w = (torch.nn.functional.pad(c, (0, pad)) if pad else c).view(torch.int32)
        w = (w & 0x3F) | ((w >> 2) & 0xFC0) | ((w >> 4) & 0x3F000) | ((w >> 6) & 0xFC0000)
        return w.view(torch.uint8).view(-1, 4)[:, :3].reshape(-1)[:nbytes]
    if b in (1, 2, 4, 6):  # byte arithmetic: uint8 shifts drop the bits that spill over
        g = _group(b)
        pad = (-n) % g
        c = codes.to(torch.uint8)
        c = (torch.nn.functional.pad(c, (0, pad)) if pad else c).view(-1, g)
        if b == 6:
            c0, c1, c2, c3 = c.unbind(1)
            out = torch.stack([c0 | (c1 << 6), (c1 >> 2) | (c2 << 4), (c2 >> 4) | (c3 << 2)], 1)
            return out.view(-1)[:nbytes]
        out = c[:, 0]
        for i in range(1, g):
            out = out | (c[:, i] << (b * i))
        return out
    if b == 16 and _LITTLE:
        return codes.to(torch.int16).view(torch.uint8)
    if b % 8 == 0:  # whole bytes per code
        nb = b // 8
        parts = [((codes >> (8 * i)) & 0xFF) for i in range(nb)]
        return torch.stack(parts, dim=-1).to(torch.uint8).reshape(-1)
    if b < 8:  # g codes fill g·b/8 bytes, g·b <= 56 bits: build them in one integer
        g = _group(b)
        pad = (-n) % g
        c = torch.nn.functional.pad(codes, (0, pad)) if pad else codes
        wide = torch.int64 if g * b > 31 else torch.int32
        c = c.view(-1, g).to(wide)
        word = c[:, 0]
        for i in range(1, g):
            word = word | (c[:, i] << (b * i))
        nb = g * b // 8
        if nb == 1:
            out = word.to(torch.uint8)
        else:
            out = torch.stack([(word >> (8 * j)) & 0xFF for j in range(nb)], dim=-1)
            out = out.to(torch.uint8).reshape(-1)
        return out[:nbytes]
    # Other widths (9..31 bits, not a multiple of 8): expand into bits, regroup by eight.
    shifts = torch.arange(b, device=codes.device, dtype=torch.int32)
    bits = ((codes.unsqueeze(-1) >> shifts) & 1).to(torch.uint8).reshape(-1)
    bits = torch.nn.functional.pad(bits, (0, nbytes * 8 - bits.numel()))
    weights = (1 << torch.arange(8, device=codes.device, dtype=torch.int32)).to(torch.uint8)
    return (bits.view(-1, 8) * weights).sum(dim=-1, dtype=torch.int32).to(torch.uint8)


def unpack_bits(data: torch.Tensor, b: int, n: int) -> torch.Tensor:
    """Inverse of ``pack_bits``: the first ``n`` codes of a uint8 stream, as int32."""
    if data.numel() < packed_nbytes(n, b):
        raise ValueError(f"{data.numel()} bytes cannot hold {n} codes of {b} bits")
    if b == 8:
        return data[:n].to(torch.int32)
    if b % 8 == 0:
        nb = b // 8
        d = data[: n * nb].view(n, nb).to(torch.int64)
        word = d[:, 0]
        for i in range(1, nb):
            word = word | (d[:, i] << (8 * i))
        if b == 32:  # the int32 with these bits
            word = torch.where(word >= 2**31, word - 2**32, word)
        return word.to(torch.int32)
    if b == 6 and _LITTLE:  # each 3 bytes widened to an int32, codes spread to its bytes
        groups, nbytes = -(-n // 4), packed_nbytes(n, 6)
        d = torch.nn.functional.pad(data[:nbytes], (0, 3 * groups + 1 - nbytes))
        w8 = torch.empty((groups, 4), dtype=torch.uint8, device=data.device)
        w = w8.copy_(d.unfold(0, 4, 3)).view(torch.int32).view(-1)
        w = (w & 0x3F) | ((w << 2) & 0x3F00) | ((w << 4) & 0x3F0000) | ((w << 6) & 0x3F000000)
        return w.view(torch.uint8)[:n].to(torch.int32)
    if b < 8:
        g = _group(b)
        nb = g * b // 8
        groups = -(-n // g)
        need = groups * nb
        d = data[:need]
        if d.numel() < need:
            d = torch.nn.functional.pad(d, (0, need - d.numel()))
        wide = torch.int64 if g * b > 31 else torch.int32
        d = d.view(groups, nb).to(wide)
        word = d[:, 0]
        for j in range(1, nb):
            word = word | (d[:, j] << (8 * j))
        mask = (1 << b) - 1
        c = torch.stack([(word >> (b * i)) & mask for i in range(g)], dim=-1)
        return c.reshape(-1)[:n].to(torch.int32)
    shifts = torch.arange(8, device=data.device, dtype=torch.int32)
    bits = ((data[: packed_nbytes(n, b)].to(torch.int32).unsqueeze(-1) >> shifts) & 1)
    bits = bits.reshape(-1)[: n * b].view(n, b)
    weights = 1 << torch.arange(b, device=data.device, dtype=torch.int32)
    return (bits * weights).sum(dim=-1, dtype=torch.int32)
