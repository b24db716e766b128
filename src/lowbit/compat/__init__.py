"""Drop-in APIs of peer libraries, implemented on lowbit's formats and kernels.

* ``lowbit.compat.qtorch``: QPyTorch 0.3's quantization API (``qtorch`` and ``qtorch.quant``).

Nothing is imported here; each compat package is imported on its own.
"""
