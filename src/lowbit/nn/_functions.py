"""Custom autograd functions: each GEMM of training quantizes its own operands.

For ``y = x Wᵀ + b`` (``x`` of shape (..., K) flattened to (M, K), ``W`` (N, K)):

* forward ``y = Q_out(Q_in(x) Q_w(W)ᵀ + Q_b(b))``, blocks along K (axis -1 of both);
* dgrad ``dx = Q_gi(Q_go(g) Q_w(W))``, blocks along N (axis -1 of g, axis 0 of W);
* wgrad ``dW = Q_gw(Q_go(g)ᵀ Q_in(x))`` and ``db = Q_gw(Σ_m Q_go(g))``, blocks along M
  (axis 0 of both).

Each GEMM quantizes the saved high-precision tensor along its own reduction axis
(microxcaling, "Microscaling data formats for deep learning", Rouhani et al., 2023); where
the result does not depend on the axis (scalar formats without row scaling) the forward's
quantized tensor is saved and reused.  Gradients are those of the quantized GEMM with a
straight-through estimator through each Q (Bengio et al., 2013): with every role unset or
``fp32`` they equal PyTorch's exactly.  Convolutions and ``matmul`` follow the same pattern
with their own axes (see each function).

A recipe's ``wgrad_transform`` (NVFP4's random Hadamard transform) makes the wgrad GEMM
``dW = Q_gw((Q_go(R g))ᵀ Q_in(R x))`` with ``R`` the blockwise orthogonal transform along the
reduction axis (zero-padded to whole blocks; ``lowbit.ops.hadamard``); ``quantize_wgrad=False``
drops ``Q_go`` and ``Q_in`` there.  Either way the forward saves the high-precision input and
the bias gradient sums the untransformed ``g``.
"""

from __future__ import annotations

import functools
from typing import Optional, Tuple

import torch

from ..ops.hadamard import hadamard, random_signs
from . import _gemm
from ._gemm import ConvParams
from ._state import Call
from .rng import derive_seed, stable_key

__all__ = ["linear_op", "conv_op", "matmul_op", "ste", "grad_quant"]

FWD, DGRAD, WGRAD, BWD = "forward", "dgrad", "wgrad", "backward"


def _shared_grad(call: Call, g: torch.Tensor, used: bool) -> Optional[torch.Tensor]:
    """``Q_go(g)`` once for both backward GEMMs when the format allows it."""
    if used and call.reusable("grad_output"):
        return call.q("grad_output", g, BWD)
    return None


def _operand(call: Call, slot: str, saved: torch.Tensor, gemm: str, axis: int) -> torch.Tensor:
    """The saved tensor as an operand of ``gemm``: the forward's quantization when reusable,
    else the high-precision tensor quantized along ``axis``."""
    return saved if call.reusable(slot) else call.q(slot, saved, gemm, axis)


def _save(call: Call, slot: str, x: torch.Tensor, xq: torch.Tensor) -> torch.Tensor:
    if slot == "input" and _wgrad_special(call):
        return x  # the wgrad GEMM transforms or keeps the high-precision input
    return xq if call.reusable(slot) else x


def _wgrad_special(call: Call) -> bool:
    recipe = call.site.recipe
    return recipe.wgrad_transform is not None or not recipe.quantize_wgrad


_HADAMARD_KEY = stable_key("", "hadamard", "wgrad")


@functools.lru_cache(maxsize=64)
def _signs(seed: int, block: int, device: torch.device) -> torch.Tensor:
    """The run's sign vector (``WgradTransform``): one per run, shared by layers and steps."""
    return random_signs(derive_seed(seed, _HADAMARD_KEY, 0), block, device=device)


def _pad(x: torch.Tensor, axis: int, block: int) -> torch.Tensor:
    """``x`` zero-padded along ``axis`` to a multiple of ``block``."""
    extra = -x.shape[axis] % block
    if not extra:
        return x
    shape = list(x.shape)
    shape[axis] = extra
    return torch.cat([x, x.new_zeros(shape)], dim=axis)


def _wgrad_operands(call: Call, g: torch.Tensor, x: torch.Tensor, axis: int,
                    shared: Optional[torch.Tensor]) -> Tuple[torch.Tensor, torch.Tensor]:
    """``(g, x)`` as the wgrad GEMM's operands, reduced along ``axis`` of both: quantized
    along that axis, after the recipe's ``wgrad_transform``, or left in high precision."""
    if not _wgrad_special(call):
        gw = shared if shared is not None else call.q("grad_output", g, WGRAD, axis)
        return gw, _operand(call, "input", x, WGRAD, axis)
    recipe = call.site.recipe
    t = recipe.wgrad_transform
    if t is not None:
        signs = _signs(call.seed, t.block, g.device)
        g, x = (hadamard(_pad(v, axis, t.block), axis, block=t.block, signs=signs)
                for v in (g, x))
    if recipe.quantize_wgrad:
        g, x = call.q("grad_output", g, WGRAD, axis), call.q("input", x, WGRAD, axis)
    return g, x


def _bias_grad_operand(call: Call, g: torch.Tensor, axis: int,
                       shared: Optional[torch.Tensor]) -> torch.Tensor:
    """``g`` as the bias gradient sums it: ``Q_go(g)`` along ``axis`` (untransformed), or
    ``g`` itself under ``quantize_wgrad=False``."""
    if not call.site.recipe.quantize_wgrad:
        return g
    return shared if shared is not None else call.q("grad_output", g, WGRAD, axis)


def _amp(x: torch.Tensor) -> Optional[torch.dtype]:
    """The autocast dtype in force for ``x``'s device (None: autocast is off).  Autocast
    runs the forward GEMM in that dtype; backward, which runs outside autocast, casts its
    operands to it too (autograd returns each gradient in its input's dtype)."""
    device = x.device.type
    return torch.get_autocast_dtype(device) if torch.is_autocast_enabled(device) else None


def _to(dtype: Optional[torch.dtype], *tensors: torch.Tensor):
    return tensors if dtype is None else tuple(t.to(dtype) for t in tensors)


class _Linear(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, w, b, call: Call):
        xq = call.q("input", x, FWD, -1)
        wq = call.q("weight", w, FWD, -1)
        bq = call.q("bias", b, FWD)
        y = _gemm.linear(xq, wq, bq, *call.acc(FWD))
        ctx.save_for_backward(_save(call, "input", x, xq), _save(call, "weight", w, wq))
        ctx.call, ctx.amp = call, _amp(x)
        return call.q("output", y, FWD)

    @staticmethod
    def backward(ctx, g):
        x, w = ctx.saved_tensors
        call: Call = ctx.call
        need_x, need_w, need_b = ctx.needs_input_grad[:3]
        g2 = g.reshape(-1, w.shape[0])
        shared = _shared_grad(call, g2, need_x or need_w or need_b)
        dx = dw = db = None
        if need_x:
            gd = shared if shared is not None else call.q("grad_output", g2, DGRAD, -1)
            gd, wd = _to(ctx.amp, gd, _operand(call, "weight", w, DGRAD, 0))
            dx = _gemm.linear_dgrad(gd, wd, *call.acc(DGRAD)).reshape(x.shape)
            dx = call.q("grad_input", dx, DGRAD)
        if need_w:
            gw2, xw = _wgrad_operands(call, g2, x.reshape(-1, x.shape[-1]), 0, shared)
            gw2, xw = _to(ctx.amp, gw2, xw)
            dw = call.q("grad_weight", _gemm.linear_wgrad(gw2, xw, *call.acc(WGRAD)), WGRAD)
        if need_b:
            db = call.q("grad_bias", _bias_grad_operand(call, g2, 0, shared).sum(0), WGRAD)
        return dx, dw, db, None


class _Conv(torch.autograd.Function):
    """Convolution (``transposed`` too): forward blocks along the input channels (axis 1 of
    x; axis 1 of W, or 0 for a transposed W); dgrad along the output channels (axis 1 of g;
    axis 0 of W, or 1 when transposed); wgrad along the batch (axis 0 of x and g)."""

    @staticmethod
    def forward(ctx, x, w, b, p: ConvParams, call: Call):
        w_in, w_out = (0, 1) if p.transposed else (1, 0)
        xq = call.q("input", x, FWD, 1)
        wq = call.q("weight", w, FWD, w_in)
        bq = call.q("bias", b, FWD)
        amp = _amp(x)
        # ATen's convolution is below autocast (which casts at F.conv*d): cast as it would
        xg, wg, bg = (xq, wq, bq) if amp is None else (xq.to(amp), wq.to(amp), _to(amp, bq)[0]
                                                       if bq is not None else None)
        y = _gemm.conv(xg, wg, bg, p, *call.acc(FWD))
        ctx.save_for_backward(_save(call, "input", x, xq), _save(call, "weight", w, wq))
        ctx.call, ctx.p, ctx.w_out, ctx.amp = call, p, w_out, amp
        return call.q("output", y, FWD)

    @staticmethod
    def backward(ctx, g):
        x, w = ctx.saved_tensors
        call: Call = ctx.call
        p: ConvParams = ctx.p
        need_x, need_w, need_b = ctx.needs_input_grad[:3]
        shared = _shared_grad(call, g, need_x or need_w or need_b)
        dx = dw = db = None
        if need_x:
            gd = shared if shared is not None else call.q("grad_output", g, DGRAD, 1)
            gd, wd = _to(ctx.amp, gd, _operand(call, "weight", w, DGRAD, ctx.w_out))
            dx = call.q("grad_input", _gemm.conv_dgrad(gd, wd, x, p, *call.acc(DGRAD)), DGRAD)
        if need_w:
            gw2, xw = _to(ctx.amp, *_wgrad_operands(call, g, x, 0, shared))
            dw = _gemm.conv_wgrad(gw2, xw, w.shape, p, *call.acc(WGRAD))
            dw = call.q("grad_weight", dw, WGRAD)
        if need_b:
            gb = _bias_grad_operand(call, g, 0, shared)
            db = call.q("grad_bias", _gemm.conv_bias_grad(gb, x, w, p), WGRAD)
        return dx, dw, db, None, None


class _MatMul(torch.autograd.Function):
    """``y = a @ b`` for ``a`` (..., M, K), ``b`` (..., K, N): ``a`` takes the input role,
    ``b`` the weight role, ``da`` grad_input, ``db`` grad_weight.  Forward blocks along K
    (axis -1 of a, -2 of b); dgrad ``da = g bᵀ`` along N (axis -1 of g and b); wgrad
    ``db = aᵀ g`` along M (axis -2 of a and g; for a 2-D ``b`` the batch axes of ``a`` and
    ``g`` are folded into M, as ``torch.matmul`` folds them).  Broadcast batch axes are
    summed back."""

    @staticmethod
    def forward(ctx, a, b, call: Call):
        aq = call.q("input", a, FWD, -1)
        bq = call.q("weight", b, FWD, -2)
        y = _gemm.matmul(aq, bq, *call.acc(FWD))
        ctx.save_for_backward(_save(call, "input", a, aq), _save(call, "weight", b, bq))
        ctx.call, ctx.amp = call, _amp(a)
        return call.q("output", y, FWD)

    @staticmethod
    def backward(ctx, g):
        a, b = ctx.saved_tensors
        call: Call = ctx.call
        need_a, need_b = ctx.needs_input_grad[:2]
        shared = _shared_grad(call, g, need_a or need_b)
        da = db = None
        if need_a:
            gd = shared if shared is not None else call.q("grad_output", g, DGRAD, -1)
            gd, bd = _to(ctx.amp, gd, _operand(call, "weight", b, DGRAD, -1))
            da = _gemm.matmul(gd, bd.transpose(-2, -1), *call.acc(DGRAD))
            da = call.q("grad_input", da.sum_to_size(a.shape), DGRAD)
        if need_b and b.dim() == 2:
            # A 2-D b is a weight shared by every row of a: fold the batch axes into M, as
            # torch.matmul does, so wgrad reduces over all rows at once.
            g2, a2 = g.reshape(-1, g.shape[-1]), a.reshape(-1, a.shape[-1])
            shared2 = None if shared is None else shared.reshape(g2.shape)
            gw, aw = _to(ctx.amp, *_wgrad_operands(call, g2, a2, 0, shared2))
            db = call.q("grad_weight", _gemm.linear_wgrad(aw, gw, *call.acc(WGRAD)), WGRAD)
        elif need_b:
            gw, aw = _to(ctx.amp, *_wgrad_operands(call, g, a, -2, shared))
            db = _gemm.matmul(aw.transpose(-2, -1), gw, *call.acc(WGRAD))
            db = call.q("grad_weight", db.sum_to_size(b.shape), WGRAD)
        return da, db, None


class _STE(torch.autograd.Function):
    """``Q(x)`` forward, the gradient unchanged (straight-through)."""

    @staticmethod
    def forward(ctx, x, call: Call, slot: str, gemm: str):
        y = call.q(slot, x, gemm)
        return y.view_as(y) if y is x else y

    @staticmethod
    def backward(ctx, g):
        return g, None, None, None


class _GradQuant(torch.autograd.Function):
    """Identity forward; the gradient quantized by ``slot``."""

    @staticmethod
    def forward(ctx, x, call: Call, slot: str, gemm: str):
        ctx.call, ctx.slot, ctx.gemm = call, slot, gemm
        return x.view_as(x)

    @staticmethod
    def backward(ctx, g):
        return ctx.call.q(ctx.slot, g, ctx.gemm), None, None, None


def ste(call: Call, slot: str, x: Optional[torch.Tensor], gemm: str = FWD):
    """``x`` quantized by ``slot`` in the forward pass with a straight-through gradient (a
    QAT quantizer runs in the graph with its own gradient)."""
    if x is None or not call.has(slot):
        return x
    if slot in call.site.qat_slots:
        return call.site.pre(slot, x)
    return _STE.apply(x, call, slot, gemm)


def grad_quant(call: Call, slot: str, x: Optional[torch.Tensor], gemm: str = BWD):
    """``x`` unchanged; its gradient quantized by ``slot`` in backward."""
    if x is None or not call.has(slot) or not torch.is_grad_enabled() or not x.requires_grad:
        return x
    return _GradQuant.apply(x, call, slot, gemm)


def _pre(call: Call, *pairs: Tuple[str, Optional[torch.Tensor]]):
    return [call.site.pre(slot, t) for slot, t in pairs]


def linear_op(call: Call, x, w, b=None) -> torch.Tensor:
    x, w, b = _pre(call, ("input", x), ("weight", w), ("bias", b))
    return call.site.pre("output", _Linear.apply(x, w, b, call))


def conv_op(call: Call, x, w, b, p: ConvParams) -> torch.Tensor:
    x, w, b = _pre(call, ("input", x), ("weight", w), ("bias", b))
    return call.site.pre("output", _Conv.apply(x, w, b, p, call))


def matmul_op(call: Call, a, b) -> torch.Tensor:
    if a.dim() < 2 or b.dim() < 2:
        raise ValueError(f"quantized matmul needs operands of >= 2 dims; got {a.dim()} and "
                         f"{b.dim()}")
    a, b = _pre(call, ("input", a), ("weight", b))
    return call.site.pre("output", _MatMul.apply(a, b, call))
