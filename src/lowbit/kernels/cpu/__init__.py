"""The CPU backend: multi-threaded, vectorised numba kernels, bit-identical to the reference.

Importing this module imports numba (``ModuleNotFoundError`` for ``numba`` when it is not
installed) and points numba's cache at a writable directory first (``_env``).  Kernels compile
on their first call (seconds) and are cached on disk, so later processes load them in well
under a second.  Threads: numba's pool (``numba.set_num_threads``; ``NUMBA_NUM_THREADS``).

Every kernel function has the registry signature ``fn(x, fmt, rounding, rbits, seed) ->
Tensor`` plus an optional ``out``: a contiguous fp32 CPU tensor of ``x``'s size to write the
result into (``x`` itself is allowed: each element is read before it is written).
"""

from __future__ import annotations

from ._env import configure_numba_cache

configure_numba_cache()

from typing import Optional  # noqa: E402

import torch  # noqa: E402

from ...formats import (  # noqa: E402
    BlockFormat, ExpFormat, FixedPoint, FloatFormat, IntFormat, Rounding, ScaleRule,
)
from ..dispatch import Backend, register  # noqa: E402
from . import _block, _scalar  # noqa: E402
from ._params import exp_params, fixed_params, float_params  # noqa: E402
from ._scalar import MODE_CODES  # noqa: E402

__all__ = ["quantize_float", "quantize_exp", "quantize_fixed", "quantize_block", "float_params",
           "exp_params", "fixed_params"]


# -- running a kernel -------------------------------------------------------------------------
def _overlap(a: torch.Tensor, b: torch.Tensor) -> bool:
    a0, b0 = a.data_ptr(), b.data_ptr()
    return a0 < b0 + b.numel() * b.element_size() and b0 < a0 + a.numel() * a.element_size()


def _target(x: torch.Tensor, out: Optional[torch.Tensor]) -> torch.Tensor:
    """Where the kernel writes: ``out`` when it can take the bits directly, else a new tensor."""
    if (out is not None and out.dtype == torch.float32 and out.device.type == "cpu"
            and out.is_contiguous() and out.numel() == x.numel()
            and (out.data_ptr() == x.data_ptr() or not _overlap(out, x))):
        return out
    return torch.empty(x.shape, dtype=torch.float32)


def _launch(kernel, x: torch.Tensor, rounding: Rounding, rbits: int, seed: Optional[int],
            out: Optional[torch.Tensor], *args) -> torch.Tensor:
    if x.dtype != torch.float32 or x.device.type != "cpu" or not x.is_contiguous():
        raise ValueError("the CPU kernels take a contiguous fp32 CPU tensor")
    y = _target(x, out)
    if x.numel():
        seed = seed or 0
        topmask = (0xFFFFFFFF << (32 - rbits)) & 0xFFFFFFFF
        xi = x.detach().reshape(-1).view(torch.int32).numpy()
        yi = y.detach().reshape(-1).view(torch.int32).numpy()
        threads = torch.get_num_threads()
        kernel(xi, yi, MODE_CODES[rounding.value], seed & 0xFFFFFFFF, seed >> 32, topmask,
               *args)
        # numba's OpenMP layer resets the process-wide OpenMP thread count on first use,
        # which would silently change torch's intra-op threads for every later op.
        if torch.get_num_threads() != threads:
            torch.set_num_threads(threads)
    if out is not None and y is not out:
        return out.copy_(y.view(out.shape))
    return y


def quantize_float(x: torch.Tensor, fmt: FloatFormat, rounding: Rounding, rbits: int,
                   seed: Optional[int], out: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Round a contiguous fp32 CPU tensor onto a ``FloatFormat`` (reference semantics)."""
    # T = emin + 127 < 1: the format's normal range starts below fp32's (a bias above 127).
    kernel = _scalar.float_kernel_exact if fmt.emin < -126 else _scalar.float_kernel
    return _launch(kernel, x, rounding, rbits, seed, out, *float_params(fmt, rounding))


def quantize_exp(x: torch.Tensor, fmt: ExpFormat, rounding: Rounding, rbits: int,
                 seed: Optional[int], out: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Round onto an ``ExpFormat`` (power-of-two scales such as E8M0)."""
    return _launch(_scalar.exp_kernel, x, rounding, rbits, seed, out,
                   *exp_params(fmt, rounding))


def quantize_fixed(x: torch.Tensor, fmt, rounding: Rounding, rbits: int, seed: Optional[int],
                   out: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Round onto a ``FixedPoint`` or ``IntFormat`` grid."""
    return _launch(_scalar.fixed_kernel, x, rounding, rbits, seed, out,
                   *fixed_params(fmt, rounding))


def quantize_block(x: torch.Tensor, fmt: BlockFormat, rounding: Rounding, rbits: int,
                   seed: Optional[int], out: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Round onto a ``BlockFormat``: power-of-two scales along the last axis or over the whole
    tensor run here (``_block``); other layouts and the AMAX rule use the reference."""
    shape = _block.layout(fmt, tuple(x.shape)) if x.numel() else None
    if shape is None or fmt.scale_rule is ScaleRule.AMAX:
        from ..dispatch import kernel_for

        y = kernel_for(Backend.REFERENCE, BlockFormat, x.device)(x, fmt, rounding, rbits, seed)
        return y if out is None else out.copy_(y.view(out.shape))
    float_elem = isinstance(fmt.element, FloatFormat)
    L, bs = shape
    if L:
        table = (_block.float_table if float_elem else _block.fixed_table)(fmt, rounding)
        return _launch(_block.block_kernel, x, rounding, rbits, seed, out, L, bs,
                       _block.rule_params(fmt), table, float_elem)
    # One block: the amax pass, then the scalar kernel of the element format times 2^k.
    m = int(_block.absmax_bits(x.detach().reshape(-1).view(torch.int32).numpy()))
    if m >= 0x7F800000:  # a NaN or Inf: the block is NaN
        y = _target(x, out).fill_(float("nan"))
        return y if out is None or y is out else out.copy_(y.view(out.shape))
    k = int(_block.scale_exp(m, _block.rule_params(fmt)))
    if float_elem:
        grid, consts = float_params(fmt.element, rounding, k)
        kernel = _scalar.float_kernel_exact if grid[0] < 1 else _scalar.float_kernel
        return _launch(kernel, x, rounding, rbits, seed, out, grid, consts)
    return _launch(_scalar.fixed_kernel, x, rounding, rbits, seed, out,
                   *fixed_params(fmt.element, rounding, k))


# They write straight into a suitable ``out`` (``lowbit.quantize(out=)`` may hand it over).
for _fn in (quantize_float, quantize_exp, quantize_fixed, quantize_block):
    _fn.supports_out = True

register(Backend.CPU, FloatFormat)(quantize_float)
register(Backend.CPU, ExpFormat)(quantize_exp)
register(Backend.CPU, FixedPoint)(quantize_fixed)
register(Backend.CPU, IntFormat)(quantize_fixed)
register(Backend.CPU, BlockFormat)(quantize_block)
