"""``Quantize``: the module for any point of a model that is not a layer's role."""

from __future__ import annotations

from typing import Optional, Tuple

import torch
from torch import nn

from .._functions import grad_quant, ste
from .._state import QuantState, eager
from ..recipe import Recipe, as_role

__all__ = ["Quantize"]


def _any_axis(slot: str) -> Tuple[int, Optional[int]]:
    return -1, None


class Quantize(nn.Module):
    """Quantize any point of a model: ``forward`` rounds the tensor (straight-through
    gradient), ``backward`` rounds the gradient flowing back through it.

    Args:
        forward: the forward role (None, a format or name, a ``Role``, a ``QuantizerRef``).
        backward: the gradient's role.
        seed: the run's seed for stochastic rounding; ``convert`` sets it and the module's
            name (seeds come from ``(seed, name, role, step)``, ``lowbit.nn.rng``).

    In ``trace`` the forward role appears as ``output`` and the backward as ``grad_output``.
    Channel scaling uses the last axis (delayed channel scaling is unavailable: the channel
    count is unknown).
    """

    def __init__(self, forward=None, backward=None, *, seed: int = 0, name: str = ""):
        super().__init__()
        self.recipe = Recipe(output=as_role(forward, "forward"),
                             grad_output=as_role(backward, "backward"))
        self.lowbit = QuantState(self.recipe, name, ("output", "grad_output"), _any_axis,
                                 seed=seed)

    def _lowbit_rename(self, name: str, seed: int) -> Tuple[str, int]:
        """Rebuild the state for ``name`` and ``seed`` (used by ``convert``); returns the
        previous pair."""
        previous = (self.lowbit.site_name, self.lowbit.seed)
        device = next((b.device for b in self.lowbit.buffers()), None)
        self.lowbit = QuantState(self.recipe, name, ("output", "grad_output"), _any_axis,
                                 seed=seed, device=device)
        return previous

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.lowbit.stochastic:  # see QuantizedModule.forward
            return eager(self._forward, x)
        return self._forward(x)

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        call = self.lowbit.call()
        return grad_quant(call, "grad_output", ste(call, "output", x))

    def extra_repr(self) -> str:
        return f"forward={self.recipe.output}, backward={self.recipe.grad_output}"
