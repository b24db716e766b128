"""One registry from (backend, format family) to the function that rounds a tensor.

A kernel function has the signature ``fn(x, fmt, rounding, rbits, seed) -> Tensor``: ``x`` is a
contiguous fp32 tensor (its row-major order is the logical element order of the stochastic
stream), ``seed`` is an int for ``stochastic`` and None otherwise; it returns fp32 of ``x``'s
shape.  Backends register themselves on import; ``Backend.AUTO`` picks per device.
"""

from __future__ import annotations

from typing import Callable, Dict, Optional, Tuple

import torch

from ..formats.modes import Rounding, _StrEnum

__all__ = ["Backend", "register", "kernel_for"]


class Backend(_StrEnum):
    """Which implementation rounds the tensor."""

    #: Triton on CUDA tensors, the CPU kernel on CPU tensors, the reference elsewhere.
    AUTO = "auto"
    #: The readable torch reference (the specification every fast path is tested against).
    REFERENCE = "reference"
    #: The multi-threaded CPU kernel.
    CPU = "cpu"
    #: The Triton kernel (on CPU tensors it runs in Triton's interpreter).
    TRITON = "triton"


KernelFn = Callable[[torch.Tensor, object, Rounding, int, Optional[int]], torch.Tensor]
_REGISTRY: Dict[Tuple[Backend, type], KernelFn] = {}
# Modules that register each backend's kernels, imported on first use (never at
# ``import lowbit``, so no Triton import and no compilation happen there).
_LOADERS = {
    Backend.REFERENCE: "lowbit.kernels.reference",
    Backend.CPU: "lowbit.kernels.cpu",
    Backend.TRITON: "lowbit.kernels.triton",
}


def register(backend: Backend, family: type) -> Callable[[KernelFn], KernelFn]:
    """Decorator: ``fn`` rounds tensors onto formats of ``family`` for ``backend``."""

    def deco(fn: KernelFn) -> KernelFn:
        _REGISTRY[(backend, family)] = fn
        return fn

    return deco


#: Backends whose kernels cannot load here, with the reason (asked once per process).
_UNAVAILABLE: Dict[Backend, str] = {}
# Third-party packages a backend needs: their absence makes the backend unavailable.
_EXTRA = {Backend.CPU: "cpu", Backend.TRITON: "triton"}
_REQUIRES = {Backend.CPU: ("numba", "llvmlite"), Backend.TRITON: ("triton",)}


def _load(backend: Backend) -> None:
    import importlib

    if backend in _UNAVAILABLE:
        return
    try:
        importlib.import_module(_LOADERS[backend])
    except ModuleNotFoundError as err:
        top = (err.name or "").split(".")[0]
        if err.name != _LOADERS[backend] and top not in _REQUIRES.get(backend, ()):
            raise
        _UNAVAILABLE[backend] = f"{err.name} is not installed"


def _auto(device: torch.device) -> Tuple[Backend, ...]:
    if device.type == "cuda":
        return (Backend.TRITON, Backend.REFERENCE)
    if device.type == "cpu":
        return (Backend.CPU, Backend.REFERENCE)
    return (Backend.REFERENCE,)


def kernel_for(backend: Backend, family: type, device: torch.device) -> KernelFn:
    """The kernel for ``family``: the requested backend's, or under AUTO the first available
    of the device's preferred backends (falling back to the reference)."""
    choices = _auto(device) if backend is Backend.AUTO else (backend,)
    for choice in choices:
        if (choice, family) not in _REGISTRY:
            _load(choice)
        fn = _REGISTRY.get((choice, family))
        if fn is not None:
            return fn
    why = _UNAVAILABLE.get(backend)
    raise ValueError(
        f"backend={backend.value!r} has no kernel for {family.__name__} formats in this "
        "installation" + (f" ({why}; pip install 'lowbit[{_EXTRA[backend]}]')" if why else "")
    )
