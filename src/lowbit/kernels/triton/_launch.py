"""Launching a kernel: which copy of the device code runs, the grid, the device, the stream.

The device code (``_jit``) is loaded twice.  CUDA tensors run the compiled copy (the package
``_jit`` itself); CPU tensors run a copy loaded with ``TRITON_INTERPRET=1`` through an alias
package, so Triton's interpreter serves exactly the CPU tensors: no environment variable has to
be set before Triton is imported, and the interpreter never leaks into the compiled kernels (or
other Triton users) of the same process.  This works because the device code calls no jitted
Triton library function, whose mode Triton fixes at its own import.  With ``TRITON_INTERPRET=1``
set for the whole process, both copies are interpreted.
"""

import importlib
import importlib.machinery
import importlib.util
import os
import sys
from types import ModuleType
from typing import Dict, Optional, Tuple

import torch
import triton

from ...formats import Rounding
from ._jit.core import ROUNDING_CODE

__all__ = ["launch", "kernel", "key_of", "device_guard", "BLOCK", "NUM_WARPS",
           "INTERPRETER_BLOCK"]

#: Elements per program of the elementwise kernels (a multiple of 4: whole Philox groups).
BLOCK = 2048
#: Warps per program: 16 elements per thread, four 16-byte vectors.
NUM_WARPS = 4
#: Elements per program in the interpreter, whose cost is per operation and program: larger
#: tiles make small tensors one program (the stream does not depend on the tiling).
INTERPRETER_BLOCK = 16384

_COMPILED = __package__ + "._jit"
_INTERPRETED = __package__ + "._jit_interpreted"


def interpreted_package(name: str, jit_dir: str, modules: Tuple[str, ...]) -> str:
    """Load ``name``, an alias package over the directory ``jit_dir``, with Triton's interpreter
    switched on while ``modules`` execute (``@triton.jit`` reads ``TRITON_INTERPRET`` then), so
    the same kernel sources run compiled on CUDA tensors and interpreted on CPU tensors."""
    if name not in sys.modules:
        spec = importlib.machinery.ModuleSpec(name, None, is_package=True)
        spec.submodule_search_locations = [jit_dir]
        package = importlib.util.module_from_spec(spec)
        saved = os.environ.get("TRITON_INTERPRET")
        os.environ["TRITON_INTERPRET"] = "1"
        sys.modules[name] = package
        try:
            for module in modules:
                importlib.import_module(f"{name}.{module}")
        except BaseException:
            for loaded in [m for m in sys.modules if m.startswith(name)]:
                del sys.modules[loaded]
            raise
        finally:
            if saved is None:
                del os.environ["TRITON_INTERPRET"]
            else:
                os.environ["TRITON_INTERPRET"] = saved
    return name


def _interpreted_package() -> str:
    """The interpreted copy of this backend's ``_jit`` package."""
    return interpreted_package(_INTERPRETED, os.path.join(os.path.dirname(__file__), "_jit"),
                               ("core", "scalar", "block"))


def _module(device: torch.device, name: str) -> ModuleType:
    if device.type == "cuda":
        return importlib.import_module(f"{_COMPILED}.{name}")
    if device.type == "cpu":
        return importlib.import_module(f"{_interpreted_package()}.{name}")
    raise ValueError(f"the Triton backend takes CUDA tensors (CPU tensors in Triton's "
                     f"interpreter); got a {device.type} tensor")


def kernel(device: torch.device, module: str, name: str):
    """The jitted function ``name`` of ``_jit.<module>`` for tensors on ``device``."""
    return getattr(_module(device, module), name)


def key_of(seed: Optional[int]) -> Tuple[int, int]:
    """The Philox key (k0, k1) of a 64-bit seed (``lowbit.kernels.philox``)."""
    seed = 0 if seed is None else seed
    return seed & 0xFFFFFFFF, seed >> 32


def device_guard(x: torch.Tensor):
    """The context of a launch on ``x``: for CUDA, ``x``'s device made current (Triton launches
    on the current device, on torch's current stream of it); for the interpreter, numpy's
    floating-point warnings silenced (fp32 overflow to Inf and NaN arithmetic are IEEE results
    the kernels rely on, as the GPU does)."""
    if x.device.type == "cuda":
        return torch.cuda.device(x.device)
    import numpy

    return numpy.errstate(all="ignore")


def launch(name: str, x: torch.Tensor, rounding: Rounding, rbits: int, seed: Optional[int],
           params: Tuple[int, ...], flags: Dict[str, bool]) -> torch.Tensor:
    """Run the elementwise kernel ``_jit.scalar.<name>(x, y, n, seed_lo, seed_hi, rbits,
    *params, ROUNDING, **flags, ROWS)`` on the contiguous fp32 tensor ``x``; return ``y``."""
    if x.dtype != torch.float32 or not x.is_contiguous():
        raise ValueError("the Triton kernels take contiguous float32 tensors")
    fn = kernel(x.device, "scalar", name)
    y = torch.empty_like(x)
    n = x.numel()
    if n == 0:
        return y
    if x.is_cuda:
        block = BLOCK
    else:  # the interpreter's cost grows with the tile, not with the work: no larger than needed
        block = min(INTERPRETER_BLOCK, max(triton.next_power_of_2(n), 16))
    with device_guard(x):
        fn[(triton.cdiv(n, block),)](x, y, n, *key_of(seed), rbits, *params,
                                     ROUNDING=ROUNDING_CODE[rounding], ROWS=block // 4,
                                     num_warps=NUM_WARPS, **flags)
    return y
