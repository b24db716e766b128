"""Argument parsing of ``LowPrecision``: formats, rounding roles, state formats, optimizer."""

from __future__ import annotations

from typing import Dict, Mapping, Optional, Union

import torch

from ..formats import Format, Rounding, get
from ._state_names import state_names

__all__ = ["FormatLike", "ROUNDING_ROLES", "DTYPE_FORMATS", "check_optimizer", "parse_format",
           "roundings", "state_formats"]

FormatLike = Union[str, Format]
ROUNDING_ROLES = ("grad", "state", "weight")
#: The format a non-fp32 parameter is kept in when ``weight`` is None.
DTYPE_FORMATS = {torch.bfloat16: "bf16", torch.float16: "fp16"}


def parse_format(value: object, name: str) -> Optional[Format]:
    if value is None:
        return None
    try:
        return get(value)  # type: ignore[arg-type]
    except TypeError:
        raise TypeError(f"{name} must be a format, a format name or None; got {value!r}") from None


def roundings(value: object) -> Dict[str, Rounding]:
    if isinstance(value, Mapping):
        unknown = sorted(set(value) - set(ROUNDING_ROLES))
        if unknown:
            raise ValueError(f"rounding has unknown roles {unknown}; allowed: "
                             f"{list(ROUNDING_ROLES)}")
        return {r: Rounding.parse(value.get(r, "nearest"), f"rounding[{r!r}]")
                for r in ROUNDING_ROLES}
    mode = Rounding.parse(value, "rounding")
    return {r: mode for r in ROUNDING_ROLES}


def state_formats(value: object, optimizer: torch.optim.Optimizer
                   ) -> Union[None, Format, Dict[str, Optional[Format]]]:
    if not isinstance(value, Mapping):
        return parse_format(value, "state")
    names = state_names(optimizer)
    if names is not None:
        unknown = sorted(set(value) - set(names))
        if unknown:
            raise ValueError(f"state has names {unknown} that {type(optimizer).__name__} does "
                             f"not keep; its state tensors are {list(names)}")
    return {str(k): parse_format(v, f"state[{k!r}]") for k, v in value.items()}


def check_optimizer(optimizer: object) -> torch.optim.Optimizer:
    if not isinstance(optimizer, torch.optim.Optimizer):
        raise TypeError(f"optimizer must be a torch.optim.Optimizer; got "
                        f"{type(optimizer).__name__}")
    if isinstance(optimizer, torch.optim.LBFGS):
        raise TypeError("LBFGS re-evaluates the closure inside its step, at weights the "
                        "wrapper has not rounded; LowPrecision supports single-evaluation "
                        "optimizers (SGD, Adam, AdamW, ...)")
    return optimizer
