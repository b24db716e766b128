"""Quantizer modules: a fake quantizer plus the state that feeds it (an observer, learned
parameters), switched by the state machine (``lowbit.qat.state``), and a registry of quantizer
factories by name.

Every quantizer describes its grid as affine parameters (``QParams``), which is what
``export_int`` and ``export_onnx`` write out.  Learned quantizers (LSQ, PACT, TQT) live in
``lowbit.qat.learned``.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Callable, Dict, List, Optional, Sequence, Union

import torch
from torch import nn

from ..formats import FixedPoint, Rounding
from . import functional as F
from ._onnx import QDQ, storage_dtype
from .observers import Observer, make_observer, range_to_qparams
from .state import Role, Switches

__all__ = [
    "QParams", "Quantizer", "AffineQuantizer", "QFormatQuantizer", "BinaryQuantizer",
    "TernaryQuantizer", "QUANTIZERS", "register_quantizer", "make_quantizer", "code_range",
]


@dataclasses.dataclass(frozen=True)
class QParams:
    """The affine grid of a quantizer: value = (code - zero_point)·scale, code in
    [qmin, qmax], one parameter per tensor / channel (``axis``) / group (``group_size``)."""

    scale: torch.Tensor
    zero_point: torch.Tensor
    qmin: int
    qmax: int
    axis: Optional[int] = None
    group_size: Optional[int] = None


def code_range(bits: int, *, signed: bool, narrow: bool = False) -> tuple:
    """(qmin, qmax) of ``bits``-bit codes: signed ``[-2^(b-1), 2^(b-1)-1]`` (``narrow``:
    lower bound ``-2^(b-1)+1``), unsigned ``[0, 2^b-1]``."""
    if isinstance(bits, bool) or not isinstance(bits, int) or not 1 + signed <= bits <= 16:
        raise ValueError(f"bits must be an int in [{1 + signed}, 16]; got {bits!r}")
    if not signed:
        return 0, 2**bits - 1
    return -(2 ** (bits - 1)) + int(narrow), 2 ** (bits - 1) - 1


class Quantizer(nn.Module):
    """Base class.  ``forward(x)`` observes ``x`` when the *observe* switch is on and returns
    ``quantize(x)`` when the *quantize* switch is on, else ``x`` itself.  New quantizers start
    with both switches on (mode ``qat``).

    Subclasses implement ``observe`` (update statistics / initialise parameters),
    ``quantize`` (the fake quantizer) and ``qparams`` (the grid as ``QParams``).
    """

    #: True when the grid is computed from the tensor itself (``qparams`` needs ``x``).
    grid_from_data = False

    def __init__(self, *, role: Union[str, Role] = "activation") -> None:
        super().__init__()
        self.role = Role.parse(role, "role")
        self.observing, self.quantizing = True, True
        self._onnx: Optional[tuple] = None

    @property
    def switches(self) -> Switches:
        """The current (observe, quantize) switches."""
        return Switches(self.observing, self.quantizing)

    def set_switches(self, switches: Switches) -> None:
        """Set both switches (``lowbit.qat.set_mode`` calls this)."""
        self.observing, self.quantizing = switches.observe, switches.quantize

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self._onnx is not None and torch.onnx.is_in_onnx_export():
            return QDQ.apply(x, *self._onnx)
        if self.observing:
            self.observe(x)
        return self.quantize(x) if self.quantizing else x

    def forward_shared(self, tensors: Sequence[torch.Tensor]) -> List[torch.Tensor]:
        """Quantize several tensors on one grid (residual adds, concatenations): they are
        observed together as one batch, then each is quantized."""
        if self._onnx is not None and torch.onnx.is_in_onnx_export():
            return [QDQ.apply(t, *self._onnx) for t in tensors]
        if self.observing:
            self.observe(torch.cat([t.detach().reshape(-1) for t in tensors]))
        return [self.quantize(t) if self.quantizing else t for t in tensors]

    def initialize(self, x: torch.Tensor) -> None:
        """Set ranges/parameters from ``x`` now, whatever the switches (fused layers call it on
        their weights at construction so shapes exist before an optimizer is built)."""
        self.observe(x)

    def observe(self, x: torch.Tensor) -> None:
        raise NotImplementedError

    def quantize(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def qparams(self, x: Optional[torch.Tensor] = None) -> QParams:
        """The grid; weight quantizers whose grid depends on the tensor (binary, ternary)
        need ``x``."""
        raise NotImplementedError

    def onnx_constants(self, x: Optional[torch.Tensor] = None) -> tuple:
        """(scale, zero_point, qmin, qmax, axis) as ONNX QDQ constants (axis None: per
        tensor).

        Raises:
            ValueError: per-group parameters or codes wider than 8 bits.
        """
        p = self.qparams(x)
        if p.group_size is not None:
            raise ValueError("ONNX opset 13 QuantizeLinear has no per-group (block) mode; "
                             f"{type(self).__name__} uses group_size={p.group_size}")
        dtype = storage_dtype(p.qmin, p.qmax)
        scale = p.scale.detach().float().clone()
        zp = p.zero_point.detach().round().to(dtype)
        if p.axis is None:
            scale, zp = scale.reshape(()), zp.reshape(())
        return scale, zp, p.qmin, p.qmax, p.axis

    def _load_from_state_dict(self, state_dict: dict, prefix: str, *args, **kwargs) -> None:
        # Parameters shaped on first use (per-channel scales) adopt the saved shapes.
        for name, t in list(self._buffers.items()) + list(self._parameters.items()):
            saved = state_dict.get(prefix + name)
            if t is not None and saved is not None and saved.shape != t.shape:
                t.data = torch.empty_like(saved)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)


def _need_range(q: Quantizer, t: torch.Tensor) -> None:
    if t.numel() == 0:
        raise RuntimeError(f"{type(q).__name__} has no range yet: observe data first (mode "
                           "'calibrate' or 'qat', or call initialize(x))")


class AffineQuantizer(Quantizer):
    """Uniform affine quantization with ranges from an observer (TorchQuant's
    ``AffineQuantizer``): ``s, z = range_to_qparams(observer range)``, then
    ``affine_quantize(x, s, z, qmin, qmax)``.

    Codes: asymmetric ``[0, 2^b - 1]`` with a zero point; symmetric signed
    ``[-(2^(b-1) - 1), 2^(b-1) - 1]`` (narrow, zero point 0); symmetric unsigned
    ``[0, 2^b - 1]`` (``signed=False``, e.g. after ReLU).

    Args:
        bits: 1..16 (2..16 for signed symmetric codes).
        symmetric: zero point fixed at 0.
        signed: for symmetric quantizers, whether codes are signed.
        axis, group_size: granularity (per-tensor by default).
        observer: an ``Observer`` or a name in ``OBSERVERS`` (default ``minmax`` for weights,
            ``ema`` for activations).
        observer_options: keyword arguments for a named observer.
        ste: ``identity`` or ``clipped``.
        role: ``weight`` or ``activation``.
    """

    def __init__(self, bits: int = 8, *, symmetric: bool = False, signed: bool = True,
                 axis: Optional[int] = None, group_size: Optional[int] = None,
                 observer: Union[str, Observer, None] = None,
                 observer_options: Optional[dict] = None, ste: str = "identity",
                 role: str = "activation") -> None:
        super().__init__(role=role)
        self.bits, self.symmetric, self.signed = bits, bool(symmetric), bool(signed)
        self.axis, self.group_size = axis, group_size
        self.qmin, self.qmax = code_range(bits, signed=symmetric and signed, narrow=True)
        self.ste = F.STE.parse(ste, "ste")
        if observer is None:
            observer = "minmax" if self.role is Role.WEIGHT else "ema"
        if isinstance(observer, str):
            observer = make_observer(observer, axis=axis, group_size=group_size, qmin=self.qmin,
                                     qmax=self.qmax, symmetric=self.symmetric,
                                     **(observer_options or {}))
        elif not isinstance(observer, Observer):
            raise TypeError(f"observer must be an Observer or a name; got {observer!r}")
        self.observer = observer
        self.register_buffer("scale", torch.empty(0))
        self.register_buffer("zero_point", torch.empty(0))

    def observe(self, x: torch.Tensor) -> None:
        self.observer(x)
        lo, hi = self.observer.bounds()
        self.scale, self.zero_point = range_to_qparams(lo, hi, self.qmin, self.qmax,
                                                       symmetric=self.symmetric)

    def quantize(self, x: torch.Tensor) -> torch.Tensor:
        _need_range(self, self.scale)
        return F.affine_quantize(x, self.scale, self.zero_point, self.qmin, self.qmax,
                                 axis=self.axis, group_size=self.group_size, ste=self.ste)

    def qparams(self, x: Optional[torch.Tensor] = None) -> QParams:
        _need_range(self, self.scale)
        return QParams(self.scale, self.zero_point, self.qmin, self.qmax, self.axis,
                       self.group_size)

    def extra_repr(self) -> str:
        return (f"bits={self.bits}, symmetric={self.symmetric}, codes=[{self.qmin}, {self.qmax}], "
                f"axis={self.axis}, group_size={self.group_size}, ste={self.ste.value}, "
                f"role={self.role.value}")


class QFormatQuantizer(Quantizer):
    """Q-format fixed point ``fixed<wl, fl>`` (TorchQuant's ``QfmtQuantizer``, with the code
    range it advertises): a fixed ``fl``, or ``fl = wl - 1 - int_bits`` with
    ``int_bits = floor(log2 amax) + 1`` from the observed range (0 when amax = 0), so that
    ``amax < 2^int_bits`` fits in the ``wl - 1`` magnitude bits.

    Args:
        wl: word length with the sign, 2..25.
        fl: fractional bits, or None to derive them from the observer.
        observer: observer or name (used only when ``fl`` is None).
        rounding: a ``lowbit.Rounding`` mode.
        ste: ``identity`` or ``clipped``.
        backend: ``lowbit.quantize``'s backend.
    """

    def __init__(self, wl: int = 8, fl: Optional[int] = None, *,
                 observer: Union[str, Observer] = "minmax", rounding: str = "nearest",
                 ste: str = "identity", backend: str = "auto", role: str = "activation") -> None:
        super().__init__(role=role)
        FixedPoint(wl, 0 if fl is None else fl)  # validates wl and fl
        self.wl = wl
        self.rounding = Rounding.parse(rounding, "rounding")
        self.ste = F.STE.parse(ste, "ste")
        self.backend = backend
        self.observer = make_observer(observer, axis=None, group_size=None, qmin=-(2 ** (wl - 1)),
                                      qmax=2 ** (wl - 1) - 1, symmetric=True) \
            if isinstance(observer, str) else observer
        self.register_buffer("fl", torch.tensor(0 if fl is None else fl))
        self.register_buffer("ready", torch.tensor(fl is not None))
        self.fixed_fl = fl is not None

    def observe(self, x: torch.Tensor) -> None:
        if self.fixed_fl:
            return
        self.observer(x)
        lo, hi = self.observer.bounds()
        amax = float(torch.maximum(-lo, hi).max())
        int_bits = math.floor(math.log2(amax)) + 1 if amax > 0 else 0
        fl = min(max(self.wl - 1 - int_bits, -(128 - self.wl)), 149)
        self.fl.fill_(fl)
        self.ready.fill_(True)

    def _fl(self) -> int:
        if not bool(self.ready):
            raise RuntimeError("QFormatQuantizer has no fl yet: observe data first (mode "
                               "'calibrate' or 'qat', or call initialize(x))")
        return int(self.fl)

    def quantize(self, x: torch.Tensor) -> torch.Tensor:
        return F.qfmt_quantize(x, self.wl, self._fl(), rounding=self.rounding, ste=self.ste,
                               backend=self.backend)

    def qparams(self, x: Optional[torch.Tensor] = None) -> QParams:
        scale = torch.tensor(2.0 ** -self._fl())
        return QParams(scale, torch.zeros(()), -(2 ** (self.wl - 1)), 2 ** (self.wl - 1) - 1)

    def extra_repr(self) -> str:
        return f"wl={self.wl}, fl={int(self.fl)}, rounding={self.rounding.value}, ste={self.ste.value}"


class BinaryQuantizer(Quantizer):
    """XNOR-Net weights ``α·sign(w)`` (``functional.binary_quantize``); nothing to observe.
    As an affine grid: codes {-1, +1}, scale α per output channel, zero point 0."""

    grid_from_data = True

    def __init__(self, *, axis: Optional[int] = 0, role: str = "weight") -> None:
        super().__init__(role=role)
        self.axis = axis

    def observe(self, x: torch.Tensor) -> None:
        pass

    def quantize(self, x: torch.Tensor) -> torch.Tensor:
        return F.binary_quantize(x, axis=self.axis)

    def qparams(self, x: Optional[torch.Tensor] = None) -> QParams:
        if x is None:
            raise ValueError("BinaryQuantizer's scale depends on the weights: pass x")
        alpha = F.binary_quantize(x.detach(), axis=self.axis).abs()
        scale = alpha.amax(dim=F._reduce_dims(x, self.axis)) if self.axis is not None \
            else alpha.max()
        scale = torch.clamp(scale, min=torch.finfo(torch.float32).eps)
        return QParams(scale, torch.zeros_like(scale), -1, 1, self.axis)


class TernaryQuantizer(Quantizer):
    """Ternary weights ``α·sign(w)·1[|w| > Δ]`` (``functional.ternary_quantize``).  As an
    affine grid: codes {-1, 0, +1}, scale α per output channel."""

    grid_from_data = True

    def __init__(self, *, axis: Optional[int] = 0, threshold: float = 0.7,
                 role: str = "weight") -> None:
        super().__init__(role=role)
        self.axis, self.threshold = axis, threshold

    def observe(self, x: torch.Tensor) -> None:
        pass

    def quantize(self, x: torch.Tensor) -> torch.Tensor:
        return F.ternary_quantize(x, axis=self.axis, threshold=self.threshold)

    def qparams(self, x: Optional[torch.Tensor] = None) -> QParams:
        if x is None:
            raise ValueError("TernaryQuantizer's scale depends on the weights: pass x")
        t = self.quantize(x.detach()).abs()
        scale = t.amax(dim=F._reduce_dims(x, self.axis)) if self.axis is not None else t.max()
        scale = torch.clamp(scale, min=torch.finfo(torch.float32).eps)
        return QParams(scale, torch.zeros_like(scale), -1, 1, self.axis)


#: Quantizer factories by name: ``factory(**options) -> Quantizer``.
QUANTIZERS: Dict[str, Callable[..., Quantizer]] = {
    "affine": AffineQuantizer,
    "qformat": QFormatQuantizer,
    "binary": BinaryQuantizer,
    "ternary": TernaryQuantizer,
}


def register_quantizer(name: str, factory: Callable[..., Quantizer]) -> None:
    """Register ``factory`` under ``name`` (a later registration replaces an earlier one).

    Raises:
        TypeError: ``name`` is not a string or ``factory`` not callable.
    """
    if not isinstance(name, str) or not name:
        raise TypeError(f"name must be a non-empty str; got {name!r}")
    if not callable(factory):
        raise TypeError(f"factory must be callable; got {factory!r}")
    QUANTIZERS[name] = factory


def make_quantizer(name: str, **options) -> Quantizer:
    """``QUANTIZERS[name](**options)``.

    Raises:
        ValueError: an unknown name.
    """
    if name not in QUANTIZERS:
        raise ValueError(f"quantizer must be one of {sorted(QUANTIZERS)}; got {name!r}")
    return QUANTIZERS[name](**options)
