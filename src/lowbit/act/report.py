"""What a ``compress`` context stored: bytes autograd would have held against bytes held,
overall, per module and per representation.

Counting rules.  *Saved bytes* count each distinct saved activation once (distinct by storage,
offset, shape, strides, dtype and version, as autograd would hold it once) at ``numel ×
element size``; parameters and their casts are left out (they are held anyway).  *Held bytes*
count the storages of every representation actually made (packed codes and bounds, masks,
int8 indices) plus the kept activations, each once; offloaded bytes are reported apart and not
in ``held_bytes`` (they sit in CPU memory).  Totals accumulate over every forward run inside
the context.
"""

from __future__ import annotations

from typing import Dict, List

__all__ = ["Report", "Bytes"]


class Bytes:
    """A tally: tensors, elements, bytes autograd would have held, bytes held."""

    __slots__ = ("tensors", "numel", "saved", "held")

    def __init__(self):
        self.tensors = self.numel = self.saved = self.held = 0

    @property
    def ratio(self) -> float:
        """held / saved (0 when nothing was saved)."""
        return self.held / self.saved if self.saved else 0.0

    def to_dict(self) -> Dict[str, int]:
        return {"tensors": self.tensors, "numel": self.numel, "saved_bytes": self.saved,
                "held_bytes": self.held}


class Report:
    """Live accounting of a ``compress`` context (module docstring for the rules).

    Attributes:
        saved_bytes: bytes autograd would have held for the activations seen.
        held_bytes: bytes held on their device instead.
        offloaded_bytes: bytes moved to CPU memory.
        parameters: saved tensors recognised as parameters or their casts (never stored).
        by_module: ``{qualified module name: Bytes}`` (``""``: outside every module).
        by_store: ``{representation: Bytes}``, keys ``"keep"``, ``"bits2"`` (and the other
            widths), ``"mask"``, ``"pool"``, ``"offload"``.
    """

    def __init__(self):
        self.saved_bytes = 0
        self.held_bytes = 0
        self.offloaded_bytes = 0
        self.parameters = 0
        self.by_module: Dict[str, Bytes] = {}
        self.by_store: Dict[str, Bytes] = {}

    @property
    def ratio(self) -> float:
        """held_bytes / saved_bytes."""
        return self.held_bytes / self.saved_bytes if self.saved_bytes else 0.0

    def add_saved(self, module: str, nbytes: int) -> None:
        self.saved_bytes += nbytes
        self.by_module.setdefault(module, Bytes()).saved += nbytes

    def add_held(self, module: str, store: str, numel: int, saved: int, held: int,
                 offloaded: bool) -> None:
        if offloaded:
            self.offloaded_bytes += held
        else:
            self.held_bytes += held
            self.by_module.setdefault(module, Bytes()).held += held
        tally = self.by_store.setdefault(store, Bytes())
        tally.tensors += 1
        tally.numel += numel
        tally.saved += saved
        tally.held += held
        self.by_module.setdefault(module, Bytes()).tensors += 1

    def to_dict(self) -> Dict[str, object]:
        return {"saved_bytes": self.saved_bytes, "held_bytes": self.held_bytes,
                "offloaded_bytes": self.offloaded_bytes, "parameters": self.parameters,
                "by_module": {k: v.to_dict() for k, v in self.by_module.items()},
                "by_store": {k: v.to_dict() for k, v in self.by_store.items()}}

    def table(self) -> str:
        """A text table: one line per module, then the totals."""
        rows: List[str] = [f"{'module':<32} {'tensors':>7} {'saved':>12} {'held':>12} "
                           f"{'ratio':>6}"]
        for name, b in self.by_module.items():
            rows.append(f"{name or '<top>':<32} {b.tensors:>7} {b.saved:>12} {b.held:>12} "
                        f"{b.ratio:>6.3f}")
        rows.append(f"{'total':<32} {'':>7} {self.saved_bytes:>12} {self.held_bytes:>12} "
                    f"{self.ratio:>6.3f}")
        return "\n".join(rows)

    def __repr__(self) -> str:
        return (f"Report(saved_bytes={self.saved_bytes}, held_bytes={self.held_bytes}, "
                f"offloaded_bytes={self.offloaded_bytes}, ratio={self.ratio:.4f})")
