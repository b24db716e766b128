"""lowbit: bit-exact simulation of low-precision number formats for deep-learning research.

``import lowbit`` compiles nothing, imports no Triton and initialises no CUDA.
"""

from .formats import (
    BlockFormat, ExpFormat, FixedPoint, FloatFormat, IntFormat, Rounding, ScaleRule, Specials,
)
from . import nn, optim
from .nn import Recipe, Scaling, convert, unconvert
from .ops.accumulate import Accumulate
from .ops.codec import Packed, decode, encode
from .ops.quantize import quantize

__version__ = "0.1.0"

__all__ = [
    "BlockFormat", "ExpFormat", "FixedPoint", "FloatFormat", "IntFormat", "Rounding",
    "ScaleRule", "Specials", "quantize", "encode", "decode", "Packed", "Accumulate", "Recipe", "Scaling", "convert", "unconvert",
    "nn", "optim", "__version__",
]


# Heavier layers load on first attribute access (``lowbit.qat``), keeping ``import lowbit`` light.
_LAZY = ("qat", "act", "models", "data", "recipes")


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return importlib.import_module(f".{name}", __name__)
    raise AttributeError(f"module 'lowbit' has no attribute {name!r}")
