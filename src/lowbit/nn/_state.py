"""What ``convert`` attaches to a module (as ``module.lowbit``): its recipe, the quantizer of
each role, the run's seed and the module's call counter, all in ``state_dict``."""

from __future__ import annotations

from typing import Any, Callable, Dict, Iterable, Optional, Tuple

import torch

from ..formats import Rounding
from .recipe import QuantizerRef, Recipe, Role
from .rng import derive_seed, stable_key
from ._quantizer import RoleQuantizer

__all__ = ["Site", "QuantState", "Call", "GRAD_ROLES", "eager"]

#: Roles applied to gradients (inside backward); the others act in the forward pass.
GRAD_ROLES = frozenset({"grad_output", "grad_input", "grad_weight", "grad_bias"})
#: Internal slots that take another role's spec: the bias gradient uses ``grad_weight``.
_SLOT_SPEC = {"grad_bias": "grad_weight"}

#: ``layout(role) -> (channel_axis, channels or None)`` for channel scaling.
Layout = Callable[[str], Tuple[int, Optional[int]]]


def _call(fn: Callable, *args: Any, **kwargs: Any) -> Any:
    return fn(*args, **kwargs)


_EAGER: Optional[Callable] = None


def eager(fn: Callable, *args: Any, **kwargs: Any) -> Any:
    """``fn(*args, **kwargs)`` outside ``torch.compile``'s tracing (a graph break).  Seeds
    change on every call, and a graph traced with them would be recompiled every step."""
    if _EAGER is None:
        _prepare_eager()
    return _EAGER(fn, *args, **kwargs)


def _prepare_eager() -> None:
    # Built when the first stochastic state is, not at import: torch.compiler.disable imports
    # torch._dynamo (and Triton), which ``import lowbit`` must not.
    global _EAGER
    if _EAGER is None:
        _EAGER = torch.compiler.disable(_call)


def _stochastic_acc(spec: Any) -> bool:
    return spec is not None and Rounding.STOCHASTIC in (spec.effective_mul_rounding,
                                                        spec.effective_acc_rounding)


class Site(torch.nn.Module):
    """The quantizers of one GEMM-like operation: one child per role that the recipe sets
    (a ``RoleQuantizer``, or the module a ``QuantizerRef`` builds)."""

    def __init__(self, recipe: Recipe, name: str, slots: Iterable[str], layout: Layout,
                 device: Optional[torch.device] = None):
        super().__init__()
        self.recipe = recipe
        self.site_name = name
        self.qat_slots = set()
        for slot in slots:
            value = getattr(recipe, _SLOT_SPEC.get(slot, slot))
            if isinstance(value, Role):
                axis, channels = layout(slot)
                self.add_module(slot, RoleQuantizer(value, module=name, role=slot,
                                                    channel_axis=axis, channels=channels,
                                                    device=device))
            elif isinstance(value, QuantizerRef):
                self.add_module(slot, value.build().to(device))
                self.qat_slots.add(slot)
        self._acc_keys = {g: stable_key(name, "accumulate", g)
                          for g in ("forward", "dgrad", "wgrad")}

    def quantizer(self, slot: str) -> Optional[torch.nn.Module]:
        return self._modules.get(slot)

    @property
    def stochastic(self) -> bool:
        roles = any(isinstance(m, RoleQuantizer) and m.stochastic
                    for m in self._modules.values())
        accs = any(_stochastic_acc(self.recipe.accumulate_for(g))
                   for g in ("forward", "dgrad", "wgrad"))
        return roles or accs

    def pre(self, slot: str, x: Optional[torch.Tensor]) -> Optional[torch.Tensor]:
        """A QAT quantizer of a forward role, applied in the autograd graph (its own
        gradient); identity for every other slot."""
        if x is None or slot not in self.qat_slots:
            return x
        return self._modules[slot](x)


class QuantState(Site):
    """``module.lowbit``: the module's ``Site`` (and child sites for modules with several
    GEMMs), the run's ``seed`` and the call counter ``step``.

    ``step`` advances once per forward call of a module with stochastic rounding; seeds are
    ``derive_seed(seed, stable_key(module, role, gemm), step)`` (``lowbit.nn.rng``).  Both
    are saved as the module's extra state, so a resumed run draws the same noise.
    """

    def __init__(self, recipe: Recipe, name: str, slots: Iterable[str], layout: Layout,
                 *, seed: int = 0, device: Optional[torch.device] = None):
        super().__init__(recipe, name, slots, layout, device)
        if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**64:
            raise TypeError(f"seed must be an int in [0, 2^64); got {seed!r}")
        self.seed = seed
        self.step = 0
        self._device = device
        # Fixed once the sites exist (read on every call; torch.compile cannot trace the
        # property's walk over submodules).
        self._stochastic = Site.stochastic.fget(self)
        if self._stochastic:
            _prepare_eager()

    def add_site(self, attr: str, slots: Iterable[str], layout: Layout) -> Site:
        site = Site(self.recipe, f"{self.site_name}.{attr}" if self.site_name else attr,
                    slots, layout, self._device)
        self.add_module(attr, site)
        self._stochastic = self._stochastic or site.stochastic
        if self._stochastic:
            _prepare_eager()
        return site

    @property
    def stochastic(self) -> bool:
        """True when any of the module's quantizers or accumulations rounds randomly."""
        return self._stochastic

    def advance(self) -> int:
        """Start a forward call: advance ``step`` when any rounding is random; return it."""
        if self._stochastic:
            self.step += 1
        return self.step

    def call(self) -> "Call":
        """The ``Call`` of one forward pass of a single-site module."""
        return Call(self, self.seed, self.advance())

    def __setstate__(self, state: Dict[str, Any]) -> None:  # unpickling builds no __init__
        super().__setstate__(state)
        if self._stochastic:
            _prepare_eager()

    def get_extra_state(self) -> Dict[str, int]:
        return {"seed": self.seed, "step": self.step}

    def set_extra_state(self, state: Dict[str, int]) -> None:
        if not isinstance(state, dict) or set(state) != {"seed", "step"}:
            raise ValueError(f"lowbit state must be {{'seed', 'step'}}; got {state!r}")
        self.seed, self.step = int(state["seed"]), int(state["step"])

    def extra_repr(self) -> str:
        return f"seed={self.seed}, step={self.step}"


class Call:
    """The quantization context of one forward call and its backward: a site, the run's
    seed and the step the forward call took."""

    __slots__ = ("site", "seed", "step")

    def __init__(self, site: Site, seed: int, step: int):
        self.site, self.seed, self.step = site, seed, step

    def has(self, slot: str) -> bool:
        return slot in self.site._modules

    def q(self, slot: str, x: Optional[torch.Tensor], gemm: str,
          axis: Optional[int] = None) -> Optional[torch.Tensor]:
        """``x`` quantized by ``slot`` for ``gemm`` (blocks/rows along ``axis``)."""
        m = self.site._modules.get(slot)
        if m is None or x is None:
            return x
        if isinstance(m, RoleQuantizer):
            return m(x, gemm=gemm, axis=axis, global_seed=self.seed, step=self.step)
        if slot in GRAD_ROLES:
            with torch.no_grad():
                return m(x)
        return x  # a QAT quantizer of a forward role already ran in the graph (Site.pre)

    def reusable(self, slot: str) -> bool:
        """True when one quantized tensor serves every GEMM (no block/row axis to follow)."""
        m = self.site._modules.get(slot)
        return not (isinstance(m, RoleQuantizer) and m.axis_dependent)

    def acc(self, gemm: str) -> Tuple[Any, Optional[int]]:
        """``(Accumulate or None, seed or None)`` of ``gemm``."""
        spec = self.site.recipe.accumulate_for(gemm)
        if not _stochastic_acc(spec):
            return spec, None
        return spec, derive_seed(self.seed, self.site._acc_keys[gemm], self.step)
