"""Low-precision optimizers: ``LowPrecision`` wraps any torch optimizer so that gradients,
optimizer state, weights and master weights live in chosen formats, with stochastic-rounded
updates and static or dynamic loss scaling.

    opt = lowbit.optim.LowPrecision(torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9),
                                    weight="bf16", state="e6m9", update_rounding="stochastic")
"""

from ._seeds import derive_seed
from ._state_names import register_state_names, state_names
from .low_precision import LowPrecision
from .scaling import DynamicLossScale

__all__ = ["LowPrecision", "DynamicLossScale", "derive_seed", "register_state_names",
           "state_names"]
