"""Where numba caches compiled CPU kernels: set before numba is first imported.

numba writes its cache next to the source file by default (``__pycache__`` inside the installed
package, often read-only).  Unless the user chose ``NUMBA_CACHE_DIR``, lowbit points it at
``$XDG_CACHE_HOME/lowbit/numba`` (``~/.cache/lowbit/numba``), or at a per-user directory under
the system temporary directory when that is not writable.
"""

from __future__ import annotations

import os
import sys
import tempfile

__all__ = ["configure_numba_cache"]

_ENV = "NUMBA_CACHE_DIR"


def _writable_dir(path: str) -> bool:
    try:
        os.makedirs(path, exist_ok=True)
    except OSError:
        return False
    return os.access(path, os.W_OK | os.X_OK)


def _candidates() -> list:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    uid = os.getuid() if hasattr(os, "getuid") else "user"
    return [os.path.join(base, "lowbit", "numba"),
            os.path.join(tempfile.gettempdir(), f"lowbit-numba-{uid}")]


def configure_numba_cache() -> str:
    """Set ``NUMBA_CACHE_DIR`` unless the user already did; return the directory in use
    ("" when none is writable: numba then decides, and caching may be off)."""
    if os.environ.get(_ENV):
        return os.environ[_ENV]
    numba_config = sys.modules.get("numba.core.config")
    if numba_config is not None and getattr(numba_config, "CACHE_DIR", ""):
        return numba_config.CACHE_DIR  # set through numba's config file or in code
    for path in _candidates():
        if _writable_dir(path):
            os.environ[_ENV] = path
            break
    else:
        return ""
    if numba_config is not None:  # numba read its environment already
        numba_config.CACHE_DIR = os.environ[_ENV]
    return os.environ[_ENV]
