"""``LowPrecision``: any torch optimizer with low-precision gradients, state, weights and
master weights, stochastic-rounded updates and loss scaling."""

from __future__ import annotations

from typing import Any, Callable, Dict, Iterator, List, Mapping, Optional, Tuple, Union

import torch

from ..formats import Format, Rounding
from ..kernels.philox import resolve_seed
from ..ops.quantize import quantize, result_dtype
from ._args import (DTYPE_FORMATS, FormatLike, check_optimizer, parse_format, roundings,
                    state_formats)
from ._seeds import derive_seed
from ._state_names import state_names
from ._wrapper import Wrapper
from .scaling import LossScaler, LossScaleSpec

__all__ = ["LowPrecision"]


class LowPrecision(Wrapper):
    """Wrap ``optimizer`` so that gradients, optimizer state, weights and master weights live
    in low-precision formats.

    ``step()`` does, for each parameter ``p`` (index ``i`` in ``param_groups`` order) with a
    gradient, at step ``t`` (the number of earlier ``step()`` calls), writing ``Q_f^m(x, r)``
    for ``lowbit.quantize(x, f, rounding=m, seed=derive_seed(seed, i, t, r))``:

    1. ``g ← p.grad / S`` in fp32 (``S`` the loss scale, 1 without one).  With a dynamic scale,
       if any ``g`` of the step is Inf/NaN the step is skipped: nothing but the scale changes
       (``DynamicLossScale``).
    2. ``g ← Q_grad^rounding[grad](g, "grad")``.
    3. The inner optimizer updates a fp32 working weight ``w`` with ``g``: ``w`` is the master
       copy ``m_i`` when ``master`` is set, otherwise ``p`` in fp32.  Its state is created in
       fp32 and its formulas (momentum, Nesterov, weight decay, Adam/AdamW moments) are its own.
    4. With ``master``: ``m_i ← Q_master^update_rounding(w', "update")`` and
       ``p ← Q_weight^rounding[weight](m_i, "weight")``.  Without: ``p ←
       Q_weight^update_rounding(w', "update")``, so with ``update_rounding="stochastic"`` the
       new weight is ``w + Δ`` rounded up with probability equal to its distance from the
       grid point below (Gupta et al., ICML 2015) and small updates survive on average.
    5. Each state tensor ``s`` named by ``state``: ``s ← Q_state^rounding[state](s,
       "state/<name>")``.
    6. ``p.grad`` is overwritten with ``g`` (unscaled and quantized, in its own dtype), as
       ``GradScaler.unscale_`` and QPyTorch's ``OptimLP`` do.

    At construction (and in ``add_param_group``) ``m_i ← Q_master^rounding[weight](p,
    "init/master")`` and ``p ← Q_weight^rounding[weight](m_i or p, "init/weight")``, so the
    weights are in ``weight`` from the first forward pass on.  Formats without a value
    (None) skip their rounding; a non-fp32 parameter with ``weight=None`` is kept in its dtype's
    format (``bf16``/``fp16``), so a bf16 model gets stochastic-rounded updates by default.

    Args:
        optimizer: the torch optimizer to wrap (SGD, Adam, AdamW or any optimizer that reads
            each gradient once per step; LBFGS is rejected).  Its ``param_groups`` and
            ``state`` are shared, so schedulers and ``opt.state[p]`` work as usual.
        weight: format of the weights after every step, or None.
        grad: format of the gradients the inner optimizer sees, or None.
        state: format of every state tensor of the optimizer (the names ``state_names``
            registers for its type, e.g. ``exp_avg``, ``exp_avg_sq``, ``max_exp_avg_sq`` for
            Adam, ``momentum_buffer`` for SGD; for an unregistered type, every floating tensor
            of the parameter's shape), or a mapping ``{name: format or None}``.
        master: format of a master copy of the weights (e.g. ``"fp32"``, ``"fp16"``), or None
            for no master copy.
        rounding: mode of the ``grad``, ``state`` and ``weight`` roundings, or a mapping
            ``{"grad"|"state"|"weight": mode}`` (missing roles: ``"nearest"``).
        update_rounding: mode of the rounding that stores the updated value (onto ``master``,
            or onto ``weight`` without a master).
        loss_scale: None, a static float ``S``, ``"dynamic"`` or a ``DynamicLossScale``.
        seed: global 64-bit seed of the stochastic roundings (None: drawn from torch's default
            generator); see ``lowbit.optim.derive_seed``.

    Raises:
        TypeError: a non-optimizer, LBFGS or a nested ``LowPrecision``; a bad argument type.
        ValueError: an unknown format, rounding mode or role; state names the optimizer does
            not keep (the message lists the ones it does); a ``weight`` format the parameter
            dtype cannot hold.
    """

    def __init__(self, optimizer: torch.optim.Optimizer, *, weight: Optional[FormatLike] = None,
                 grad: Optional[FormatLike] = None, state: Any = None,
                 master: Optional[FormatLike] = None, rounding: Any = "nearest",
                 update_rounding: Union[str, Rounding] = "stochastic",
                 loss_scale: LossScaleSpec = None, seed: Optional[int] = None) -> None:
        if isinstance(optimizer, LowPrecision):
            raise TypeError("optimizer is already a LowPrecision; wrap the torch optimizer once")
        check_optimizer(optimizer)
        self.weight_format = parse_format(weight, "weight")
        self.grad_format = parse_format(grad, "grad")
        self.master_format = parse_format(master, "master")
        self.state_format = state_formats(state, optimizer)
        self.rounding = roundings(rounding)
        self.update_rounding = Rounding.parse(update_rounding, "update_rounding")
        self._scaler = LossScaler(loss_scale)
        self.seed = resolve_seed(seed)
        super().__init__(optimizer)
        self.steps = 0
        self.last_step_skipped = False
        self._state_checked = False
        self._master: Dict[int, torch.Tensor] = {}
        self._init_params(0)

    # -- parameters -------------------------------------------------------------------------
    def _weight_format(self, dtype: torch.dtype) -> Optional[Format]:
        if self.weight_format is not None:
            return self.weight_format
        return parse_format(DTYPE_FORMATS.get(dtype), "weight")

    def _q(self, x: torch.Tensor, fmt: Optional[Format], mode: Rounding, index: int,
           role: str) -> torch.Tensor:
        """``Q_fmt^mode(x, role)`` at the current step (``x`` itself when ``fmt`` is None)."""
        if fmt is None:
            return x
        seed = None
        if mode is Rounding.STOCHASTIC:
            seed = derive_seed(self.seed, index, self.steps, role)
        return quantize(x, fmt, rounding=mode, seed=seed)

    @property
    def master_copies(self) -> Dict[int, torch.Tensor]:
        """The master weights by parameter index: fp32 tensors holding ``master`` values
        (empty without ``master``)."""
        return dict(self._master)

    @torch.no_grad()
    def _init_params(self, first: int) -> None:
        mode = self.rounding["weight"]
        for i, p in self.indexed():
            if i < first:
                continue
            fmt = self._weight_format(p.dtype)
            if fmt is not None:
                try:
                    result_dtype(fmt, p.dtype)
                except ValueError:
                    raise ValueError(f"weight={fmt!r} has values that parameter {i} "
                                     f"({p.dtype}) cannot hold; keep the parameters in "
                                     "fp32") from None
            if fmt is None and self.master_format is None:
                continue
            w = p.detach().float()
            if self.master_format is not None:
                w = self._q(w, self.master_format, mode, i, "init/master")
                self._master[i] = w.clone(memory_format=torch.contiguous_format)
            p.copy_(self._q(w, fmt, mode, i, "init/weight"))

    def _added(self, first: int) -> None:
        self._init_params(first)  # new groups are rounded as at construction

    # -- loss scaling -----------------------------------------------------------------------
    @property
    def loss_scale(self) -> Optional[float]:
        """The current loss scale ``S`` (None without loss scaling)."""
        return self._scaler.scale

    def scale_loss(self, loss: torch.Tensor) -> torch.Tensor:
        """``loss · S`` (``loss`` itself without loss scaling)."""
        return loss if self._scaler.scale is None else loss * self._scaler.scale

    def backward(self, loss: torch.Tensor, **kwargs: Any) -> None:
        """``scale_loss(loss).backward(**kwargs)``."""
        self.scale_loss(loss).backward(**kwargs)

    # -- the step ---------------------------------------------------------------------------
    def step(self, closure: Optional[Callable[[], Any]] = None) -> Any:  # type: ignore[override]
        """One update (see the class docstring); returns the closure's loss, or None.

        ``closure`` (which should zero the gradients, compute the loss and call
        ``opt.backward(loss)``) is evaluated once, under ``torch.enable_grad()``, at the weights
        the model holds, before any gradient is read, as SGD and Adam evaluate it; the inner
        optimizer then receives a closure returning that loss.
        """
        loss, inner_closure = self.evaluate(closure)
        with torch.no_grad():
            self._step(inner_closure)
        self.steps += 1
        return loss

    def _step(self, inner_closure: Optional[Callable[[], Any]]) -> None:
        entries = [(i, p) for i, p in self.indexed() if p.grad is not None]
        for i, p in entries:
            if p.grad.is_sparse:
                raise TypeError(f"parameter {i} has a sparse gradient; LowPrecision rounds "
                                "dense gradients only")
        grads, found_inf = self._scaler.unscale([p.grad for _, p in entries])
        self._scaler.update(found_inf)
        self.last_step_skipped = found_inf
        if found_inf:
            return
        mode = self.rounding["grad"]
        grads = [self._q(g, self.grad_format, mode, i, "grad") for (i, _), g in zip(entries, grads)]
        saved = [self._swap_in(i, p, g) for (i, p), g in zip(entries, grads)]
        self.optimizer.step(inner_closure)
        for (i, p), (data, grad) in zip(entries, saved):
            self._swap_out(i, p, data, grad)
        self._round_state(entries)

    def _swap_in(self, i: int, p: torch.Tensor, g: torch.Tensor
                 ) -> Tuple[torch.Tensor, torch.Tensor]:
        """Point ``p`` at its fp32 working weight and gradient; return what it held."""
        data, grad = p.data, p.grad
        work = self._master.get(i)
        if work is None:
            work = data if data.dtype == torch.float32 else data.float()
        if work is not data:
            p.grad = None  # .grad must match .data's dtype, so clear it across the swap
            p.data = work
        p.grad = g
        return data, grad

    def _swap_out(self, i: int, p: torch.Tensor, data: torch.Tensor, grad: torch.Tensor) -> None:
        new, g = p.data, p.grad
        fmt = self._weight_format(data.dtype)
        if self.master_format is not None:
            m = self._q(new, self.master_format, self.update_rounding, i, "update")
            self._master[i].copy_(m)
            w = self._q(m, fmt, self.rounding["weight"], i, "weight")
        else:
            w = self._q(new, fmt, self.update_rounding, i, "update")
        if new is not data:
            p.grad = None
            p.data = data
        if w is not data:
            data.copy_(w)
        p.grad = grad
        if g is not grad:
            grad.copy_(g)

    def _round_state(self, entries: List[Tuple[int, torch.Tensor]]) -> None:
        spec = self.state_format
        if spec is None:
            return
        names = state_names(self.optimizer)
        mode = self.rounding["state"]
        seen = set()
        for i, p in entries:
            state = self.optimizer.state.get(p, {})
            seen.update(state)
            for name, fmt in self._state_items(spec, names, state, p):
                t = state[name]
                t.copy_(self._q(t, fmt, mode, i, f"state/{name}"))
        if isinstance(spec, dict) and names is None and not self._state_checked:
            self._state_checked = True
            unknown = sorted(set(spec) - seen)
            if unknown:
                raise ValueError(f"state has names {unknown} that {type(self.optimizer).__name__}"
                                 f" did not create; its state holds {sorted(seen)}")

    @staticmethod
    def _state_items(spec: Any, names: Optional[Tuple[str, ...]], state: Dict[str, Any],
                     p: torch.Tensor) -> Iterator[Tuple[str, Format]]:
        for name, value in state.items():
            if not (isinstance(value, torch.Tensor) and value.is_floating_point()):
                continue
            if isinstance(spec, dict):
                fmt = spec.get(name)
            elif names is not None:
                fmt = spec if name in names else None
            else:
                fmt = spec if value.shape == p.shape and name != "step" else None
            if fmt is not None:
                yield name, fmt

    # -- checkpoints ------------------------------------------------------------------------
    def _config(self) -> Dict[str, Any]:
        def name(f: Optional[Format]) -> Optional[str]:
            return None if f is None else repr(f)
        spec = self.state_format
        state = ({k: name(v) for k, v in spec.items()} if isinstance(spec, dict)
                 else name(spec))
        return {"weight": name(self.weight_format), "grad": name(self.grad_format),
                "state": state, "master": name(self.master_format),
                "rounding": {k: v.value for k, v in self.rounding.items()},
                "update_rounding": self.update_rounding.value,
                "loss_scale": self._scaler.describe()}

    def state_dict(self) -> Dict[str, Any]:
        """``{"optimizer": inner state_dict, "lowbit": {...}}``: the inner optimizer's state,
        the master copies (by parameter index), the step counter, the global seed, the
        loss-scale state and the configuration; plain tensors, numbers and strings only, so
        ``torch.load(..., weights_only=True)`` reads it."""
        return {"optimizer": self.optimizer.state_dict(),
                "lowbit": {"steps": self.steps, "seed": self.seed,
                           "master": dict(self._master),
                           "loss_scale": self._scaler.state_dict(),
                           "config": self._config()}}

    def load_state_dict(self, state_dict: Dict[str, Any]) -> None:
        """Restore a ``state_dict()``; the next ``step()`` continues bit-exactly.

        Raises:
            ValueError: not a ``LowPrecision`` state dict, or one saved with other formats,
                rounding modes or loss scaling (the message names the differences), or master
                copies that do not match the parameters.
        """
        if not (isinstance(state_dict, Mapping) and {"optimizer", "lowbit"} <= set(state_dict)):
            raise ValueError("state_dict must be a LowPrecision.state_dict() (keys 'optimizer' "
                             "and 'lowbit')")
        ours = state_dict["lowbit"]
        diff = {k: (v, self._config()[k]) for k, v in ours["config"].items()
                if self._config().get(k) != v}
        if diff:
            raise ValueError("state_dict was saved with another configuration (saved, this "
                             f"optimizer): {diff}")
        params = dict(self.indexed())
        masters = ours["master"]
        if set(masters) != set(self._master):
            raise ValueError(f"state_dict holds master copies of parameters {sorted(masters)}; "
                             f"this optimizer has {sorted(self._master)}")
        for i, t in masters.items():
            if t.shape != self._master[i].shape:
                raise ValueError(f"master copy {i} has shape {tuple(t.shape)}; parameter {i} "
                                 f"has {tuple(self._master[i].shape)}")
        self.optimizer.load_state_dict(state_dict["optimizer"])
        self._keep_fp32_state(state_dict["optimizer"]["state"], params)
        for i, t in masters.items():
            self._master[i].copy_(t)
        self.steps = int(ours["steps"])
        self.seed = int(ours["seed"])
        self._scaler.load_state_dict(ours["loss_scale"])

    def _keep_fp32_state(self, saved: Mapping[int, Dict[str, Any]],
                         params: Dict[int, torch.Tensor]) -> None:
        # torch casts loaded state to the parameter's dtype; the wrapper's state is fp32
        # (computed on fp32 working weights), so put the saved fp32 values back.
        for i, entries in saved.items():
            p = params[int(i)]
            if p.dtype == torch.float32:
                continue
            live = self.optimizer.state[p]
            for name, value in entries.items():
                if (isinstance(value, torch.Tensor) and value.dtype == torch.float32
                        and name in live and live[name].dtype != torch.float32):
                    live[name] = value.to(device=p.device, copy=True)

    def __repr__(self) -> str:
        cfg = self._config()
        opts = ", ".join(f"{k}={v!r}" for k, v in cfg.items())
        return f"LowPrecision({self.optimizer!r}, {opts})"
