"""The Triton backend: GPU kernels, one per format family, generic over format parameters.

* ``_float_kernel``: ``FloatFormat`` and ``ExpFormat``; ``_fixed_kernel``: ``FixedPoint`` and
  ``IntFormat`` (``_jit.scalar``), one pass over memory;
* block formats (``_block``): see there.

Every kernel is bit-identical to ``lowbit.kernels.reference`` (the tests check it), and
stochastic rounding draws from the stream of ``lowbit.kernels.philox``.

On CUDA tensors the kernels are compiled; on CPU tensors the same device code runs in Triton's
interpreter (slow: for tests on small tensors), whatever ``TRITON_INTERPRET`` was when Triton was
imported (see ``_launch``).

Importing this module registers the kernels with ``lowbit.kernels.dispatch``; without Triton
installed it registers nothing (``Backend.AUTO`` then uses the other backends).
"""

from ...formats import BlockFormat, ExpFormat, FixedPoint, FloatFormat, IntFormat
from ..dispatch import Backend, register

__all__ = ["AVAILABLE"]

try:
    import triton  # noqa: F401
except ImportError as err:  # Triton is an optional extra
    if err.name != "triton":
        raise
    #: True when Triton is installed and the kernels are registered.
    AVAILABLE = False
else:
    from . import _block, _scalar

    AVAILABLE = True
    register(Backend.TRITON, FloatFormat)(_scalar.quantize_float)
    register(Backend.TRITON, ExpFormat)(_scalar.quantize_float)
    register(Backend.TRITON, FixedPoint)(_scalar.quantize_fixed)
    register(Backend.TRITON, IntFormat)(_scalar.quantize_fixed)
    register(Backend.TRITON, BlockFormat)(_block.quantize_block)
