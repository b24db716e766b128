"""Block-scaled formats: an element format, a scale format, a block shape and a scale rule.

A block ``B`` of the input shares one scale ``X`` derived from ``amax = max |x|`` over ``B``
by ``scale_rule``; each element is stored as ``P = round_elem(x / X)`` and represents ``X · P``.
With ``tensor_scale`` (NVFP4's two levels) an fp32 tensor scale ``S = amax_tensor /
(max_scale · max_elem)`` comes first and blocks store ``X`` relative to it.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Optional, Tuple, Union

from .fixed import FixedPoint, IntFormat
from .floats import ExpFormat, FloatFormat, _check_bool
from .modes import ScaleRule

__all__ = ["BlockFormat"]

ElementFormat = Union[FloatFormat, FixedPoint, IntFormat]
ScaleFormat = Union[FloatFormat, ExpFormat]
Axis = Union[int, Tuple[int, ...], None]
BlockSize = Union[int, Tuple[int, ...], None]


def _as_tuple_of_ints(value: object, name: str, positive: bool) -> Tuple[int, ...]:
    items = value if isinstance(value, tuple) else (value,)
    for v in items:
        if isinstance(v, bool) or not isinstance(v, int):
            raise TypeError(f"{name} must be an int or a tuple of ints; got {value!r}")
        if positive and v < 1:
            raise ValueError(f"{name} must be positive; got {value!r}")
    if len(set(items)) != len(items) and not positive:
        raise ValueError(f"{name} repeats an axis: {value!r}")
    if not items:
        raise ValueError(f"{name} must not be empty")
    return items


@dataclasses.dataclass(frozen=True, repr=False)
class BlockFormat:
    """Elements of ``element`` sharing a ``scale`` per block.

    Args:
        element: element format (``FloatFormat``, ``FixedPoint`` or ``IntFormat``) or its name.
        scale: scale format (``ExpFormat`` such as ``e8m0fnu``, or a ``FloatFormat`` such as
            ``ue4m3`` or ``fp32``) or its name.
        block_size: ``k`` for runs of ``k`` along ``axis`` (the last run may be shorter);
            a tuple such as ``(16, 16)`` with a tuple ``axis`` for tiles; ``None`` for blocks
            spanning all of ``axis`` (one scale per index of the other axes).
        axis: an int, a tuple of ints, or ``None`` (one block for the whole tensor; only with
            ``block_size=None``).
        scale_rule: ``floor``, ``ceil``, ``even``, ``rceil`` or ``amax`` (see ``ScaleRule``).
        tensor_scale: add an fp32 per-tensor scale first (NVFP4's two-level scaling).

    A block holding NaN or ±Inf decodes wholly to NaN (its scale is NaN, OCP MX v1.0 §6.3's
    NaN-scale rule, which torchao also applies to Inf); an all-zero block gives zeros.
    """

    element: ElementFormat
    scale: ScaleFormat = dataclasses.field(kw_only=True)
    block_size: BlockSize = dataclasses.field(default=None, kw_only=True)
    axis: Axis = dataclasses.field(default=-1, kw_only=True)
    scale_rule: ScaleRule = dataclasses.field(default=ScaleRule.FLOOR, kw_only=True)
    tensor_scale: bool = dataclasses.field(default=False, kw_only=True)

    def __post_init__(self) -> None:
        element, scale = self.element, self.scale
        if isinstance(element, str) or isinstance(scale, str):
            from .names import get  # names imports this module; resolve strings lazily

            element = get(element) if isinstance(element, str) else element
            scale = get(scale) if isinstance(scale, str) else scale
        if not isinstance(element, (FloatFormat, FixedPoint, IntFormat)):
            raise TypeError(
                f"element must be a FloatFormat, FixedPoint or IntFormat; got {element!r}"
            )
        if not isinstance(scale, (FloatFormat, ExpFormat)):
            raise TypeError(f"scale must be a FloatFormat or ExpFormat; got {scale!r}")
        object.__setattr__(self, "element", element)
        object.__setattr__(self, "scale", scale)
        object.__setattr__(self, "scale_rule", ScaleRule.parse(self.scale_rule, "scale_rule"))
        _check_bool(self.tensor_scale, "tensor_scale")
        if self.tensor_scale and self.scale_rule is not ScaleRule.AMAX:
            raise ValueError("tensor_scale=True needs scale_rule='amax' (NVFP4's two levels)")
        self._check_shape()

    def _check_shape(self) -> None:
        size, axis = self.block_size, self.axis
        if axis is None:
            if size is not None:
                raise ValueError("axis=None (one block for the tensor) needs block_size=None")
            return
        axes = _as_tuple_of_ints(axis, "axis", positive=False)
        if size is None:
            return
        sizes = _as_tuple_of_ints(size, "block_size", positive=True)
        if isinstance(size, tuple) != isinstance(axis, tuple) or len(sizes) != len(axes):
            raise ValueError(
                "block_size and axis must match: an int with an int, or tuples of one length; "
                f"got block_size={size!r}, axis={axis!r}"
            )

    # -- derived constants --------------------------------------------------------------------
    @property
    def elements_per_block(self) -> Optional[int]:
        """Elements in a full block, or None when it depends on the tensor's shape."""
        if self.block_size is None:
            return None
        return math.prod(_as_tuple_of_ints(self.block_size, "block_size", positive=True))

    @property
    def emax_elem(self) -> int:
        """Exponent of the element's largest power of two: emax, or floor(log2(max_elem))."""
        if isinstance(self.element, FloatFormat):
            return self.element.emax
        return math.floor(math.log2(self.element.qmax)) + self.element.quantum_exp

    @property
    def bits(self) -> float:
        """Storage bits per element, scale bits included when the block size is known."""
        n = self.elements_per_block
        extra = self.scale.bits / n if n else 0.0
        return self.element.bits + extra

    @property
    def max(self) -> float:
        """Largest magnitude a single level of scaling can represent."""
        return self.element.max * self.scale.max

    @property
    def eps(self) -> float:
        return self.element.eps

    @property
    def min_normal(self) -> float:
        return self.element.min_normal * self.scale.min_subnormal

    @property
    def min_subnormal(self) -> float:
        return self.element.min_subnormal * self.scale.min_subnormal

    def fits_in(self, carrier: FloatFormat) -> bool:
        """True when every result of block rounding from ``carrier`` inputs is exact in it.

        A block result is ``P · X``: with a power-of-two ``X`` its significand is the element's,
        and rounding a ``carrier`` value onto a grid never needs a finer step than the value's
        own, so a carrier with fp32's exponent range (bf16) holds every result.  A tensor scale
        is an arbitrary fp32 number, so two-level formats need fp32.
        """
        pow2 = self.scale_rule is not ScaleRule.AMAX  # these rules give scales 2^k only
        scale_bits = 1 if pow2 else self.scale.significand_bits
        bits = self.element.significand_bits + scale_bits - 1
        return carrier.exp == 8 and not self.tensor_scale and bits <= carrier.man + 1

    def __repr__(self) -> str:
        from .names import name_of

        return name_of(self)

    __str__ = __repr__
