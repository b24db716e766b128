"""QPyTorch 0.3's quantization API on lowbit: ``import lowbit.compat.qtorch as qtorch``.

``lowbit.compat.qtorch`` stands for ``qtorch`` (the number formats ``FixedPoint``,
``FloatingPoint``, ``BlockFloatingPoint`` and their base ``Number``) and
``lowbit.compat.qtorch.quant`` for ``qtorch.quant`` (``float_quantize``,
``fixed_point_quantize``, ``block_quantize``, ``quantizer``, ``Quantizer``),
``lowbit.compat.qtorch.optim`` for ``qtorch.optim`` (``OptimLP``) and
``lowbit.compat.qtorch.auto_low`` for ``qtorch.auto_low`` (``lower``, ``sequential_lower``)::

    from lowbit.compat.qtorch import FixedPoint, FloatingPoint
    from lowbit.compat.qtorch.quant import quantizer, float_quantize
    from lowbit.compat.qtorch.optim import OptimLP
    from lowbit.compat.qtorch.auto_low import lower

Same names, signatures, defaults and value sets as QPyTorch, with no C++ extension to compile;
the rounding is lowbit's (ties to even, -0 and NaN kept, single rounding, reproducible
stochastic rounding), and every difference from QPyTorch is stated in the docstring of the
function or class concerned (``OptimLP`` and ``lower`` also fix QPyTorch's checkpoint,
closure, loss-scaling and pickling bugs).  ``Number.lowbit_format`` gives the equivalent
lowbit format.  ``OptimLP``, ``lower`` and ``sequential_lower`` are also importable from
here.
"""

from . import auto_low, optim, quant
from .auto_low import lower, sequential_lower
from .number import BlockFloatingPoint, FixedPoint, FloatingPoint, Number
from .optim import OptimLP

__all__ = ["FixedPoint", "BlockFloatingPoint", "FloatingPoint", "Number", "OptimLP", "lower",
           "sequential_lower", "auto_low", "optim", "quant"]
