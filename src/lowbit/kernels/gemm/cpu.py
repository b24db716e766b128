"""The CPU GEMM backend: the reference's arithmetic in multi-threaded numba (``_numba``).

Every output's K loop runs in order, each operation rounding the exact value of its two terms
once as ``_exact.round_pair`` does, and stochastic rounding draws the same Philox words
(``_plan``), so every bit-reproducible plan gives the reference's bits.  ``chunk_acc="fp32"``
without ``mul`` forms each chunk sum with ``torch.matmul`` in fp32, as the reference does, and
adds it to the total in numba.  Outputs are spread over numba's threads by rows (batch, i).

Importing this module imports numba (``lowbit.kernels.cpu`` first, which points numba's cache
at a writable directory); kernels compile on first use and are cached on disk.
"""

from __future__ import annotations

import functools
from typing import Optional

import numpy as np
import torch

from .. import cpu as _cpu  # noqa: F401  (sets NUMBA_CACHE_DIR before numba is imported)
from ...formats import FloatFormat, Rounding
from ..cpu._params import fixed_params, float_params
from ..cpu._scalar import MODE_CODES
from . import _numba
from ._plan import Plan

__all__ = ["gemm", "operation_row"]

_MASK32 = 0xFFFFFFFF


@functools.lru_cache(maxsize=256)
def operation_row(fmt, rounding: Rounding) -> tuple:
    """The fields (``_numba.OP_FIELDS`` ints) of one operation rounding onto ``fmt``."""
    mode = MODE_CODES[rounding.value]
    if isinstance(fmt, FloatFormat):
        _, consts = float_params(fmt, rounding)
        head = (0, int(fmt.subnormals), fmt.emin, fmt.man, 0, mode)
        return head + tuple(int(c) for c in consts)
    _, _, lo, hi, keep = fixed_params(fmt, rounding)
    bits = [int(np.array(v, dtype=np.float32).view(np.int32)) for v in (lo, hi)]
    return (1, 0, 0, 0, fmt.quantum_exp, mode, bits[0], bits[1], int(keep), 0, 0, 0, 0)


def _operations(plan: Plan) -> list:
    """The rows of mul, acc and chunk_acc as int64 tuples (zeros where absent)."""
    rows = []
    for fmt, rounding in [(plan.mul, plan.mul_rounding), (plan.acc, plan.acc_rounding),
                          (plan.chunk_acc, plan.chunk_rounding)]:
        row = (0,) * _numba.OP_FIELDS if fmt is None else operation_row(fmt, rounding)
        rows.append(tuple(np.int64(v) for v in row))
    return rows


def _kernel(plan: Plan):
    if plan.compensated:
        return _numba.kahan_kernel
    return _numba.chunked_kernel if plan.chunk is not None else _numba.sequential_kernel


def _call(kernel, *args) -> None:
    """Run a kernel, keeping torch's intra-op thread count (numba's OpenMP layer may reset the
    process-wide count on first use)."""
    threads = torch.get_num_threads()
    kernel(*args)
    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)


def _key(plan: Plan, seed: Optional[int]) -> tuple:
    if not plan.stochastic:
        return 0, 0
    if seed is None:
        raise ValueError("a plan that rounds stochastically needs a seed")
    return seed & _MASK32, (seed >> 32) & _MASK32


def gemm(a: torch.Tensor, b: torch.Tensor, plan: Plan, seed: Optional[int]) -> torch.Tensor:
    """``a`` (B, M, K) × ``b`` (B, K, N), contiguous fp32 CPU tensors; returns fp32 (B, M, N)
    with the reference's bits.  ``seed`` is an int when ``plan.stochastic``, else ignored."""
    if a.device.type != "cpu" or b.device.type != "cpu":
        raise ValueError(f"the CPU GEMM backend takes CPU tensors; got {a.device.type} and "
                         f"{b.device.type}")
    if a.dtype != torch.float32 or b.dtype != torch.float32:
        raise ValueError(f"the CPU GEMM backend takes fp32 operands; got {a.dtype}, {b.dtype}")
    batch, m, kdim = a.shape
    n = b.shape[2]
    a, b = a.detach().contiguous(), b.detach().contiguous()
    out = torch.zeros(batch, m, n, dtype=torch.float32)
    if out.numel() == 0 or kdim == 0:
        return out
    k0, k1 = _key(plan, seed)
    par = _operations(plan)
    if plan.fp32_chunks:
        return _fp32_chunks(a, b, plan, par[1], k0, k1)
    _call(_kernel(plan), a.numpy(), b.numpy(), out.numpy(), *par, plan.chunk or 1, k0, k1,
          plan.mul is not None, plan.stochastic)
    return out


def _fp32_chunks(a: torch.Tensor, b: torch.Tensor, plan: Plan, acc: tuple, k0: int,
                 k1: int) -> torch.Tensor:
    """Chunk sums by ``torch.matmul`` in fp32 (the reference's calls, so the same bits), each
    added to the total with one rounding onto ``acc``."""
    batch, m, kdim = a.shape
    n = b.shape[2]
    s = np.zeros(batch * m * n, dtype=np.float64)
    for start in range(0, kdim, plan.chunk):
        end = min(start + plan.chunk, kdim)
        part = torch.matmul(a[:, :, start:end], b[:, start:end, :]).contiguous()
        _call(_numba.chunk_add_kernel, s, part.view(-1).numpy(), acc, end - 1, kdim, k0, k1,
              plan.stochastic)
    return torch.from_numpy(s).float().view(batch, m, n)
