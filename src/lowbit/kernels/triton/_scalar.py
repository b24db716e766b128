"""Wrappers of the elementwise kernels (``_jit.scalar``): a format becomes the kernels'
runtime scalars and family flags, computed with the reference's own helpers so that every
constant is the reference's fp32 value bit for bit."""

import dataclasses
import functools
from typing import Optional, Tuple, Union

import torch

from ...formats import ExpFormat, FixedPoint, FloatFormat, IntFormat, Rounding
from ..reference.core import pow2
from ..reference.scalar import carrier_max
from ._launch import launch

__all__ = ["FloatParams", "FloatFlags", "FixedParams", "float_params", "fixed_params",
           "quantize_float", "quantize_fixed"]

_NAN_BITS = 0x7FC00000
_INF_BITS = 0x7F800000


def _bits(value: Union[float, torch.Tensor]) -> int:
    """The int32 pattern of an fp32 value (a Python float is rounded as torch rounds it)."""
    t = value if isinstance(value, torch.Tensor) else torch.tensor(value, dtype=torch.float32)
    return int(t.to(torch.float32).reshape(()).view(torch.int32))


@dataclasses.dataclass(frozen=True)
class FloatParams:
    """The runtime scalars of ``_float_kernel`` for one format (see ``float_params``)."""

    emin: int
    man: int
    vmax: int
    saturate: int
    ovf: int
    inf_out: int
    neg_out: int
    neg_zero: int
    zero: int


@dataclasses.dataclass(frozen=True)
class FloatFlags:
    """The family flags of ``_float_kernel`` (compile-time constants)."""

    EXP: bool
    SUBNORMALS: bool
    SIGNED: bool
    WIDE: bool


@functools.lru_cache(maxsize=256)
def float_params(fmt: Union[FloatFormat, ExpFormat]) -> Tuple[FloatParams, FloatFlags]:
    """Encode a ``FloatFormat`` or ``ExpFormat`` as the kernel's runtime scalars and flags,
    with the reference's own helpers for the constants (so every fp32 value matches); cached
    per format (formats are frozen and hashable)."""
    if isinstance(fmt, ExpFormat):
        vmax = _bits(min(fmt.max, 2.0**127))
        params = FloatParams(
            emin=fmt.emin, man=0, vmax=vmax, saturate=int(fmt.saturate), ovf=_NAN_BITS,
            inf_out=vmax if fmt.saturate else _NAN_BITS, neg_out=0, neg_zero=1,
            zero=_bits(fmt.min_normal),
        )
        return params, FloatFlags(EXP=True, SUBNORMALS=True, SIGNED=True, WIDE=fmt.emin < -126)
    beyond = fmt.exceeds_carrier
    vmax = _bits(carrier_max(fmt) * pow2(torch.zeros((), dtype=torch.int64)))
    if beyond or (fmt.has_inf and not fmt.saturate):
        inf_out = _INF_BITS  # ±Inf stays ±Inf
    elif fmt.saturate:
        inf_out = vmax
    else:
        inf_out = _NAN_BITS
    params = FloatParams(
        emin=fmt.emin, man=fmt.man, vmax=vmax, saturate=int(fmt.saturate and not beyond),
        ovf=_INF_BITS if beyond or fmt.has_inf else _NAN_BITS, inf_out=inf_out,
        neg_out=_NAN_BITS if fmt.has_nan else 0, neg_zero=int(fmt.has_neg_zero), zero=0,
    )
    flags = FloatFlags(EXP=False, SUBNORMALS=fmt.subnormals, SIGNED=fmt.signed,
                       WIDE=fmt.emin < -126 or not fmt.subnormals)
    return params, flags


@dataclasses.dataclass(frozen=True)
class FixedParams:
    """The runtime scalars of ``_fixed_kernel`` for one format (see ``fixed_params``)."""

    q: int
    lo: int
    hi: int
    clamp: int


@functools.lru_cache(maxsize=256)
def fixed_params(fmt: Union[FixedPoint, IntFormat]) -> FixedParams:
    """Encode a ``FixedPoint`` or ``IntFormat``: grid exponent and fp32 bounds, computed as the
    reference computes them (``pow2(q) · qmin``, ``pow2(q) · qmax``)."""
    step = pow2(torch.tensor(fmt.quantum_exp, dtype=torch.int64).clamp(-149, 127))
    return FixedParams(q=fmt.quantum_exp, lo=_bits(step * fmt.qmin), hi=_bits(step * fmt.qmax),
                       clamp=int(fmt.clamp))


def quantize_float(x: torch.Tensor, fmt: Union[FloatFormat, ExpFormat], rounding: Rounding,
                   rbits: int, seed: Optional[int]) -> torch.Tensor:
    """Round a contiguous fp32 tensor onto a ``FloatFormat`` or ``ExpFormat``."""
    p, f = float_params(fmt)
    return launch("_float_kernel", x, rounding, rbits, seed, dataclasses.astuple(p),
                  dataclasses.asdict(f))


def quantize_fixed(x: torch.Tensor, fmt: Union[FixedPoint, IntFormat], rounding: Rounding,
                   rbits: int, seed: Optional[int]) -> torch.Tensor:
    """Round a contiguous fp32 tensor onto a ``FixedPoint`` or ``IntFormat``."""
    return launch("_fixed_kernel", x, rounding, rbits, seed,
                  dataclasses.astuple(fixed_params(fmt)), {})
