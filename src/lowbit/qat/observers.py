"""Range observers: modules that watch tensors and report the range ``[lo, hi]`` a quantizer
should cover, and ``range_to_qparams`` turning a range into a scale and zero point.

Every observer reduces a batch to a range (per tensor, per channel along ``axis``, or per group
for the min/max family) and combines successive batches by its ``Accumulation`` policy:
``latest`` (the last batch only: TorchQuant's ``BatchMinMax``), ``running`` (min of mins, max of
maxes: torch.ao's ``MinMaxObserver``) or ``ema`` (exponential moving average from 0 with Adam's
bias correction: TorchQuant's ``ExpAvgMinMax``).  Search-based observers (``MSEObserver``,
``HistogramObserver``) need the code range they optimise for (``qmin``/``qmax``).
"""

from __future__ import annotations

from typing import Dict, Optional, Tuple, Type

import torch
from torch import nn

from ..formats.modes import _StrEnum
from ._granularity import check_granularity, grouped, param_shape

__all__ = [
    "Accumulation", "Observer", "MinMaxObserver", "EMAMinMaxObserver", "PercentileObserver",
    "MSEObserver", "range_to_qparams", "OBSERVERS", "make_observer",
]


class Accumulation(_StrEnum):
    """How an observer combines the ranges of successive batches."""

    #: The range of the latest batch only.
    LATEST = "latest"
    #: The union of every batch's range: min of the minima, max of the maxima.
    RUNNING = "running"
    #: m_t = μ·m_(t-1) + (1-μ)·r_t from m_0 = 0, read as m_t / (1 - μ^t) (bias-corrected).
    EMA = "ema"


def range_to_qparams(lo: torch.Tensor, hi: torch.Tensor, qmin: int, qmax: int, *,
                     symmetric: bool) -> Tuple[torch.Tensor, torch.Tensor]:
    """Scale and zero point covering ``[lo, hi]`` widened to contain 0.

    Asymmetric: ``s = (hi - lo)/(qmax - qmin)``, ``z = clamp(qmin - round(lo/s), qmin, qmax)``.
    Symmetric: ``s = max(-lo, hi)/qmax`` (``+amax`` maps to ``qmax``), ``z = 0``.  A zero-width
    range gives ``s = 2^-23`` (torch.ao's eps) so that nothing divides by zero.

    Returns:
        (scale, zero_point) as float32 tensors of ``lo``'s shape; the zero point holds integers.
    """
    lo = torch.clamp(lo.float(), max=0.0)
    hi = torch.clamp(hi.float(), min=0.0)
    eps = torch.finfo(torch.float32).eps
    if symmetric:
        scale = torch.maximum(-lo, hi) / qmax
        return torch.clamp(scale, min=eps), torch.zeros_like(scale)
    scale = torch.clamp((hi - lo) / (qmax - qmin), min=eps)
    zero_point = torch.clamp(qmin - torch.round(lo / scale), qmin, qmax)
    return scale, zero_point


class Observer(nn.Module):
    """Base class: ``forward(x)`` observes ``x`` (without autograd) and returns it unchanged;
    ``bounds()`` gives the accumulated ``(lo, hi)``.

    Args:
        axis: None (per-tensor) or the channel axis (one range per index along it).
        group_size: one range per run of this many elements along ``axis``.
        accumulate: an ``Accumulation`` policy or its name.
        momentum: μ of the ``ema`` policy, in [0, 1).
    """

    supports_groups = False
    needs_code_range = False

    def __init__(self, *, axis: Optional[int] = None, group_size: Optional[int] = None,
                 accumulate: str = "latest", momentum: float = 0.9) -> None:
        super().__init__()
        check_granularity(axis, group_size)
        if group_size is not None and not self.supports_groups:
            raise ValueError(f"{type(self).__name__} has no per-group mode; use MinMaxObserver "
                             "or EMAMinMaxObserver for group_size")
        if isinstance(momentum, bool) or not isinstance(momentum, (int, float)) \
                or not 0 <= momentum < 1:
            raise ValueError(f"momentum must be in [0, 1); got {momentum!r}")
        self.axis, self.group_size = axis, group_size
        self.accumulate = Accumulation.parse(accumulate, "accumulate")
        self.momentum = float(momentum)
        self.register_buffer("lo", torch.empty(0))
        self.register_buffer("hi", torch.empty(0))
        self.register_buffer("count", torch.zeros((), dtype=torch.int64))

    def batch_range(self, x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """The range of one batch, shaped like the parameters of the granularity."""
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            lo, hi = self.batch_range(x.detach().float())
            self._combine(lo, hi)
        return x

    def _combine(self, lo: torch.Tensor, hi: torch.Tensor) -> None:
        first = int(self.count) == 0 or self.lo.shape != lo.shape
        if self.accumulate is Accumulation.EMA:
            m = self.momentum
            if first:
                self.lo, self.hi = (1 - m) * lo, (1 - m) * hi
            else:
                self.lo, self.hi = m * self.lo + (1 - m) * lo, m * self.hi + (1 - m) * hi
        elif self.accumulate is Accumulation.RUNNING and not first:
            self.lo, self.hi = torch.minimum(self.lo, lo), torch.maximum(self.hi, hi)
        else:
            self.lo, self.hi = lo.clone(), hi.clone()
        self.count = torch.ones_like(self.count) if first else self.count + 1

    def bounds(self) -> Tuple[torch.Tensor, torch.Tensor]:
        """The accumulated ``(lo, hi)``.

        Raises:
            RuntimeError: nothing was observed yet.
        """
        if int(self.count) == 0:
            raise RuntimeError(f"{type(self).__name__} has observed nothing yet: run data "
                               "through it (a 'calibrate' or 'qat' mode) first")
        if self.accumulate is Accumulation.EMA:
            corr = 1 - self.momentum ** int(self.count)
            return self.lo / corr, self.hi / corr
        return self.lo, self.hi

    def reset(self) -> None:
        """Forget everything observed."""
        self.lo, self.hi = torch.empty(0), torch.empty(0)
        self.count = torch.zeros((), dtype=torch.int64)

    def _load_from_state_dict(self, state_dict: dict, prefix: str, *args, **kwargs) -> None:
        # Ranges are shaped on first use; adopt the saved shapes so a fresh observer loads.
        for name in ("lo", "hi"):
            saved = state_dict.get(prefix + name)
            if saved is not None:
                setattr(self, name, torch.empty_like(saved))
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def _rows(self, x: torch.Tensor, pad: float) -> torch.Tensor:
        return grouped(x, self.axis, self.group_size, pad)

    def _shape(self, x: torch.Tensor) -> Tuple[int, ...]:
        return param_shape(x.shape, self.axis, self.group_size)

    def extra_repr(self) -> str:
        return f"axis={self.axis}, group_size={self.group_size}, accumulate={self.accumulate.value}"


class MinMaxObserver(Observer):
    """``lo = min x``, ``hi = max x`` of each batch (per tensor, channel or group)."""

    supports_groups = True

    def batch_range(self, x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        shape = self._shape(x)
        lo = self._rows(x, float("inf")).amin(dim=-1)
        hi = self._rows(x, float("-inf")).amax(dim=-1)
        return lo.reshape(shape), hi.reshape(shape)


class EMAMinMaxObserver(MinMaxObserver):
    """Batch min/max averaged by an EMA with bias correction (``accumulate='ema'``):
    ``m_t = μ m_(t-1) + (1-μ) r_t``, ``m_0 = 0``, reported as ``m_t / (1 - μ^t)``."""

    def __init__(self, *, axis: Optional[int] = None, group_size: Optional[int] = None,
                 momentum: float = 0.9) -> None:
        super().__init__(axis=axis, group_size=group_size, accumulate="ema", momentum=momentum)


def _quantile_rows(rows: torch.Tensor, q: float) -> torch.Tensor:
    """Per-row quantile with numpy's default ``linear`` rule: position h = (n-1)·q,
    value = x_(floor h) + (h - floor h)·(x_(floor h + 1) - x_(floor h))."""
    n = rows.shape[-1]
    h = (n - 1) * q
    k = int(h)
    lo = torch.kthvalue(rows, k + 1, dim=-1).values
    if k + 1 >= n or h == k:
        return lo
    hi = torch.kthvalue(rows, k + 2, dim=-1).values
    return lo + (h - k) * (hi - lo)


class PercentileObserver(Observer):
    """``lo`` and ``hi`` = the ``(100 - p)``-th and ``p``-th percentiles of each batch (numpy's
    linear interpolation), per tensor or channel; clips the rare outliers min/max would keep.

    Args:
        percentile: p in (50, 100].
    """

    def __init__(self, percentile: float = 99.99, *, axis: Optional[int] = None,
                 accumulate: str = "latest", momentum: float = 0.9) -> None:
        super().__init__(axis=axis, accumulate=accumulate, momentum=momentum)
        if isinstance(percentile, bool) or not isinstance(percentile, (int, float)) \
                or not 50 < percentile <= 100:
            raise ValueError(f"percentile must be in (50, 100]; got {percentile!r}")
        self.percentile = float(percentile)

    def batch_range(self, x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        rows, shape = self._rows(x, 0.0), self._shape(x)
        p = self.percentile / 100
        return (_quantile_rows(rows, 1 - p).reshape(shape),
                _quantile_rows(rows, p).reshape(shape))


class MSEObserver(Observer):
    """The range minimising the quantization MSE of each batch: candidates
    ``[c·lo, c·hi]`` (symmetric: ``[-c·amax, c·amax]``) for ``c = k/grid``, k = 1..grid, with
    ``lo``/``hi`` the batch min/max widened to 0; each candidate's mean squared error of
    ``affine_quantize`` on the batch is measured and the first minimum is kept, per channel.

    Args:
        qmin, qmax: the code range the quantizer will use.
        symmetric: search symmetric ranges (zero point 0).
        grid: number of candidates.
    """

    needs_code_range = True

    def __init__(self, qmin: int = -128, qmax: int = 127, *, symmetric: bool = False,
                 grid: int = 100, axis: Optional[int] = None, accumulate: str = "latest",
                 momentum: float = 0.9) -> None:
        super().__init__(axis=axis, accumulate=accumulate, momentum=momentum)
        if isinstance(grid, bool) or not isinstance(grid, int) or grid < 1:
            raise ValueError(f"grid must be a positive int; got {grid!r}")
        self.qmin, self.qmax, self.symmetric, self.grid = qmin, qmax, symmetric, grid

    def batch_range(self, x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        rows, shape = self._rows(x, 0.0), self._shape(x)
        lo = rows.amin(dim=-1, keepdim=True).clamp(max=0)
        hi = rows.amax(dim=-1, keepdim=True).clamp(min=0)
        if self.symmetric:
            hi = torch.maximum(-lo, hi)
            lo = -hi
        best = torch.full_like(lo, float("inf"))
        best_c = torch.ones_like(lo)
        for k in range(1, self.grid + 1):
            c = k / self.grid
            s, z = range_to_qparams(c * lo, c * hi, self.qmin, self.qmax, symmetric=self.symmetric)
            q = (torch.clamp(torch.round(rows / s) + z, self.qmin, self.qmax) - z) * s
            err = (q - rows).square().mean(dim=-1, keepdim=True)
            better = err < best
            best = torch.where(better, err, best)
            best_c = torch.where(better, torch.full_like(best_c, c), best_c)
        return (best_c * lo).reshape(shape), (best_c * hi).reshape(shape)

    def extra_repr(self) -> str:
        return (f"qmin={self.qmin}, qmax={self.qmax}, symmetric={self.symmetric}, "
                f"grid={self.grid}, {super().extra_repr()}")


def _histogram_cls() -> Type[Observer]:
    from ._histogram import HistogramObserver

    return HistogramObserver


#: Observer classes by name (``AffineQuantizer(observer="ema")``); ``histogram`` loads lazily.
OBSERVERS: Dict[str, object] = {
    "minmax": MinMaxObserver,
    "ema": EMAMinMaxObserver,
    "percentile": PercentileObserver,
    "mse": MSEObserver,
    "histogram": _histogram_cls,
}


def make_observer(name: str, *, axis: Optional[int], group_size: Optional[int], qmin: int,
                  qmax: int, symmetric: bool, **options) -> Observer:
    """Build the observer registered as ``name`` for a quantizer's granularity and code range.

    Raises:
        ValueError: an unknown name.
    """
    if name not in OBSERVERS:
        raise ValueError(f"observer must be one of {sorted(OBSERVERS)}; got {name!r}")
    entry = OBSERVERS[name]
    cls = entry() if entry is _histogram_cls else entry
    kwargs = dict(options)
    if cls.needs_code_range:
        kwargs.update(qmin=qmin, qmax=qmax, symmetric=symmetric)
    if group_size is not None:
        kwargs["group_size"] = group_size
    return cls(axis=axis, **kwargs)
