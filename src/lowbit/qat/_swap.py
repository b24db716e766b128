"""Module-swap preparation, for models torch.fx cannot trace: ``Sequential`` runs of
Conv2d/Linear [BatchNorm] [ReLU/ReLU6/SiLU] are fused (the absorbed modules become
``nn.Identity``), every other Conv2d/Linear is wrapped alone, and the first layer in module
order quantizes its input.  Operations written in ``forward`` code (adds, concatenations) are
invisible here."""

from __future__ import annotations

from typing import TYPE_CHECKING, Optional

from torch import nn

from .fused import ACTIVATIONS, _Fused
from .state import Role

if TYPE_CHECKING:
    from .convert import QATConfig

__all__ = ["prepare_swap"]

_LAYERS = (nn.Conv2d, nn.Linear)


def _bn_for(layer: nn.Module, cand: Optional[nn.Module]) -> bool:
    bn_type = nn.BatchNorm2d if isinstance(layer, nn.Conv2d) else nn.BatchNorm1d
    return isinstance(cand, (bn_type, nn.SyncBatchNorm)) and cand.track_running_stats \
        and cand.num_features == layer.weight.shape[0]


def _fuse_sequential(seq: nn.Sequential, prefix: str, cfg: "QATConfig") -> None:
    names = list(seq._modules)
    i = 0
    while i < len(names):
        layer = seq._modules[names[i]]
        if not isinstance(layer, _LAYERS) or cfg.skipped(prefix + names[i]):
            i += 1
            continue
        j, bn, act = i + 1, None, None
        if j < len(names) and _bn_for(layer, seq._modules[names[j]]) \
                and not cfg.skipped(prefix + names[j]):
            bn, j = seq._modules[names[j]], j + 1
        if j < len(names) and isinstance(seq._modules[names[j]], ACTIVATIONS):
            act, j = seq._modules[names[j]], j + 1
        seq._modules[names[i]] = cfg.fused(layer, bn, act)
        for k in range(i + 1, j):
            seq._modules[names[k]] = nn.Identity()
        i = j


def _visit(module: nn.Module, prefix: str, cfg: "QATConfig") -> None:
    if isinstance(module, nn.Sequential):
        _fuse_sequential(module, prefix, cfg)
    for name, child in list(module.named_children()):
        if isinstance(child, _Fused):
            continue
        if isinstance(child, _LAYERS) and not cfg.skipped(prefix + name):
            setattr(module, name, cfg.fused(child, None, None))
        else:
            _visit(child, prefix + name + ".", cfg)


def prepare_swap(model: nn.Module, cfg: "QATConfig") -> nn.Module:
    """Swap ``model``'s layers in place (``model`` is already a copy) and return it."""
    if isinstance(model, _LAYERS):
        model = cfg.fused(model, None, None)
    else:
        _visit(model, "", cfg)
    if cfg.quantize_input:
        first = next((m for m in model.modules() if isinstance(m, _Fused)), None)
        if first is not None:
            first.input_quantizer = cfg.activation.build(Role.ACTIVATION)
    return model
