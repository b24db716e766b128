"""Recipes as plain data, JSON and TOML.

Plain form: a role is a format name, or a table ``{format, rounding, scaling, rbits}``, or
``{quantizer = NAME, ...kwargs}``; ``accumulate`` is an ``Accumulate.to_dict()`` table or a
table per GEMM; ``wgrad_transform`` is a kind name (block 16) or a table ``{kind, block}``;
``quantize_wgrad`` is written only when false; ``overrides`` maps a key to ``"none"`` (the
module stays fp32) or to the fields in which the override differs from the recipe (``"none"``
where it sets a role to None).  A type key is written ``"type:<module>.<qualname>"``; a compiled regex is written as
its pattern.  TOML is read with ``tomllib`` (``tomli`` before Python 3.11) and written by
``dumps_toml`` below (TOML has no null, hence ``"none"``).
"""

from __future__ import annotations

import importlib
import json
import math
import re
from pathlib import Path
from typing import Any, Dict, List, Mapping

from ..ops.accumulate.spec import Accumulate
from .recipe import (_NONE, EXTRA_FIELDS, GEMMS, ROLES, GemmAccumulate, QuantizerRef, Recipe,
                     WgradTransform)

__all__ = ["recipe_to_dict", "recipe_from_dict", "dumps_toml", "loads_toml", "save", "load"]

_TYPE_PREFIX = "type:"
_DEFAULT_FLAGS = re.compile("").flags


# -- to plain data ---------------------------------------------------------------------------
def _role_plain(value: Any) -> Any:
    if value is None:
        return _NONE
    if isinstance(value, QuantizerRef):
        return {"quantizer": value.name, **dict(value.kwargs)}
    plain: Dict[str, Any] = {"format": repr(value.format)}
    if value.rounding.value != "nearest":
        plain["rounding"] = value.rounding.value
    if value.scaling is not None:
        s = value.scaling
        plain["scaling"] = {"granularity": s.granularity.value, "history": s.history,
                            "pow2": s.pow2}
    if value.rbits is not None:
        plain["rbits"] = value.rbits
    return plain["format"] if len(plain) == 1 else plain


def _acc_plain(acc: GemmAccumulate) -> Any:
    specs = [getattr(acc, g) for g in GEMMS]
    if specs[0] is not None and specs.count(specs[0]) == len(specs):
        return specs[0].to_dict()
    return {g: _NONE if s is None else s.to_dict() for g, s in zip(GEMMS, specs)}


def _transform_plain(t: Any) -> Any:
    if t is None:
        return _NONE
    if t.block == WgradTransform.block:
        return t.kind.value
    return {"kind": t.kind.value, "block": t.block}


def _extras_plain(recipe: Recipe, base: Any = None) -> Dict[str, Any]:
    """``wgrad_transform`` and ``quantize_wgrad`` where they differ from ``base`` (None: from
    the defaults)."""
    out: Dict[str, Any] = {}
    if recipe.wgrad_transform != (None if base is None else base.wgrad_transform):
        out["wgrad_transform"] = _transform_plain(recipe.wgrad_transform)
    if recipe.quantize_wgrad != (True if base is None else base.quantize_wgrad):
        out["quantize_wgrad"] = recipe.quantize_wgrad
    return out


def _key_plain(key: Any) -> str:
    if isinstance(key, str):
        return key
    if isinstance(key, re.Pattern):
        if key.flags != _DEFAULT_FLAGS:
            raise ValueError(f"override regex {key.pattern!r} has flags, which plain data "
                             "cannot hold; write them inline, e.g. (?i)")
        return key.pattern
    return f"{_TYPE_PREFIX}{key.__module__}.{key.__qualname__}"


def recipe_to_dict(recipe: Recipe) -> Dict[str, Any]:
    out: Dict[str, Any] = {r: _role_plain(v) for r, v in recipe.roles().items()}
    if recipe.accumulate is not None and recipe.accumulate.active:
        out["accumulate"] = _acc_plain(recipe.accumulate)
    out.update(_extras_plain(recipe))
    if recipe.overrides:
        base = recipe.replace(overrides=())
        table: Dict[str, Any] = {}
        for key, sub in recipe.overrides:
            table[_key_plain(key)] = _NONE if sub is None else _diff(sub, base)
        out["overrides"] = table
    return out


def _diff(sub: Recipe, base: Recipe) -> Dict[str, Any]:
    out: Dict[str, Any] = {}
    for role in ROLES:
        if getattr(sub, role) != getattr(base, role):
            out[role] = _role_plain(getattr(sub, role))
    if sub.accumulate != base.accumulate:
        acc = sub.accumulate
        out["accumulate"] = _NONE if acc is None or not acc.active else _acc_plain(acc)
    out.update(_extras_plain(sub, base))
    return out


# -- from plain data -------------------------------------------------------------------------
def _import_type(path: str) -> type:
    parts = path.split(".")
    for cut in range(len(parts) - 1, 0, -1):
        try:
            obj: Any = importlib.import_module(".".join(parts[:cut]))
        except ImportError:
            continue
        try:
            for attr in parts[cut:]:
                obj = getattr(obj, attr)
        except AttributeError:
            break
        if isinstance(obj, type):
            return obj
        break
    raise ValueError(f"override key {_TYPE_PREFIX}{path!r} names no importable type")


def _key_from_plain(key: str) -> Any:
    return _import_type(key[len(_TYPE_PREFIX):]) if key.startswith(_TYPE_PREFIX) else key


def _acc_from_plain(value: Any) -> Any:
    if isinstance(value, str) and value == _NONE:
        return None
    if isinstance(value, Mapping) and value and set(value) <= set(GEMMS):
        return GemmAccumulate(**{g: _acc_from_plain(v) for g, v in value.items()})
    if isinstance(value, Mapping):
        return Accumulate.from_dict(dict(value))
    raise TypeError(f"accumulate must be a table; got {value!r}")


def recipe_from_dict(data: Mapping[str, Any]) -> Recipe:
    if not isinstance(data, Mapping):
        raise TypeError(f"a recipe must be a mapping; got {type(data).__name__}")
    allowed = set(ROLES) | set(EXTRA_FIELDS) | {"overrides"}
    unknown = sorted(set(data) - allowed)
    if unknown:
        raise ValueError(f"unknown recipe fields {unknown}; allowed: {sorted(allowed)}")
    kwargs: Dict[str, Any] = {r: data[r] for r in ROLES if r in data}
    if "accumulate" in data:
        kwargs["accumulate"] = _acc_from_plain(data["accumulate"])
    for extra in ("wgrad_transform", "quantize_wgrad"):
        if extra in data:
            kwargs[extra] = data[extra]
    overrides = data.get("overrides", {})
    if not isinstance(overrides, Mapping):
        raise TypeError(f"overrides must be a table; got {overrides!r}")
    pairs = []
    for key, value in overrides.items():
        if isinstance(value, Mapping) and "accumulate" in value:
            value = {**value, "accumulate": _acc_from_plain(value["accumulate"])}
        pairs.append((_key_from_plain(key), value))
    return Recipe(**kwargs, overrides=tuple(pairs))


# -- TOML ------------------------------------------------------------------------------------
_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")


def _toml_string(s: str) -> str:
    # JSON's escapes (\" \\ \n \uXXXX for control characters) are valid TOML basic-string
    # escapes; DEL must be escaped in TOML but JSON leaves it raw.
    return json.dumps(s, ensure_ascii=False).replace("\x7f", "\\u007F")


def _toml_key(k: str) -> str:
    return k if _BARE_KEY.fullmatch(k) else _toml_string(k)


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        if math.isnan(v):
            return "nan"
        if math.isinf(v):
            return "inf" if v > 0 else "-inf"
        return repr(v)
    if isinstance(v, str):
        return _toml_string(v)
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_toml_value(i) for i in v) + "]"
    raise TypeError(f"TOML cannot hold {v!r} ({type(v).__name__})")


def _emit(lines: List[str], path: List[str], table: Mapping[str, Any]) -> None:
    scalars = [(k, v) for k, v in table.items() if not isinstance(v, Mapping)]
    tables = [(k, v) for k, v in table.items() if isinstance(v, Mapping)]
    if path and (scalars or not tables):
        if lines:
            lines.append("")
        lines.append("[" + ".".join(_toml_key(p) for p in path) + "]")
    lines.extend(f"{_toml_key(k)} = {_toml_value(v)}" for k, v in scalars)
    for k, v in tables:
        _emit(lines, path + [k], v)


def dumps_toml(data: Mapping[str, Any]) -> str:
    """``data`` (nested mappings of str, int, float, bool and lists) as a TOML document."""
    lines: List[str] = []
    _emit(lines, [], data)
    return "\n".join(lines) + "\n"


def loads_toml(text: str) -> Dict[str, Any]:
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        try:
            import tomli as tomllib
        except ModuleNotFoundError:
            raise ImportError("reading TOML on Python 3.10 needs the 'tomli' package "
                              "(pip install tomli)") from None
    return tomllib.loads(text)


def _suffix(path: Path) -> str:
    suffix = path.suffix.lower()
    if suffix not in (".toml", ".json"):
        raise ValueError(f"recipe files end in .toml or .json; got {str(path)!r}")
    return suffix


def save(recipe: Recipe, path: Any) -> None:
    path = Path(path)
    text = recipe.to_toml() if _suffix(path) == ".toml" else recipe.to_json(indent=2) + "\n"
    path.write_text(text, encoding="utf-8")


def load(path: Any) -> Recipe:
    path = Path(path)
    text = path.read_text(encoding="utf-8")
    return Recipe.from_toml(text) if _suffix(path) == ".toml" else Recipe.from_json(text)
