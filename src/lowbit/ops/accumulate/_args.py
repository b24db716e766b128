"""Argument handling shared by the accumulation ops: building the spec from options, the
backward GEMMs' specs, seeds and operand checks."""

from __future__ import annotations

from typing import Any, Dict, Optional, Tuple, Union

import torch

from ...kernels.dispatch import Backend
from ...kernels.gemm import Plan
from ...kernels.philox import SEED_LIMIT, resolve_seed
from .spec import Accumulate

__all__ = ["SAME", "GradSpec", "build_spec", "grad_spec", "seeds", "operand", "plan_of",
           "backend_of"]

#: ``dgrad``/``wgrad`` value meaning "the forward GEMM's spec" (the default).
SAME = "same"
GradSpec = Union[Accumulate, None, str]

_OPTION_DEFAULTS: Dict[str, Any] = {
    "mul": None, "acc": None, "rounding": "nearest", "mul_rounding": None,
    "acc_rounding": None, "chunk": None, "chunk_acc": None, "fma": False, "compensated": False,
}


def build_spec(spec: Optional[Accumulate], options: Dict[str, Any], fn: str) -> Accumulate:
    """The ``Accumulate`` of a call: ``spec`` itself, or one built from the keyword options."""
    changed = sorted(k for k, v in options.items() if v is not _OPTION_DEFAULTS[k]
                     and v != _OPTION_DEFAULTS[k])
    if spec is not None:
        if not isinstance(spec, Accumulate):
            raise TypeError(f"spec must be an Accumulate; got {type(spec).__name__}")
        if changed:
            raise ValueError(f"{fn}: pass either spec= or the accumulation options, not both; "
                             f"got spec= and {changed}")
        return spec
    if options["acc"] is None:
        raise TypeError(f"{fn}() needs acc= (the accumulator format) or spec=Accumulate(...)")
    return Accumulate(**options)


def grad_spec(value: GradSpec, forward: Accumulate, name: str) -> Optional[Accumulate]:
    """A backward GEMM's spec: ``"same"`` is the forward's, None means plain fp32 torch ops."""
    if isinstance(value, str):
        if value != SAME:
            raise ValueError(f"{name} must be an Accumulate, None (plain fp32) or {SAME!r}; "
                             f"got {value!r}")
        return forward
    if value is not None and not isinstance(value, Accumulate):
        raise TypeError(f"{name} must be an Accumulate, None (plain fp32) or {SAME!r}; got "
                        f"{type(value).__name__}")
    return value


def plan_of(spec: Optional[Accumulate]) -> Optional[Plan]:
    return None if spec is None else Plan.of(spec)


def seeds(seed: Optional[int], *plans: Optional[Plan]) -> Tuple[Optional[int], ...]:
    """One seed per GEMM: ``base + i`` (mod 2^64) for the i-th plan when it rounds
    stochastically, else None; ``base`` is ``seed`` or one drawn from torch's generator.  A
    seed with no stochastic rounding anywhere is a ``ValueError`` (it would be ignored)."""
    if not any(p is not None and p.stochastic for p in plans):
        if seed is not None:
            raise ValueError("seed applies only when some rounding is 'stochastic'; got "
                             f"seed={seed!r} with none")
        return (None,) * len(plans)
    base = resolve_seed(seed)
    return tuple((base + i) % SEED_LIMIT if p is not None and p.stochastic else None
                 for i, p in enumerate(plans))


def operand(x: object, name: str) -> torch.Tensor:
    """``x`` as fp32 (exact from fp16/bf16); fp64 and non-float tensors are errors."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor; got {type(x).__name__}")
    if x.dtype == torch.float64:
        raise ValueError(f"{name} is float64; the products and sums are simulated from fp32 "
                         f"values: pass {name}.float()")
    if x.dtype not in (torch.float32, torch.float16, torch.bfloat16):
        raise TypeError(f"{name} must be float32, float16 or bfloat16; got {x.dtype}")
    return x.float()


def backend_of(backend: Union[str, Backend]) -> Backend:
    return Backend.parse(backend, "backend")
