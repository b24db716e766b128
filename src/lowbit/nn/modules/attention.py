"""Attention and matmul call sites.

``MatMul`` and ``ScaledDotProductAttention`` are parameter-free modules that call
``torch.matmul`` and ``F.scaled_dot_product_attention``; a model that calls them (as
``lowbit.models``' GPT does) gives ``convert`` a place to quantize.  Their quantized classes,
and the one of ``nn.MultiheadAttention``, compute attention on the math path

    S = Q_out(Q_in(q) Q_w(kᵀ)) · scale + mask,   P = dropout(softmax(S)),
    O = Q_out(Q_in(P) Q_w(v))

with the two GEMMs as sites ``qk`` and ``pv`` (each with the recipe's matmul roles:
``input`` the left operand, ``weight`` the right one, ``grad_input``/``grad_weight`` their
gradients; ``lowbit.nn._functions._MatMul``).  Softmax and masking stay in fp32.
"""

from __future__ import annotations

import math
from typing import Optional, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from .._functions import linear_op, matmul_op
from .._state import Call, QuantState
from ..recipe import Recipe
from .base import GEMM_SLOTS, QuantizedModule, register

__all__ = ["MatMul", "ScaledDotProductAttention", "QuantizedMatMul",
           "QuantizedScaledDotProductAttention", "QuantizedMultiheadAttention",
           "attention_math"]

_MATMUL_SLOTS = tuple(s for s in GEMM_SLOTS if s not in ("bias", "grad_bias"))


def _last_axis(slot: str) -> Tuple[int, Optional[int]]:
    return -1, None


class MatMul(nn.Module):
    """``torch.matmul(a, b)`` as a module, so that ``convert`` can quantize the call."""

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return torch.matmul(a, b)


class ScaledDotProductAttention(nn.Module):
    """``F.scaled_dot_product_attention`` as a module, so that ``convert`` can quantize the
    call (same arguments)."""

    def forward(self, q, k, v, attn_mask=None, dropout_p: float = 0.0, is_causal: bool = False,
                scale: Optional[float] = None) -> torch.Tensor:
        return F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, dropout_p=dropout_p,
                                              is_causal=is_causal, scale=scale)


@register(MatMul)
class QuantizedMatMul(QuantizedModule, MatMul):
    """``a @ b`` with the recipe's matmul roles (channel axes: the last axis)."""

    _lowbit_slots = _MATMUL_SLOTS

    def _lowbit_layout(self, slot: str) -> Tuple[int, Optional[int]]:
        return -1, None

    def __init__(self, *, recipe: Optional[Recipe] = None, name: str = "", seed: int = 0):
        MatMul.__init__(self)
        self._lowbit_init(recipe, name, seed)

    def _lowbit_forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return matmul_op(self.lowbit.call(), a, b)


def attention_math(qk: Call, pv: Call, q, k, v, mask: Optional[torch.Tensor] = None,
                   dropout_p: float = 0.0, scale: Optional[float] = None) -> Tuple[
                       torch.Tensor, torch.Tensor]:
    """``(O, P)`` of the math path above; ``mask`` is additive (float) or boolean (True =
    attend, as ``F.scaled_dot_product_attention``)."""
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
    s = matmul_op(qk, q, k.transpose(-2, -1)) * scale
    if mask is not None:
        s = s.masked_fill(~mask, float("-inf")) if mask.dtype == torch.bool else s + mask
    p = torch.softmax(s, dim=-1)
    if dropout_p > 0.0:
        p = F.dropout(p, dropout_p, training=True)
    return matmul_op(pv, p, v), p


def _causal(q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    return torch.ones(q.shape[-2], k.shape[-2], dtype=torch.bool, device=q.device).tril()


@register(ScaledDotProductAttention)
class QuantizedScaledDotProductAttention(QuantizedModule, ScaledDotProductAttention):
    """Scaled dot-product attention on the math path with quantized GEMMs (sites ``qk`` and
    ``pv``)."""

    _lowbit_slots = ()

    def __init__(self, *, recipe: Optional[Recipe] = None, name: str = "", seed: int = 0):
        ScaledDotProductAttention.__init__(self)
        self._lowbit_init(recipe, name, seed)

    def _lowbit_sites(self, state: QuantState) -> None:
        state.add_site("qk", _MATMUL_SLOTS, _last_axis)
        state.add_site("pv", _MATMUL_SLOTS, _last_axis)

    def _lowbit_forward(self, q, k, v, attn_mask=None, dropout_p: float = 0.0,
                        is_causal: bool = False, scale: Optional[float] = None) -> torch.Tensor:
        if is_causal and attn_mask is not None:
            raise ValueError("pass either attn_mask or is_causal=True (as torch)")
        state = self.lowbit
        step = state.advance()
        mask = _causal(q, k) if is_causal else attn_mask
        out, _ = attention_math(Call(state.qk, state.seed, step), Call(state.pv, state.seed, step),
                                q, k, v, mask, dropout_p, scale)
        return out


_MHA_SITES = ("q_proj", "k_proj", "v_proj", "out_proj")


def _linear_layout(slot: str) -> Tuple[int, Optional[int]]:
    return (0 if slot in ("weight", "bias", "grad_weight", "grad_bias") else -1), None


@register(nn.MultiheadAttention)
class QuantizedMultiheadAttention(QuantizedModule, nn.MultiheadAttention):
    """``nn.MultiheadAttention`` with quantized projections (sites ``q_proj``, ``k_proj``,
    ``v_proj``, ``out_proj``, each a linear layer) and attention (``qk``, ``pv``).

    ``add_bias_kv`` and ``add_zero_attn`` are not supported.  Returns ``(output, weights)``
    as torch; the weights are the attention probabilities after dropout, averaged over heads
    when ``average_attn_weights``.
    """

    _lowbit_slots = ()
    _lowbit_owns_children = True

    @classmethod
    def _lowbit_check(cls, module: nn.Module, recipe: Recipe) -> None:
        if module.bias_k is not None or module.add_zero_attn:
            raise NotImplementedError("quantized MultiheadAttention does not support "
                                      "add_bias_kv or add_zero_attn; override it to None")

    def _lowbit_sites(self, state: QuantState) -> None:
        for name in _MHA_SITES:
            state.add_site(name, GEMM_SLOTS, _linear_layout)
        state.add_site("qk", _MATMUL_SLOTS, _last_axis)
        state.add_site("pv", _MATMUL_SLOTS, _last_axis)

    def _weights(self) -> Tuple[torch.Tensor, ...]:
        if self._qkv_same_embed_dim:
            wq, wk, wv = self.in_proj_weight.chunk(3)
        else:
            wq, wk, wv = self.q_proj_weight, self.k_proj_weight, self.v_proj_weight
        b = self.in_proj_bias
        bq, bk, bv = (None, None, None) if b is None else b.chunk(3)
        return wq, wk, wv, bq, bk, bv

    def _mask(self, attn_mask, key_padding_mask, n: int, L: int, S: int, like: torch.Tensor):
        mask = torch.zeros(n, self.num_heads, L, S, dtype=like.dtype, device=like.device)
        if attn_mask is not None:
            m = attn_mask.reshape(-1, self.num_heads, L, S) if attn_mask.dim() == 3 else attn_mask
            mask = (mask.masked_fill(m, float("-inf")) if m.dtype == torch.bool
                    else mask + m)
        if key_padding_mask is not None:
            kp = key_padding_mask.reshape(n, 1, 1, S)
            mask = (mask.masked_fill(kp, float("-inf")) if kp.dtype == torch.bool
                    else mask + kp)
        return mask

    def _lowbit_forward(self, query, key, value, key_padding_mask=None,
                        need_weights: bool = True, attn_mask=None,
                        average_attn_weights: bool = True, is_causal: bool = False):
        state = self.lowbit
        step = state.advance()
        calls = {n: Call(getattr(state, n), state.seed, step) for n in _MHA_SITES + ("qk", "pv")}
        batched = query.dim() == 3
        if not batched:
            query, key, value = query.unsqueeze(1), key.unsqueeze(1), value.unsqueeze(1)
            if key_padding_mask is not None:
                key_padding_mask = key_padding_mask.unsqueeze(0)
        if not self.batch_first:
            query, key, value = (t.transpose(0, 1) for t in (query, key, value))
        n, L, _ = query.shape
        S = key.shape[1]
        wq, wk, wv, bq, bk, bv = self._weights()
        h, d = self.num_heads, self.head_dim
        q = linear_op(calls["q_proj"], query, wq, bq).reshape(n, L, h, d).transpose(1, 2)
        k = linear_op(calls["k_proj"], key, wk, bk).reshape(n, S, h, d).transpose(1, 2)
        v = linear_op(calls["v_proj"], value, wv, bv).reshape(n, S, h, d).transpose(1, 2)
        if is_causal and attn_mask is None:
            attn_mask = ~torch.ones(L, S, dtype=torch.bool, device=query.device).tril()
        mask = self._mask(attn_mask, key_padding_mask, n, L, S, q)
        dropout = self.dropout if self.training else 0.0
        o, p = attention_math(calls["qk"], calls["pv"], q, k, v, mask, dropout)
        o = o.transpose(1, 2).reshape(n, L, h * d)
        out = linear_op(calls["out_proj"], o, self.out_proj.weight, self.out_proj.bias)
        if not self.batch_first:
            out = out.transpose(0, 1)
        if not batched:
            out = out.squeeze(1)
        weights = None
        if need_weights:
            weights = p.mean(dim=1) if average_attn_weights else p
            weights = weights if batched else weights.squeeze(0)
        return out, weights
