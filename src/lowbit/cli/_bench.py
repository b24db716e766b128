"""``lowbit bench``: the quantize / encode / decode bandwidth benchmark of ``lowbit.bench``
(the same code as ``benchmarks/quantize_bandwidth.py``), writing ``runs/bench/`` by default."""

from __future__ import annotations

import argparse

from ._common import CliError

__all__ = ["add_parser", "run"]


def add_parser(sub: "argparse._SubParsersAction") -> None:
    from ..bench import quantize

    p = sub.add_parser("bench", help="bandwidth of quantize/encode/decode against the copy limit",
                       description=quantize.__doc__.split("\n\n")[0])
    quantize.add_arguments(p)
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from ..bench import quantize

    try:
        quantize.run(args)
    except ValueError as err:
        raise CliError(str(err)) from None
    return 0
