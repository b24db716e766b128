"""``Recipe``: which format, rounding and scaling each tensor of a layer gets (plain data).

Roles of a GEMM-like layer ``y = x Wᵀ + b`` (the three GEMMs of training: forward
``y = x Wᵀ``, dgrad ``dx = g W``, wgrad ``dW = gᵀ x``):

=============== ============================================================================
``input``       ``x``, an operand of forward and wgrad
``weight``      ``W``, an operand of forward and dgrad
``bias``        ``b``, added to the forward GEMM's result
``output``      ``y``, the forward result (after the bias)
``grad_output`` ``g = dL/dy``, an operand of dgrad and wgrad
``grad_input``  ``dx``, the dgrad result
``grad_weight`` ``dW`` and ``db``, the wgrad results
``stats``       normalisation layers: batch mean and standard deviation, running statistics
``normalized``  normalisation layers: ``x̂ = (x - mean) / std``
=============== ============================================================================

Each GEMM quantizes its own operands along its own reduction axis from the saved
high-precision tensors (microxcaling's design), so block formats are right in backward too.

A role's value is None (no quantization: fp32), a format or its name, a ``Role`` (format,
rounding, scaling, rbits) or a ``QuantizerRef`` to a QAT quantizer registered with
``register_quantizer``.  ``accumulate`` is an ``Accumulate`` for every GEMM or a mapping
``{"forward": ..., "dgrad": ..., "wgrad": ...}``.  ``overrides`` maps exact module names
(which also cover the module's descendants), regular expressions (``re.fullmatch`` on the
module name), module types, ``"first"`` or ``"last"`` (the first/last GEMM module in
registration order) to a ``Recipe``, a mapping of fields merged into this recipe, or None
(the module stays fp32).  The recipe itself reaches GEMM-like layers (Linear, convolutions,
attention, ``MatMul``); normalisation layers and embeddings take part only when an override
selects them (``overrides={nn.BatchNorm2d: {}}`` gives them the recipe itself).  Roles a
layer does not have are not used by it (``stats`` on a Linear, ``input`` on an Embedding).
``wgrad_transform`` (a ``WgradTransform``, e.g. ``"hadamard"``) multiplies both operands of
the wgrad GEMM by the same orthogonal matrix along their shared reduction axis before they
are quantized; ``quantize_wgrad=False`` gives the wgrad GEMM the saved high-precision
operands (forward and dgrad still quantize).  The run's seed for stochastic rounding is an
argument of ``convert``, not part of a recipe.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any, Dict, Mapping, Optional, Tuple, Union

import torch

from ..formats import BlockFormat, Format, Rounding, get
from ..formats.modes import _StrEnum
from ..ops.accumulate.spec import Accumulate
from ..ops.quantize import check_rbits
from ._qat_refs import QuantizerRef, quantizer_factory, quantizer_names, register_quantizer
from .scaling import Scaling

__all__ = [
    "ROLES", "GEMMS", "Role", "QuantizerRef", "GemmAccumulate", "Recipe", "Transform",
    "WgradTransform", "register_quantizer", "quantizer_factory", "quantizer_names", "as_role",
]

#: Every role a recipe can set, in display order.
ROLES = ("input", "weight", "bias", "output", "grad_output", "grad_input", "grad_weight",
         "stats", "normalized")
#: The three GEMMs of a training step.
GEMMS = ("forward", "dgrad", "wgrad")
#: Recipe fields besides the roles that an override may set.
EXTRA_FIELDS = ("accumulate", "wgrad_transform", "quantize_wgrad")
#: Override keys that name the first / last GEMM module in registration order.
POSITION_KEYS = ("first", "last")

_NONE = "none"  # how None is written where TOML has no null


@dataclasses.dataclass(frozen=True)
class Role:
    """One role's quantization: ``s · Q(x / s)`` onto ``format`` with ``rounding``.

    Args:
        format: a format object or name (``lowbit.formats.get``).
        rounding: a ``Rounding`` mode or its name.
        scaling: None (``s = 1``), a ``Scaling``, a granularity name (dynamic scaling), or a
            mapping of ``Scaling`` fields.  Block formats carry their own scales, so they
            take no scaling.
        rbits: random bits of stochastic rounding (None: 32).
    """

    format: Format
    rounding: Rounding = Rounding.NEAREST
    scaling: Optional[Scaling] = None
    rbits: Optional[int] = None

    def __post_init__(self) -> None:
        set_ = object.__setattr__
        try:
            set_(self, "format", get(self.format))
        except (TypeError, ValueError) as err:
            raise type(err)(f"format: {err}") from None
        set_(self, "rounding", Rounding.parse(self.rounding, "rounding"))
        set_(self, "scaling", _as_scaling(self.scaling))
        check_rbits(self.rbits, self.rounding, None)
        if self.scaling is not None and isinstance(self.format, BlockFormat):
            raise ValueError(f"{self.format!r} is a block format with its own scales; "
                             "scaling applies to scalar formats only")

    @property
    def stochastic(self) -> bool:
        return self.rounding is Rounding.STOCHASTIC

    def __repr__(self) -> str:
        parts = [repr(repr(self.format))]
        if self.rounding is not Rounding.NEAREST:
            parts.append(f"rounding={self.rounding.value!r}")
        if self.scaling is not None:
            parts.append(f"scaling={self.scaling}")
        if self.rbits is not None:
            parts.append(f"rbits={self.rbits}")
        return f"Role({', '.join(parts)})"


def _as_scaling(value: object) -> Optional[Scaling]:
    if value is None or isinstance(value, Scaling):
        return value
    if isinstance(value, str):
        return None if value == _NONE else Scaling(granularity=value)
    if isinstance(value, Mapping):
        allowed = {f.name for f in dataclasses.fields(Scaling)}
        unknown = sorted(set(value) - allowed)
        if unknown:
            raise ValueError(f"unknown scaling fields {unknown}; allowed: {sorted(allowed)}")
        return Scaling(**value)
    raise TypeError(f"scaling must be None, a Scaling, a granularity name or a mapping; "
                    f"got {value!r}")


RoleValue = Union[Role, QuantizerRef, None]


def as_role(value: object, param: str = "role") -> RoleValue:
    """Normalise a user's role value (None, ``"none"``, a format or name, a ``Role``, a
    ``QuantizerRef``, or a mapping of ``Role`` fields or ``{"quantizer": NAME, ...}``)."""
    if value is None or isinstance(value, (Role, QuantizerRef)):
        return value
    try:
        if isinstance(value, str) and value.strip().lower() == _NONE:
            return None
        if isinstance(value, Mapping):
            if "quantizer" in value:
                rest = {k: v for k, v in value.items() if k != "quantizer"}
                return QuantizerRef(value["quantizer"], rest)
            allowed = {f.name for f in dataclasses.fields(Role)}
            unknown = sorted(set(value) - allowed)
            if unknown:
                raise ValueError(f"unknown fields {unknown}; allowed: {sorted(allowed)} or "
                                 "'quantizer'")
            return Role(**value)
        return Role(value)
    except (TypeError, ValueError) as err:
        raise type(err)(f"{param}: {err}") from None


# -- accumulation --------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class GemmAccumulate:
    """The accumulation spec of each GEMM (None: plain fp32 GEMM)."""

    forward: Optional[Accumulate] = None
    dgrad: Optional[Accumulate] = None
    wgrad: Optional[Accumulate] = None

    def __post_init__(self) -> None:
        for gemm in GEMMS:
            value = getattr(self, gemm)
            if isinstance(value, str) and value == _NONE:
                value = None
            elif isinstance(value, Mapping):
                value = Accumulate.from_dict(dict(value))
            elif value is not None and not isinstance(value, Accumulate):
                raise TypeError(f"accumulate[{gemm!r}] must be an Accumulate, a mapping or "
                                f"None; got {value!r}")
            object.__setattr__(self, gemm, value)

    @property
    def active(self) -> bool:
        return any(getattr(self, g) is not None for g in GEMMS)


def _as_accumulate(value: object) -> Optional[GemmAccumulate]:
    if value is None or isinstance(value, GemmAccumulate):
        return value
    if isinstance(value, Accumulate):
        return GemmAccumulate(value, value, value)
    if isinstance(value, Mapping):
        if value and set(value) <= set(GEMMS):
            return GemmAccumulate(**value)
        spec = Accumulate.from_dict(dict(value))
        return GemmAccumulate(spec, spec, spec)
    raise TypeError("accumulate must be an Accumulate, a mapping {'forward', 'dgrad', "
                    f"'wgrad'}} -> Accumulate, or None; got {value!r}")


# -- wgrad transform -------------------------------------------------------------------------------
class Transform(_StrEnum):
    """An orthogonal transform of the wgrad operands (``WgradTransform.kind``)."""

    #: The blockwise random Hadamard transform ``H_b diag(s) / sqrt(b)``
    #: (``lowbit.ops.hadamard``).
    HADAMARD = "hadamard"


@dataclasses.dataclass(frozen=True)
class WgradTransform:
    """``dW = (Q g)ᵀ (Q x)`` with both operands transformed along the wgrad GEMM's reduction
    axis (tokens / batch) before they are quantized; exact arithmetic gives ``gᵀ x`` since
    ``Qᵀ Q = I``.  The axis is zero-padded to a multiple of ``block`` first (zero rows add
    nothing to the product).  The signs of ``Q`` are ``lowbit.ops.hadamard.random_signs`` of
    ``derive_seed(seed, stable_key("", "hadamard", "wgrad"), 0)`` (``lowbit.nn.rng``): one
    sign vector per run, shared by every layer and step, as NVIDIA's NVFP4 recipe uses one
    fixed random sign vector (arXiv 2509.25193, §4.2).

    Args:
        kind: a ``Transform`` or its name.
        block: the block size ``b``, a power of two (16 in the NVFP4 recipe).
    """

    kind: Transform = Transform.HADAMARD
    block: int = 16

    def __post_init__(self) -> None:
        object.__setattr__(self, "kind", Transform.parse(self.kind, "wgrad_transform kind"))
        b = self.block
        if isinstance(b, bool) or not isinstance(b, int):
            raise TypeError(f"wgrad_transform block must be an int; got {b!r}")
        if b < 2 or b & (b - 1):
            raise ValueError(f"wgrad_transform block must be a power of two >= 2; got {b}")


def _as_transform(value: object) -> Optional[WgradTransform]:
    if value is None or isinstance(value, WgradTransform):
        return value
    if isinstance(value, str):
        return None if value == _NONE else WgradTransform(value)
    if isinstance(value, Mapping):
        allowed = {f.name for f in dataclasses.fields(WgradTransform)}
        unknown = sorted(set(value) - allowed)
        if unknown:
            raise ValueError(f"wgrad_transform: unknown fields {unknown}; allowed: "
                             f"{sorted(allowed)}")
        return WgradTransform(**value)
    raise TypeError(f"wgrad_transform must be None, a WgradTransform, a kind name or a "
                    f"mapping; got {value!r}")


# -- the recipe ----------------------------------------------------------------------------------
OverrideKey = Union[str, "re.Pattern[str]", type]


@dataclasses.dataclass(frozen=True)
class Recipe:
    """Which format goes where: one value per role, an accumulation spec, overrides, and the
    wgrad GEMM's treatment (``wgrad_transform``, ``quantize_wgrad``).

    See the module docstring for the roles and override keys.  Mapping overrides are merged
    into this recipe when it is built.  ``to_dict``/``from_dict``, ``to_json``/``from_json``
    and ``to_toml``/``from_toml`` round-trip it; ``load``/``save`` pick by file suffix.
    """

    input: RoleValue = None
    weight: RoleValue = None
    bias: RoleValue = None
    output: RoleValue = None
    grad_output: RoleValue = None
    grad_input: RoleValue = None
    grad_weight: RoleValue = None
    stats: RoleValue = None
    normalized: RoleValue = None
    accumulate: Optional[GemmAccumulate] = None
    overrides: Tuple[Tuple[OverrideKey, Optional["Recipe"]], ...] = ()
    wgrad_transform: Optional[WgradTransform] = None
    quantize_wgrad: bool = True

    def __post_init__(self) -> None:
        for role in ROLES:
            object.__setattr__(self, role, as_role(getattr(self, role), role))
        object.__setattr__(self, "accumulate", _as_accumulate(self.accumulate))
        object.__setattr__(self, "wgrad_transform", _as_transform(self.wgrad_transform))
        if not isinstance(self.quantize_wgrad, bool):
            raise TypeError(f"quantize_wgrad must be a bool; got {self.quantize_wgrad!r}")
        object.__setattr__(self, "overrides", self._normalise_overrides(self.overrides))

    def _normalise_overrides(self, overrides: object) -> tuple:
        if isinstance(overrides, Mapping):
            items = list(overrides.items())
        elif isinstance(overrides, (tuple, list)):
            items = list(overrides)
            if not all(isinstance(i, tuple) and len(i) == 2 for i in items):
                raise TypeError("overrides must be a mapping or a sequence of (key, value) "
                                "pairs")
        else:
            raise TypeError(f"overrides must be a mapping; got {type(overrides).__name__}")
        base = dataclasses.replace(self, overrides=()) if items else None
        out, seen = [], set()
        for key, value in items:
            key = _check_key(key)
            if key in seen:
                raise ValueError(f"override key {key!r} appears twice")
            seen.add(key)
            out.append((key, _override_value(base, key, value)))
        return tuple(out)

    # -- queries ---------------------------------------------------------------------------
    def roles(self) -> Dict[str, Union[Role, QuantizerRef]]:
        """The roles that are set, by name."""
        return {r: getattr(self, r) for r in ROLES if getattr(self, r) is not None}

    @property
    def active(self) -> bool:
        """True when a role or an accumulation spec is set (else a module stays fp32)."""
        return bool(self.roles()) or (self.accumulate is not None and self.accumulate.active)

    def accumulate_for(self, gemm: str) -> Optional[Accumulate]:
        return None if self.accumulate is None else getattr(self.accumulate, gemm)

    def replace(self, **changes: Any) -> "Recipe":
        """A copy with ``changes`` (role names, ``accumulate``, ``overrides``)."""
        return dataclasses.replace(self, **changes)

    def __str__(self) -> str:
        """The recipe as TOML (what ``save`` writes)."""
        return self.to_toml().rstrip() or "Recipe()"

    # -- serialisation (lowbit.nn._serial) ------------------------------------------------
    def to_dict(self) -> Dict[str, Any]:
        """Plain data: format names, mode strings, ``"none"`` for fp32 overrides."""
        from . import _serial

        return _serial.recipe_to_dict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "Recipe":
        from . import _serial

        return _serial.recipe_from_dict(data)

    def to_json(self, **kwargs: Any) -> str:
        import json

        return json.dumps(self.to_dict(), **kwargs)

    @classmethod
    def from_json(cls, text: str) -> "Recipe":
        import json

        return cls.from_dict(json.loads(text))

    def to_toml(self) -> str:
        from . import _serial

        return _serial.dumps_toml(self.to_dict())

    @classmethod
    def from_toml(cls, text: str) -> "Recipe":
        from . import _serial

        return cls.from_dict(_serial.loads_toml(text))

    def save(self, path: Any) -> None:
        """Write ``path`` as TOML (``.toml``) or JSON (``.json``)."""
        from . import _serial

        _serial.save(self, path)

    @classmethod
    def load(cls, path: Any) -> "Recipe":
        """Read a ``.toml`` or ``.json`` recipe file."""
        from . import _serial

        return _serial.load(path)


def _check_key(key: object) -> OverrideKey:
    if isinstance(key, str):
        if not key:
            raise ValueError("an override key must not be empty (use the recipe itself)")
        return key
    if isinstance(key, re.Pattern):
        return key
    if isinstance(key, type):
        if not issubclass(key, torch.nn.Module):
            raise TypeError(f"a type override key must be an nn.Module subclass; got {key!r}")
        return key
    raise TypeError(f"override keys are module names, regular expressions (str or "
                    f"re.Pattern), nn.Module types, 'first' or 'last'; got {key!r}")


def _override_value(base: Recipe, key: object, value: object) -> Optional[Recipe]:
    if value is None or (isinstance(value, str) and value == _NONE):
        return None
    if isinstance(value, Recipe):
        if value.overrides:
            raise ValueError(f"override {key!r}: an override recipe cannot have overrides")
        return value
    if isinstance(value, Mapping):
        allowed = set(ROLES) | set(EXTRA_FIELDS)
        unknown = sorted(set(value) - allowed)
        if unknown:
            raise ValueError(f"override {key!r}: unknown fields {unknown}; allowed: "
                             f"{sorted(allowed)}")
        try:
            return dataclasses.replace(base, **value)
        except (TypeError, ValueError) as err:
            raise type(err)(f"override {key!r}: {err}") from None
    raise TypeError(f"override {key!r} must be a Recipe, a mapping of fields or None; "
                    f"got {value!r}")
