"""Entry point of the one-file binary: the same ``main`` as the ``locshare`` console script."""

from __future__ import annotations

import sys

from locshare._cli import main

if __name__ == "__main__":
    sys.exit(main())
