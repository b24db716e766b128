"""``compress``: activation-compressed training on ``torch.autograd.graph.saved_tensors_hooks``.

Inside the context every tensor an autograd node saves for backward goes through a pack hook
that decides, from the policy and the module saving it, how to hold it:

* parameters and their casts (rule in ``_identity``): kept, uncounted;
* with a ``model``, tensors saved outside its forward (the loss, typically), and anywhere the
  outputs of log-softmax (whose backward exponentiates them): kept;
* floating tensors (fp32, fp16, bf16): by the policy's rule: kept, ``b``-bit codes
  (``lowbit.kernels.pack``), exact 1-bit masks, max-pool shape-only, optionally offloaded;
  smaller than ``policy.min_numel``, 0-d, or of other float dtypes (fp64): kept;
* bool tensors (dropout masks on GPUs): 1 bit per element (exact) unless the rule keeps them;
* int64 arg-max indices of recognised max pooling (``Store.POOL``): int8 window offsets
  (and the pooling input, whose values its backward never reads: its shape alone);
  other non-floating tensors: kept.

A tensor saved by several nodes is stored once per representation (same storage, offset,
shape, strides, dtype and version).  Every packed tensor gets its own Philox key (``seed`` and
a counter, ``_identity.tensor_seed``); the global generator is never drawn from, so dropout
and every other random stream are the same with compression on or off.  Kept tensors are
checked for in-place edits on unpack (autograd skips that check for hooked tensors).  The
codes are snapshots: in-place edits after saving do not reach them.

Only the innermost ``saved_tensors_hooks`` pair is active: regions under non-reentrant
``torch.utils.checkpoint`` keep their own (recomputation) behaviour.  Module frames assume the
forward runs on the thread that entered the context.
"""

from __future__ import annotations

import itertools
import threading
import weakref
from functools import partial
from typing import Dict, Optional, Union

import torch
from torch import nn

from . import _records as rec
from ._frames import Frame, Kind, frame_for, root_frame
from ._identity import context_seed, identity, is_parameter, storage_ptrs, tensor_seed
from .auto import AutoPrecision
from .policy import EXACT, Policy, Rule, Store, level
from .report import Report

__all__ = ["compress", "Compression", "default_policy", "auto_precision"]

_FLOATS = (torch.float32, torch.float16, torch.bfloat16)
_BITS = (1, 2, 4, 8)
_CONTEXTS = itertools.count()
_LOCAL = threading.local()
_KEEP = Rule(Store.KEEP)
# Outputs of these nodes are exponentiated by their backward (log-softmax: the loss's softmax
# is exp of the saved output), which turns the zero-mean error of stochastic rounding into a
# bias: kept as they are, like ActNN's logits and loss.
_EXP_OUTPUTS = frozenset({"LogSoftmaxBackward0"})
_AUTO: "weakref.WeakKeyDictionary[nn.Module, AutoPrecision]" = weakref.WeakKeyDictionary()


def default_policy(bits: int = 2, *, by_module: bool = True, other_bits: int = 8) -> Policy:
    """lowbit's default policy.

    With ``by_module`` (``compress`` given a model): inputs of convolutions, linear layers and
    BatchNorm at ``bits`` (ActNN's scope: their weight gradients are linear in the saved
    input, so stochastic rounding leaves them unbiased); every other floating tensor (GELU,
    LayerNorm and softmax inputs or outputs, attention operands, whose backward is nonlinear in
    them or feeds the error into activation gradients) at ``other_bits``; exact masks for
    ReLU, LeakyReLU and dropout and shape-only inputs for pooling (``EXACT``).  Without
    modules to tell ops apart, every floating tensor is stored at ``bits``.
    """
    if not by_module:
        return Policy(default=Rule(Store.BITS, bits), overrides=EXACT, name=f"default{bits}")
    scoped = tuple((t, Rule(Store.BITS, bits)) for t in ("_ConvNd", "Linear", "_BatchNorm"))
    return Policy(default=Rule(Store.BITS, other_bits), overrides=EXACT + scoped,
                  name=f"default{bits}")


def auto_precision(model: nn.Module, avg_bits: float = 2.0) -> AutoPrecision:
    """The ``AutoPrecision`` that ``compress(model, ...)`` uses for ``Store.AUTO`` rules: one
    per model (and target), kept across contexts for as long as the model lives."""
    auto = _AUTO.get(model)
    if auto is None or auto.avg_bits != float(avg_bits):
        auto = _AUTO[model] = AutoPrecision(avg_bits)
    return auto


def active() -> list:
    """The contexts entered on this thread, innermost last (for lowbit's functional ops)."""
    if not hasattr(_LOCAL, "stack"):
        _LOCAL.stack = []
    return _LOCAL.stack


class Compression:
    """The context manager returned by ``compress``; entering it yields its ``Report``."""

    def __init__(self, model: Optional[nn.Module], bits: int, group_size: int, policy: Policy,
                 seed: Optional[int], auto: Optional[AutoPrecision]):
        self.model, self.bits, self.group_size, self.policy = model, bits, group_size, policy
        self.auto = auto
        self.seed = seed
        self.report = Report()
        self.frames = [root_frame()]
        self._hooks = []
        self._ptrs = frozenset()
        self._cache: Dict[tuple, tuple] = {}
        self._rules: Dict[tuple, Rule] = {}
        self._seen: Dict[tuple, object] = {}
        self._count = 0
        self._base = 0
        self._saved_hooks = None

    # -- context ---------------------------------------------------------------------------
    def __enter__(self) -> Report:
        self._base = self.seed if self.seed is not None else context_seed(next(_CONTEXTS))
        if self.auto is not None:
            self.auto.step()
        if self.model is not None:
            self._ptrs = storage_ptrs(self.model)
            for name, module in self.model.named_modules():
                self._hooks.append(module.register_forward_pre_hook(partial(self._pre, name)))
                self._hooks.append(module.register_forward_hook(partial(self._post, name),
                                                                always_call=True))
        self._saved_hooks = torch.autograd.graph.saved_tensors_hooks(self._pack, _unpack)
        self._saved_hooks.__enter__()
        active().append(self)
        return self.report

    def __exit__(self, *exc) -> None:
        active().remove(self)
        self._saved_hooks.__exit__(*exc)
        for h in self._hooks:
            h.remove()
        self._hooks.clear()
        self._cache.clear()
        self._seen.clear()
        del self.frames[1:]

    # -- module frames ---------------------------------------------------------------------
    def _pre(self, name: str, module: nn.Module, args: tuple) -> None:
        self.frames.append(frame_for(name, module, args))

    def _post(self, name: str, module: nn.Module, args: tuple, output) -> None:
        for i in range(len(self.frames) - 1, 0, -1):
            if self.frames[i].module is module:
                frame = self.frames.pop(i)
                break
        else:
            return
        if frame.auto_used and self.auto is not None:
            y = _first_tensor(output)
            if y is not None and y.requires_grad:
                self.auto.observe_output(name, module, y)

    def push(self, frame: Frame) -> None:
        """Enter a functional op's frame (``lowbit.act.functional``)."""
        self.frames.append(frame)

    def pop(self, frame: Frame) -> None:
        if self.frames and self.frames[-1] is frame:
            self.frames.pop()

    # -- the pack hook ---------------------------------------------------------------------
    def _pack(self, t: torch.Tensor) -> rec.Record:
        frame = self.frames[-1]
        slot = frame.next_slot()
        if type(t) not in (torch.Tensor, nn.Parameter) or t.layout != torch.strided or \
                t.device.type not in ("cpu", "cuda"):
            return rec.keep(t)  # subclasses, sparse, meta: passed through untouched
        if is_parameter(t, self._ptrs):
            self.report.parameters += 1
            return rec.keep(t)
        if (frame is self.frames[0] and self.model is not None) or \
                type(t.grad_fn).__name__ in _EXP_OUTPUTS:
            rule = _KEEP
        else:
            where = (frame.name, frame.types, slot)
            rule = self._rules.get(where)
            if rule is None:
                rule = self._rules[where] = self.policy.rule_for(*where)
        rep = self._representation(t, frame, rule)
        ref, ident = identity(t)
        nbytes = t.numel() * t.element_size()
        seen = self._seen.get(ident)
        if seen is None or seen.expired():
            self._seen[ident] = ref
            self.report.add_saved(frame.name, nbytes)
        key = ident + (rep, rule.offload)
        hit = self._cache.get(key)
        if hit is not None and not hit[0].expired():
            record = hit[1]()
            if record is not None:
                return record
        offloads = rule.offload and t.is_cuda
        # An offloaded copy is a snapshot whose copy back starts at version 0: no check.
        record = rec.keep(t, check_version=not offloads) if rep[0] == "keep" else \
            self._build(t, rep, frame)
        if rule.offload:
            rec.offload(record)
        self._cache[key] = (ref, weakref.ref(record))
        label = rep[0] if rep[0] != "bits" else f"bits{rep[1]}"
        self.report.add_held(frame.name, label, t.numel(), nbytes, record.nbytes,
                             record.offloaded)
        return record

    def _representation(self, t: torch.Tensor, frame: Frame, rule: Rule) -> tuple:
        """What to store: ("keep",), ("bits", b), ("mask",), ("bool",), ("shape",), ("pool",)."""
        store = rule.store
        if store is Store.KEEP or t.numel() < self.policy.min_numel or t.dim() == 0 or \
                t.numel() == 0:  # scalars (a loss's total weight, counts) stay exact
            return ("keep",)
        if t.dtype == torch.bool:
            return ("bool",)
        if not t.dtype.is_floating_point:
            pool = store is Store.POOL and frame.kind is Kind.POOL and frame.pool is not None
            return ("pool",) if pool and t.dtype == torch.int64 else ("keep",)
        if t.dtype not in _FLOATS:
            return ("keep",)
        if (frame.kind is Kind.NORM and self.policy.keep_norm_stats
                and tuple(t.shape) != frame.input_shape):
            return ("keep",)
        if store is Store.MASK:
            return ("mask", frame.p) if frame.kind is Kind.DROPOUT else ("mask", None)
        if store is Store.POOL and frame.kind is Kind.POOL and tuple(t.shape) == \
                frame.input_shape:
            return ("shape",)
        if store is Store.AUTO:
            if self.auto is None:
                raise ValueError("a Store.AUTO rule needs auto precision: pass model= (or "
                                 "auto=) to compress")
            frame.auto_used = True
            return ("bits", self.auto.bits(frame.name), True)
        return ("bits", rule.bits or self.bits)

    def _build(self, t: torch.Tensor, rep: tuple, frame: Frame) -> rec.Record:
        kind = rep[0]
        if kind == "bool":
            return rec.bool_mask(t)
        if kind == "pool":
            return rec.pool_index(t, frame.pool)
        if kind == "shape":
            return rec.shape_only(t)
        if kind == "mask":
            return rec.sign_mask(t) if rep[1] is None else rec.scaled_mask(t, rep[1])
        self._count += 1
        record, packed = rec.groups(t, rep[1], self.group_size,
                                    tensor_seed(self._base, self._count))
        if len(rep) > 2:
            self.auto.observe_ranges(frame.name, packed)
        return record


def _first_tensor(output) -> Optional[torch.Tensor]:
    if isinstance(output, torch.Tensor):
        return output
    if isinstance(output, (tuple, list)):
        return next((o for o in output if isinstance(o, torch.Tensor)), None)
    return None


def _unpack(record: rec.Record) -> torch.Tensor:
    return record.unpack()


def compress(model: Optional[nn.Module] = None, *, bits: int = 2, group_size: int = 256,
             policy: Union[Policy, str, None] = None, seed: Optional[int] = None,
             auto: Optional[AutoPrecision] = None) -> Compression:
    """Store the tensors saved for backward compressed while the context is active.

    ``with lowbit.act.compress(model, bits=2) as report: loss = crit(model(x), y)``; then
    ``loss.backward()`` (inside or after the context) decodes them.  See the module docstring
    for what is stored how, and ``lowbit.kernels.pack`` for the exact quantizer.

    Args:
        model: the module whose forward runs inside the context: its module types and names
            feed the policy, ReLU/LeakyReLU/Dropout/MaxPool are stored exactly, its
            parameters and buffers are never compressed, and the report is per module.
            None: every floating activation follows ``policy.default``.
        bits: the code width of rules that name none (1, 2, 4 or 8): under the default
            policy with a model, the width of conv/linear/BatchNorm inputs.
        group_size: elements per min/max group, a power of two in [8, 16384].
        policy: a ``Policy``, an ActNN level name ("L0" ... "L5", "swap"), or None for
            ``default_policy(bits, by_module=model is not None)``: with a model, ``bits`` for
            conv/linear/BatchNorm inputs and 8 bits for other floating tensors.
        seed: the base of every packed tensor's Philox key; None derives one from
            ``torch.initial_seed()`` and a per-process context counter.
        auto: the ``AutoPrecision`` serving ``Store.AUTO`` rules; None uses
            ``auto_precision(model, policy.avg_bits)`` when the policy needs one.
    """
    if isinstance(bits, bool) or bits not in _BITS:
        raise ValueError(f"bits must be one of {_BITS}; got {bits!r}")
    if (isinstance(group_size, bool) or not isinstance(group_size, int) or group_size < 8
            or group_size > 1 << 14 or group_size & (group_size - 1)):
        raise ValueError(f"group_size must be a power of two in [8, 16384]; got {group_size!r}")
    if model is not None and not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module or None; got {type(model).__name__}")
    if policy is None:
        policy = default_policy(bits, by_module=model is not None)
    elif isinstance(policy, str):
        policy = level(policy)
    elif not isinstance(policy, Policy):
        raise TypeError(f"policy must be a Policy, a level name or None; got {policy!r}")
    if auto is not None and not isinstance(auto, AutoPrecision):
        raise TypeError(f"auto must be an AutoPrecision or None; got {type(auto).__name__}")
    if auto is None and policy.uses_auto:
        if model is None:
            raise ValueError(f"policy {policy.name!r} uses auto precision, which allocates "
                             "bits per module: pass model=")
        auto = auto_precision(model, policy.avg_bits)
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)
                             or not 0 <= seed < 1 << 64):
        raise ValueError(f"seed must be an int in [0, 2^64) or None; got {seed!r}")
    return Compression(model, bits, group_size, policy, seed, auto)
