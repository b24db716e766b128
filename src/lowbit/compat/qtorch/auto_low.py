"""QPyTorch's ``qtorch.auto_low``: ``lower`` and ``sequential_lower`` put a ``Quantizer`` after
every module of the chosen layer types, quantizing the module's output (activations) in the
forward pass and the gradient with respect to it (errors) in the backward pass.  Weights are
not quantized (as in QPyTorch; use ``OptimLP``'s ``weight_quant`` or ``lowbit.convert``).
"""

from __future__ import annotations

import copy
from typing import Any, Dict, Iterable, Optional, Tuple

import torch
from torch import nn

from .number import Number
from .quant import Quantizer

__all__ = ["lower", "sequential_lower", "LAYER_TYPES"]


def _types(*names: str) -> Tuple[type, ...]:
    # getattr: a class a future torch removes drops out instead of breaking the import.
    return tuple(getattr(nn, n) for n in names if hasattr(nn, n))


#: QPyTorch's layer-type names and the ``torch.nn`` classes each covers (its lists, verbatim;
#: no RNN, embedding, attention or distance layers).
LAYER_TYPES: Dict[str, Tuple[type, ...]] = {
    "conv": _types("Conv1d", "Conv2d", "Conv3d", "ConvTranspose1d", "ConvTranspose2d",
                   "ConvTranspose3d", "Unfold", "Fold"),
    "linear": _types("Linear", "Bilinear"),
    "pool": _types("MaxPool1d", "MaxPool2d", "MaxPool3d", "MaxUnpool1d", "MaxUnpool2d",
                   "MaxUnpool3d", "AvgPool1d", "AvgPool2d", "AvgPool3d", "FractionalMaxPool2d",
                   "LPPool1d", "LPPool2d", "AdaptiveMaxPool1d", "AdaptiveMaxPool2d",
                   "AdaptiveAvgPool2d", "AdaptiveAvgPool1d", "AdaptiveMaxPool3d",
                   "AdaptiveAvgPool3d"),
    "pad": _types("ReflectionPad1d", "ReflectionPad2d", "ReplicationPad1d", "ReplicationPad2d",
                  "ZeroPad2d", "ConstantPad1d", "ConstantPad2d", "ConstantPad3d"),
    "activation": _types("ELU", "Hardshrink", "Hardtanh", "LeakyReLU", "LogSigmoid", "PReLU",
                         "ReLU", "ReLU6", "RReLU", "SELU", "Sigmoid", "Softplus", "Softshrink",
                         "Softsign", "Tanh", "Tanhshrink", "Threshold", "Softmin", "Softmax",
                         "Softmax2d", "LogSoftmax"),
    "normalization": _types("BatchNorm1d", "BatchNorm2d", "BatchNorm3d", "GroupNorm",
                            "InstanceNorm1d", "InstanceNorm2d", "InstanceNorm3d", "LayerNorm",
                            "LocalResponseNorm"),
    "dropout": _types("Dropout", "Dropout2d", "Dropout3d", "AlphaDropout"),
    "loss": _types("L1Loss", "MSELoss", "CrossEntropyLoss", "NLLLoss", "PoissonNLLLoss",
                   "KLDivLoss", "BCELoss", "BCEWithLogitsLoss", "MarginRankingLoss",
                   "HingeEmbeddingLoss", "MultiLabelMarginLoss", "SmoothL1Loss",
                   "SoftMarginLoss", "MultiLabelSoftMarginLoss", "MultiMarginLoss",
                   "TripletMarginLoss"),
}


def _classes(layer_types: object) -> Tuple[type, ...]:
    if isinstance(layer_types, str) or not isinstance(layer_types, Iterable):
        raise TypeError(f"layer_types must be a list of layer-type names such as ['conv', "
                        f"'linear']; got {layer_types!r}")
    names = list(layer_types)
    unknown = [n for n in names if n not in LAYER_TYPES]
    if unknown:
        raise ValueError(f"layer_types has unknown names {unknown}; allowed: "
                         f"{list(LAYER_TYPES)}")
    return tuple(cls for n in names for cls in LAYER_TYPES[n])


class _QuantizeOutput:
    """A forward hook that passes every floating-point tensor of a module's output through
    ``quant`` (index tensors, e.g. from ``return_indices=True``, are left alone).  A plain
    module-level object, so lowered models pickle and deep-copy."""

    def __init__(self, quant: Quantizer) -> None:
        self.quant = quant

    def _apply(self, value: Any) -> Any:
        if isinstance(value, torch.Tensor):
            return self.quant(value) if value.is_floating_point() else value
        if isinstance(value, (tuple, list)):
            return type(value)(self._apply(v) for v in value)
        return value

    def __call__(self, module: nn.Module, args: Any, output: Any) -> Any:
        return self._apply(output)


def _check_model(model: object) -> nn.Module:
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module; got {type(model).__name__}")
    return model


def lower(model: nn.Module, layer_types: Iterable[str] = (),
          forward_number: Optional[Number] = None, backward_number: Optional[Number] = None,
          forward_rounding: str = "stochastic", backward_rounding: str = "stochastic"
          ) -> nn.Module:
    """Quantize, in place, the output of every module of ``model`` (itself included) whose
    class is one of ``layer_types``: forward ``y ← Q_forward_number(y)``, backward
    ``dL/dy ← Q_backward_number(dL/dy)`` (one shared ``Quantizer``).

    Args:
        model: the model, changed in place.
        layer_types: names from ``LAYER_TYPES`` (``"conv"``, ``"linear"``, ``"pool"``,
            ``"pad"``, ``"activation"``, ``"normalization"``, ``"dropout"``, ``"loss"``).
        forward_number, backward_number, forward_rounding, backward_rounding: as
            ``Quantizer``.

    Returns:
        ``model`` (QPyTorch returns None; ignoring the result works as before).

    Differences from QPyTorch (which replaces each module's ``forward`` by a lambda):

    * The quantizer is a forward hook, so a lowered model can be saved whole with
      ``torch.save`` and ``copy.deepcopy``-ed; QPyTorch's lambdas cannot be pickled, and a deep
      copy of a QPyTorch-lowered model still calls the *original* modules' ``forward`` (with
      the original weights).  (A hook runs on ``module(x)``, not on a direct
      ``module.forward(x)`` call.)
    * Keyword arguments reach the module (QPyTorch's lambda takes positional ones only).
    * Subclasses of the listed classes are lowered too (QPyTorch matches the exact type).
    * Outputs that are tuples (e.g. pooling with ``return_indices=True``) have their
      floating-point tensors quantized and the indices left alone; QPyTorch fails on them.
    * ``layer_types`` given as one string (``"conv"``) is a ``TypeError`` and an unknown
      name a ``ValueError`` listing the allowed ones (QPyTorch asserts); the default is an
      immutable ``()`` instead of a shared ``[]``.
    """
    _check_model(model)
    classes = _classes(layer_types)
    hook = _QuantizeOutput(Quantizer(forward_number, backward_number, forward_rounding,
                                     backward_rounding))
    for module in model.modules():
        if isinstance(module, classes):
            module.register_forward_hook(hook)
    return model


def sequential_lower(model: nn.Module, layer_types: Iterable[str] = (),
                     forward_number: Optional[Number] = None,
                     backward_number: Optional[Number] = None,
                     forward_rounding: str = "stochastic",
                     backward_rounding: str = "stochastic") -> nn.Module:
    """A deep copy of ``model`` in which every leaf module (one without children) of
    ``layer_types`` is replaced by ``nn.Sequential(leaf, quantizer)`` (one shared
    ``Quantizer``); ``model`` itself is untouched.  Arguments as ``lower``.

    Differences from QPyTorch: the children are walked through ``named_children`` (QPyTorch
    reads every attribute in ``dir(module)``, which evaluates properties and can raise); a
    module registered under two names is wrapped once and both names point to the wrapper;
    subclasses of the listed classes are matched; arguments are checked as in ``lower``.
    """
    _check_model(model)
    classes = _classes(layer_types)
    quant = Quantizer(forward_number, backward_number, forward_rounding, backward_rounding)
    done: Dict[int, nn.Module] = {}

    def wrap(module: nn.Module) -> nn.Module:
        if id(module) in done:
            return done[id(module)]
        children = list(module._modules.items())
        if children:
            for name, child in children:
                if child is not None:
                    module._modules[name] = wrap(child)
            result = module
        else:
            result = nn.Sequential(module, quant) if isinstance(module, classes) else module
        done[id(module)] = result
        return result

    return wrap(copy.deepcopy(model))
