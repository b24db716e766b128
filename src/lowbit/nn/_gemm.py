"""Every GEMM of a quantized module, routed to plain torch ops or, when the recipe gives an
``Accumulate`` spec for that GEMM, to the simulated-accumulation primitives of
``lowbit.ops.accumulate`` (``gemm``, ``conv2d_forward``, ``conv2d_input_grad``,
``conv2d_weight_grad``; imported on first use).

The torch path calls the same ATen ops autograd uses for ``F.linear``, ``torch.matmul`` and
``F.conv*d`` (``mm``, ``convolution``, ``convolution_backward``), so with every format at
fp32 the results equal plain PyTorch's bit for bit.
"""

from __future__ import annotations

import dataclasses
from types import ModuleType
from typing import Optional, Sequence, Tuple

import torch
import torch.nn.functional as F

from ..ops.accumulate.spec import Accumulate

__all__ = ["ConvParams", "linear", "linear_dgrad", "linear_wgrad", "matmul", "conv",
           "conv_dgrad", "conv_wgrad", "conv_bias_grad", "primitives", "check_conv_accumulate"]

_NAMES = ("gemm", "conv2d_forward", "conv2d_input_grad", "conv2d_weight_grad")


def primitives() -> ModuleType:
    """``lowbit.ops.accumulate`` with its autograd-free primitives."""
    from ..ops import accumulate

    missing = [n for n in _NAMES if not hasattr(accumulate, n)]
    if missing:
        raise NotImplementedError(
            f"this installation of lowbit.ops.accumulate lacks {missing}: simulated "
            "accumulation (Recipe.accumulate) is unavailable; set accumulate=None"
        )
    return accumulate


# -- linear and matmul -------------------------------------------------------------------------
def _acc_kwargs(seed: Optional[int]) -> dict:
    return {} if seed is None else {"seed": seed}


def linear(x: torch.Tensor, w: torch.Tensor, b: Optional[torch.Tensor],
           spec: Optional[Accumulate], seed: Optional[int] = None) -> torch.Tensor:
    """``y = x Wᵀ + b`` for ``x`` (..., K), ``W`` (N, K); with a spec the bias is added in
    fp32 after the simulated accumulation."""
    if spec is None:
        return F.linear(x, w, b)
    y = primitives().gemm(x.reshape(-1, x.shape[-1]), w.t(), spec, **_acc_kwargs(seed))
    y = y.reshape(*x.shape[:-1], w.shape[0])
    return y if b is None else y + b


def linear_dgrad(g2: torch.Tensor, w: torch.Tensor, spec: Optional[Accumulate],
                 seed: Optional[int] = None) -> torch.Tensor:
    """``dx = g W`` for ``g`` (M, N), ``W`` (N, K)."""
    if spec is None:
        return g2.mm(w)
    return primitives().gemm(g2, w, spec, **_acc_kwargs(seed))


def linear_wgrad(g2: torch.Tensor, x2: torch.Tensor, spec: Optional[Accumulate],
                 seed: Optional[int] = None) -> torch.Tensor:
    """``dW = gᵀ x`` for ``g`` (M, N), ``x`` (M, K)."""
    if spec is None:
        return g2.t().mm(x2)
    return primitives().gemm(g2.t(), x2, spec, **_acc_kwargs(seed))


def matmul(a: torch.Tensor, b: torch.Tensor, spec: Optional[Accumulate],
           seed: Optional[int] = None) -> torch.Tensor:
    """``a @ b`` for ``a`` (..., M, K), ``b`` (..., K, N) with broadcast batch axes."""
    if spec is None:
        return torch.matmul(a, b)
    return primitives().gemm(a, b, spec, **_acc_kwargs(seed))


# -- convolution -------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class ConvParams:
    """A convolution's geometry as ATen's ``convolution`` takes it (explicit padding)."""

    dims: int
    stride: Tuple[int, ...]
    padding: Tuple[int, ...]
    dilation: Tuple[int, ...]
    groups: int
    transposed: bool = False
    output_padding: Tuple[int, ...] = ()

    def aten_args(self) -> tuple:
        out_pad = self.output_padding or (0,) * self.dims
        return (list(self.stride), list(self.padding), list(self.dilation), self.transposed,
                list(out_pad), self.groups)

    def geometry(self) -> dict:
        return {"stride": self.stride, "padding": self.padding, "dilation": self.dilation,
                "groups": self.groups}


def check_conv_accumulate(p: ConvParams) -> None:
    """Simulated accumulation exists for 1-D and 2-D convolutions and 2-D transposed ones."""
    if p.dims > 2 or (p.transposed and p.dims != 2):
        kind = f"ConvTranspose{p.dims}d" if p.transposed else f"Conv{p.dims}d"
        raise NotImplementedError(f"simulated accumulation is not available for {kind}; "
                                  "override the module's accumulate to None")


def _as2d(p: ConvParams) -> ConvParams:
    if p.dims == 2:
        return p
    return dataclasses.replace(p, dims=2, stride=(1,) + p.stride, padding=(0,) + p.padding,
                               dilation=(1,) + p.dilation,
                               output_padding=(0,) + p.output_padding if p.output_padding
                               else ())


def conv(x: torch.Tensor, w: torch.Tensor, b: Optional[torch.Tensor], p: ConvParams,
         spec: Optional[Accumulate], seed: Optional[int] = None) -> torch.Tensor:
    """The forward convolution (or transposed convolution) of ``x`` with ``W``."""
    if spec is None:
        return torch.ops.aten.convolution(x, w, b, *p.aten_args())
    check_conv_accumulate(p)
    acc, q, kw = primitives(), _as2d(p), _acc_kwargs(seed)
    x2, w2 = (x, w) if p.dims == 2 else (x.unsqueeze(2), w.unsqueeze(2))
    if p.transposed:
        # A transposed convolution is the input gradient of the convolution it transposes.
        n, _, *spatial = x2.shape
        out = [(s - 1) * st - 2 * pd + dl * (k - 1) + op + 1 for s, st, pd, dl, k, op in
               zip(spatial, q.stride, q.padding, q.dilation, w2.shape[2:],
                   q.output_padding or (0, 0))]
        shape = (n, w2.shape[1] * q.groups, *out)
        y = acc.conv2d_input_grad(x2, w2, shape, spec, **q.geometry(), **kw)
    else:
        y = acc.conv2d_forward(x2, w2, spec, **q.geometry(), **kw)
    y = y if p.dims == 2 else y.squeeze(2)
    if b is not None:
        y = y + b.reshape(1, -1, *([1] * p.dims))
    return y


def conv_dgrad(g: torch.Tensor, w: torch.Tensor, x_like: torch.Tensor, p: ConvParams,
               spec: Optional[Accumulate], seed: Optional[int] = None) -> torch.Tensor:
    """``dL/dx`` of the convolution; ``x_like`` supplies the input's shape only."""
    if spec is None:
        x0 = g.new_empty(()).expand(x_like.shape)  # shape only, in the operands' dtype
        out = torch.ops.aten.convolution_backward(g, x0, w, None, *p.aten_args(),
                                                  [True, False, False])
        return out[0]
    check_conv_accumulate(p)
    acc, q, kw = primitives(), _as2d(p), _acc_kwargs(seed)
    g2, w2 = (g, w) if p.dims == 2 else (g.unsqueeze(2), w.unsqueeze(2))
    shape = x_like.shape if p.dims == 2 else (x_like.shape[0], x_like.shape[1], 1,
                                              x_like.shape[2])
    if p.transposed:
        dx = acc.conv2d_forward(g2, w2, spec, **q.geometry(), **kw)
    else:
        dx = acc.conv2d_input_grad(g2, w2, list(shape), spec, **q.geometry(), **kw)
    return dx if p.dims == 2 else dx.squeeze(2)


def conv_bias_grad(g: torch.Tensor, x_like: torch.Tensor, w_like: torch.Tensor,
                   p: ConvParams) -> torch.Tensor:
    """``dL/db``: the sum of ``g`` over every axis but the channels, as ATen sums it (not a
    GEMM, so never simulated)."""
    x0 = g.new_empty(()).expand(x_like.shape)
    w0 = g.new_empty(()).expand(w_like.shape)
    return torch.ops.aten.convolution_backward(g, x0, w0, [g.shape[1]], *p.aten_args(),
                                               [False, False, True])[2]


def conv_wgrad(g: torch.Tensor, x: torch.Tensor, w_shape: Sequence[int], p: ConvParams,
               spec: Optional[Accumulate], seed: Optional[int] = None) -> torch.Tensor:
    """``dL/dW`` of the convolution."""
    if spec is None:
        w_like = g.new_empty(()).expand(*w_shape)
        out = torch.ops.aten.convolution_backward(g, x, w_like, None, *p.aten_args(),
                                                  [False, True, False])
        return out[1]
    check_conv_accumulate(p)
    acc, q, kw = primitives(), _as2d(p), _acc_kwargs(seed)
    g2, x2 = (g, x) if p.dims == 2 else (g.unsqueeze(2), x.unsqueeze(2))
    shape = list(w_shape) if p.dims == 2 else [w_shape[0], w_shape[1], 1, w_shape[2]]
    if p.transposed:
        # The roles of input and gradient swap for the convolution being transposed.
        dw = acc.conv2d_weight_grad(g2, x2, shape, spec, **q.geometry(), **kw)
    else:
        dw = acc.conv2d_weight_grad(x2, g2, shape, spec, **q.geometry(), **kw)
    return dw if p.dims == 2 else dw.squeeze(2)
