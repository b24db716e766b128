"""Slow tier: MX and NVFP4 presets against torchao's own reference (``to_mx`` and
``nvfp4_quantize``), bit for bit on the dequantized values.

Inputs avoid the two places where lowbit keeps the definition over torchao's CPU fallback
(see ``lowbit.kernels.reference.blockscale``): block amax below 2^-100 (torchao's code-0
scale) and RCEIL ratios just above a power of two (torchao's ``log2f``).
"""

from __future__ import annotations

import pytest
import torch

import lowbit as lb
from lowbit.formats import PRESETS, BlockFormat

pytestmark = pytest.mark.slow
torchao = pytest.importorskip("torchao")
mx_tensor = pytest.importorskip("torchao.prototype.mx_formats.mx_tensor")
nvfp4 = pytest.importorskip("torchao.prototype.mx_formats.nvfp4_tensor")
kernels = pytest.importorskip("torchao.prototype.mx_formats.kernels")
from torchao.prototype.mx_formats.config import ScaleCalculationMode  # noqa: E402

ELEMENTS = {
    "mxfp8_e4m3": torch.float8_e4m3fn,
    "mxfp8_e5m2": torch.float8_e5m2,
    "mxfp6_e3m2": "fp6_e3m2",
    "mxfp6_e2m3": "fp6_e2m3",
    "mxfp4": torch.float4_e2m1fn_x2,
}


def _data(rows: int, cols: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    scale = torch.exp2(torch.randint(-40, 40, (rows, 1), generator=g).float())
    x = torch.randn(rows, cols, generator=g) * scale
    x[0, :5] = torch.tensor([957.0, 0.0, -0.0, 3.0, -448.0])
    return x


@pytest.mark.parametrize("rule", ["floor", "ceil", "even", "rceil"])
@pytest.mark.parametrize("name", list(ELEMENTS))
def test_mx_matches_torchao(name, rule):
    x = _data(512, 64, seed=hash((name, rule)) % 1000)
    preset = PRESETS[name]
    fmt = BlockFormat(preset.element, scale=preset.scale, block_size=32, scale_rule=rule)
    mode = ScaleCalculationMode(rule)
    scale, data = mx_tensor.to_mx(x, ELEMENTS[name], 32, mode)
    want = mx_tensor.to_dtype(data, scale, ELEMENTS[name], 32, torch.float32)
    got = lb.quantize(x, fmt)
    assert torch.equal(got, want.view(x.shape))


@pytest.mark.parametrize("two_level", [False, True])
def test_nvfp4_matches_torchao(two_level):
    x = _data(256, 64, seed=7) if two_level else _data(256, 64, seed=8).clamp(-2000, 2000)
    fmt = PRESETS["nvfp4"]
    if not two_level:
        fmt = BlockFormat(fmt.element, scale=fmt.scale, block_size=16, scale_rule="amax")
        x = x / x.abs().amax(dim=1, keepdim=True) * 100.0  # keep block scales in UE4M3 range
    p = nvfp4.per_tensor_amax_to_scale(x.abs().amax()) if two_level else None
    scales, packed = nvfp4.nvfp4_quantize(x, 16, per_tensor_scale=p)
    codes = kernels.unpack_uint4(packed.view(torch.uint8))
    elems = kernels.f4_unpacked_to_f32(codes).view(x.shape[0], -1, 16)
    s8 = scales.view(torch.float8_e4m3fn).float().view(x.shape[0], -1, 1)
    hp = p * s8 if two_level else s8
    want = (elems * hp).view(x.shape)
    assert torch.equal(lb.quantize(x, fmt), want)
