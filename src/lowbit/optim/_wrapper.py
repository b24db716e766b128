"""``Wrapper``: the base of optimizers that wrap a torch optimizer (``LowPrecision``, the
QPyTorch-compatible ``OptimLP``).

It is a ``torch.optim.Optimizer`` (so LR schedulers, hooks and ``isinstance`` checks accept
it) whose ``param_groups`` and ``state`` are always the inner optimizer's live objects:
``Optimizer.load_state_dict`` replaces both on the inner optimizer, so copies taken at
construction (QPyTorch's approach) go stale.
"""

from __future__ import annotations

from typing import Any, Callable, Dict, Iterator, List, Optional, Tuple

import torch

__all__ = ["Wrapper"]


class Wrapper(torch.optim.Optimizer):
    """Shares ``param_groups`` and ``state`` with ``optimizer``; ``zero_grad`` is its own.

    Subclasses implement ``step`` and ``_added(first)``, called after ``add_param_group`` with
    the index of the first new parameter.
    """

    def __init__(self, optimizer: torch.optim.Optimizer) -> None:
        # Optimizer.__init__ sets up the hook tables schedulers and profilers rely on; the
        # groups it builds are placeholders, dropped once ``self.optimizer`` is set.
        super().__init__([{"params": g["params"]} for g in optimizer.param_groups],
                         optimizer.defaults)
        self.__dict__.pop("_groups")
        self.__dict__.pop("_state")
        self.optimizer = optimizer

    @property
    def param_groups(self) -> List[Dict[str, Any]]:  # type: ignore[override]
        inner = self.__dict__.get("optimizer")
        return self.__dict__["_groups"] if inner is None else inner.param_groups

    @param_groups.setter
    def param_groups(self, value: List[Dict[str, Any]]) -> None:
        inner = self.__dict__.get("optimizer")
        if inner is None:
            self.__dict__["_groups"] = value
        else:
            inner.param_groups = value

    @property
    def state(self) -> Dict[Any, Any]:  # type: ignore[override]
        inner = self.__dict__.get("optimizer")
        return self.__dict__["_state"] if inner is None else inner.state

    @state.setter
    def state(self, value: Dict[Any, Any]) -> None:
        inner = self.__dict__.get("optimizer")
        if inner is None:
            self.__dict__["_state"] = value
        else:
            inner.state = value

    def indexed(self) -> Iterator[Tuple[int, torch.Tensor]]:
        """``(index, parameter)`` over the groups in order: the index ``state_dict`` uses."""
        i = 0
        for group in self.param_groups:
            for p in group["params"]:
                yield i, p
                i += 1

    def add_param_group(self, param_group: Dict[str, Any]) -> None:
        """Add a group to the inner optimizer (and set up the wrapper's per-parameter data)."""
        if "optimizer" not in self.__dict__:  # placeholder groups from Optimizer.__init__
            super().add_param_group(param_group)
            return
        first = sum(len(g["params"]) for g in self.param_groups)
        self.optimizer.add_param_group(param_group)
        self._added(first)

    def _added(self, first: int) -> None:
        raise NotImplementedError

    def zero_grad(self, set_to_none: bool = True) -> None:
        """The inner optimizer's ``zero_grad``."""
        self.optimizer.zero_grad(set_to_none=set_to_none)

    @staticmethod
    def evaluate(closure: Optional[Callable[[], Any]]) -> Tuple[Any, Optional[Callable[[], Any]]]:
        """Run ``closure`` once under ``enable_grad``; return its loss and a closure returning
        that loss, for the inner optimizer (None when there is no closure)."""
        if closure is None:
            return None, None
        with torch.enable_grad():
            loss = closure()
        return loss, lambda: loss
