"""QPyTorch's number formats (``qtorch.number``), each mapped onto a lowbit format.

QPyTorch's classes are plain configuration objects; these have the same names, signatures,
defaults, attributes and ``repr``, plus ``lowbit_format`` (the lowbit format with the same
value set) and ``format_for(ndim)``.  Unlike QPyTorch's, they are immutable, compare equal by
value, hash, and check their arguments with ``TypeError``/``ValueError`` instead of ``assert``
(which ``python -O`` removes).
"""

from __future__ import annotations

from typing import Any, Tuple

from ...formats import BlockFormat, FloatFormat, get
from ...formats import FixedPoint as _LowbitFixedPoint
from ...formats.floats import _check_int

__all__ = ["Number", "FixedPoint", "BlockFloatingPoint", "FloatingPoint"]

#: The scale format of QPyTorch's block floating point: any fp32 power of two.
_FP32 = FloatFormat(8, 23)


class Number:
    """Base class of QPyTorch's number formats.

    A subclass implements ``_args`` (its constructor arguments) and ``format_for``; every
    ``Number`` is then accepted by ``quantizer`` and ``Quantizer``.
    """

    def _args(self) -> Tuple[Any, ...]:
        raise NotImplementedError(f"{type(self).__name__} does not define _args")

    def format_for(self, ndim: int):
        """The lowbit format that rounds a tensor of ``ndim`` dimensions onto this number."""
        raise NotImplementedError(f"{type(self).__name__} has no lowbit format")

    @property
    def lowbit_format(self):
        """The lowbit format with this number's value set (see ``format_for``)."""
        return self.format_for(0)

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"{type(self).__name__} is immutable; create a new one")

    def _set(self, **fields: object) -> None:
        for name, value in fields.items():
            object.__setattr__(self, name, value)

    def __eq__(self, other: object) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        return self._args() == other._args()  # type: ignore[attr-defined]

    def __hash__(self) -> int:
        return hash((type(self).__name__,) + self._args())

    def __reduce__(self):
        return (type(self), self._args())


class FixedPoint(Number):
    """QPyTorch's fixed point: word length ``wl`` (sign included), ``fl`` fractional bits.

    The value set is QPyTorch's, ``k · 2^-fl`` in ``[-2^(wl-fl-1), 2^(wl-fl-1) - 2^-fl]``
    (``symmetric``: the lower end is ``-2^(wl-fl-1) + 2^-fl``), which is
    ``lowbit.FixedPoint(wl, fl, clamp=clamp, symmetric=symmetric)`` (``k`` in
    ``[-2^(wl-1), 2^(wl-1) - 1]``).  Values are rounded, then clamped when ``clamp``.

    QPyTorch asserts ``wl > 0`` and ``fl > 0``; this class accepts exactly what
    ``lowbit.FixedPoint`` accepts: ``wl`` in 2..25 (every grid value exact in fp32) and ``fl``
    in ``[wl - 128, 149]``, so ``fl = 0`` (integers) and negative ``fl`` are allowed, and it
    raises ``TypeError`` for a non-int ``wl``/``fl`` or non-bool ``clamp``/``symmetric``
    (QPyTorch checks ``symmetric`` twice and ``clamp`` never).  ``repr`` is QPyTorch's,
    ``FixedPoint (wl=5, fl=4)``, with ``clamp``/``symmetric`` appended when they differ from
    the defaults (QPyTorch omits them, so distinct formats printed alike).
    """

    wl: int
    fl: int
    clamp: bool
    symmetric: bool

    def __init__(self, wl: int, fl: int, clamp: bool = True, symmetric: bool = False) -> None:
        fmt = _LowbitFixedPoint(wl, fl, clamp=clamp, symmetric=symmetric)
        self._set(wl=wl, fl=fl, clamp=clamp, symmetric=symmetric, _fmt=fmt)

    def _args(self) -> Tuple[Any, ...]:
        return (self.wl, self.fl, self.clamp, self.symmetric)

    def format_for(self, ndim: int) -> _LowbitFixedPoint:
        """``lowbit.FixedPoint(wl, fl, clamp=clamp, symmetric=symmetric)`` for any ``ndim``."""
        return self._fmt  # type: ignore[attr-defined]

    def __repr__(self) -> str:
        extra = ("" if self.clamp else ", clamp=False") + (
            ", symmetric=True" if self.symmetric else "")
        return f"FixedPoint (wl={self.wl:d}, fl={self.fl:d}{extra})"

    __str__ = __repr__


class FloatingPoint(Number):
    """QPyTorch's floating point: ``exp`` exponent bits, ``man`` stored mantissa bits.

    QPyTorch's value set (0.3): bias ``2^(exp-1) - 1``, subnormals, and every exponent code
    finite, so the top binade is one above IEEE's (E5M10's max is 131008, E4M3's 480) and
    overflow saturates to ±max.  That is ``lowbit.FloatFormat(exp, man, specials="none")``;
    with ``exp = 8`` the range passes fp32's and fp32's own overflow to ±Inf applies, as in
    QPyTorch.  (QPyTorch's docstring still describes its pre-0.3 format: bias 2^(exp-1), no
    subnormals.)

    The ranges are QPyTorch's, ``1 <= exp <= 8`` and ``1 <= man <= 23``, checked with
    ``ValueError`` (``TypeError`` for a non-int) instead of ``assert``.
    """

    exp: int
    man: int

    def __init__(self, exp: int, man: int) -> None:
        _check_int(exp, "exp", 1, 8)
        _check_int(man, "man", 1, 23)
        self._set(exp=exp, man=man, _fmt=FloatFormat(exp, man, specials="none"))

    def _args(self) -> Tuple[Any, ...]:
        return (self.exp, self.man)

    def format_for(self, ndim: int) -> FloatFormat:
        """``lowbit.FloatFormat(exp, man, specials="none")`` for any ``ndim``."""
        return self._fmt  # type: ignore[attr-defined]

    def __repr__(self) -> str:
        return f"FloatingPoint (exponent={self.exp:d}, mantissa={self.man:d})"

    __str__ = __repr__


class BlockFloatingPoint(Number):
    """QPyTorch's block floating point: ``wl`` bits per element (sign included) sharing one
    exponent per block.

    ``dim=-1`` makes **the whole tensor one block** (QPyTorch's meaning, not "the last axis");
    ``dim=d >= 0`` gives every index along axis ``d`` its own exponent (a block spans every
    other axis; for a 1-D tensor every element is its own block).  A block with
    ``amax = max |x|`` has the shared exponent ``e = floor(log2 amax)`` and the grid
    ``k · 2^(e + 2 - wl)`` with ``|k| <= 2^(wl-1) - 1``: lowbit's
    ``BlockFormat(FixedPoint(wl, 0, symmetric=True), scale=FloatFormat(8, 23),
    scale_rule="floor")`` (``lowbit.formats.get(f"bfp{wl}")`` for ``dim=-1``).

    QPyTorch asserts an int ``wl > 0`` and an int ``dim >= -1``; this class raises
    ``TypeError``/``ValueError`` and needs ``wl`` in 2..25 (lowbit's ``FixedPoint`` range; QPyTorch's
    wl=1 grid is degenerate).
    """

    wl: int
    dim: int

    def __init__(self, wl: int, dim: int = -1) -> None:
        element = _LowbitFixedPoint(wl, 0, symmetric=True)
        if isinstance(dim, bool) or not isinstance(dim, int):
            raise TypeError(f"dim must be an int >= -1; got {dim!r}")
        if dim < -1:
            raise ValueError(f"dim must be -1 (the whole tensor is one block) or an axis "
                             f">= 0; got {dim}")
        self._set(wl=wl, dim=dim, _element=element, _whole=get(f"bfp{wl}"))

    def _args(self) -> Tuple[Any, ...]:
        return (self.wl, self.dim)

    def format_for(self, ndim: int) -> BlockFormat:
        """The block format for a tensor of ``ndim`` dimensions.

        ``dim=-1``: ``bfp<wl>`` (one block).  ``dim=d``: one block per index along ``d``,
        spanning every other axis (``axis`` = those axes; ``block_size=1`` along ``d`` when
        there are none).

        Raises:
            ValueError: ``dim`` is not an axis of an ``ndim``-dimensional tensor.
        """
        if self.dim == -1:
            return self._whole  # type: ignore[attr-defined]
        if self.dim >= ndim:
            raise ValueError(f"BlockFloatingPoint dim={self.dim} is out of range for a tensor "
                             f"of {ndim} dims (dim=-1 makes the whole tensor one block)")
        rest = tuple(a for a in range(ndim) if a != self.dim)
        if not rest:
            return BlockFormat(self._element, scale=_FP32, block_size=1,  # type: ignore[attr-defined]
                               axis=self.dim)
        return BlockFormat(self._element, scale=_FP32, block_size=None,  # type: ignore[attr-defined]
                           axis=rest)

    @property
    def lowbit_format(self) -> BlockFormat:
        """``lowbit.formats.get(f"bfp{wl}")`` for ``dim=-1``.

        Raises:
            ValueError: ``dim >= 0``, whose blocks depend on the tensor's number of dimensions:
                use ``format_for(x.dim())``.
        """
        if self.dim != -1:
            raise ValueError(f"BlockFloatingPoint(dim={self.dim}) has blocks that depend on the "
                             "tensor's number of dims; use format_for(x.dim())")
        return self._whole  # type: ignore[attr-defined]

    def __repr__(self) -> str:
        return f"BlockFloatingPoint (wl={self.wl:d}, dim={self.dim:d})"

    __str__ = __repr__

