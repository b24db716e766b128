"""Quantized ``Linear`` and convolutions: each GEMM quantizes its own operands
(``lowbit.nn._functions``)."""

from __future__ import annotations

from typing import Optional, Tuple

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.modules.utils import _ntuple

from .._functions import conv_op, linear_op
from .._gemm import ConvParams, check_conv_accumulate
from ..recipe import Recipe
from .base import QuantizedModule, register

__all__ = ["Linear", "Conv1d", "Conv2d", "Conv3d", "ConvTranspose2d"]


@register(nn.Linear)
class Linear(QuantizedModule, nn.Linear):
    """``nn.Linear`` with every role of ``recipe`` applied (see ``lowbit.nn._functions``).

    Channel axes (channel scaling): weight, bias, their gradients: output features; input
    and grad_input: the last axis (in features); output and grad_output: the last axis.
    """

    _lowbit_gemm = True

    def __init__(self, in_features: int, out_features: int, bias: bool = True,
                 device=None, dtype=None, *, recipe: Optional[Recipe] = None, name: str = "",
                 seed: int = 0):
        super().__init__(in_features, out_features, bias, device, dtype)
        self._lowbit_init(recipe, name, seed)

    def _lowbit_layout(self, slot: str) -> Tuple[int, Optional[int]]:
        if slot in ("input", "grad_input"):
            return -1, self.in_features
        if slot in ("output", "grad_output"):
            return -1, self.out_features
        return 0, self.out_features

    def _lowbit_forward(self, x: torch.Tensor) -> torch.Tensor:
        return linear_op(self.lowbit.call(), x, self.weight, self.bias)


class _ConvNd(QuantizedModule):
    """Shared by the convolutions: the geometry as ATen takes it, padding modes, checks.

    Channel axes: weight and its gradient: output channels; bias: its only axis;
    activations and their gradients: axis 1.
    """

    _lowbit_gemm = True
    _dims = 2

    @classmethod
    def _lowbit_check(cls, module: nn.Module, recipe: Recipe) -> None:
        if recipe.accumulate is not None and recipe.accumulate.active:
            check_conv_accumulate(ConvParams(cls._dims, (), (), (), 1,
                                             module.transposed))

    def _lowbit_layout(self, slot: str) -> Tuple[int, Optional[int]]:
        if slot in ("input", "grad_input"):
            return 1, self.in_channels
        if slot in ("output", "grad_output"):
            return 1, self.out_channels
        if slot in ("weight", "grad_weight") and self.transposed:
            return 1, self.weight.shape[1]
        if slot in ("weight", "grad_weight"):
            return 0, self.out_channels
        return 0, self.out_channels

    def _params(self, x: torch.Tensor, output_padding: Tuple[int, ...] = ()) -> Tuple[
            torch.Tensor, ConvParams]:
        """``x`` padded where ATen's symmetric padding cannot express it, and the geometry."""
        n = self._dims
        padding = self.padding
        if self.padding_mode != "zeros":
            x = F.pad(x, self._reversed_padding_repeated_twice, mode=self.padding_mode)
            padding = (0,) * n
        elif isinstance(padding, str):
            if padding == "valid":
                padding = (0,) * n
            else:  # "same": stride 1; odd totals put the extra element on the right, as torch
                total = [d * (k - 1) for d, k in zip(self.dilation, self.kernel_size)]
                left = [t // 2 for t in total]
                if any(t % 2 for t in total):
                    pads = []
                    for t, lft in zip(reversed(total), reversed(left)):
                        pads += [lft, t - lft]
                    x = F.pad(x, pads)
                    left = [0] * n
                padding = tuple(left)
        return x, ConvParams(n, tuple(self.stride), tuple(padding), tuple(self.dilation),
                             self.groups, self.transposed, tuple(output_padding))

    def _lowbit_forward(self, x: torch.Tensor) -> torch.Tensor:
        x, p = self._params(x)
        return conv_op(self.lowbit.call(), x, self.weight, self.bias, p)


def _conv_class(torch_cls: type, dims: int) -> type:
    def __init__(self, *args, recipe: Optional[Recipe] = None, name: str = "", seed: int = 0,
                 **kwargs):
        torch_cls.__init__(self, *args, **kwargs)
        self._lowbit_init(recipe, name, seed)

    doc = f"``nn.{torch_cls.__name__}`` with every role of ``recipe`` applied."
    cls = type(torch_cls.__name__, (_ConvNd, torch_cls),
               {"__init__": __init__, "_dims": dims, "__doc__": doc,
                "_lowbit_forward": _ConvNd._lowbit_forward, "__module__": __name__})
    return register(torch_cls)(cls)


Conv1d = _conv_class(nn.Conv1d, 1)
Conv2d = _conv_class(nn.Conv2d, 2)
Conv3d = _conv_class(nn.Conv3d, 3)


@register(nn.ConvTranspose2d)
class ConvTranspose2d(_ConvNd, nn.ConvTranspose2d):
    """``nn.ConvTranspose2d`` with every role of ``recipe`` applied (``output_size`` as in
    torch)."""

    _dims = 2

    def __init__(self, *args, recipe: Optional[Recipe] = None, name: str = "", seed: int = 0,
                 **kwargs):
        nn.ConvTranspose2d.__init__(self, *args, **kwargs)
        self._lowbit_init(recipe, name, seed)

    def _lowbit_forward(self, x: torch.Tensor,
                        output_size: Optional[list] = None) -> torch.Tensor:
        if self.padding_mode != "zeros":
            raise ValueError("ConvTranspose2d supports only padding_mode='zeros' (as torch)")
        out_pad = self._output_padding(x, output_size, self.stride, self.padding,
                                       self.kernel_size, 2, self.dilation)
        x, p = self._params(x, tuple(_ntuple(2)(out_pad)))
        return conv_op(self.lowbit.call(), x, self.weight, self.bias, p)
