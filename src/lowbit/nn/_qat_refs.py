"""QAT quantizers as recipe role values: the registry of factories by name
(``register_quantizer``) and ``QuantizerRef``, a reference to one with its keyword arguments.
Re-exported by ``lowbit.nn.recipe``."""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Dict, Mapping, Optional, Tuple

import torch

__all__ = ["QuantizerRef", "register_quantizer", "quantizer_factory", "quantizer_names"]

#: Packages that register quantizers on import, tried in order for an unknown name.
_PROVIDERS = ("lowbit.qat", "lowbit.recipes")
_QUANTIZERS: Dict[str, Callable[..., torch.nn.Module]] = {}


def register_quantizer(name: str, factory: Optional[Callable[..., torch.nn.Module]] = None):
    """Register ``factory(**kwargs) -> nn.Module`` under ``name`` for ``{"quantizer": name}``
    role values; the module's ``forward(x)`` returns the fake-quantized ``x`` with its own
    gradient.  Usable as a decorator (``@register_quantizer("lsq")``).

    Raises:
        ValueError: ``name`` is already registered to a different factory.
    """
    if not isinstance(name, str) or not name:
        raise TypeError(f"quantizer name must be a non-empty str; got {name!r}")

    def deco(fn: Callable[..., torch.nn.Module]) -> Callable[..., torch.nn.Module]:
        if not callable(fn):
            raise TypeError(f"quantizer factory must be callable; got {fn!r}")
        if _QUANTIZERS.get(name, fn) is not fn:
            raise ValueError(f"quantizer {name!r} is already registered to "
                             f"{_QUANTIZERS[name]!r}")
        _QUANTIZERS[name] = fn
        return fn

    return deco if factory is None else deco(factory)


def quantizer_names() -> Tuple[str, ...]:
    """Names of the registered QAT quantizers."""
    return tuple(sorted(_QUANTIZERS))


def quantizer_factory(name: str) -> Callable[..., torch.nn.Module]:
    """The factory registered under ``name``; a ``ValueError`` lists the known names."""
    if name not in _QUANTIZERS:
        # lowbit.qat and lowbit.recipes (WAGE's quantizers) register theirs when imported; a
        # recipe read from a file may name one before the user imported them.  This looks
        # them up by name at run time: nn itself depends on neither.
        import importlib

        for provider in _PROVIDERS:
            try:
                importlib.import_module(provider)
            except ModuleNotFoundError as err:
                if err.name != provider:
                    raise
            if name in _QUANTIZERS:
                break
    if name not in _QUANTIZERS:
        raise ValueError(f"unknown quantizer {name!r}; registered: {list(quantizer_names())}")
    return _QUANTIZERS[name]


@dataclasses.dataclass(frozen=True)
class QuantizerRef:
    """A QAT quantizer by registered name, with keyword arguments for its factory.

    Input, weight, bias and output roles apply it in the autograd graph (its own gradient,
    straight-through or learned); gradient roles apply its forward to the gradient.
    """

    name: str
    kwargs: Tuple[Tuple[str, Any], ...] = ()

    def __post_init__(self) -> None:
        quantizer_factory(self.name)
        kwargs = self.kwargs.items() if isinstance(self.kwargs, Mapping) else self.kwargs
        object.__setattr__(self, "kwargs", tuple(sorted((str(k), v) for k, v in kwargs)))

    def build(self) -> torch.nn.Module:
        module = quantizer_factory(self.name)(**dict(self.kwargs))
        if not isinstance(module, torch.nn.Module):
            raise TypeError(f"quantizer {self.name!r} built {type(module).__name__}, "
                            "not a torch.nn.Module")
        return module
