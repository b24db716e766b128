"""``QOp``: any tensor operation (residual add, concatenation, pooling) with quantized output,
and optionally with all its tensor inputs requantized onto one shared grid.

Integer hardware adds and concatenates codes only when the operands share a scale (the
Brevitas issue about adding tensors with different scales); ``QOp`` models that with one
``input_quantizer`` applied to every tensor input, observed jointly, so every input lands on the
same grid.  The sum of codes on one grid is on that grid; ``output_quantizer`` then requantizes
the result to the output range (after the optional activation).
"""

from __future__ import annotations

from typing import Any, Callable, List, Optional

import torch
from torch import nn

from .fused import ACTIVATIONS
from .quantizers import Quantizer

__all__ = ["QOp"]


def _tensors(args: tuple) -> List[torch.Tensor]:
    found: List[torch.Tensor] = []
    for a in args:
        if isinstance(a, torch.Tensor):
            found.append(a)
        elif isinstance(a, (list, tuple)):
            found.extend(t for t in a if isinstance(t, torch.Tensor))
    return found


def _replace(args: tuple, new: List[torch.Tensor]) -> tuple:
    it = iter(new)
    out: List[Any] = []
    for a in args:
        if isinstance(a, torch.Tensor):
            out.append(next(it))
        elif isinstance(a, (list, tuple)):
            out.append(type(a)(next(it) if isinstance(t, torch.Tensor) else t for t in a))
        else:
            out.append(a)
    return tuple(out)


class QOp(nn.Module):
    """``y = output_quantizer(act(op(*Q_shared(tensor inputs), ...)))``.

    Args:
        op: the callable (``torch.add``, ``operator.add``, ``torch.cat``, a pooling function...).
        input_quantizer: one per-tensor quantizer shared by every tensor argument (top level
            or inside a list/tuple argument, as ``torch.cat``'s), or None.
        output_quantizer: quantizer of the result, or None.
        act: ReLU, ReLU6 or SiLU applied after ``op`` (before the output quantizer), or None.
    """

    def __init__(self, op: Callable[..., torch.Tensor], *,
                 input_quantizer: Optional[Quantizer] = None,
                 output_quantizer: Optional[Quantizer] = None,
                 act: Optional[nn.Module] = None) -> None:
        super().__init__()
        if not callable(op):
            raise TypeError(f"op must be callable; got {op!r}")
        for name, q in (("input_quantizer", input_quantizer),
                        ("output_quantizer", output_quantizer)):
            if q is not None and not isinstance(q, Quantizer):
                raise TypeError(f"{name} must be a Quantizer or None; got {type(q).__name__}")
        if input_quantizer is not None and getattr(input_quantizer, "axis", None) is not None:
            raise ValueError("a shared input_quantizer must be per-tensor (axis=None): inputs of "
                             "different shapes share one grid (prepare: share_inputs=False for "
                             "per-channel activation quantizers)")
        if act is not None and not isinstance(act, ACTIVATIONS):
            raise TypeError(f"act must be ReLU, ReLU6, SiLU or None; got {type(act).__name__}")
        self.op = op
        self.input_quantizer = input_quantizer
        self.output_quantizer = output_quantizer
        self.act = act

    def forward(self, *args: Any, **kwargs: Any) -> torch.Tensor:
        if self.input_quantizer is not None:
            tensors = _tensors(args)
            if tensors:
                args = _replace(args, self.input_quantizer.forward_shared(tensors))
        y = self.op(*args, **kwargs)
        if self.act is not None:
            y = self.act(y)
        return y if self.output_quantizer is None else self.output_quantizer(y)

    def extra_repr(self) -> str:
        return f"op={getattr(self.op, '__name__', repr(self.op))}"
