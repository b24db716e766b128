"""Gradient variance from compression against minibatch variance: ActNN's "Overall Var"
(``get_var`` of its image-classification debug module; research note actnn.md §1).

For batches ``B_1 .. B_m`` and the model's parameters ``θ`` (those with ``requires_grad``):

* exact gradients ``g_j`` of each batch without compression; ``ḡ = mean_j g_j`` and the
  minibatch variance ``SampleVar = mean_j ‖g_j - ḡ‖²``;
* ``k`` compressed backward passes per batch, each with its own noise: ``ĝ_{j,1..k}``; per
  element the unbiased sample variance ``var_j = Σ_i (ĝ_{j,i} - mean_i ĝ_{j,i})² / (k - 1)``
  and the squared bias ``‖mean_i ĝ_{j,i} - g_j‖²``;
* ``Var = mean_j Σ var_j`` and ``Bias = mean_j ‖mean_i ĝ_{j,i} - g_j‖²`` (whose expectation is
  ``Var / k`` even for an unbiased quantizer), summed over every element of every parameter.

Every pass of a batch runs under the same forked random state (dropout draws the same masks);
buffers (BatchNorm running statistics) are restored afterwards.  A ratio ``Var / SampleVar``
above ``threshold`` (GACT's 10 %) raises a ``CompressionVarianceWarning``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import warnings
from typing import Any, Callable, Iterable, List, Union

import torch
from torch import nn

from .context import compress
from .policy import Policy

__all__ = ["CompressionVarianceWarning", "GradientVariance", "gradient_variance"]


class CompressionVarianceWarning(UserWarning):
    """Gradient variance added by activation compression is large against minibatch noise."""


@dataclasses.dataclass(frozen=True)
class GradientVariance:
    """Result of ``gradient_variance`` (module docstring for the definitions)."""

    quant_var: float  #: Var: variance added by compression
    bias: float  #: Bias: squared distance of the mean compressed gradient from the exact one
    sample_var: float  #: SampleVar: minibatch variance of the exact gradients
    batches: int
    k: int

    @property
    def ratio(self) -> float:
        """quant_var / sample_var (Inf when the minibatch variance is 0)."""
        return self.quant_var / self.sample_var if self.sample_var else float("inf")


def _grads(model: nn.Module, loss_fn, batch, params: List[torch.Tensor], rng_seed: int,
           context) -> torch.Tensor:
    model.zero_grad(set_to_none=True)
    with torch.random.fork_rng(devices=_devices(params)):
        torch.manual_seed(rng_seed)
        with context:
            loss = loss_fn(model, batch)
        loss.backward()
    return torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).detach()
                      .double().reshape(-1) for p in params])


def _devices(params) -> list:
    return sorted({p.device.index for p in params if p.is_cuda})


def gradient_variance(model: nn.Module, loss_fn: Callable[[nn.Module, Any], torch.Tensor],
                      batches: Iterable[Any], *, k: int = 3, bits: int = 2,
                      group_size: int = 256, policy: Union[Policy, str, None] = None,
                      threshold: float = 0.1, seed: int = 0) -> GradientVariance:
    """ActNN's "Overall Var" of ``model`` under ``compress(model, bits=, group_size=, policy=)``.

    Args:
        model: the model (its gradients are overwritten; its buffers are restored).
        loss_fn: ``loss_fn(model, batch)`` returns the scalar loss of one batch.
        batches: at least two batches (ActNN used 20).
        k: compressed passes per batch (>= 2; ActNN used 3).
        threshold: warn when ``quant_var / sample_var`` exceeds it.
        seed: the torch seed every pass of a batch starts from (plus the batch index).
    """
    batches = list(batches)
    if len(batches) < 2:
        raise ValueError(f"batches must hold at least 2 batches; got {len(batches)}")
    if isinstance(k, bool) or not isinstance(k, int) or k < 2:
        raise ValueError(f"k must be an int >= 2; got {k!r}")
    params = [p for p in model.parameters() if p.requires_grad]
    buffers = {n: b.detach().clone() for n, b in model.named_buffers()}
    exact, var, bias = [], 0.0, 0.0
    try:
        for j, batch in enumerate(batches):
            g = _grads(model, loss_fn, batch, params, seed + j, contextlib.nullcontext())
            exact.append(g)
            samples = torch.stack([
                _grads(model, loss_fn, batch, params, seed + j,
                       compress(model, bits=bits, group_size=group_size, policy=policy))
                for _ in range(k)])
            var += samples.var(dim=0, unbiased=True).sum().item()
            bias += (samples.mean(dim=0) - g).square().sum().item()
    finally:
        model.zero_grad(set_to_none=True)
        with torch.no_grad():
            for n, b in model.named_buffers():
                b.copy_(buffers[n])
    g = torch.stack(exact)
    sample_var = (g - g.mean(dim=0)).square().sum(dim=1).mean().item()
    m = len(batches)
    result = GradientVariance(var / m, bias / m, sample_var, m, k)
    if result.ratio > threshold:
        warnings.warn(f"activation compression adds gradient variance {result.quant_var:.3g}, "
                      f"{result.ratio:.1%} of the minibatch variance {sample_var:.3g} (above "
                      f"{threshold:.0%}): use more bits or a finer policy",
                      CompressionVarianceWarning, stacklevel=2)
    return result
