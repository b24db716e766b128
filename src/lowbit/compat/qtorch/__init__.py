"""QPyTorch 0.3's quantization API on lowbit: ``import lowbit.compat.qtorch as qtorch``.

``lowbit.compat.qtorch`` stands for ``qtorch`` (the number formats ``FixedPoint``,
``FloatingPoint``, ``BlockFloatingPoint`` and their base ``Number``) and
``lowbit.compat.qtorch.quant`` for ``qtorch.quant`` (``float_quantize``,
``fixed_point_quantize``, ``block_quantize``, ``quantizer``, ``Quantizer``)::

    from lowbit.compat.qtorch import FixedPoint, FloatingPoint
    from lowbit.compat.qtorch.quant import quantizer, float_quantize

Same names, signatures, defaults and value sets as QPyTorch, with no C++ extension to compile;
the rounding is lowbit's (ties to even, -0 and NaN kept, single rounding, reproducible
stochastic rounding), and every difference from QPyTorch is stated in the docstring of the
function or class concerned.  ``Number.lowbit_format`` gives the equivalent lowbit format.
``qtorch.optim`` and ``qtorch.auto_low`` are not provided.
"""

from . import quant
from .number import BlockFloatingPoint, FixedPoint, FloatingPoint, Number

__all__ = ["FixedPoint", "BlockFloatingPoint", "FloatingPoint", "Number", "quant"]
