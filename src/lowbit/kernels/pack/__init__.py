"""Packed low-bit storage of activations: per-group min/max codes with stochastic rounding
(ActNN, arXiv 2104.14129, §3; the group quantizer of its CUDA kernels), and exact 1-bit masks.

Group pack contract (``pack_groups``; every backend bit-identical for the same seed):

* ``x`` (fp32, fp16 or bf16, any shape) is read in its logical row-major order ``x.flatten()``
  as fp32 values ``v_i`` and cut into ``G = ceil(n / group_size)`` groups of ``group_size``
  consecutive elements (the last one may be short; its missing elements are not read).
* Bounds, stored as bf16 (``lo``, ``hi``: two per group): ``lo = round_down_bf16(min v)`` and
  ``hi = round_up_bf16(max v)`` (directed rounding, so every value lies in ``[lo, hi]``; a
  signed zero bound is stored as +0).  A group holding NaN or ±Inf stores bf16 NaN in both,
  and decodes to NaN throughout.
* Codes: with ``L = 2^bits - 1``, ``scale = L / (hi - lo)`` (fp32 IEEE; 0 when ``hi - lo`` is 0,
  Inf or NaN), ``t = (v - lo) · scale`` (fp32), ``q = min(floor(t) + [u < t - floor(t)], L)``
  with ``u = (w >> 8) · 2^-24`` from the element's 32-bit word ``w`` of the Philox stream of
  ``lowbit.kernels.philox`` (logical index ``i``: word ``i & 3`` of the call at counter
  ``i >> 2``).  So ``q`` rounds ``t`` up with probability ``ceil(frac · 2^24) / 2^24``:
  stochastic rounding, unbiased up to 2^-24 of a step and the fp32 roundings of ``t``.
* Storage: ``codes`` is a uint8 tensor of ``ceil(n · bits / 8)`` bytes holding the codes as one
  little-endian bit stream (element ``i`` at stream bits ``bits·i ..``, stream bit ``j`` = bit
  ``j mod 8`` of byte ``j // 8``: the layout of ``lowbit.ops.codec``).  With ``group_size`` a
  power of two >= 8 every group starts on a byte.  Held bytes: ``ceil(n·bits/8) + 4·G``.
* Decode (``unpack_groups``): ``lo + q · ((hi - lo) / L)`` in fp32 (a division, a multiply and
  an add, each rounded: no FMA), then rounded to the original dtype (nearest-even).

Masks (``pack_mask``): a bool tensor as one bit per element, same bit stream; exact.

Backends: ``reference`` (torch ops, any device), ``cpu`` (numba, parallel over groups) and
``triton`` (CUDA; CPU tensors run Triton's interpreter, for tests).  ``auto`` picks Triton for
CUDA tensors and the numba kernel for CPU tensors, falling back to the reference when the
package is missing.  Nothing here is imported by ``import lowbit``.
"""

from __future__ import annotations

import dataclasses
from typing import Optional, Tuple

import torch

from ..dispatch import Backend
from ..philox import resolve_seed

__all__ = ["BITS", "PackedGroups", "pack_groups", "unpack_groups", "pack_mask", "unpack_mask",
           "group_nbytes"]

#: Code widths that fill a byte exactly.
BITS = (1, 2, 4, 8)
_FLOATS = (torch.float32, torch.float16, torch.bfloat16)
_MAX_GROUP = 1 << 14


@dataclasses.dataclass(frozen=True)
class PackedGroups:
    """The packed form of one tensor (see the module docstring for the exact contract)."""

    codes: torch.Tensor  #: uint8[ceil(n·bits/8)], the code bit stream
    lo: torch.Tensor  #: bf16[G], each group's lower bound
    hi: torch.Tensor  #: bf16[G], each group's upper bound
    bits: int
    group_size: int
    shape: Tuple[int, ...]
    dtype: torch.dtype
    seed: int

    @property
    def nbytes(self) -> int:
        """Bytes held by the three tensors' storages."""
        return sum(t.untyped_storage().nbytes() for t in (self.codes, self.lo, self.hi))

    def to(self, device: torch.device, *, non_blocking: bool = False) -> "PackedGroups":
        """The same codes on ``device`` (for CPU offload: pinned when leaving a GPU)."""
        pin = device.type == "cpu" and self.codes.is_cuda
        move = lambda t: (torch.empty_like(t, device="cpu", pin_memory=True).copy_(  # noqa: E731
            t, non_blocking=non_blocking) if pin else t.to(device, non_blocking=non_blocking))
        return dataclasses.replace(self, codes=move(self.codes), lo=move(self.lo),
                                   hi=move(self.hi))


def group_nbytes(numel: int, bits: int, group_size: int) -> int:
    """Bytes of ``pack_groups``' output for ``numel`` elements."""
    return -(-numel * bits // 8) + 4 * -(-numel // group_size)


def _impl(backend: Backend, device: torch.device):
    """The module implementing ``pack``/``unpack`` for ``backend`` on ``device``."""
    if backend is Backend.REFERENCE:
        from . import reference

        return reference
    if backend is Backend.CPU:
        if device.type != "cpu":
            raise ValueError(f"backend='cpu' takes CPU tensors; got a {device.type} tensor")
        from . import _cpu

        return _cpu
    if backend is Backend.TRITON:
        from . import _triton

        return _triton
    try:  # AUTO
        if device.type == "cuda":
            from . import _triton

            return _triton
        if device.type == "cpu":
            from . import _cpu

            return _cpu
    except ModuleNotFoundError as err:
        if err.name not in ("triton", "numba", "llvmlite"):
            raise
    from . import reference

    return reference


def _check(bits: int, group_size: int) -> None:
    if isinstance(bits, bool) or bits not in BITS:
        raise ValueError(f"bits must be one of {BITS}; got {bits!r}")
    if (isinstance(group_size, bool) or not isinstance(group_size, int) or group_size < 8
            or group_size > _MAX_GROUP or group_size & (group_size - 1)):
        raise ValueError(f"group_size must be a power of two in [8, {_MAX_GROUP}]; "
                         f"got {group_size!r}")


def pack_groups(x: torch.Tensor, *, bits: int, group_size: int = 256,
                seed: Optional[int] = None, backend: str = "auto") -> PackedGroups:
    """Pack ``x`` into ``bits``-bit codes with per-group bf16 bounds (module docstring).

    Args:
        x: fp32, fp16 or bf16 tensor; read in row-major order (a non-contiguous ``x`` is
            copied first).
        bits: 1, 2, 4 or 8.
        group_size: elements per group, a power of two in [8, 16384].
        seed: the 64-bit Philox key; None draws one from torch's default generator.
        backend: "auto", "reference", "cpu" or "triton".
    """
    if not isinstance(x, torch.Tensor) or x.dtype not in _FLOATS:
        raise TypeError(f"x must be a float32, float16 or bfloat16 tensor; got "
                        f"{getattr(x, 'dtype', type(x).__name__)}")
    _check(bits, group_size)
    seed = resolve_seed(seed)
    impl = _impl(Backend.parse(backend, "backend"), x.device)
    codes, lo, hi = impl.pack(x, bits, group_size, seed)
    return PackedGroups(codes, lo, hi, bits, group_size, tuple(x.shape), x.dtype, seed)


def unpack_groups(p: PackedGroups, *, backend: str = "auto") -> torch.Tensor:
    """Decode ``p`` into a new contiguous tensor of its original shape and dtype, on the device
    of its codes."""
    if not isinstance(p, PackedGroups):
        raise TypeError(f"p must be a PackedGroups; got {type(p).__name__}")
    n = 1
    for s in p.shape:
        n *= s
    impl = _impl(Backend.parse(backend, "backend"), p.codes.device)
    y = impl.unpack(p.codes, p.lo, p.hi, p.bits, p.group_size, n, p.dtype)
    return y.view(p.shape)


def pack_mask(m: torch.Tensor) -> torch.Tensor:
    """A bool tensor as uint8 bytes, one bit per element in row-major order, element ``i`` at
    bit ``i mod 8`` of byte ``i // 8`` (the trailing bits of the last byte are 0)."""
    if not isinstance(m, torch.Tensor) or m.dtype != torch.bool:
        raise TypeError(f"m must be a bool tensor; got {getattr(m, 'dtype', type(m).__name__)}")
    flat = m.detach().reshape(-1)
    pad = -flat.numel() % 8
    b = torch.nn.functional.pad(flat.view(torch.uint8), (0, pad)).view(-1, 8)
    out = b[:, 0].clone()
    for k in range(1, 8):
        out |= b[:, k] << k
    return out


def unpack_mask(codes: torch.Tensor, shape: Tuple[int, ...]) -> torch.Tensor:
    """The bool tensor of ``shape`` packed by ``pack_mask``."""
    n = 1
    for s in shape:
        n *= s
    shifts = torch.arange(8, dtype=torch.uint8, device=codes.device)
    bits = (codes[:, None] >> shifts) & 1
    return bits.reshape(-1)[:n].to(torch.bool).view(shape)
