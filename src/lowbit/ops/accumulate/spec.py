"""``Accumulate``: the plain-data description of a simulated accumulation (DESIGN.md,
"Accumulation"), shared by ``lowbit.ops.accumulate`` functions and training recipes."""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any, Dict, Optional, Union

from ...formats import Format, Rounding, get
from ...kernels.gemm._exact import validate_family

__all__ = ["Accumulate"]

_FP32_CHUNK = "fp32"


def _fmt_or_none(value: Union[str, Format, None], param: str) -> Optional[Format]:
    if value is None:
        return None
    try:
        return get(value)
    except (TypeError, ValueError) as err:
        raise type(err)(f"{param}: {err}") from None


@dataclass(frozen=True)
class Accumulate:
    """How a GEMM's products and sums are rounded.

    ``p_k = Q_mul(a_ik * b_kj)`` (exact when ``mul`` is None or ``fma``); with ``chunk=None``
    ``s_k = Q_acc(s_{k-1} + p_k)`` strictly in K order; with ``chunk=c`` each run of ``c``
    products is summed sequentially in ``chunk_acc`` (default ``acc``) and each chunk sum is
    added to the running total rounded to ``acc`` (Wang et al., 2018, IBM); ``chunk_acc="fp32"``
    sums chunks in fp32 in an unspecified order.  ``compensated`` uses Kahan summation in
    ``acc``.  ``rounding`` is the default for ``mul_rounding`` and ``acc_rounding``.  Each
    ``Q`` rounds the exact value once (``lowbit.ops.accumulate.matmul`` states the arithmetic).
    ``acc``, ``mul`` and ``chunk_acc`` are ``FloatFormat``s, clamped ``FixedPoint``s or
    ``IntFormat``s (names allowed); other families are a ``ValueError``.
    """

    acc: Format
    mul: Optional[Format] = None
    rounding: Rounding = Rounding.NEAREST
    mul_rounding: Optional[Rounding] = None
    acc_rounding: Optional[Rounding] = None
    chunk: Optional[int] = None
    chunk_acc: Union[Format, str, None] = None
    fma: bool = False
    compensated: bool = False

    def __post_init__(self) -> None:
        set_ = object.__setattr__
        set_(self, "acc", _fmt_or_none(self.acc, "acc"))
        if self.acc is None:
            raise ValueError("acc must be a format (a name such as 'e6m9' or a format object)")
        validate_family(self.acc, "acc")
        set_(self, "mul", _fmt_or_none(self.mul, "mul"))
        if self.mul is not None:
            validate_family(self.mul, "mul")
        set_(self, "rounding", Rounding.parse(self.rounding, "rounding"))
        for name in ("mul_rounding", "acc_rounding"):
            value = getattr(self, name)
            if value is not None:
                set_(self, name, Rounding.parse(value, name))
        if self.chunk is not None:
            if isinstance(self.chunk, bool) or not isinstance(self.chunk, int) or self.chunk < 1:
                raise ValueError(f"chunk must be a positive int or None; got {self.chunk!r}")
        if isinstance(self.chunk_acc, str) and self.chunk_acc == _FP32_CHUNK:
            if self.chunk is None:
                raise ValueError("chunk_acc='fp32' needs chunk=k (the chunk length)")
        else:
            set_(self, "chunk_acc", _fmt_or_none(self.chunk_acc, "chunk_acc"))
            if self.chunk_acc is not None:
                validate_family(self.chunk_acc, "chunk_acc")
            if self.chunk_acc is not None and self.chunk is None:
                raise ValueError("chunk_acc applies only with chunk=k; got chunk=None")
        for name in ("fma", "compensated"):
            if not isinstance(getattr(self, name), bool):
                raise TypeError(f"{name} must be a bool; got {getattr(self, name)!r}")
        if self.fma and self.mul is not None:
            raise ValueError("mul is not allowed with fma=True: with a fused multiply-add the "
                             "product is exact and only the sum is rounded")
        if self.compensated and self.chunk is not None:
            raise ValueError("compensated=True applies to sequential accumulation (chunk=None)")

    @property
    def fp32_chunks(self) -> bool:
        """True when chunk sums run in fp32 in an unspecified order (not bit-reproducible)."""
        return isinstance(self.chunk_acc, str) and self.chunk_acc == _FP32_CHUNK

    @property
    def effective_mul_rounding(self) -> Rounding:
        return self.mul_rounding or self.rounding

    @property
    def effective_acc_rounding(self) -> Rounding:
        return self.acc_rounding or self.rounding

    def to_dict(self) -> Dict[str, Any]:
        """Plain data (format names and mode strings) for TOML/JSON; ``from_dict`` inverts it."""
        out: Dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if value is None:
                continue
            if isinstance(value, Rounding):
                value = value.value
            elif not isinstance(value, (bool, int, str)):
                value = repr(value)
            out[f.name] = value
        return out

    @classmethod
    def from_dict(cls, data: Dict[str, Any]) -> "Accumulate":
        if not isinstance(data, dict):
            raise TypeError(f"Accumulate.from_dict needs a dict; got {type(data).__name__}")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown Accumulate fields {unknown}; allowed: {sorted(known)}")
        return cls(**data)
