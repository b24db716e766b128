"""Functional ops that ``compress`` recognises without module hooks.

Each computes exactly what its ``torch.nn.functional`` namesake computes; inside a
``compress`` context it also tells the pack hook which op is saving, so the policy's rule for
the matching module class applies (``"ReLU"``, ``"LeakyReLU"``, ``"Dropout"``,
``"MaxPool1d/2d/3d"``: exact masks and int8 pooling indices under the default policy).  The
tensors are attributed to the enclosing module in the report.
"""

from __future__ import annotations

import contextlib
from typing import Iterator, Optional

import torch
import torch.nn.functional as F
from torch import nn

from ._frames import Frame, Kind, class_names, pool_geometry
from .context import active

__all__ = ["relu", "leaky_relu", "dropout", "max_pool1d", "max_pool2d", "max_pool3d"]


@contextlib.contextmanager
def _op(types: tuple, kind: Kind = Kind.GENERIC, **extra) -> Iterator[None]:
    sessions = list(active())
    frames = []
    for s in sessions:
        f = Frame(s.frames[-1].name, types, kind, **extra)
        s.push(f)
        frames.append(f)
    try:
        yield
    finally:
        for s, f in zip(sessions, frames):
            s.pop(f)


def relu(x: torch.Tensor, inplace: bool = False) -> torch.Tensor:
    """``F.relu``; saved as the rule for ``"ReLU"`` says (default: a 1-bit sign mask)."""
    with _op(class_names(nn.ReLU)):
        return F.relu(x, inplace=inplace)


def leaky_relu(x: torch.Tensor, negative_slope: float = 0.01,
               inplace: bool = False) -> torch.Tensor:
    """``F.leaky_relu``; saved as the rule for ``"LeakyReLU"`` says (default: a sign mask)."""
    with _op(class_names(nn.LeakyReLU)):
        return F.leaky_relu(x, negative_slope, inplace)


def dropout(x: torch.Tensor, p: float = 0.5, training: bool = True,
            inplace: bool = False) -> torch.Tensor:
    """``F.dropout``; its mask saved as the rule for ``"Dropout"`` says (default: 1 bit)."""
    with _op(class_names(nn.Dropout), Kind.DROPOUT, p=float(p)):
        return F.dropout(x, p, training, inplace)


def _max_pool(d: int, fn, x, kernel_size, stride, padding, dilation, ceil_mode,
              return_indices):
    geometry = pool_geometry(d, kernel_size, stride, padding, dilation, tuple(x.shape))
    cls = (nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d)[d - 1]
    with _op(class_names(cls), Kind.POOL, input_shape=tuple(x.shape), pool=geometry):
        return fn(x, kernel_size, stride, padding, dilation, ceil_mode=ceil_mode,
                  return_indices=return_indices)


def max_pool1d(x: torch.Tensor, kernel_size, stride: Optional[object] = None, padding=0,
               dilation=1, ceil_mode: bool = False, return_indices: bool = False):
    """``F.max_pool1d``; saved as the rule for ``"MaxPool1d"`` says."""
    return _max_pool(1, F.max_pool1d, x, kernel_size, stride, padding, dilation, ceil_mode,
                     return_indices)


def max_pool2d(x: torch.Tensor, kernel_size, stride: Optional[object] = None, padding=0,
               dilation=1, ceil_mode: bool = False, return_indices: bool = False):
    """``F.max_pool2d``; saved as the rule for ``"MaxPool2d"`` says."""
    return _max_pool(2, F.max_pool2d, x, kernel_size, stride, padding, dilation, ceil_mode,
                     return_indices)


def max_pool3d(x: torch.Tensor, kernel_size, stride: Optional[object] = None, padding=0,
               dilation=1, ceil_mode: bool = False, return_indices: bool = False):
    """``F.max_pool3d``; saved as the rule for ``"MaxPool3d"`` says."""
    return _max_pool(3, F.max_pool3d, x, kernel_size, stride, padding, dilation, ceil_mode,
                     return_indices)
