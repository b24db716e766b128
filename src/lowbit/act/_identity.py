"""Who a saved tensor is: parameters (never compressed), identity keys (for storing a tensor
once per representation) and per-tensor seeds.

Parameter rule.  A saved tensor is a parameter when it is an ``nn.Parameter``, when its storage
is the storage of a parameter or buffer of the ``model`` given to ``compress``, or when its
``grad_fn`` chain, followed through view and dtype-cast nodes (at most ``_MAX_WALK`` steps, one
input each), ends at the ``AccumulateGrad`` of an ``nn.Parameter``: that catches autocast's
bf16/fp16 weight copies and views such as ``weight.t()`` (research note actnn.md §6, pitfall
1).  Not caught: casts of frozen parameters (``requires_grad=False``, so no ``grad_fn``) made
outside ``model``'s storage, and parameters rebuilt by other means (FSDP unsharding, merged
LoRA weights); those are compressed like activations.
"""

from __future__ import annotations

from typing import FrozenSet, Optional, Tuple

import torch
from torch import nn
from torch.multiprocessing.reductions import StorageWeakRef

__all__ = ["is_parameter", "storage_ptrs", "identity", "tensor_seed", "MASK64"]

MASK64 = (1 << 64) - 1
_MAX_WALK = 8
# Autograd nodes whose output is its single input viewed or cast: parameters pass through them.
_TRANSPARENT = frozenset({
    "ToCopyBackward0", "TBackward0", "TransposeBackward0", "TransposeBackward1",
    "PermuteBackward0", "ViewBackward0", "UnsafeViewBackward0", "ReshapeAliasBackward0",
    "ExpandBackward0", "AliasBackward0", "SliceBackward0", "SelectBackward0",
    "UnsqueezeBackward0", "SqueezeBackward0", "SqueezeBackward1", "SqueezeBackward2",
    "CloneBackward0", "ContiguousBackward0", "NarrowBackward0",
})


def storage_ptrs(model: Optional[nn.Module]) -> FrozenSet[int]:
    """Data pointers of the storages of ``model``'s parameters and buffers."""
    if model is None:
        return frozenset()
    tensors = list(model.parameters()) + list(model.buffers())
    return frozenset(t.untyped_storage().data_ptr() for t in tensors if t.device.type != "meta")


def is_parameter(t: torch.Tensor, ptrs: FrozenSet[int]) -> bool:
    """The parameter rule of the module docstring."""
    if isinstance(t, nn.Parameter):
        return True
    if ptrs and t.untyped_storage().data_ptr() in ptrs:
        return True
    fn = t.grad_fn
    for _ in range(_MAX_WALK):
        if fn is None:
            return False
        name = type(fn).__name__
        if name == "AccumulateGrad":
            return isinstance(fn.variable, nn.Parameter)
        if name not in _TRANSPARENT:
            return False
        inputs = [f for f, _ in fn.next_functions if f is not None]
        if len(inputs) != 1:
            return False
        fn = inputs[0]
    return False


def identity(t: torch.Tensor) -> Tuple[StorageWeakRef, tuple]:
    """(a weak reference to ``t``'s storage, a key naming ``t``'s bytes at its current
    version).  The key is valid while the reference has not expired: a freed storage's address
    may be reused."""
    ref = StorageWeakRef(t.untyped_storage())
    return ref, (ref.cdata, t.storage_offset(), tuple(t.shape), t.stride(), t.dtype, t._version)


def _mix64(z: int) -> int:
    # The SplitMix64 finaliser (Steele, Lea & Flood, OOPSLA'14): a bijection of 64-bit words.
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK64
    return z ^ (z >> 31)


def tensor_seed(base: int, index: int) -> int:
    """The Philox key of the ``index``-th tensor packed under base seed ``base``: distinct
    indices give distinct keys (a bijection of ``base + (index + 1) · γ``, γ odd)."""
    return _mix64((base + (index + 1) * 0x9E3779B97F4A7C15) & MASK64)


def context_seed(counter: int) -> int:
    """A base seed for the ``counter``-th context of this process, from ``torch.initial_seed()``
    (reproducible under ``torch.manual_seed`` without drawing from, and so shifting, the global
    generator)."""
    return _mix64((torch.initial_seed() ^ _mix64(counter + 1)) & MASK64)
