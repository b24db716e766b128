"""Real low-bit storage: ``encode`` a tensor into packed codes, ``decode`` it back.

``decode(encode(x, fmt, **opts))`` equals ``quantize(x, fmt, **opts)`` bit for bit, with two
documented exceptions that no code can hold: NaN payloads (every NaN decodes to the quiet NaN,
with the sign kept where the format has a sign bit) and -0 in integer and fixed-point
elements (two's complement has no -0: it decodes as +0).

Storage contract (``Packed``):

* ``codes``: a 1-D uint8 tensor, the element codes of ``x`` in its logical row-major order
  (``x.flatten()``, for block formats too), ``b = element bits`` per code, packed as one
  little-endian bit stream: element ``i`` occupies stream bits ``b·i .. b·i + b - 1`` (least
  significant first) and stream bit ``j`` is bit ``j mod 8`` of byte ``j // 8``.  So 8-bit
  codes are one byte each; 4-bit codes are two per byte with element 0 in the low nibble
  (torch's ``float4_e2m1fn_x2``); 6-bit codes are four per three bytes (``byte0 = c0 |
  (c1 & 3) << 6``, ``byte1 = c1 >> 2 | (c2 & 15) << 4``, ``byte2 = c2 >> 4 | c3 << 2``);
  16-bit codes are little-endian pairs of bytes.  Unused trailing bits are zero.
* the code of a value (see ``lowbit.ops.codec.scalar``): floats as sign | exponent field |
  mantissa (IEEE 754 §3.4; unsigned formats have no sign bit); Inf and NaN as the format
  defines them (``ieee``: exponent all ones, NaN with mantissa ``1 << (man-1)``; ``fn``: NaN
  = all ones; ``fnuz``: NaN = ``1 << (bits-1)``); ``ExpFormat``: ``E + bias``, NaN all ones;
  fixed point and integers: two's complement (plain binary when unsigned).  Where
  ``quantize`` gives the fp32 carrier's ±Inf in a format without an Inf code (a format whose
  range passes fp32's, or a block value ``P · X`` past fp32's range), the code is the
  format's (the element's) extreme value, which decodes to the same ±Inf in fp32.
* ``scales`` (block formats): the codes of the block scales, one per block, uint8 when the
  scale format has at most 8 bits (``e8m0fnu``, NVFP4's UE4M3: the same byte as torch's
  ``float8_e8m0fnu`` / a ``float8_e4m3fn`` byte with sign 0), else int32 holding the bit pattern.
  Its shape is ``x``'s with every block axis of length ``n`` replaced by its number of blocks
  ``ceil(n / block_size)`` (1 when a block spans the axis): ``(M, K // 16)`` for NVFP4 on an
  ``(M, K)`` tensor, as torchao's unswizzled layout.  A block holding NaN or ±Inf stores the
  scale format's NaN code (the block decodes to NaN, as ``quantize`` gives) and zero elements.
* ``tensor_scale`` (two-level formats such as NVFP4): the fp32 per-tensor scale, 0-d.

NaN in a format without a NaN code (``specials="none"`` floats such as ``e2m1fn`` or
``e3m2fn``, integers, fixed point; the element formats of MX blocks keep NaN through the scale
instead): ``quantize`` keeps NaN in the fp32 carrier but no code can, so by default ``encode``
raises a ``ValueError`` rather than silently store a number.  ``nan="zero"`` stores such NaN
as -0 where the format has -0 (ml_dtypes' convention for FP4/FP6: code ``0x8`` / ``0x20``)
and as 0 otherwise.

Speed: ``encode`` and ``decode`` run as one pass over memory where ``lowbit.ops.codec.fused``
applies (numba kernels on the CPU; Triton kernels on CUDA once ``fused.GPU_DEFAULT`` is on),
else through ``quantize`` and the torch paths of ``fast`` and ``block``: the same bytes.
"""

from __future__ import annotations

import dataclasses
from typing import List, Optional, Tuple, Union

import torch

from ...formats import BlockFormat, Format, Rounding, get
from ...kernels.philox import resolve_seed
from ..quantize import check_rbits, quantize, result_dtype
from .bitstream import pack_bits, packed_nbytes
from .block import decode_block, encode_block, grid_shape
from .fast import decode_values, encode_values
from .fused import decode_fused, encode_fused

__all__ = ["Packed", "encode", "decode"]

_DTYPES = (torch.float32, torch.float16, torch.bfloat16)
_NAN_POLICIES = ("raise", "zero")


def _element_bits(fmt: Format) -> int:
    return fmt.element.bits if isinstance(fmt, BlockFormat) else fmt.bits


@dataclasses.dataclass(frozen=True, eq=False, repr=False)
class Packed:
    """A tensor stored in a low-bit format: the result of ``lowbit.encode``.

    Attributes:
        codes: 1-D uint8 tensor, the element codes packed as described in
            ``lowbit.ops.codec`` (row-major order of the original tensor, little-endian bits).
        shape: the original tensor's shape.
        fmt: the format (a format object).
        scales: block formats: codes of the block scales (uint8, or int32 bit patterns for
            scale formats wider than 8 bits), shaped as the grid of blocks; else None.
        tensor_scale: two-level block formats (NVFP4): the fp32 per-tensor scale (0-d);
            else None.
        dtype: the original dtype, which ``decode`` returns.
    """

    codes: torch.Tensor
    shape: Tuple[int, ...]
    fmt: Format
    scales: Optional[torch.Tensor] = None
    tensor_scale: Optional[torch.Tensor] = None
    dtype: torch.dtype = torch.float32

    def __post_init__(self) -> None:
        object.__setattr__(self, "fmt", get(self.fmt))
        object.__setattr__(self, "shape", tuple(int(s) for s in self.shape))
        fmt = self.fmt
        if not isinstance(self.codes, torch.Tensor) or self.codes.dtype != torch.uint8 \
                or self.codes.dim() != 1:
            raise TypeError("codes must be a 1-D uint8 tensor")
        need = packed_nbytes(self.numel, _element_bits(fmt))
        if self.codes.numel() != need:
            raise ValueError(f"codes has {self.codes.numel()} bytes; {self.numel} codes of "
                             f"{_element_bits(fmt)} bits need {need}")
        if self.dtype not in _DTYPES:
            raise TypeError(f"dtype must be float32, float16 or bfloat16; got {self.dtype}")
        if isinstance(fmt, BlockFormat):
            grid = grid_shape(fmt, self.shape)
            if not isinstance(self.scales, torch.Tensor) or tuple(self.scales.shape) != grid:
                raise ValueError(f"{fmt!r} on shape {self.shape} needs scales of shape {grid}")
            if fmt.tensor_scale != isinstance(self.tensor_scale, torch.Tensor):
                raise ValueError(f"{fmt!r} {'needs' if fmt.tensor_scale else 'takes no'} "
                                 "tensor_scale")
        elif self.scales is not None or self.tensor_scale is not None:
            raise ValueError(f"{fmt!r} is not a block format: it takes no scales")

    @property
    def numel(self) -> int:
        n = 1
        for s in self.shape:
            n *= s
        return n

    @property
    def device(self) -> torch.device:
        return self.codes.device

    @property
    def nbytes(self) -> int:
        """Bytes of storage: codes, scales and the tensor scale."""
        total = self.codes.numel()
        for t in (self.scales, self.tensor_scale):
            if t is not None:
                total += t.numel() * t.element_size()
        return total

    def to(self, device: Union[str, torch.device]) -> "Packed":
        """The same storage on ``device``."""
        move = lambda t: None if t is None else t.to(device)  # noqa: E731
        return dataclasses.replace(self, codes=move(self.codes), scales=move(self.scales),
                                   tensor_scale=move(self.tensor_scale))

    def __repr__(self) -> str:
        return (f"Packed(fmt={self.fmt!r}, shape={self.shape}, dtype={self.dtype}, "
                f"nbytes={self.nbytes}, device={self.device})")


def encode(
    x: torch.Tensor,
    fmt: Union[str, Format],
    *,
    rounding: Union[str, Rounding] = "nearest",
    rbits: Optional[int] = None,
    seed: Optional[int] = None,
    nan: str = "raise",
) -> Packed:
    """Round ``x`` onto ``fmt`` and store the result in ``fmt``'s own bits.

    The values are ``lowbit.quantize(x, fmt, rounding=..., rbits=..., seed=...)``; ``decode``
    returns them bit for bit (NaN payloads and the -0 of integer elements aside; see
    ``lowbit.ops.codec`` for the layout of codes and scales).

    Args:
        x: float32, float16 or bfloat16 tensor (not differentiated through).
        fmt: a format object or name.
        rounding, rbits, seed: as for ``lowbit.quantize``.
        nan: what a NaN becomes in a format without a NaN code: ``"raise"`` (default, a
            ``ValueError``) or ``"zero"`` (-0 where the format has -0, else 0).

    Returns:
        A ``Packed`` holding ``ceil(numel · bits / 8)`` bytes of codes, plus the block scales
        and tensor scale of block formats.

    Raises:
        TypeError: ``x`` is not a float32/float16/bfloat16 tensor, or ``fmt`` is no format.
        ValueError: float64 input; a dtype that cannot hold the format's values; NaN without a
            NaN code (``nan="raise"``); values of an unclamped ``FixedPoint`` outside its
            ``wl`` bits.
    """
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"x must be a torch.Tensor; got {type(x).__name__}")
    fmt = get(fmt)
    rounding = Rounding.parse(rounding, "rounding")
    if nan not in _NAN_POLICIES:
        raise ValueError(f"nan must be one of {_NAN_POLICIES}; got {nan!r}")
    if not x.is_floating_point() and x.dtype != torch.float64:
        raise TypeError(f"x must be float32, float16 or bfloat16; got {x.dtype}")
    result_dtype(fmt, x.dtype)  # fp64 and carriers too narrow for fmt: ValueError
    bits = check_rbits(rbits, rounding, seed)
    seed = resolve_seed(seed) if rounding is Rounding.STOCHASTIC else None
    lo, hi = (-1, -1) if seed is None else (seed & 0xFFFFFFFF, seed >> 32)
    codes, scales, tensor_scale = _encode_op(x.detach(), repr(fmt), rounding.value, bits, lo,
                                             hi, nan)
    if not isinstance(fmt, BlockFormat):
        scales = tensor_scale = None
    elif not fmt.tensor_scale:
        tensor_scale = None
    return Packed(codes, tuple(x.shape), fmt, scales, tensor_scale, x.dtype)


def _scale_dtype(fmt: BlockFormat) -> torch.dtype:
    return torch.uint8 if fmt.scale.bits <= 8 else torch.int32


@torch.library.custom_op("lowbit::encode", mutates_args=())
def _encode_op(x: torch.Tensor, fmt: str, rounding: str, rbits: int, seed_lo: int, seed_hi: int,
               nan: str) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``encode`` as a torch.library op (codes, scales, tensor scale) so that torch.compile
    traces it; formats without scales return empty placeholders that ``encode`` drops."""
    f, rnd = get(fmt), Rounding(rounding)
    seed = None if seed_lo < 0 else seed_lo | (seed_hi << 32)
    opts = dict(rounding=rnd, rbits=rbits if rnd is Rounding.STOCHASTIC else None, seed=seed)
    dev = x.device
    scales = torch.zeros(0, dtype=torch.uint8, device=dev)
    tensor_scale = torch.zeros(0, dtype=torch.float32, device=dev)
    with torch.no_grad():
        fused = encode_fused(x, f, rnd, rbits, seed, nan)  # one pass where it applies
        if fused is not None:
            return fused
        if x.numel() == 0:
            codes = torch.zeros(0, dtype=torch.int32, device=dev)
        elif isinstance(f, BlockFormat):
            v = quantize(x, f, **opts).to(torch.float32).contiguous()
            codes, scales, tensor_scale = encode_block(x.to(torch.float32).contiguous(), v, f,
                                                       rnd, rbits, seed, nan)
        else:
            v = quantize(x, f, **opts).to(torch.float32).contiguous().view(-1)
            codes = encode_values(v, f, nan,
                                  f"x holds NaN (after rounding), and {f!r} has no NaN code")
        if isinstance(f, BlockFormat):
            if x.numel() == 0:
                scales = torch.zeros(grid_shape(f, tuple(x.shape)), dtype=torch.int32,
                                     device=dev)
                tensor_scale = torch.ones((), device=dev)
            scales = scales.to(_scale_dtype(f))
            if tensor_scale is None:
                tensor_scale = torch.zeros(0, dtype=torch.float32, device=dev)
        return pack_bits(codes.view(-1), _element_bits(f)), scales, tensor_scale


@_encode_op.register_fake
def _(x, fmt, rounding, rbits, seed_lo, seed_hi, nan):
    f, dev = get(fmt), x.device
    codes = x.new_empty(packed_nbytes(x.numel(), _element_bits(f)), dtype=torch.uint8)
    if not isinstance(f, BlockFormat):
        return codes, x.new_empty(0, dtype=torch.uint8), x.new_empty(0, dtype=torch.float32)
    scales = torch.empty(grid_shape(f, tuple(x.shape)), dtype=_scale_dtype(f), device=dev)
    ts = torch.empty((), device=dev) if f.tensor_scale else torch.empty(0, device=dev)
    return codes, scales, ts


@torch.library.custom_op("lowbit::decode", mutates_args=())
def _decode_op(codes: torch.Tensor, scales: Optional[torch.Tensor],
               tensor_scale: Optional[torch.Tensor], fmt: str, shape: List[int],
               dtype: torch.dtype) -> torch.Tensor:
    """``decode`` as a torch.library op (see ``_encode_op``)."""
    f, shape_t = get(fmt), tuple(shape)
    n = 1
    for d in shape_t:
        n *= d
    if n == 0:
        return torch.empty(shape_t, dtype=dtype, device=codes.device)
    with torch.no_grad():
        y = decode_fused(codes, scales, tensor_scale, f, shape_t)
        if y is not None:
            return y.to(dtype)
        if isinstance(f, BlockFormat):
            y = decode_block(codes, scales, tensor_scale, f, shape_t)
        else:
            y = decode_values(codes, f, n).view(shape_t)
    return y.to(dtype)


@_decode_op.register_fake
def _(codes, scales, tensor_scale, fmt, shape, dtype):
    return torch.empty(tuple(shape), dtype=dtype, device=codes.device)


def decode(packed: Packed) -> torch.Tensor:
    """The values stored in ``packed``: a tensor of its shape and dtype, equal bit for bit to
    ``quantize`` with the options ``encode`` was given (see ``lowbit.ops.codec``)."""
    if not isinstance(packed, Packed):
        raise TypeError(f"decode takes a Packed (from lowbit.encode); got {type(packed).__name__}")
    return _decode_op(packed.codes, packed.scales, packed.tensor_scale, repr(packed.fmt),
                      list(packed.shape), packed.dtype)
