"""The reference GEMM: a loop over K in order, vectorised over the batch and the M×N outputs.

It is the specification of every GEMM kernel and the CPU path.  Each step forms its exact
products in float64 (an fp32×fp32 product has at most 48 significant bits) and performs each
rounded operation of the plan with ``_exact.add_round``: the exact sum of two terms rounded
once onto the operation's format.
"""

from __future__ import annotations

from typing import Optional

import torch

from ._exact import add_round
from ._plan import Plan, Slot, step_words

__all__ = ["gemm", "step_base"]


def step_base(batch: int, m: int, n: int, k: int, device: torch.device) -> torch.Tensor:
    """``((b·M + i)·N + j)·K`` for every output (int64, shape (batch, M, N)): the stream's
    step index ``t`` of step 0 (``_plan``)."""
    flat = torch.arange(batch * m * n, dtype=torch.int64, device=device)
    return (flat * k).view(batch, m, n)


class _Words:
    """The random words of one step, drawn only where the plan rounds stochastically."""

    def __init__(self, plan: Plan, base: Optional[torch.Tensor], seed: Optional[int]):
        self.plan, self.base, self.seed = plan, base, seed
        self.t: Optional[torch.Tensor] = None
        self.groups: dict = {}

    def at(self, k: int) -> "_Words":
        if self.base is not None:
            self.t = self.base + k
            self.groups = {}
        return self

    def __getitem__(self, slot: Slot) -> Optional[torch.Tensor]:
        if self.t is None:
            return None
        group = int(slot) >> 2
        if group not in self.groups:
            self.groups[group] = step_words(self.t, self.seed, group)
        return self.groups[group][int(slot) & 3]


def _products(a: torch.Tensor, b: torch.Tensor, k: int, plan: Plan, w: _Words) -> torch.Tensor:
    """Step ``k``'s products as float64: exact, or rounded once to ``mul``."""
    p = a[:, :, k, None] * b[:, None, k, :]  # exact in float64
    if plan.mul is not None:
        p = add_round(p, torch.zeros_like(p).neg_(), plan.mul, plan.mul_rounding,
                      w[Slot.MUL]).double()
    return p


def gemm(a: torch.Tensor, b: torch.Tensor, plan: Plan, seed: Optional[int]) -> torch.Tensor:
    """``a`` (B, M, K) × ``b`` (B, K, N), fp32, contiguous; returns fp32 (B, M, N).  ``seed``
    is an int when ``plan.stochastic`` (the stream of ``_plan``), else ignored."""
    batch, m, kdim = a.shape
    n = b.shape[2]
    if plan.fp32_chunks:
        return _fp32_chunks(a, b, plan, seed)
    a64, b64 = a.double(), b.double()
    base = step_base(batch, m, n, kdim, a.device) if plan.stochastic else None
    words = _Words(plan, base, seed)
    s = torch.zeros(batch, m, n, dtype=torch.float64, device=a.device)
    c = torch.zeros_like(s)  # Kahan's compensation, or the running chunk sum
    for k in range(kdim):
        w = words.at(k)
        p = _products(a64, b64, k, plan, w)
        if plan.compensated:
            acc, r = plan.acc, plan.acc_rounding
            y = add_round(p, -c, acc, r, w[Slot.KAHAN_Y]).double()
            t = add_round(s, y, acc, r, w[Slot.SUM]).double()
            z = add_round(t, -s, acc, r, w[Slot.KAHAN_Z]).double()
            c = add_round(z, -y, acc, r, w[Slot.KAHAN_C]).double()
            s = t
        elif plan.chunk is not None:
            c = add_round(c, p, plan.chunk_acc, plan.chunk_rounding, w[Slot.SUM]).double()
            if (k + 1) % plan.chunk == 0 or k == kdim - 1:
                s = add_round(s, c, plan.acc, plan.acc_rounding, w[Slot.CHUNK]).double()
                c = torch.zeros_like(s)
        else:
            s = add_round(s, p, plan.acc, plan.acc_rounding, w[Slot.SUM]).double()
    return s.float()


def _fp32_chunks(a: torch.Tensor, b: torch.Tensor, plan: Plan,
                 seed: Optional[int]) -> torch.Tensor:
    """Chunk sums by ``torch.matmul`` in fp32 (its own order), each added to the total with
    one rounding onto ``acc``."""
    batch, m, kdim = a.shape
    n = b.shape[2]
    base = step_base(batch, m, n, kdim, a.device) if plan.stochastic else None
    words = _Words(plan, base, seed)
    s = torch.zeros(batch, m, n, dtype=torch.float64, device=a.device)
    for start in range(0, kdim, plan.chunk):
        end = min(start + plan.chunk, kdim)
        part = torch.matmul(a[:, :, start:end], b[:, start:end, :])
        w = words.at(end - 1)
        s = add_round(s, part.double(), plan.acc, plan.acc_rounding, w[Slot.CHUNK]).double()
    return s.float()
