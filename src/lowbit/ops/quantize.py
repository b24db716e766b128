"""``lowbit.quantize``: a tensor rounded onto a number format, differentiable by the
straight-through estimator."""

from __future__ import annotations

import dataclasses
from typing import Optional, Union

import torch

from ..formats import BlockFormat, FloatFormat, Format, Rounding, ScaleRule, get
from ..kernels.dispatch import Backend, kernel_for
from ..kernels.philox import resolve_seed
from ..kernels.reference.block import normalize_axes

__all__ = ["quantize", "result_dtype", "check_rbits"]

_CARRIERS = {
    torch.float32: None,  # every format is simulated in fp32
    torch.bfloat16: FloatFormat(8, 7),
    torch.float16: FloatFormat(5, 10),
}


def result_dtype(fmt: Format, dtype: torch.dtype) -> torch.dtype:
    """The dtype results are returned in: the input's, when it holds every result exactly.

    Raises:
        TypeError: ``dtype`` is not a floating dtype.
        ValueError: fp64 (lowbit rounds from fp32, so an fp64 input would be rounded twice), or
            a dtype that cannot hold the format's values (pass fp32).
    """
    if dtype == torch.float64:
        raise ValueError("x is float64; lowbit rounds from fp32: pass x.float() (float64 "
                         "inputs would be rounded twice)")
    if dtype not in _CARRIERS:
        raise TypeError(f"x must be float32, float16 or bfloat16; got {dtype}")
    carrier = _CARRIERS[dtype]
    if carrier is not None and not fmt.fits_in(carrier):
        raise ValueError(f"{fmt!r} has values that {dtype} cannot hold; pass x.float() (fp32)")
    return dtype


def check_rbits(rbits: Optional[int], rounding: Rounding, seed: Optional[int]) -> int:
    """Validate ``rbits`` and ``seed`` for ``rounding``; return the number of random bits."""
    if rounding is not Rounding.STOCHASTIC:
        for name, value in (("rbits", rbits), ("seed", seed)):
            if value is not None:
                raise ValueError(f"{name} applies only to rounding='stochastic'; got "
                                 f"{name}={value!r} with rounding={rounding.value!r}")
        return 32
    if rbits is None:
        return 32
    if isinstance(rbits, bool) or not isinstance(rbits, int):
        raise TypeError(f"rbits must be an int in [1, 32] or None; got {rbits!r}")
    if not 1 <= rbits <= 32:
        raise ValueError(f"rbits must be in [1, 32]; got {rbits}")
    return rbits


@torch.library.custom_op("lowbit::quantize", mutates_args=())
def _quantize_op(x: torch.Tensor, fmt: str, rounding: str, rbits: int, seed_lo: int,
                 seed_hi: int, backend: str) -> torch.Tensor:
    """The rounding as a torch.library op, so torch.compile traces it without a graph break.
    ``fmt`` is the format's name (``repr`` round-trips); the 64-bit seed travels as two
    32-bit halves because op arguments are signed 64-bit ints."""
    f = get(fmt)
    fn = kernel_for(Backend(backend), type(f), x.device)
    x32 = x.to(torch.float32).contiguous()
    if x32.numel() == 0:  # a custom op's output may not alias its input
        return torch.empty_like(x, memory_format=torch.contiguous_format)
    seed = None if seed_lo < 0 else seed_lo | (seed_hi << 32)
    rnd = Rounding(rounding)
    if Backend(backend) in (Backend.AUTO, Backend.CPU) and x32.device.type == "cpu":
        y = _cpu_block(x32, f, rnd, rbits, seed, fn)
        if y is not None:
            return y.to(x.dtype)
    return fn(x32, f, rnd, rbits, seed).to(x.dtype)


def _cpu_block(x: torch.Tensor, f: Format, rounding: Rounding, rbits: int,
               seed: Optional[int], fn) -> Optional[torch.Tensor]:
    """The CPU block layouts the numba block kernel lacks, or None for ``fn``, the backend's
    kernel: the AMAX rule through the codec (``_amax_by_codec``), tiles (``_tiles_as_runs``)."""
    if not isinstance(f, BlockFormat):
        return None
    if _tiled(f) and rounding is not Rounding.STOCHASTIC:
        return _tiles_as_runs(x, f, rounding, rbits, seed, fn)
    if f.scale_rule is ScaleRule.AMAX:
        return _amax_by_codec(x, f, rounding, rbits, seed)
    return None


def _tiled(f: BlockFormat) -> bool:
    return isinstance(f.block_size, tuple) and len(f.block_size) > 1


def _tiles_as_runs(x: torch.Tensor, f: BlockFormat, rounding: Rounding, rbits: int,
                   seed: Optional[int], fn) -> torch.Tensor:
    """Tiles (``block_size=(s_1, ..., s_k)`` over ``k`` axes) rounded as runs of ``s_1 ⋯ s_k``
    along the last axis of a permuted copy, where the CPU kernels serve them.

    The tile axes are moved last and zero-padded to whole tiles, each tile's elements are made
    one contiguous run, the run format rounds them, and the permutation is undone.  A zero pad
    changes no amax (the block's or the tensor's), so every value is the reference's; the
    stochastic stream counts elements in the permuted order, so stochastic rounding keeps the
    reference (the caller does not come here)."""
    sizes, axes = normalize_axes(f, x.dim())
    rest = [d for d in range(x.dim()) if d not in axes]
    moved = x.permute(rest + list(axes))
    r, k = len(rest), len(sizes)
    pads = []
    for size, n in zip(reversed(sizes), reversed(moved.shape[r:])):
        pads += [0, -n % size]
    padded = torch.nn.functional.pad(moved, pads) if any(pads) else moved
    counts = [n // size for n, size in zip(padded.shape[r:], sizes)]
    split = [d for pair in zip(counts, sizes) for d in pair]
    order = list(range(r)) + [r + 2 * i for i in range(k)] + [r + 2 * i + 1 for i in range(k)]
    tile = 1
    for size in sizes:
        tile *= size
    runs = padded.reshape(*padded.shape[:r], *split).permute(order)
    runs = runs.reshape(*padded.shape[:r], *counts, tile).contiguous()
    run_fmt = dataclasses.replace(f, block_size=tile, axis=-1)
    y = _cpu_block(runs, run_fmt, rounding, rbits, seed, fn)
    if y is None:
        y = fn(runs, run_fmt, rounding, rbits, seed)
    inverse = [order.index(i) for i in range(len(order))]
    y = y.reshape(*padded.shape[:r], *counts, *sizes).permute(inverse).reshape(padded.shape)
    y = y[(...,) + tuple(slice(0, n) for n in moved.shape[r:])]
    back = [0] * x.dim()
    for i, d in enumerate(rest + list(axes)):
        back[d] = i
    return y.permute(back).contiguous()


def _bypasses_kernel(f: Format, x: torch.Tensor) -> bool:
    """True where ``_cpu_block`` may serve ``x`` (so ``quantize(out=)`` must not hand ``out``
    to the CPU block kernel, which would take the reference)."""
    return (isinstance(f, BlockFormat) and x.device.type == "cpu"
            and (f.scale_rule is ScaleRule.AMAX or _tiled(f)))


def _amax_by_codec(x: torch.Tensor, f: BlockFormat, rounding: Rounding, rbits: int,
                   seed: Optional[int]) -> Optional[torch.Tensor]:
    """``decode(encode(x))`` through the one-pass CPU codec kernels, or None where they do
    not apply (layouts other than runs along the last axis or whole rows, no numba).

    The CPU block kernel has no AMAX rule (NVFP4) and would take the reference, about 800×
    slower; the codec's kernels round in the reference's fp32 order with the same stream,
    and ``decode(encode(x)) == quantize(x)`` bit for bit is what tests/ops/test_codec*.py
    and tests/ops/test_quantize_amax_cpu.py check.
    """
    from .codec.fused import decode_fused, encode_fused  # the codec imports this module

    with torch.no_grad():
        enc = encode_fused(x, f, rounding, rbits, seed, "raise")
        if enc is None:
            return None
        codes, scales, tensor_scale = enc
        return decode_fused(codes, scales, tensor_scale, f, tuple(x.shape))


@_quantize_op.register_fake
def _(x, fmt, rounding, rbits, seed_lo, seed_hi, backend):
    return torch.empty_like(x, memory_format=torch.contiguous_format)


def _straight_through(ctx, grad):
    return grad, None, None, None, None, None, None


_quantize_op.register_autograd(_straight_through)


def _round(x: torch.Tensor, fmt: Format, rounding: Rounding, rbits: int,
           seed: Optional[int], backend: Backend) -> torch.Tensor:
    lo, hi = (-1, -1) if seed is None else (seed & 0xFFFFFFFF, seed >> 32)
    return _quantize_op(x, repr(fmt), rounding.value, rbits, lo, hi, backend.value)


def quantize(
    x: torch.Tensor,
    fmt: Union[str, Format],
    *,
    rounding: Union[str, Rounding] = "nearest",
    rbits: Optional[int] = None,
    seed: Optional[int] = None,
    out: Optional[torch.Tensor] = None,
    backend: Union[str, Backend] = "auto",
) -> torch.Tensor:
    """Round every element of ``x`` onto ``fmt``.

    The rounding is computed on the exact fp32 value: ``Q(x)`` is the representable value the
    rounding mode picks among the two neighbours of ``x`` (IEEE 754 §4.3; ``stochastic`` picks
    the upper one with probability ``(x - lo) / (hi - lo)``), with overflow judged after
    rounding (§7.4) and the format's specials as in ``FloatFormat``.  Block formats first
    derive each block's scale (``BlockFormat``).  The gradient is the straight-through
    estimator, ``dQ/dx = 1`` (Bengio et al., 2013).

    Args:
        x: float32, float16 or bfloat16 tensor of any shape and strides.
        fmt: a format object or name (``lowbit.formats.get``).
        rounding: a ``Rounding`` mode or its name.
        rbits: random bits for ``stochastic``, 1..32 (default 32: exactly unbiased wherever at
            most 32 bits are dropped; with fewer bits the bias is below 2^-rbits of a step).
        seed: 64-bit seed of the Philox stream (``lowbit.kernels.philox``); None draws one from
            torch's default generator.  Same seed, same result on every backend and layout.
        out: optional tensor of ``x``'s shape and result dtype to write into (no autograd).
        backend: ``auto``, ``reference``, ``cpu`` or ``triton`` (see ``Backend``).

    Returns:
        The rounded tensor, in ``x``'s dtype (a ``ValueError`` asks for fp32 when that dtype
        cannot hold the format's values).
    """
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"x must be a torch.Tensor; got {type(x).__name__}")
    fmt = get(fmt)
    rounding = Rounding.parse(rounding, "rounding")
    backend = Backend.parse(backend, "backend")
    if not x.is_floating_point() and x.dtype != torch.float64:
        raise TypeError(f"x must be float32, float16 or bfloat16; got {x.dtype}")
    dtype = result_dtype(fmt, x.dtype)
    bits = check_rbits(rbits, rounding, seed)
    seed = resolve_seed(seed) if rounding is Rounding.STOCHASTIC else None
    if out is not None:
        _check_out(out, x, dtype)
        if x.requires_grad and torch.is_grad_enabled():
            raise ValueError("out= does not support autograd; x requires grad")
        with torch.no_grad():
            fn = kernel_for(backend, type(fmt), x.device)
            if (getattr(fn, "supports_out", False) and x.dtype == torch.float32 and x.numel()
                    and not _bypasses_kernel(fmt, x)):
                # The kernel writes into ``out`` itself: one pass, no temporary.
                return fn(x.detach().contiguous(), fmt, rounding, bits, seed, out=out)
            return out.copy_(_round(x, fmt, rounding, bits, seed, backend))
    return _round(x, fmt, rounding, bits, seed, backend)


def _check_out(out: object, x: torch.Tensor, dtype: torch.dtype) -> None:
    if not isinstance(out, torch.Tensor):
        raise TypeError(f"out must be a torch.Tensor; got {type(out).__name__}")
    if out.shape != x.shape or out.dtype != dtype or out.device != x.device:
        raise ValueError(f"out must have shape {tuple(x.shape)}, dtype {dtype} and device "
                         f"{x.device}; got {tuple(out.shape)}, {out.dtype}, {out.device}")
