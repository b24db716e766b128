"""What a simulated GEMM computes, as one plain record every backend reads: ``Plan``.

A ``Plan`` is an ``Accumulate`` spec with its defaults resolved (``chunk_acc`` defaults to
``acc``; the effective rounding of each operation) and checked against what the kernels can
round (``_exact.validate_family``).  It also fixes the stochastic stream's layout: rounding
event ``(b, i, j, k, slot)`` of a GEMM with ``K`` steps uses logical element
``n = 8·t + slot`` of ``lowbit.kernels.philox``'s stream, ``t = ((b·M + i)·N + j)·K + k``, that
is word ``slot & 3`` of the Philox call on counter ``2·t + (slot >> 2)`` (``Slot`` names the
slots).
"""

from __future__ import annotations

import dataclasses
import enum
from typing import Optional, Tuple

import torch

from ...formats import FloatFormat, Format, Rounding
from ..philox import philox4x32
from ._exact import validate_family

__all__ = ["Plan", "Slot", "FP32", "step_words"]

#: The fp32 format, used for ``chunk_acc="fp32"`` chunk sums where they run in K order.
FP32 = FloatFormat(8, 23)
_MASK32 = 0xFFFFFFFF


class Slot(enum.IntEnum):
    """Which rounding of a step draws which word of the stream (see the module docstring)."""

    MUL = 0  # the product rounded to ``mul``
    SUM = 1  # the running (or chunk) sum: s + p, and Kahan's t = s + y
    CHUNK = 2  # a chunk sum added to the total, at the chunk's last step
    KAHAN_Y = 3  # Kahan's y = p - c
    KAHAN_Z = 4  # Kahan's z = t - s
    KAHAN_C = 5  # Kahan's c = z - y
    BIAS = 6  # the bias added to the result, at step K' - 1 (K' = max(K, 1))


@dataclasses.dataclass(frozen=True)
class Plan:
    """A resolved accumulation spec.

    ``chunk_acc`` is a format whenever chunk sums run in K order (``chunk_rounding`` is then
    their rounding); ``fp32_chunks`` means fp32 chunk sums in an unspecified order.
    ``chunk_acc="fp32"`` with ``mul`` set runs its chunk sums in fp32 in K order, rounded to
    nearest as fp32 hardware does (one valid order; the products must be rounded first).
    """

    acc: Format
    acc_rounding: Rounding
    mul: Optional[Format] = None
    mul_rounding: Rounding = Rounding.NEAREST
    chunk: Optional[int] = None
    chunk_acc: Optional[Format] = None
    chunk_rounding: Rounding = Rounding.NEAREST
    fp32_chunks: bool = False
    compensated: bool = False

    @classmethod
    def of(cls, spec) -> "Plan":
        """The plan of an ``lowbit.ops.accumulate.Accumulate`` spec."""
        validate_family(spec.acc, "acc")
        if spec.mul is not None:
            validate_family(spec.mul, "mul")
        acc_r, mul_r = spec.effective_acc_rounding, spec.effective_mul_rounding
        chunk_acc, chunk_r, fp32 = None, acc_r, False
        if spec.chunk is not None:
            if spec.fp32_chunks:
                fp32 = spec.mul is None
                chunk_acc = None if fp32 else FP32
                chunk_r = Rounding.NEAREST
            else:
                chunk_acc = spec.acc if spec.chunk_acc is None else spec.chunk_acc
                validate_family(chunk_acc, "chunk_acc")
        return cls(acc=spec.acc, acc_rounding=acc_r, mul=spec.mul, mul_rounding=mul_r,
                   chunk=spec.chunk, chunk_acc=chunk_acc, chunk_rounding=chunk_r,
                   fp32_chunks=fp32, compensated=spec.compensated)

    def roundings(self) -> Tuple[Rounding, ...]:
        """The rounding of every operation the plan performs."""
        out = [self.acc_rounding]
        if self.mul is not None:
            out.append(self.mul_rounding)
        if self.chunk_acc is not None:
            out.append(self.chunk_rounding)
        return tuple(out)

    @property
    def stochastic(self) -> bool:
        """True when some operation rounds stochastically (the GEMM then needs a seed)."""
        return Rounding.STOCHASTIC in self.roundings()


def step_words(t: torch.Tensor, seed: int, group: int = 0) -> Tuple[torch.Tensor, ...]:
    """The four words (int64 holding uint32) of slots ``4·group .. 4·group + 3`` for the step
    indices ``t`` (int64): Philox4x32-10 on counter ``2·t + group`` under ``seed``."""
    ctr = 2 * t + group
    zero = torch.zeros_like(ctr)
    return philox4x32(ctr & _MASK32, ctr >> 32, zero, zero, seed)
