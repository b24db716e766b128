"""Granularity of quantization parameters: one per tensor, one per index of an axis
(per-channel), or one per run of ``group_size`` consecutive elements along an axis (per-group).

A parameter tensor's shape says which granularity it has:

* per-tensor (``axis=None``): one value (any shape with one element);
* per-channel (``axis=a``): shape ``(x.shape[a],)``;
* per-group (``axis=a, group_size=g``): ``x.shape`` with dimension ``a`` replaced by
  ``ceil(x.shape[a] / g)``; the last group may be shorter (ragged), nothing is padded.
"""

from __future__ import annotations

import math
from typing import List, Optional, Tuple

import torch

__all__ = ["check_axis", "check_granularity", "param_shape", "expand", "sum_to", "grouped"]


def check_axis(axis: object, ndim: int) -> int:
    """``axis`` as a non-negative int in ``[0, ndim)``.

    Raises:
        TypeError: ``axis`` is not an int.
        ValueError: ``axis`` is out of range for a tensor of ``ndim`` dimensions.
    """
    if isinstance(axis, bool) or not isinstance(axis, int):
        raise TypeError(f"axis must be an int or None; got {axis!r}")
    if not -ndim <= axis < ndim:
        raise ValueError(f"axis must be in [{-ndim}, {ndim - 1}] for a {ndim}-d tensor; got {axis}")
    return axis % ndim


def check_granularity(axis: Optional[int], group_size: Optional[int]) -> None:
    """Validate the types of ``axis`` and ``group_size`` (ranges are checked against a tensor).

    Raises:
        TypeError: a value of the wrong type.
        ValueError: ``group_size`` without ``axis`` or smaller than 1.
    """
    if axis is not None and (isinstance(axis, bool) or not isinstance(axis, int)):
        raise TypeError(f"axis must be an int or None; got {axis!r}")
    if group_size is None:
        return
    if isinstance(group_size, bool) or not isinstance(group_size, int):
        raise TypeError(f"group_size must be a positive int or None; got {group_size!r}")
    if group_size < 1:
        raise ValueError(f"group_size must be >= 1; got {group_size}")
    if axis is None:
        raise ValueError("group_size needs an axis: groups are runs of group_size elements along it")


def param_shape(shape: torch.Size, axis: Optional[int], group_size: Optional[int]) -> Tuple[int, ...]:
    """The shape of a parameter of this granularity for a tensor of ``shape``."""
    check_granularity(axis, group_size)
    if axis is None:
        return ()
    ax = check_axis(axis, len(shape))
    if group_size is None:
        return (shape[ax],)
    out = list(shape)
    out[ax] = math.ceil(shape[ax] / group_size)
    return tuple(out)


def expand(p: torch.Tensor, x: torch.Tensor, axis: Optional[int], group_size: Optional[int],
           name: str) -> torch.Tensor:
    """``p`` reshaped (per-tensor, per-channel) or repeated (per-group) so that it broadcasts
    against ``x``; differentiable, so a gradient computed against the result flows back to
    ``p`` summed over the elements each value of ``p`` covers.

    Raises:
        ValueError: ``p``'s shape does not match the granularity.
    """
    expected = param_shape(x.shape, axis, group_size)
    if axis is None:
        if p.numel() != 1:
            raise ValueError(f"{name} must hold one value for per-tensor quantization (axis=None); "
                             f"got shape {tuple(p.shape)}")
        return p.reshape(())
    if tuple(p.shape) != expected and not (group_size is None and p.numel() == expected[0]
                                           and p.dim() <= 1):
        gran = "per-channel" if group_size is None else "per-group"
        raise ValueError(f"{name} must have shape {expected} for {gran} quantization of a tensor "
                         f"of shape {tuple(x.shape)} (axis={axis}, group_size={group_size}); "
                         f"got {tuple(p.shape)}")
    ax = check_axis(axis, x.dim())
    if group_size is None:
        shape = [1] * x.dim()
        shape[ax] = x.shape[ax]
        return p.reshape(shape)
    return p.repeat_interleave(group_size, dim=ax).narrow(ax, 0, x.shape[ax])


def sum_to(grad: torch.Tensor, shape: torch.Size) -> torch.Tensor:
    """``grad`` summed over the dimensions that ``shape`` broadcast (the adjoint of
    broadcasting a tensor of ``shape`` to ``grad.shape``)."""
    if tuple(grad.shape) == tuple(shape):
        return grad
    lead = grad.dim() - len(shape)
    dims: List[int] = list(range(lead))
    dims += [lead + i for i, n in enumerate(shape) if n == 1 and grad.shape[lead + i] != 1]
    out = grad.sum(dim=dims, keepdim=True) if dims else grad
    return out.reshape(shape)


def grouped(x: torch.Tensor, axis: Optional[int], group_size: Optional[int],
            pad: float) -> torch.Tensor:
    """A view (or padded copy) of ``x`` whose last dimension holds the elements that share one
    parameter; the leading dimensions have the parameter's shape.

    Per-tensor gives shape ``(1, numel)``; per-channel ``(C, numel / C)``; per-group
    ``(*param_shape, group_size)`` with the ragged last group filled with ``pad`` (choose a
    value that cannot change the statistic, e.g. ``+inf`` for a minimum).
    """
    if axis is None:
        return x.reshape(1, -1)
    ax = check_axis(axis, x.dim())
    if group_size is None:
        return x.movedim(ax, 0).reshape(x.shape[ax], -1)
    n = x.shape[ax]
    groups = math.ceil(n / group_size)
    moved = x.movedim(ax, -1)
    if groups * group_size != n:
        moved = torch.nn.functional.pad(moved, (0, groups * group_size - n), value=pad)
    blocks = moved.reshape(*moved.shape[:-1], groups, group_size)
    # blocks: (..., groups, g) with the axis' groups last but one; bring groups back to ``ax``.
    return blocks.movedim(-2, ax)
