"""``python -m lowbit COMMAND``: the same ``main`` as the ``lowbit`` console script
(``lowbit.cli``)."""

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
