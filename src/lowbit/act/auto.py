"""Auto precision: ActNN's per-layer bit allocation (arXiv 2104.14129, §4; ``Store.AUTO``).

Variance model.  Stochastic rounding of an element of a group with range ``R_g`` at ``b`` bits
adds variance at most ``Δ²/4``, ``Δ = R_g / (2^b - 1)``.  A weight gradient ``dW = Σ_p dy_pᵀ
x_p`` sums over the ``P`` output positions, each input element entering ``a`` of them (``a`` =
kernel area / groups for a convolution, 1 otherwise), so layer ``l``'s extra gradient variance
is about ``C_l / (2^{b_l} - 1)²`` with

    C_l = a_l · (S_l / P_l) · Σ_g n_g · R_g² / 4,

``S_l = ‖∂L/∂y_l‖²`` (the squared output-gradient norm), ``P_l = numel(y_l) / channels`` and
``n_g`` the group's element count.  This is ActNN's per-layer sensitivity (range² times
output-gradient², its ``kernel_area`` factor included).

Allocation (ActNN's greedy): start every layer at the widest width, then repeatedly narrow
the layer whose objective ``Σ_l C_l / (2^{b_l} - 1)²`` grows least per bit saved, until
``Σ_l b_l · N_l <= avg_bits · Σ_l N_l`` (``N_l``: elements compressed per step).  Widths are
1, 2, 4 and 8 bits (the packable ones).  Statistics are accumulated on the device (no host
sync per layer) and read once per solve; a solve runs every ``interval`` steps (a step is
one ``compress`` context), with an exponential moving average of ``C`` over solves.
"""

from __future__ import annotations

import math
from typing import Dict, Optional

import torch

from ..kernels.pack import BITS, PackedGroups

__all__ = ["AutoPrecision"]


class _Stats:
    __slots__ = ("ranges", "grads", "numel", "positions", "area")

    def __init__(self):
        self.ranges: Optional[torch.Tensor] = None
        self.grads: Optional[torch.Tensor] = None
        self.numel = 0
        self.positions = 0
        self.area = 1.0


class AutoPrecision:
    """Per-layer bit widths averaging ``avg_bits`` (module docstring for the formula).

    Args:
        avg_bits: the target average width (in [1, 8]).
        interval: steps (``compress`` contexts) between solves.
        decay: weight of the previous estimate of ``C_l`` in the moving average.
    """

    def __init__(self, avg_bits: float = 2.0, *, interval: int = 1, decay: float = 0.5):
        if not isinstance(avg_bits, (int, float)) or not 1 <= avg_bits <= 8:
            raise ValueError(f"avg_bits must be a number in [1, 8]; got {avg_bits!r}")
        if isinstance(interval, bool) or not isinstance(interval, int) or interval < 1:
            raise ValueError(f"interval must be a positive int; got {interval!r}")
        if not 0 <= decay < 1:
            raise ValueError(f"decay must be in [0, 1); got {decay!r}")
        self.avg_bits = float(avg_bits)
        self.interval = interval
        self.decay = decay
        #: The width before the first solve: the widest one not above the target.
        self.initial = max(b for b in BITS if b <= self.avg_bits)
        self.allocation: Dict[str, int] = {}
        self.sensitivity: Dict[str, float] = {}
        self._numel: Dict[str, int] = {}
        self._stats: Dict[str, _Stats] = {}
        self._steps = 0

    def bits(self, layer: str) -> int:
        """The current width of ``layer`` (a qualified module name)."""
        return self.allocation.get(layer, self.initial)

    # -- observation (called by compress) ---------------------------------------------------
    def observe_ranges(self, layer: str, p: PackedGroups) -> None:
        """Add ``Σ_g n_g · R_g²`` of a packed tensor to ``layer``'s statistics."""
        s = self._stats.setdefault(layer, _Stats())
        span = (p.hi.float() - p.lo.float()).nan_to_num(0.0, 0.0, 0.0)
        energy = span.square().sum() * p.group_size
        s.ranges = energy if s.ranges is None else s.ranges + energy
        s.numel += math.prod(p.shape)

    def observe_output(self, layer: str, module: torch.nn.Module, y: torch.Tensor) -> None:
        """Hook ``y`` (the layer's output) so that its gradient's squared norm is recorded."""
        s = self._stats.setdefault(layer, _Stats())
        weight = getattr(module, "weight", None)
        channels = weight.shape[0] if isinstance(weight, torch.Tensor) and weight.dim() else (
            y.shape[-1] if y.dim() else 1)
        if isinstance(module, torch.nn.modules.conv._ConvNd):
            s.area = math.prod(module.kernel_size) / module.groups
            channels = module.out_channels
        s.positions += max(1, y.numel() // max(1, channels))

        def record(g: torch.Tensor) -> None:
            energy = g.detach().float().square().sum()
            s.grads = energy if s.grads is None else s.grads + energy

        y.register_hook(record)

    def step(self) -> None:
        """Count a step; solve when ``interval`` steps have passed since the last solve."""
        self._steps += 1
        if self._steps % self.interval == 0 and self._stats:
            self.solve()

    # -- the allocation ---------------------------------------------------------------------
    def solve(self) -> Dict[str, int]:
        """Fold the recorded statistics into ``sensitivity`` and re-allocate (one host sync)."""
        names = [n for n, s in self._stats.items() if s.ranges is not None and s.numel]
        if names:
            rows = []
            for n in names:
                r = self._stats[n].ranges.float()
                g = self._stats[n].grads
                rows.append(torch.stack([r, g.float() if g is not None
                                         else torch.full_like(r, float("nan"))]))
            pairs = torch.stack(rows)  # one device tensor: one sync below
            values = pairs.tolist()
            known = [g / max(1, self._stats[n].positions) for n, (_, g) in zip(names, values)
                     if g == g]
            fallback = sum(known) / len(known) if known else 1.0
            for n, (r, g) in zip(names, values):
                s = self._stats[n]
                per_pos = g / max(1, s.positions) if g == g else fallback
                c = s.area * per_pos * r / 4
                old = self.sensitivity.get(n)
                self.sensitivity[n] = c if old is None else self.decay * old + (1 - self.decay) * c
                self._numel[n] = s.numel
        self._stats = {}
        self.allocation = self.allocate(self.sensitivity, self._numel, self.avg_bits)
        return dict(self.allocation)

    @staticmethod
    def allocate(sensitivity: Dict[str, float], numel: Dict[str, int],
                 avg_bits: float) -> Dict[str, int]:
        """ActNN's greedy: from the widest width, narrow the layer with the least objective
        increase per bit saved until the average width is at most ``avg_bits``."""
        widths = sorted(BITS)
        bits = {n: widths[-1] for n in sensitivity}
        budget = avg_bits * sum(numel[n] for n in bits)

        def var(n: str, b: int) -> float:
            return sensitivity[n] / float((1 << b) - 1) ** 2

        while sum(bits[n] * numel[n] for n in bits) > budget:
            best, best_cost = None, math.inf
            for n, b in bits.items():
                i = widths.index(b)
                if i == 0 or numel[n] == 0:
                    continue
                lower = widths[i - 1]
                cost = (var(n, lower) - var(n, b)) / ((b - lower) * numel[n])
                if cost < best_cost:
                    best, best_cost = n, cost
            if best is None:
                break
            bits[best] = widths[widths.index(bits[best]) - 1]
        return bits
