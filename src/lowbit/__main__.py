"""``python -m lowbit COMMAND``: for now the one command ``demo`` (see ``lowbit.demo``)."""

from __future__ import annotations

import argparse
import sys
from typing import List, Optional


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m lowbit",
                                     description="lowbit: low-precision number formats.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    demo = sub.add_parser("demo", help="print the format presets and their rounding errors")
    demo.add_argument("--size", type=int, default=2**16,
                      help="values in the demo tensor, a multiple of 256 (default 65536)")
    demo.add_argument("--seed", type=int, default=0, help="input and stochastic seed (default 0)")
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command is None:  # no command: say what there is, as `git` does
        parser.print_help()
        return 0
    from .demo import run

    try:
        run(size=args.size, seed=args.seed)
    except ValueError as exc:  # a bad --size: a message, not a traceback
        parser.error(str(exc))
    return 0


if __name__ == "__main__":
    sys.exit(main())
