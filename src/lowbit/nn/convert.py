"""``convert(model, recipe)`` and ``unconvert(model)``: quantized training for any model,
in place, with no global monkey-patching.

``convert`` changes the class of every quantizable module (``lowbit.nn.modules.REGISTRY``:
Linear, Conv1d/2d/3d, ConvTranspose2d, BatchNorm1d/2d/3d, LayerNorm, Embedding,
MultiheadAttention and lowbit's ``MatMul``/``ScaledDotProductAttention`` call sites) to a
quantized subclass and attaches ``module.lowbit``.  The module objects, parameters, buffers,
hooks, devices, dtypes and train/eval modes are those of the model.  A subclass of a
registered class is converted only when it does not override ``forward``.

Which recipe a module gets (first match wins):

1. an override keyed by the module's exact name;
2. ``"first"``/``"last"``: the first/last GEMM module (Linear, convolutions) in
   registration order (``model.named_modules()``);
3. a regular expression (a ``re.Pattern``, or a string that names no module) that
   ``re.fullmatch``-es the module's name, in the order given;
4. a module type the module is an instance of, in the order given;
5. an override keyed by the exact name of an ancestor (the nearest one);
6. the recipe itself.

Rules 5 and 6 apply to GEMM-like modules only (Linear, convolutions, attention, MatMul):
normalisation layers and embeddings are quantized only when an override selects them by
rules 1–4 (``overrides={nn.BatchNorm2d: {}}`` gives them the recipe itself).  A module whose
recipe is None or sets nothing stays as it is.  Every override key must reach
at least one quantizable module and every recipe must suit its modules; otherwise a
``ValueError`` (or ``NotImplementedError``) is raised before any module changes.
"""

from __future__ import annotations

import re
from typing import Dict, List, Optional, Tuple

import torch

from .modules.base import QuantizedModule, quantized_class
from .modules.quantize import Quantize
from .recipe import POSITION_KEYS, Recipe

__all__ = ["convert", "unconvert", "resolve"]


def _quantizable(model: torch.nn.Module) -> List[Tuple[str, torch.nn.Module, type]]:
    found, owned = [], []
    for name, module in model.named_modules():
        if any(name.startswith(prefix) for prefix in owned):
            continue
        qcls = quantized_class(module)
        if qcls is None:
            continue
        found.append((name, module, qcls))
        if qcls._lowbit_owns_children:
            owned.append(f"{name}." if name else "")
    return found


class _Matcher:
    """The override keys of ``recipe`` sorted by kind, and the rules above."""

    def __init__(self, recipe: Recipe, names: set, gemms: List[str]):
        self.exact: Dict[str, Optional[Recipe]] = {}
        self.position: Dict[str, Optional[Recipe]] = {}
        self.regex: List[Tuple["re.Pattern[str]", object, Optional[Recipe]]] = []
        self.types: List[Tuple[type, Optional[Recipe]]] = []
        self.base = recipe.replace(overrides=())
        self.first_last = {"first": gemms[0] if gemms else None,
                           "last": gemms[-1] if gemms else None}
        for key, value in recipe.overrides:
            if isinstance(key, type):
                self.types.append((key, value))
            elif isinstance(key, re.Pattern):
                self.regex.append((key, key, value))
            elif key in POSITION_KEYS:
                if not gemms:
                    raise ValueError(f"override {key!r}: the model has no GEMM module")
                self.position[key] = value
            elif key in names:
                self.exact[key] = value
            else:
                try:
                    self.regex.append((re.compile(key), key, value))
                except re.error as err:
                    raise ValueError(f"override key {key!r} names no module and is not a "
                                     f"valid regular expression ({err})") from None

    def resolve(self, name: str, module: torch.nn.Module, default: bool) -> Optional[Recipe]:
        """The module's recipe; ``default`` says whether rules 5 and 6 apply to it."""
        recipe, direct = self._lookup(name, module)
        return recipe if direct or default else None

    def _lookup(self, name: str, module: torch.nn.Module) -> Tuple[Optional[Recipe], bool]:
        """``(recipe, whether an override selected the module itself)``."""
        if name in self.exact:
            return self.exact[name], True
        for key, value in self.position.items():
            if self.first_last[key] == name:
                return value, True
        for pattern, _, value in self.regex:
            if pattern.fullmatch(name):
                return value, True
        for cls, value in self.types:
            if isinstance(module, cls):
                return value, True
        parts = name.split(".")
        for cut in range(len(parts) - 1, 0, -1):
            ancestor = ".".join(parts[:cut])
            if ancestor in self.exact:
                return self.exact[ancestor], False
        return self.base, False

    def reaches(self, key: object, name: str, module: torch.nn.Module) -> bool:
        """Whether ``key`` selects ``name`` (ignoring precedence), for the unused-key check."""
        if isinstance(key, type):
            return isinstance(module, key)
        if key in POSITION_KEYS:
            return self.first_last[key] == name
        if key in self.exact:
            return name == key or name.startswith(f"{key}.")
        pattern = key if isinstance(key, re.Pattern) else re.compile(key)
        return pattern.fullmatch(name) is not None


def resolve(model: torch.nn.Module, recipe: Recipe) -> Dict[str, Optional[Recipe]]:
    """The recipe each quantizable module of ``model`` would get (None: stays fp32).

    Raises:
        ValueError: an override key reaches no quantizable module, or is a bad regex.
    """
    if not isinstance(recipe, Recipe):
        raise TypeError(f"recipe must be a lowbit.nn.Recipe; got {type(recipe).__name__}")
    mods = _quantizable(model)
    names = {n for n, _ in model.named_modules()}
    gemms = [n for n, _, q in mods if q._lowbit_gemm]
    matcher = _Matcher(recipe, names, gemms)
    for key, _ in recipe.overrides:
        if not any(matcher.reaches(key, n, m) for n, m, _ in mods):
            raise ValueError(f"override key {_show(key)} matches no quantizable module of "
                             f"{type(model).__name__} (quantizable: {[n for n, _, _ in mods]})")
    return {n: matcher.resolve(n, m, q._lowbit_default) for n, m, q in mods}


def _show(key: object) -> str:
    if isinstance(key, type):
        return key.__name__
    return repr(key.pattern if isinstance(key, re.Pattern) else key)


def convert(model: torch.nn.Module, recipe: Recipe, *, seed: int = 0) -> torch.nn.Module:
    """Quantize ``model``'s layers as ``recipe`` says, in place; returns ``model``.

    Args:
        model: any ``nn.Module`` (the root may itself be a quantizable layer).
        recipe: a ``Recipe``.
        seed: the run's seed: stochastic rounding draws from ``(seed, module name, role,
            GEMM, step)`` (``lowbit.nn.rng``); it is saved in ``state_dict``.

    Raises:
        ValueError: the model is already converted, an override key reaches no quantizable
            module, or a recipe does not suit a module (e.g. delayed channel scaling where
            the channel count is unknown).
        NotImplementedError: a module cannot do what its recipe asks (e.g. simulated
            accumulation for Conv3d).
    """
    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"model must be a torch.nn.Module; got {type(model).__name__}")
    if any(isinstance(m, QuantizedModule) for m in model.modules()):
        raise ValueError("the model is already converted; call lowbit.unconvert first")
    chosen = resolve(model, recipe)
    plan = []
    for name, module, qcls in _quantizable(model):
        sub = chosen[name]
        if sub is None or not sub.active:
            continue
        try:
            qcls._lowbit_check(module, sub)
            state = qcls._lowbit_state(module, sub, name, seed)
        except (TypeError, ValueError, NotImplementedError) as err:
            raise type(err)(f"module {name or '(root)'!r} ({type(module).__name__}): "
                            f"{err}") from None
        plan.append((module, qcls, state))
    for module, qcls, state in plan:  # nothing below raises: the model changes all at once
        module.__class__ = qcls
        module._lowbit_attach(state)
    for name, module in model.named_modules():
        if isinstance(module, Quantize):
            module._lowbit_previous = module._lowbit_rename(name, seed)
    return model


def unconvert(model: torch.nn.Module) -> torch.nn.Module:
    """Undo ``convert``: every converted module gets its original class back and loses
    ``lowbit``; ``Quantize`` modules get their names and seeds back.  Returns ``model``."""
    for module in list(model.modules()):
        if isinstance(module, QuantizedModule):
            del module._modules["lowbit"]
            module.__class__ = type(module)._lowbit_original
        elif isinstance(module, Quantize) and hasattr(module, "_lowbit_previous"):
            module._lowbit_rename(*module.__dict__.pop("_lowbit_previous"))
    return model
