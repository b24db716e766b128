"""Scalar floating-point formats: ``FloatFormat`` (sign, exponent, mantissa) and ``ExpFormat``
(power-of-two scale formats such as OCP MX's E8M0).

Value of a finite encoding with exponent field ``E`` and mantissa field ``m`` (``man`` bits):
``(-1)^s · 2^(E - bias) · (1 + m / 2^man)`` for ``E > 0`` (normals) and
``(-1)^s · 2^(1 - bias) · (m / 2^man)`` for ``E = 0`` (subnormals), as IEEE 754 §3.4.  Which
encodings are special is set by ``specials`` (see :class:`~lowbit.formats.modes.Specials`).
"""

from __future__ import annotations

import dataclasses
from typing import Optional

from .modes import Specials

__all__ = ["FloatFormat", "ExpFormat", "FP32_MAX"]

#: Largest finite fp32 value, (2 - 2^-23) · 2^127: the carrier every format is simulated in.
FP32_MAX = (2.0 - 2.0**-23) * 2.0**127


def _check_int(value: object, name: str, lo: int, hi: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int in [{lo}, {hi}]; got {value!r}")
    if not lo <= value <= hi:
        raise ValueError(f"{name} must be in [{lo}, {hi}]; got {value}")
    return value


def _check_bool(value: object, name: str) -> bool:
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be a bool; got {value!r}")
    return value


@dataclasses.dataclass(frozen=True, repr=False)
class FloatFormat:
    """A binary floating-point format with ``exp`` exponent and ``man`` mantissa bits.

    Args:
        exp: exponent bits, 1..8.
        man: stored mantissa bits (the hidden bit excluded), 0..23.
        bias: exponent bias; default ``2^(exp-1) - 1``, or ``2^(exp-1)`` for ``fnuz``.
        signed: ``False`` for formats without a sign bit (block scales such as UE4M3); they
            hold no negative values: a negative input gives NaN, or +0 where there is no NaN.
        subnormals: ``False`` flushes the subnormal range: the representable set is
            {±0, ±normals} and every rounding mode picks one of those two neighbours.
        specials: ``"ieee"``, ``"fn"``, ``"fnuz"`` or ``"none"`` (see ``Specials``).
        saturate: overflow gives ±max when True; ±Inf (``ieee``) or NaN (``fn``/``fnuz``)
            when False. ``None`` means False, except for ``none`` which must saturate.

    Overflow is judged after rounding (IEEE 754 §7.4); ``toward_zero`` and ``odd`` never
    overflow, ``up``/``down`` overflow only in their own direction.
    """

    exp: int
    man: int
    bias: Optional[int] = dataclasses.field(default=None, kw_only=True)
    signed: bool = dataclasses.field(default=True, kw_only=True)
    subnormals: bool = dataclasses.field(default=True, kw_only=True)
    specials: Specials = dataclasses.field(default=Specials.IEEE, kw_only=True)
    saturate: Optional[bool] = dataclasses.field(default=None, kw_only=True)

    def __post_init__(self) -> None:
        _check_int(self.exp, "exp", 1, 8)
        _check_int(self.man, "man", 0, 23)
        _check_bool(self.signed, "signed")
        _check_bool(self.subnormals, "subnormals")
        specials = Specials.parse(self.specials, "specials")
        object.__setattr__(self, "specials", specials)
        default_bias = 2 ** (self.exp - 1) - 1 + (specials is Specials.FNUZ)
        bias = default_bias if self.bias is None else self.bias
        # emin <= 127 keeps every quantum of the format inside fp32's exponent range.
        _check_int(bias, "bias", -126, 2**self.exp + 150)
        object.__setattr__(self, "bias", bias)
        if self.saturate is None:
            object.__setattr__(self, "saturate", specials is Specials.NONE)
        _check_bool(self.saturate, "saturate")
        if specials is Specials.NONE and not self.saturate:
            raise ValueError("saturate=False needs an Inf or NaN code; specials='none' has none")
        if specials is Specials.FNUZ and not self.signed:
            raise ValueError("specials='fnuz' keeps NaN in the sign bit; it needs signed=True")
        if self._emax_field < 1:
            raise ValueError(
                f"exp={self.exp}, man={self.man}, specials={specials.value!r} leave no normal "
                "numbers; use more exponent or mantissa bits"
            )

    # -- primary encodings ------------------------------------------------------------------
    @property
    def _emax_field(self) -> int:
        """Largest exponent field that holds finite values."""
        top = 2**self.exp - 1
        if self.specials is Specials.IEEE or (self.specials is Specials.FN and self.man == 0):
            return top - 1
        return top

    @property
    def _max_man_field(self) -> int:
        """Largest mantissa field at the largest finite exponent."""
        if self.specials is Specials.FN and self.man > 0:
            return 2**self.man - 2
        return 2**self.man - 1

    # -- derived constants --------------------------------------------------------------------
    @property
    def bits(self) -> int:
        """Storage width: sign + exponent + mantissa bits."""
        return int(self.signed) + self.exp + self.man

    @property
    def emin(self) -> int:
        """Exponent of the smallest normal number, 1 - bias."""
        return 1 - self.bias

    @property
    def emax(self) -> int:
        """Exponent of the largest finite number."""
        return self._emax_field - self.bias

    @property
    def max(self) -> float:
        """Largest finite value, 2^emax · (1 + max_mantissa / 2^man) (may exceed fp32)."""
        return 2.0**self.emax * (1.0 + self._max_man_field / 2.0**self.man)

    @property
    def min_normal(self) -> float:
        """Smallest positive normal value, 2^emin."""
        return 2.0**self.emin

    @property
    def min_subnormal(self) -> float:
        """Smallest positive value: 2^(emin - man), or 2^emin without subnormals."""
        return 2.0 ** (self.emin - self.man) if self.subnormals else self.min_normal

    @property
    def eps(self) -> float:
        """Distance from 1 to the next larger value, 2^-man."""
        return 2.0**-self.man

    @property
    def has_inf(self) -> bool:
        return self.specials is Specials.IEEE

    @property
    def has_nan(self) -> bool:
        return self.specials is not Specials.NONE

    @property
    def has_neg_zero(self) -> bool:
        return self.signed and self.specials is not Specials.FNUZ

    @property
    def exceeds_carrier(self) -> bool:
        """True when the format's range passes fp32's; fp32's own overflow then applies."""
        return self.max > FP32_MAX

    @property
    def significand_bits(self) -> int:
        """Significant bits of a normal value, the hidden bit included."""
        return self.man + 1

    def fits_in(self, carrier: "FloatFormat") -> bool:
        """True when every value of this format is exact in ``carrier`` (an IEEE format)."""
        top = min(self.max, (2.0 - 2.0**-self.man) * 2.0**127)
        return (self.man <= carrier.man and self.emin - self.man >= carrier.emin - carrier.man
                and top <= carrier.max)

    def __repr__(self) -> str:
        from .names import name_of

        return name_of(self)

    __str__ = __repr__


@dataclasses.dataclass(frozen=True, repr=False)
class ExpFormat:
    """An unsigned power-of-two format without zero: OCP MX's E8M0 scale (``e8m0fnu``).

    Code ``c`` in ``0 .. 2^bits - 2`` has the value ``2^(c - bias)``; the all-ones code is NaN.
    Standalone rounding follows torch's ``float8_e8m0fnu`` cast: the sign is ignored, the
    mantissa is rounded with the implicit bit as last kept digit (so 1.5·2^k ties up under
    ``nearest``), values below ``2^-bias`` (zero included) give ``2^-bias``, NaN and ±Inf give
    NaN, and overflow gives NaN (or the largest value when ``saturate=True``).
    """

    bits: int = 8
    bias: Optional[int] = dataclasses.field(default=None, kw_only=True)
    saturate: bool = dataclasses.field(default=False, kw_only=True)

    def __post_init__(self) -> None:
        _check_int(self.bits, "bits", 2, 8)
        bias = 2 ** (self.bits - 1) - 1 if self.bias is None else self.bias
        _check_int(bias, "bias", -126, 2**self.bits + 150)
        object.__setattr__(self, "bias", bias)
        _check_bool(self.saturate, "saturate")

    @property
    def exp(self) -> int:
        return self.bits

    @property
    def man(self) -> int:
        return 0

    @property
    def emin(self) -> int:
        return -self.bias

    @property
    def emax(self) -> int:
        return 2**self.bits - 2 - self.bias

    @property
    def max(self) -> float:
        return 2.0**self.emax

    @property
    def min_normal(self) -> float:
        return 2.0**self.emin

    @property
    def min_subnormal(self) -> float:
        return self.min_normal

    @property
    def eps(self) -> float:
        return 1.0

    @property
    def exceeds_carrier(self) -> bool:
        return self.max > FP32_MAX

    @property
    def significand_bits(self) -> int:
        return 1

    def fits_in(self, carrier: FloatFormat) -> bool:
        """True when every power of two of this format is exact in ``carrier``."""
        return self.min_normal >= carrier.min_subnormal and self.max <= carrier.max

    def __repr__(self) -> str:
        from .names import name_of

        return name_of(self)

    __str__ = __repr__
