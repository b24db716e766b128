"""QPyTorch's ``qtorch.quant``: ``float_quantize``, ``fixed_point_quantize``,
``block_quantize``, ``quantizer`` and ``Quantizer``, each a call of ``lowbit.quantize``.

Names, signatures and defaults are QPyTorch 0.3's (``rounding`` is ``"stochastic"`` or
``"nearest"``, default ``"stochastic"``).  The value sets are QPyTorch's (see
``lowbit.compat.qtorch.number``); the rounding is lowbit's, which is exact where QPyTorch's is
not: each function's docstring lists where the results differ.  No C++ extension is compiled.

Stochastic rounding draws a 64-bit seed from torch's default generator at every call (lowbit's
``seed=None`` path), so results are reproducible under ``torch.manual_seed`` on every device
(QPyTorch's CPU kernels ignore it); each element uses 32 random bits, so the rounding is
exactly unbiased wherever at most 32 bits are dropped (QPyTorch: 23 - man bits for floats).
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Iterable, Optional, Tuple

import torch
from torch import nn

from ...formats import FloatFormat
from ...formats import FixedPoint as _LowbitFixedPoint
from ...formats.floats import _check_bool
from ...ops.quantize import quantize
from .number import BlockFloatingPoint, FixedPoint, Number

__all__ = ["fixed_point_quantize", "block_quantize", "float_quantize", "quantizer", "Quantizer"]

_ROUNDINGS = ("stochastic", "nearest")


def _check_rounding(value: object, name: str) -> str:
    if not isinstance(value, str) or value not in _ROUNDINGS:
        raise ValueError(f"{name} must be 'stochastic' or 'nearest' (QPyTorch's modes; "
                         f"lowbit.quantize has the others); got {value!r}")
    return value


def _check_tensor(x: object) -> torch.Tensor:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"x must be a torch.Tensor; got {type(x).__name__}")
    return x


def _round(x: torch.Tensor, number: Number, rounding: str) -> torch.Tensor:
    return quantize(x, number.format_for(x.dim()), rounding=rounding)


def float_quantize(x: torch.Tensor, exp: int, man: int,
                   rounding: str = "stochastic") -> torch.Tensor:
    """Round ``x`` onto QPyTorch's float with ``exp`` exponent and ``man`` mantissa bits.

    The value set is ``lowbit.FloatFormat(exp, man, specials="none")`` (see
    ``FloatingPoint``): every exponent code finite, overflow saturating to ±max (``exp=8``:
    fp32's overflow to ±Inf).  Results differ from QPyTorch's where QPyTorch is wrong:

    * ``nearest`` rounds ties to even, as IEEE 754 and ``x.half()``/``x.bfloat16()`` do;
      QPyTorch rounds ties away from zero (1 + 2^-11 gives 1.0 here for E5M10, 1.0009765625
      in QPyTorch).
    * -0 stays -0 and negative values that underflow give -0; QPyTorch returns +0.
    * NaN stays NaN; QPyTorch returns +max (and ±Inf give ±max in both, for ``exp < 8``).
    * Values near the subnormal range are rounded once, exactly; QPyTorch rounds them twice
      (2^-25 - 2^-48 gives 0 here for E5M10, 2^-24 in QPyTorch).
    * ``man=23`` with ``nearest`` returns ``x``; QPyTorch's CPU kernel negates it.
    * ``stochastic`` is reproducible under ``torch.manual_seed`` on the CPU too (QPyTorch's CPU
      kernel uses an unseedable generator) and unbiased everywhere: exactly where at most 32
      bits are dropped, within 2^-32 of a step beyond (QPyTorch flushes values below about
      2^(emin-24) to zero).
    * Arguments are checked: ``exp`` in 1..8 and ``man`` in 0..23 (``ValueError``; QPyTorch
      accepts ``exp > 8``, which fp32 cannot carry exactly), ``rounding`` (``ValueError``),
      ``x`` a tensor (``TypeError``).
    * ``x`` may be float32, or float16/bfloat16 when that dtype holds every value of the
      format (the result keeps ``x``'s dtype; float64 is a ``ValueError``); QPyTorch takes
      float32 only.  The result has the straight-through gradient of ``lowbit.quantize``;
      QPyTorch's has no autograd connection.
    """
    _check_tensor(x)
    rounding = _check_rounding(rounding, "rounding")
    return quantize(x, FloatFormat(exp, man, specials="none"), rounding=rounding)


def fixed_point_quantize(x: torch.Tensor, wl: int, fl: int, clamp: bool = True,
                         symmetric: bool = False, rounding: str = "stochastic") -> torch.Tensor:
    """Round ``x`` onto QPyTorch's fixed point: multiples of ``2^-fl`` in
    ``[-2^(wl-fl-1), 2^(wl-fl-1) - 2^-fl]`` (``symmetric``: ``[-t_max, t_max]``), clamped
    into that range after rounding when ``clamp``; NaN stays NaN (as in QPyTorch).

    This is ``lowbit.FixedPoint(wl, fl, clamp=clamp, symmetric=symmetric)``.  Results differ
    from QPyTorch's where QPyTorch is wrong:

    * ``nearest`` rounds ties to even on every device; QPyTorch's CPU kernel rounds ties to
      even but its CUDA kernel rounds them away from zero.
    * The tie test is exact; QPyTorch's CPU kernel rounds ``x · 2^fl = 0.5 + 2^-24`` twice,
      down to 0.
    * -0 stays -0; QPyTorch's CPU kernel returns +0.
    * ``stochastic`` uses lowbit's Philox stream (seeded from torch's generator, so
      ``torch.manual_seed`` reproduces it) with 32 random bits at every magnitude; QPyTorch's
      fp32 ``x·2^fl + r`` loses random bits as ``|x · 2^fl|`` grows.
    * Arguments are checked as ``lowbit.FixedPoint`` checks them: ``wl`` in 2..25, ``fl`` in
      ``[wl - 128, 149]`` (``ValueError``), bool ``clamp``/``symmetric`` (``TypeError``).
    * ``x`` may be float32, or float16/bfloat16 when that dtype holds every grid value (float64
      is a ``ValueError``); the result has the straight-through gradient of
      ``lowbit.quantize`` (QPyTorch's has no autograd connection).
    """
    _check_tensor(x)
    rounding = _check_rounding(rounding, "rounding")
    fmt = _LowbitFixedPoint(wl, fl, clamp=clamp, symmetric=symmetric)
    return quantize(x, fmt, rounding=rounding)


def block_quantize(x: torch.Tensor, wl: int, dim: int = -1,
                   rounding: str = "stochastic") -> torch.Tensor:
    """Round ``x`` onto QPyTorch's block floating point with ``wl``-bit elements.

    ``dim=-1`` makes the whole tensor one block (QPyTorch's meaning, not the last axis);
    ``dim=d`` gives each index along axis ``d`` its own shared exponent (see
    ``BlockFloatingPoint``).  A block's exponent is ``e = floor(log2 max|x|)`` and its
    elements are rounded onto ``k · 2^(e + 2 - wl)``, ``|k| <= 2^(wl-1) - 1``; an all-zero
    block gives zeros and a block holding NaN or ±Inf gives NaN (as in QPyTorch).  Results
    differ from QPyTorch's where QPyTorch is wrong:

    * ``nearest`` rounds ties to even; QPyTorch rounds them toward +Inf (0.125 → 0.25 but
      -0.125 → 0 at step 0.25).
    * -0 stays -0 (also where a negative element rounds to zero); QPyTorch returns +0.
    * ``stochastic`` is exactly unbiased for every element, however small against the block
      maximum (QPyTorch's fp32 pre-addition of ``6·2^e`` flushes their low bits), and
      reproducible under ``torch.manual_seed`` on the CPU too (QPyTorch's CPU kernel is not).
    * Arguments are checked: ``wl`` in 2..25 and ``-1 <= dim < x.dim()`` (``ValueError``;
      QPyTorch does not check ``dim`` against ``x``), ``rounding`` (``ValueError``).
    * ``x`` may be float32, or bfloat16 where lowbit's ``BlockFormat.fits_in`` accepts it
      (float16 lacks fp32's exponent range; float64 is a ``ValueError``); the result has the
      straight-through gradient of ``lowbit.quantize`` (QPyTorch's has no autograd
      connection).
    """
    _check_tensor(x)
    rounding = _check_rounding(rounding, "rounding")
    return _round(x, BlockFloatingPoint(wl, dim), rounding)


# -- quantizer ----------------------------------------------------------------------------------
def _check_number(value: object, name: str) -> Optional[Number]:
    if value is not None and not isinstance(value, Number):
        raise TypeError(f"{name} must be a qtorch Number (FixedPoint, FloatingPoint, "
                        f"BlockFloatingPoint) or None; got {value!r}")
    return value


class QuantizeFunction:
    """The function ``quantizer`` returns: ``QuantizeFunction(...)(x)`` quantizes ``x``.

    A plain module-level object holding the configuration as attributes, so it pickles
    (with picklable hooks) and a ``Quantizer`` holding one can be saved with ``torch.save``.
    """

    def __init__(self, forward_number: Optional[Number], backward_number: Optional[Number],
                 forward_rounding: str, backward_rounding: str, clamping_grad_zero: bool,
                 backward_hooks: Tuple[Callable[[torch.Tensor], torch.Tensor], ...]) -> None:
        self.forward_number = forward_number
        self.backward_number = backward_number
        self.forward_rounding = forward_rounding
        self.backward_rounding = backward_rounding
        self.clamping_grad_zero = clamping_grad_zero
        self.backward_hooks = backward_hooks

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        _check_tensor(x)
        return _QuantizeGrad.apply(x, self)

    def __repr__(self) -> str:
        hooks = f", backward_hooks={list(self.backward_hooks)!r}" if self.backward_hooks else ""
        return (f"quantizer(forward_number={self.forward_number!r}, "
                f"backward_number={self.backward_number!r}, "
                f"forward_rounding={self.forward_rounding!r}, "
                f"backward_rounding={self.backward_rounding!r}, "
                f"clamping_grad_zero={self.clamping_grad_zero!r}{hooks})")


def _forward_with_mask(x: torch.Tensor, number: FixedPoint,
                       rounding: str) -> Tuple[torch.Tensor, torch.Tensor]:
    """Round onto ``number`` (clamp=True) and return the mask of clamped elements: round onto
    the unclamped grid, then clamp, which is exactly what the clamped format computes."""
    fmt = number.format_for(x.dim())
    free = quantize(x, dataclasses.replace(fmt, clamp=False), rounding=rounding)
    mask = (free < fmt.lowest) | (free > fmt.max)
    return free.clamp(fmt.lowest, fmt.max), mask


class _QuantizeGrad(torch.autograd.Function):
    """Forward: quantize to ``spec.forward_number``; backward: hooks, then quantize to
    ``spec.backward_number``, then zero where the forward value was clamped."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, spec: QuantizeFunction):  # type: ignore[override]
        ctx.spec = spec
        ctx.mask = None
        number = spec.forward_number
        if number is None:
            return x
        if spec.clamping_grad_zero:
            out, ctx.mask = _forward_with_mask(x, number, spec.forward_rounding)
            return out
        return _round(x, number, spec.forward_rounding)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):  # type: ignore[override]
        if not ctx.needs_input_grad[0]:
            return None, None
        spec = ctx.spec
        for hook in spec.backward_hooks:
            grad = hook(grad)
        if spec.backward_number is not None:
            grad = _round(grad, spec.backward_number, spec.backward_rounding)
        if ctx.mask is not None:
            grad = grad.masked_fill(ctx.mask, 0)
        return grad, None


def quantizer(forward_number: Optional[Number] = None, backward_number: Optional[Number] = None,
              forward_rounding: str = "stochastic", backward_rounding: str = "stochastic",
              clamping_grad_zero: bool = False,
              backward_hooks: Optional[Iterable[Callable[[torch.Tensor], torch.Tensor]]] = None,
              ) -> QuantizeFunction:
    """A function that quantizes its input to ``forward_number`` and its gradient to
    ``backward_number`` (straight-through estimator in between).

    Forward: ``x`` rounded onto ``forward_number`` with ``forward_rounding`` (identity when
    None).  Backward: the incoming gradient passes through each of ``backward_hooks`` in order,
    is rounded onto ``backward_number`` with ``backward_rounding`` (identity when None), and,
    when ``clamping_grad_zero``, is zeroed where the forward value was clamped (the rounded
    value fell outside the fixed-point range).  Rounding is that of ``float_quantize``,
    ``fixed_point_quantize`` and ``block_quantize``, with their differences from QPyTorch.

    Args:
        forward_number, backward_number: a ``Number`` or None.
        forward_rounding, backward_rounding: ``"stochastic"`` (default) or ``"nearest"``.
        clamping_grad_zero: zero the gradient of clamped elements; needs a ``FixedPoint``
            forward number with ``clamp=True`` (or None: nothing is clamped).
        backward_hooks: callables ``grad -> grad`` applied before the backward rounding
            (e.g. WAGE's power-of-two rescaling); default None, no hooks.

    Differences from QPyTorch:

    * ``backward_hooks`` are applied whether or not ``clamping_grad_zero`` is set; QPyTorch
      ignores them unless it is set.
    * With ``clamping_grad_zero`` and no ``backward_number``, the hooks and the zeroing still
      apply; QPyTorch then passes the gradient through untouched.
    * The default of ``backward_hooks`` is None, not a shared mutable ``[]``; the hooks are
      copied into a tuple, so changing the list later changes nothing.
    * The returned function is a module-level ``QuantizeFunction`` whose autograd
      ``Function`` is defined at module level, so it pickles (given picklable hooks);
      QPyTorch's is a local class that cannot be pickled.
    * Arguments are checked at creation with clear errors: a rounding other than
      ``"stochastic"``/``"nearest"`` is a ``ValueError`` naming the parameter (QPyTorch
      asserts), a number that is not a ``Number`` a ``TypeError``, ``clamping_grad_zero``
      with a non-fixed-point or ``clamp=False`` number a ``ValueError`` (QPyTorch: ValueError
      and an assert), a non-callable hook a ``TypeError``.
    """
    _check_number(forward_number, "forward_number")
    _check_number(backward_number, "backward_number")
    forward_rounding = _check_rounding(forward_rounding, "forward_rounding")
    backward_rounding = _check_rounding(backward_rounding, "backward_rounding")
    _check_bool(clamping_grad_zero, "clamping_grad_zero")
    if clamping_grad_zero and forward_number is not None:
        if not isinstance(forward_number, FixedPoint):
            raise ValueError("clamping_grad_zero=True needs a FixedPoint forward_number (zeroing "
                             f"the clamped gradient only supports fixed point); got "
                             f"{forward_number!r}")
        if not forward_number.clamp:
            raise ValueError("clamping_grad_zero=True needs a forward_number with clamp=True "
                             f"(must use clamping if zeroing out clamped gradient); got "
                             f"{forward_number!r} with clamp=False")
    hooks = () if backward_hooks is None else tuple(backward_hooks)
    for hook in hooks:
        if not callable(hook):
            raise TypeError(f"backward_hooks must hold callables grad -> grad; got {hook!r}")
    return QuantizeFunction(forward_number, backward_number, forward_rounding,
                            backward_rounding, clamping_grad_zero, hooks)


class Quantizer(nn.Module):
    """``nn.Module`` form of ``quantizer``: ``forward(x)`` quantizes ``x`` to
    ``forward_number`` and its gradient to ``backward_number``.

    No parameters or buffers.  Unlike QPyTorch's, a model holding one can be saved whole with
    ``torch.save`` (QPyTorch's holds a local autograd class that cannot be pickled); the
    configuration is in ``self.quantize`` and readable as ``forward_number``,
    ``backward_number``, ``forward_rounding`` and ``backward_rounding``.  Arguments are checked
    as ``quantizer`` checks them.
    """

    def __init__(self, forward_number: Optional[Number] = None,
                 backward_number: Optional[Number] = None,
                 forward_rounding: str = "stochastic",
                 backward_rounding: str = "stochastic") -> None:
        super().__init__()
        self.quantize = quantizer(forward_number, backward_number, forward_rounding,
                                  backward_rounding)

    @property
    def forward_number(self) -> Optional[Number]:
        return self.quantize.forward_number

    @property
    def backward_number(self) -> Optional[Number]:
        return self.quantize.backward_number

    @property
    def forward_rounding(self) -> str:
        return self.quantize.forward_rounding

    @property
    def backward_rounding(self) -> str:
        return self.quantize.backward_rounding

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.quantize(x)

    def extra_repr(self) -> str:
        q = self.quantize
        return (f"forward_number={q.forward_number!r}, backward_number={q.backward_number!r}, "
                f"forward_rounding={q.forward_rounding!r}, "
                f"backward_rounding={q.backward_rounding!r}")
