"""Quantizers with learned range parameters: LSQ / LSQ+, PACT and TQT.

Their *observe* switch initialises the parameters from data.  While only observing
(calibration modes) every batch re-initialises them; once quantizing (QAT modes) only the first
batch does (if nothing initialised them before) and from then on the optimizer owns them.  So
"calibrate, then train" gives calibrated starting values, as Brevitas' parameter-from-stats.
"""

from __future__ import annotations

import functools
import math
from typing import Optional, Union

import torch
from torch import nn

from . import functional as F
from ._granularity import grouped, param_shape
from .observers import OBSERVERS, Observer, make_observer, range_to_qparams
from .quantizers import QUANTIZERS, QParams, Quantizer, code_range
from .state import Role

__all__ = ["LSQQuantizer", "PACTQuantizer", "TQTQuantizer"]


class _Learned(Quantizer):
    """Shared plumbing: an ``initialized`` flag, a lazily resolved sign, and the
    observe-means-initialise rule of the module docstring."""

    def __init__(self, *, signed: Optional[bool], role: str) -> None:
        super().__init__(role=role)
        if signed is not None and not isinstance(signed, bool):
            raise TypeError(f"signed must be a bool or None (decided by the first batch); "
                            f"got {signed!r}")
        self.register_buffer("initialized", torch.tensor(False))
        # -1: decided by the first observed batch (signed iff it holds a negative value).
        self.register_buffer("sign_code", torch.tensor(-1 if signed is None else int(signed)))

    @property
    def signed(self) -> bool:
        code = int(self.sign_code)
        if code < 0:
            raise RuntimeError(f"{type(self).__name__} has not seen data yet, so its sign is "
                               "undecided: observe data first or pass signed=")
        return bool(code)

    def observe(self, x: torch.Tensor) -> None:
        if self.quantizing and bool(self.initialized):
            return
        with torch.no_grad():
            x = x.detach().float()
            if int(self.sign_code) < 0:
                self.sign_code.fill_(int(bool((x < 0).any())))
            self._init_from(x)
        self.initialized.fill_(True)

    def _init_from(self, x: torch.Tensor) -> None:
        raise NotImplementedError

    def _require_init(self) -> None:
        if not bool(self.initialized):
            raise RuntimeError(f"{type(self).__name__} is not initialised: observe data first "
                               "(mode 'calibrate' or 'qat', or call initialize(x))")


def _set(param: nn.Parameter, value: torch.Tensor) -> None:
    # Same Parameter object (an optimizer built earlier keeps it); the shape may be new when a
    # per-channel scale is materialised from its first batch.
    if param.shape == value.shape:
        param.data.copy_(value)
    else:
        param.data = value.to(param.dtype).clone()


class LSQQuantizer(_Learned):
    """LSQ (Esser et al. 2020) with a learned step size, and LSQ+ (Bhalgat et al. 2020) with
    a learned offset too (``offset=True``): ``functional.lsq_quantize``.

    Initialisation: ``init="lsq"`` sets ``s = 2·mean|x|/sqrt(qmax)`` (LSQ, offset 0); with an
    offset, or with an observer name (``"minmax"``, ``"percentile"``, ``"mse"``, ...),
    ``s`` (and ``β = lo - qmin·s``) come from the observed range.  Gradient scale:
    ``1/sqrt(N·qmax)`` with N the elements per scale for weights, and the elements per scale
    of one example for activations (LSQ's "number of features").

    Args:
        bits: 2..16 (signed) or 1..16 (unsigned).
        signed: code sign; None decides from the first batch (negative values ⇒ signed).
        offset: learn LSQ+'s offset β.
        axis, group_size: granularity (per-channel/group scales materialise on the first batch).
        init: ``"lsq"`` or an observer name.
        grad_scale: ``"auto"`` (above), a float, or None (= 1).
    """

    def __init__(self, bits: int = 8, *, signed: Optional[bool] = None, offset: bool = False,
                 axis: Optional[int] = None, group_size: Optional[int] = None,
                 init: str = "lsq", grad_scale: Union[str, float, None] = "auto",
                 role: str = "activation") -> None:
        super().__init__(signed=signed, role=role)
        code_range(bits, signed=False)
        if init != "lsq" and init not in OBSERVERS:
            raise ValueError(f"init must be 'lsq' or one of {sorted(OBSERVERS)}; got {init!r}")
        self.bits, self.axis, self.group_size, self.init = bits, axis, group_size, init
        self.grad_scale = grad_scale
        self.observer: Optional[Observer] = None
        shape = () if axis is None else (0,)
        self.scale = nn.Parameter(torch.ones(shape))
        self.offset = nn.Parameter(torch.zeros(shape)) if offset else None

    @property
    def qrange(self) -> tuple:
        """(qmin, qmax) for the decided sign."""
        return code_range(self.bits, signed=self.signed)

    def _init_from(self, x: torch.Tensor) -> None:
        qmin, qmax = self.qrange
        shape = param_shape(x.shape, self.axis, self.group_size)
        if self.init == "lsq" and self.offset is None:
            rows = grouped(x.abs(), self.axis, self.group_size, float("nan"))
            mean = torch.nanmean(rows, dim=-1).reshape(shape)
            scale = torch.clamp(2 * mean / math.sqrt(qmax), min=torch.finfo(torch.float32).eps)
            _set(self.scale, scale)
            return
        if self.observer is None:
            name = "minmax" if self.init == "lsq" else self.init
            self.observer = make_observer(name, axis=self.axis, group_size=self.group_size,
                                          qmin=qmin, qmax=qmax, symmetric=self.offset is None)
        self.observer(x)
        lo, hi = self.observer.bounds()
        scale, _ = range_to_qparams(lo, hi, qmin, qmax, symmetric=self.offset is None)
        _set(self.scale, scale.reshape(shape))
        if self.offset is not None:
            _set(self.offset, (torch.clamp(lo, max=0) - qmin * scale).reshape(shape))

    def _grad_scale(self, x: torch.Tensor) -> Union[str, float, None]:
        if self.grad_scale != "auto" or self.role is Role.WEIGHT:
            return self.grad_scale
        per_scale = x.numel() // max(1, self.scale.numel())
        return F.lsq_grad_scale(max(1, per_scale // max(1, x.shape[0] if x.dim() else 1)),
                                self.qrange[1])

    def quantize(self, x: torch.Tensor) -> torch.Tensor:
        self._require_init()
        qmin, qmax = self.qrange
        return F.lsq_quantize(x, self.scale, qmin, qmax, offset=self.offset,
                              grad_scale=self._grad_scale(x), axis=self.axis,
                              group_size=self.group_size)

    def qparams(self, x: Optional[torch.Tensor] = None) -> QParams:
        self._require_init()
        qmin, qmax = self.qrange
        scale = self.scale.detach()
        if self.offset is None:
            return QParams(scale, torch.zeros_like(scale), qmin, qmax, self.axis, self.group_size)
        # LSQ+'s float offset becomes the nearest integer zero point: exact when β/s is an
        # integer, otherwise the exported grid is shifted by less than half a step.
        zp = torch.round(-self.offset.detach() / scale)
        return QParams(scale, zp, qmin, qmax, self.axis, self.group_size)

    def extra_repr(self) -> str:
        return (f"bits={self.bits}, offset={self.offset is not None}, axis={self.axis}, "
                f"group_size={self.group_size}, init={self.init}, role={self.role.value}")


class PACTQuantizer(_Learned):
    """PACT activations (Choi et al. 2018): ``functional.pact_quantize`` with a learned
    clipping level α: unsigned codes ``[0, 2^b - 1]`` with scale ``α/(2^b - 1)``, or, for signed
    data, symmetric codes ``[-(2^(b-1) - 1), 2^(b-1) - 1]`` with scale ``α/(2^(b-1) - 1)``.

    Args:
        bits: 1..16 (2..16 signed).
        alpha: the initial α; None takes the first observed batch's largest magnitude.
        signed: None decides from the first batch (negative values ⇒ signed).
    """

    def __init__(self, bits: int = 8, *, alpha: Optional[float] = None,
                 signed: Optional[bool] = None, role: str = "activation") -> None:
        super().__init__(signed=signed, role=role)
        code_range(bits, signed=False)
        self.bits = bits
        self.alpha = nn.Parameter(torch.tensor(1.0 if alpha is None else float(alpha)))
        if alpha is not None:
            if not alpha > 0:
                raise ValueError(f"alpha must be positive; got {alpha!r}")
            if signed is None:
                raise ValueError("with an explicit alpha pass signed= too (nothing is observed)")
            self.initialized.fill_(True)

    def _init_from(self, x: torch.Tensor) -> None:
        self.alpha.data.fill_(max(float(x.abs().max()), torch.finfo(torch.float32).eps))

    def quantize(self, x: torch.Tensor) -> torch.Tensor:
        self._require_init()
        return F.pact_quantize(x, self.alpha, self.bits, signed=self.signed)

    def qparams(self, x: Optional[torch.Tensor] = None) -> QParams:
        self._require_init()
        qmin, qmax = code_range(self.bits, signed=self.signed, narrow=True)
        scale = self.alpha.detach() / qmax
        return QParams(scale, torch.zeros_like(scale), qmin, qmax)

    def extra_repr(self) -> str:
        return f"bits={self.bits}, role={self.role.value}"


class TQTQuantizer(_Learned):
    """TQT (Jain et al. 2019): ``functional.tqt_quantize`` with a learned log2-threshold and
    power-of-two scale, per tensor.  ``log2 t`` starts at ``log2(amax)`` of the observer's
    range (TQT's "max" init with ``minmax``; ``percentile`` or ``histogram`` (KL) for the
    others).

    Args:
        bits: 2..16 (signed) or 1..16 (unsigned).
        signed: None decides from the first batch.
        init: observer name.
    """

    def __init__(self, bits: int = 8, *, signed: Optional[bool] = None, init: str = "minmax",
                 role: str = "activation") -> None:
        super().__init__(signed=signed, role=role)
        code_range(bits, signed=False)
        if init not in OBSERVERS:
            raise ValueError(f"init must be one of {sorted(OBSERVERS)}; got {init!r}")
        self.bits, self.init = bits, init
        self.observer: Optional[Observer] = None
        self.log2_t = nn.Parameter(torch.zeros(()))

    def _init_from(self, x: torch.Tensor) -> None:
        if self.observer is None:
            qmin, qmax = code_range(self.bits, signed=self.signed)
            self.observer = make_observer(self.init, axis=None, group_size=None, qmin=qmin,
                                          qmax=qmax, symmetric=True)
        self.observer(x)
        lo, hi = self.observer.bounds()
        amax = max(float(torch.maximum(-lo, hi)), torch.finfo(torch.float32).tiny)
        self.log2_t.data.fill_(math.log2(amax))

    def quantize(self, x: torch.Tensor) -> torch.Tensor:
        self._require_init()
        return F.tqt_quantize(x, self.log2_t, self.bits, signed=self.signed)

    def qparams(self, x: Optional[torch.Tensor] = None) -> QParams:
        self._require_init()
        qmin, qmax = code_range(self.bits, signed=self.signed)
        scale = F.tqt_scale(self.log2_t.detach(), self.bits, signed=self.signed)
        return QParams(scale, torch.zeros_like(scale), qmin, qmax)

    def extra_repr(self) -> str:
        return f"bits={self.bits}, init={self.init}, role={self.role.value}"


QUANTIZERS.update({
    "lsq": LSQQuantizer,
    "lsq+": functools.partial(LSQQuantizer, offset=True),
    "pact": PACTQuantizer,
    "tqt": TQTQuantizer,
})
