"""``HistogramObserver``: a histogram of |x| accumulated over batches, from which a clipping
threshold ``t`` is chosen by KL divergence (entropy calibration, as TensorRT and MXNet), a
percentile, or the expected squared error."""

from __future__ import annotations

import math
from typing import Optional, Tuple

import torch

from ..formats.modes import _StrEnum
from .observers import Observer

__all__ = ["HistogramMethod", "HistogramObserver"]

# MXNet's ``_smooth_distribution`` epsilon: zero bins get this much mass so that KL is finite.
_SMOOTH_EPS = 1e-4


class HistogramMethod(_StrEnum):
    """How ``HistogramObserver`` turns its histogram into a threshold."""

    #: The edge t minimising KL(P || Q) between the clipped histogram and its quantized copy.
    KL = "kl"
    #: The right edge of the first bin where the cumulative count reaches ``percentile`` %.
    PERCENTILE = "percentile"
    #: The edge t minimising Σ count_b · (q_t(c_b) - c_b)² over the bin centres c_b.
    MSE = "mse"


def _smooth(d: torch.Tensor) -> torch.Tensor:
    zeros = d == 0
    n_zero, n_nonzero = int(zeros.sum()), int((~zeros).sum())
    if n_nonzero == 0:
        return d
    return d + _SMOOTH_EPS * zeros - (_SMOOTH_EPS * n_zero / n_nonzero) * (~zeros)


def kl_threshold_bin(hist: torch.Tensor, levels: int) -> int:
    """The number of bins ``i`` (``levels ≤ i ≤ bins``) whose right edge is the KL-optimal
    threshold.

    For each i: P = hist[:i] with the outlier mass hist[i:] added to P's last bin; Q merges
    hist[:i] into ``levels`` chunks (bin b belongs to chunk floor(b·levels/i)) and spreads each
    chunk's mass evenly over the bins where P is non-zero; both are smoothed (zero bins get
    1e-4, taken evenly from the others) and normalised; the first i minimising
    KL(P||Q) = Σ P log(P/Q) wins.
    """
    hist = hist.double()
    bins = hist.numel()
    best_i, best_kl = bins, float("inf")
    for i in range(levels, bins + 1):
        sliced = hist[:i]
        p = sliced.clone()
        p[-1] += hist[i:].sum()
        nonzero = (p != 0).double()
        chunk = torch.arange(i) * levels // i
        sums = torch.bincount(chunk, weights=sliced, minlength=levels)
        norms = torch.bincount(chunk, weights=nonzero, minlength=levels)
        q = torch.where(norms[chunk] > 0, sums[chunk] / norms[chunk].clamp(min=1), 0.0) * nonzero
        p, q = _smooth(p), _smooth(q)
        if q.sum() <= 0:
            continue
        p, q = p / p.sum(), q / q.sum()
        pos = p > 0
        kl = float((p[pos] * torch.log(p[pos] / q[pos])).sum())
        if kl < best_kl:
            best_i, best_kl = i, kl
    return best_i


def mse_threshold_bin(hist: torch.Tensor, levels: int) -> int:
    """The number of bins ``i`` (1..bins) whose right edge ``t = i·w`` minimises the expected
    squared error Σ_b hist_b·(q_t(c_b) - c_b)² of the bin centres ``c_b = (b + ½)·w`` under
    ``q_t(c) = min(round(c/s), levels - 1)·s`` with ``s = t/(levels - 1)`` (w = 1 here)."""
    hist = hist.double()
    bins = hist.numel()
    centres = torch.arange(bins, dtype=torch.float64) + 0.5
    best_i, best_err = bins, float("inf")
    for start in range(1, bins + 1, 256):
        t = torch.arange(start, min(start + 256, bins + 1), dtype=torch.float64)[:, None]
        s = t / (levels - 1)
        q = torch.clamp(torch.round(centres / s), max=levels - 1) * s
        err = ((q - centres).square() * hist).sum(dim=1)
        k = int(torch.argmin(err))
        if float(err[k]) < best_err:
            best_i, best_err = start + k, float(err[k])
    return best_i


class HistogramObserver(Observer):
    """A ``bins``-bin histogram of |x| over ``[0, upper)`` accumulated across batches.

    The first non-zero batch sets ``upper`` just above ``max|x|`` (the next float64); a later
    batch reaching ``upper`` doubles it (merging pairs of bins, which is exact) until every
    value lies below it.  ``bounds()`` returns ``(-t, t)`` once a negative value has
    been seen, else ``(0, t)``, with ``t`` chosen by ``method``.

    Args:
        qmin, qmax: the quantizer's code range; the positive side has ``levels`` codes:
            ``qmax + 1`` when symmetric, else all ``qmax - qmin + 1`` codes for non-negative
            data and half of them for signed data.
        symmetric: whether the quantizer is symmetric.
        method: a ``HistogramMethod`` (``kl``, ``percentile``, ``mse``).
        bins: number of bins (even).
        percentile: for ``percentile``, in (0, 100].
    """

    needs_code_range = True

    def __init__(self, qmin: int = -128, qmax: int = 127, *, symmetric: bool = True,
                 method: str = "kl", bins: int = 2048, percentile: float = 99.99,
                 axis: Optional[int] = None) -> None:
        super().__init__(axis=None, accumulate="running")
        if axis is not None:
            raise ValueError("HistogramObserver is per-tensor only (axis=None); use "
                             "PercentileObserver or MSEObserver per channel")
        if isinstance(bins, bool) or not isinstance(bins, int) or bins < 2 or bins % 2:
            raise ValueError(f"bins must be an even int >= 2; got {bins!r}")
        if not 0 < percentile <= 100:
            raise ValueError(f"percentile must be in (0, 100]; got {percentile!r}")
        self.method = HistogramMethod.parse(method, "method")
        self.qmin, self.qmax, self.symmetric = qmin, qmax, symmetric
        self.bins, self.percentile = bins, float(percentile)
        self.register_buffer("hist", torch.zeros(bins, dtype=torch.int64))
        self.register_buffer("upper", torch.zeros((), dtype=torch.float64))
        self.register_buffer("signed", torch.zeros((), dtype=torch.bool))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            self._add(x.detach().float().reshape(-1))
        return x

    def _add(self, x: torch.Tensor) -> None:
        a = x.abs()
        amax = float(a.max()) if a.numel() else 0.0
        self.signed |= bool((x < 0).any())
        # Every value stays strictly below ``upper`` (no inclusive last edge), so merging pairs
        # of bins after a doubling puts each value exactly where binning it afresh would.
        if float(self.upper) == 0.0 and amax > 0:
            self.upper.fill_(math.nextafter(amax, math.inf))
        while amax >= float(self.upper) > 0:
            merged = self.hist.reshape(-1, 2).sum(dim=1)
            self.hist = torch.cat([merged, torch.zeros_like(merged)])
            self.upper *= 2
        if float(self.upper) > 0:
            # Edges i·(upper/bins) as numpy's histogram; doubling upper scales them by exact
            # powers of two, so merged fine bins are exactly the coarse bins.
            edges = torch.arange(self.bins + 1, dtype=torch.float64, device=a.device) \
                * (float(self.upper) / self.bins)
            idx = torch.bucketize(a.double(), edges, right=True) - 1
        else:
            idx = torch.zeros_like(a, dtype=torch.long)
        self.hist += torch.bincount(idx.clamp(0, self.bins - 1), minlength=self.bins).to(
            self.hist.device)
        self.count += 1

    @property
    def levels(self) -> int:
        """Codes on the positive side, zero included (see the class docstring)."""
        if self.symmetric:
            return self.qmax + 1
        n = self.qmax - self.qmin + 1
        return n // 2 if bool(self.signed) else n

    def threshold(self) -> float:
        """The clipping threshold t chosen by ``method``."""
        if int(self.count) == 0:
            raise RuntimeError("HistogramObserver has observed nothing yet")
        width = float(self.upper) / self.bins
        if self.method is HistogramMethod.PERCENTILE:
            cum = torch.cumsum(self.hist, 0).double()
            goal = self.percentile / 100 * float(cum[-1])
            i = int(torch.searchsorted(cum, torch.tensor([goal], dtype=torch.float64))) + 1
            return min(i, self.bins) * width
        if self.method is HistogramMethod.KL:
            return kl_threshold_bin(self.hist.cpu(), min(self.levels, self.bins)) * width
        return mse_threshold_bin(self.hist.cpu(), max(self.levels, 2)) * width

    def bounds(self) -> Tuple[torch.Tensor, torch.Tensor]:
        t = torch.tensor(self.threshold(), dtype=torch.float32, device=self.hist.device)
        return (-t if bool(self.signed) else torch.zeros_like(t)), t

    def reset(self) -> None:
        self.hist.zero_()
        self.upper.zero_()
        self.signed.zero_()
        self.count.zero_()

    def extra_repr(self) -> str:
        return f"method={self.method.value}, bins={self.bins}, qmin={self.qmin}, qmax={self.qmax}"
