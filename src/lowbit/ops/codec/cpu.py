"""The numba side of the one-pass codec (``lowbit.kernels.cpu._codec``): see ``fused``."""

from __future__ import annotations

import functools
from typing import Optional

import numpy as np
import torch

from ...formats import BlockFormat, FloatFormat, Rounding, ScaleRule
from ...kernels.reference.blockscale import MIN_TENSOR_SCALE
from .bitstream import packed_nbytes
from .block import grid_shape
from .fused import (
    code_consts, decode_table, i32, layout, pow2_scales, scale_nan_code, scale_table, sentinels,
)

__all__ = ["encode_cpu", "decode_cpu"]


def _kernels():
    """The numba module, or None without numba (imported on first use: it compiles)."""
    try:
        from ...kernels.cpu import _block, _codec, _decode, _params, _scalar
    except ModuleNotFoundError as err:
        if (err.name or "").split(".")[0] in ("numba", "llvmlite"):
            return None
        raise
    return _block, _codec, _params, _scalar, _decode


@functools.lru_cache(maxsize=64)
def _elem_table(fmt, rounding: Rounding) -> np.ndarray:
    """One row in ``_block.float_table`` / ``fixed_table`` layout: ``fmt``'s grid unshifted."""
    params = _kernels()[2]
    if isinstance(fmt, FloatFormat):
        return np.array([params.i32_tuple(sum(params.float_params(fmt, rounding), ()))],
                        dtype=np.int32)
    q150, q_bits, lo, hi, keep = params.fixed_params(fmt, rounding)
    row = (q150, q_bits, params.f32_bits(lo), params.f32_bits(hi), keep)
    return np.array([params.i32_tuple(row)], dtype=np.int32)


def encode_cpu(x: torch.Tensor, fmt, rounding: Rounding, rbits: int, seed: Optional[int],
               nan: str):
    """``fused.encode_fused`` on a CPU tensor of a covered format and layout."""
    if _kernels() is None:
        return None
    block, codec, params, scalar, _ = _kernels()
    elem = fmt.element if isinstance(fmt, BlockFormat) else fmt
    float_elem, cc, nan_zero = code_consts(elem)
    if not sentinels(fmt):
        nan_zero = -1
    b = elem.bits
    n = x.numel()
    xi = x.detach().to(torch.float32).contiguous().view(-1).view(torch.int32).numpy()
    out = np.empty(packed_nbytes(n, b), dtype=np.uint8)
    mode = scalar.MODE_CODES[rounding.value]
    seed = seed or 0
    k0, k1 = seed & 0xFFFFFFFF, seed >> 32
    topmask = i32((0xFFFFFFFF << (32 - rbits)) & 0xFFFFFFFF)
    ntask = max(1, -(-n // codec.SUB) // 16)
    empty8 = torch.zeros(0, dtype=torch.uint8)
    if not isinstance(fmt, BlockFormat):
        counts = np.zeros((ntask, 3), dtype=np.int64)
        codec.encode_kernel(xi, out, np.empty(0, np.uint16), np.empty(0, np.int32), mode, k0,
                            k1, topmask, 0, 0, (0, 0, 0, 0, 0, 0), _elem_table(elem, rounding),
                            np.zeros((1, 3), np.int32), cc, float_elem, elem.emin < -126
                            if float_elem else False, b, nan_zero, 0, counts)
        if counts[:, 0].any() and nan != "zero" or counts[:, 1].any():
            return None  # the general path raises the error
        return torch.from_numpy(out), empty8, torch.zeros(0)
    L, bs = layout(fmt, x.shape)
    nblocks = (n // L) * -(-L // bs)
    ntask = max(1, min(nblocks, -(-n // codec.CHUNK)))
    counts = np.zeros((ntask, 3), dtype=np.int64)
    scodes = np.empty(nblocks, dtype=np.int32)
    direct = (L * b) % 8 == 0 and (bs * b) % 8 == 0
    raw = np.empty(0 if direct else n, dtype=np.uint16)
    snan = scale_nan_code(fmt, nan)
    ts = torch.zeros(0)
    if fmt.scale_rule is ScaleRule.AMAX:
        ts = _encode_amax(xi, out, raw, scodes, fmt, mode, k0, k1, topmask, L, bs, cc, b, snan,
                          counts, rounding)
    else:
        table = (block.float_table if float_elem else block.fixed_table)(fmt, rounding)
        codec.encode_kernel(xi, out, raw, scodes, mode, k0, k1, topmask, L, bs,
                            block.rule_params(fmt), table, pow2_scales(fmt), cc, float_elem,
                            True, b, nan_zero, 0 if snan is None else snan, counts)
    if (counts[:, 0].any() and nan != "zero") or counts[:, 1].any() \
            or (counts[:, 2].any() and snan is None):
        return None
    if not direct:
        codec.pack_kernel(raw, out, b)
    grid = grid_shape(fmt, tuple(x.shape))
    sdtype = torch.uint8 if fmt.scale.bits <= 8 else torch.int32
    scales = torch.from_numpy(scodes).view(grid).to(sdtype)
    return torch.from_numpy(out), scales, ts


def _encode_amax(xi, out, raw, scodes, fmt: BlockFormat, mode, k0, k1, topmask, L, bs, cc, b,
                 snan, counts, rounding):
    """The AMAX kernel with its tensor scale ``p`` (as ``block._amax_scales``); returns ``p``
    (an empty tensor for one-level formats)."""
    block, codec, params, _, _ = _kernels()
    s, e = fmt.scale, fmt.element
    one = torch.ones((), dtype=torch.float32)
    p, recip = one, one
    if fmt.tensor_scale:
        m = int(block.absmax_bits(xi))
        amax = torch.tensor(m, dtype=torch.int32).view(torch.float32)
        p = (amax / (s.max * e.max)).clamp(min=MIN_TENSOR_SCALE)
        recip = 1.0 / p
    f32 = np.float32
    consts = (f32(e.max), f32(p.item()), f32(recip.item()), f32(s.min_normal),
              f32(min(s.max, 3.0e38)), bool(fmt.tensor_scale))
    sc = np.array(params.i32_tuple(sum(params.float_params(s, Rounding.NEAREST), ())),
                  dtype=np.int32)
    etable = _elem_table(e, rounding)
    scc = code_consts(s)[1]
    zero_all = bool(torch.isnan(p))
    codec.encode_amax_kernel(xi, out, raw, scodes, mode, k0, k1, topmask, L, bs, etable, sc,
                             consts, cc, scc, b, 0 if snan is None else snan, zero_all, counts)
    return p if fmt.tensor_scale else torch.zeros(0)



# -- decoding ----------------------------------------------------------------------------------
def decode_cpu(codes: torch.Tensor, scales: Optional[torch.Tensor],
               tensor_scale: Optional[torch.Tensor], fmt, shape) -> Optional[torch.Tensor]:
    """``fused.decode_fused`` on CPU tensors of a covered element format."""
    if _kernels() is None:
        return None
    elem = fmt.element if isinstance(fmt, BlockFormat) else fmt
    codec = _kernels()[4]
    y = torch.empty(shape, dtype=torch.float32)
    yi = y.view(-1).view(torch.int32).numpy()
    data = codes.numpy()
    if not isinstance(fmt, BlockFormat):
        codec.decode_kernel(data, yi, decode_table(elem), elem.bits)
        return y
    if fmt.scale.bits > 16 or layout(fmt, shape) is None:
        return None
    L, bs = layout(fmt, shape)
    stable, ok = scale_table(fmt)
    sc = scales.reshape(-1).to(torch.int32).numpy()
    if not ok[sc].all():
        return None
    ts = np.float32(tensor_scale.item()) if fmt.tensor_scale else np.float32(1.0)
    codec.decode_block_kernel(data, sc, yi, decode_table(elem), stable, L, bs, ts, elem.bits)
    return y
