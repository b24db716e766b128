"""The autograd functions behind ``lowbit.qat.functional``: each forward is the quantizer, each
backward the hand-derived gradient that the public docstrings state.  Parameters arrive already
broadcastable against ``x`` (``_granularity.expand``); gradients for them are summed back to the
shape they arrived in."""

from __future__ import annotations

from typing import Optional

import torch

from ._granularity import sum_to

__all__ = ["FakeQuant", "PACT", "CeilSTE", "SignSTE", "Straight", "Masked"]


def _codes(x: torch.Tensor, scale: torch.Tensor, zero_point: Optional[torch.Tensor],
           offset: Optional[torch.Tensor]) -> torch.Tensor:
    """u + z where u = (x - offset) / scale: the unrounded, unclamped code."""
    u = (x if offset is None else x - offset) / scale
    return u if zero_point is None else u + zero_point


class FakeQuant(torch.autograd.Function):
    """y = (clamp(round(u) + z, qmin, qmax) - z)·s + β with u = (x - β)/s (β = offset or 0,
    z = zero_point or 0).

    Backward (inside ⇔ qmin ≤ u + z ≤ qmax):
    dy/dx = 1 (identity) or 1[inside] (clipped);
    dy/ds = g·(round(u) - u) inside, g·(q - z) outside (LSQ, Esser et al. 2020, eq. 3);
    dy/dβ = g·1[outside] (LSQ+, Bhalgat et al. 2020), g the gradient scale.
    """

    @staticmethod
    def forward(ctx, x, scale, zero_point, offset, qmin, qmax, clip_x, grad_scale):
        x32 = x.float()
        # In place on one temporary: this runs on every weight of the model each step.
        q = (x32 if offset is None else x32 - offset) / scale
        q.round_()
        if zero_point is not None:
            q.add_(zero_point).clamp_(qmin, qmax).sub_(zero_point)
        else:
            q.clamp_(qmin, qmax)
        y = q.mul_(scale)
        if offset is not None:
            y = y.add_(offset)
        ctx.save_for_backward(x, scale, zero_point, offset)
        ctx.qrange = (qmin, qmax)
        ctx.clip_x = clip_x
        ctx.grad_scale = grad_scale
        return y.to(x.dtype)

    @staticmethod
    def backward(ctx, grad):
        x, scale, zero_point, offset = ctx.saved_tensors
        qmin, qmax = ctx.qrange
        need_x, need_s, _, need_b = ctx.needs_input_grad[:4]
        code = _codes(x.float(), scale, zero_point, offset)
        inside = (code >= qmin) & (code <= qmax)
        g = grad.float()
        gx = gs = gb = None
        if need_x:
            gx = (g * inside if ctx.clip_x else g).to(x.dtype)
        if need_s:
            z = 0.0 if zero_point is None else zero_point
            u = code - z
            ds = torch.where(inside, torch.round(u) - u,
                             torch.where(code < qmin, qmin - z, qmax - z))
            gs = sum_to(g * ds * ctx.grad_scale, scale.shape).to(scale.dtype)
        if need_b:
            gb = sum_to(g * (~inside) * ctx.grad_scale, offset.shape).to(offset.dtype)
        return gx, gs, None, gb, None, None, None, None


class PACT(torch.autograd.Function):
    """y = round(clamp(x, lo, α)/s)·s with s = α/levels (Choi et al. 2018, eq. 1-2); lo = 0
    (unsigned) or -α (signed, the symmetric variant).

    Backward (STE through round): unsigned dy/dx = 1[0 ≤ x < α], dy/dα = 1[x ≥ α];
    signed dy/dx = 1[-α < x < α], dy/dα = 1[x ≥ α] - 1[x ≤ -α].
    """

    @staticmethod
    def forward(ctx, x, alpha, levels, signed):
        x32 = x.float()
        s = alpha / levels
        lo = -alpha if signed else torch.zeros_like(alpha)
        y = torch.round(torch.minimum(torch.maximum(x32, lo), alpha) / s) * s
        ctx.save_for_backward(x, alpha)
        ctx.signed = signed
        return y.to(x.dtype)

    @staticmethod
    def backward(ctx, grad):
        x, alpha = ctx.saved_tensors
        x32, g = x.float(), grad.float()
        above = x32 >= alpha
        below = (x32 <= -alpha) if ctx.signed else (x32 < 0)
        gx = ga = None
        if ctx.needs_input_grad[0]:
            gx = (g * ~(above | below)).to(x.dtype)
        if ctx.needs_input_grad[1]:
            d = above.float() - below.float() if ctx.signed else above.float()
            ga = sum_to(g * d, alpha.shape).to(alpha.dtype)
        return gx, ga, None, None


class CeilSTE(torch.autograd.Function):
    """y = ceil(x); dy/dx = 1 (TQT treats the ceiling of log2 t as the identity)."""

    @staticmethod
    def forward(ctx, x):
        return torch.ceil(x)

    @staticmethod
    def backward(ctx, grad):
        return grad


class SignSTE(torch.autograd.Function):
    """y = sign(x) with sign(0) = +1; dy/dx = 1[|x| ≤ 1] (the hardtanh STE of BinaryConnect
    and XNOR-Net)."""

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return torch.where(x >= 0, 1.0, -1.0).to(x.dtype)

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        return grad * (x.abs() <= 1)


class Straight(torch.autograd.Function):
    """Forward returns ``fn(x)`` (computed without autograd); backward passes the gradient
    straight through: d fn(x)/dx := 1."""

    @staticmethod
    def forward(ctx, x, fn):
        return fn(x)

    @staticmethod
    def backward(ctx, grad):
        return grad, None


class Masked(torch.autograd.Function):
    """Forward returns ``fn(x)``; backward passes the gradient where ``lo ≤ x ≤ hi`` and zero
    elsewhere (the clipped straight-through estimator)."""

    @staticmethod
    def forward(ctx, x, fn, lo, hi):
        ctx.save_for_backward(x)
        ctx.bounds = (lo, hi)
        return fn(x)

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        lo, hi = ctx.bounds
        return grad * ((x >= lo) & (x <= hi)), None, None, None
