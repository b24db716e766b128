"""Quantization-aware training: fake quantizers with straight-through and learned gradients,
range observers, fused Conv/Linear + BatchNorm + activation layers with BatchNorm folding, a
mode state machine, whole-model preparation by torch.fx, and integer / ONNX export.

``import lowbit`` does not import this package; ``import lowbit.qat`` does, and registers the
quantizers by name with ``lowbit.nn.recipe`` when that module exists, so a recipe role may say
``{"quantizer": "lsq", "bits": 4}``.

    import lowbit.qat as qat
    model = qat.prepare(model, qat.QATConfig(weight={"quantizer": "lsq", "bits": 4},
                                             activation={"quantizer": "lsq", "bits": 4}),
                        example_inputs=x[:1])
    with qat.quant_mode(model, "calibrate"):
        model(x_calibration)
    ...train...
    qat.export_onnx(model, "model.onnx", x[:1])
"""

from __future__ import annotations

from . import functional
from .convert import ConvertMethod, QATConfig, QuantizerSpec, TracingFallbackWarning, prepare
from .export import IntLayer, export_int, export_onnx, int_codes
from .functional import (
    STE, affine_quantize, binary_quantize, lsq_grad_scale, lsq_quantize, pact_quantize,
    qfmt_quantize, ternary_quantize, tqt_quantize,
)
from .fused import FusedConv2d, FusedLinear, fold_bn, freeze_bn_stats
from .learned import LSQQuantizer, PACTQuantizer, TQTQuantizer
from .observers import (
    Accumulation, EMAMinMaxObserver, MinMaxObserver, MSEObserver, Observer, PercentileObserver,
    range_to_qparams,
)
from ._histogram import HistogramMethod, HistogramObserver
from .qop import QOp
from .quantizers import (
    QUANTIZERS, AffineQuantizer, BinaryQuantizer, QFormatQuantizer, QParams, Quantizer,
    TernaryQuantizer, make_quantizer, register_quantizer,
)
from .state import QuantMode, Role, get_mode, quant_mode, set_mode

__all__ = [
    "functional", "STE", "affine_quantize", "binary_quantize", "lsq_grad_scale", "lsq_quantize",
    "pact_quantize", "qfmt_quantize", "ternary_quantize", "tqt_quantize",
    "Quantizer", "QParams", "AffineQuantizer", "QFormatQuantizer", "BinaryQuantizer",
    "TernaryQuantizer", "LSQQuantizer", "PACTQuantizer", "TQTQuantizer", "QUANTIZERS",
    "make_quantizer", "register_quantizer",
    "Observer", "Accumulation", "MinMaxObserver", "EMAMinMaxObserver", "PercentileObserver",
    "MSEObserver", "HistogramObserver", "HistogramMethod", "range_to_qparams",
    "FusedConv2d", "FusedLinear", "fold_bn", "freeze_bn_stats", "QOp",
    "QuantMode", "Role", "set_mode", "get_mode", "quant_mode",
    "QATConfig", "QuantizerSpec", "ConvertMethod", "TracingFallbackWarning", "prepare",
    "IntLayer", "int_codes", "export_int", "export_onnx",
]


def _register_with_recipes() -> None:
    """Offer every quantizer factory to ``lowbit.nn.recipe`` (built separately; absent in
    builds without the training layer)."""
    try:
        from ..nn import recipe
    except ModuleNotFoundError as err:
        if err.name not in ("lowbit.nn", "lowbit.nn.recipe"):
            raise
        return
    register = getattr(recipe, "register_quantizer", None)
    if register is not None:
        for name, factory in QUANTIZERS.items():
            register(name, factory)


_register_with_recipes()
