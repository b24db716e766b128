"""DESIGN.md's performance contract for ``lowbit.bench.quantize``: the peers timed beside lowbit
(QPyTorch, PyPI ``qtorch``, and torch's native casts), the QPyTorch anchors DESIGN.md recorded
(quoted where QPyTorch cannot be imported or built here), and each row's limit, target and
QPyTorch ratio (``evaluate``).

QPyTorch compiles its C++ (and, with CUDA, its CUDA) extension on the first import of
``qtorch.quant`` (about a minute, cached in torch's extensions directory); it needs ninja and a
C++ compiler (and nvcc matching torch's CUDA).  Its quantizers take fp32 only.
"""

from __future__ import annotations

import dataclasses
import importlib
from typing import Callable, Dict, List, Optional, Tuple

import torch

from ..formats import BlockFormat, FixedPoint, FloatFormat, Rounding, ScaleRule, get

__all__ = ["ANCHOR_LABEL", "ANCHOR_SETTING", "NOTES", "PeerCall", "Anchor", "load_qpytorch",
           "qpytorch_call", "qpytorch_mode", "anchor_for", "torch_casts", "global_amax",
           "target", "evaluate"]

ANCHOR_LABEL = "anchor (DESIGN.md, 2026-11)"
#: Where each device's anchors were measured (DESIGN.md, "Performance contract").
ANCHOR_SETTING = {"cpu": "2-core CPU, 16M fp32 elements", "cuda": "H100, 256M fp32 elements"}
# QPyTorch GB/s (8 bytes per element), DESIGN.md "Performance contract".  A mode of None: the
# record names none, and the figure is quoted for every mode with that said.
_ANCHORS: Dict[str, Dict[Tuple[str, Optional[str]], float]] = {
    "cpu": {("float", "nearest"): 0.43, ("float", "stochastic"): 0.12, ("fixed", None): 0.20,
            ("block", None): 0.21},
    "cuda": {("float", "nearest"): 1510.0, ("float", "stochastic"): 656.0,
             ("fixed", "nearest"): 1466.0, ("fixed", "stochastic"): 1018.0,
             ("block", None): 636.0},
}

NOTES = [
    "QPyTorch float_quantize(x, E, M) has no subnormal, saturation or specials control: every "
    "exponent code is finite (E4M3 max 480, not 448), nearest ties go away from zero, Inf/NaN "
    "become +-max. Its rows time a like-sized quantizer, not the same function.",
    "QPyTorch rounds to nearest or stochastically only: directed-mode rows are compared with "
    "its nearest.",
    "QPyTorch has no k-element blocks: MX rows are compared with block_quantize(x, 8, dim=0) "
    "(one shared exponent per row of 1024); bfp8 is block_quantize(x, 8, dim=-1) exactly "
    "(one exponent for the whole tensor).",
    "torch fp8 casts clamp to the format's range first (eager overflow behaviour changed "
    "across torch versions), which is one more pass.",
]


@dataclasses.dataclass(frozen=True)
class PeerCall:
    """One QPyTorch quantizer call: ``call(qtorch.quant, x, rounding)``."""

    label: str
    family: str  # the anchors' family: float, fixed or block
    call: Callable[[object, torch.Tensor, str], torch.Tensor]


@dataclasses.dataclass(frozen=True)
class Anchor:
    """A recorded QPyTorch figure and what it was recorded for."""

    gbps: float
    label: str


def load_qpytorch() -> Tuple[Optional[object], Optional[str]]:
    """``(qtorch.quant, None)``, or ``(None, why)`` when it cannot be imported or built."""
    try:
        return importlib.import_module("qtorch.quant"), None
    except Exception as err:  # noqa: BLE001 - a failed JIT build raises many error types
        lines = [line for line in str(err).strip().splitlines() if line.strip()]
        return None, f"{type(err).__name__}: {lines[-1] if lines else ''}".strip()


def qpytorch_call(fmt) -> Optional[PeerCall]:
    """QPyTorch's counterpart of ``fmt`` (see NOTES for how close it is), or None."""
    if isinstance(fmt, FloatFormat) and 1 <= fmt.exp <= 8 and 1 <= fmt.man <= 22:
        e, m = fmt.exp, fmt.man
        return PeerCall(f"float_quantize(x, {e}, {m})", "float",
                        lambda q, x, r: q.float_quantize(x, e, m, rounding=r))
    if isinstance(fmt, FixedPoint):
        wl, fl, clamp, sym = fmt.wl, fmt.fl, fmt.clamp, fmt.symmetric
        return PeerCall(f"fixed_point_quantize(x, {wl}, {fl}, clamp={clamp}, symmetric={sym})",
                        "fixed", lambda q, x, r: q.fixed_point_quantize(
                            x, wl, fl, clamp=clamp, symmetric=sym, rounding=r))
    if isinstance(fmt, BlockFormat) and not fmt.tensor_scale:
        if fmt.axis is None and isinstance(fmt.element, FixedPoint) and fmt.element.fl == 0:
            wl = fmt.element.wl
            return PeerCall(f"block_quantize(x, {wl}, dim=-1)", "block",
                            lambda q, x, r: q.block_quantize(x, wl, dim=-1, rounding=r))
        if fmt.axis == -1:
            return PeerCall("block_quantize(x, 8, dim=0)", "block",
                            lambda q, x, r: q.block_quantize(x, 8, dim=0, rounding=r))
    return None


def qpytorch_mode(mode: Rounding) -> str:
    """The QPyTorch rounding a lowbit mode is compared with."""
    return "stochastic" if mode is Rounding.STOCHASTIC else "nearest"


def anchor_for(device: str, family: str, mode: str) -> Optional[Anchor]:
    """DESIGN.md's QPyTorch figure for ``family`` and QPyTorch ``mode`` on ``device``."""
    table = _ANCHORS.get(device, {})
    where = ANCHOR_SETTING.get(device, device)
    if (family, mode) in table:
        return Anchor(table[family, mode], f"{ANCHOR_LABEL}: QPyTorch {family} {mode}, {where}")
    if (family, None) in table:
        return Anchor(table[family, None],
                      f"{ANCHOR_LABEL}: QPyTorch {family} (mode not recorded), {where}")
    return None


def torch_casts() -> List[Tuple[str, str, Callable[[torch.Tensor], torch.Tensor]]]:
    """``(format, expression, fn)`` for each fp32 -> dtype -> fp32 round trip this torch has."""
    casts = [("bf16", "x.to(torch.bfloat16).float()", lambda x: x.to(torch.bfloat16).float()),
             ("fp16", "x.to(torch.float16).float()", lambda x: x.to(torch.float16).float())]
    for fmt, dtype_name, bound in (("e4m3fn", "float8_e4m3fn", 448.0),
                                   ("e5m2", "float8_e5m2", 57344.0)):
        dtype = getattr(torch, dtype_name, None)
        if dtype is not None:
            casts.append((fmt, f"x.clamp(-{bound:g}, {bound:g}).to(torch.{dtype_name}).float()",
                          lambda x, d=dtype, b=bound: x.clamp(-b, b).to(d).float()))
    return casts


def global_amax(fmt) -> bool:
    """True when a global amax must be read before any element can be rounded."""
    return isinstance(fmt, BlockFormat) and (
        fmt.axis is None or (fmt.tensor_scale and fmt.scale_rule is ScaleRule.AMAX))


# -- the contract: targets, QPyTorch references, evaluation ------------------------------------
def target(device: str, row: dict) -> Optional[tuple]:
    """``(text, kind, value)`` of DESIGN.md's target for ``row``; kind is ``share`` (of the
    row's limit) or ``ratio`` (times QPyTorch's speed); None where the contract sets none."""
    group, mode = row["group"], row["rounding"]
    if device == "cuda" and group in ("quantize", "encode", "decode"):
        fmt = get(row["format"])
        if isinstance(fmt, BlockFormat):
            roofline = global_amax(fmt) and group != "decode"  # decode needs no amax
            return ("≥80% of roofline" if roofline else "≥80% of clone", "share", 0.80)
        if mode == Rounding.STOCHASTIC:
            return ("≥85% of clone", "share", 0.85)
        return ("≥90% of clone", "share", 0.90)
    if device == "cpu" and group == "quantize":
        return ("≥5x QPyTorch", "ratio", 5.0)
    if device == "cpu" and group == "quantize_out":
        if mode == Rounding.STOCHASTIC:
            return ("≥10x QPyTorch", "ratio", 10.0)
        return ("≥70% of copy_", "share", 0.70)
    return None


def _qpytorch_reference(device: str, row: dict, measured: Dict[tuple, dict],
                        numel: int) -> Optional[tuple]:
    """``(seconds QPyTorch takes for the same elements, label)`` for a lowbit row."""
    if row["group"] not in ("quantize", "quantize_out", "encode"):
        return None
    fmt = get(row["format"])
    call = qpytorch_call(fmt)
    if call is None:
        return None
    qmode = qpytorch_mode(Rounding(row["rounding"]))
    versus = "" if qmode == row["rounding"] else f" (vs its {qmode})"
    if measured:
        peer = measured.get((call.label, qmode))
        return None if peer is None else (peer["seconds"],
                                          f"QPyTorch {call.label} {qmode}, this run{versus}")
    anchor = anchor_for(device, call.family, qmode)
    if anchor is None:
        return None
    return 8 * numel / (anchor.gbps * 1e9), f"{anchor.label}: {anchor.gbps:g} GB/s{versus}"


def evaluate(device: str, rows: List[dict], numel: int) -> None:
    """Add each row's limit, share of it, target, whether it is met and the QPyTorch ratio."""
    by_what = {r["what"]: r for r in rows if r["group"] == "limit"}
    base = by_what["copy_ (limit)" if device == "cpu" else "clone (limit)"]
    measured = {(r["expr"], r["rounding"]): r for r in rows if r["group"] == "qpytorch"}
    for row in rows:
        fmt = get(row["format"]) if row["format"] != "-" else None
        roofline = device == "cuda" and fmt is not None and global_amax(fmt) \
            and row["group"] != "decode"
        row["limit"] = "roofline" if roofline else base["what"].split(" ")[0]
        # The roofline moves 12 bytes in 1.5 clone times: the same GB/s as clone.
        row["pct_of_limit"] = 100 * row["GB/s"] / base["GB/s"]
        ref = _qpytorch_reference(device, row, measured, numel)
        row["qpytorch_x"] = None if ref is None else ref[0] / row["seconds"]
        row["qpytorch_ref"] = None if ref is None else ref[1]
        goal = target(device, row)
        row["target"] = None if goal is None else goal[0]
        if goal is None:
            row["met"] = None
        elif goal[1] == "share":
            row["met"] = row["pct_of_limit"] >= 100 * goal[2]
        else:
            row["met"] = None if row["qpytorch_x"] is None else row["qpytorch_x"] >= goal[2]
