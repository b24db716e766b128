"""Integer-grid formats: ``FixedPoint`` (two's complement with ``fl`` fraction bits) and
``IntFormat`` (plain integers).  Both round onto the grid ``k · 2^-fl`` and then clamp ``k``."""

from __future__ import annotations

import dataclasses

from .floats import _check_bool, _check_int

__all__ = ["FixedPoint", "IntFormat"]

# Integers of up to 24 magnitude bits are exact in the fp32 carrier; wider grids would be
# rounded a second time on the way back to fp32.
_MAX_MAGNITUDE_BITS = 24


class _IntegerGrid:
    """What ``FixedPoint`` and ``IntFormat`` share: a grid ``k · 2^quantum_exp`` with integer
    codes ``k`` in ``[qmin, qmax]``."""

    @property
    def significand_bits(self) -> int:
        """Significant bits of the widest code: the largest odd magnitude's bit length (a
        power of two such as int12's -2048 needs one bit, so int12 has 11)."""
        top = max(self.qmax, -self.qmin)
        return (top if top % 2 else top - 1).bit_length()

    def fits_in(self, carrier) -> bool:
        """True when every grid value is exact in ``carrier`` (an IEEE ``FloatFormat``)."""
        return (self.significand_bits <= carrier.man + 1
                and self.quantum_exp >= carrier.emin - carrier.man
                and max(self.max, -self.lowest) <= carrier.max)

    def __repr__(self) -> str:
        from .names import name_of

        return name_of(self)

    __str__ = __repr__


@dataclasses.dataclass(frozen=True, repr=False)
class FixedPoint(_IntegerGrid):
    """Fixed point with word length ``wl`` (sign included) and ``fl`` fractional bits.

    The grid is ``k · 2^-fl`` with ``k`` in ``[-2^(wl-1), 2^(wl-1) - 1]`` (``symmetric``:
    the lower bound is ``-2^(wl-1) + 1``).  A value is rounded onto the grid, then clamped
    into that range when ``clamp`` (without it the grid is unbounded and ±Inf stay ±Inf).
    NaN stays NaN.  ``wl`` is 2..25 so that every grid value is exact in fp32.
    """

    wl: int
    fl: int
    clamp: bool = dataclasses.field(default=True, kw_only=True)
    symmetric: bool = dataclasses.field(default=False, kw_only=True)

    def __post_init__(self) -> None:
        _check_int(self.wl, "wl", 2, _MAX_MAGNITUDE_BITS + 1)
        _check_int(self.fl, "fl", -(128 - self.wl), 149)
        _check_bool(self.clamp, "clamp")
        _check_bool(self.symmetric, "symmetric")

    @property
    def bits(self) -> int:
        return self.wl

    @property
    def qmax(self) -> int:
        """Largest integer code, 2^(wl-1) - 1."""
        return 2 ** (self.wl - 1) - 1

    @property
    def qmin(self) -> int:
        """Smallest integer code, -2^(wl-1) (symmetric: -2^(wl-1) + 1)."""
        return -(2 ** (self.wl - 1)) + int(self.symmetric)

    @property
    def quantum_exp(self) -> int:
        """The grid step is 2^quantum_exp = 2^-fl."""
        return -self.fl

    @property
    def max(self) -> float:
        return self.qmax * 2.0**-self.fl

    @property
    def lowest(self) -> float:
        return self.qmin * 2.0**-self.fl

    @property
    def eps(self) -> float:
        """The grid step 2^-fl."""
        return 2.0**-self.fl

    min_normal = eps
    min_subnormal = eps



@dataclasses.dataclass(frozen=True, repr=False)
class IntFormat(_IntegerGrid):
    """Integers of ``bits`` bits: ``[-2^(bits-1), 2^(bits-1) - 1]``, or ``[0, 2^bits - 1]``
    when unsigned; rounded, then clamped (negative values give 0 when unsigned)."""

    bits: int
    signed: bool = dataclasses.field(default=True, kw_only=True)

    def __post_init__(self) -> None:
        _check_bool(self.signed, "signed")
        _check_int(self.bits, "bits", 2 if self.signed else 1, _MAX_MAGNITUDE_BITS + self.signed)

    @property
    def qmax(self) -> int:
        return 2 ** (self.bits - self.signed) - 1

    @property
    def qmin(self) -> int:
        return -(2 ** (self.bits - 1)) if self.signed else 0

    @property
    def quantum_exp(self) -> int:
        return 0

    @property
    def clamp(self) -> bool:
        return True

    @property
    def max(self) -> float:
        return float(self.qmax)

    @property
    def lowest(self) -> float:
        return float(self.qmin)

    eps = 1.0
    min_normal = 1.0
    min_subnormal = 1.0

