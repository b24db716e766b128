"""Seeds of the optimizer's stochastic roundings: a stable hash of (seed, index, step, role).

Each stochastic rounding in ``LowPrecision.step`` is keyed by its own 64-bit Philox seed::

    derive_seed(seed, index, step, role) = int.from_bytes(
        blake2b(seed.to_bytes(8, "little") + index.to_bytes(8, "little")
                + step.to_bytes(8, "little") + role.encode("utf-8"),
                digest_size=8, person=b"lowbit.optim").digest(),
        "little")

``seed`` is the wrapper's global seed, ``index`` the parameter's position in the optimizer's
``param_groups`` (groups in order, parameters in order), ``step`` the number of ``step()``
calls before this one, and ``role`` one of ``ROLES`` (``"state/<name>"`` for a state tensor).
BLAKE2b (RFC 7693) is the same on every platform and Python version (Python's ``hash`` is
salted per process), so a resumed run draws exactly the noise the uninterrupted one would.
"""

from __future__ import annotations

import hashlib

__all__ = ["derive_seed", "ROLES"]

#: The roles a parameter's roundings are keyed by.
ROLES = ("grad", "update", "weight", "init/master", "init/weight", "state/<name>")

_PERSON = b"lowbit.optim"
_U64 = 2**64


def _u64(value: object, name: str) -> bytes:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int in [0, 2^64); got {value!r}")
    if not 0 <= value < _U64:
        raise ValueError(f"{name} must be in [0, 2^64); got {value}")
    return value.to_bytes(8, "little")


def derive_seed(seed: int, index: int, step: int, role: str) -> int:
    """The 64-bit Philox seed of one stochastic rounding (formula in the module docstring).

    Raises:
        TypeError, ValueError: an argument is not an int in ``[0, 2^64)`` or ``role`` is not
            a string.
    """
    if not isinstance(role, str):
        raise TypeError(f"role must be a str; got {role!r}")
    message = _u64(seed, "seed") + _u64(index, "index") + _u64(step, "step") + role.encode()
    digest = hashlib.blake2b(message, digest_size=8, person=_PERSON).digest()
    return int.from_bytes(digest, "little")
