"""Wrapper of the block-scaled kernels (``_jit.block``).

The kernel covers the layouts that are contiguous runs of the tensor:

* blocks of ``k`` along the last axis (``block_size=k, axis=-1``; ragged last blocks included),
  and one block per row (``block_size=None, axis=-1``), for blocks of up to ``MAX_BLOCK``
  elements: amax, scale and element rounding fused, one read and one write;
* one block for the whole tensor (``axis=None``, or ``block_size=None`` over every axis, as
  ``bfp<wl>``): ``_amax_kernel`` reads the tensor once for the amax, then the element pass;
* NVFP4's two-level scaling (``tensor_scale``): the same extra read for the tensor amax.

Every scale rule is supported.  Other layouts (2-D tiles, blocks along another axis, rows
longer than ``MAX_BLOCK``) use the reference implementation.
"""

import dataclasses
import functools
from typing import Optional, Tuple, Union

import torch
import triton

from ...formats import BlockFormat, ExpFormat, FixedPoint, FloatFormat, IntFormat, Rounding
from ...formats.modes import ScaleRule
from ..reference.block import normalize_axes
from ..reference.blockscale import _scale_range
from . import _launch
from ._jit.core import ROUNDING_CODE
from ._launch import device_guard, kernel, key_of
from ._scalar import fixed_params, float_params

__all__ = ["quantize_block", "MAX_BLOCK"]

#: Longest block the fused kernel reduces in registers.
MAX_BLOCK = 1024

_RULE_CODE = {ScaleRule.FLOOR: 0, ScaleRule.CEIL: 1, ScaleRule.EVEN: 2, ScaleRule.RCEIL: 3,
              ScaleRule.AMAX: 4}


def _f32(value: float) -> int:
    """The fp32 bit pattern of ``value`` rounded as torch rounds Python scalars."""
    return int(torch.tensor(value, dtype=torch.float32).view(torch.int32))


def _layout(fmt: BlockFormat, shape: Tuple[int, ...]) -> Optional[Tuple[bool, int]]:
    """(whole tensor?, block size) when the kernel covers the layout, else None."""
    if len(shape) == 0:
        return None
    sizes, axes = normalize_axes(fmt, len(shape))
    if sizes is None and sorted(axes) == list(range(len(shape))):
        return True, 4
    if axes != (len(shape) - 1,):
        return None
    bs = shape[-1] if sizes is None else min(sizes[0], shape[-1])
    return (False, bs) if bs <= MAX_BLOCK else None


@functools.lru_cache(maxsize=256)
def _element_args(elem: Union[FloatFormat, FixedPoint, IntFormat]) -> Tuple[tuple, dict]:
    if isinstance(elem, FloatFormat):
        p, f = float_params(elem)
        return dataclasses.astuple(p), dict(FIXED=False, SUBNORMALS=f.SUBNORMALS, SIGNED=f.SIGNED,
                                            WIDE=f.WIDE)
    p = fixed_params(elem)
    args = (p.q, elem.qmin, elem.qmax, p.clamp, p.lo, p.hi, 0, 0, 0)
    return args, dict(FIXED=True, SUBNORMALS=True, SIGNED=True, WIDE=False)


@functools.lru_cache(maxsize=256)
def _rule_args(fmt: BlockFormat) -> tuple:
    elem, s = fmt.element, fmt.scale
    man = elem.significand_bits - 1
    k_lo, k_hi = _scale_range(fmt)
    max_e = _f32(elem.max)
    s_man = 0 if isinstance(s, ExpFormat) else s.man
    return (fmt.emax_elem, k_lo, k_hi, (1 << (22 - man)) if man < 23 else 0, max_e,
            _f32(s.max * elem.max), _f32(s.min_normal), _f32(min(s.max, 3.0e38)), s.emin, s_man)


def quantize_block(x: torch.Tensor, fmt: BlockFormat, rounding: Rounding, rbits: int,
                   seed: Optional[int]) -> torch.Tensor:
    """Round a contiguous fp32 tensor onto a ``BlockFormat`` (see the module docstring for the
    layouts the kernel covers; the others go to the reference)."""
    layout = _layout(fmt, tuple(x.shape))
    if layout is None or x.numel() == 0:
        from ..dispatch import Backend, kernel_for

        return kernel_for(Backend.REFERENCE, BlockFormat, x.device)(x, fmt, rounding, rbits,
                                                                     seed)
    whole, bs = layout
    n = x.numel()
    L = n if whole else x.shape[-1]
    nbr = triton.cdiv(L, bs)
    nblocks = (n // L) * nbr
    if nblocks + MAX_BLOCK >= 2**31:
        raise ValueError(f"{nblocks} blocks: the Triton block kernel takes fewer than 2^31")
    amax_needed = whole or (fmt.tensor_scale and fmt.scale_rule is ScaleRule.AMAX)
    bsp = triton.next_power_of_2(bs)
    if x.is_cuda:
        tile = _launch.BLOCK
        nb = max(1, tile // bsp)
    else:  # the interpreter's cost grows with the tile, not with the work: no larger than needed
        tile = min(_launch.INTERPRETER_BLOCK, max(triton.next_power_of_2(n), 16))
        nb = max(1, min(tile // bsp, triton.next_power_of_2(nblocks)))
    elem_args, elem_flags = _element_args(fmt.element)
    y = torch.empty_like(x)
    amax = torch.zeros(1, dtype=torch.int32, device=x.device)
    with device_guard(x):
        if amax_needed:
            kernel(x.device, "block", "_amax_kernel")[(triton.cdiv(n, tile),)](
                x, amax, n, ROWS=tile // 4, num_warps=_launch.NUM_WARPS)
        grid = (triton.cdiv(nblocks, nb),)
        kernel(x.device, "block", "_block_kernel")[grid](
            x, y, amax, n, L, bs, nbr, nblocks, *key_of(seed), rbits, *_rule_args(fmt),
            *elem_args, ROUNDING=ROUNDING_CODE[rounding], RULE=_RULE_CODE[fmt.scale_rule],
            GLOBAL=whole, TENSOR_SCALE=fmt.tensor_scale and fmt.scale_rule is ScaleRule.AMAX,
            RAGGED=not whole and L % bs != 0, PADDED=bs != bsp,
            GROUPED=bs == bsp and bs % 4 == 0 and L % 4 == 0, NB=nb, BSP=bsp,
            num_warps=_launch.NUM_WARPS, **elem_flags)
    return y
