"""The stochastic-rounding random stream: counter-based Philox4x32-10, in torch integer ops.

Contract (identical on every backend, block size and thread count):

* Key ``(k0, k1) = (seed mod 2^32, seed >> 32)`` for a 64-bit ``seed`` in ``[0, 2^64)``.
* An element with logical row-major index ``n`` (its position in ``x.flatten()``) uses counter
  ``(c0, c1, c2, c3) = ((n >> 2) mod 2^32, n >> 34, 0, 0)`` and output word ``n & 3`` of that
  Philox call, so one call serves four neighbouring elements.  This is Triton's
  ``tl.randint4x(seed, n >> 2)`` (Salmon et al., SC'11, "Parallel random numbers: as easy
  as 1, 2, 3"; the Random123 known-answer vectors are in the tests).
* The element's 32-bit word ``u`` supplies ``rbits`` random bits ``R = u >> (32 - rbits)``.

Without a seed, lowbit draws one 64-bit seed from torch's default CPU generator (two 32-bit
draws), so ``torch.manual_seed`` makes unseeded calls reproducible too.
"""

from __future__ import annotations

from typing import Optional

import torch

__all__ = ["philox4x32", "random_words", "resolve_seed", "SEED_LIMIT"]

SEED_LIMIT = 2**64
_M0, _M1 = 0xD2511F53, 0xCD9E8D57  # round multipliers
_W0, _W1 = 0x9E3779B9, 0xBB67AE85  # Weyl key increments
_MASK = 0xFFFFFFFF


def resolve_seed(seed: Optional[int]) -> int:
    """Validate ``seed`` or, when None, draw a 64-bit seed from torch's default generator."""
    if seed is None:
        lo, hi = torch.randint(0, 2**32, (2,), dtype=torch.int64).tolist()
        return lo | (hi << 32)
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise TypeError(f"seed must be an int in [0, 2^64) or None; got {seed!r}")
    if not 0 <= seed < SEED_LIMIT:
        raise ValueError(f"seed must be in [0, 2^64); got {seed}")
    return seed


def _mulhilo(a: int, b: torch.Tensor) -> tuple:
    # int64 products wrap modulo 2^64, which keeps bits 32..63 of the unsigned product intact.
    prod = b * a
    return (prod >> 32) & _MASK, prod & _MASK


def philox4x32(c0: torch.Tensor, c1: torch.Tensor, c2: torch.Tensor, c3: torch.Tensor,
               seed: int, rounds: int = 10) -> tuple:
    """Philox4x32 with ``rounds`` rounds on int64 tensors holding uint32 values."""
    k0, k1 = seed & _MASK, (seed >> 32) & _MASK
    for _ in range(rounds):
        hi0, lo0 = _mulhilo(_M0, c0)
        hi1, lo1 = _mulhilo(_M1, c2)
        c0, c1, c2, c3 = hi1 ^ c1 ^ k0, lo1, hi0 ^ c3 ^ k1, lo0
        k0, k1 = (k0 + _W0) & _MASK, (k1 + _W1) & _MASK
    return c0, c1, c2, c3


def random_words(numel: int, seed: int, device: torch.device, start: int = 0) -> torch.Tensor:
    """The 32-bit words (as int64) of logical elements ``start .. start + numel - 1``."""
    first, last = start >> 2, (start + numel + 3) >> 2
    n = torch.arange(first, last, dtype=torch.int64, device=device)
    zero = torch.zeros_like(n)
    words = torch.stack(philox4x32(n & _MASK, n >> 32, zero, zero, seed), dim=1).flatten()
    offset = start - 4 * first
    return words[offset:offset + numel]
