"""Simulated accumulation precision: matmul and convolution with low-precision multiply and
add (DESIGN.md, "Accumulation").

* ``matmul``, ``bmm``, ``linear``, ``conv2d``: differentiable, options or ``spec=Accumulate``;
  their docstrings state the exact arithmetic (``matmul``'s is the reference).
* ``gemm``, ``conv2d_forward``, ``conv2d_input_grad``, ``conv2d_weight_grad``: the same GEMMs
  without autograd, for training code with its own backward passes.
* ``Accumulate``: the spec, plain data shared with training recipes.
"""

from .conv import conv2d, conv2d_forward, conv2d_input_grad, conv2d_weight_grad
from .gemm import gemm
from .matmul import bmm, linear, matmul
from .spec import Accumulate

__all__ = ["Accumulate", "matmul", "bmm", "linear", "conv2d", "gemm", "conv2d_forward",
           "conv2d_input_grad", "conv2d_weight_grad"]
