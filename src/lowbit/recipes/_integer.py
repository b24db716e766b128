"""The integer-training quantizers of WAGE and WAGEUBN, shared by ``lowbit.recipes.wage`` and
``lowbit.recipes.wageubn``: the formulas as functions, the quantizer modules that recipes name
(``lowbit.nn.register_quantizer``), and the parameter tags their optimizers read.

Sources (every formula below cites one):

* WAGE: Wu, Li, Chen, Shi, "Training and inference with integers in deep neural networks",
  ICLR 2018 (arXiv 1802.04680), §3; official TensorFlow code github.com/boluoweifenda/WAGE,
  ``source/Quantize.py`` (``S``, ``Shift``, ``C``, ``Q``, ``W``, ``A``, ``G``, ``E``) and
  ``source/myInitializer.py`` (``scaleLimit``).
* WAGEUBN: Yang, Wu, Deng, Yan, Xie, Li, "Training high-performance and large-scale deep neural
  networks with full 8-bit integers", Neural Networks 125, 2020 (arXiv 1909.02384), §3;
  official TensorFlow code github.com/yang-yk/wageubn, ``Quantize.py`` (``Q``, ``clip``,
  ``Shift``, ``fw``, ``fa``, ``fg``, ``fgBN``, ``fe1``, ``fe2``, ``flr``).

Notation: ``σ(k) = 2^(1-k)`` (one step of a k-bit grid on [-1, 1]); ``Q(x, k) = round(x / σ(k))
· σ(k)`` with round half to even (``tf.round``), unbounded ("direct quantization");
``C(x, k) = clamp(x, -1 + σ(k), 1 - σ(k))``; ``Shift(x) = 2^round(log2 x)``.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Optional

import torch

from ..formats import FixedPoint, Rounding
from ..formats.modes import _StrEnum
from ..nn import register_quantizer
from ..nn.rng import derive_seed, stable_key
from ..ops.quantize import quantize

__all__ = [
    "sigma", "direct", "clip", "shift", "wage_weight", "wage_error", "wage_grad",
    "wage_scale", "wage_limit", "shift_quantize", "flag_quantize", "constant_quantize",
    "WageWeight", "WageActivation", "WageError", "ShiftError", "FlagError",
    "ParamKind", "ParamTag", "tag", "tag_of", "check_bits", "check_seed", "TaggedOptimizer",
]

# Word length of the unclamped grids below: any width works (``clamp=False``), this one is
# FixedPoint's largest, so that the format's own checks never reject a value.
_UNBOUNDED_WL = 25


def check_bits(bits: object, param: str, low: int = 2, high: int = 24) -> int:
    """``bits`` when it is an int in ``[low, high]``; else a ``TypeError``/``ValueError``
    naming ``param``."""
    if isinstance(bits, bool) or not isinstance(bits, int):
        raise TypeError(f"{param} must be an int; got {bits!r}")
    if not low <= bits <= high:
        raise ValueError(f"{param} must be in [{low}, {high}]; got {bits}")
    return bits


def check_seed(seed: object) -> int:
    """``seed`` when it is an int in ``[0, 2^64)``; else a ``TypeError``."""
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**64:
        raise TypeError(f"seed must be an int in [0, 2^64); got {seed!r}")
    return seed


def sigma(k: int) -> float:
    """``σ(k) = 2^(1-k)``, the step of a k-bit grid on [-1, 1] (WAGE Eq. 1, ``1/S(bits)``)."""
    return 2.0 ** (1 - check_bits(k, "k", 1, 32))


def direct(x: torch.Tensor, k: int) -> torch.Tensor:
    """WAGEUBN's direct quantization ``Q(x, k) = round(x · 2^(k-1)) / 2^(k-1)``: the grid of
    k-1 fractional bits, round half to even, no clipping (WAGEUBN §3.2 Eq. 2; ``Q`` in both
    official codes).  Computed in fp32, returned in ``x``'s dtype."""
    fmt = FixedPoint(_UNBOUNDED_WL, check_bits(k, "k") - 1, clamp=False)
    return quantize(x.float(), fmt).to(x.dtype)


def clip(x: torch.Tensor, k: int) -> torch.Tensor:
    """``C(x, k) = clamp(x, -1 + σ(k), 1 - σ(k))`` (WAGE Eq. 2; ``C``/``clip`` in both codes)."""
    s = sigma(k)
    return x.clamp(-1 + s, 1 - s)


def shift(x: torch.Tensor) -> torch.Tensor:
    """``Shift(x) = 2^round(log2 x)`` for a non-negative scalar tensor (WAGE Eq. 4).

    Computed exactly from the binary form ``x = m · 2^e`` (``m`` in [1/2, 1)):
    ``round(log2 x) = e`` when ``m ≥ √½`` else ``e - 1`` (``m²`` is exact in fp64, and no tie
    exists because ``2^(k+½)`` is irrational), where the official codes' ``log(x)/log(2)``
    can misround near the boundary.  ``Shift(0) = ½``, so an all-zero tensor stays zero
    (the official codes divide 0 by 0 there)."""
    m, e = torch.frexp(x.float())
    k = e - (m.double().square() < 0.5).to(e.dtype)
    return torch.ldexp(torch.ones_like(m), k)


def _amax_shift(x: torch.Tensor) -> torch.Tensor:
    return shift(x.detach().abs().amax())


def _symmetric(bits: int) -> FixedPoint:
    """``Q(C(·, k), k)`` as a format: codes ±(2^(k-1) - 1) on the step σ(k).  Rounding then
    clamping equals WAGE's clamping then rounding because the bounds lie on the grid."""
    return FixedPoint(bits, bits - 1, symmetric=True)


# -- WAGE ------------------------------------------------------------------------------------
def wage_limit(fan_in: int, bits: int) -> float:
    """The WAGE initialisation bound ``L = max(L0, Lmin)`` of ``W ~ U(-L, L)``, with
    ``Lmin = β · σ(k_W)``, ``β = 1.5`` (WAGE Eq. 5-6) and ``L0 = √(3 / fan_in)``, the official
    code's variance-scaling initializer (``factor=1.0, mode='FAN_IN', uniform=True``; the
    paper writes the He bound √(6 / fan_in))."""
    return max(math.sqrt(3.0 / fan_in), 1.5 * sigma(bits))


def wage_scale(fan_in: int, bits: int) -> float:
    """WAGE's constant layer-wise scale ``α = max(Shift(Lmin / L0), 1)`` (WAGE Eq. 7;
    ``scaleLimit`` in ``myInitializer.py``): a power of two by which ``W_q`` is divided."""
    if isinstance(fan_in, bool) or not isinstance(fan_in, int) or fan_in < 1:
        raise ValueError(f"fan_in must be a positive int; got {fan_in!r}")
    ratio = 1.5 * sigma(bits) / math.sqrt(3.0 / fan_in)
    return max(2.0 ** round(math.log2(ratio)), 1.0)


def wage_weight(w: torch.Tensor, bits: int) -> torch.Tensor:
    """``W_q = Q(C(W, k_W), k_W) / α`` with ``α = wage_scale(fan_in)`` and ``fan_in`` the
    product of ``w``'s dimensions after the first (WAGE Eq. 8; official ``W``, which divides
    by α "in QW rather than QA for simplicity").  ``k_W = 2`` gives ternary {-½, 0, ½}/α."""
    if w.dim() < 2:
        raise ValueError(f"a WAGE weight needs >= 2 dims (out, in, ...); got shape "
                         f"{tuple(w.shape)}")
    alpha = wage_scale(w[0].numel(), bits)
    return (quantize(w.float(), _symmetric(bits)) / alpha).to(w.dtype)


def wage_error(e: torch.Tensor, bits: int) -> torch.Tensor:
    """WAGE's error quantization ``Q(C(e / Shift(max|e|), k_E), k_E)`` (WAGE Eq. 11; official
    ``E``): the result stays divided by the shift (WAGE keeps only the errors' direction;
    ``G`` normalises the weight gradients again)."""
    e32 = e.float()
    return quantize(e32 / _amax_shift(e32), _symmetric(bits)).to(e.dtype)


def wage_grad(g: torch.Tensor, lr: float, bits: int, bits_r: int, *,
              seed: int) -> torch.Tensor:
    """WAGE's weight update ``ΔW = σ(k_G) · SR(Q(η · g / Shift(max|g|), k_R))`` (WAGE Eq.
    12-13; official ``G``): normalise by the shift, scale by the learning rate ``η``, round to
    the randomizer grid of ``k_R - 1`` fractional bits, then round stochastically to integers
    (up in magnitude with probability equal to the fraction) and multiply by ``σ(k_G)``.

    ``bits_r`` is ``k_R``.  The stochastic rounding adds ``k_R - 1`` random bits below the
    integer bit (lowbit's Philox stream, ``seed``): the fraction has ``k_R - 1`` bits, so the
    probability is exactly the official ``floor + [frac > u]`` with a uniform ``u``."""
    g32 = g.float()
    fine = FixedPoint(_UNBOUNDED_WL, check_bits(bits_r, "bits_r", 2, 25) - 1, clamp=False)
    norm = quantize(lr * (g32 / _amax_shift(g32)), fine)
    units = quantize(norm, FixedPoint(_UNBOUNDED_WL, 0, clamp=False),
                     rounding=Rounding.STOCHASTIC, rbits=bits_r - 1, seed=seed)
    return (units * sigma(bits)).to(g.dtype)


# -- WAGEUBN ---------------------------------------------------------------------------------
def shift_quantize(e: torch.Tensor, bits: int) -> torch.Tensor:
    """WAGEUBN's shift quantization of errors ``S · clamp(Q(e / S, k), -1, 1)``,
    ``S = Shift(max|e|)`` (WAGEUBN §3.3 Eq. 5; official ``fe1``): unlike WAGE's, the scale is
    put back."""
    e32 = e.float()
    s = _amax_shift(e32)
    return (s * direct(e32 / s, bits).clamp(-1.0, 1.0)).to(e.dtype)


def flag_quantize(e: torch.Tensor, bits: int) -> torch.Tensor:
    """WAGEUBN's flag quantization of errors (WAGEUBN §3.3 Eq. 6-7; official ``fe2``).

    With ``s = Shift(max|e|) / 2^(k-1)`` and ``d = e / s``: magnitudes ``|d| ≥ 1`` are rounded
    to integers clipped to ``±(2^(k-1) - 1)``; magnitudes ``|d| < 1`` keep ``k - 1`` fractional
    bits (``Q(d, k)``); the result is ``s · d_q``.  A flag bit per element selects the regime,
    so k+1 bits cover 2k-1 bits of dynamic range."""
    e32 = e.float()
    s = _amax_shift(e32) / 2.0 ** (check_bits(bits, "bits") - 1)
    d = e32 / s
    large = quantize(d, FixedPoint(bits, 0, symmetric=True))
    return (s * torch.where(d.abs() < 1, direct(d, bits), large)).to(e.dtype)


def constant_quantize(g: torch.Tensor, scale: float, bits: int, *, seed: int,
                      rbits: Optional[int] = None, norm: float = 128.0) -> torch.Tensor:
    """WAGEUBN's constant quantization of weight gradients (WAGEUBN §3.3 Eq. 8-9; official
    ``fg``): ``n = clamp(SR(scale · g / Shift(max|g|)), -(scale - 1), scale - 1)``, then
    ``G = Q(n / (norm · 2^(k_G - 1)), 15)``.

    ``scale`` is the official ``g_scale`` (128, then 32, 8, 2 at its learning-rate steps) and
    ``norm`` its fixed divisor 128, so a smaller ``scale`` shrinks ``G`` as a learning-rate
    decay would.  ``SR`` is stochastic rounding to integers with ``rbits`` random bits
    (None: 32; the official code's ``bitsR = 32`` randomizer); ``seed`` keys its stream."""
    g32 = g.float()
    units = quantize(scale * (g32 / _amax_shift(g32)), FixedPoint(_UNBOUNDED_WL, 0, clamp=False),
                     rounding=Rounding.STOCHASTIC, rbits=rbits, seed=seed)
    units = units.clamp(-(scale - 1), scale - 1)
    return direct(units / (norm * 2.0 ** (check_bits(bits, "bits") - 1)), 15).to(g.dtype)


# -- quantizer modules (recipe role values) ---------------------------------------------------
class _Exact(torch.autograd.Function):
    """``y`` forward (computed by the caller), the gradient to ``x`` unchanged."""

    @staticmethod
    def forward(ctx, x, y):
        return y

    @staticmethod
    def backward(ctx, g):
        return g, None


class _WageActivationFn(torch.autograd.Function):
    """``Q(C(x, k_A), k_A)`` forward; backward ``E(g · 1[|x| ≤ 1 - σ(k_A)])``: the clip's
    gradient mask (official ``A`` keeps it: ``x + stop_gradient(Q(C(x)) - C(x))``), then WAGE's
    error quantization (official ``_activation``: ReLU, then ``QE``, then ``QA``, so in
    backward the mask comes before ``E``)."""

    @staticmethod
    def forward(ctx, x, bits: int, error_bits: Optional[int]):
        ctx.save_for_backward(x)
        ctx.bits, ctx.error_bits = bits, error_bits
        return quantize(x.float(), _symmetric(bits)).to(x.dtype)

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        g = g * (x.abs() <= 1 - sigma(ctx.bits)).to(g.dtype)
        if ctx.error_bits is not None:
            g = wage_error(g, ctx.error_bits)
        return g, None, None


class _BitsModule(torch.nn.Module):
    def __init__(self, bits: int):
        super().__init__()
        self.bits = check_bits(bits, "bits")

    def extra_repr(self) -> str:
        return f"bits={self.bits}"


@register_quantizer("wage_weight")
class WageWeight(_BitsModule):
    """Weight role of WAGE: ``wage_weight(w, bits)`` forward (``Q(C(W))/α``), the gradient
    unchanged (official ``W`` skips the derivative of both quantize and clip)."""

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        return _Exact.apply(w, wage_weight(w.detach(), self.bits))


@register_quantizer("wage_activation")
class WageActivation(_BitsModule):
    """Input role of WAGE: activations ``Q(C(a, bits), bits)`` with the clip's gradient mask,
    and (``error_bits`` set) WAGE's error quantization of the gradient that flows back to
    ``a`` (``_WageActivationFn``)."""

    def __init__(self, bits: int = 8, error_bits: Optional[int] = 8):
        super().__init__(bits)
        self.error_bits = None if error_bits is None else check_bits(error_bits, "error_bits")

    def forward(self, a: torch.Tensor) -> torch.Tensor:
        return _WageActivationFn.apply(a, self.bits, self.error_bits)

    def extra_repr(self) -> str:
        return f"bits={self.bits}, error_bits={self.error_bits}"


@register_quantizer("wage_error")
class WageError(_BitsModule):
    """Gradient role of WAGE: ``wage_error(e, bits)`` (the forward of a gradient role is
    applied to the gradient)."""

    def forward(self, e: torch.Tensor) -> torch.Tensor:
        return wage_error(e, self.bits)


@register_quantizer("wageubn_error_shift")
class ShiftError(_BitsModule):
    """Gradient role of WAGEUBN's ``E1``: ``shift_quantize(e, bits)``."""

    def forward(self, e: torch.Tensor) -> torch.Tensor:
        return shift_quantize(e, self.bits)


@register_quantizer("wageubn_error_flag")
class FlagError(_BitsModule):
    """Gradient role of WAGEUBN's ``E2``: ``flag_quantize(e, bits)``."""

    def forward(self, e: torch.Tensor) -> torch.Tensor:
        return flag_quantize(e, self.bits)


# -- parameter tags (set by a recipe's setup, read by its optimizer) ---------------------------
class ParamKind(_StrEnum):
    """Which update rule of an integer-training optimizer a parameter follows."""

    #: The weight of a quantized layer.
    WEIGHT = "weight"
    #: The bias of a quantized layer.
    BIAS = "bias"
    #: A quantized batch norm's γ or β (WAGEUBN).
    NORM = "norm"
    #: A parameter of a layer kept in float (WAGEUBN's first and last layers).
    FLOAT = "float"


@dataclasses.dataclass(frozen=True)
class ParamTag:
    """A parameter's update rule, its name in the model (which keys its random stream) and
    the run's seed, attached by a recipe's ``setup`` so that ``make_optimizer(params)`` needs
    nothing but the parameters."""

    kind: ParamKind
    name: str
    seed: int


_TAG = "_lowbit_integer_tag"


def tag(param: torch.nn.Parameter, kind: ParamKind, name: str, seed: int) -> None:
    """Attach a ``ParamTag``.  It lives on the parameter object: ``torch.save`` keeps it,
    ``copy.deepcopy`` does not (prepare the copy again)."""
    setattr(param, _TAG, ParamTag(ParamKind.parse(kind, "kind"), name, seed))


def tag_of(param: torch.Tensor) -> Optional[ParamTag]:
    """The parameter's ``ParamTag``, or None when no recipe tagged it."""
    return getattr(param, _TAG, None)


class TaggedOptimizer(torch.optim.Optimizer):
    """What WAGE's and WAGEUBN's update rules share: ``step`` visits every parameter with a
    gradient, resolves its ``ParamTag`` (an untagged parameter: ``_untagged_kind(p)``, the
    name ``param<i>`` of its index over all groups and this optimizer's ``seed``), derives the
    seed of its ``t``-th update, ``derive_seed(seed, stable_key(name, "grad"), t)``, and calls
    ``_update(p, group, lr, kind, seed, state)`` with ``lr = _group_lr(group)``; then ``t``
    advances (``state["step"]``)."""

    def __init__(self, params, defaults: dict, seed: int):
        check_seed(seed)
        super().__init__(params, defaults)
        self.seed = seed

    def _untagged_kind(self, p: torch.Tensor) -> ParamKind:
        raise NotImplementedError

    def _group_lr(self, group: dict) -> float:
        return group["lr"]

    def _update(self, p: torch.Tensor, group: dict, lr: float, kind: ParamKind, seed: int,
                state: dict) -> None:
        raise NotImplementedError

    @torch.no_grad()
    def step(self, closure=None):
        """One update of every parameter with a gradient; returns the closure's loss."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        index = 0
        for group in self.param_groups:
            lr = self._group_lr(group)
            for p in group["params"]:
                index += 1
                if p.grad is None:
                    continue
                state = self.state[p]
                t = state.get("step", 0)
                found = tag_of(p)
                if found is None:
                    kind, name, seed = self._untagged_kind(p), f"param{index - 1}", self.seed
                else:
                    kind, name, seed = found.kind, found.name, found.seed
                self._update(p, group, lr, kind, derive_seed(seed, stable_key(name, "grad"), t),
                             state)
                state["step"] = t + 1
        return loss
