"""Launchers of the packed-storage kernels (``_jit.codec``): CUDA tensors run the compiled
copy, CPU tensors Triton's interpreter (as ``_launch`` arranges for the rounding kernels).

The callers (``lowbit.ops.codec.gpu``) pass the per-format constants: the element rounding
arguments of ``_block._element_args``, the rule arguments of ``_block._rule_args`` and the code
constants of ``lowbit.ops.codec.fused``.  Nothing here reads a tensor back to the host, so a
CUDA call never synchronises.
"""

import importlib
import os
import sys
from types import ModuleType
from typing import Optional, Tuple

import torch
import triton

from ...formats import Rounding
from . import _launch
from ._jit.core import ROUNDING_CODE

__all__ = ["encode", "decode", "BLOCK"]

#: Elements per program (a multiple of 4) when the interpreter does not decide.
BLOCK = 2048


def _module(device: torch.device) -> ModuleType:
    if device.type == "cuda":
        return importlib.import_module(f"{__package__}._jit.codec")
    package = _launch._interpreted_package()  # the interpreted copies of core and block
    name = f"{package}.codec"
    if name not in sys.modules:
        saved = os.environ.get("TRITON_INTERPRET")
        os.environ["TRITON_INTERPRET"] = "1"  # read by @triton.jit as the module executes
        try:
            importlib.import_module(name)
        finally:
            if saved is None:
                del os.environ["TRITON_INTERPRET"]
            else:
                os.environ["TRITON_INTERPRET"] = saved
    return sys.modules[name]


def _tile(x: torch.Tensor, n: int, unit: int) -> int:
    """Elements per program: ``BLOCK`` on CUDA; in the interpreter, whose cost is per
    operation and program, the whole (small) tensor where it fits."""
    if x.is_cuda:
        return max(BLOCK, unit)
    return max(min(_launch.INTERPRETER_BLOCK, triton.next_power_of_2(n)), unit, 16)


def encode(x: torch.Tensor, out: torch.Tensor, scodes: torch.Tensor, counts: torch.Tensor,
           stable: torch.Tensor, pts: torch.Tensor, *, rounding: Rounding, rbits: int,
           seed: Optional[int], rule: int, rule_args: Tuple[int, ...],
           elem_args: Tuple[int, ...], elem_flags: dict, code_args: Tuple[int, ...],
           scale_code_args: Tuple[int, ...], nan_zero: int, scale_nan: int, bits: int,
           check: bool, block: int, tensor_scale: bool) -> None:
    """Round the contiguous fp32 ``x`` and write its packed codes to ``out`` (int16 for 16-bit
    codes); with ``block`` (a power of two >= 4 dividing the rows), block scale codes to
    ``scodes``; sentinel counts to ``counts`` (int32[2]); see ``_jit.codec._encode_kernel``."""
    n = x.numel()
    if n == 0:
        return
    tile = _tile(x, n, block or 4)
    nb = tile // block if block else 1
    nblocks = n // block if block else 0
    # (emax_elem, k_lo, k_hi, even_add, max_e, t_div, s_min, s_max, s_emin, s_man): t_div is
    # not needed, the tensor scale arrives computed in ``pts``
    ra = rule_args[:5] + rule_args[6:]
    fn = _module(x.device)._encode_kernel
    with _launch.device_guard(x):
        fn[(triton.cdiv(n, tile),)](
            x, out, scodes, counts, stable, pts, n, nblocks, *_launch.key_of(seed), rbits,
            *ra, *elem_args, *code_args, nan_zero, scale_nan, *scale_code_args,
            ROUNDING=ROUNDING_CODE[rounding], RULE=rule, BLOCKED=bool(block),
            TENSOR_SCALE=tensor_scale, CHECK=check, BITS=bits, NB=nb, BS=max(block, 4),
            ROWS=tile // 4, num_warps=_launch.NUM_WARPS, **elem_flags)


def decode(data: torch.Tensor, table: torch.Tensor, y: torch.Tensor, *, bits: int,
           scodes: Optional[torch.Tensor] = None, stable: Optional[torch.Tensor] = None,
           ts: Optional[torch.Tensor] = None, block: int = 0) -> None:
    """``y`` (fp32, contiguous) from the packed ``data``; with ``block``, times the factor of
    each block's scale code (``stable``, fp32 bits) and the tensor scale ``ts`` (fp32[1])."""
    n = y.numel()
    if n == 0:
        return
    tile = _tile(y, n, 4)
    dummy = table
    with _launch.device_guard(y):
        _module(y.device)._decode_kernel[(triton.cdiv(n, tile),)](
            data, table, y, dummy if scodes is None else scodes,
            dummy if stable is None else stable, dummy if ts is None else ts, n, data.numel(),
            BITS=bits, BLOCKED=bool(block), BS=max(block, 1), BLOCK=tile,
            num_warps=_launch.NUM_WARPS)
