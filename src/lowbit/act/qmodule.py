"""``QModule``: ActNN's one-line wrapper, without ActNN's traps.

ActNN's ``QModule`` rebuilt every layer (losing weights loaded before wrapping) and switched a
process-global training flag.  This one keeps the wrapped model as it is (same parameters,
same ``state_dict`` keys, no prefix) and only runs its forward inside ``compress`` while the
wrapper is in training mode and gradients are enabled.
"""

from __future__ import annotations

from typing import Any, Optional, Union

import torch
from torch import nn

from .auto import AutoPrecision
from .context import compress
from .policy import Policy, level
from .report import Report

__all__ = ["QModule"]


class QModule(nn.Module):
    """Wrap ``model`` so that its training forwards store activations compressed.

    Args:
        model: any module; its weights and buffers are used as they are.
        policy: an ActNN level name (default "L3": 2 bits on average over conv, linear and
            BatchNorm inputs with per-layer auto precision, exact ReLU/dropout/pool masks) or
            a ``Policy``.
        bits: width for rules that name none.
        group_size: elements per min/max group.
        seed: base Philox key (None: a fresh one per forward, see ``compress``).

    Attributes:
        model: the wrapped module.
        report: the ``Report`` of the latest compressed forward (None before the first).
        auto: the ``AutoPrecision`` of the policy's auto rules (None when it has none).
    """

    def __init__(self, model: nn.Module, *, policy: Union[Policy, str] = "L3", bits: int = 2,
                 group_size: int = 256, seed: Optional[int] = None):
        super().__init__()
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be a torch.nn.Module; got {type(model).__name__}")
        self.model = model
        self.policy = level(policy) if isinstance(policy, str) else policy
        if not isinstance(self.policy, Policy):
            raise TypeError(f"policy must be a Policy or a level name; got {policy!r}")
        self.bits, self.group_size, self.seed = bits, group_size, seed
        self.auto = AutoPrecision(self.policy.avg_bits) if self.policy.uses_auto else None
        self.report: Optional[Report] = None
        compress(model, bits=bits, group_size=group_size, policy=self.policy, seed=seed,
                 auto=self.auto)  # validates the arguments now rather than at the first step

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        if not (self.training and torch.is_grad_enabled()):
            return self.model(*args, **kwargs)
        with compress(self.model, bits=self.bits, group_size=self.group_size,
                      policy=self.policy, seed=self.seed, auto=self.auto) as report:
            out = self.model(*args, **kwargs)
        self.report = report
        return out

    def state_dict(self, *args: Any, **kwargs: Any):
        """The wrapped model's ``state_dict`` (checkpoints load with or without the wrapper)."""
        return self.model.state_dict(*args, **kwargs)

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):
        return self.model.load_state_dict(state_dict, strict=strict, assign=assign)
