"""QPyTorch's ``qtorch.optim``: ``OptimLP``, a low-precision wrapper around a torch optimizer.

For a lowbit-native optimizer with master weights, stochastic-rounded updates, loss scaling and
reproducible seeds, use ``lowbit.optim.LowPrecision``.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Dict, Mapping, Optional

import torch

from ...optim._args import check_optimizer
from ...optim._state_names import state_names
from ...optim._wrapper import Wrapper

__all__ = ["OptimLP"]

Quant = Optional[Callable[[torch.Tensor], torch.Tensor]]


def _check_quant(value: object, name: str) -> Quant:
    if value is not None and not callable(value):
        raise TypeError(f"{name} must be a callable tensor -> tensor (e.g. quantizer(...)) or "
                        f"None; got {value!r}")
    return value  # type: ignore[return-value]


class OptimLP(Wrapper):
    """QPyTorch 0.3's ``OptimLP(optim, weight_quant, grad_scaling, grad_quant, momentum_quant,
    acc_quant)``: quantizes gradients, momentum, a weight accumulator and the weights around
    ``optim.step()``.

    Each ``*_quant`` is any callable ``tensor -> tensor`` (usually ``quantizer(...)``) or None
    (no quantization).  ``step()`` does, in QPyTorch's order:

    1. every gradient ``g ← grad_quant(g · grad_scaling)`` (``g · grad_scaling`` without
       ``grad_quant``);
    2. with ``acc_quant``: every parameter takes the value of its accumulator ``a`` (a
       full-precision copy made at construction: QPyTorch's "weight accumulator");
    3. ``optim.step()``;
    4. with ``acc_quant``: ``a ← acc_quant(p)`` and ``p ← a``;
    5. with ``weight_quant``: ``p ← weight_quant(p)``;
    6. with ``momentum_quant``: each momentum tensor ``s ← momentum_quant(s)`` (SGD:
       ``momentum_buffer``; Adam/AdamW: ``exp_avg``, ``exp_avg_sq``, ``max_exp_avg_sq``; any
       other optimizer: the state tensors ``lowbit.optim.state_names`` lists for it).

    ``param_groups`` and ``state`` are the inner optimizer's (``self.optim``); ``weight_acc``
    maps each parameter to its accumulator, as in QPyTorch.

    Differences from QPyTorch (its bugs, fixed):

    * ``state_dict()`` holds the inner optimizer's state and the accumulators (``{"optim":
      ..., "weight_acc": {index: tensor}}``, loadable with ``torch.load(weights_only=True)``),
      and ``load_state_dict`` restores both; QPyTorch's is empty (its state lives in
      ``.optim``, its accumulators nowhere), so a resumed run silently lost momentum and
      accumulators.
    * ``step(closure)`` evaluates the closure once (under ``enable_grad``, before step 1, so
      the gradients it computes are the ones quantized), passes the inner optimizer a closure
      returning that loss, and returns it; QPyTorch drops the closure and returns None.
    * ``grad_scaling`` applies without a ``grad_quant``; QPyTorch ignores it then, so loss
      scaling silently failed unless gradients were also quantized.
    * Any optimizer is accepted (except LBFGS, which re-evaluates the closure); QPyTorch
      asserts SGD or Adam.  ``momentum_quant`` also covers Adam's ``amsgrad`` buffer
      (``max_exp_avg_sq``, a TODO in QPyTorch), and AdamW; for an optimizer whose state names
      nobody registered it is a ``ValueError``.
    * Parameters without a gradient are skipped by the gradient quantization, and parameters
      without optimizer state by the momentum quantization; QPyTorch raises on both.
    * ``add_param_group`` creates accumulators for the new parameters (QPyTorch: KeyError).
    * ``param_groups`` stays the inner optimizer's after ``optim.load_state_dict`` (QPyTorch
      copies the list once, which then goes stale).
    * Parameters are updated in place (``p.copy_``), so views and storage shared with ``p``
      stay valid; QPyTorch rebinds ``p.data``.
    * Arguments are checked with ``TypeError``/``ValueError`` instead of ``assert``:
      ``grad_scaling`` must be a finite number > 0 and every ``*_quant`` callable or None.
    """

    def __init__(self, optim: torch.optim.Optimizer, weight_quant: Quant = None,
                 grad_scaling: float = 1.0, grad_quant: Quant = None,
                 momentum_quant: Quant = None, acc_quant: Quant = None) -> None:
        if isinstance(optim, OptimLP):
            raise TypeError("optim is already an OptimLP; wrap the torch optimizer once")
        check_optimizer(optim)
        if isinstance(grad_scaling, bool) or not isinstance(grad_scaling, (int, float)):
            raise TypeError(f"grad_scaling must be a float > 0; got {grad_scaling!r}")
        if not (math.isfinite(grad_scaling) and grad_scaling > 0):
            raise ValueError(f"gradient scaling must be positive and finite; got {grad_scaling}")
        self.weight_quant = _check_quant(weight_quant, "weight_quant")
        self.grad_quant = _check_quant(grad_quant, "grad_quant")
        self.momentum_quant = _check_quant(momentum_quant, "momentum_quant")
        self.acc_quant = _check_quant(acc_quant, "acc_quant")
        self.grad_scaling = float(grad_scaling)
        self.momentum_keys = state_names(optim)
        if momentum_quant is not None and self.momentum_keys is None:
            raise ValueError(f"momentum_quant needs the state names of "
                             f"{type(optim).__name__}; declare them with "
                             "lowbit.optim.register_state_names")
        super().__init__(optim)
        self.weight_acc: Dict[torch.Tensor, torch.Tensor] = {}
        self._added(0)

    @property
    def optim(self) -> torch.optim.Optimizer:
        """The wrapped optimizer (QPyTorch's attribute name)."""
        return self.optimizer

    def _added(self, first: int) -> None:
        if self.acc_quant is None:
            return
        for i, p in self.indexed():
            if i >= first:
                self.weight_acc[p] = p.detach().clone()

    def step(self, closure: Optional[Callable[[], Any]] = None) -> Any:  # type: ignore[override]
        """One step in QPyTorch's order (class docstring); returns the closure's loss or None."""
        loss, inner_closure = self.evaluate(closure)
        with torch.no_grad():
            self._quantize_grads()
            params = [p for _, p in self.indexed()]
            if self.acc_quant is not None:
                for p in params:
                    p.copy_(self.weight_acc[p])
            self.optimizer.step(inner_closure)
            if self.acc_quant is not None:
                for p in params:
                    acc = self.weight_acc[p]
                    acc.copy_(self.acc_quant(p))
                    p.copy_(acc)
            if self.weight_quant is not None:
                for p in params:
                    p.copy_(self.weight_quant(p))
            if self.momentum_quant is not None:
                self._quantize_momentum()
        return loss

    def _quantize_grads(self) -> None:
        if self.grad_quant is None and self.grad_scaling == 1.0:
            return
        for _, p in self.indexed():
            if p.grad is None:
                continue
            g = p.grad * self.grad_scaling
            if self.grad_quant is not None:
                g = self.grad_quant(g)
            p.grad.copy_(g)

    def _quantize_momentum(self) -> None:
        for group in self.param_groups:
            for p in group["params"]:
                state = self.optimizer.state.get(p, {})
                for key in self.momentum_keys or ():
                    value = state.get(key)
                    if isinstance(value, torch.Tensor):
                        value.copy_(self.momentum_quant(value))  # type: ignore[misc]

    def state_dict(self) -> Dict[str, Any]:
        """``{"optim": the inner optimizer's state_dict, "weight_acc": {index: accumulator}}``."""
        index = {id(p): i for i, p in self.indexed()}
        return {"optim": self.optimizer.state_dict(),
                "weight_acc": {index[id(p)]: a for p, a in self.weight_acc.items()}}

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        """Restore a ``state_dict()``: the inner optimizer's state and the accumulators.

        Raises:
            ValueError: not an ``OptimLP`` state dict, or accumulators that do not match this
                optimizer's (their presence, indices or shapes).
        """
        if not (isinstance(state_dict, Mapping) and {"optim", "weight_acc"} <= set(state_dict)):
            raise ValueError("state_dict must be an OptimLP.state_dict() (keys 'optim' and "
                             "'weight_acc')")
        params = dict(self.indexed())
        accs = state_dict["weight_acc"]
        mine = {i for i, p in params.items() if p in self.weight_acc}
        if set(accs) != mine:
            raise ValueError(f"state_dict holds accumulators of parameters {sorted(accs)}; this "
                             f"OptimLP has {sorted(mine)} (is acc_quant set on both?)")
        for i, a in accs.items():
            if a.shape != params[i].shape:
                raise ValueError(f"accumulator {i} has shape {tuple(a.shape)}; parameter {i} "
                                 f"has {tuple(params[i].shape)}")
        self.optimizer.load_state_dict(state_dict["optim"])
        for i, a in accs.items():
            self.weight_acc[params[i]].copy_(a)

    def __repr__(self) -> str:
        return f"LP Optimizer: {self.optimizer!r}"

    __str__ = __repr__
