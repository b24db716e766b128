"""Which saved tensor is stored how: ``Rule`` (one tensor's treatment), ``Policy`` (rules by
module type, module name and saved slot) and ActNN's optimization levels as named presets.

A saved tensor is identified by the innermost module (or lowbit functional op) whose forward
saved it: its qualified name in the model (``""`` outside every module), the names of its
class and base classes, and its *slot*, the ordinal of the save within that module's forward
(0, 1, ...; parameters count).  Override keys are ``"TARGET"`` or ``"TARGET:SLOT"``; ``TARGET``
matches a module whose qualified name matches it as an ``fnmatch`` pattern (``"layer1.*"``,
``"blocks.?.attn"``) or whose class or a base class has that name (``"Conv2d"``,
``"_BatchNorm"``).  The last matching override wins; unmatched tensors get ``default``.
"""

from __future__ import annotations

import dataclasses
import fnmatch
from typing import Any, Dict, Mapping, Optional, Sequence, Tuple, Union

from ..formats.modes import _StrEnum

__all__ = ["Store", "Rule", "Policy", "LEVELS", "level"]

_BITS = (1, 2, 4, 8)


class Store(_StrEnum):
    """How a saved tensor is kept until backward."""

    #: The tensor itself (a reference: no copy, no saving).
    KEEP = "keep"
    #: ``b``-bit per-group codes with bf16 min/max and stochastic rounding (ActNN).
    BITS = "bits"
    #: ``BITS`` with the width chosen per module by auto precision (``AutoPrecision``).
    AUTO = "auto"
    #: One exact bit per element: ``x > 0`` for ReLU-like modules (their backward reads only
    #: the sign), ``x != 0`` times the keep scale for dropout's float noise.  Only correct where
    #: the backward needs no more; the default policy uses it for ReLU, LeakyReLU, Dropout.
    MASK = "mask"
    #: Pooling: the input by its shape alone (max and average pooling backward passes read
    #: only its size) and max pooling's arg-max indices as int8 offsets inside the window.
    POOL = "pool"


_RuleLike = Union["Rule", int, str]


@dataclasses.dataclass(frozen=True)
class Rule:
    """One saved tensor's treatment.

    Args:
        store: a ``Store`` (or its string).
        bits: code width for ``Store.BITS`` (1, 2, 4 or 8); None takes ``compress``'s ``bits``.
        offload: move what is held to CPU memory (pinned) until backward; a no-op for CPU
            tensors.
    """

    store: Store = Store.BITS
    bits: Optional[int] = None
    offload: bool = False

    def __post_init__(self):
        object.__setattr__(self, "store", Store.parse(self.store, "store"))
        if self.bits is not None and (isinstance(self.bits, bool) or self.bits not in _BITS):
            raise ValueError(f"bits must be one of {_BITS} or None; got {self.bits!r}")
        if self.bits is not None and self.store is not Store.BITS:
            raise ValueError(f"bits applies to store='bits' only; got store={self.store.value!r}")
        if not isinstance(self.offload, bool):
            raise TypeError(f"offload must be a bool; got {self.offload!r}")

    @classmethod
    def parse(cls, value: _RuleLike, param: str = "rule") -> "Rule":
        """A ``Rule`` from a ``Rule``, a bit width (``2``), a store name (``"keep"``,
        ``"mask"``, ``"auto"``, ...) or ``"offload"`` (keep, offloaded)."""
        if isinstance(value, Rule):
            return value
        if isinstance(value, int) and not isinstance(value, bool):
            if value not in _BITS:
                raise ValueError(f"{param}: a bit width must be one of {_BITS}; got {value}")
            return cls(Store.BITS, value)
        if value == "offload":
            return cls(Store.KEEP, offload=True)
        if isinstance(value, str):
            return cls(Store.parse(value, param))
        raise TypeError(f"{param} must be a Rule, a bit width {_BITS} or one of "
                        f"{[s.value for s in Store] + ['offload']}; got {value!r}")

    def to_dict(self) -> Dict[str, Any]:
        return {"store": self.store.value, "bits": self.bits, "offload": self.offload}


def _split_key(key: str) -> Tuple[str, Optional[int]]:
    if not isinstance(key, str) or not key:
        raise TypeError(f"policy override keys must be non-empty strings; got {key!r}")
    target, sep, slot = key.rpartition(":")
    if not sep:
        return key, None
    if not slot.isdigit() or not target:
        raise ValueError(f"policy override key {key!r}: expected 'TARGET' or 'TARGET:SLOT' "
                         "with SLOT a non-negative integer")
    return target, int(slot)


@dataclasses.dataclass(frozen=True)
class Policy:
    """Rules for every floating tensor saved for backward (others: see ``compress``).

    Args:
        default: the rule of tensors no override matches.
        overrides: ``{key: rule}`` (module docstring), a mapping or a sequence of pairs; rules
            may be given as anything ``Rule.parse`` takes.
        min_numel: floating tensors with fewer elements are kept (compressing them saves too
            little to pay for the launch).
        keep_norm_stats: inside normalisation modules (BatchNorm, LayerNorm, GroupNorm,
            InstanceNorm, RMSNorm), keep the saved tensors whose shape is not the module
            input's (the per-row or per-channel mean and inverse deviation, which scale every
            gradient of the layer).
        avg_bits: the average code width that auto precision (``Store.AUTO``) targets.
        name: a label for reports.
    """

    default: Rule = Rule()
    overrides: Tuple[Tuple[str, Rule], ...] = ()
    min_numel: int = 4096
    keep_norm_stats: bool = True
    avg_bits: float = 2.0
    name: str = "custom"

    def __post_init__(self):
        object.__setattr__(self, "default", Rule.parse(self.default, "default"))
        items = self.overrides.items() if isinstance(self.overrides, Mapping) else self.overrides
        parsed = []
        for pair in items:
            if not isinstance(pair, (tuple, list)) or len(pair) != 2:
                raise TypeError(f"overrides must be a mapping or (key, rule) pairs; got {pair!r}")
            key, rule = pair
            _split_key(key)
            parsed.append((key, Rule.parse(rule, f"overrides[{key!r}]")))
        object.__setattr__(self, "overrides", tuple(parsed))
        # (target, slot, rule) triples, parsed once: rule_for runs for every saved tensor
        object.__setattr__(self, "_matchers", tuple((*_split_key(k), r) for k, r in parsed))
        if isinstance(self.min_numel, bool) or not isinstance(self.min_numel, int) \
                or self.min_numel < 0:
            raise ValueError(f"min_numel must be a non-negative int; got {self.min_numel!r}")
        if not isinstance(self.keep_norm_stats, bool):
            raise TypeError(f"keep_norm_stats must be a bool; got {self.keep_norm_stats!r}")
        if not isinstance(self.avg_bits, (int, float)) or not 1 <= self.avg_bits <= 8:
            raise ValueError(f"avg_bits must be a number in [1, 8]; got {self.avg_bits!r}")

    def rule_for(self, name: str, types: Sequence[str], slot: int) -> Rule:
        """The rule of the tensor saved ``slot``-th by the module ``name`` of class names
        ``types`` (the class first, then its bases)."""
        rule = self.default
        for target, want, candidate in self._matchers:
            if want is not None and want != slot:
                continue
            if target in types or fnmatch.fnmatchcase(name, target):
                rule = candidate
        return rule

    @property
    def uses_auto(self) -> bool:
        return any(r.store is Store.AUTO for r in (self.default, *(r for _, r in self.overrides)))

    def to_dict(self) -> Dict[str, Any]:
        return {"version": 1, "name": self.name, "default": self.default.to_dict(),
                "overrides": [[k, r.to_dict()] for k, r in self.overrides],
                "min_numel": self.min_numel, "keep_norm_stats": self.keep_norm_stats,
                "avg_bits": self.avg_bits}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "Policy":
        if d.get("version") != 1:
            raise ValueError(f"unsupported policy version {d.get('version')!r}; expected 1")
        return cls(default=Rule(**d["default"]),
                   overrides=tuple((k, Rule(**r)) for k, r in d["overrides"]),
                   min_numel=d["min_numel"], keep_norm_stats=d["keep_norm_stats"],
                   avg_bits=d["avg_bits"], name=d["name"])


# -- presets --------------------------------------------------------------------------------
#: Exact treatments lowbit applies wherever it recognises the module (every preset but L0).
EXACT = (("ReLU", Rule(Store.MASK)), ("LeakyReLU", Rule(Store.MASK)),
         ("Dropout", Rule(Store.MASK)), ("Dropout1d", Rule(Store.MASK)),
         ("Dropout2d", Rule(Store.MASK)), ("Dropout3d", Rule(Store.MASK)),
         ("_MaxPoolNd", Rule(Store.POOL)), ("_AvgPoolNd", Rule(Store.POOL)),
         ("_AdaptiveAvgPoolNd", Rule(Store.POOL)))
_CONV_LINEAR = ("_ConvNd", "Linear")  # Conv1d/2d/3d, ConvTranspose1d/2d/3d, Linear
_BN = ("_BatchNorm",)  # BatchNorm1d/2d/3d, SyncBatchNorm


def _level(name: str, layers: Tuple[str, ...], rule: Rule, avg_bits: float = 2.0) -> Policy:
    return Policy(default=Rule(Store.KEEP),
                  overrides=EXACT + tuple((t, rule) for t in layers),
                  min_numel=0, avg_bits=avg_bits, name=name)


def _levels() -> Dict[str, Policy]:
    bits4 = Rule(Store.BITS, 4)
    auto = Rule(Store.AUTO)
    auto_swap = Rule(Store.AUTO, offload=True)
    return {
        # Nothing compressed: autograd's own tensors (gradients bit-identical to no hooks).
        "L0": Policy(default=Rule(Store.KEEP), min_numel=0, name="L0"),
        # 4-bit conv/linear inputs; BatchNorm inputs kept; exact masks for ReLU, dropout, pool.
        "L1": _level("L1", _CONV_LINEAR, bits4),
        # 4-bit conv/linear and BatchNorm inputs.
        "L2": _level("L2", _CONV_LINEAR + _BN, bits4),
        # 2 bits on average over conv/linear/BatchNorm, allocated per layer (auto precision).
        "L3": _level("L3", _CONV_LINEAR + _BN, auto),
        # L3, the packed codes swapped to pinned CPU memory until backward.
        "L4": _level("L4", _CONV_LINEAR + _BN, auto_swap),
        # ActNN's L5 adds allocator defragmentation through a patched PyTorch fork; the
        # stored tensors are L4's, which is what this preset reproduces.
        "L5": _level("L5", _CONV_LINEAR + _BN, auto_swap),
        # No compression: conv/linear/BatchNorm inputs offloaded to CPU as they are.
        "swap": _level("swap", _CONV_LINEAR + _BN, Rule(Store.KEEP, offload=True)),
    }


#: ActNN's optimization levels (``actnn.set_optimization_level``), as policies.
LEVELS: Dict[str, Policy] = _levels()


def level(name: str) -> Policy:
    """The preset policy of ActNN level ``name`` ("L0" ... "L5", "swap")."""
    if name not in LEVELS:
        raise ValueError(f"level must be one of {list(LEVELS)}; got {name!r}")
    return LEVELS[name]
