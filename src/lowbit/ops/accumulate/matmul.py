"""``matmul``, ``bmm`` and ``linear`` with simulated accumulation, differentiable.

The backward pass computes the straight-through gradients of ``a @ b`` (the rounding is
treated as the identity, Bengio et al. 2013): ``dA = dC · Bᵀ`` (dgrad) and ``dB = Aᵀ · dC``
(wgrad), each itself a simulated GEMM under its own spec (``dgrad=``, ``wgrad=``; default the
forward's, None = plain fp32 torch ops).  An operand broadcast over batch dimensions gets one
GEMM whose reduction runs over the broadcast dimensions and then K (``reduce_gemm``); a bias
gets ``Σ dC`` over every other dimension as a GEMM with a column of ones, under the wgrad spec.
"""

from __future__ import annotations

from typing import Optional, Union

import torch

from ...kernels.dispatch import Backend
from ._args import GradSpec, backend_of, build_spec, grad_spec, operand, plan_of, seeds
from .gemm import batch_shape, reduce_gemm, run_batched
from .spec import Accumulate

__all__ = ["matmul", "bmm", "linear"]


class _MatMul(torch.autograd.Function):
    @staticmethod
    def forward(ctx, a, b, bias, specs, plans, seed_list, backend, weight_t):
        ctx.save_for_backward(a, b)
        ctx.specs, ctx.seeds, ctx.backend = specs, seed_list, backend
        ctx.has_bias = bias is not None
        ctx.weight_t = weight_t  # b is a weight's transpose (linear): wgrad is dYᵀ·X
        with torch.no_grad():
            return run_batched(a, b, plans[0], seed_list[0], bias, backend)

    @staticmethod
    def backward(ctx, grad):
        a, b = ctx.saved_tensors
        _, dspec, wspec = ctx.specs
        _, dseed, wseed, bseed = ctx.seeds
        batch = batch_shape(a, b)
        grad_a = grad_b = grad_bias = None
        if ctx.needs_input_grad[0]:
            grad_a = reduce_gemm(grad, b.transpose(-1, -2), batch, a.shape[:-2], dspec, dseed,
                                 ctx.backend)
        if ctx.needs_input_grad[1] and ctx.weight_t:
            grad_b = reduce_gemm(grad.transpose(-1, -2), a, batch, b.shape[:-2], wspec, wseed,
                                 ctx.backend).transpose(-1, -2)
        elif ctx.needs_input_grad[1]:
            grad_b = reduce_gemm(a.transpose(-1, -2), grad, batch, b.shape[:-2], wspec, wseed,
                                 ctx.backend)
        if ctx.has_bias and ctx.needs_input_grad[2]:
            rows = grad.reshape(-1, grad.shape[-1])
            ones = torch.ones(1, rows.shape[0], dtype=rows.dtype, device=rows.device)
            grad_bias = reduce_gemm(ones, rows, (), (), wspec, bseed, ctx.backend).reshape(-1)
        return grad_a, grad_b, grad_bias, None, None, None, None, None


def _apply(a, b, bias, spec: Accumulate, dgrad: GradSpec, wgrad: GradSpec,
           seed: Optional[int], backend, weight_t: bool = False) -> torch.Tensor:
    specs = (spec, grad_spec(dgrad, spec, "dgrad"), grad_spec(wgrad, spec, "wgrad"))
    plans = tuple(plan_of(s) for s in specs)
    # forward, dgrad, wgrad and the bias gradient draw from seeds base, base+1, base+2, base+3
    seed_list = seeds(seed, plans[0], plans[1], plans[2],
                      plans[2] if bias is not None else None)
    return _MatMul.apply(a, b, bias, specs, plans, seed_list, backend_of(backend), weight_t)


def matmul(a: torch.Tensor, b: torch.Tensor, *, mul=None, acc=None, rounding="nearest",
           mul_rounding=None, acc_rounding=None, chunk: Optional[int] = None, chunk_acc=None,
           fma: bool = False, compensated: bool = False, seed: Optional[int] = None,
           spec: Optional[Accumulate] = None, dgrad: GradSpec = "same",
           wgrad: GradSpec = "same", backend: Union[str, Backend] = "auto") -> torch.Tensor:
    """``a @ b`` (``torch.matmul`` shapes and broadcasting) with simulated accumulation.

    For each output, with ``p_k = a_ik·b_kj`` exact (``mul=None`` or ``fma=True``) or
    ``Q_mul(a_ik·b_kj)`` (one rounding of the exact product, ``mul_rounding``), and every
    ``Q_acc`` one rounding of an exact sum onto ``acc`` (``acc_rounding``):

    * ``chunk=None``: ``s_0 = +0``, ``s_k = Q_acc(s_{k-1} + p_k)``, strictly k = 1..K;
    * ``chunk=c`` (IBM's chunk-based accumulation, Wang et al., NeurIPS 2018): each run of
      ``c`` products (the last may be shorter) is summed from +0 in order in ``chunk_acc``
      (default ``acc``; rounded with ``acc_rounding``), and each chunk sum ``c_t`` is added to
      the total, ``S_t = Q_acc(S_{t-1} + c_t)``; ``chunk_acc="fp32"`` forms ``c_t`` in fp32 in
      an unspecified order (tensor cores on the GPU: fast, not bit-reproducible; with ``mul``
      set, in fp32 in K order, rounded to nearest);
    * ``compensated=True``: Kahan's summation (Kahan 1965) with every operation rounded onto
      ``acc``: ``y = Q(p_k - c)``, ``t = Q(s + y)``, ``z = Q(t - s)``, ``c = Q(z - y)``,
      ``s = t``; the result is ``s``.

    "One rounding" means the exact real value is rounded once, as ``lowbit.quantize`` rounds
    (overflow, saturation and specials of the format; fp32's range and 2^-149 grid bound every
    format); an exact zero sum is -0 only when both terms are -0.  ``rounding`` sets both
    ``mul_rounding`` and ``acc_rounding`` unless given.  ``fma=True`` with ``mul`` is a
    ``ValueError``: a fused multiply-add rounds only the sum.

    Stochastic rounding (32 random bits: P(up) = floor(2^32·frac)/2^32) draws the word of
    rounding event ``(b, i, j, k, slot)`` from element ``8·t + slot`` of the Philox stream of
    ``seed`` (``lowbit.kernels.philox``), ``t = ((b·M + i)·N + j)·K + k`` with ``b`` the
    row-major index of the broadcast batch; slots: 0 product, 1 sum (running, chunk, or
    Kahan's ``t``), 2 chunk total (at the chunk's last k), 3/4/5 Kahan's ``y``/``z``/``c``,
    6 bias (``linear``/``conv2d``, at k = max(K, 1) - 1).  Same seed, same bits on every
    backend.  The backward GEMMs use seeds ``seed + 1`` (dgrad), ``+ 2`` (wgrad) and
    ``+ 3`` (bias gradient), mod 2^64.

    Args:
        a, b: float32, float16 or bfloat16 tensors (fp16/bf16 are exact in fp32).
        mul, acc, chunk_acc: formats or names (``acc`` required unless ``spec`` is given).
        spec: an ``Accumulate`` holding the same options instead of them.
        dgrad, wgrad: the backward GEMMs' ``Accumulate`` for ``dA`` and ``dB``; ``"same"``
            (default) reuses the forward spec, None runs plain fp32 ``torch.matmul``.
        seed: 64-bit seed when some rounding is stochastic (None draws one from torch's
            generator); must be None otherwise.
        backend: ``auto``, ``reference``, ``cpu`` (numba) or ``triton``.

    Returns:
        fp32 tensor of ``torch.matmul(a, b)``'s shape.
    """
    options = dict(mul=mul, acc=acc, rounding=rounding, mul_rounding=mul_rounding,
                   acc_rounding=acc_rounding, chunk=chunk, chunk_acc=chunk_acc, fma=fma,
                   compensated=compensated)
    spec = build_spec(spec, options, "matmul")
    a, b = operand(a, "a"), operand(b, "b")
    if a.dim() == 0 or b.dim() == 0:
        raise ValueError("matmul needs tensors of at least one dimension")
    a_vector, b_vector = a.dim() == 1, b.dim() == 1  # torch.matmul's 1-D rules
    out = _apply(a.unsqueeze(0) if a_vector else a, b.unsqueeze(-1) if b_vector else b, None,
                 spec, dgrad, wgrad, seed, backend)
    if b_vector:
        out = out.squeeze(-1)
    if a_vector:
        out = out.squeeze(-1 if b_vector else -2)
    return out


def bmm(a: torch.Tensor, b: torch.Tensor, **options) -> torch.Tensor:
    """``torch.bmm`` shapes, (B, M, K) × (B, K, N), with ``matmul``'s semantics and options."""
    for name, x in (("a", a), ("b", b)):
        if not isinstance(x, torch.Tensor) or x.dim() != 3:
            raise ValueError(f"bmm needs 3-D tensors; {name} has shape "
                             f"{tuple(getattr(x, 'shape', ()))}")
    if a.shape[0] != b.shape[0]:
        raise ValueError(f"bmm needs equal batch sizes; got {a.shape[0]} and {b.shape[0]}")
    return matmul(a, b, **options)


def linear(x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor] = None, *,
           mul=None, acc=None, rounding="nearest", mul_rounding=None, acc_rounding=None,
           chunk: Optional[int] = None, chunk_acc=None, fma: bool = False,
           compensated: bool = False, seed: Optional[int] = None,
           spec: Optional[Accumulate] = None, dgrad: GradSpec = "same",
           wgrad: GradSpec = "same", backend: Union[str, Backend] = "auto") -> torch.Tensor:
    """``torch.nn.functional.linear`` with simulated accumulation: ``y = x @ weightᵀ`` as
    ``matmul`` (K = in_features), then ``y = Q_acc(y + bias)``, one more rounding (stochastic
    slot 6).  x is (..., in), weight (out, in), bias (out,); the GEMM is (rows of x) × weightᵀ.
    Gradients: ``dX = dY·W`` (K = out_features) under ``dgrad``; ``dW = dYᵀ·X`` (M = out,
    N = in, K over the rows of x, row-major) and ``db = Σ dY`` over the same rows under
    ``wgrad``."""
    options = dict(mul=mul, acc=acc, rounding=rounding, mul_rounding=mul_rounding,
                   acc_rounding=acc_rounding, chunk=chunk, chunk_acc=chunk_acc, fma=fma,
                   compensated=compensated)
    spec = build_spec(spec, options, "linear")
    x, weight = operand(x, "x"), operand(weight, "weight")
    if weight.dim() != 2 or x.dim() < 1 or x.shape[-1] != weight.shape[1]:
        raise ValueError(f"linear needs x (..., in) and weight (out, in); got "
                         f"{tuple(x.shape)} and {tuple(weight.shape)}")
    if bias is not None:
        bias = operand(bias, "bias")
        if bias.shape != (weight.shape[0],):
            raise ValueError(f"bias must have shape ({weight.shape[0]},); got "
                             f"{tuple(bias.shape)}")
    lead = x.shape[:-1]
    rows = x.reshape(-1, x.shape[-1])
    out = _apply(rows, weight.t(), bias, spec, dgrad, wgrad, seed, backend, weight_t=True)
    return out.reshape(*lead, weight.shape[0])


