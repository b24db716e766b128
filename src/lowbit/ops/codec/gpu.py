"""The Triton side of the one-pass codec (``lowbit.kernels.triton._codec``): see ``fused``.

Served: codes of 4, 6, 8 or 16 bits; elementwise formats, and blocks along the last axis whose
size is a power of two >= 4 dividing the rows (MX's 32, NVFP4's 16).  The sentinel counts are
read back only for formats that can produce them (as the general path reads its NaN check).
"""

from __future__ import annotations

import functools
from typing import Optional, Tuple

import torch

from ...formats import BlockFormat, ScaleRule
from ...kernels.reference.blockscale import MIN_TENSOR_SCALE
from .bitstream import packed_nbytes
from .block import grid_shape
from .fused import (
    code_consts, decode_table, layout, pow2_scales, scale_nan_code, scale_table, sentinels,
)

__all__ = ["encode_triton", "decode_triton"]

_RULE_CODE = {ScaleRule.FLOOR: 0, ScaleRule.CEIL: 1, ScaleRule.EVEN: 2, ScaleRule.RCEIL: 3,
              ScaleRule.AMAX: 4}
_MAX_BLOCK = 1024


def _block_size(fmt, shape: Tuple[int, ...]) -> Optional[int]:
    """0 for elementwise formats, the block size where the kernels take the layout, else
    None."""
    elem = fmt.element if isinstance(fmt, BlockFormat) else fmt
    if elem.bits not in (4, 6, 8, 16):
        return None
    if not isinstance(fmt, BlockFormat):
        return 0
    L, bs = layout(fmt, shape)
    if bs < 4 or bs > _MAX_BLOCK or bs & (bs - 1) or L % bs:
        return None
    return bs


@functools.lru_cache(maxsize=None)
def _on(kind: str, fmt, device: torch.device) -> torch.Tensor:
    """Per-format tables on ``device``: element values, scale factors, scale codes."""
    if kind == "values":
        return torch.from_numpy(decode_table(fmt)).to(device)
    if kind == "factors":
        return torch.from_numpy(scale_table(fmt)[0]).to(device)
    return torch.from_numpy(pow2_scales(fmt)[:, 0].copy()).to(device)


def _tensor_scale(x: torch.Tensor, fmt: BlockFormat, tile: int):
    """NVFP4's ``p`` (0-d) and (p, 1/p) as ``block._amax_scales`` computes them, on the
    device: the amax by ``_block``'s ``_amax_kernel``, no read-back."""
    import triton

    from ...kernels.triton import _launch

    amax = torch.zeros(1, dtype=torch.int32, device=x.device)
    with _launch.device_guard(x):
        _launch.kernel(x.device, "block", "_amax_kernel")[(triton.cdiv(x.numel(), tile),)](
            x, amax, x.numel(), ROWS=tile // 4, num_warps=_launch.NUM_WARPS)
    p = (amax.view(torch.float32)[0] / (fmt.scale.max * fmt.element.max))
    p = p.clamp(min=MIN_TENSOR_SCALE)
    return p, torch.stack([p, 1.0 / p])


def encode_triton(x: torch.Tensor, fmt, rounding, rbits: int, seed: Optional[int], nan: str):
    """``fused.encode_fused`` through the Triton kernels, or None where they do not apply."""
    from ...kernels.triton import _block as tblock, _codec as tcodec

    block = _block_size(fmt, tuple(x.shape))
    elem = fmt.element if isinstance(fmt, BlockFormat) else fmt
    snan = scale_nan_code(fmt, nan) if block else 0
    if block is None or snan is None:
        return None
    _, cc, nan_zero = code_consts(elem)
    x = x.detach().to(torch.float32).contiguous()
    n, dev, b = x.numel(), x.device, elem.bits
    out = torch.empty(packed_nbytes(n, b), dtype=torch.uint8, device=dev)
    counts = torch.zeros(2, dtype=torch.int32, device=dev)
    elem_args, elem_flags = tblock._element_args(elem)
    dummy = torch.zeros(2, dtype=torch.float32, device=dev)
    scodes, stable, pts, p = torch.zeros(1, dtype=torch.int32, device=dev), counts, dummy, None
    rule, rule_args, scc = 0, (0,) * 10, (0,) * 9
    if block:
        scodes = torch.empty(n // block, dtype=torch.int32, device=dev)
        rule, rule_args = _RULE_CODE[fmt.scale_rule], tblock._rule_args(fmt)
        if fmt.scale_rule is ScaleRule.AMAX:
            scc = code_consts(fmt.scale)[1]
            if fmt.tensor_scale:
                p, pts = _tensor_scale(x, fmt, tcodec._tile(x, n, 4))
        else:
            stable = _on("codes", fmt, dev)
    tcodec.encode(x, out.view(torch.int16) if b == 16 else out, scodes, counts, stable, pts,
                  rounding=rounding, rbits=rbits, seed=seed, rule=rule, rule_args=rule_args,
                  elem_args=elem_args, elem_flags=elem_flags, code_args=tuple(map(int, cc)),
                  scale_code_args=tuple(map(int, scc)), nan_zero=int(nan_zero),
                  scale_nan=snan, bits=b, check=sentinels(fmt), block=block,
                  tensor_scale=p is not None)
    if sentinels(fmt):
        nans, outside = counts.tolist()
        if (nans and nan != "zero") or outside:
            return None  # the general path raises the error
    if not block:
        return out, torch.zeros(0, dtype=torch.uint8, device=dev), torch.zeros(0, device=dev)
    sdtype = torch.uint8 if fmt.scale.bits <= 8 else torch.int32
    scales = scodes.view(grid_shape(fmt, tuple(x.shape))).to(sdtype)
    return out, scales, p if p is not None else torch.zeros(0, device=dev)


def decode_triton(codes: torch.Tensor, scales: Optional[torch.Tensor],
                  tensor_scale: Optional[torch.Tensor], fmt, shape) -> Optional[torch.Tensor]:
    """``fused.decode_fused`` through the Triton kernels, or None where they do not apply."""
    from ...kernels.triton import _codec as tcodec

    block = _block_size(fmt, shape)
    elem = fmt.element if isinstance(fmt, BlockFormat) else fmt
    if block is None or (block and not scale_table(fmt)[1].all()):
        return None
    dev = codes.device
    y = torch.empty(shape, dtype=torch.float32, device=dev)
    kw = {}
    if block:
        ts = tensor_scale.reshape(1).float() if fmt.tensor_scale else torch.ones(1, device=dev)
        kw = dict(scodes=scales.reshape(-1).to(torch.int32), stable=_on("factors", fmt, dev),
                  ts=ts, block=block)
    tcodec.decode(codes, _on("values", elem, dev), y.view(-1), bits=elem.bits, **kw)
    return y
