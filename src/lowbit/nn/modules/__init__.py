"""Quantized modules; ``REGISTRY`` maps each torch module class to its quantized class."""

from .attention import (
    MatMul, QuantizedMatMul, QuantizedMultiheadAttention, QuantizedScaledDotProductAttention,
    ScaledDotProductAttention,
)
from .base import REGISTRY, QuantizedModule, quantized_class, register
from .embedding import Embedding
from .linear import Conv1d, Conv2d, Conv3d, ConvTranspose2d, Linear
from .norm import BatchNorm1d, BatchNorm2d, BatchNorm3d, LayerNorm
from .quantize import Quantize

__all__ = [
    "BatchNorm1d", "BatchNorm2d", "BatchNorm3d", "Conv1d", "Conv2d", "Conv3d",
    "ConvTranspose2d", "Embedding", "LayerNorm", "Linear", "MatMul", "Quantize",
    "QuantizedMatMul", "QuantizedModule", "QuantizedMultiheadAttention",
    "QuantizedScaledDotProductAttention", "REGISTRY", "ScaledDotProductAttention",
    "quantized_class", "register",
]
