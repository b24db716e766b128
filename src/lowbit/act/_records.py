"""What a pack hook returns: a ``Record`` holding a saved tensor in one representation, and the
functions that build each representation (one per ``Store``, plus bool masks and pass-through).

``Record.unpack`` may run more than once (double backward, ``retain_graph``): it never frees
or mutates what it holds.
"""

from __future__ import annotations

from typing import Callable, Optional, Tuple

import torch

from ..kernels.pack import PackedGroups, pack_groups, pack_mask, unpack_groups, unpack_mask

__all__ = ["Record", "keep", "offload", "groups", "sign_mask", "scaled_mask", "bool_mask",
           "shape_only", "pool_index", "PoolGeometry"]


class Record:
    """A saved tensor as held until backward: ``parts`` (tensors), a ``decode(*parts)`` that
    rebuilds what autograd saved, and the device it goes back to (``parts`` may be on the CPU
    after offloading)."""

    __slots__ = ("parts", "decode", "device", "nbytes", "offloaded", "__weakref__")

    def __init__(self, parts: Tuple[torch.Tensor, ...], decode: Callable[..., torch.Tensor],
                 device: torch.device, nbytes: Optional[int] = None):
        self.parts = parts
        self.decode = decode
        self.device = device
        self.nbytes = nbytes if nbytes is not None else sum(
            p.untyped_storage().nbytes() for p in parts)
        self.offloaded = False

    def unpack(self) -> torch.Tensor:
        parts = self.parts
        if self.offloaded:
            parts = tuple(p.to(self.device, non_blocking=True) for p in parts)
        return self.decode(*parts)


def _to_cpu(t: torch.Tensor) -> torch.Tensor:
    if not t.is_cuda:
        return t
    host = torch.empty(t.shape, dtype=t.dtype, pin_memory=True)
    return host.copy_(t, non_blocking=True)


def offload(record: Record) -> Record:
    """``record`` with its parts moved to pinned CPU memory (CUDA parts only; asynchronous, on
    the current stream, so the copy back in backward is ordered after it)."""
    if record.device.type == "cuda":
        record.parts = tuple(_to_cpu(p) for p in record.parts)
        record.offloaded = True
    return record


def keep(t: torch.Tensor, *, check_version: bool = True) -> Record:
    """The tensor itself, detached (holding the saved output would make a reference cycle
    through its ``grad_fn``).  Autograd skips its in-place check for tensors that pass through
    hooks, so the version is recorded here and checked on unpack."""
    t = t.detach()
    version = t._version

    def decode(x: torch.Tensor) -> torch.Tensor:
        if check_version and x._version != version:
            raise RuntimeError(
                "one of the variables needed for gradient computation has been modified by an "
                f"inplace operation: a tensor of shape {tuple(x.shape)} kept by lowbit.act is at "
                f"version {x._version}; expected version {version} instead.")
        return x

    return Record((t,), decode, t.device, nbytes=t.numel() * t.element_size())


def groups(t: torch.Tensor, bits: int, group_size: int, seed: int) -> Tuple[Record,
                                                                             PackedGroups]:
    """``bits``-bit per-group codes of ``t`` (``lowbit.kernels.pack``)."""
    p = pack_groups(t, bits=bits, group_size=group_size, seed=seed)

    def decode(codes, lo, hi):
        return unpack_groups(PackedGroups(codes, lo, hi, p.bits, p.group_size, p.shape,
                                          p.dtype, p.seed))

    return Record((p.codes, p.lo, p.hi), decode, t.device), p


def sign_mask(t: torch.Tensor) -> Record:
    """``t > 0`` as one bit per element, decoded as 1/0 in ``t``'s dtype: exact for backward
    passes that read only the sign of the saved tensor (ReLU's and LeakyReLU's)."""
    shape, dtype = tuple(t.shape), t.dtype
    return Record((pack_mask(t.detach() > 0),),
                  lambda codes: unpack_mask(codes, shape).to(dtype), t.device)


def scaled_mask(t: torch.Tensor, p: float) -> Record:
    """Dropout's float noise (values 0 and ``1 / (1 - p)`` as torch computes it in ``t``'s
    dtype) as one bit per element: exact."""
    shape, dtype = tuple(t.shape), t.dtype
    scale = torch.ones((), dtype=dtype, device=t.device).div_(1 - p)  # torch's own rounding

    def decode(codes, s):
        return unpack_mask(codes, shape).to(dtype) * s

    return Record((pack_mask(t.detach() != 0), scale), decode, t.device)


def bool_mask(t: torch.Tensor) -> Record:
    """A bool tensor (dropout's mask on GPUs) as one bit per element: exact."""
    shape = tuple(t.shape)
    return Record((pack_mask(t),), lambda codes: unpack_mask(codes, shape), t.device)


def shape_only(t: torch.Tensor) -> Record:
    """A tensor whose values the backward never reads: a stride-0 view of one zero element."""
    shape, dtype, device = tuple(t.shape), t.dtype, t.device
    zero = torch.zeros((), dtype=dtype, device=device)
    return Record((zero,), lambda z: z.expand(shape), device, nbytes=0)


class PoolGeometry:
    """Max pooling's window geometry over the last ``d`` (spatial) axes."""

    __slots__ = ("kernel", "stride", "padding", "dilation", "in_size")

    def __init__(self, kernel, stride, padding, dilation, in_size):
        self.kernel, self.stride, self.padding = kernel, stride, padding
        self.dilation, self.in_size = dilation, in_size


def _coords(flat: torch.Tensor, sizes) -> list:
    out = []
    for s in reversed(sizes):
        out.append(flat % s)
        flat = flat // s
    return out[::-1]


def _window_starts(out_shape, g: PoolGeometry, device) -> list:
    d = len(g.kernel)
    starts = []
    for axis in range(d):
        o = torch.arange(out_shape[-d + axis], device=device)
        view = [1] * d
        view[axis] = -1
        starts.append((o * g.stride[axis] - g.padding[axis]).view(view))
    return starts


def pool_index(idx: torch.Tensor, g: PoolGeometry) -> Record:
    """Max pooling's int64 arg-max (a flat index into each input plane) as the int8 offset
    ``sum_a k_a · prod_{b>a} kernel_b`` of the window tap ``k`` (``i_a = start_a + k_a ·
    dilation_a``): exact, 8x smaller (int16 for windows over 127 taps)."""
    shape = tuple(idx.shape)
    taps = 1
    for k in g.kernel:
        taps *= k
    small = torch.int8 if taps <= 127 else torch.int16
    starts = _window_starts(shape, g, idx.device)
    offset = torch.zeros_like(idx)
    for axis, coord in enumerate(_coords(idx, g.in_size)):
        offset = offset * g.kernel[axis] + (coord - starts[axis]) // g.dilation[axis]

    def decode(off):
        off = off.to(torch.int64)
        flat = torch.zeros_like(off)
        ks = _coords(off, g.kernel)
        for axis in range(len(g.kernel)):
            i = starts[axis] + ks[axis] * g.dilation[axis]
            flat = flat * g.in_size[axis] + i
        return flat

    return Record((offset.to(small),), decode, idx.device)
