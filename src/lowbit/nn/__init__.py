"""Low-precision training: recipes, quantized layers and model conversion.

``Recipe`` says which format, rounding and scaling each role of each layer gets;
``convert(model, recipe)`` applies it to any model in place and ``unconvert`` undoes it;
``functional`` holds the stateless functions; ``trace`` shows where each quantization lands.
"""

from . import functional, rng
from ._quantizer import QuantEvent, RoleQuantizer, trace
from .convert import convert, resolve, unconvert
from .modules import (
    BatchNorm1d, BatchNorm2d, BatchNorm3d, Conv1d, Conv2d, Conv3d, ConvTranspose2d, Embedding,
    LayerNorm, Linear, MatMul, Quantize, QuantizedModule, ScaledDotProductAttention,
)
from .recipe import (
    GEMMS, ROLES, GemmAccumulate, QuantizerRef, Recipe, Role, Transform, WgradTransform,
    quantizer_names, register_quantizer,
)
from .scaling import Granularity, Scaling

__all__ = [
    "BatchNorm1d", "BatchNorm2d", "BatchNorm3d", "Conv1d", "Conv2d", "Conv3d",
    "ConvTranspose2d", "Embedding", "GEMMS", "GemmAccumulate", "Granularity", "LayerNorm",
    "Linear", "MatMul", "QuantEvent", "Quantize", "QuantizedModule", "QuantizerRef", "ROLES",
    "Recipe", "Role", "RoleQuantizer", "ScaledDotProductAttention", "Scaling", "Transform",
    "WgradTransform", "convert",
    "functional", "quantizer_names", "register_quantizer", "resolve", "rng", "trace",
    "unconvert",
]
