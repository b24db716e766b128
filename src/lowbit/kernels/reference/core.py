"""Exact rounding of fp32 values onto a grid ``k · 2^q``, in vectorised torch integer ops.

Every finite fp32 magnitude is ``sig · 2^e0`` with a 24-bit integer ``sig`` (the hidden bit
included for normals; ``e0 = -149`` for subnormals).  A target format fixes, per element, the
exponent ``q`` of its grid step (its quantum).  Rounding drops the ``s = q - e0`` low bits of
``sig`` (nothing when ``s <= 0``: the value is already on the grid) and picks the neighbour by
the rounding mode from the kept integer ``k``, the remainder ``r`` and the half point
``2^(s-1)``:

* nearest: up iff ``r > half``, or ``r == half`` and ``k`` odd (IEEE 754 roundTiesToEven);
* nearest_away: up iff ``r >= half`` and ``r > 0``;
* toward_zero: never up; up / down: up iff ``r > 0`` and the sign is + / -;
* odd: up iff ``r > 0`` and ``k`` even, so an inexact result always has an odd last digit;
* stochastic: the remainder aligned to ``rbits`` bits, ``a = r · 2^(rbits - s)`` (truncated
  when ``s > rbits``), plus the element's random integer ``R`` in ``[0, 2^rbits)``; up iff
  ``a + R >= 2^rbits``.  So P(up) = r / 2^s exactly whenever ``s <= rbits``.

No float log2/pow is used; the result ``k · 2^q`` is exact in fp32 (``k <= 2^24``) except
where it passes fp32's range, which gives ±Inf as fp32 arithmetic does.
"""

from __future__ import annotations

from typing import NamedTuple, Optional, Union

import torch

from ...formats.modes import Rounding

__all__ = ["Decomposed", "decompose", "round_to_quantum", "pow2", "compose"]

IntLike = Union[int, torch.Tensor]


class Decomposed(NamedTuple):
    """An fp32 tensor split into sign, integer significand and exponents (all int64/bool)."""

    neg: torch.Tensor  # sign bit set
    sig: torch.Tensor  # |x| = sig · 2^e0, sig < 2^24
    e0: torch.Tensor
    etrue: torch.Tensor  # floor(log2 |x|) for x != 0 (very negative for 0)
    nonfinite: torch.Tensor  # ±Inf or NaN
    nan: torch.Tensor


def decompose(x: torch.Tensor) -> Decomposed:
    """Split an fp32 tensor into the pieces above."""
    bits = x.view(torch.int32).to(torch.int64)
    field = (bits >> 23) & 0xFF
    frac = bits & 0x7FFFFF
    normal = field > 0
    sig = torch.where(normal, frac | 0x800000, frac)
    e0 = torch.where(normal, field - 150, torch.full_like(field, -149))
    # floor(log2 sig) read from the exponent of sig converted to fp32 (exact: sig < 2^24).
    sig_log = ((sig.to(torch.float32).view(torch.int32).to(torch.int64) >> 23) & 0xFF) - 127
    nonfinite = field == 0xFF
    return Decomposed(bits < 0, sig, e0, e0 + sig_log, nonfinite, nonfinite & (frac != 0))


def round_to_quantum(d: Decomposed, q: torch.Tensor, rounding: Rounding,
                     words: Optional[torch.Tensor], rbits: int) -> tuple:
    """Round ``|x| = sig · 2^e0`` to a multiple of ``2^q``; return ``(k, q_out)`` with the
    rounded magnitude ``k · 2^q_out`` (``q_out = max(q, e0)``)."""
    q_out = torch.maximum(q, d.e0)
    # sig < 2^24: past 56 dropped bits both k and the 32-bit aligned remainder below are 0,
    # so the clamp changes nothing and keeps every shift inside int64.
    s = (q_out - d.e0).clamp(max=56)
    k = d.sig >> s
    rem = d.sig - (k << s)
    inexact = rem != 0
    odd = (k & 1) == 1
    if rounding is Rounding.NEAREST:
        half = (1 << s) >> 1
        up = inexact & ((rem > half) | ((rem == half) & odd))
    elif rounding is Rounding.NEAREST_AWAY:
        up = inexact & (rem >= (1 << s) >> 1)
    elif rounding is Rounding.TOWARD_ZERO:
        up = torch.zeros_like(inexact)
    elif rounding is Rounding.UP:
        up = inexact & ~d.neg
    elif rounding is Rounding.DOWN:
        up = inexact & d.neg
    elif rounding is Rounding.ODD:
        up = inexact & ~odd
    else:
        if words is None:
            raise ValueError("stochastic rounding needs random words")
        aligned = torch.where(s >= rbits, rem >> (s - rbits).clamp(min=0),
                              rem << (rbits - s).clamp(min=0))
        up = (aligned + (words >> (32 - rbits))) >= (1 << rbits)
    return k + up.to(torch.int64), q_out


def pow2(q: torch.Tensor) -> torch.Tensor:
    """Exact fp32 2^q for integer ``q`` in [-149, 127] (subnormal powers included)."""
    normal_bits = (q + 127) << 23
    sub_bits = torch.ones_like(q) << (q + 149).clamp(min=0, max=22)
    bits = torch.where(q >= -126, normal_bits, sub_bits)
    return bits.to(torch.int32).view(torch.float32)


def compose(k: torch.Tensor, q: torch.Tensor, neg: torch.Tensor) -> torch.Tensor:
    """Signed fp32 ``±k · 2^q``; a zero keeps the sign (IEEE 754 §6.3)."""
    # Split 2^q into two factors so that q up to 2·127 cannot overflow the power itself;
    # k · 2^q then rounds only where fp32 does (past its range, to Inf).
    qa = q.clamp(max=127)
    mag = k.to(torch.float32) * pow2(qa) * pow2(q - qa)
    return torch.where(neg, -mag, mag)


def as_tensor(v: IntLike, like: torch.Tensor) -> torch.Tensor:
    return v if isinstance(v, torch.Tensor) else torch.full_like(like, v)
