"""``gemm``: the autograd-free simulated-accumulation GEMM every op here is built from, and
``reduce_gemm``, the GEMM of a gradient whose operand was broadcast over batch dimensions."""

from __future__ import annotations

import math
from typing import Optional, Sequence, Tuple, Union

import torch

from ...kernels import gemm as kernels
from ...kernels.dispatch import Backend
from ._args import backend_of, operand, seeds
from .spec import Accumulate

__all__ = ["gemm", "reduce_gemm", "run_batched", "batch_shape"]


def run_batched(a: torch.Tensor, b: torch.Tensor, plan, seed: Optional[int],
                bias: Optional[torch.Tensor], backend: Backend) -> torch.Tensor:
    """(…, M, K) × (…, K, N) fp32 with broadcast batch dimensions under a resolved plan and
    seed; ``bias`` (broadcastable to the output) is added with one more rounding."""
    if a.dim() < 2 or b.dim() < 2:
        raise ValueError(f"gemm needs a (..., M, K) and b (..., K, N); got shapes "
                         f"{tuple(a.shape)} and {tuple(b.shape)}")
    if a.shape[-1] != b.shape[-2]:
        raise ValueError(f"inner sizes differ: a is {tuple(a.shape)}, b is {tuple(b.shape)}")
    if a.device != b.device:
        raise ValueError(f"a and b are on different devices: {a.device} and {b.device}")
    try:
        batch = torch.broadcast_shapes(a.shape[:-2], b.shape[:-2])
    except RuntimeError:
        raise ValueError(f"batch shapes do not broadcast: {tuple(a.shape[:-2])} and "
                         f"{tuple(b.shape[:-2])}") from None
    m, k, n = a.shape[-2], a.shape[-1], b.shape[-1]
    count = math.prod(batch)
    a3 = a.expand(*batch, m, k).reshape(count, m, k).contiguous()
    b3 = b.expand(*batch, k, n).reshape(count, k, n).contiguous()
    out = kernels.run(a3, b3, plan, seed, backend)
    if bias is not None:  # broadcastable to (*batch, M, N)
        full = bias.to(out.device).expand(*batch, m, n).reshape(count, m, n)
        out = kernels.add_bias(out, full, plan, k, seed)
    return out.reshape(*batch, m, n)


def gemm(a: torch.Tensor, b: torch.Tensor, spec: Accumulate, *, seed: Optional[int] = None,
         bias: Optional[torch.Tensor] = None,
         backend: Union[str, Backend] = "auto") -> torch.Tensor:
    """``a @ b`` with simulated accumulation, without autograd (for custom backward passes).

    ``a`` is (..., M, K) and ``b`` (..., K, N) with broadcast batch dimensions; each output
    ``C[β, i, j]`` is the accumulation of ``spec`` over k = 0..K-1 in order (see
    ``lowbit.ops.accumulate``); with ``bias`` (shape (N,)) the result is
    ``Q_acc(C + bias_j)``, one more rounding.  Inputs are fp32, fp16 or bf16 (exact in fp32);
    the result is fp32.  ``seed`` keys the stochastic stream (None draws one) and must be None
    when nothing rounds stochastically.  ``backend``: ``auto``, ``reference``, ``cpu`` (numba) or
    ``triton``.
    """
    if not isinstance(spec, Accumulate):
        raise TypeError(f"spec must be an Accumulate; got {type(spec).__name__}")
    a, b = operand(a, "a"), operand(b, "b")
    plan = kernels.Plan.of(spec)
    (seed,) = seeds(seed, plan)
    if bias is not None:
        bias = operand(bias, "bias")
        if bias.shape != (b.shape[-1],):
            raise ValueError(f"bias must have shape ({b.shape[-1]},); got {tuple(bias.shape)}")
    with torch.no_grad():
        return run_batched(a, b, plan, seed, bias, backend_of(backend))


def reduce_gemm(x: torch.Tensor, y: torch.Tensor, batch: Sequence[int],
                target: Sequence[int], spec: Optional[Accumulate], seed: Optional[int],
                backend: Union[str, Backend]) -> torch.Tensor:
    """``Σ_β x[β] @ y[β]`` over the batch dimensions where ``target`` (a batch shape that
    broadcasts to ``batch``) has size 1: x (*batch, P, R) and y (*batch, R, Q) give
    (*target, P, Q).  The reduced dimensions join the GEMM's K, ahead of R (row-major), so the
    whole sum is one simulated accumulation; ``spec=None`` sums with plain fp32 torch ops."""
    nb = len(batch)
    padded = (1,) * (nb - len(target)) + tuple(target)
    red = [d for d in range(nb) if padded[d] == 1 and batch[d] != 1]
    keep = [d for d in range(nb) if d not in red]
    p, r, q = x.shape[-2], x.shape[-1], y.shape[-1]
    x = x.expand(*batch, p, r).permute(*keep, nb, *red, nb + 1)
    y = y.expand(*batch, r, q).permute(*keep, *red, nb, nb + 1)
    kept = [batch[d] for d in keep]
    x = x.reshape(*kept, p, -1)
    y = y.reshape(*kept, -1, q)
    if spec is None:
        out = torch.matmul(x, y)
    else:
        out = gemm(x, y, spec, seed=seed, backend=backend)
    return out.reshape(*padded, p, q).reshape(*target, p, q)


def batch_shape(a: torch.Tensor, b: torch.Tensor) -> Tuple[torch.Size, ...]:
    """The broadcast batch shape of a matmul of (…, M, K) and (…, K, N)."""
    return torch.broadcast_shapes(a.shape[:-2], b.shape[:-2])
