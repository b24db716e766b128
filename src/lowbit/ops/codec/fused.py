"""One-pass encode and decode where they apply: numba on the CPU (``cpu``), Triton on CUDA
(``gpu``); the per-format constants of both, computed from ``scalar``'s specification so the
kernels hold no format knowledge.

``encode_fused`` rounds and packs in one pass for:

* float formats of at most 16 bits whose finite values are fp32 numbers with fp32's exponent
  range or a narrower one (``fp32_exact``; ``2^(man - emin)`` an fp32 normal or ``emin =
  -126``), fixed point and integers of at most 16 bits with an fp32-normal step;
* block formats with such elements and blocks along the last axis (whole rows included):
  power-of-two rules with scale exponents from ``-149`` up, and the AMAX rule (NVFP4, and
  one-level) with float elements and an unsigned float scale of at most 8 bits.  The CPU
  takes ragged last blocks; Triton takes blocks of a power of two >= 4 dividing the rows.

Triton also needs 4-, 6-, 8- or 16-bit codes.  ``decode_fused`` covers the same formats.
Everything else, and every call that must raise (NaN without a NaN code under
``nan="raise"``, a value outside an unclamped fixed-point word, a NaN block without a scale
NaN code), returns None: the caller then takes the general path, which gives the same bits
(``tests/ops/test_codec_fast.py`` compares the two) or the error.
"""

from __future__ import annotations

import functools
from typing import Optional, Tuple

import numpy as np
import torch

from ...formats import BlockFormat, FixedPoint, FloatFormat, IntFormat, Rounding, ScaleRule
from ...kernels.reference.block import normalize_axes
from ...kernels.reference.blockscale import _scale_range
from .fast import _native_dtype, _value_table
from .scalar import (
    decode_exp, decode_float, encode_float, encode_general, fp32_exact, fp32_parts,
    has_nan_code, nan_zero_code, pow2,
)

__all__ = ["encode_fused", "decode_fused", "code_consts", "pow2_scales", "scale_nan_code", "layout",
           "block_ok", "sentinels", "decode_table", "scale_table", "i32"]

_SENTINEL = 1 << 16  # NAN_CODE of the kernels: no NaN code, counted
#: CUDA tensors take the Triton kernels by default.  Off until ``pytest -m gpu
#: tests/ops/test_codec_fast.py`` has passed on a GPU (the kernels are tested in Triton's
#: interpreter only); ``triton=True`` forces them.
GPU_DEFAULT = False


def i32(v: int) -> np.int32:
    """A 32-bit pattern (or small int) as the np.int32 with its low 32 bits."""
    return np.uint32(int(v) & 0xFFFFFFFF).view(np.int32)


def _f32_bits(v: float) -> int:
    return int(np.array(v, dtype=np.float32).view(np.int32))


def _code_of(fmt, value: float) -> int:
    return int(encode_general(torch.tensor([value], dtype=torch.float32), fmt)[0])


@functools.lru_cache(maxsize=None)
def code_consts(fmt) -> Optional[Tuple[bool, tuple, int]]:
    """(float element, the kernels' ``cc`` tuple, NaN-as-zero code) or None where the fused
    kernels do not apply."""
    if isinstance(fmt, FloatFormat):
        if not fp32_exact(fmt) or fmt.bits > 16 or (
                fmt.emin != -126 and fmt.man - fmt.emin > 127):
            return None
        sub_t = 0 if fmt.emin == -126 else (fmt.emin + 127) << 23
        sign_bit = 1 << (fmt.bits - 1) if fmt.signed else 0
        top = float("inf") if fmt.has_inf else fmt.max  # Inf without an Inf code: ±max
        inf_p, inf_n = _code_of(fmt, top), _code_of(fmt, -top)
        if has_nan_code(fmt):
            nan_p, nan_n = _code_of(fmt, float("nan")), _code_of(fmt, -float("nan"))
        else:
            nan_p = nan_n = _SENTINEL
        cc = (sub_t, _f32_bits(2.0 ** (fmt.man - fmt.emin)) if sub_t else 0, 23 - fmt.man,
              (127 - fmt.bias) << fmt.man, sign_bit, inf_p, inf_n, nan_p, nan_n)
        return True, tuple(i32(v) for v in cc), nan_zero_code(fmt)
    if isinstance(fmt, (FixedPoint, IntFormat)):
        if not fp32_exact(fmt) or fmt.bits > 16:
            return None
        cc = (_f32_bits(2.0 ** -fmt.quantum_exp), _f32_bits(fmt.qmin), _f32_bits(fmt.qmax),
              (1 << fmt.bits) - 1, int(fmt.clamp), 0, 0, 0, 0)
        return False, tuple(i32(v) for v in cc), nan_zero_code(fmt)
    return None


@functools.lru_cache(maxsize=64)
def pow2_scales(fmt: BlockFormat) -> np.ndarray:
    """Row ``k - lowest k``: (scale code of 2^k, bits of 2^clamp(-k), of 2^(-k - 127) or 1):
    the two exact factors of ``block._pow2_elements``."""
    lo, hi = _scale_range(fmt)
    k = torch.arange(lo, hi + 1, dtype=torch.int32)
    s = fmt.scale
    if isinstance(s, FloatFormat):
        codes = encode_float(torch.ones(k.shape), s, -k)
    else:
        codes = k + s.bias
    m1 = pow2((-k).clamp(-149, 127))
    m2 = pow2((-k - 127).clamp(0, 127))
    return torch.stack([codes, m1.view(torch.int32), m2.view(torch.int32)], 1).numpy().copy()


def scale_nan_code(fmt: BlockFormat, nan: str) -> Optional[int]:
    """The scale code of a block holding NaN or ±Inf (``block._scale_nan``), or None where
    that must raise."""
    s = fmt.scale
    if not isinstance(s, FloatFormat):
        return 2**s.bits - 1
    if has_nan_code(s):
        return _code_of(s, float("nan"))
    return 0 if nan == "zero" else None


def sentinels(fmt) -> bool:
    """Codes may hold the kernels' sentinels: values outside an unclamped fixed-point word,
    NaN in a format without a NaN code (no block element: such blocks are stored as NaN)."""
    elem = fmt.element if isinstance(fmt, BlockFormat) else fmt
    if isinstance(elem, FixedPoint) and not elem.clamp:
        return True
    return not (has_nan_code(elem) or isinstance(fmt, BlockFormat))


def layout(fmt: BlockFormat, shape) -> Optional[Tuple[int, int]]:
    """(row length L, block size) for blocks along the last axis (whole rows included, a
    ragged last block allowed), else None."""
    if len(shape) == 0 or shape[-1] == 0:
        return None
    sizes, axes = normalize_axes(fmt, len(shape))
    if axes != (len(shape) - 1,) or (sizes is None and len(shape) == 1):
        return None  # other axes, tiles, or one block for the whole tensor
    return shape[-1], (shape[-1] if sizes is None else min(sizes[0], shape[-1]))


def block_ok(fmt: BlockFormat) -> bool:
    """The block rules the fused kernels serve (elements aside)."""
    e, s = fmt.element, fmt.scale
    if fmt.scale_rule is ScaleRule.AMAX:
        return (isinstance(e, FloatFormat) and isinstance(s, FloatFormat) and not s.signed
                and code_consts(s) is not None and s.bits <= 8)
    return _scale_range(fmt)[0] >= -149 and s.bits <= 16


# -- decoding ----------------------------------------------------------------------------------
@functools.lru_cache(maxsize=None)
def decode_table(fmt) -> np.ndarray:
    """fp32 bits of every code, as the general decode gives them (torch's widening cast for
    the formats with a torch dtype, else ``fast._value_table``)."""
    native = _native_dtype(fmt)
    if native is not None:
        raw = torch.arange(2**fmt.bits, dtype=torch.int32)
        raw = raw.to(torch.uint8) if fmt.bits == 8 else raw.to(torch.int16)
        vals = raw.view(native).float()
    else:
        vals = _value_table(fmt)
    return vals.view(torch.int32).numpy().copy()


@functools.lru_cache(maxsize=None)
def scale_table(fmt: BlockFormat) -> Tuple[np.ndarray, np.ndarray]:
    """(fp32 bits per scale code: the power-of-two factor or the scale value, NaN for NaN
    codes; which codes the table serves, as ``block.decode_block`` takes its fast path)."""
    s = fmt.scale
    sc = torch.arange(2**s.bits, dtype=torch.int32)
    if not isinstance(s, FloatFormat):
        s_nan = sc == 2**s.bits - 1
        s_val = decode_exp(sc, s)
        k = sc - s.bias
    else:
        s_val = decode_float(sc, s)
        s_nan = torch.isnan(s_val)
        k = fp32_parts(s_val)[1]
    if fmt.scale_rule is ScaleRule.AMAX:
        val, ok = s_val, torch.ones_like(s_nan)
    else:
        val, ok = pow2(k.clamp(-149, 127)), (k >= -149) | s_nan
    val = torch.where(s_nan, float("nan"), val)
    return val.view(torch.int32).numpy().copy(), ok.numpy().copy()


def _covered(fmt, shape) -> bool:
    elem = fmt.element if isinstance(fmt, BlockFormat) else fmt
    if code_consts(elem) is None:
        return False
    return not isinstance(fmt, BlockFormat) or (block_ok(fmt) and layout(fmt, shape) is not None)


def encode_fused(x: torch.Tensor, fmt, rounding: Rounding, rbits: int, seed: Optional[int],
                 nan: str, *, triton: Optional[bool] = None):
    """(packed codes, scale codes or an empty tensor, tensor scale or an empty tensor) as
    ``_encode_op`` returns them, or None (see the module).  ``triton``: the Triton kernels
    (default on CUDA; on CPU tensors they run in Triton's interpreter, for tests)."""
    if x.numel() == 0 or not _covered(fmt, tuple(x.shape)):
        return None
    if triton if triton is not None else x.is_cuda and GPU_DEFAULT:
        from .gpu import encode_triton

        return encode_triton(x, fmt, rounding, rbits, seed, nan)
    if x.device.type != "cpu":
        return None
    from .cpu import encode_cpu

    return encode_cpu(x, fmt, rounding, rbits, seed, nan)


def decode_fused(codes: torch.Tensor, scales: Optional[torch.Tensor],
                 tensor_scale: Optional[torch.Tensor], fmt, shape, *,
                 triton: Optional[bool] = None) -> Optional[torch.Tensor]:
    """fp32 tensor of ``shape`` decoded from the packed stream, or None (see the module)."""
    if not _covered(fmt, tuple(shape)) or 0 in tuple(shape):
        return None
    if triton if triton is not None else codes.is_cuda and GPU_DEFAULT:
        from .gpu import decode_triton

        return decode_triton(codes, scales, tensor_scale, fmt, tuple(shape))
    if codes.device.type != "cpu":
        return None
    from .cpu import decode_cpu

    return decode_cpu(codes, scales, tensor_scale, fmt, tuple(shape))
