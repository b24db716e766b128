"""Simulated-accumulation GEMM kernels: ``C[b] = A[b] · B[b]`` with every product and sum
rounded as an ``Accumulate`` spec says (DESIGN.md, "Accumulation").

Semantics (``lowbit.ops.accumulate`` states them for users): with ``p_k`` the exact product
``a_ik·b_kj``, or that product rounded once onto ``mul``,

* sequential: ``s_0 = +0``, ``s_k = Q_acc(s_{k-1} + p_k)`` for k = 1..K in order;
* chunked (``chunk=c``): ``c_t`` sums chunk t's products sequentially in ``chunk_acc``
  (from +0), then ``S_t = Q_acc(S_{t-1} + c_t)``; ``chunk_acc="fp32"`` forms ``c_t`` in fp32
  in an unspecified order (tensor cores on the GPU);
* compensated: Kahan's summation with every operation in ``acc``:
  ``y = Q(p_k - c); t = Q(s + y); z = Q(t - s); c = Q(z - y); s = t``, result ``s``.

Every ``Q`` rounds the exact value of its two-term sum (or product) once (``_exact``); an exact
zero sum is -0 only when both terms are -0.  Stochastic rounding draws from the layout in
``_plan``.

Backends (``Backend``): ``reference`` is the vectorised torch loop (``reference``); ``cpu``
runs the multi-threaded numba kernels (``cpu``) on CPU tensors; ``triton`` runs the Triton
kernels (``triton``), compiled on CUDA tensors and in Triton's interpreter on CPU tensors;
``auto`` takes Triton on CUDA when it is installed, the numba kernels on CPU tensors when numba
imports, the reference otherwise.  Bit-reproducible plans give identical bits on every backend.
"""

from __future__ import annotations

from typing import Optional

import torch

from ...formats import Rounding
from ..dispatch import Backend
from ._exact import add_round
from ._plan import FP32, Plan, Slot, step_words
from .reference import step_base

__all__ = ["Plan", "Slot", "FP32", "run", "add_bias", "triton_available", "cpu_available"]


def triton_available() -> bool:
    """True when Triton is installed (the Triton backend can run)."""
    import importlib.util

    return importlib.util.find_spec("triton") is not None


def cpu_available() -> bool:
    """True when the numba CPU backend imports (numba installed and working)."""
    try:
        from . import cpu  # noqa: F401
    except ModuleNotFoundError as err:  # only a missing numba means "unavailable"
        if (err.name or "").split(".")[0] in ("numba", "llvmlite"):
            return False
        raise
    return True


def _auto(a: torch.Tensor) -> Backend:
    if a.is_cuda and triton_available():
        return Backend.TRITON
    if a.device.type == "cpu" and cpu_available():
        return Backend.CPU
    return Backend.REFERENCE


def run(a: torch.Tensor, b: torch.Tensor, plan: Plan, seed: Optional[int],
        backend: Backend) -> torch.Tensor:
    """``a`` (B, M, K) × ``b`` (B, K, N), contiguous fp32 on one device, under ``plan``;
    returns contiguous fp32 (B, M, N)."""
    if backend is Backend.AUTO:
        backend = _auto(a)
    if backend is Backend.TRITON:
        if not triton_available():
            raise ValueError("backend='triton' needs Triton installed")
        from . import triton as kernels
    elif backend is Backend.CPU:
        if a.device.type != "cpu":
            raise ValueError(f"backend='cpu' takes CPU tensors; got {a.device.type} tensors")
        if not cpu_available():
            raise ValueError("backend='cpu' needs numba installed (pip install 'lowbit[cpu]')")
        from . import cpu as kernels
    else:
        from . import reference as kernels
    return kernels.gemm(a, b, plan, seed)


def add_bias(s: torch.Tensor, bias: torch.Tensor, plan: Plan, k: int,
             seed: Optional[int]) -> torch.Tensor:
    """``Q_acc(s + bias)`` for a (B, M, N) result ``s`` of a GEMM with ``k`` steps and a bias
    of the same shape, one rounding per output; stochastic words from slot ``BIAS`` of step
    ``K' - 1`` (``K' = max(k, 1)``)."""
    batch, m, n = s.shape
    words = None
    if plan.acc_rounding is Rounding.STOCHASTIC:
        kk = max(k, 1)
        t = step_base(batch, m, n, kk, s.device) + (kk - 1)
        words = step_words(t, seed, int(Slot.BIAS) >> 2)[int(Slot.BIAS) & 3]
    out = add_round(s.double(), bias.double(), plan.acc, plan.acc_rounding, words)
    return out
