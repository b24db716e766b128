"""Stateless fake quantizers with straight-through and learned-parameter gradients.

Notation: ``s`` step size (scale), ``z`` integer zero point, ``[qmin, qmax]`` the integer code
range, ``round`` = round half to even.  Every function returns a tensor of ``x``'s shape and
dtype on the quantization grid (computed in fp32); "inside" always means the *unrounded* code
lies in the range, ``qmin ≤ x/s + z ≤ qmax`` (boundaries inside).

Granularity: ``axis=None`` one parameter for the tensor; ``axis=a`` one per index of dimension
``a`` (per-channel, shape ``(x.shape[a],)``); ``axis=a, group_size=g`` one per run of ``g``
elements along ``a`` (per-group, shape ``x.shape`` with ``a`` replaced by ``ceil(n/g)``).
"""

from __future__ import annotations

import math
from typing import Optional, Tuple, Union

import torch

from ..formats import FixedPoint, Rounding
from ..formats.modes import _StrEnum
from ..ops.quantize import quantize
from . import _autograd as _fn
from ._granularity import check_axis, check_granularity, expand

__all__ = [
    "STE", "affine_quantize", "lsq_quantize", "lsq_grad_scale", "pact_quantize", "tqt_quantize",
    "tqt_scale", "qfmt_quantize", "binary_quantize", "ternary_quantize",
]

Scalar = Union[float, int, torch.Tensor]


class STE(_StrEnum):
    """The gradient a fake quantizer passes to its input ``x``."""

    #: dy/dx = 1 everywhere (Bengio et al. 2013; TorchQuant's ``affine_quantize``).
    IDENTITY = "identity"
    #: dy/dx = 1 inside the code range, 0 where ``x`` is clamped (torch.ao FakeQuantize, LSQ).
    CLIPPED = "clipped"


def _check_x(x: object) -> torch.Tensor:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"x must be a torch.Tensor; got {type(x).__name__}")
    if x.dtype not in (torch.float32, torch.float16, torch.bfloat16):
        raise TypeError(f"x must be float32, float16 or bfloat16; got {x.dtype}")
    return x


def _check_range(qmin: object, qmax: object) -> None:
    for name, v in (("qmin", qmin), ("qmax", qmax)):
        if isinstance(v, bool) or not isinstance(v, int):
            raise TypeError(f"{name} must be an int; got {v!r}")
    if not qmin < qmax:
        raise ValueError(f"qmin must be smaller than qmax; got qmin={qmin}, qmax={qmax}")
    if max(abs(qmin), abs(qmax)) > 2**24:
        raise ValueError(f"codes must fit in fp32's 24-bit significand: |qmin|, |qmax| <= 2^24; "
                         f"got qmin={qmin}, qmax={qmax}")


def _as_tensor(v: Scalar, x: torch.Tensor, name: str) -> torch.Tensor:
    if isinstance(v, torch.Tensor):
        if not v.is_floating_point():
            return v.to(device=x.device, dtype=torch.float32)
        return v.float() if v.dtype != torch.float32 else v
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise TypeError(f"{name} must be a float or a tensor; got {v!r}")
    return torch.tensor(float(v), device=x.device)


def _grad_scale(value: Optional[float], name: str = "grad_scale") -> float:
    if value is None:
        return 1.0
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise ValueError(f"{name} must be a positive float or None; got {value!r}")
    return float(value)


def affine_quantize(
    x: torch.Tensor, scale: Scalar, zero_point: Scalar, qmin: int, qmax: int, *,
    axis: Optional[int] = None, group_size: Optional[int] = None,
    ste: Union[str, STE] = "identity", grad_scale: Optional[float] = None,
) -> torch.Tensor:
    """Affine (uniform) fake quantization, TorchQuant's ``affine_quantize`` / torch.ao's
    ``FakeQuantize``:  ``y = (clamp(round(x/s) + z, qmin, qmax) - z)·s``.

    Gradients: ``dy/dx`` by ``ste`` (``identity``: 1; ``clipped``: 1 inside, 0 outside).
    When ``scale`` requires grad it is learned by LSQ's rule (Esser et al. 2020, eq. 3):
    ``dy/ds = round(x/s) - x/s`` inside, ``qmin - z`` below, ``qmax - z`` above, times
    ``grad_scale``.  The zero point is an integer code and gets no gradient (learn a float
    offset with ``lsq_quantize(offset=...)``).

    Args:
        x: float32/float16/bfloat16 tensor.
        scale: positive step size(s) (a float or a tensor shaped for the granularity).
        zero_point: integer zero point(s), shaped as ``scale`` or one value for all.
        qmin, qmax: the integer code range.
        axis, group_size: granularity (module docstring).
        ste: ``identity`` or ``clipped``.
        grad_scale: factor on the gradient of ``scale`` (LSQ's g); None = 1.

    Raises:
        TypeError, ValueError: wrong types, shapes or ranges, or a zero point that requires grad.
    """
    _check_x(x)
    _check_range(qmin, qmax)
    check_granularity(axis, group_size)
    clip = STE.parse(ste, "ste") is STE.CLIPPED
    s = _as_tensor(scale, x, "scale")
    z = _as_tensor(zero_point, x, "zero_point")
    if z.requires_grad:
        raise ValueError("zero_point is an integer code and cannot be learned; learn a float "
                         "offset with lsq_quantize(..., offset=...) (LSQ+)")
    s_b = expand(s, x, axis, group_size, "scale")
    # one zero point may serve every channel/group (e.g. 0 for symmetric grids)
    z_b = z.reshape(()) if z.numel() == 1 else expand(z, x, axis, group_size, "zero_point")
    return _fn.FakeQuant.apply(x, s_b, z_b, None, qmin, qmax, clip, _grad_scale(grad_scale))


def lsq_grad_scale(n: int, qmax: int) -> float:
    """LSQ's gradient scale g = 1/sqrt(N·Qp) (Esser et al. 2020, §2.2): N elements share one
    step size, Qp = qmax the largest positive code."""
    if n < 1 or qmax < 1:
        raise ValueError(f"n and qmax must be >= 1; got n={n}, qmax={qmax}")
    return 1.0 / math.sqrt(n * qmax)


def lsq_quantize(
    x: torch.Tensor, scale: torch.Tensor, qmin: int, qmax: int, *,
    offset: Optional[torch.Tensor] = None, grad_scale: Union[str, float, None] = "auto",
    axis: Optional[int] = None, group_size: Optional[int] = None,
) -> torch.Tensor:
    """LSQ (Esser et al. 2020) and, with ``offset``, LSQ+ (Bhalgat et al. 2020):
    ``y = clamp(round((x - β)/s), qmin, qmax)·s + β`` with learned ``s`` and offset ``β``.

    Gradients (u = (x - β)/s, inside ⇔ qmin ≤ u ≤ qmax, g = ``grad_scale``):
    ``dy/dx = 1[inside]``; ``dy/ds = g·(round(u) - u)`` inside, ``g·qmin`` below, ``g·qmax``
    above; ``dy/dβ = g·1[outside]``.

    Args:
        x: the tensor to quantize.
        scale: step size(s), shaped for the granularity.
        qmin, qmax: code range (signed b bits: -2^(b-1), 2^(b-1)-1; unsigned: 0, 2^b-1).
        offset: LSQ+'s learned float offset β (same shape as ``scale``), or None.
        grad_scale: ``"auto"`` = ``lsq_grad_scale(x.numel() / scale.numel(), qmax)``; a float;
            or None (= 1).  For activations pass the per-example count (LSQ uses N = features).
        axis, group_size: granularity.
    """
    _check_x(x)
    _check_range(qmin, qmax)
    check_granularity(axis, group_size)
    s = _as_tensor(scale, x, "scale")
    if isinstance(grad_scale, str):
        if grad_scale != "auto":
            raise ValueError(f"grad_scale must be 'auto', a positive float or None; got {grad_scale!r}")
        g = lsq_grad_scale(max(1, x.numel() // max(1, s.numel())), qmax)
    else:
        g = _grad_scale(grad_scale)
    s_b = expand(s, x, axis, group_size, "scale")
    b_b = None if offset is None else expand(_as_tensor(offset, x, "offset"), x, axis, group_size,
                                             "offset")
    return _fn.FakeQuant.apply(x, s_b, None, b_b, qmin, qmax, True, g)


def pact_quantize(x: torch.Tensor, alpha: Scalar, bits: int, *,
                  signed: bool = False) -> torch.Tensor:
    """PACT (Choi et al. 2018): ``y = round(clamp(x, 0, α)/s)·s`` with ``s = α/(2^b - 1)``;
    ``signed=True`` clips symmetrically, ``y = round(clamp(x, -α, α)/s)·s`` with
    ``s = α/(2^(b-1) - 1)`` (for tensors that are not ReLU outputs, e.g. residual branches).

    Gradients (STE through round): unsigned ``dy/dx = 1[0 ≤ x < α]``, ``dy/dα = 1[x ≥ α]``;
    signed ``dy/dx = 1[-α < x < α]``, ``dy/dα = 1[x ≥ α] - 1[x ≤ -α]``, summed over the
    elements.  PACT's L2 penalty on α is weight decay on ``alpha`` in the optimizer.

    Args:
        x: activations.
        alpha: the learned clipping level (one value, positive).
        bits: 1..16 (2..16 signed).
        signed: symmetric clipping.
    """
    _check_x(x)
    if not isinstance(signed, bool):
        raise TypeError(f"signed must be a bool; got {signed!r}")
    _check_bits(bits, 2 if signed else 1, 16)
    a = _as_tensor(alpha, x, "alpha")
    if a.numel() != 1:
        raise ValueError(f"alpha must hold one value; got shape {tuple(a.shape)}")
    levels = float(2 ** (bits - 1) - 1 if signed else 2**bits - 1)
    return _fn.PACT.apply(x, a.reshape(()), levels, signed)


def _check_bits(bits: object, lo: int, hi: int) -> int:
    if isinstance(bits, bool) or not isinstance(bits, int):
        raise TypeError(f"bits must be an int in [{lo}, {hi}]; got {bits!r}")
    if not lo <= bits <= hi:
        raise ValueError(f"bits must be in [{lo}, {hi}]; got {bits}")
    return bits


def tqt_scale(log2_t: torch.Tensor, bits: int, *, signed: bool = True) -> torch.Tensor:
    """TQT's power-of-two step ``s = 2^ceil(log2 t) / 2^(b-1)`` (signed) or ``/ 2^b``
    (unsigned), differentiable with ``ds/d(log2 t) = s·ln 2`` (ceil passed straight through)."""
    return torch.exp2(_fn.CeilSTE.apply(log2_t)) / float(2 ** (bits - 1 if signed else bits))


def tqt_quantize(x: torch.Tensor, log2_t: torch.Tensor, bits: int, *,
                 signed: bool = True) -> torch.Tensor:
    """TQT (Jain et al. 2019): ``y = clamp(round(x/s), n, p)·s`` with the power-of-two step
    ``s = tqt_scale(log2_t, bits, signed=signed)`` and the learned log-threshold ``log2 t``.

    Codes: signed ``[-2^(b-1), 2^(b-1)-1]``, unsigned ``[0, 2^b-1]``.  Gradients:
    ``dy/dx = 1[n ≤ x/s ≤ p]``; ``dy/d(log2 t) = s·ln2·{round(x/s) - x/s inside; n below;
    p above}`` (eq. 7 of the paper).
    """
    _check_x(x)
    _check_bits(bits, 2 if signed else 1, 16)
    t = _as_tensor(log2_t, x, "log2_t")
    if t.numel() != 1:
        raise ValueError(f"log2_t must hold one value (TQT is per-tensor); got {tuple(t.shape)}")
    qmin, qmax = (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1) if signed else (0, 2**bits - 1)
    s = tqt_scale(t.reshape(()), bits, signed=signed)
    return _fn.FakeQuant.apply(x, s, None, None, qmin, qmax, True, 1.0)


def qfmt_quantize(x: torch.Tensor, wl: int, fl: int, *, rounding: Union[str, Rounding] = "nearest",
                  seed: Optional[int] = None, ste: Union[str, STE] = "identity",
                  backend: str = "auto") -> torch.Tensor:
    """Q-format (two's complement fixed point) fake quantization, TorchQuant's
    ``qfmt_quantize``: ``y = clamp(round(x·2^fl), -2^(wl-1), 2^(wl-1)-1)·2^-fl``, rounded by
    ``lowbit.quantize(x, FixedPoint(wl, fl), rounding=...)`` (bit-exact with ``fixed<wl,fl>``).

    Gradients: ``identity`` 1; ``clipped`` 1 where ``-2^(wl-1) ≤ x·2^fl ≤ 2^(wl-1)-1``.
    ``rounding``, ``seed`` and ``backend`` are passed to ``lowbit.quantize``.
    """
    _check_x(x)
    fmt = FixedPoint(wl, fl)
    clip = STE.parse(ste, "ste") is STE.CLIPPED
    rounding = Rounding.parse(rounding, "rounding")

    def rnd(t: torch.Tensor) -> torch.Tensor:
        return quantize(t, fmt, rounding=rounding, seed=seed, backend=backend)

    if not clip:
        return _fn.Straight.apply(x, rnd)
    return _fn.Masked.apply(x, rnd, fmt.lowest, fmt.max)


def _reduce_dims(w: torch.Tensor, axis: Optional[int]) -> Tuple[int, ...]:
    if axis is None:
        return tuple(range(w.dim()))
    ax = check_axis(axis, w.dim())
    return tuple(d for d in range(w.dim()) if d != ax)


def binary_quantize(w: torch.Tensor, *, axis: Optional[int] = 0) -> torch.Tensor:
    """XNOR-Net binary weights (Rastegari et al. 2016, eq. 4): ``y = α·sign(w)`` with
    ``α = mean|w|`` over each output channel (``axis``; None = the whole tensor), sign(0) = +1.

    Gradient: the exact chain rule through α with the hardtanh STE for sign:
    ``dL/dw_i = α·1[|w_i| ≤ 1]·G_i + sign(w_i)/n·Σ_j G_j·sign(w_j)`` over the n weights of
    ``w_i``'s channel (XNOR-Net's eq. keeps the 1/n term only on the diagonal; here the
    cross terms of dα/dw are kept).
    """
    _check_x(w)
    dims = _reduce_dims(w, axis)
    alpha = w.float().abs().mean(dim=dims, keepdim=True)
    return (alpha * _fn.SignSTE.apply(w.float())).to(w.dtype)


def ternary_quantize(w: torch.Tensor, *, axis: Optional[int] = 0,
                     threshold: float = 0.7) -> torch.Tensor:
    """Ternary weight networks (Li et al. 2016): ``Δ = threshold·mean|w|``,
    ``y = α·sign(w)·1[|w| > Δ]`` with ``α = mean of |w| over {|w| > Δ}`` (0 when empty), per
    output channel (``axis``; None = whole tensor).  0.7 is TWN's approximation of the optimal
    threshold for Gaussian weights.

    Gradient: straight through, ``dL/dw = dL/dy`` (TWN trains the full-precision weights with
    the ternary weights' gradient); Δ and α are treated as constants.
    """
    _check_x(w)
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or threshold < 0:
        raise ValueError(f"threshold must be a non-negative float; got {threshold!r}")
    dims = _reduce_dims(w, axis)

    def tern(t: torch.Tensor) -> torch.Tensor:
        a = t.float().abs()
        delta = threshold * a.mean(dim=dims, keepdim=True)
        keep = a > delta
        count = keep.sum(dim=dims, keepdim=True)
        alpha = (a * keep).sum(dim=dims, keepdim=True) / count.clamp(min=1)
        return (alpha * torch.sign(t.float()) * keep).to(t.dtype)

    return _fn.Straight.apply(w, tern)
