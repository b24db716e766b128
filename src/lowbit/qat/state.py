"""The QAT state machine: what every quantizer of a model does, set explicitly and independent
of ``model.train()`` / ``model.eval()`` (which only steer BatchNorm and dropout).

A quantizer has a ``Role`` (weight or activation) and two switches, *observe* (update its range
statistics or initialise its learned parameters from data) and *quantize* (return the
fake-quantized tensor instead of the input).  A ``QuantMode`` sets both switches for both roles,
after TorchQuant's ``QModuleState`` (its numbers in brackets):

=================  ===============  ============  ==============  ===========
mode               weight quantize  act quantize  weight observe  act observe
=================  ===============  ============  ==============  ===========
bypass [1]         off              off           off             off
qat_weight [2]     on               off           on              off
qat_act [3]        off              on            off             on
qat [4]            on               on            on              on
calibrate [5]      off              off           on              on
calibrate_weight   off              off           on              off
calibrate_act      off              off           off             on
eval_weight [8]    on               off           off             off
eval_act [9]       off              on            off             off
eval [10]          on               on            off             off
=================  ===============  ============  ==============  ===========

In ``bypass`` every quantizer returns its input object unchanged and fused modules compute
exactly the float layers they replaced.
"""

from __future__ import annotations

import contextlib
import dataclasses
from typing import Dict, Iterator, Optional, Tuple, Union

from torch import nn

from ..formats.modes import _StrEnum

__all__ = ["Role", "QuantMode", "Switches", "set_mode", "get_mode", "quant_mode", "quantizers"]


class Role(_StrEnum):
    """What a quantizer quantizes; modes switch the two roles separately."""

    #: Weights (and other parameters).
    WEIGHT = "weight"
    #: Activations: layer inputs and outputs, residual adds, concatenations.
    ACTIVATION = "activation"


@dataclasses.dataclass(frozen=True)
class Switches:
    """The observe/quantize switches of one role."""

    #: Update range statistics / initialise learned parameters from data.
    observe: bool
    #: Return the fake-quantized tensor.
    quantize: bool


class QuantMode(_StrEnum):
    """The ten modes of TorchQuant's ``QModuleState`` (table in the module docstring)."""

    #: Nothing observed, nothing quantized: the float model, bit for bit.
    BYPASS = "bypass"
    #: Quantization-aware training of the weights only.
    QAT_WEIGHT = "qat_weight"
    #: Quantization-aware training of the activations only.
    QAT_ACT = "qat_act"
    #: Quantization-aware training: weights and activations observed and quantized.
    QAT = "qat"
    #: Ranges observed for weights and activations, float outputs.
    CALIBRATE = "calibrate"
    #: Weight ranges observed, float outputs.
    CALIBRATE_WEIGHT = "calibrate_weight"
    #: Activation ranges observed, float outputs.
    CALIBRATE_ACT = "calibrate_act"
    #: Weights quantized with frozen ranges.
    EVAL_WEIGHT = "eval_weight"
    #: Activations quantized with frozen ranges.
    EVAL_ACT = "eval_act"
    #: Weights and activations quantized with frozen ranges: the deployed model.
    EVAL = "eval"

    def switches(self, role: Role) -> Switches:
        """The switches this mode sets for quantizers of ``role``."""
        return _TABLE[self][0 if role is Role.WEIGHT else 1]


_ON, _OBS, _Q, _OFF = Switches(True, True), Switches(True, False), Switches(False, True), \
    Switches(False, False)
_TABLE: Dict[QuantMode, Tuple[Switches, Switches]] = {
    QuantMode.BYPASS: (_OFF, _OFF),
    QuantMode.QAT_WEIGHT: (_ON, _OFF),
    QuantMode.QAT_ACT: (_OFF, _ON),
    QuantMode.QAT: (_ON, _ON),
    QuantMode.CALIBRATE: (_OBS, _OBS),
    QuantMode.CALIBRATE_WEIGHT: (_OBS, _OFF),
    QuantMode.CALIBRATE_ACT: (_OFF, _OBS),
    QuantMode.EVAL_WEIGHT: (_Q, _OFF),
    QuantMode.EVAL_ACT: (_OFF, _Q),
    QuantMode.EVAL: (_Q, _Q),
}


def quantizers(model: nn.Module) -> Iterator[Tuple[str, nn.Module]]:
    """Every ``Quantizer`` in ``model`` (including ``model`` itself), with its name."""
    from .quantizers import Quantizer

    for name, m in model.named_modules():
        if isinstance(m, Quantizer):
            yield name, m


def set_mode(model: nn.Module, mode: Union[str, QuantMode]) -> nn.Module:
    """Put every quantizer of ``model`` in ``mode``; returns ``model``.

    Raises:
        ValueError: an unknown mode.
    """
    mode = QuantMode.parse(mode, "mode")
    for _, q in quantizers(model):
        q.set_switches(mode.switches(q.role))
    return model


def get_mode(model: nn.Module) -> Optional[QuantMode]:
    """The mode whose switches every quantizer of ``model`` has (the first in table order when
    several fit, e.g. ``qat`` and ``qat_weight`` for weight quantizers alone), or None when
    no mode fits or there are no quantizers."""
    found = None
    for m in QuantMode:
        if all(q.switches == m.switches(q.role) for _, q in quantizers(model)):
            found = m
            break
    if found is None or next(quantizers(model), None) is None:
        return None
    return found


@contextlib.contextmanager
def quant_mode(model: nn.Module, mode: Union[str, QuantMode]) -> Iterator[nn.Module]:
    """``with quant_mode(model, "calibrate"): ...`` runs the block in ``mode`` and then restores
    each quantizer's previous switches (also when the block raises)."""
    mode = QuantMode.parse(mode, "mode")
    saved = [(q, q.switches) for _, q in quantizers(model)]
    set_mode(model, mode)
    try:
        yield model
    finally:
        for q, switches in saved:
            q.set_switches(switches)
