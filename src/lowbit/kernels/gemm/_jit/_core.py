"""The shared rounding helpers of ``lowbit.kernels.triton._jit.core``, taken from the copy of
the same kind as this package: the compiled one here, the interpreted one in the alias package
(a compiled jit function cannot be called from an interpreted kernel, nor the reverse)."""

import importlib

from ...triton import _launch

if __package__.endswith("_interpreted"):
    _PACKAGE = _launch._interpreted_package()
else:
    _PACKAGE = "lowbit.kernels.triton._jit"
_shared = importlib.import_module(_PACKAGE + ".core")

ROUNDING_CODE = _shared.ROUNDING_CODE
_NEAREST = _shared._NEAREST
_NEAREST_AWAY = _shared._NEAREST_AWAY
_TOWARD_ZERO = _shared._TOWARD_ZERO
_UP = _shared._UP
_DOWN = _shared._DOWN
_ODD = _shared._ODD
_STOCHASTIC = _shared._STOCHASTIC
_philox = _shared._philox
_round_float = _shared._round_float
_round_fixed = _shared._round_fixed
