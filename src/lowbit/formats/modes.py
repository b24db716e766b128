"""String-valued enums for every mode a user can choose.

Users may pass the plain strings; code compares enum members only.  Each enum's ``parse``
turns a user value into a member or raises a ``ValueError`` naming the parameter and the
allowed values.
"""

from __future__ import annotations

import enum

__all__ = ["Rounding", "Specials", "ScaleRule"]


class _StrEnum(str, enum.Enum):
    """A ``str`` enum whose ``parse`` validates user input with a clear message."""

    def __str__(self) -> str:
        return self.value

    @classmethod
    def parse(cls, value: object, param: str) -> "_StrEnum":
        if isinstance(value, cls):
            return value
        if isinstance(value, str):
            try:
                return cls(value)
            except ValueError:
                pass
        allowed = ", ".join(repr(m.value) for m in cls)
        raise ValueError(f"{param} must be one of {allowed}; got {value!r}")


class Rounding(_StrEnum):
    """How a value between two representable neighbours is rounded (IEEE 754 §4.3)."""

    #: Nearest neighbour, ties to the one with an even last digit (roundTiesToEven).
    NEAREST = "nearest"
    #: Nearest neighbour, ties away from zero (roundTiesToAway).
    NEAREST_AWAY = "nearest_away"
    #: The neighbour of smaller magnitude (roundTowardZero); never overflows.
    TOWARD_ZERO = "toward_zero"
    #: The neighbour toward +Inf (roundTowardPositive).
    UP = "up"
    #: The neighbour toward -Inf (roundTowardNegative).
    DOWN = "down"
    #: Exact values kept, otherwise the neighbour with an odd last digit (round-to-odd).
    ODD = "odd"
    #: The upper neighbour with probability (x - lo) / (hi - lo); see ``lowbit.kernels.philox``.
    STOCHASTIC = "stochastic"


class Specials(_StrEnum):
    """Which encodings of a float format are special (Inf/NaN), after ml_dtypes' naming."""

    #: Top exponent holds Inf (mantissa 0) and NaN (others): fp16, bf16, e5m2, e4m3, e3m4.
    IEEE = "ieee"
    #: No Inf; only the all-ones exponent and mantissa is NaN (OCP e4m3fn, max 448).
    FN = "fn"
    #: No Inf, no -0; NaN is the negative-zero code 0x80; the bias is one larger.
    FNUZ = "fnuz"
    #: Every encoding is finite: no Inf and no NaN (fp6, fp4, QPyTorch's floats).
    NONE = "none"


class ScaleRule(_StrEnum):
    """How a block's shared scale is derived from the block's largest magnitude ``amax``."""

    #: OCP MX v1.0 §6.3: 2^(floor(log2 amax) - emax_elem).
    FLOOR = "floor"
    #: 2^(ceil(log2 amax) - emax_elem): the block maximum never saturates.
    CEIL = "ceil"
    #: amax first rounded to the element's mantissa width, then FLOOR (torchao EVEN).
    EVEN = "even"
    #: NVIDIA: 2^ceil(log2(amax / max_elem)), the ratio rounded up to a power of two.
    RCEIL = "rceil"
    #: amax / max_elem rounded (nearest-even) into the scale format (NVFP4 block scales).
    AMAX = "amax"
