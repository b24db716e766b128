"""The blockwise random Hadamard transform (RHT) of FP4 training.

For a block size ``b`` (a power of two), the Sylvester Hadamard matrix is
``H_b[i, j] = (-1)^popcount(i & j)`` (so ``H_1 = [1]``, ``H_2k = [[H_k, H_k], [H_k, -H_k]]``
and ``H_b H_bᵀ = b I``).  With a sign vector ``s`` in ``{-1, +1}^b`` the transform of a block
``v`` (``b`` consecutive elements along ``axis``) is

    ``v' = Q v``  with  ``Q = H_b diag(s) / sqrt(b)``,

applied to every block along ``axis`` independently (a block-diagonal matrix).  ``Q`` is
orthogonal (``Qᵀ Q = diag(s) H_bᵀ H_b diag(s) / b = I``), so transforming both operands of a
GEMM along their shared reduction axis leaves the product unchanged in exact arithmetic:
``(Q g)ᵀ (Q x) = gᵀ x``.  Quantizing the transformed operands spreads an outlier over its
block, which is why NVIDIA's NVFP4 recipe applies a 16×16 RHT to both inputs of the weight
gradient GEMM (Abecassis et al., "Pretraining Large Language Models with NVFP4",
arXiv 2509.25193, §4.2; Transformer Engine's ``NVFP4BlockScaling``).

The signs come from ``random_signs(seed, b)``: element ``i`` is ``-1`` where bit 0 of the
Philox4x32-10 word of logical index ``i`` under ``seed`` is set (``lowbit.kernels.philox``),
so they are the same on every device.
"""

from __future__ import annotations

import math
from typing import Optional

import torch

from ..kernels.philox import random_words, resolve_seed

__all__ = ["hadamard_matrix", "random_signs", "hadamard"]


def _check_block(block: object) -> int:
    if isinstance(block, bool) or not isinstance(block, int):
        raise TypeError(f"block must be an int; got {block!r}")
    if block < 1 or block & (block - 1):
        raise ValueError(f"block must be a power of two >= 1; got {block}")
    return block


def hadamard_matrix(block: int, *, dtype: torch.dtype = torch.float32,
                    device: Optional[torch.device] = None) -> torch.Tensor:
    """The unnormalised Sylvester Hadamard matrix ``H_b[i, j] = (-1)^popcount(i & j)``."""
    b = _check_block(block)
    idx = torch.arange(b, device=device)
    both = idx[:, None] & idx[None, :]
    parity = torch.zeros_like(both)
    for bit in range(max(b.bit_length() - 1, 0)):
        parity ^= (both >> bit) & 1
    return (1 - 2 * parity).to(dtype)


def random_signs(seed: int, block: int, *,
                 device: Optional[torch.device] = None) -> torch.Tensor:
    """``s_i = 1 - 2 · (word_i & 1)`` (fp32) for ``i < block``, ``word_i`` the Philox word of
    logical index ``i`` under ``seed``."""
    b = _check_block(block)
    words = random_words(b, resolve_seed(seed), torch.device("cpu") if device is None
                         else torch.device(device))
    return (1 - 2 * (words & 1)).to(torch.float32)


def hadamard(x: torch.Tensor, axis: int, *, block: int = 16,
             signs: Optional[torch.Tensor] = None) -> torch.Tensor:
    """``x`` with every run of ``block`` elements along ``axis`` replaced by
    ``H_b diag(signs) v / sqrt(b)`` (module docstring); ``signs=None`` means all ones.

    Computed in fp32 (one small matrix product per block) and returned in ``x``'s dtype.
    The inverse is ``Qᵀ v' = diag(signs) H_b v' / sqrt(b)`` (``H_b`` is symmetric).

    Raises:
        ValueError: ``axis``'s length is not a multiple of ``block`` (pad with zeros first:
            zero rows change no GEMM product), a bad ``block`` or a ``signs`` vector that is
            not ``block`` long.
        TypeError: ``x`` is not a floating tensor.
    """
    b = _check_block(block)
    if not torch.is_floating_point(x):
        raise TypeError(f"x must be a floating tensor; got {x.dtype}")
    if x.dim() == 0:
        raise ValueError("x must have at least one axis")
    axis = axis % x.dim()
    n = x.shape[axis]
    if n % b:
        raise ValueError(f"axis {axis} has length {n}, not a multiple of block={b}; pad it "
                         "with zeros first")
    q = hadamard_matrix(b, device=x.device)
    if signs is not None:
        if signs.shape != (b,):
            raise ValueError(f"signs must have shape ({b},); got {tuple(signs.shape)}")
        q = q * signs.to(device=x.device, dtype=torch.float32)[None, :]
    q = q / math.sqrt(b)
    moved = x.float().movedim(axis, -1)
    blocks = moved.reshape(*moved.shape[:-1], n // b, b)
    # v' = Q v for each block: as rows, v'ᵀ = vᵀ Qᵀ
    out = (blocks @ q.t()).reshape(moved.shape).movedim(-1, axis)
    return out.to(x.dtype).contiguous()
