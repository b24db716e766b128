"""``PaperRecipe``: a named training setup of a paper (a ``lowbit.nn.Recipe`` for the layers,
the optimizer's settings, the optional activation compression), and the one registry of them.

A ``PaperRecipe`` is plain data.  ``prepare(model, *, seed)`` applies it to a model and returns
a ``Prepared``: the converted model, ``make_optimizer(params)`` (the paper's base optimizer
wrapped in ``lowbit.optim.LowPrecision`` where the paper keeps weights, gradients or state in
low precision) and ``context()`` (``lowbit.act.compress`` for the ActNN levels, otherwise a
no-op), so that every caller (the CLI, the examples, the tests) trains a recipe the same way::

    prepared = lowbit.recipes.get("hfp8").prepare(model, seed=0)
    opt = prepared.make_optimizer(model.parameters())
    for x, y in batches:
        with prepared.context():
            loss = F.cross_entropy(prepared.model(x), y)
        opt.zero_grad(); prepared.backward(loss, opt); opt.step()

``prepared.backward`` calls ``opt.backward(loss)`` on a ``LowPrecision`` optimizer, which
multiplies the loss by the recipe's loss scale first (``ibm8``, ``hfp8``); a bare
``loss.backward()`` would skip the scaling.
"""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
from typing import Any, Callable, ContextManager, Dict, Iterable, Mapping, Optional, Tuple

import torch

from ..nn.recipe import Recipe

__all__ = ["PaperRecipe", "Prepared", "OptimizerSpec", "register", "register_optimizer", "get",
           "names", "all_recipes"]

#: Base optimizers by name: ``cls(params, **kwargs)``; papers with their own update rule
#: (e.g. WAGEUBN's quantized momentum) add theirs with ``register_optimizer``.
_OPTIMIZERS: Dict[str, Callable[..., torch.optim.Optimizer]] = {
    "sgd": torch.optim.SGD, "adam": torch.optim.Adam, "adamw": torch.optim.AdamW,
}


def register_optimizer(name: str, cls: Callable[..., torch.optim.Optimizer]) -> None:
    """Make ``OptimizerSpec(name, ...)`` build ``cls(params, **kwargs)``."""
    if not isinstance(name, str) or not name:
        raise TypeError(f"optimizer name must be a non-empty str; got {name!r}")
    if _OPTIMIZERS.get(name, cls) is not cls:
        raise ValueError(f"optimizer {name!r} is already registered to {_OPTIMIZERS[name]!r}")
    _OPTIMIZERS[name] = cls
_LOW_PRECISION_KEYS = ("weight", "grad", "state", "master", "rounding", "update_rounding",
                       "loss_scale")


@dataclasses.dataclass(frozen=True)
class OptimizerSpec:
    """The paper's optimizer: a base optimizer (``name``: sgd, adam, adamw or one added with
    ``register_optimizer``; its keyword
    arguments in ``kwargs``; ``lr`` is the default learning rate a caller may replace) and the
    ``lowbit.optim.LowPrecision`` options in ``low_precision`` (empty: no wrapper)."""

    name: str = "sgd"
    kwargs: Tuple[Tuple[str, Any], ...] = (("lr", 0.1), ("momentum", 0.9))
    low_precision: Tuple[Tuple[str, Any], ...] = ()

    def __post_init__(self) -> None:
        if self.name not in _OPTIMIZERS:
            raise ValueError(f"optimizer name must be one of {list(_OPTIMIZERS)}; got "
                             f"{self.name!r}")
        set_ = object.__setattr__
        set_(self, "kwargs", _items(self.kwargs, "kwargs"))
        set_(self, "low_precision", _items(self.low_precision, "low_precision"))
        unknown = sorted(set(dict(self.low_precision)) - set(_LOW_PRECISION_KEYS))
        if unknown:
            raise ValueError(f"low_precision: unknown options {unknown}; allowed: "
                             f"{list(_LOW_PRECISION_KEYS)}")

    @property
    def lr(self) -> Optional[float]:
        return dict(self.kwargs).get("lr")

    def build(self, params: Iterable[torch.nn.Parameter], *, lr: Optional[float] = None,
              seed: Optional[int] = None) -> torch.optim.Optimizer:
        """The torch optimizer over ``params`` (``lr`` replaces the default), wrapped in
        ``LowPrecision(..., seed=seed)`` when ``low_precision`` is set."""
        kwargs = dict(self.kwargs)
        if lr is not None:
            kwargs["lr"] = lr
        opt = _OPTIMIZERS[self.name](params, **kwargs)
        if not self.low_precision:
            return opt
        from ..optim import LowPrecision

        return LowPrecision(opt, **dict(self.low_precision), seed=seed)


def _items(value: object, param: str) -> Tuple[Tuple[str, Any], ...]:
    if isinstance(value, Mapping):
        value = tuple(value.items())
    if not isinstance(value, tuple) or not all(isinstance(i, tuple) and len(i) == 2
                                               for i in value):
        raise TypeError(f"{param} must be a mapping; got {value!r}")
    return tuple((str(k), v) for k, v in value)


@dataclasses.dataclass
class Prepared:
    """A model with a recipe applied: train ``model`` with ``make_optimizer(params)`` and run
    each forward pass under ``context()``."""

    model: torch.nn.Module
    make_optimizer: Callable[..., torch.optim.Optimizer]
    context: Callable[[], ContextManager]

    @staticmethod
    def backward(loss: torch.Tensor, optimizer: torch.optim.Optimizer) -> None:
        """``optimizer.backward(loss)`` where the optimizer has one (``LowPrecision``: the
        loss times its loss scale ``S``, whose gradients ``step`` divides by ``S``), else
        ``loss.backward()``."""
        backward = getattr(optimizer, "backward", None)
        if callable(backward):
            backward(loss)
        else:
            loss.backward()


@dataclasses.dataclass(frozen=True)
class PaperRecipe:
    """A paper's training setup, by name.

    Attributes:
        name: the registry name (``lowbit.recipes.get(name)``).
        title: one line: the paper and what the recipe quantizes.
        source: where the numerics come from (paper, official code), cited.
        recipe: the ``lowbit.nn.Recipe`` of the layers (``None`` roles: fp32).
        optimizer: the ``OptimizerSpec``.
        act: an ActNN level name (``lowbit.act.level``) or None (no activation compression).
        details: the formulas, one line each, as printed by ``lowbit recipes NAME``.
        setup: optional ``setup(model, seed) -> model`` run after ``convert`` for what a
            recipe cannot say (e.g. inserting quantization points).
        batchnorm: False when the paper's networks have no BatchNorm (WAGE replaces it by a
            layer scale): a trainer then picks a model without it.
        lr_milestones: the paper's step schedule as ``(fraction of the run, factor)`` pairs,
            increasing fractions in (0, 1): from that point on the rate is ``factor`` times
            the starting rate; empty: the trainer's own schedule.
        epochs_scale: how many times a trainer's default number of epochs the paper's
            schedule needs (WAGE: 2; its ternary weights converge more slowly, and the paper
            trains 300 epochs on CIFAR-10).
    """

    name: str
    title: str
    source: str
    recipe: Recipe = dataclasses.field(default_factory=Recipe)
    optimizer: OptimizerSpec = dataclasses.field(default_factory=OptimizerSpec)
    act: Optional[str] = None
    details: Tuple[str, ...] = ()
    setup: Optional[Callable[[torch.nn.Module, int], torch.nn.Module]] = None
    batchnorm: bool = True
    lr_milestones: Tuple[Tuple[float, float], ...] = ()
    epochs_scale: float = 1.0

    def __post_init__(self) -> None:
        milestones = tuple((float(f), float(k)) for f, k in self.lr_milestones)
        fractions = [f for f, _ in milestones]
        if any(not 0 < f < 1 for f in fractions) or fractions != sorted(set(fractions)):
            raise ValueError("lr_milestones: fractions must increase strictly within (0, 1); "
                             f"got {fractions}")
        if any(not k > 0 for _, k in milestones):
            raise ValueError(f"lr_milestones: factors must be positive; got {milestones}")
        if not self.epochs_scale > 0:
            raise ValueError(f"epochs_scale must be positive; got {self.epochs_scale!r}")
        object.__setattr__(self, "lr_milestones", milestones)

    def lr_factor(self, step: int, total: int) -> float:
        """The factor of ``lr_milestones`` at ``step`` of a run of ``total`` steps (1 before
        the first milestone)."""
        factor = 1.0
        for fraction, value in self.lr_milestones:
            if step >= fraction * total:
                factor = value
        return factor

    def prepare(self, model: torch.nn.Module, *, seed: int = 0) -> Prepared:
        """Convert ``model`` in place (``lowbit.convert(model, recipe, seed=seed)``), run
        ``setup``, and return the ``Prepared`` training pieces."""
        from ..nn import convert

        if self.recipe.active:
            model = convert(model, self.recipe, seed=seed)
        if self.setup is not None:
            model = self.setup(model, seed)

        def make_optimizer(params, *, lr: Optional[float] = None):
            return self.optimizer.build(params, lr=lr, seed=seed)

        if self.act is None:
            context = contextlib.nullcontext
        else:
            from .. import act
            from ..nn.rng import derive_seed, stable_key

            calls = itertools.count()
            key = stable_key("", "act", "compress")

            def context():
                # A new seed per context (per training step): the same seed every step would
                # give every step the same rounding noise.
                return act.compress(model, policy=self.act,
                                    seed=derive_seed(seed, key, next(calls)))
        return Prepared(model, make_optimizer, context)

    def describe(self) -> str:
        """A printable description: title, source, details, recipe (TOML) and optimizer."""
        lines = [f"{self.name}: {self.title}", f"source: {self.source}"]
        lines += [f"  {d}" for d in self.details]
        lines.append("recipe:")
        lines += [f"  {line}" for line in str(self.recipe).splitlines()]
        opt = self.optimizer
        lines.append(f"optimizer: {opt.name} {dict(opt.kwargs)}")
        if opt.low_precision:
            lines.append(f"low precision: {dict(opt.low_precision)}")
        if self.act is not None:
            lines.append(f"activation compression: ActNN level {self.act}")
        if self.lr_milestones:
            steps = ", ".join(f"x{k:g} from {f:.3g} of the run" for f, k in self.lr_milestones)
            lines.append(f"learning-rate schedule: {steps}")
        if self.epochs_scale != 1:
            lines.append(f"epochs: {self.epochs_scale:g}x the trainer's default")
        if not self.batchnorm:
            lines.append("models: without BatchNorm")
        return "\n".join(lines)

    __str__ = describe


_REGISTRY: Dict[str, PaperRecipe] = {}


def register(recipe: PaperRecipe) -> PaperRecipe:
    """Add ``recipe`` under ``recipe.name``; a second recipe with the same name is an error."""
    if not isinstance(recipe, PaperRecipe):
        raise TypeError(f"recipe must be a PaperRecipe; got {type(recipe).__name__}")
    if recipe.name in _REGISTRY and _REGISTRY[recipe.name] is not recipe:
        raise ValueError(f"a recipe named {recipe.name!r} is already registered")
    _REGISTRY[recipe.name] = recipe
    return recipe


def names() -> Tuple[str, ...]:
    """The registered recipe names, in registration order."""
    return tuple(_REGISTRY)


def get(name: str) -> PaperRecipe:
    """The recipe called ``name``; a ``ValueError`` lists the known names."""
    if not isinstance(name, str):
        raise TypeError(f"recipe name must be a str; got {type(name).__name__}")
    if name not in _REGISTRY:
        raise ValueError(f"unknown recipe {name!r}; known: {', '.join(_REGISTRY)}")
    return _REGISTRY[name]


def all_recipes() -> Tuple[PaperRecipe, ...]:
    return tuple(_REGISTRY.values())
