"""What every quantized module shares, and the one registry from a torch module class to its
quantized class.

``convert`` changes a module's class in place to the quantized class (a subclass of the
original, so ``isinstance`` checks, parameters, buffers and hooks stay as they were) and
attaches ``module.lowbit`` (a ``QuantState``); ``unconvert`` restores the class and removes
the attribute.  The quantized classes can also be built directly, e.g.
``lowbit.nn.Linear(4, 8, recipe=recipe)``.
"""

from __future__ import annotations

from typing import Dict, Optional, Tuple

import torch

from .._state import QuantState, eager
from ..recipe import Recipe

__all__ = ["QuantizedModule", "register", "quantized_class", "REGISTRY"]

#: torch (or lowbit) module class -> its quantized class.
REGISTRY: Dict[type, type] = {}
_DYNAMIC: Dict[Tuple[type, type], type] = {}

#: Slots of a GEMM-like module (``grad_bias`` takes the ``grad_weight`` spec).
GEMM_SLOTS = ("input", "weight", "bias", "output", "grad_output", "grad_input",
              "grad_weight", "grad_bias")


def register(original: type):
    """Class decorator: the decorated class is the quantized version of ``original``."""

    def deco(qcls: type) -> type:
        qcls._lowbit_original = original
        REGISTRY[original] = qcls
        return qcls

    return deco


def quantized_class(module: torch.nn.Module) -> Optional[type]:
    """The quantized class for ``module``'s class, or None.

    A subclass of a registered class is quantizable when it does not override ``forward``
    (its own forward might not call the GEMM the quantized class replaces); the quantized
    class is then a subclass of both.
    """
    cls = type(module)
    if isinstance(module, QuantizedModule):
        return None
    for base in cls.__mro__:
        qcls = REGISTRY.get(base)
        if qcls is None:
            continue
        if base is cls:
            return qcls
        if cls.forward is not base.forward:
            return None
        key = (qcls, cls)
        if key not in _DYNAMIC:
            _DYNAMIC[key] = type(f"Quantized{cls.__name__}", (qcls, cls),
                                 {"_lowbit_original": cls, "__module__": cls.__module__})
        return _DYNAMIC[key]
    return None


class QuantizedModule:
    """Mixin of quantized modules: ``lowbit`` holds the recipe, quantizers, seed and step.

    Subclasses set ``_lowbit_slots`` (the roles they use), may override ``_lowbit_layout``
    (channel axis and count per role, for channel scaling), ``_lowbit_check`` (reject a
    recipe before anything changes) and ``_lowbit_sites`` (extra GEMM sites).
    """

    _lowbit_original: type = torch.nn.Module
    _lowbit_slots: Tuple[str, ...] = GEMM_SLOTS
    #: True for modules that are GEMMs ("first"/"last" overrides count these).
    _lowbit_gemm: bool = False
    #: True for GEMM-like modules, which the recipe itself reaches; the others (norms,
    #: embeddings) are quantized only when an override selects them.
    _lowbit_default: bool = True
    #: True when the module's children are quantized by the module itself.
    _lowbit_owns_children: bool = False
    lowbit: QuantState

    def forward(self, *args, **kwargs):
        """The layer's forward with its recipe (``_lowbit_forward``).  A module with
        stochastic rounding runs eagerly under ``torch.compile``: its seeds change every call,
        and a compiled graph would bake them in (a recompilation per step)."""
        if self.lowbit.stochastic:
            return eager(self._lowbit_forward, *args, **kwargs)
        return self._lowbit_forward(*args, **kwargs)

    def _lowbit_forward(self, *args, **kwargs):
        raise NotImplementedError

    @classmethod
    def _lowbit_check(cls, module: torch.nn.Module, recipe: Recipe) -> None:
        """Raise when ``recipe`` cannot apply to ``module`` (before any module changes)."""

    def _lowbit_layout(self, slot: str) -> Tuple[int, Optional[int]]:
        return 0, None

    def _lowbit_sites(self, state: QuantState) -> None:
        """Add child sites to ``state`` (modules with several GEMMs)."""

    @classmethod
    def _lowbit_state(cls, module: torch.nn.Module, recipe: Recipe, name: str,
                      seed: int) -> QuantState:
        """Build the state for ``module`` without attaching it (so that errors come before
        any module is changed)."""
        tensor = next(iter(module.parameters(recurse=False)), None)
        if tensor is None:
            tensor = next(iter(module.buffers(recurse=False)), None)
        device = None if tensor is None else tensor.device
        layout = cls._lowbit_layout.__get__(module)
        state = QuantState(recipe, name, cls._lowbit_slots, layout, seed=seed, device=device)
        cls._lowbit_sites(module, state)
        state.train(module.training)
        return state

    def _lowbit_attach(self, state: QuantState) -> None:
        if "lowbit" in self.__dict__ or "lowbit" in self._modules:
            raise ValueError(f"{type(self).__name__} already has an attribute 'lowbit'")
        self.add_module("lowbit", state)

    def _lowbit_init(self, recipe: Optional[Recipe], name: str, seed: int) -> None:
        """For direct construction: attach the state of ``recipe`` (None: no quantization)."""
        recipe = Recipe() if recipe is None else recipe
        if not isinstance(recipe, Recipe):
            raise TypeError(f"recipe must be a lowbit.nn.Recipe; got {type(recipe).__name__}")
        if recipe.overrides:
            raise ValueError("a module's recipe cannot have overrides (they name modules; "
                             "use lowbit.convert on the model)")
        type(self)._lowbit_check(self, recipe)
        self._lowbit_attach(type(self)._lowbit_state(self, recipe, name, seed))
