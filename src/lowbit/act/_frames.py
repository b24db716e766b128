"""Which module (or lowbit functional op) is saving: frames pushed by module forward hooks.

A ``Frame`` names the innermost module whose forward is running, counts the tensors it saves
(their slots) and carries what a recognised kind needs: the input shape (norm statistics, max
pooling), the pooling window, the dropout probability.  ``KINDS`` is the one registry from
module classes to kinds.
"""

from __future__ import annotations

import enum
from typing import Optional, Tuple

import torch
from torch import nn

from ._records import PoolGeometry

__all__ = ["Kind", "Frame", "frame_for", "root_frame", "pool_geometry", "class_names"]


class Kind(enum.Enum):
    GENERIC = 0
    NORM = 1  # saves statistics of another shape than its input
    POOL = 2  # pooling: input used by shape only (and max pooling's int64 arg-max indices)
    DROPOUT = 3  # float noise of values 0 and 1 / (1 - p) on the CPU, a bool mask on GPUs


def _norm_types() -> tuple:
    types = [nn.modules.batchnorm._NormBase, nn.LayerNorm, nn.GroupNorm]
    if hasattr(nn, "RMSNorm"):
        types.append(nn.RMSNorm)
    return tuple(types)


#: Module classes lowbit recognises (checked in order, subclasses included).
KINDS = (
    (_norm_types(), Kind.NORM),
    ((nn.modules.pooling._MaxPoolNd, nn.modules.pooling._AvgPoolNd,
      nn.modules.pooling._AdaptiveAvgPoolNd), Kind.POOL),
    ((nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d), Kind.DROPOUT),
)


class Frame:
    """One running forward: module name, class names (class first, then bases), kind."""

    __slots__ = ("name", "types", "kind", "input_shape", "pool", "p", "slots", "module",
                 "auto_used")

    def __init__(self, name: str, types: Tuple[str, ...], kind: Kind = Kind.GENERIC,
                 input_shape: Optional[Tuple[int, ...]] = None,
                 pool: Optional[PoolGeometry] = None, p: float = 0.0,
                 module: Optional[nn.Module] = None):
        self.name, self.types, self.kind = name, types, kind
        self.input_shape, self.pool, self.p, self.module = input_shape, pool, p, module
        self.slots = 0
        self.auto_used = False

    def next_slot(self) -> int:
        self.slots += 1
        return self.slots - 1


def _tuple(v, d: int) -> Tuple[int, ...]:
    return tuple(v) if isinstance(v, (tuple, list)) else (v,) * d


def pool_geometry(d: int, kernel, stride, padding, dilation,
                  input_shape: Tuple[int, ...]) -> PoolGeometry:
    """Window geometry of a ``d``-dimensional max pooling over an input of ``input_shape``."""
    kernel = _tuple(kernel, d)
    stride = _tuple(stride if stride else kernel, d)  # None or () means the kernel size
    return PoolGeometry(kernel, stride, _tuple(padding, d), _tuple(dilation, d),
                        tuple(input_shape[-d:]))


_POOL_DIMS = {nn.MaxPool1d: 1, nn.MaxPool2d: 2, nn.MaxPool3d: 3}


def class_names(cls: type) -> Tuple[str, ...]:
    """The names a policy matches for modules of ``cls``: its own, then its bases'."""
    return tuple(c.__name__ for c in cls.__mro__ if c not in (nn.Module, object))


def frame_for(name: str, module: nn.Module, args: tuple) -> Frame:
    """The frame of ``module`` called with positional ``args``."""
    kind = next((k for types, k in KINDS if isinstance(module, types)), Kind.GENERIC)
    x = args[0] if args and isinstance(args[0], torch.Tensor) else None
    shape = tuple(x.shape) if x is not None else None
    frame = Frame(name, class_names(type(module)), kind, shape, module=module)
    if kind is Kind.POOL and shape is not None and isinstance(module,
                                                              nn.modules.pooling._MaxPoolNd):
        d = next((v for t, v in _POOL_DIMS.items() if isinstance(module, t)), None)
        if d is None:  # a user subclass of _MaxPoolNd of another rank: not recognised
            frame.kind = Kind.GENERIC
        else:
            frame.pool = pool_geometry(d, module.kernel_size, module.stride, module.padding,
                                       module.dilation, shape)
    elif kind is Kind.DROPOUT:
        frame.p = float(module.p)
    return frame


def root_frame() -> Frame:
    """The frame of tensors saved outside every hooked module."""
    return Frame("", ())
