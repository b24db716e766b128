"""Reference rounding onto block-scaled formats (``BlockFormat``).

Blocks are formed by a view of the tensor in which every block is a set of trailing
dimensions: the block axes are moved last, each padded with zeros to a multiple of its block
size (zeros change no block maximum, so ragged last blocks need nothing from the caller) and
split into (blocks, size).  The stochastic stream's words follow the elements through the
same moves, so each element keeps its logical index.
"""

from __future__ import annotations

from typing import List, Optional, Tuple

import torch

from ...formats import BlockFormat, FloatFormat, Rounding, ScaleRule
from .scalar import quantize_exp, quantize_fixed, quantize_float
from .blockscale import amax_scaled, scale_exponent

__all__ = ["quantize_block", "block_view", "normalize_axes"]

_ELEMENT = {FloatFormat: quantize_float}


def _element_fn(fmt: BlockFormat):
    return _ELEMENT.get(type(fmt.element), quantize_fixed)


def normalize_axes(fmt: BlockFormat, ndim: int) -> Tuple[Optional[Tuple[int, ...]], Tuple[int, ...]]:
    """(block sizes or None, block axes as non-negative ints) for a tensor of ``ndim`` dims."""
    if fmt.axis is None:
        return None, tuple(range(ndim))
    axes = fmt.axis if isinstance(fmt.axis, tuple) else (fmt.axis,)
    norm = []
    for a in axes:
        if not -ndim <= a < ndim:
            raise ValueError(f"block axis {a} is out of range for a tensor of {ndim} dims")
        norm.append(a % ndim)
    if len(set(norm)) != len(norm):
        raise ValueError(f"block axes {axes} name one dimension twice for {ndim} dims")
    if fmt.block_size is None:
        return None, tuple(norm)
    sizes = fmt.block_size if isinstance(fmt.block_size, tuple) else (fmt.block_size,)
    return tuple(sizes), tuple(norm)


def block_view(t: torch.Tensor, sizes: Optional[Tuple[int, ...]], axes: Tuple[int, ...]):
    """Move ``axes`` last; with ``sizes``, pad and split each into (n, size).  Returns the view
    (blocks reduce over the dims listed second) and an ``undo`` function."""
    rest = [d for d in range(t.dim()) if d not in axes]
    perm = rest + list(axes)
    moved = t.permute(perm)
    lead = list(moved.shape[: len(rest)])
    if sizes is None:
        red = tuple(range(len(rest), t.dim()))
        inv = _inverse(perm)
        return moved, red, lambda y: y.permute(inv)
    full = list(moved.shape[len(rest):])
    padded = [-(-n // k) * k for n, k in zip(full, sizes)]
    pad: List[int] = []
    for n, p in reversed(list(zip(full, padded))):
        pad += [0, p - n]
    moved = torch.nn.functional.pad(moved, pad) if any(pad) else moved
    split: List[int] = []
    for p, k in zip(padded, sizes):
        split += [p // k, k]
    view = moved.reshape(lead + split)
    red = tuple(len(lead) + 2 * i + 1 for i in range(len(sizes)))
    inv = _inverse(perm)

    def undo(y: torch.Tensor) -> torch.Tensor:
        y = y.reshape(lead + padded)
        y = y[tuple([slice(None)] * len(lead) + [slice(0, n) for n in full])]
        return y.permute(inv)

    return view, red, undo


def _inverse(perm: List[int]) -> List[int]:
    inv = [0] * len(perm)
    for i, p in enumerate(perm):
        inv[p] = i
    return inv


def quantize_block(x: torch.Tensor, fmt: BlockFormat, rounding: Rounding,
                   words: Optional[torch.Tensor], rbits: int) -> torch.Tensor:
    """Round ``x`` onto ``fmt``: per block, scale from the block amax, round each element
    of ``x / X`` onto the element format, return ``X · P`` (see ``BlockFormat``)."""
    sizes, axes = normalize_axes(fmt, x.dim())
    view, red, undo = block_view(x, sizes, axes)
    wview = block_view(words, sizes, axes)[0] if words is not None else None
    amax = view.abs().amax(dim=red, keepdim=True) if view.numel() else view
    bad = ~torch.isfinite(view).all(dim=red, keepdim=True)  # NaN or Inf: the block is NaN
    elem = _element_fn(fmt)
    if fmt.scale_rule is ScaleRule.AMAX:
        y = amax_scaled(view, amax, fmt, rounding, wview, rbits, elem)
    else:
        k = scale_exponent(amax, fmt)
        y = elem(view.contiguous(), fmt.element, rounding, wview, rbits,
                 shift=k.expand(view.shape).contiguous())
    y = torch.where(bad, torch.full_like(y, float("nan")), y)
    return undo(y).contiguous()

