"""The Triton GEMM backend: operation flags and format scalars from a ``Plan``, and launches.

Which path rounds an operation (``_jit.rounding``):

* NATIVE: fp32 to nearest on the GPU: the hardware FMA.
* FAST: non-stochastic, onto a format whose decision points are all multiples of two fp32 ulps
  (floats: ``man <= 21`` and smallest step >= 2^-147; fixed point: at most 22 magnitude bits and
  a step >= 2^-147): round to odd in fp32, then the elementwise rounding; UNIFORM for IEEE
  formats with fp32's exponent range (bf16, tf32): an integer add and mask.
* otherwise the general float64/int64 path (stochastic rounding, fp32-wide formats).

All three give the reference's bits.  ``chunk_acc="fp32"`` runs on tensor cores
(``_dot_kernel``) when ``chunk`` is a multiple of 16; the operands go to the tensor cores as
bf16 or fp16 when every value of both is exact there (products then exact, sums fp32), else as
fp32 with IEEE products (no TF32).  Other chunk lengths sum their chunks in fp32 in K order.

CUDA tensors run the compiled device code; CPU tensors run it in Triton's interpreter (an alias
package loaded with ``TRITON_INTERPRET=1``, as ``lowbit.kernels.triton._launch`` does).
"""

from __future__ import annotations

import dataclasses
import functools
import importlib
import os
from types import ModuleType
from typing import Optional, Tuple

import torch
import triton

from ...formats import FixedPoint, FloatFormat, IntFormat, Rounding, Specials
from ..triton._jit.core import ROUNDING_CODE
from ..triton._launch import device_guard, interpreted_package, key_of
from ..triton._scalar import fixed_params, float_params
from . import _flags
from ._plan import FP32, Plan

__all__ = ["gemm", "operation_flags", "tile"]

_COMPILED = __package__ + "._jit"
_INTERPRETED = __package__ + "._jit_interpreted"
_MODULES = ("_core", "rounding", "gemm")
_SEQUENTIAL, _CHUNKED, _KAHAN = 0, 1, 2


def _interpreted() -> str:
    """The interpreted copy of this backend's ``_jit`` package."""
    return interpreted_package(_INTERPRETED, os.path.join(os.path.dirname(__file__), "_jit"),
                               _MODULES)


def _kernels(device: torch.device) -> ModuleType:
    if device.type == "cuda":
        return importlib.import_module(_COMPILED + ".gemm")
    if device.type == "cpu":
        return importlib.import_module(_interpreted() + ".gemm")
    raise ValueError(f"the Triton backend takes CUDA tensors (CPU tensors in Triton's "
                     f"interpreter); got a {device.type} tensor")


def _fast(fmt, rounding: Rounding) -> bool:
    """Rounding to odd in fp32 first is exact for ``fmt`` (see the module docstring)."""
    if rounding is Rounding.STOCHASTIC:
        return False
    if isinstance(fmt, FloatFormat):
        return fmt.man <= 21 and fmt.emin - fmt.man >= -147
    return fmt.significand_bits <= 22 and fmt.quantum_exp >= -147


@functools.lru_cache(maxsize=256)
def operation_flags(fmt, rounding: Rounding) -> Tuple[int, Tuple[int, ...]]:
    """``(flags, scalars)`` of one rounded operation onto ``fmt`` (see ``_jit.rounding``)."""
    flags = _flags.PRESENT | (ROUNDING_CODE[rounding] << _flags.ROUNDING_SHIFT)
    if _fast(fmt, rounding):
        flags |= _flags.FAST
    if isinstance(fmt, (FixedPoint, IntFormat)):
        p = fixed_params(fmt)
        return flags | _flags.FIXED, (p.q, 0, p.lo, p.hi, p.clamp, 0, 0, 0)
    params, f = float_params(fmt)
    flags |= _flags.SUBNORMALS * f.SUBNORMALS | _flags.SIGNED * f.SIGNED | _flags.WIDE * f.WIDE
    ieee8 = (fmt.exp == 8 and fmt.bias == 127 and fmt.specials is Specials.IEEE
             and fmt.subnormals and fmt.signed)
    if ieee8 and flags & _flags.FAST:
        flags |= _flags.UNIFORM | (_flags.SATURATE * fmt.saturate)
    if fmt == FP32 and rounding is Rounding.NEAREST:
        flags |= _flags.NATIVE
    return flags, tuple(dataclasses.astuple(params)[:8])


def tile(device: torch.device, m: int, n: int, general: bool) -> Tuple[int, int, int]:
    """(BM, BN, num_warps) of the sequential kernel: in the interpreter, whose cost is per
    operation, one tile as large as the problem (to 32); on the GPU 64×64 outputs per program
    (32 per thread), 32×32 where the float64 path needs the registers."""
    if device.type != "cuda":
        return (min(max(triton.next_power_of_2(m), 2), 32),
                min(max(triton.next_power_of_2(n), 2), 32), 1)
    return (32, 32, 4) if general else (64, 64, 4)


def gemm(a: torch.Tensor, b: torch.Tensor, plan: Plan, seed: Optional[int]) -> torch.Tensor:
    """``a`` (B, M, K) × ``b`` (B, K, N), contiguous fp32, under ``plan``; fp32 (B, M, N)."""
    batch, m, kdim = a.shape
    n = b.shape[2]
    out = torch.empty(batch, m, n, dtype=torch.float32, device=a.device)
    if out.numel() == 0:
        return out
    if kdim == 0:
        return out.zero_()
    ops = [(plan.mul, plan.mul_rounding), (plan.acc, plan.acc_rounding),
           (plan.chunk_acc, plan.chunk_rounding)]
    flags, rows = [], []
    for fmt, rounding in ops:
        f, scalars = (0, (0,) * 8) if fmt is None else operation_flags(fmt, rounding)
        flags.append(f)
        rows.append(scalars)
    par = torch.tensor(rows, dtype=torch.int32).to(a.device)
    asm = a.is_cuda and os.environ.get("TRITON_INTERPRET", "0") != "1"
    fn = _kernels(a.device)
    common = dict(RANDOM=plan.stochastic, ASM=asm, INTERPRET=not a.is_cuda)
    with device_guard(a):
        if plan.fp32_chunks and plan.chunk % 16 == 0:
            _launch_dot(fn, a, b, out, par, plan, seed, flags[1], common)
        else:
            _launch_seq(fn, a, b, out, par, plan, seed, flags, common)
    return out


def _launch_seq(fn, a, b, out, par, plan: Plan, seed, flags, common) -> None:
    batch, m, kdim = a.shape
    n = b.shape[2]
    if plan.compensated:
        kind, chunk = _KAHAN, 1
    elif plan.chunk is not None:
        kind, chunk = _CHUNKED, plan.chunk
        if plan.fp32_chunks:  # a chunk length the tensor cores cannot take: fp32 in K order
            f, scalars = operation_flags(FP32, Rounding.NEAREST)
            flags = [flags[0], flags[1], f]
            par[2] = torch.tensor(scalars, dtype=torch.int32, device=par.device)
    else:
        kind, chunk = _SEQUENTIAL, 1
    general = any(f and not f & (_flags.FAST | _flags.NATIVE) for f in flags)
    nan_free = (kind == _SEQUENTIAL and plan.mul is None
                and bool(torch.isfinite(a).all()) and bool(torch.isfinite(b).all()))
    bm, bn, warps = tile(a.device, m, n, general)
    at = a.transpose(1, 2).contiguous()
    grid = (triton.cdiv(m, bm) * triton.cdiv(n, bn), batch)
    fn._seq_kernel[grid](at, b, out, par, m, n, kdim, chunk, *key_of(seed),
                         MUL=flags[0], ACC=flags[1], CHK=flags[2], KIND=kind, NAN_FREE=nan_free,
                         BM=bm, BN=bn, num_warps=warps, **common)


def _operand_dtype(a: torch.Tensor, b: torch.Tensor) -> torch.dtype:
    """The narrowest dtype holding every value of both operands exactly (tensor cores)."""
    if not a.is_cuda:  # the interpreter's bf16/fp16 dot is not IEEE: stay in fp32
        return torch.float32
    for dtype in (torch.bfloat16, torch.float16):
        if all(bool((x.to(dtype).float() == x).all()) for x in (a, b)):
            return dtype
    return torch.float32


def _dot_block(chunk: int) -> int:
    """The largest power of two dividing ``chunk`` (a multiple of 16), at most 64."""
    return min(chunk & -chunk, 64)


def _launch_dot(fn, a, b, out, par, plan: Plan, seed, acc_flags: int, common) -> None:
    batch, m, kdim = a.shape
    n = b.shape[2]
    dtype = _operand_dtype(a, b)
    if a.is_cuda:
        bm, bn, warps, stages = 128, 128, 8, 3
    else:
        bm, bn, warps, stages = 16, 16, 1, 1
    # Chunk sums below 2^126 in magnitude stay finite, so S + c_t is never Inf - Inf.
    amax = [float(x.abs().max()) if x.numel() else 0.0 for x in (a, b)]
    nan_free = amax[0] * amax[1] * plan.chunk <= 2.0**126  # False for Inf/NaN operands
    grid = (triton.cdiv(m, bm) * triton.cdiv(n, bn), batch)
    fn._dot_kernel[grid](a.to(dtype), b.to(dtype), out, par, m, n, kdim, plan.chunk,
                         *key_of(seed), ACC=acc_flags, NAN_FREE=nan_free,
                         IEEE=dtype == torch.float32, BM=bm, BN=bn,
                         BK=_dot_block(plan.chunk), num_warps=warps, num_stages=stages, **common)
