"""The runtime of one role: scaling, the format along a GEMM's axis, seeds, and the trace."""

from __future__ import annotations

import contextlib
import dataclasses
from typing import Dict, Iterator, List, Optional, Tuple

import torch

from ..formats import BlockFormat, FloatFormat, Format
from ..ops.quantize import quantize
from .recipe import Role
from .rng import derive_seed, stable_key
from .scaling import Granularity, delayed_amax, group_amax, scale_from_amax

__all__ = ["RoleQuantizer", "QuantEvent", "trace"]


@dataclasses.dataclass(frozen=True)
class QuantEvent:
    """One quantization seen by ``trace``: which module, role and GEMM, onto which format
    (after re-axing a block format), the tensor's shape and the seed (stochastic only)."""

    module: str
    role: str
    gemm: str
    format: str
    shape: Tuple[int, ...]
    seed: Optional[int]


_TRACE: Optional[List[QuantEvent]] = None
_CARRIERS = {torch.bfloat16: FloatFormat(8, 7), torch.float16: FloatFormat(5, 10)}
# The axes and GEMM tags the layers use, precomputed per quantizer.
_AXES = (None, -2, -1, 0, 1)
_GEMM_TAGS = ("forward", "dgrad", "wgrad", "backward", "mean", "std", "running_mean",
              "running_var")


@contextlib.contextmanager
def trace() -> Iterator[List[QuantEvent]]:
    """Record every quantization made by converted modules inside the ``with`` block.

    Example::

        with lowbit.nn.trace() as events:
            model(x).sum().backward()
        {(e.module, e.role, e.gemm) for e in events}
    """
    global _TRACE
    previous, events = _TRACE, []
    _TRACE = events
    try:
        yield events
    finally:
        _TRACE = previous


def _single_axis(fmt: Format) -> bool:
    return isinstance(fmt, BlockFormat) and isinstance(fmt.axis, int)


def _holds(fmt: Format, dtype: torch.dtype) -> bool:
    """True when ``fmt`` holds every value of ``dtype`` (fp32 for a bf16 tensor, as under
    autocast): rounding is then the identity, which ``lowbit.quantize`` would refuse to
    compute in that dtype."""
    carrier = _CARRIERS.get(dtype)
    return carrier is not None and isinstance(fmt, FloatFormat) and carrier.fits_in(fmt)


class RoleQuantizer(torch.nn.Module):
    """``x ↦ s · Q(x / s)`` for one role of one module (``lowbit.nn.scaling``).

    A block format whose blocks run along one axis is re-axed to the reduction axis of the
    GEMM the tensor feeds (``axis``); tile and whole-tensor blocks are used as given.  Row
    scaling reduces along the same axis.  Channel scaling uses ``channel_axis``.

    With scaling, ``x / s`` is clamped to ``±max_fmt`` before rounding (a saturating cast:
    a delayed scale may lag behind the amax).  Scaling computes ``x / s`` and ``s · Q`` in
    fp32 and returns the tensor's dtype: for a bf16/fp16 tensor and a scale that is not a
    power of two, that last cast rounds again (``pow2=True`` or fp32 tensors avoid it).
    """

    def __init__(self, spec: Role, *, module: str, role: str, channel_axis: int = 0,
                 channels: Optional[int] = None, device: Optional[torch.device] = None):
        super().__init__()
        self.spec = spec
        self.module_name = module
        self.role = role
        self.channel_axis = channel_axis
        # Filled once here and only read later: torch.compile cannot trace a dict that a
        # custom autograd function mutates.
        self._formats: Dict[Optional[int], Format] = {a: self._reaxed(a) for a in _AXES}
        self._keys: Dict[str, int] = {g: stable_key(module, role, g) for g in _GEMM_TAGS}
        scaling = spec.scaling
        self._fmt_max = None if isinstance(spec.format, BlockFormat) else float(spec.format.max)
        if scaling is not None and scaling.delayed:
            if scaling.granularity is Granularity.CHANNEL and channels is None:
                raise ValueError(f"{module or 'module'}: delayed channel scaling of {role!r} "
                                 "needs a known channel count, which this module lacks")
            groups = channels if scaling.granularity is Granularity.CHANNEL else 1
            self.register_buffer("amax_history",
                                 torch.zeros(scaling.history, groups, device=device))

    @property
    def axis_dependent(self) -> bool:
        """True when the result depends on the GEMM's reduction axis (so each GEMM
        quantizes the saved high-precision tensor itself)."""
        s = self.spec.scaling
        return _single_axis(self.spec.format) or (s is not None
                                                  and s.granularity is Granularity.ROW)

    @property
    def stochastic(self) -> bool:
        return self.spec.stochastic

    def _reaxed(self, axis: Optional[int]) -> Format:
        fmt = self.spec.format
        if axis is not None and _single_axis(fmt):
            fmt = dataclasses.replace(fmt, axis=axis)
        return fmt

    def format_for(self, axis: Optional[int]) -> Format:
        """The format with its blocks along ``axis`` (see the class docstring)."""
        fmt = self._formats.get(axis)
        return self._reaxed(axis) if fmt is None else fmt

    def seed(self, gemm: str, global_seed: int, step: int) -> Optional[int]:
        if not self.spec.stochastic:
            return None
        key = self._keys.get(gemm)
        if key is None:
            key = stable_key(self.module_name, self.role, gemm)
        return derive_seed(global_seed, key, step)

    def forward(self, x: torch.Tensor, *, gemm: str, axis: Optional[int] = None,
                global_seed: int = 0, step: int = 0) -> torch.Tensor:
        fmt = self.format_for(axis)
        seed = self.seed(gemm, global_seed, step)
        if _TRACE is not None:
            _TRACE.append(QuantEvent(self.module_name, self.role, gemm, repr(fmt),
                                     tuple(x.shape), seed))
        if _single_axis(fmt) and x.dim() > 1 and fmt.axis % x.dim() != x.dim() - 1:
            # Blocks along another axis: round with that axis moved last, where the block
            # kernels are fastest (same blocks, so the same values for deterministic modes;
            # the stochastic stream then counts elements in the moved layout).
            moved = x.movedim(fmt.axis, -1).contiguous()
            y = self._round(moved, self._formats[-1], seed)
            return y.movedim(-1, fmt.axis).contiguous()
        return self._round(x, fmt, seed, axis)

    def _round(self, x: torch.Tensor, fmt: Format, seed: Optional[int],
               axis: Optional[int] = -1) -> torch.Tensor:
        spec = self.spec
        if spec.scaling is None:
            if _holds(fmt, x.dtype):
                return x
            return quantize(x, fmt, rounding=spec.rounding, rbits=spec.rbits, seed=seed)
        x32 = x.float()
        s = self._scale(x32, axis)
        # Saturate as Transformer Engine's and torchao's scaled casts do: a delayed scale can
        # lag behind a growing amax, and overflow would otherwise give Inf/NaN.
        scaled = (x32 / s).clamp(-self._fmt_max, self._fmt_max)
        y = quantize(scaled, fmt, rounding=spec.rounding, rbits=spec.rbits, seed=seed) * s
        return y.to(x.dtype)

    def _scale(self, x: torch.Tensor, axis: Optional[int]) -> torch.Tensor:
        scaling = self.spec.scaling
        gran = scaling.granularity
        if gran is Granularity.ROW:
            group_axis = -1 if axis is None else axis
        else:
            group_axis = self.channel_axis
        amax = group_amax(x, gran, group_axis)
        if scaling.delayed:
            history = self.amax_history
            if history.device != x.device:
                history = self.amax_history = history.to(x.device)
            if amax.numel() != history.shape[1]:
                raise ValueError(f"{self.module_name}: {self.role} has {amax.numel()} "
                                 f"scaling groups but its history holds {history.shape[1]}")
            amax = delayed_amax(history, amax)
        return scale_from_amax(amax, self._fmt_max, scaling.pow2)

    def extra_repr(self) -> str:
        spec = self.spec
        text = f"{spec.format!r}, rounding={spec.rounding.value}"
        if spec.scaling is not None:
            text += f", scaling={spec.scaling}"
        return text
