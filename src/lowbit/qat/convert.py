"""Whole-model preparation for QAT: ``prepare(model, config, example_inputs=...)``.

The model is copied (the original is left untouched; the copy keeps its weights), traced with
``torch.fx`` and rewritten:

1. ``Conv2d``/``Linear`` [→ ``BatchNorm``] [→ ReLU/ReLU6/SiLU] chains whose intermediate
   results have no other user become ``FusedConv2d``/``FusedLinear`` at the layer's name, with
   a weight quantizer (``config.weight``) and an output quantizer (``config.activation``);
2. tensor ``add``s become ``QOp``s whose inputs share one requantizer and whose output (after
   a following activation, fused in) is requantized; ``cat``s become ``QOp``s whose inputs
   share one requantizer (the result is then on that grid already);
3. average pools get an output requantizer; float tensor inputs get an input quantizer.

``example_inputs`` runs once through the traced graph in eval mode (BatchNorm statistics are
not touched) so that only tensor-valued operations are rewritten.  When tracing fails (data-
dependent control flow), ``method="auto"`` warns and falls back to module swapping:
``Sequential`` runs of Conv/Linear [BN] [act] are fused and other Conv/Linear layers wrapped;
residual adds written in ``forward`` code are then not seen.  In ``bypass`` mode the prepared
model computes exactly what the float model computes.
"""

from __future__ import annotations

import copy
import dataclasses
import fnmatch
import operator
import warnings
from typing import Any, Dict, Optional, Sequence, Tuple, Union

import torch
from torch import fx, nn
from torch.nn import functional as tF

from ..formats.modes import _StrEnum
from .fused import ACTIVATIONS, FusedConv2d, FusedLinear
from .qop import QOp
from .quantizers import Quantizer, make_quantizer
from .state import QuantMode, Role, set_mode

__all__ = ["QuantizerSpec", "ConvertMethod", "QATConfig", "TracingFallbackWarning", "prepare"]


@dataclasses.dataclass(frozen=True)
class QuantizerSpec:
    """A quantizer by registered name with keyword options (``make_quantizer``).  Parsed from a
    name, a ``{"quantizer": NAME, **options}`` dict (the recipe form) or a spec."""

    name: str
    options: Tuple[Tuple[str, Any], ...] = ()

    @classmethod
    def parse(cls, value: object, param: str) -> "QuantizerSpec":
        if isinstance(value, cls):
            return value
        if isinstance(value, str):
            return cls(value)
        if isinstance(value, dict) and isinstance(value.get("quantizer"), str):
            opts = {k: v for k, v in value.items() if k != "quantizer"}
            return cls(value["quantizer"], tuple(sorted(opts.items())))
        raise TypeError(f"{param} must be a quantizer name, a {{'quantizer': NAME, ...}} dict or "
                        f"a QuantizerSpec; got {value!r}")

    def build(self, role: Role) -> Quantizer:
        """A new quantizer for ``role`` (the spec's own ``role`` option wins)."""
        opts = dict(self.options)
        opts.setdefault("role", role.value)
        return make_quantizer(self.name, **opts)

    def to_dict(self) -> Dict[str, Any]:
        return {"quantizer": self.name, **dict(self.options)}


class ConvertMethod(_StrEnum):
    """How ``prepare`` rewrites the model."""

    #: torch.fx, falling back to module swapping (with a ``TracingFallbackWarning``).
    AUTO = "auto"
    #: torch.fx only; tracing errors propagate.
    FX = "fx"
    #: Module swapping only.
    SWAP = "swap"


class TracingFallbackWarning(UserWarning):
    """``prepare`` could not trace the model with torch.fx and swapped modules instead."""


def _tuple_of_str(value: object, param: str) -> Tuple[str, ...]:
    if isinstance(value, str) or not all(isinstance(v, str) for v in value):
        raise TypeError(f"{param} must be a sequence of name patterns; got {value!r}")
    return tuple(value)


_CONFIG_VERSION = 1


@dataclasses.dataclass(frozen=True)
class QATConfig:
    """What ``prepare`` inserts.

    Attributes:
        weight: weight quantizer spec (default: 8-bit symmetric per-output-channel affine).
        activation: output/input/add quantizer spec (default: 8-bit asymmetric affine, EMA).
        mode: the ``QuantMode`` the prepared model starts in.
        quantize_input: quantize the model's float tensor inputs.
        skip: fnmatch patterns of module names (or fx node names of adds/cats) left in float.
        method: ``auto``, ``fx`` or ``swap``.
        share_inputs: adds and cats requantize their inputs onto one shared grid.
        requantize_pools: average pools get an output quantizer.
        freeze_bn_after: fused layers freeze BatchNorm statistics after this many steps.
    """

    weight: Any = QuantizerSpec("affine", (("axis", 0), ("bits", 8), ("symmetric", True)))
    activation: Any = QuantizerSpec("affine", (("bits", 8),))
    mode: Union[str, QuantMode] = QuantMode.QAT
    quantize_input: bool = True
    skip: Sequence[str] = ()
    method: Union[str, ConvertMethod] = ConvertMethod.AUTO
    share_inputs: bool = True
    requantize_pools: bool = True
    freeze_bn_after: Optional[int] = None

    def __post_init__(self) -> None:
        fix = lambda k, v: object.__setattr__(self, k, v)  # noqa: E731 (frozen dataclass)
        fix("weight", QuantizerSpec.parse(self.weight, "weight"))
        fix("activation", QuantizerSpec.parse(self.activation, "activation"))
        fix("mode", QuantMode.parse(self.mode, "mode"))
        fix("method", ConvertMethod.parse(self.method, "method"))
        fix("skip", _tuple_of_str(self.skip, "skip"))
        for name in ("quantize_input", "share_inputs", "requantize_pools"):
            if not isinstance(getattr(self, name), bool):
                raise TypeError(f"{name} must be a bool; got {getattr(self, name)!r}")

    def to_dict(self) -> Dict[str, Any]:
        """Plain data (JSON-ready when quantizer options are), with a format ``version``."""
        out: Dict[str, Any] = {"version": _CONFIG_VERSION}
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            out[f.name] = v.to_dict() if isinstance(v, QuantizerSpec) else \
                v.value if isinstance(v, _StrEnum) else list(v) if f.name == "skip" else v
        return out

    @classmethod
    def from_dict(cls, data: Dict[str, Any]) -> "QATConfig":
        """The inverse of ``to_dict``.

        Raises:
            ValueError: an unknown version or field.
        """
        data = dict(data)
        version = data.pop("version", _CONFIG_VERSION)
        if version != _CONFIG_VERSION:
            raise ValueError(f"QATConfig version {version!r} is not supported "
                             f"(this lowbit reads {_CONFIG_VERSION})")
        unknown = set(data) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise ValueError(f"unknown QATConfig fields {sorted(unknown)}")
        return cls(**data)

    def skipped(self, name: str) -> bool:
        """Whether ``name`` matches a ``skip`` pattern."""
        return any(fnmatch.fnmatchcase(name, p) for p in self.skip)

    def fused(self, layer: nn.Module, bn: Optional[nn.Module],
              act: Optional[nn.Module]) -> nn.Module:
        """A fused layer for these modules with this config's quantizers."""
        cls = FusedConv2d if isinstance(layer, nn.Conv2d) else FusedLinear
        return cls(layer, bn, act, weight_quantizer=self.weight.build(Role.WEIGHT),
                   output_quantizer=self.activation.build(Role.ACTIVATION),
                   freeze_bn_after=self.freeze_bn_after)


_LAYERS = (nn.Conv2d, nn.Linear)
_ACT_FUNCTIONS = {tF.relu: nn.ReLU, torch.relu: nn.ReLU, tF.relu6: nn.ReLU6, tF.silu: nn.SiLU}
_ADDS = {operator.add, torch.add, operator.iadd}
_CATS = {torch.cat, torch.concat}
_POOL_MODULES = (nn.AvgPool2d, nn.AdaptiveAvgPool2d)
_POOL_FUNCTIONS = {tF.avg_pool2d, tF.adaptive_avg_pool2d}


def prepare(model: nn.Module, config: Optional[QATConfig] = None, *,
            example_inputs: Union[torch.Tensor, Tuple[Any, ...]]) -> nn.Module:
    """A QAT copy of ``model`` (see the module docstring), in ``config.mode``.

    Args:
        model: any ``nn.Module``; it is deep-copied, never modified.
        config: a ``QATConfig`` (default ``QATConfig()``: int8 per-channel weights, int8
            activations).
        example_inputs: a tensor or a tuple of positional inputs for one forward pass.

    Returns:
        A ``torch.fx.GraphModule`` (traced) or the swapped copy.

    Raises:
        TypeError: bad arguments.
        Exception: with ``method="fx"``, whatever tracing raised.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module; got {type(model).__name__}")
    config = QATConfig() if config is None else config
    if not isinstance(config, QATConfig):
        raise TypeError(f"config must be a QATConfig or None; got {type(config).__name__}")
    if isinstance(example_inputs, torch.Tensor):
        example_inputs = (example_inputs,)
    if not isinstance(example_inputs, tuple):
        raise TypeError(f"example_inputs must be a tensor or a tuple; got {example_inputs!r}")
    model = copy.deepcopy(model)
    prepared = None
    if config.method is not ConvertMethod.SWAP:
        try:
            gm = fx.symbolic_trace(model)
        except Exception as err:  # noqa: BLE001 (any tracing failure selects the fallback)
            if config.method is ConvertMethod.FX:
                raise
            warnings.warn(f"torch.fx could not trace {type(model).__name__} ({type(err).__name__}:"
                          f" {err}); swapping modules instead: residual adds and concatenations "
                          "in forward code are not quantized", TracingFallbackWarning,
                          stacklevel=2)
        else:
            prepared = _prepare_fx(gm, config, example_inputs)
    if prepared is None:
        from ._swap import prepare_swap

        prepared = prepare_swap(model, config)
    return set_mode(prepared, config.mode)


def _shape_prop(gm: fx.GraphModule, example_inputs: tuple) -> None:
    from torch.fx.passes.shape_prop import ShapeProp

    modes = {m: m.training for m in gm.modules()}
    gm.eval()
    try:
        with torch.no_grad():
            ShapeProp(gm).propagate(*example_inputs)
    finally:
        for m, training in modes.items():
            m.training = training


def _is_float_tensor(node: Any) -> bool:
    meta = node.meta.get("tensor_meta") if isinstance(node, fx.Node) else None
    return meta is not None and hasattr(meta, "dtype") and meta.dtype.is_floating_point


def _sole_user(node: fx.Node) -> Optional[fx.Node]:
    return next(iter(node.users)) if len(node.users) == 1 else None


def _as_activation(node: Optional[fx.Node], modules: Dict[str, nn.Module]) -> Optional[nn.Module]:
    """A fresh activation module equal to ``node``'s op, or None if it is not one."""
    if node is None:
        return None
    if node.op == "call_module" and isinstance(modules.get(node.target), ACTIVATIONS):
        return copy.deepcopy(modules[node.target])
    if node.op == "call_function" and node.target in _ACT_FUNCTIONS and len(node.args) == 1 \
            and set(node.kwargs) <= {"inplace"}:
        return _ACT_FUNCTIONS[node.target](**node.kwargs)
    return None


def _set_submodule(root: nn.Module, path: str, module: nn.Module) -> None:
    parent, _, name = path.rpartition(".")
    setattr(root.get_submodule(parent) if parent else root, name, module)


def _fuse_layers(gm: fx.GraphModule, cfg: QATConfig) -> set:
    """Fuse the layer chains; returns the names of the modules absorbed into fused layers."""
    absorbed = set()
    modules = dict(gm.named_modules())
    for node in list(gm.graph.nodes):
        layer = modules.get(node.target) if node.op == "call_module" else None
        if not isinstance(layer, _LAYERS) or cfg.skipped(node.target):
            continue
        chain, bn, nxt = [node], None, _sole_user(node)
        bn_type = nn.BatchNorm2d if isinstance(layer, nn.Conv2d) else nn.BatchNorm1d
        cand = modules.get(nxt.target) if nxt is not None and nxt.op == "call_module" else None
        if isinstance(cand, (bn_type, nn.SyncBatchNorm)) and not cfg.skipped(nxt.target) \
                and cand.track_running_stats and cand.num_features == layer.weight.shape[0]:
            bn = cand
            chain.append(nxt)
            nxt = _sole_user(nxt)
        act = _as_activation(nxt, modules)
        if act is not None:
            chain.append(nxt)
        _set_submodule(gm, node.target, cfg.fused(layer, bn, act))
        chain[-1].replace_all_uses_with(node)
        for n in reversed(chain[1:]):
            gm.graph.erase_node(n)
            if n.op == "call_module":
                absorbed.add(n.target)
    return absorbed


def _insert_module(gm: fx.GraphModule, node: fx.Node, name: str, module: nn.Module,
                   args: tuple, kwargs: dict) -> fx.Node:
    gm.add_submodule(name, module)
    if node.op == "placeholder":  # after every placeholder: they head the graph
        first = next(n for n in gm.graph.nodes if n.op != "placeholder")
        with gm.graph.inserting_before(first):
            return gm.graph.call_module(name, args, kwargs)
    with gm.graph.inserting_after(node):
        return gm.graph.call_module(name, args, kwargs)


def _wrap_ops(gm: fx.GraphModule, cfg: QATConfig) -> None:
    modules = dict(gm.named_modules())
    act_q = lambda: cfg.activation.build(Role.ACTIVATION)  # noqa: E731
    for node in list(gm.graph.nodes):
        if node.op != "call_function" or cfg.skipped(node.name) or not _is_float_tensor(node):
            continue
        is_add = node.target in _ADDS and all(_is_float_tensor(a) for a in node.args[:2])
        is_cat = node.target in _CATS
        if not (is_add or is_cat):
            continue
        shared = act_q() if cfg.share_inputs else None
        act_node = _sole_user(node) if is_add else None
        act = _as_activation(act_node, modules)
        out_q = act_q() if is_add or shared is None else None
        op = torch.add if node.target is operator.iadd else node.target
        qop = QOp(op, input_quantizer=shared, output_quantizer=out_q, act=act)
        new = _insert_module(gm, node, f"{node.name}_qop", qop, node.args, node.kwargs)
        new.meta = dict(node.meta)  # later passes read the tensor metadata
        last = act_node if act is not None else node
        last.replace_all_uses_with(new)
        if act is not None:
            gm.graph.erase_node(act_node)
        gm.graph.erase_node(node)


def _requantize(gm: fx.GraphModule, cfg: QATConfig) -> None:
    modules = dict(gm.named_modules())
    for node in list(gm.graph.nodes):
        pool = (node.op == "call_module" and isinstance(modules.get(node.target), _POOL_MODULES)) \
            or (node.op == "call_function" and node.target in _POOL_FUNCTIONS)
        name = node.target if node.op == "call_module" else node.name
        wanted = (pool and cfg.requantize_pools and not cfg.skipped(name)) or \
            (node.op == "placeholder" and cfg.quantize_input)
        if not wanted or not _is_float_tensor(node):
            continue
        users = list(node.users)
        name = f"{node.name}_quantizer"
        new = _insert_module(gm, node, name, cfg.activation.build(Role.ACTIVATION), (node,), {})
        new.meta = dict(node.meta)
        for u in users:
            u.replace_input_with(node, new)


def _prepare_fx(gm: fx.GraphModule, cfg: QATConfig, example_inputs: tuple) -> fx.GraphModule:
    _shape_prop(gm, example_inputs)
    absorbed = _fuse_layers(gm, cfg)
    _wrap_ops(gm, cfg)
    _requantize(gm, cfg)
    gm.graph.lint()
    gm.recompile()
    # A BatchNorm now owned by a fused layer is still reachable at its old name too, and
    # delete_all_unused_submodules keeps it (it walks modules once by identity): drop it here.
    called = {n.target for n in gm.graph.nodes if n.op == "call_module"}
    for name in sorted(absorbed - called, key=len, reverse=True):
        gm.delete_submodule(name)
    gm.delete_all_unused_submodules()
    return gm
