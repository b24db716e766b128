"""ActNN's optimization levels as recipes ``actnn_l1`` ... ``actnn_l5``: fp32 layers and
fp32 SGD, the tensors saved for backward compressed by ``lowbit.act.compress`` with the
level's policy (``lowbit.act.level``).

Chen et al., ICML 2021, "ActNN: Reducing Training Memory Footprint via 2-Bit Activation
Compressed Training" (arXiv 2104.14129); levels as ucbrise/actnn's ``conf.py``
(``set_optimization_level``).  Each saved conv/linear (and, from L2, BatchNorm) input is
stored per group of 256 as ``q = floor((x - min) · (2^b - 1) / (max - min) + u)``,
``u ~ U[0, 1)`` (stochastic rounding, so ``E[x̂] = x``), and decoded as
``x̂ = q (max - min) / (2^b - 1) + min``; ReLU, dropout and pooling keep exact masks or
indices.  The forward pass is exact; only backward sees ``x̂``.
"""

from __future__ import annotations

from ..act.policy import level
from ._registry import OptimizerSpec, PaperRecipe, register

__all__ = ["ACTNN_LEVELS"]

_WHAT = {
    "L1": "4-bit conv/linear inputs; BatchNorm inputs kept",
    "L2": "4-bit conv/linear and BatchNorm inputs",
    "L3": "2 bits on average over conv/linear/BatchNorm inputs, allocated per layer (auto "
          "precision)",
    "L4": "L3, the packed codes offloaded to CPU memory until backward",
    "L5": "L4 (ActNN's allocator defragmentation needs a patched PyTorch; not simulated)",
}


def _register(name: str) -> PaperRecipe:
    level(name)  # the policy must exist
    return register(PaperRecipe(
        name=f"actnn_{name.lower()}",
        title=f"ActNN level {name}: {_WHAT[name]}",
        source=("Chen et al., ICML 2021, 'ActNN' (arXiv 2104.14129); levels as "
                "ucbrise/actnn conf.py"),
        optimizer=OptimizerSpec("sgd", (("lr", 0.1), ("momentum", 0.9))),
        act=name,
        details=(
            "layers, gradients and optimizer in fp32; saved activations compressed: "
            + _WHAT[name],
            "per group of 256: q = floor((x - min) (2^b - 1) / (max - min) + u), u ~ U[0, 1); "
            "x_hat = q (max - min) / (2^b - 1) + min (min, max in bf16)",
            "ReLU, dropout: exact 1-bit masks; max pooling: int8 arg-max offsets",
        ),
    ))


#: The registered recipes by level name.
ACTNN_LEVELS = {name: _register(name) for name in ("L1", "L2", "L3", "L4", "L5")}
