"""ONNX QuantizeLinear/DequantizeLinear emission for quantizers traced by ``torch.onnx.export``.

While ``torch.onnx.is_in_onnx_export()`` is true, quantizers route through ``QDQ`` (a fake
quantizer whose ONNX symbolic is QuantizeLinear → [Clip] → DequantizeLinear, "QCDQ") and fused
layers feed integer weight initializers through ``DQ`` (DequantizeLinear only).  Codes are
stored as int8 when ``qmin < 0`` and uint8 otherwise; ranges narrower than the storage type
(e.g. 4-bit codes) get the Clip.  Opset 13 QuantizeLinear has no block size: per-group
parameters are refused by ``export_onnx``.
"""

from __future__ import annotations

import torch

__all__ = ["QDQ", "DQ", "storage_dtype"]


def storage_dtype(qmin: int, qmax: int) -> torch.dtype:
    """int8 for signed code ranges, uint8 for non-negative ones.

    Raises:
        ValueError: the codes do not fit in 8 bits (ONNX opset 13 QuantizeLinear's types).
    """
    dtype = torch.int8 if qmin < 0 else torch.uint8
    info = torch.iinfo(dtype)
    if qmin < info.min or qmax > info.max:
        raise ValueError(f"ONNX QuantizeLinear stores 8-bit codes; codes [{qmin}, {qmax}] do not "
                         "fit in int8/uint8")
    return dtype


def _shape(x: torch.Tensor, axis) -> list:
    shape = [1] * x.dim()
    if axis is not None:
        shape[axis] = -1
    return shape


class QDQ(torch.autograd.Function):
    """y = (clamp(round(x/s) + z, qmin, qmax) - z)·s, exported as QuantizeLinear → Clip →
    DequantizeLinear (``axis=None`` means per-tensor)."""

    @staticmethod
    def forward(ctx, x, scale, zero_point, qmin, qmax, axis):
        s = scale.reshape(_shape(x, axis))
        z = zero_point.reshape(_shape(x, axis)).float()
        return ((torch.clamp(torch.round(x.float() / s) + z, qmin, qmax) - z) * s).to(x.dtype)

    @staticmethod
    def symbolic(g, x, scale, zero_point, qmin, qmax, axis):
        attrs = {} if axis is None else {"axis_i": axis}
        q = g.op("QuantizeLinear", x, scale, zero_point, **attrs)
        dtype = storage_dtype(qmin, qmax)
        info = torch.iinfo(dtype)
        if (qmin, qmax) != (info.min, info.max):
            lo = g.op("Constant", value_t=torch.tensor(qmin, dtype=dtype))
            hi = g.op("Constant", value_t=torch.tensor(qmax, dtype=dtype))
            q = g.op("Clip", q, lo, hi)
        return g.op("DequantizeLinear", q, scale, zero_point, **attrs)


class DQ(torch.autograd.Function):
    """y = (codes - z)·s from stored integer codes, exported as DequantizeLinear."""

    @staticmethod
    def forward(ctx, codes, scale, zero_point, axis):
        s = scale.reshape(_shape(codes, axis))
        z = zero_point.reshape(_shape(codes, axis)).float()
        return (codes.float() - z) * s

    @staticmethod
    def symbolic(g, codes, scale, zero_point, axis):
        attrs = {} if axis is None else {"axis_i": axis}
        return g.op("DequantizeLinear", codes, scale, zero_point, **attrs)
