"""Triton device code of the simulated-accumulation GEMM.

Like ``lowbit.kernels.triton._jit``, these modules hold only ``@triton.jit`` functions and call
no jitted Triton library function, so ``lowbit.kernels.gemm.triton`` loads them twice: compiled
(this package, for CUDA tensors) and interpreted (an alias package, for CPU tensors).  The
rounding helpers shared with the elementwise kernels come from the copy of
``lowbit.kernels.triton._jit.core`` of the same kind (``_core``).
"""
