"""WAGEUBN (Yang et al., Neural Networks 125, 2020, arXiv 1909.02384): full 8-bit integer
training of W, A, G, E, U and batch norm; the first and last layers in float.

What each tensor gets (formulas and sources in ``lowbit.recipes._integer``; bit widths from
the official code's ``Quantize.py``, ``BatchNorm.py`` and ``imagenet_main.py``):

* **W** (weight role): ``C(Q(W, 8), 8)``, i.e. ``fixed<8,7,symmetric>``, straight-through
  (official ``fw``).
* **A** (input role of every quantized GEMM: the output of BN-ReLU): ``Q(a, 8)``, unbounded
  (official ``fa``).
* **E1** (grad_input: the gradient reaching A): shift quantization, 8 bits (official ``fe1``).
* **E2** (grad_output: the gradient at a convolution's output): flag quantization, 8 bits
  (official ``fe2``).
* **BN** (every batch norm, ``lowbit.nn.BatchNorm*`` with the ``stats``/``normalized``
  roles): ``μ`` and ``σ`` on ``Q(·, 16)``, ``x̂`` on ``Q(·, 8)``, ``γ`` and ``β`` on
  ``Q(·, 8)``, ``ε = 2^-15`` (official ``BatchNorm.py``).
* **G** (optimizer ``"wageubn"``, class ``WAGEUBN``): constant quantization with stochastic
  rounding for the weights of quantized layers (``fg``), ``Q(·, 15)`` for ``γ``/``β``
  (``fgBN``), float for the first and last layers.
* **U**: momentum ``1/4`` with the buffer on ``Q(·, 13)``, learning rate ``C(Q(lr, 10), 10)``,
  weights on ``Q(·, 24)`` (official ``imagenet_main.py``).
* Initialisation (``setup``): the quantized layers' weights ``Q(N(0, 1/fan_in) truncated at
  2σ, 16)`` (official ``conv2d_fixed_padding``).

Models: networks with batch norm and ReLU whose GEMM inputs are BN-ReLU outputs (pre- or
post-activation ResNets such as ``lowbit.models.preact_resnet18``, or a conv-BN-ReLU CNN).
"""

from __future__ import annotations

import math
from typing import Iterable

import torch
from torch import nn

from ..formats import FixedPoint
from ..nn import QuantizedModule, QuantizerRef, Recipe, Role
from ..nn.rng import derive_seed, stable_key
from ._integer import ParamKind, TaggedOptimizer, check_bits, constant_quantize, direct, tag
from ._registry import OptimizerSpec, PaperRecipe, register, register_optimizer

__all__ = ["WAGEUBN", "WAGEUBN_8BIT", "wageubn_init", "quantized_lr"]

#: WAGEUBN's batch-norm ε (official ``BatchNorm``: ``epsilon=1./(2**15)``).
BN_EPS = 2.0 ** -15


def quantized_lr(lr: float, bits: int) -> float:
    """``C(Q(lr, k_LR), k_LR)``: the learning rate on the grid of ``k_LR - 1`` fractional bits,
    clipped to ``±(1 - 2^(1-k_LR))`` (official ``flr``; round half to even as ``tf.round``)."""
    step = 2.0 ** (bits - 1)
    return min(max(round(lr * step) / step, -1 + 1 / step), 1 - 1 / step)


class WAGEUBN(TaggedOptimizer):
    """WAGEUBN's quantized momentum SGD (WAGEUBN §3.4-3.5; official ``imagenet_main.py``).

    For each parameter ``w`` with gradient ``g`` (``lr_q = quantized_lr(lr, bits_lr)``)::

        quantized layer (weight or bias):  G = constant_quantize(g + wd·w, g_scale, bits_g)
        batch norm γ, β:                   G = Q(g, bits_norm_grad)
        float layer (first, last):         G = g + wd·w
        M ← β M + G;  quantized: M ← Q(M, bits_momentum), w ← Q(w - lr_q M, bits_weight)
                      float:     w ← w - lr_q M

    The weight decay enters ``G`` because the official code adds ``wd · ½‖w‖²`` to the loss
    of every parameter except batch norm's.  The official code quantizes ``M`` and ``w`` in an
    op group that TensorFlow does not order against the update; lowbit quantizes ``M`` before
    it is used, so every stored tensor is on its grid.  ``g_scale`` is the official schedule's
    value (128, then 32, 8, 2 at the learning-rate steps): set ``param_groups[i]["g_scale"]``
    to follow it.  Kinds come from the tags the recipe's ``setup`` attaches; an untagged
    parameter is updated as a float one, and its stream uses ``seed`` and its index.

    Args:
        params: parameters or parameter groups.
        lr: the learning rate before its quantization.
        momentum: ``β`` (official: 1/4, a power of two).
        weight_decay: ``wd`` (official: 1e-4).
        g_scale: the constant range of ``G``'s integers (official: 128 at the start).
        bits_g, bits_lr, bits_momentum, bits_weight, bits_norm_grad: ``k_G = 8``,
            ``k_LR = 10``, the momentum's 13, the stored weights' 24, batch norm gradients' 15.
        seed: the stream of untagged parameters.
    """

    def __init__(self, params: Iterable, lr: float = 0.05, *, momentum: float = 0.25,
                 weight_decay: float = 1e-4, g_scale: float = 128.0, bits_g: int = 8,
                 bits_lr: int = 10, bits_momentum: int = 13, bits_weight: int = 24,
                 bits_norm_grad: int = 15, seed: int = 0):
        for name, value in (("lr", lr), ("g_scale", g_scale)):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
                raise ValueError(f"{name} must be a positive number; got {value!r}")
        for name, value in (("momentum", momentum), ("weight_decay", weight_decay)):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
                raise ValueError(f"{name} must be a non-negative number; got {value!r}")
        defaults = dict(lr=float(lr), momentum=float(momentum),
                        weight_decay=float(weight_decay), g_scale=float(g_scale),
                        bits_g=check_bits(bits_g, "bits_g", 2, 16),
                        bits_lr=check_bits(bits_lr, "bits_lr", 2, 24),
                        bits_momentum=check_bits(bits_momentum, "bits_momentum", 2, 24),
                        bits_weight=check_bits(bits_weight, "bits_weight", 2, 24),
                        bits_norm_grad=check_bits(bits_norm_grad, "bits_norm_grad", 2, 24))
        super().__init__(params, defaults, seed)

    def _untagged_kind(self, p: torch.Tensor) -> ParamKind:
        return ParamKind.FLOAT

    def _group_lr(self, group: dict) -> float:
        return quantized_lr(group["lr"], group["bits_lr"])

    def _gradient(self, p: torch.Tensor, kind: ParamKind, group: dict, seed: int
                  ) -> torch.Tensor:
        g = p.grad.float()
        if kind is ParamKind.NORM:
            return direct(g, group["bits_norm_grad"])
        if group["weight_decay"]:
            g = g + group["weight_decay"] * p.float()
        if kind is ParamKind.FLOAT:
            return g
        return constant_quantize(g, group["g_scale"], group["bits_g"], seed=seed)

    def _update(self, p: torch.Tensor, group: dict, lr: float, kind: ParamKind, seed: int,
                state: dict) -> None:
        grad = self._gradient(p, kind, group, seed)
        buf = state.get("momentum_buffer")
        buf = grad if buf is None else group["momentum"] * buf + grad
        w = p.float()
        if kind is ParamKind.FLOAT:
            w = w - lr * buf
        else:
            buf = direct(buf, group["bits_momentum"])
            w = direct(w - lr * buf, group["bits_weight"])
        state["momentum_buffer"] = buf
        p.copy_(w)


register_optimizer("wageubn", WAGEUBN)


def wageubn_init(weight: torch.Tensor, *, generator: torch.Generator) -> None:
    """The official initialisation of a quantized layer's weight, in place:
    ``Q(N(0, 1/fan_in) truncated to ±2 std, 16)`` (``conv2d_fixed_padding``:
    ``fBits(truncated_normal(stddev=1/sqrt(fan_in)), 16)``)."""
    std = 1.0 / math.sqrt(weight[0].numel())
    w = torch.empty(weight.shape, dtype=torch.float32)
    nn.init.trunc_normal_(w, 0.0, std, -2 * std, 2 * std, generator=generator)
    weight.copy_(direct(w, 16).to(weight.device, weight.dtype))


@torch.no_grad()
def _setup(model: nn.Module, seed: int) -> nn.Module:
    """Initialise the quantized layers, set batch norm's ε, tag every parameter's kind."""
    for mname, module in model.named_modules():
        is_norm = isinstance(module, nn.modules.batchnorm._BatchNorm)
        quantized = isinstance(module, QuantizedModule)
        if quantized and is_norm:
            module.eps = BN_EPS
            kind = ParamKind.NORM
        elif quantized and module.lowbit.recipe.weight is not None:
            kind = ParamKind.WEIGHT
        else:
            kind = ParamKind.FLOAT
        for pname, p in module.named_parameters(recurse=False):
            name = f"{mname}.{pname}" if mname else pname
            if kind is ParamKind.WEIGHT and pname == "weight":
                key = derive_seed(seed, stable_key(name, "init"), 0)
                wageubn_init(p, generator=torch.Generator().manual_seed(key))
            tag(p, kind, name, seed)
    return model


def _q(k: int) -> Role:
    """``Q(·, k)``: ``k - 1`` fractional bits, unbounded, round half to even."""
    return Role(FixedPoint(25, k - 1, clamp=False))


_E1 = QuantizerRef("wageubn_error_shift", {"bits": 8})
_E2 = QuantizerRef("wageubn_error_flag", {"bits": 8})
_BATCH_NORM = Recipe(weight=_q(8), bias=_q(8), stats=_q(16), normalized=_q(8))

WAGEUBN_8BIT = register(PaperRecipe(
    name="wageubn",
    title="WAGEUBN: full 8-bit integer training (W, A, G, E, U, BN); first and last layers "
          "in float",
    source=("Yang, Wu, Deng, Yan, Xie, Li, Neural Networks 125 (2020), arXiv 1909.02384 §3; "
            "official TF code github.com/yang-yk/wageubn Quantize.py, BatchNorm.py, "
            "resnet_model.py, imagenet_main.py"),
    recipe=Recipe(
        input=_q(8),
        weight=Role(FixedPoint(8, 7, symmetric=True)),
        grad_output=_E2,
        grad_input=_E1,
        overrides={
            "first": None,
            # The official E1 follows the last BN-ReLU, whose output the float FC reads.
            "last": Recipe(grad_input=_E1),
            nn.modules.batchnorm._BatchNorm: _BATCH_NORM,
        },
    ),
    optimizer=OptimizerSpec("wageubn", {"lr": 0.05, "momentum": 0.25, "weight_decay": 1e-4,
                                        "g_scale": 128.0}),
    details=(
        "Q(x,k) = round(x*2^(k-1))/2^(k-1) (unbounded); C(x,k) = clamp(x, -1+2^(1-k), "
        "1-2^(1-k)); Shift(x) = 2^round(log2 x)",
        "W: C(Q(W,8),8) = fixed<8,7,symmetric>; A (GEMM inputs): Q(a,8)",
        "E1 (grad_input): S*clamp(Q(e/S,8),-1,1), S = Shift(max|e|)",
        "E2 (grad_output): s = Shift(max|e|)/2^7, d = e/s; |d| >= 1: clamp(round(d), +-127); "
        "|d| < 1: Q(d,8); result s*d_q",
        "BN: mean, std on Q(.,16); x_hat on Q(.,8); gamma, beta on Q(.,8); eps = 2^-15",
        "G: n = clamp(SR(g_scale*g/Shift(max|g|)), +-(g_scale-1)); G = Q(n/(128*2^7),15) "
        "(g includes weight decay 1e-4); BN gradients Q(g,15)",
        "U: lr_q = C(Q(lr,10),10); M <- Q(M/4 + G, 13); W <- Q(W - lr_q*M, 24)",
        "first and last layers in float (fp32 gradients, float momentum); E1 on the last "
        "layer's input gradient",
        "init (prepare): quantized weights Q(truncated N(0, 1/fan_in), 16)",
        "models: batch norm + ReLU networks (ResNets, conv-BN-ReLU CNNs)",
    ),
    setup=_setup,
))
