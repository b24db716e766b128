"""What a number format is: frozen dataclasses, presets and names.  Pure Python, no kernels."""

from .block import BlockFormat
from .fixed import FixedPoint, IntFormat
from .floats import FP32_MAX, ExpFormat, FloatFormat
from .modes import Rounding, ScaleRule, Specials
from .names import PRESETS, Format, get, name_of, preset_names

__all__ = [
    "BlockFormat", "ExpFormat", "FixedPoint", "FloatFormat", "Format", "FP32_MAX", "IntFormat",
    "PRESETS", "Rounding", "ScaleRule", "Specials", "get", "name_of", "preset_names",
]
