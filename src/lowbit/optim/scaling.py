"""Loss scaling for low-precision backward passes (Micikevicius et al., ICLR 2018, §3.2).

The loss is multiplied by a scale ``S`` before ``backward`` so that small gradients stay above
the underflow threshold of the formats the backward pass uses; the optimizer divides every
gradient by ``S`` before using it.  A static scale is one float; a dynamic scale follows
``torch.amp.GradScaler``'s rule (``DynamicLossScale``).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Dict, List, Optional, Tuple, Union

import torch

__all__ = ["DynamicLossScale", "LossScaler"]


@dataclasses.dataclass(frozen=True)
class DynamicLossScale:
    """``torch.amp.GradScaler``'s dynamic loss scale.

    After every ``step()``: if any unscaled gradient holds Inf or NaN, the step is skipped
    (weights, optimizer state and gradients untouched), ``S ← S · backoff_factor`` and the
    growth counter is reset; otherwise the step is taken and, after ``growth_interval``
    consecutive finite steps, ``S ← S · growth_factor`` and the counter is reset.
    """

    #: The scale before the first step (GradScaler's default 2^16).
    init_scale: float = 2.0**16
    #: Factor applied after ``growth_interval`` finite steps in a row; > 1.
    growth_factor: float = 2.0
    #: Factor applied after a step with a non-finite gradient; in (0, 1).
    backoff_factor: float = 0.5
    #: Number of consecutive finite steps before the scale grows; >= 1.
    growth_interval: int = 2000

    def __post_init__(self) -> None:
        _check_real(self.init_scale, "init_scale")
        if not (math.isfinite(self.init_scale) and self.init_scale > 0):
            raise ValueError(f"init_scale must be finite and > 0; got {self.init_scale}")
        _check_real(self.growth_factor, "growth_factor")
        if not (math.isfinite(self.growth_factor) and self.growth_factor > 1):
            raise ValueError(f"growth_factor must be finite and > 1; got {self.growth_factor}")
        _check_real(self.backoff_factor, "backoff_factor")
        if not 0 < self.backoff_factor < 1:
            raise ValueError(f"backoff_factor must be in (0, 1); got {self.backoff_factor}")
        if isinstance(self.growth_interval, bool) or not isinstance(self.growth_interval, int):
            raise TypeError(f"growth_interval must be an int >= 1; got {self.growth_interval!r}")
        if self.growth_interval < 1:
            raise ValueError(f"growth_interval must be >= 1; got {self.growth_interval}")


def _check_real(value: object, name: str) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a float; got {value!r}")


LossScaleSpec = Union[None, float, str, DynamicLossScale]


class LossScaler:
    """The mutable loss-scale state of one optimizer: the current scale and growth counter.

    Args:
        spec: None (no scaling), a float ``S > 0`` (static: gradients are divided by ``S``,
            nothing is skipped), ``"dynamic"`` (``DynamicLossScale()``) or a
            ``DynamicLossScale``.
    """

    def __init__(self, spec: LossScaleSpec) -> None:
        self.policy: Optional[DynamicLossScale] = None
        self.scale: Optional[float] = None
        self.growth_tracker = 0
        if spec is None:
            return
        if isinstance(spec, str):
            if spec != "dynamic":
                raise ValueError(f"loss_scale must be None, a float > 0, 'dynamic' or a "
                                 f"DynamicLossScale; got {spec!r}")
            spec = DynamicLossScale()
        if isinstance(spec, DynamicLossScale):
            self.policy, self.scale = spec, float(spec.init_scale)
            return
        _check_real(spec, "loss_scale")
        if not (math.isfinite(spec) and spec > 0):
            raise ValueError(f"loss_scale must be finite and > 0; got {spec}")
        self.scale = float(spec)

    def unscale(self, grads: List[torch.Tensor]) -> Tuple[List[torch.Tensor], bool]:
        """fp32 gradients ``g / S`` (``S`` rounded to fp32; exact for powers of two) and
        whether a dynamic scale found a non-finite one (a static scale never reports one)."""
        if self.scale is None:
            return [g.float() for g in grads], False
        out = [g.float() / self.scale for g in grads]
        if self.policy is None or not out:
            return out, False
        finite = torch.stack([torch.isfinite(g).all() for g in out]).all()
        return out, not bool(finite)

    def update(self, found_inf: bool) -> None:
        """Apply the dynamic rule after a step (a no-op for static or no scaling)."""
        policy = self.policy
        if policy is None:
            return
        if found_inf:
            self.scale = self.scale * policy.backoff_factor  # type: ignore[operator]
            self.growth_tracker = 0
            return
        self.growth_tracker += 1
        if self.growth_tracker == policy.growth_interval:
            self.scale = self.scale * policy.growth_factor  # type: ignore[operator]
            self.growth_tracker = 0

    def describe(self) -> Any:
        """The configuration as plain data (for checkpoint compatibility checks)."""
        if self.policy is not None:
            return dataclasses.asdict(self.policy)
        return self.scale

    def state_dict(self) -> Dict[str, Any]:
        return {"scale": self.scale, "growth_tracker": self.growth_tracker}

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        self.scale = state["scale"]
        self.growth_tracker = int(state["growth_tracker"])
