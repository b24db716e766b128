"""Triton device code of lowbit's kernels.

These modules hold only ``@triton.jit`` functions and call no Triton library function that is
itself jitted, so ``lowbit.kernels.triton`` can load them twice: compiled (this package, for
CUDA tensors) and interpreted (an alias package, for CPU tensors).
"""
