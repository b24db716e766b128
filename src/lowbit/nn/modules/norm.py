"""Quantized normalisation layers: ``BatchNorm1d/2d/3d`` and ``LayerNorm``.

Roles: ``input`` x, ``weight`` γ, ``bias`` β, ``output`` y, ``grad_output`` dL/dy,
``grad_input`` dL/dx, ``grad_weight`` dL/dγ and dL/dβ, and two WAGEUBN roles (Yang et al.,
2020, "Training high-performance and large-scale deep neural networks with full 8-bit
integers", §3.4): ``stats`` (the mean ``μ``, the standard deviation ``σ = sqrt(var + eps)``
and, for batch norm, the running mean and variance after each update) and ``normalized``
(``x̂``).  With either of those set the layer computes

    μ, var = batch (or running) statistics of Q_in(x);   σ = sqrt(var + eps)
    x̂ = Q_norm((Q_in(x) - Q_stats(μ)) / Q_stats(σ));     y = Q_out(Q_w(γ) · x̂ + Q_b(β))

in plain torch ops (autograd differentiates it; every Q is straight-through); otherwise it
calls ``F.batch_norm`` / ``F.layer_norm`` on the quantized operands, so with every format at
fp32 it equals PyTorch exactly.  Gradient roles quantize the gradients where they cross
those points.  Channel axes: axis 1 of activations (batch norm) or the last axis (layer
norm); the only axis of γ, β and the statistics.
"""

from __future__ import annotations

from typing import Optional, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from .._functions import grad_quant, ste
from .._state import Call
from ..recipe import Recipe
from .base import GEMM_SLOTS, QuantizedModule, register

__all__ = ["BatchNorm1d", "BatchNorm2d", "BatchNorm3d", "LayerNorm"]

_NORM_SLOTS = GEMM_SLOTS + ("stats", "normalized")


def _affine(call: Call, weight, bias):
    """Q_w(γ), Q_b(β) whose gradients are quantized by grad_weight."""
    w = ste(call, "weight", grad_quant(call, "grad_weight", weight))
    b = ste(call, "bias", grad_quant(call, "grad_bias", bias))
    return w, b


def _decomposed(call: Call, x, mean, var, eps, weight, bias, stat_shape, param_shape):
    """x̂ = Q_norm((x - Q_stats(μ)) / Q_stats(σ)); y = γ x̂ + β (γ, β already quantized)."""
    mean_q = ste(call, "stats", mean, "mean").reshape(stat_shape)
    std_q = ste(call, "stats", torch.sqrt(var + eps), "std").reshape(stat_shape)
    y = ste(call, "normalized", (x - mean_q) / std_q)
    if weight is not None:
        y = y * weight.reshape(param_shape)
    if bias is not None:
        y = y + bias.reshape(param_shape)
    return y


class _BatchNorm(QuantizedModule):
    _lowbit_slots = _NORM_SLOTS
    _lowbit_default = False

    def _lowbit_layout(self, slot: str) -> Tuple[int, Optional[int]]:
        axis = 1 if slot in ("input", "output", "grad_output", "grad_input") else 0
        return axis, self.num_features

    def _factor(self) -> float:
        """The running-average factor, exactly as ``nn.BatchNorm`` computes it."""
        factor = 0.0 if self.momentum is None else self.momentum
        if self.training and self.track_running_stats and self.num_batches_tracked is not None:
            self.num_batches_tracked.add_(1)
            factor = (1.0 / float(self.num_batches_tracked) if self.momentum is None
                      else self.momentum)
        return factor

    def _lowbit_forward(self, x: torch.Tensor) -> torch.Tensor:
        self._check_input_dim(x)
        call = self.lowbit.call()
        x = ste(call, "input", grad_quant(call, "grad_input", x))
        w, b = _affine(call, self.weight, self.bias)
        factor = self._factor()
        use_batch = self.training or (self.running_mean is None and self.running_var is None)
        track = not self.training or self.track_running_stats
        rm = self.running_mean if track else None
        rv = self.running_var if track else None
        if call.has("stats") or call.has("normalized"):
            y = self._wageubn(call, x, w, b, use_batch, rm, rv, factor)
        else:
            y = F.batch_norm(x, rm, rv, w, b, use_batch, factor, self.eps)
        return grad_quant(call, "grad_output", ste(call, "output", y))

    def _wageubn(self, call, x, w, b, use_batch, rm, rv, factor) -> torch.Tensor:
        dims = [0] + list(range(2, x.dim()))
        shape = [1, -1] + [1] * (x.dim() - 2)
        if use_batch:
            mean = x.mean(dim=dims)
            var = x.var(dim=dims, unbiased=False)
            if rm is not None:
                n = x.numel() / x.shape[1]
                with torch.no_grad():
                    rm.mul_(1 - factor).add_(mean.detach() * factor)
                    rv.mul_(1 - factor).add_(var.detach() * (factor * n / max(n - 1, 1)))
                    rm.copy_(call.q("stats", rm, "running_mean"))
                    rv.copy_(call.q("stats", rv, "running_var"))
        else:
            mean, var = rm, rv
        return _decomposed(call, x, mean, var, self.eps, w, b, shape, shape)


def _bn_class(torch_cls: type) -> type:
    def __init__(self, *args, recipe: Optional[Recipe] = None, name: str = "", seed: int = 0,
                 **kwargs):
        torch_cls.__init__(self, *args, **kwargs)
        self._lowbit_init(recipe, name, seed)

    doc = (f"``nn.{torch_cls.__name__}`` with every role of ``recipe`` applied, WAGEUBN's "
           "``stats`` and ``normalized`` included (see ``lowbit.nn.modules.norm``).")
    cls = type(torch_cls.__name__, (_BatchNorm, torch_cls),
               {"__init__": __init__, "__doc__": doc, "__module__": __name__,
                "_lowbit_forward": _BatchNorm._lowbit_forward})
    return register(torch_cls)(cls)


BatchNorm1d = _bn_class(nn.BatchNorm1d)
BatchNorm2d = _bn_class(nn.BatchNorm2d)
BatchNorm3d = _bn_class(nn.BatchNorm3d)


@register(nn.LayerNorm)
class LayerNorm(QuantizedModule, nn.LayerNorm):
    """``nn.LayerNorm`` with every role of ``recipe`` applied (see the module docstring)."""

    _lowbit_slots = _NORM_SLOTS
    _lowbit_default = False

    def __init__(self, *args, recipe: Optional[Recipe] = None, name: str = "", seed: int = 0,
                 **kwargs):
        nn.LayerNorm.__init__(self, *args, **kwargs)
        self._lowbit_init(recipe, name, seed)

    def _lowbit_layout(self, slot: str) -> Tuple[int, Optional[int]]:
        n = self.normalized_shape[-1] if len(self.normalized_shape) == 1 else None
        if slot in ("input", "output", "grad_output", "grad_input"):
            return -1, n
        return 0, n

    def _lowbit_forward(self, x: torch.Tensor) -> torch.Tensor:
        call = self.lowbit.call()
        x = ste(call, "input", grad_quant(call, "grad_input", x))
        w, b = _affine(call, self.weight, getattr(self, "bias", None))
        if call.has("stats") or call.has("normalized"):
            dims = list(range(x.dim() - len(self.normalized_shape), x.dim()))
            mean = x.mean(dim=dims, keepdim=True)
            var = x.var(dim=dims, unbiased=False, keepdim=True)
            y = _decomposed(call, x, mean, var, self.eps, w, b, mean.shape,
                            self.normalized_shape)
        else:
            y = F.layer_norm(x, self.normalized_shape, w, b, self.eps)
        return grad_quant(call, "grad_output", ste(call, "output", y))
