"""Export of a prepared model: integer weights and scales per layer (``export_int``), and an
ONNX graph with QuantizeLinear/DequantizeLinear nodes (``export_onnx``).

Every quantizer describes its grid as ``QParams`` (value = (code - zero_point)·scale), so
codes are recovered exactly from the fake-quantized tensor: ``code = round(q/scale) +
zero_point``.  Exported weights are the deployed ones: BatchNorm folded with running
statistics.  Biases stay float (a backend derives its int32 bias as round(b / (s_in·s_w))).
"""

from __future__ import annotations

import contextlib
import dataclasses
import warnings
from typing import Any, Dict, Iterator, Optional, Tuple, Union

import torch
from torch import nn

from ._granularity import expand
from ._onnx import storage_dtype
from .fused import _Fused
from .quantizers import QParams, Quantizer
from .state import Role, quant_mode

__all__ = ["IntLayer", "int_codes", "export_int", "export_onnx"]

# The newest opset torch's TorchScript-based exporter writes.
_MAX_OPSET = 20


@dataclasses.dataclass(frozen=True)
class IntLayer:
    """One fused layer, deployed: ``y = act(op(x, (weight - zp)·scale) + bias)``, then the
    output quantizer's grid."""

    #: Integer weight codes (int8/uint8/int16/int32, the narrowest that holds the range).
    weight: torch.Tensor
    #: The weight grid (scale and zero point per tensor/channel/group).
    weight_qparams: QParams
    #: Float bias with BatchNorm folded in, or None.
    bias: Optional[torch.Tensor]
    #: The output grid, or None when the output is not quantized.
    output_qparams: Optional[QParams]
    #: The input grid when the layer quantizes its own input, else None.
    input_qparams: Optional[QParams] = None

    def dequantized_weight(self) -> torch.Tensor:
        """``(weight - zero_point)·scale`` in fp32."""
        p = self.weight_qparams
        w = self.weight.float()
        s = expand(p.scale.float(), w, p.axis, p.group_size, "scale")
        z = expand(p.zero_point.float(), w, p.axis, p.group_size, "zero_point")
        return (w - z) * s


def _int_dtype(qmin: int, qmax: int) -> torch.dtype:
    for dtype in (torch.int8, torch.uint8, torch.int16, torch.int32):
        info = torch.iinfo(dtype)
        if info.min <= qmin and qmax <= info.max:
            return dtype
    raise ValueError(f"codes [{qmin}, {qmax}] do not fit in int32")


def int_codes(q: torch.Tensor, p: QParams) -> torch.Tensor:
    """The integer codes of a fake-quantized tensor ``q`` on grid ``p``:
    ``clamp(round(q/scale) + zero_point, qmin, qmax)`` in the narrowest integer dtype."""
    q = q.detach().float()
    s = expand(p.scale.detach().float(), q, p.axis, p.group_size, "scale")
    z = expand(p.zero_point.detach().float(), q, p.axis, p.group_size, "zero_point")
    codes = torch.clamp(torch.round(q / s) + z, p.qmin, p.qmax)
    return codes.to(_int_dtype(p.qmin, p.qmax))


def _detached(p: QParams) -> QParams:
    return dataclasses.replace(p, scale=p.scale.detach().clone(),
                               zero_point=p.zero_point.detach().clone())


def _layer(m: _Fused) -> IntLayer:
    with torch.no_grad():
        w, b = m.folded()
        wq = m.weight_quantizer
        p = _detached(wq.qparams(w))
        codes = int_codes(wq.quantize(w), p)
    out = m.output_quantizer.qparams() if m.output_quantizer is not None else None
    inp = m.input_quantizer.qparams() if m.input_quantizer is not None else None
    return IntLayer(codes, p, None if b is None else b.detach().clone(),
                    None if out is None else _detached(out), None if inp is None else _detached(inp))


def export_int(model: nn.Module) -> Dict[str, Union[IntLayer, QParams]]:
    """Integer weights and grids of a prepared model.

    Returns:
        ``{name: IntLayer}`` for each fused layer with a weight quantizer, and
        ``{name: QParams}`` for every other activation quantizer (input quantizers, the shared
        and output quantizers of ``QOp``s, pool requantizers), in module order.

    Raises:
        RuntimeError: a quantizer that has not been initialised (run data through it first).
    """
    owned = set()
    out: Dict[str, Union[IntLayer, QParams]] = {}
    for name, m in model.named_modules():
        if isinstance(m, _Fused) and m.weight_quantizer is not None:
            out[name] = _layer(m)
            owned.update(id(q) for q in m.modules() if isinstance(q, Quantizer))
        elif isinstance(m, Quantizer) and id(m) not in owned and m.role is Role.ACTIVATION:
            out[name] = _detached(m.qparams())
    return out


@contextlib.contextmanager
def _onnx_constants(model: nn.Module) -> Iterator[None]:
    fused = [m for m in model.modules() if isinstance(m, _Fused)]
    quantizers = [m for m in model.modules() if isinstance(m, Quantizer)]
    try:
        for m in fused:
            if m.weight_quantizer is None:
                continue
            layer = _layer(m)
            p = layer.weight_qparams
            scale, zp, _, _, axis = m.weight_quantizer.onnx_constants(m.folded()[0].detach())
            dtype = storage_dtype(p.qmin, p.qmax)
            m._onnx_weight = (layer.weight.to(dtype), scale, zp, axis, layer.bias)
        owned = {id(q) for m in fused for q in (m.weight_quantizer,) if q is not None}
        for q in quantizers:
            # Weight quantizers outside fused layers (lowbit.nn recipe roles) export as QDQ on
            # the float weight; a data-dependent grid (binary, ternary) stays float ops.
            if id(q) not in owned and not q.grid_from_data:
                q._onnx = q.onnx_constants()
        yield
    finally:
        for m in fused:
            m._onnx_weight = None
        for q in quantizers:
            q._onnx = None


def export_onnx(model: nn.Module, path: Any, example_inputs: Union[torch.Tensor, Tuple[Any, ...]],
                *, opset: int = 13, input_names: Optional[list] = None,
                output_names: Optional[list] = None, dynamic_batch: bool = True) -> None:
    """Write ``model`` (prepared, initialised) as ONNX with QuantizeLinear/DequantizeLinear.

    The graph is the deployed model: eval mode (BatchNorm folded with running statistics),
    every quantizer quantizing with its frozen grid.  Weights are stored as int8/uint8
    initializers feeding DequantizeLinear (per-channel along their ``axis``); activations pass
    QuantizeLinear → [Clip for ranges narrower than 8 bits] → DequantizeLinear.  The model's
    train/eval flags and quantizer switches are restored afterwards.

    Args:
        model: a model from ``prepare`` (or any module holding fused layers and quantizers).
        path: file path or binary file object.
        example_inputs: a tensor or tuple of positional inputs.
        opset: 13..20 (QuantizeLinear with per-axis parameters needs 13).
        input_names, output_names: graph names (default ``input_0, ...`` and ``output``).
        dynamic_batch: make the first dimension of every input and output dynamic.

    Raises:
        ValueError: an opset out of range, per-group parameters, or codes wider than 8 bits.
    """
    if isinstance(opset, bool) or not isinstance(opset, int) or not 13 <= opset <= _MAX_OPSET:
        raise ValueError(f"opset must be an int in [13, {_MAX_OPSET}]; got {opset!r}")
    if isinstance(example_inputs, torch.Tensor):
        example_inputs = (example_inputs,)
    if not isinstance(dynamic_batch, bool):
        raise TypeError(f"dynamic_batch must be a bool; got {dynamic_batch!r}")
    if input_names is None:
        input_names = [f"input_{i}" for i in range(len(example_inputs))]
    if output_names is None:
        output_names = ["output"]
    dynamic = {n: {0: "batch"} for n in list(input_names) + list(output_names)} \
        if dynamic_batch else None
    modes = {m: m.training for m in model.modules()}
    model.eval()
    try:
        with quant_mode(model, "eval"), _onnx_constants(model), torch.no_grad(), \
                warnings.catch_warnings():
            # torch 2.9+ flags its TorchScript-based exporter (and helpers it calls) as
            # deprecated; it is the exporter whose autograd.Function symbolics give QDQ nodes.
            warnings.simplefilter("ignore", DeprecationWarning)
            torch.onnx.export(model, example_inputs, path, opset_version=opset, dynamo=False,
                              input_names=input_names, output_names=output_names,
                              dynamic_axes=dynamic)
    finally:
        for m, training in modes.items():
            m.training = training
