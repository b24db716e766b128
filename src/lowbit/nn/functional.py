"""Quantized functions with a recipe argument, for code that calls ``F.linear``,
``torch.matmul`` or attention directly.

Each call builds the recipe's quantizers afresh, so these functions hold no state: delayed
scaling and QAT quantizers (which keep state) need the modules (``lowbit.nn.Linear``, ...).
Stochastic rounding draws its seeds from ``seed`` (None: a fresh 64-bit seed from torch's
generator, so ``torch.manual_seed`` makes the call reproducible).  The math of each function
is that of the module of the same name (``lowbit.nn._functions``, ``lowbit.nn.modules``).
"""

from __future__ import annotations

from typing import Iterable, Optional, Tuple, Union

import torch

from ..kernels.philox import resolve_seed
from ._functions import conv_op, linear_op, matmul_op
from ._gemm import ConvParams, check_conv_accumulate
from ._state import Call, Site
from .modules.attention import _MATMUL_SLOTS, attention_math
from .modules.base import GEMM_SLOTS
from .recipe import QuantizerRef, Recipe, Role

__all__ = ["linear", "conv1d", "conv2d", "conv3d", "conv_transpose2d", "matmul", "bmm",
           "scaled_dot_product_attention"]

IntOrTuple = Union[int, Tuple[int, ...]]


def _call(recipe: Recipe, slots: Iterable[str], seed: Optional[int], name: str = "") -> Call:
    if not isinstance(recipe, Recipe):
        raise TypeError(f"recipe must be a lowbit.nn.Recipe; got {type(recipe).__name__}")
    if recipe.overrides:
        raise ValueError("a functional call's recipe cannot have overrides")
    for role, value in recipe.roles().items():
        if isinstance(value, QuantizerRef):
            raise ValueError(f"{role}: QAT quantizers keep state; use a module, not a function")
        if isinstance(value, Role) and value.scaling is not None and value.scaling.delayed:
            raise ValueError(f"{role}: delayed scaling keeps an amax history; use a module")
    site = Site(recipe, name, slots, lambda slot: (-1, None))
    return Call(site, resolve_seed(seed), 0)


def linear(x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor] = None, *,
           recipe: Recipe, seed: Optional[int] = None) -> torch.Tensor:
    """``Q_out(Q_in(x) Q_w(W)ᵀ + Q_b(b))`` with per-GEMM quantization in backward."""
    return linear_op(_call(recipe, GEMM_SLOTS, seed), x, weight, bias)


def _tuple(value: IntOrTuple, n: int, name: str) -> Tuple[int, ...]:
    if isinstance(value, int) and not isinstance(value, bool):
        return (value,) * n
    if isinstance(value, (tuple, list)) and len(value) == n:
        return tuple(int(v) for v in value)
    raise ValueError(f"{name} must be an int or a sequence of {n} ints; got {value!r}")


def _conv(n: int, x, weight, bias, stride, padding, dilation, groups, recipe, seed,
          transposed=False, output_padding: IntOrTuple = 0) -> torch.Tensor:
    if isinstance(padding, str):
        raise ValueError("functional quantized convolutions take numeric padding; use the "
                         "module (lowbit.nn.Conv2d) for padding='same'/'valid'")
    p = ConvParams(n, _tuple(stride, n, "stride"), _tuple(padding, n, "padding"),
                   _tuple(dilation, n, "dilation"), groups, transposed,
                   _tuple(output_padding, n, "output_padding") if transposed else ())
    if recipe.accumulate is not None and recipe.accumulate.active:
        check_conv_accumulate(p)
    return conv_op(_call(recipe, GEMM_SLOTS, seed), x, weight, bias, p)


def conv1d(x, weight, bias=None, stride: IntOrTuple = 1, padding: IntOrTuple = 0,
           dilation: IntOrTuple = 1, groups: int = 1, *, recipe: Recipe,
           seed: Optional[int] = None) -> torch.Tensor:
    """``F.conv1d`` with the recipe's roles."""
    return _conv(1, x, weight, bias, stride, padding, dilation, groups, recipe, seed)


def conv2d(x, weight, bias=None, stride: IntOrTuple = 1, padding: IntOrTuple = 0,
           dilation: IntOrTuple = 1, groups: int = 1, *, recipe: Recipe,
           seed: Optional[int] = None) -> torch.Tensor:
    """``F.conv2d`` with the recipe's roles."""
    return _conv(2, x, weight, bias, stride, padding, dilation, groups, recipe, seed)


def conv3d(x, weight, bias=None, stride: IntOrTuple = 1, padding: IntOrTuple = 0,
           dilation: IntOrTuple = 1, groups: int = 1, *, recipe: Recipe,
           seed: Optional[int] = None) -> torch.Tensor:
    """``F.conv3d`` with the recipe's roles."""
    return _conv(3, x, weight, bias, stride, padding, dilation, groups, recipe, seed)


def conv_transpose2d(x, weight, bias=None, stride: IntOrTuple = 1, padding: IntOrTuple = 0,
                     output_padding: IntOrTuple = 0, groups: int = 1,
                     dilation: IntOrTuple = 1, *, recipe: Recipe,
                     seed: Optional[int] = None) -> torch.Tensor:
    """``F.conv_transpose2d`` with the recipe's roles."""
    return _conv(2, x, weight, bias, stride, padding, dilation, groups, recipe, seed,
                 transposed=True, output_padding=output_padding)


def matmul(a: torch.Tensor, b: torch.Tensor, *, recipe: Recipe,
           seed: Optional[int] = None) -> torch.Tensor:
    """``a @ b`` (both at least 2-D, batch axes broadcast): ``a`` takes the input role,
    ``b`` the weight role (``lowbit.nn._functions._MatMul``)."""
    return matmul_op(_call(recipe, _MATMUL_SLOTS, seed), a, b)


def bmm(a: torch.Tensor, b: torch.Tensor, *, recipe: Recipe,
        seed: Optional[int] = None) -> torch.Tensor:
    """``torch.bmm`` (3-D operands, equal batch) with the recipe's roles."""
    if a.dim() != 3 or b.dim() != 3 or a.shape[0] != b.shape[0]:
        raise ValueError(f"bmm needs 3-D operands with one batch size; got {tuple(a.shape)} "
                         f"and {tuple(b.shape)}")
    return matmul(a, b, recipe=recipe, seed=seed)


def scaled_dot_product_attention(q, k, v, attn_mask=None, dropout_p: float = 0.0,
                                 is_causal: bool = False, scale: Optional[float] = None, *,
                                 recipe: Recipe, seed: Optional[int] = None) -> torch.Tensor:
    """Attention on the math path with both GEMMs quantized
    (``lowbit.nn.modules.attention``); a recipe that sets nothing calls
    ``F.scaled_dot_product_attention``."""
    if not recipe.active:
        return torch.nn.functional.scaled_dot_product_attention(
            q, k, v, attn_mask=attn_mask, dropout_p=dropout_p, is_causal=is_causal,
            scale=scale)
    if is_causal and attn_mask is not None:
        raise ValueError("pass either attn_mask or is_causal=True (as torch)")
    if is_causal:
        attn_mask = torch.ones(q.shape[-2], k.shape[-2], dtype=torch.bool,
                               device=q.device).tril()
    base = resolve_seed(seed)
    qk = _call(recipe, _MATMUL_SLOTS, base, "qk")
    pv = _call(recipe, _MATMUL_SLOTS, base, "pv")
    return attention_math(qk, pv, q, k, v, attn_mask, dropout_p, scale)[0]
