"""WAGE 2-8-8-8 (Wu, Li, Chen, Shi, ICLR 2018, arXiv 1802.04680): ternary weights, 8-bit
activations, errors and weight gradients, no batch norm, a constant layer-wise scale.

What each tensor gets (``lowbit.recipes._integer`` has the formulas and their sources):

* **W** (weight role ``wage_weight``): ``Q(C(W, 2), 2) / α``, straight-through.
* **A** (input role ``wage_activation``): ``Q(C(a, 8), 8)``; gradient masked where ``C`` clips.
* **E**: ``Q(C(e / Shift(max|e|), 8), 8)`` on the gradient that reaches each quantized
  activation (the backward of ``wage_activation``, after the clip mask, as the official
  ``ReLU → QE → QA`` order gives) and on the gradient of the network's output (the last
  layer's ``grad_output``, official ``_QE`` before the loss).
* **G** and the update (optimizer ``"wage"``, class ``WAGE``): ``ΔW = σ(8) · SR(Q(η g /
  Shift(max|g|), 16))``, ``W ← C(W, 2) - ΔW``: plain SGD whose learning rate ``η`` lives inside
  the quantizer (official ``Top.py``: ``GradientDescentOptimizer(1)`` on ``G(g)``, the clip
  run before each update), so the master weights stay on the 8-bit grid.
* Initialisation (``setup``): ``W ~ U(-L, L)``, ``L = max(√(3/fan_in), 1.5 σ(2))``, then
  ``W ← Q(W, 2)`` once (official ``W_q_op``); biases, which the paper's networks lack, start at
  zero and follow ``G`` on the 8-bit grid (``b ← C(b, 8) - Δb``).

Models: BN-free networks of convolutions and linear layers with ReLU (WAGE replaces batch
norm by ``α``), e.g. ``lowbit.models.vgg7(batchnorm=False)`` or a small conv-ReLU CNN for
``digits``; ``prepare`` raises on a model with batch norm.
"""

from __future__ import annotations

from typing import Iterable, Optional

import torch
from torch import nn

from ..nn import QuantizedModule, QuantizerRef, Recipe
from ..nn.rng import derive_seed, stable_key
from ._integer import (ParamKind, TaggedOptimizer, WageWeight, check_bits, clip, direct, tag,
                       wage_grad, wage_limit)
from ._registry import OptimizerSpec, PaperRecipe, register, register_optimizer

__all__ = ["WAGE", "WAGE_2888", "wage_init"]


class WAGE(TaggedOptimizer):
    """WAGE's update rule (WAGE §3.3.4 Eq. 12-13; official ``Quantize.G`` and ``Top.py``).

    For each parameter ``w`` with gradient ``g``, at its ``t``-th step::

        ΔW = σ(bits_g) · SR(Q(lr · g / Shift(max|g|), bits_r))        (_integer.wage_grad)
        w  ← C(w, bits_w) - ΔW     (a layer's weight)
        w  ← C(w, bits_g) - ΔW     (a layer's bias: the paper has none; kept on G's grid)
        w  ← w - ΔW                (any other parameter)

    ``lr`` is WAGE's ``η`` (an integer power of two in the paper: 8, 1, 1/8 at epochs 200 and
    250 of 300 on CIFAR-10); schedulers may change it as usual.  ``SR`` draws from
    ``derive_seed(seed, stable_key(name, "grad"), t)`` with the parameter's tag (set by the
    recipe's ``setup``); an untagged parameter uses this optimizer's ``seed`` and its index,
    and counts as a weight when it has two or more dimensions, as a bias otherwise.

    Args:
        params: parameters or parameter groups.
        lr: ``η``.
        bits_w: ``k_W``, the weight bits (the clip bound ``1 - σ(k_W)``).
        bits_g: ``k_G``, the gradient bits (the update step ``σ(k_G)``).
        bits_r: ``k_R``, the randomizer bits.
        seed: the stream of untagged parameters.
    """

    def __init__(self, params: Iterable, lr: float = 8.0, *, bits_w: int = 2, bits_g: int = 8,
                 bits_r: int = 16, seed: int = 0):
        if not isinstance(lr, (int, float)) or isinstance(lr, bool) or not lr > 0:
            raise ValueError(f"lr must be a positive number; got {lr!r}")
        defaults = dict(lr=float(lr), bits_w=check_bits(bits_w, "bits_w", 2, 16),
                        bits_g=check_bits(bits_g, "bits_g", 2, 16),
                        bits_r=check_bits(bits_r, "bits_r", 2, 25))
        super().__init__(params, defaults, seed)

    def _untagged_kind(self, p: torch.Tensor) -> ParamKind:
        return ParamKind.WEIGHT if p.dim() >= 2 else ParamKind.BIAS

    def _update(self, p: torch.Tensor, group: dict, lr: float, kind: ParamKind, seed: int,
                state: dict) -> None:
        delta = wage_grad(p.grad, lr, group["bits_g"], group["bits_r"], seed=seed)
        w = p.float()
        if kind is ParamKind.WEIGHT:
            w = clip(w, group["bits_w"])
        elif kind is ParamKind.BIAS:
            w = clip(w, group["bits_g"])
        p.copy_(w - delta)


register_optimizer("wage", WAGE)


def wage_init(weight: torch.Tensor, bits: int, *, generator: torch.Generator) -> None:
    """WAGE's initialisation in place: ``U(-L, L)`` with ``L = wage_limit(fan_in, bits)``
    (WAGE Eq. 5-6; official ``myInitializer``), then ``Q(W, bits)`` (official ``W_q_op``, run
    once before training: the ternary start that ``β = 1.5`` balances to thirds)."""
    bound = wage_limit(weight[0].numel(), bits)
    u = torch.rand(weight.shape, generator=generator, dtype=torch.float32)
    weight.copy_(direct((2 * u - 1) * bound, bits).to(weight.device, weight.dtype))


def _generator(seed: int, name: str) -> torch.Generator:
    return torch.Generator().manual_seed(derive_seed(seed, stable_key(name, "init"), 0))


@torch.no_grad()
def _setup(model: nn.Module, seed: int) -> nn.Module:
    """Reject batch norm; initialise and tag every WAGE layer; tag everything else float."""
    norms = [n or "(root)" for n, m in model.named_modules()
             if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if norms:
        raise ValueError(f"wage: the model has batch norm layers {norms}; WAGE has no batch "
                         "norm (its layer scale α replaces it): build the model without it, "
                         "e.g. lowbit.models.vgg7(batchnorm=False)")
    for mname, module in model.named_modules():
        quantizer: Optional[nn.Module] = None
        if isinstance(module, QuantizedModule):
            quantizer = module.lowbit.quantizer("weight")
        for pname, p in module.named_parameters(recurse=False):
            name = f"{mname}.{pname}" if mname else pname
            kind = ParamKind.FLOAT
            if isinstance(quantizer, WageWeight) and pname == "weight":
                wage_init(p, quantizer.bits, generator=_generator(seed, name))
                kind = ParamKind.WEIGHT
            elif isinstance(quantizer, WageWeight) and pname == "bias":
                p.zero_()
                kind = ParamKind.BIAS
            tag(p, kind, name, seed)
    return model


_ERROR = QuantizerRef("wage_error", {"bits": 8})

WAGE_2888 = register(PaperRecipe(
    name="wage",
    title="WAGE 2-8-8-8: ternary weights, 8-bit activations, errors and gradients, no BN",
    source=("Wu, Li, Chen, Shi, ICLR 2018 (arXiv 1802.04680) §3; official TF code "
            "github.com/boluoweifenda/WAGE source/Quantize.py, NN.py, Top.py, myInitializer.py"),
    recipe=Recipe(
        input=QuantizerRef("wage_activation", {"bits": 8, "error_bits": 8}),
        weight=QuantizerRef("wage_weight", {"bits": 2}),
        overrides={"last": {"grad_output": _ERROR}},
    ),
    optimizer=OptimizerSpec("wage", {"lr": 8.0, "bits_w": 2, "bits_g": 8, "bits_r": 16}),
    details=(
        "sigma(k) = 2^(1-k); Q(x,k) = round(x/sigma(k))*sigma(k); C(x,k) = clamp(x, "
        "-1+sigma(k), 1-sigma(k)); Shift(x) = 2^round(log2 x)",
        "W: Q(C(W,2),2)/alpha, alpha = max(Shift(1.5*sigma(2)/sqrt(3/fan_in)), 1); "
        "straight-through",
        "A (every GEMM input): Q(C(a,8),8); gradient masked where C clips",
        "E (gradient at each quantized activation, after the mask; gradient of the output): "
        "Q(C(e/Shift(max|e|),8),8)",
        "G: dW = sigma(8)*SR(Q(lr*g/Shift(max|g|),16)), SR = stochastic rounding to integers",
        "U: W <- C(W,2) - dW (master weights on the 8-bit grid; plain SGD, lr = eta inside G)",
        "init (prepare): W ~ U(-L,L), L = max(sqrt(3/fan_in), 1.5*sigma(2)), then W <- Q(W,2); "
        "biases (not in the paper) start at 0, b <- C(b,8) - db",
        "models: BN-free conv/linear + ReLU networks, e.g. lowbit.models.vgg7(batchnorm=False); "
        "batch norm is rejected",
        "schedule: eta = 8, then 1 and 1/8 at epochs 200 and 250 of 300 (official Option.py), "
        "as fractions 2/3 and 5/6 of the run; twice a float baseline's epochs",
    ),
    setup=_setup,
    batchnorm=False,
    lr_milestones=((2 / 3, 1 / 8), (5 / 6, 1 / 64)),
    epochs_scale=2.0,
))
