"""Quantized ``Embedding``."""

from __future__ import annotations

from typing import Optional, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from .._functions import grad_quant, ste
from ..recipe import Recipe
from .base import QuantizedModule, register

__all__ = ["Embedding"]


@register(nn.Embedding)
class Embedding(QuantizedModule, nn.Embedding):
    """``nn.Embedding`` with roles ``weight`` (the table, quantized whole), ``output``,
    ``grad_output`` and ``grad_weight`` (the table's gradient).  Channel axes: one scale per
    embedding vector (axis 0) for the table and its gradient; the last axis for the
    output."""

    _lowbit_slots = ("weight", "output", "grad_output", "grad_weight")
    _lowbit_default = False

    def __init__(self, *args, recipe: Optional[Recipe] = None, name: str = "", seed: int = 0,
                 **kwargs):
        nn.Embedding.__init__(self, *args, **kwargs)
        self._lowbit_init(recipe, name, seed)

    @classmethod
    def _lowbit_check(cls, module: nn.Module, recipe: Recipe) -> None:
        if module.sparse and recipe.grad_weight is not None:
            raise ValueError("grad_weight cannot quantize the sparse gradient of "
                             "Embedding(sparse=True)")

    def _lowbit_layout(self, slot: str) -> Tuple[int, Optional[int]]:
        if slot in ("output", "grad_output"):
            return -1, self.embedding_dim
        return 0, self.num_embeddings

    def _lowbit_forward(self, idx: torch.Tensor) -> torch.Tensor:
        call = self.lowbit.call()
        if self.max_norm is not None:
            # F.embedding renormalises the table it is given in place: renormalise the
            # parameter itself before it is quantized, as nn.Embedding would.
            with torch.no_grad():
                torch.embedding_renorm_(self.weight, idx, self.max_norm, self.norm_type)
        w = ste(call, "weight", grad_quant(call, "grad_weight", self.weight))
        y = F.embedding(idx, w, self.padding_idx, None, self.norm_type,
                        self.scale_grad_by_freq, self.sparse)
        return grad_quant(call, "grad_output", ste(call, "output", y))
