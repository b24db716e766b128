"""lowbit: bit-exact simulation of low-precision number formats for deep-learning research.

``import lowbit`` compiles nothing, imports no Triton and initialises no CUDA.
"""

from .formats import (
    BlockFormat, ExpFormat, FixedPoint, FloatFormat, IntFormat, Rounding, ScaleRule, Specials,
)
from .ops.codec import Packed, decode, encode
from .ops.quantize import quantize

__version__ = "0.1.0"

__all__ = [
    "BlockFormat", "ExpFormat", "FixedPoint", "FloatFormat", "IntFormat", "Rounding",
    "ScaleRule", "Specials", "quantize", "encode", "decode", "Packed", "__version__",
]
