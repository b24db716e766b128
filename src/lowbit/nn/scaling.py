"""Scaling policies: a tensor is divided by a scale before rounding and multiplied back after.

``Q_s(x) = s · Q(x / s)`` with ``s = amax / max_fmt`` (``amax = max |x|`` over the scaling
group), so the group's largest magnitude lands on the format's largest finite value (the
per-tensor "current scaling" of Micikevicius et al., 2022, "FP8 formats for deep learning",
§4.3).  ``pow2=True`` rounds the scale *up* to a power of two, ``s = 2^ceil(log2(amax /
max_fmt))``, so ``x / s`` and ``· s`` are exact and ``amax / s <= max_fmt`` still holds (the
power-of-two rounding of torchao's float8 rowwise recipe).  A group whose ``amax`` is zero or
not finite gets ``s = 1``.  ``x / s`` is clamped to ``±max_fmt`` before rounding (saturating,
as the scaled casts of Transformer Engine and torchao): ``Q_s(x) = s · Q(clamp(x / s))``.

Delayed scaling (``history=N``, NVIDIA Transformer Engine's ``DelayedScaling``) uses the
largest amax recorded over the previous ``N`` calls instead of the current one; the current
amax is recorded after use.  Until a non-zero amax has been recorded the current amax is
used.  The history is a buffer, so it lives in ``state_dict``.
"""

from __future__ import annotations

import dataclasses
from typing import Tuple

import torch

from ..formats.modes import _StrEnum

__all__ = ["Granularity", "Scaling", "group_amax", "scale_from_amax", "delayed_amax"]


class Granularity(_StrEnum):
    """Which elements share one scale."""

    #: One scale for the whole tensor.
    TENSOR = "tensor"
    #: One scale per index of the tensor's channel axis (output channels of a weight, the
    #: feature axis of an activation: each module documents its axes).
    CHANNEL = "channel"
    #: One scale per row along the reduction axis of the GEMM the tensor feeds (torchao's
    #: "rowwise"); a tensor that feeds no GEMM uses its last axis.
    ROW = "row"


@dataclasses.dataclass(frozen=True)
class Scaling:
    """A scaling policy: ``granularity`` of the amax, ``history`` length, power-of-two scales.

    Args:
        granularity: ``"tensor"``, ``"channel"`` or ``"row"`` (see ``Granularity``).
        history: 0 for dynamic scaling (the current amax); ``N >= 1`` for delayed scaling
            from the largest amax of the previous ``N`` calls.  Row scaling is dynamic only
            (the number of rows changes with the batch).
        pow2: round the scale up to a power of two.
    """

    granularity: Granularity = Granularity.TENSOR
    history: int = 0
    pow2: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "granularity",
                           Granularity.parse(self.granularity, "scaling granularity"))
        if isinstance(self.history, bool) or not isinstance(self.history, int):
            raise TypeError(f"scaling history must be an int >= 0; got {self.history!r}")
        if self.history < 0:
            raise ValueError(f"scaling history must be >= 0; got {self.history}")
        if not isinstance(self.pow2, bool):
            raise TypeError(f"scaling pow2 must be a bool; got {self.pow2!r}")
        if self.history and self.granularity is Granularity.ROW:
            raise ValueError("row scaling is dynamic only (history=0): the number of rows "
                             "changes with the batch")

    @property
    def delayed(self) -> bool:
        return self.history > 0

    def __repr__(self) -> str:
        parts = [repr(self.granularity.value)]
        if self.history:
            parts.append(f"history={self.history}")
        if self.pow2:
            parts.append("pow2=True")
        return f"Scaling({', '.join(parts)})"


def group_amax(x: torch.Tensor, granularity: Granularity, axis: int) -> torch.Tensor:
    """``max |x|`` per scaling group, shaped to broadcast against ``x``.

    ``axis`` is the channel axis (``CHANNEL``: reduce every other axis) or the reduction
    axis (``ROW``: reduce that axis only); ``TENSOR`` ignores it.
    """
    mag = x.abs()
    if granularity is Granularity.TENSOR or x.dim() == 0:
        return mag.amax().reshape((1,) * x.dim())
    axis = axis % x.dim()
    if granularity is Granularity.ROW:
        return mag.amax(dim=axis, keepdim=True)
    others: Tuple[int, ...] = tuple(d for d in range(x.dim()) if d != axis)
    return mag.amax(dim=others, keepdim=True) if others else mag


def scale_from_amax(amax: torch.Tensor, fmt_max: float, pow2: bool) -> torch.Tensor:
    """``s = amax / fmt_max`` (rounded up to ``2^k`` when ``pow2``); 1 where amax is 0 or not
    finite."""
    s = amax.float() / fmt_max
    if pow2:
        s = torch.exp2(torch.ceil(torch.log2(s)))
    ok = (amax > 0) & torch.isfinite(amax) & (s > 0) & torch.isfinite(s)
    return torch.where(ok, s, torch.ones_like(s))


def delayed_amax(history: torch.Tensor, current: torch.Tensor) -> torch.Tensor:
    """The amax a delayed scale uses: the history's maximum, or ``current`` while the history
    holds no non-zero entry; then ``current`` is pushed into ``history`` (in place).

    ``history`` has shape ``(N,) + current.shape`` flattened to ``(N, groups)``.
    """
    flat = current.reshape(-1)
    past = history.amax(dim=0)
    used = torch.where(past > 0, past, flat)
    history.copy_(torch.roll(history, 1, dims=0))
    history[0].copy_(flat)
    return used.reshape(current.shape)
