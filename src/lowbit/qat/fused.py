"""Fused QAT layers: Conv2d / Linear, optionally followed by BatchNorm and an activation
(ReLU, ReLU6, SiLU), with quantized weights and outputs and training-time BatchNorm folding.

Folding (Jacob et al. 2018 §3.2; Krishnamoorthi 2018 §3.2; torch.ao's ``ConvBn``), with
``σ = sqrt(running_var + eps)``, ``f = γ/σ`` per output channel:

* training, statistics live: ``y = BN_batch(op(x, Q(W·f)) / f + b)`` — the weight the
  quantizer sees is the folded one that will be deployed, while BatchNorm still normalises with
  the batch statistics and updates its running statistics (its own momentum and eps);
* eval, or statistics frozen: ``y = op(x, Q(W·f)) + β + (b - μ)·f`` — exactly the deployed
  integer layer.

Folding happens only while the weight quantizer is switched on (observing or quantizing); in
``bypass`` and activation-only modes the layer runs its original modules unchanged, so the
output equals the float model's bit for bit.
"""

from __future__ import annotations

from typing import Any, Optional, Tuple

import torch
from torch import nn
from torch.nn import functional as tF
from torch.nn.modules.batchnorm import _BatchNorm

from ._onnx import DQ
from .quantizers import Quantizer

__all__ = ["FusedConv2d", "FusedLinear", "ACTIVATIONS", "freeze_bn_stats", "fold_bn"]

#: Activation module types a fused layer may end with.
ACTIVATIONS = (nn.ReLU, nn.ReLU6, nn.SiLU)


def fold_bn(weight: torch.Tensor, bias: Optional[torch.Tensor],
            bn: _BatchNorm) -> Tuple[torch.Tensor, torch.Tensor]:
    """``(W·f, β + (b - μ)·f)`` with ``f = γ/sqrt(running_var + eps)`` per output channel:
    the weight and bias of a layer equal to ``layer`` followed by ``bn`` in eval mode."""
    std = torch.sqrt(bn.running_var + bn.eps)
    gamma = bn.weight if bn.affine else torch.ones_like(std)
    beta = bn.bias if bn.affine else torch.zeros_like(std)
    f = gamma / std
    b = bn.running_mean.new_zeros(()) if bias is None else bias
    w = weight * f.reshape([-1] + [1] * (weight.dim() - 1))
    return w, beta + (b - bn.running_mean) * f


def _check(value: object, types: tuple, name: str, allow_none: bool = True) -> Any:
    if value is None and allow_none:
        return None
    if not isinstance(value, types):
        names = ", ".join(t.__name__ for t in types)
        raise TypeError(f"{name} must be one of {names}{' or None' if allow_none else ''}; "
                        f"got {type(value).__name__}")
    return value


class _Fused(nn.Module):
    _layer_types: tuple = ()
    _bn_types: tuple = (_BatchNorm,)

    def __init__(self, layer: nn.Module, bn: Optional[_BatchNorm] = None,
                 act: Optional[nn.Module] = None, *,
                 weight_quantizer: Optional[Quantizer] = None,
                 output_quantizer: Optional[Quantizer] = None,
                 input_quantizer: Optional[Quantizer] = None,
                 freeze_bn_after: Optional[int] = None) -> None:
        super().__init__()
        self.layer = _check(layer, self._layer_types, "layer", allow_none=False)
        self.bn = _check(bn, self._bn_types, "bn")
        self.act = _check(act, ACTIVATIONS + (nn.Identity,), "act")
        for name, q in (("weight_quantizer", weight_quantizer),
                        ("output_quantizer", output_quantizer),
                        ("input_quantizer", input_quantizer)):
            _check(q, (Quantizer,), name)
        if bn is not None:
            out = layer.weight.shape[0]
            if bn.num_features != out or not bn.track_running_stats:
                raise ValueError(f"bn must have num_features={out} and track_running_stats=True "
                                 f"to be folded; got {bn}")
        if freeze_bn_after is not None and (isinstance(freeze_bn_after, bool)
                                            or not isinstance(freeze_bn_after, int)
                                            or freeze_bn_after < 0):
            raise ValueError(f"freeze_bn_after must be a non-negative int or None; "
                             f"got {freeze_bn_after!r}")
        self.input_quantizer = input_quantizer
        self.weight_quantizer = weight_quantizer
        self.output_quantizer = output_quantizer
        self.freeze_bn_after = freeze_bn_after
        self.register_buffer("bn_frozen", torch.tensor(False))
        self.register_buffer("steps", torch.zeros((), dtype=torch.int64))
        self._onnx_weight: Optional[tuple] = None
        if weight_quantizer is not None:
            with torch.no_grad():
                weight_quantizer.initialize(self.folded()[0])

    def _op(self, x: torch.Tensor, w: torch.Tensor, b: Optional[torch.Tensor]) -> torch.Tensor:
        raise NotImplementedError

    def folded(self) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
        """The deployed float weight and bias: BatchNorm folded in with running statistics."""
        if self.bn is None:
            return self.layer.weight, self.layer.bias
        return fold_bn(self.layer.weight, self.layer.bias, self.bn)

    def _folding(self) -> bool:
        wq = self.weight_quantizer
        return self.bn is not None and wq is not None and (wq.quantizing or wq.observing)

    def _stats_live(self) -> bool:
        if not self.training or bool(self.bn_frozen):
            return False
        if self.freeze_bn_after is not None and int(self.steps) >= self.freeze_bn_after:
            self.bn_frozen.fill_(True)
            return False
        return True

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.input_quantizer is not None:
            x = self.input_quantizer(x)
        if self._onnx_weight is not None and torch.onnx.is_in_onnx_export():
            codes, scale, zp, axis, bias = self._onnx_weight
            y = self._op(x, DQ.apply(codes, scale, zp, axis), bias)
        elif not self._folding():
            w = self.layer.weight
            y = self._op(x, w if self.weight_quantizer is None else self.weight_quantizer(w),
                         self.layer.bias)
            if self.bn is not None:
                y = self.bn(y)
        elif self._stats_live():
            y = self._fold_train(x)
            self.steps += 1
        else:
            w, b = self.folded()
            y = self._op(x, self.weight_quantizer(w), b)
        if self.act is not None:
            y = self.act(y)
        return y if self.output_quantizer is None else self.output_quantizer(y)

    def _fold_train(self, x: torch.Tensor) -> torch.Tensor:
        bn = self.bn
        std = torch.sqrt(bn.running_var + bn.eps)
        f = (bn.weight if bn.affine else torch.ones_like(std)) / std
        w = self.layer.weight
        y = self._op(x, self.weight_quantizer(w * f.reshape([-1] + [1] * (w.dim() - 1))), None)
        shape = [1, -1] + [1] * (y.dim() - 2)
        y = y / f.reshape(shape)
        if self.layer.bias is not None:
            y = y + self.layer.bias.reshape(shape)
        return bn(y)

    def extra_repr(self) -> str:
        return f"freeze_bn_after={self.freeze_bn_after}"


class FusedConv2d(_Fused):
    """``Conv2d`` [+ ``BatchNorm2d``] [+ ReLU/ReLU6/SiLU] with weight, output and optional
    input quantizers (module docstring for the folding).  Keeps the given modules (and so
    their weights) as ``layer``, ``bn`` and ``act``.

    Args:
        layer: the convolution (any padding mode, stride, dilation, groups).
        bn: a BatchNorm over its output channels (SyncBatchNorm too), or None.
        act: ReLU, ReLU6, SiLU or None.
        weight_quantizer: quantizer of the (folded) weight, initialised from it here.
        output_quantizer: quantizer of the activation output.
        input_quantizer: quantizer of the input (for a first layer).
        freeze_bn_after: training steps after which BatchNorm statistics freeze (None: never;
            ``freeze_bn_stats`` freezes them at any time).
    """

    _layer_types = (nn.Conv2d,)

    def _op(self, x: torch.Tensor, w: torch.Tensor, b: Optional[torch.Tensor]) -> torch.Tensor:
        return self.layer._conv_forward(x, w, b)


class FusedLinear(_Fused):
    """``Linear`` [+ ``BatchNorm1d`` over its features] [+ activation]; as ``FusedConv2d``."""

    _layer_types = (nn.Linear,)

    def _op(self, x: torch.Tensor, w: torch.Tensor, b: Optional[torch.Tensor]) -> torch.Tensor:
        return tF.linear(x, w, b)


def freeze_bn_stats(model: nn.Module, frozen: bool = True) -> nn.Module:
    """Freeze (or unfreeze) the BatchNorm statistics of every fused layer in ``model``: frozen
    layers train with the folded running statistics and stop updating them."""
    if not isinstance(frozen, bool):
        raise TypeError(f"frozen must be a bool; got {frozen!r}")
    for m in model.modules():
        if isinstance(m, _Fused):
            m.bn_frozen.fill_(frozen)
            if not frozen and m.freeze_bn_after is not None:
                m.steps.zero_()
    return model
