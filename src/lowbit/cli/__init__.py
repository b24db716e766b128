"""The ``lowbit`` command (``lowbit`` console script, ``python -m lowbit``).

==========  ===================================================================================
``demo``    train a small CNN (digits) and a small GPT (text) in fp32 and several paper recipes;
            a comparison table, ``results.json``, training curves and value grids (PNG)
``train``   one recipe on one model and data set: progress, per-epoch metrics, ``results.json``,
            ``epochs.csv``, ``curves.png``
``formats`` every preset's constants and rounding errors; ``--plot NAMES``: value grids (PNG)
``recipes`` the registered paper recipes; ``lowbit recipes NAME`` describes one
``bench``   the quantize/encode/decode bandwidth benchmark (``lowbit.bench``)
==========  ===================================================================================

A user error (an unknown recipe, data set or model, a missing data directory, a bad option)
is one line on stderr and exit status 2.  Importing this package loads neither matplotlib
nor tqdm: each command imports what it needs when it runs.
"""

from __future__ import annotations

import argparse
import sys
from typing import List, Optional

from . import _bench, _demo, _formats, _recipes, _train
from ._common import CliError
from ._train import TrainConfig, train

__all__ = ["main", "CliError", "TrainConfig", "train"]

_COMMANDS = (_demo, _train, _formats, _recipes, _bench)


class _Parser(argparse.ArgumentParser):
    """argparse, with its errors on one line (``prog: error: message``) and exit status 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def parser() -> argparse.ArgumentParser:
    """The argument parser of every command."""
    p = _Parser(prog="lowbit", description="lowbit: bit-exact low-precision number formats "
                "and the training recipes built on them.")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for command in _COMMANDS:
        command.add_parser(sub)
    return p


def main(argv: Optional[List[str]] = None) -> int:
    """Run ``lowbit ARGV`` (default: ``sys.argv[1:]``); return the exit status (0 ok, 1 a
    failed demo run, 2 a user error)."""
    p = parser()
    try:
        args = p.parse_args(argv)
    except SystemExit as stop:  # --help (0) or a usage error (2, already printed)
        return stop.code if isinstance(stop.code, int) else 2
    if args.command is None:  # no command: say what there is, as `git` does
        p.print_help()
        return 0
    try:
        return args.run(args)
    except CliError as err:
        print(f"lowbit {args.command}: error: {err}", file=sys.stderr)
        return 2
