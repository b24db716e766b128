"""2-D convolution with simulated accumulation, as GEMMs over unfolded patches (im2col).

Forward: for batch item n and group g,
``y[n, g·Og + o, p] = Σ_k W[g·Og + o, k] · X[n, g, k, p]`` with ``k`` over (input channel of the
group, kh, kw) row-major (``torch.nn.functional.unfold``'s order) and ``p`` over output pixels
(oh, ow): one GEMM of batch (n, g), M = Og, K = Cg·KH·KW, N = OH·OW.

Input gradient (dgrad): the transposed convolution as a forward convolution of ``dY`` with
stride-1 zeros inserted between its pixels (stride > 1), padded by ``dilation·(KH-1) - padding``
(cropped where negative), with the kernel flipped and its in/out channels swapped: K runs over
(output channel of the group, kh', kw') row-major, every tap included (inserted and padding
zeros are exact zero products).  Weight gradient (wgrad): ``dW[g·Og + o, k] = Σ_(n, p)
dY[n, g·Og + o, p] · X[n, g, k, p]``, K over (n, p) row-major.  The bias gradient sums ``dY`` over
(n, oh, ow) row-major under the wgrad spec.
"""

from __future__ import annotations

from typing import Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F

from ...kernels.dispatch import Backend
from ...kernels.gemm import Plan
from ._args import GradSpec, backend_of, build_spec, grad_spec, operand, plan_of, seeds
from .gemm import run_batched, gemm
from .spec import Accumulate

__all__ = ["conv2d", "conv2d_forward", "conv2d_input_grad", "conv2d_weight_grad"]

Pair = Union[int, Sequence[int]]


def _pair(value: Pair, name: str, lo: int) -> Tuple[int, int]:
    pair = (value, value) if isinstance(value, int) and not isinstance(value, bool) else value
    if (not isinstance(pair, (tuple, list)) or len(pair) != 2
            or any(isinstance(v, bool) or not isinstance(v, int) or v < lo for v in pair)):
        raise ValueError(f"{name} must be an int >= {lo} or a pair of them; got {value!r}")
    return int(pair[0]), int(pair[1])


def _geometry(x_shape, w_shape, stride, padding, dilation, groups):
    """Checked (stride, padding, dilation, output size) of a convolution."""
    stride, padding = _pair(stride, "stride", 1), _pair(padding, "padding", 0)
    dilation = _pair(dilation, "dilation", 1)
    if isinstance(groups, bool) or not isinstance(groups, int) or groups < 1:
        raise ValueError(f"groups must be a positive int; got {groups!r}")
    if len(x_shape) != 4 or len(w_shape) != 4:
        raise ValueError(f"conv2d needs x (N, C, H, W) and weight (O, C/groups, KH, KW); got "
                         f"{tuple(x_shape)} and {tuple(w_shape)}")
    c, o = x_shape[1], w_shape[0]
    if c % groups or o % groups or w_shape[1] != c // groups:
        raise ValueError(f"channels do not match groups={groups}: x has {c}, weight "
                         f"{tuple(w_shape)}")
    out = tuple((x_shape[2 + i] + 2 * padding[i] - dilation[i] * (w_shape[2 + i] - 1) - 1)
                // stride[i] + 1 for i in range(2))
    if min(out) < 1:
        raise ValueError(f"the kernel {tuple(w_shape[2:])} does not fit the padded input "
                         f"{tuple(x_shape[2:])}")
    return stride, padding, dilation, out


def _patches(x: torch.Tensor, kernel, stride, padding, dilation, groups) -> torch.Tensor:
    """(N, G, Cg·KH·KW, L): the unfolded input of each group."""
    cols = F.unfold(x, kernel, dilation=dilation, padding=padding, stride=stride)
    return cols.reshape(x.shape[0], groups, -1, cols.shape[-1])


def conv2d_forward(x: torch.Tensor, w: torch.Tensor, spec: Accumulate, *, stride: Pair = 1,
                   padding: Pair = 0, dilation: Pair = 1, groups: int = 1,
                   seed: Optional[int] = None, bias: Optional[torch.Tensor] = None,
                   backend: Union[str, Backend] = "auto") -> torch.Tensor:
    """``conv2d(x, w)`` as the GEMMs of the module docstring, no autograd; with ``bias``
    (shape (O,)), ``Q_acc(y + bias_o)``, one more rounding.  fp32 result (N, O, OH, OW)."""
    if not isinstance(spec, Accumulate):
        raise TypeError(f"spec must be an Accumulate; got {type(spec).__name__}")
    x, w = operand(x, "x"), operand(w, "weight")
    stride, padding, dilation, (oh, ow) = _geometry(x.shape, w.shape, stride, padding,
                                                    dilation, groups)
    o = w.shape[0]
    if bias is not None:
        bias = operand(bias, "bias")
        if bias.shape != (o,):
            raise ValueError(f"bias must have shape ({o},); got {tuple(bias.shape)}")
        bias = bias.reshape(1, groups, o // groups, 1)  # along M of the (n, g) GEMMs
    plan = Plan.of(spec)
    (seed,) = seeds(seed, plan)
    with torch.no_grad():
        cols = _patches(x, w.shape[2:], stride, padding, dilation, groups)
        weights = w.reshape(groups, o // groups, -1)
        out = run_batched(weights, cols, plan, seed, bias, backend_of(backend))
    return out.reshape(x.shape[0], o, oh, ow)


def conv2d_input_grad(grad_out: torch.Tensor, w: torch.Tensor, input_shape: Sequence[int],
                      spec: Accumulate, *, stride: Pair = 1, padding: Pair = 0,
                      dilation: Pair = 1, groups: int = 1, seed: Optional[int] = None,
                      backend: Union[str, Backend] = "auto") -> torch.Tensor:
    """``∂L/∂x`` of ``conv2d`` given ``grad_out`` (N, O, OH, OW): the transposed convolution
    of the module docstring, no autograd; fp32 of ``input_shape``."""
    g, w = operand(grad_out, "grad_out"), operand(w, "weight")
    input_shape = tuple(int(v) for v in input_shape)
    stride, padding, dilation, out_hw = _geometry(input_shape, w.shape, stride, padding,
                                                  dilation, groups)
    if g.shape != (input_shape[0], w.shape[0], *out_hw):
        raise ValueError(f"grad_out must have shape {(input_shape[0], w.shape[0], *out_hw)}; "
                         f"got {tuple(g.shape)}")
    n, o = g.shape[:2]
    kh, kw = w.shape[2:]
    sparse = g.new_zeros(n, o, (out_hw[0] - 1) * stride[0] + 1, (out_hw[1] - 1) * stride[1] + 1)
    sparse[:, :, ::stride[0], ::stride[1]] = g
    pads = []
    for i, k in ((1, kw), (0, kh)):  # F.pad takes the last dimension first
        before = dilation[i] * (k - 1) - padding[i]
        after = input_shape[2 + i] + padding[i] - 1 - (out_hw[i] - 1) * stride[i]
        pads += [before, after]
    sparse = F.pad(sparse, pads)
    cg = input_shape[1] // groups
    flipped = (w.reshape(groups, o // groups, cg, kh, kw).transpose(1, 2)
               .flip(-1, -2).reshape(groups * cg, o // groups, kh, kw))
    return conv2d_forward(sparse, flipped, spec, stride=1, padding=0, dilation=dilation,
                          groups=groups, seed=seed, backend=backend)


def conv2d_weight_grad(x: torch.Tensor, grad_out: torch.Tensor, weight_shape: Sequence[int],
                       spec: Accumulate, *, stride: Pair = 1, padding: Pair = 0,
                       dilation: Pair = 1, groups: int = 1, seed: Optional[int] = None,
                       backend: Union[str, Backend] = "auto") -> torch.Tensor:
    """``∂L/∂weight`` of ``conv2d``: the GEMM over (n, p) of the module docstring, no
    autograd; fp32 of ``weight_shape``."""
    x, g = operand(x, "x"), operand(grad_out, "grad_out")
    weight_shape = tuple(int(v) for v in weight_shape)
    stride, padding, dilation, out_hw = _geometry(x.shape, weight_shape, stride, padding,
                                                  dilation, groups)
    o = weight_shape[0]
    if g.shape != (x.shape[0], o, *out_hw):
        raise ValueError(f"grad_out must have shape {(x.shape[0], o, *out_hw)}; got "
                         f"{tuple(g.shape)}")
    cols = _patches(x, weight_shape[2:], stride, padding, dilation, groups)  # (N, G, Kg, L)
    n, _, kg, length = cols.shape
    dy = g.reshape(n, groups, o // groups, length).permute(1, 2, 0, 3).reshape(groups, o // groups,
                                                                             n * length)
    patches = cols.permute(1, 0, 3, 2).reshape(groups, n * length, kg)
    return gemm(dy, patches, spec, seed=seed, backend=backend).reshape(weight_shape)


class _Conv2d(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, w, bias, geometry, specs, seed_list, backend):
        ctx.save_for_backward(x, w)
        ctx.geometry, ctx.specs, ctx.seeds, ctx.backend = geometry, specs, seed_list, backend
        ctx.has_bias = bias is not None
        return conv2d_forward(x, w, specs[0], **geometry, seed=seed_list[0], bias=bias,
                              backend=backend)

    @staticmethod
    def backward(ctx, grad):
        x, w = ctx.saved_tensors
        _, dspec, wspec = ctx.specs
        _, dseed, wseed, bseed = ctx.seeds
        geo = ctx.geometry
        grad_x = grad_w = grad_bias = None
        if ctx.needs_input_grad[0]:
            if dspec is None:
                grad_x = torch.nn.grad.conv2d_input(x.shape, w, grad, **geo)
            else:
                grad_x = conv2d_input_grad(grad, w, x.shape, dspec, **geo, seed=dseed,
                                           backend=ctx.backend)
        if ctx.needs_input_grad[1]:
            if wspec is None:
                grad_w = torch.nn.grad.conv2d_weight(x, w.shape, grad, **geo)
            else:
                grad_w = conv2d_weight_grad(x, grad, w.shape, wspec, **geo, seed=wseed,
                                            backend=ctx.backend)
        if ctx.has_bias and ctx.needs_input_grad[2]:
            dy = grad.transpose(0, 1).reshape(1, grad.shape[1], -1)  # (1, O, N·OH·OW)
            ones = torch.ones(1, dy.shape[-1], 1, dtype=dy.dtype, device=dy.device)
            if wspec is None:
                grad_bias = dy.sum(-1).reshape(-1)
            else:
                grad_bias = gemm(dy, ones, wspec, seed=bseed, backend=ctx.backend).reshape(-1)
        return grad_x, grad_w, grad_bias, None, None, None, None


def conv2d(x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor] = None,
           stride: Pair = 1, padding: Pair = 0, dilation: Pair = 1, groups: int = 1, *,
           mul=None, acc=None, rounding="nearest", mul_rounding=None, acc_rounding=None,
           chunk: Optional[int] = None, chunk_acc=None, fma: bool = False,
           compensated: bool = False, seed: Optional[int] = None,
           spec: Optional[Accumulate] = None, dgrad: GradSpec = "same",
           wgrad: GradSpec = "same", backend: Union[str, Backend] = "auto") -> torch.Tensor:
    """``torch.nn.functional.conv2d`` with simulated accumulation (options as ``matmul``).

    The convolution is the GEMMs of this module's docstring (K = (c, kh, kw) of one group,
    row-major; batch = (n, g)), then ``Q_acc(y + bias_o)`` with a bias.  The backward pass
    computes straight-through gradients: dgrad as the transposed convolution (K = (o, kh', kw')
    with every tap) under ``dgrad``, wgrad over (n, oh, ow) under ``wgrad``, the bias gradient
    over (n, oh, ow) under ``wgrad``; None runs plain fp32 torch ops for that gradient.  Seeds:
    forward ``seed``, dgrad ``seed + 1``, wgrad ``seed + 2``, bias gradient ``seed + 3``.
    ``padding`` takes ints (no ``"same"``/``"valid"`` strings); x is (N, C, H, W).
    """
    options = dict(mul=mul, acc=acc, rounding=rounding, mul_rounding=mul_rounding,
                   acc_rounding=acc_rounding, chunk=chunk, chunk_acc=chunk_acc, fma=fma,
                   compensated=compensated)
    spec = build_spec(spec, options, "conv2d")
    x, weight = operand(x, "x"), operand(weight, "weight")
    if bias is not None:
        bias = operand(bias, "bias")
    stride, padding, dilation, _ = _geometry(x.shape, weight.shape, stride, padding, dilation,
                                             groups)
    geometry = dict(stride=stride, padding=padding, dilation=dilation, groups=groups)
    specs = (spec, grad_spec(dgrad, spec, "dgrad"), grad_spec(wgrad, spec, "wgrad"))
    plans = tuple(plan_of(s) for s in specs)
    seed_list = seeds(seed, plans[0], plans[1], plans[2],
                      plans[2] if bias is not None else None)
    return _Conv2d.apply(x, weight, bias, geometry, specs, seed_list, backend_of(backend))
