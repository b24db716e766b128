"""Activation-compressed training (ActNN, arXiv 2104.14129; GACT, arXiv 2206.11357) for any
PyTorch model, on ``torch.autograd.graph.saved_tensors_hooks``.

* ``compress(model=None, *, bits=2, group_size=256, policy=None)``: a context manager under
  which tensors saved for backward are stored packed (``lowbit.kernels.pack``: per-group bf16
  min/max, stochastic rounding, 1/2/4/8 bits), with exact masks and int8 pooling indices where
  the op is recognised; it yields a ``Report``.
* ``Policy``/``Rule``/``Store``: what is stored how, per module type, name and saved slot;
  ``level("L0")`` ... ``level("L5")``: ActNN's optimization levels; ``AutoPrecision``: ActNN's
  per-layer bit allocation.
* ``QModule(model)``: ActNN's wrapper, keeping the model's weights.
* ``gradient_variance``: ActNN's "Overall Var" diagnostic, warning
  (``CompressionVarianceWarning``) when compression adds over 10 % of the minibatch variance.
* ``functional``: ``relu``, ``leaky_relu``, ``dropout``, ``max_pool*d`` recognised without
  module hooks.

Importing this package imports no Triton and no numba; the kernels load on first use.
"""

from . import functional
from .auto import AutoPrecision
from .context import Compression, auto_precision, compress, default_policy
from .diagnostics import CompressionVarianceWarning, GradientVariance, gradient_variance
from .policy import LEVELS, Policy, Rule, Store, level
from .qmodule import QModule
from .report import Bytes, Report

__all__ = [
    "compress", "Compression", "default_policy", "auto_precision", "Policy", "Rule", "Store",
    "LEVELS", "level", "AutoPrecision", "QModule", "Report", "Bytes", "gradient_variance",
    "GradientVariance", "CompressionVarianceWarning", "functional",
]
