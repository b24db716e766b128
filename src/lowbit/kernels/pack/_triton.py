"""The group pack in Triton: host wrappers of ``_device``.

CUDA tensors run the compiled device code; CPU tensors run a second copy of ``_device`` loaded
with ``TRITON_INTERPRET=1`` (as ``lowbit.kernels.triton`` does for its own device code), so the
interpreter serves exactly the CPU tensors of tests and nothing leaks into compiled kernels.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
from types import ModuleType

import torch
import triton

from . import _device

__all__ = ["pack", "unpack"]

#: Elements per program on the GPU: a few groups, 16 elements per thread at 4 warps.
_GPU_TILE = 4096
#: Elements per program in the interpreter, whose cost is per operation, not per element.
_INTERPRETER_TILE = 65536
_NUM_WARPS = 4
_ALIAS = __package__ + "._device_interpreted"


def _interpreted() -> ModuleType:
    if _ALIAS not in sys.modules:
        spec = importlib.util.spec_from_file_location(_ALIAS, _device.__file__)
        module = importlib.util.module_from_spec(spec)
        saved = os.environ.get("TRITON_INTERPRET")
        os.environ["TRITON_INTERPRET"] = "1"  # read by @triton.jit as the module executes
        try:
            spec.loader.exec_module(module)
        finally:
            if saved is None:
                del os.environ["TRITON_INTERPRET"]
            else:
                os.environ["TRITON_INTERPRET"] = saved
        sys.modules[_ALIAS] = module
    return sys.modules[_ALIAS]


def _device_code(device: torch.device) -> ModuleType:
    if device.type == "cuda":
        return _device
    if device.type == "cpu":
        return _interpreted()
    raise ValueError(f"the Triton pack kernels take CUDA tensors (CPU tensors in Triton's "
                     f"interpreter); got a {device.type} tensor")


def _groups_per_program(device: torch.device, group_size: int, G: int) -> int:
    tile = _GPU_TILE if device.type == "cuda" else _INTERPRETER_TILE
    r = max(1, tile // group_size)
    return min(r, triton.next_power_of_2(max(G, 1)))


def _guard(t: torch.Tensor):
    if t.is_cuda:
        return torch.cuda.device(t.device)
    import numpy

    return numpy.errstate(all="ignore")  # the interpreter computes Inf/NaN as the GPU does


def pack(x: torch.Tensor, bits: int, group_size: int, seed: int):
    """``reference.pack`` on a CUDA tensor (or a CPU tensor, interpreted)."""
    x = x.detach().reshape(-1)
    if not x.is_contiguous():
        x = x.contiguous()
    n = x.numel()
    G = -(-n // group_size)
    codes = torch.empty(-(-n * bits // 8), dtype=torch.uint8, device=x.device)
    lo = torch.empty(G, dtype=torch.int16, device=x.device)
    hi = torch.empty(G, dtype=torch.int16, device=x.device)
    if n:
        R = _groups_per_program(x.device, group_size, G)
        fn = _device_code(x.device)._pack_kernel
        with _guard(x):
            fn[(triton.cdiv(G, R),)](x, codes, lo, hi, n, codes.numel(), G,
                                     seed & 0xFFFFFFFF, seed >> 32, BITS=bits, GS=group_size,
                                     R=R, num_warps=_NUM_WARPS, enable_fp_fusion=False)
    return codes, lo.view(torch.bfloat16), hi.view(torch.bfloat16)


def unpack(codes: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor, bits: int, group_size: int,
           n: int, dtype: torch.dtype) -> torch.Tensor:
    """``reference.unpack`` on CUDA tensors (or CPU tensors, interpreted)."""
    y = torch.empty(n, dtype=dtype, device=codes.device)
    G = lo.numel()
    if n:
        R = _groups_per_program(codes.device, group_size, G)
        fn = _device_code(codes.device)._unpack_kernel
        with _guard(codes):
            fn[(triton.cdiv(G, R),)](codes, lo.view(torch.int16), hi.view(torch.int16), y, n,
                                     codes.numel(), G, BITS=bits, GS=group_size, R=R,
                                     num_warps=_NUM_WARPS, enable_fp_fusion=False)
    return y
