"""Hand-written oracles for lowbit.optim tests: the SGD/Adam/AdamW updates in plain fp32 torch
ops (torch's documented formulas, written out), and the seed derivation re-stated from the
LowPrecision docstring with hashlib."""

import hashlib
from dataclasses import dataclass, field
from typing import Dict, List, Optional

import torch

import lowbit as lb


def seed_of(seed: int, index: int, step: int, role: str) -> int:
    msg = (seed.to_bytes(8, "little") + index.to_bytes(8, "little") + step.to_bytes(8, "little")
           + role.encode())
    return int.from_bytes(hashlib.blake2b(msg, digest_size=8, person=b"lowbit.optim").digest(),
                          "little")


def q(x, fmt, mode, seed, index, step, role):
    """An explicit lowbit.quantize call with the documented seed (identity for fmt None)."""
    if fmt is None:
        return x
    s = seed_of(seed, index, step, role) if mode == "stochastic" else None
    return lb.quantize(x, fmt, rounding=mode, seed=s)


def sgd_update(w, g, state, hp):
    """torch.optim.SGD: d = g + λw; b = g (first step) or μb + (1-τ)d; d = d + μb (Nesterov)
    or b; w = w - η d."""
    lr, mom = hp["lr"], hp.get("momentum", 0.0)
    wd, damp = hp.get("weight_decay", 0.0), hp.get("dampening", 0.0)
    nesterov = hp.get("nesterov", False)
    w, d = w.clone(), g.clone()
    if wd:
        d = d.add(w, alpha=wd)
    if mom:
        if "momentum_buffer" not in state:
            state["momentum_buffer"] = d.clone()
        else:
            state["momentum_buffer"] = state["momentum_buffer"].mul(mom).add(d, alpha=1 - damp)
        buf = state["momentum_buffer"]
        d = d.add(buf, alpha=mom) if nesterov else buf
    return w.add(d, alpha=-lr)


def adam_update(w, g, state, hp, decoupled):
    """torch.optim.Adam/AdamW: m = β1 m + (1-β1) g (as lerp), v = β2 v + (1-β2) g², v̂ = max
    (amsgrad), w = w - η/(1-β1^t) · m / (sqrt(v̂)/sqrt(1-β2^t) + ε); weight decay λ: AdamW
    first scales w by (1 - ηλ), Adam adds λw to g."""
    lr, (b1, b2), eps = hp["lr"], hp.get("betas", (0.9, 0.999)), hp.get("eps", 1e-8)
    wd, ams = hp.get("weight_decay", 0.0 if not decoupled else 1e-2), hp.get("amsgrad", False)
    w, g = w.clone(), g.clone()
    t = state.get("t", 0) + 1
    state["t"] = t
    if wd:
        if decoupled:
            w = w.mul(1 - lr * wd)
        else:
            g = g.add(w, alpha=wd)
    m = state.get("exp_avg", torch.zeros_like(w)).lerp(g, 1 - b1)
    v = state.get("exp_avg_sq", torch.zeros_like(w)).mul(b2).addcmul(g, g, value=1 - b2)
    state["exp_avg"], state["exp_avg_sq"] = m, v
    bc1, bc2 = 1 - b1**t, 1 - b2**t
    if ams:
        vmax = torch.maximum(state.get("max_exp_avg_sq", torch.zeros_like(w)), v)
        state["max_exp_avg_sq"] = vmax
        denom = (vmax.sqrt() / bc2**0.5).add(eps)
    else:
        denom = (v.sqrt() / bc2**0.5).add(eps)
    return w.addcdiv(m, denom, value=-(lr / bc1))


UPDATES = {
    "sgd": lambda w, g, s, hp: sgd_update(w, g, s, hp),
    "adam": lambda w, g, s, hp: adam_update(w, g, s, hp, decoupled=False),
    "adamw": lambda w, g, s, hp: adam_update(w, g, s, hp, decoupled=True),
}


@dataclass
class Reference:
    """Re-computes LowPrecision's documented step for a list of fp32 parameters."""

    kind: str
    hp: dict
    seed: int
    weight: Optional[str] = None
    grad: Optional[str] = None
    state: object = None
    master: Optional[str] = None
    rounding: object = "nearest"
    update_rounding: str = "stochastic"
    scale: float = 1.0
    params: List[torch.Tensor] = field(default_factory=list)
    masters: Dict[int, torch.Tensor] = field(default_factory=dict)
    states: Dict[int, dict] = field(default_factory=dict)
    t: int = 0

    def __post_init__(self):
        r = self.rounding
        roles = ("grad", "state", "weight")
        self.rounding = ({k: r.get(k, "nearest") for k in roles} if isinstance(r, dict)
                         else dict.fromkeys(roles, r))

    def init(self, params):
        mode = self.rounding["weight"]
        for i, p in enumerate(params):
            w = p.detach().clone()
            if self.master is not None:
                w = q(w, self.master, mode, self.seed, i, 0, "init/master")
                self.masters[i] = w
            self.params.append(q(w, self.weight, mode, self.seed, i, 0, "init/weight"))
            self.states[i] = {}

    def state_format(self, name):
        if isinstance(self.state, dict):
            return self.state.get(name)
        return self.state

    def step(self, grads):
        t, r = self.t, self.rounding
        for i, g in enumerate(grads):
            g = q(g / self.scale, self.grad, r["grad"], self.seed, i, t, "grad")
            work = self.masters.get(i, self.params[i])
            new = UPDATES[self.kind](work, g, self.states[i], self.hp)
            if self.master is not None:
                m = q(new, self.master, self.update_rounding, self.seed, i, t, "update")
                self.masters[i] = m
                self.params[i] = q(m, self.weight, r["weight"], self.seed, i, t, "weight")
            else:
                self.params[i] = q(new, self.weight, self.update_rounding, self.seed, i, t,
                                   "update")
            for name, value in list(self.states[i].items()):
                fmt = self.state_format(name) if name != "t" else None
                self.states[i][name] = q(value, fmt, r["state"], self.seed, i, t, f"state/{name}")
        self.t += 1
