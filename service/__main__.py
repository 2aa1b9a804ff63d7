"""`python -m service`: see service/cli.py."""

import sys

from .cli import main

# The guard matters: uvicorn's spawned workers re-import the main module (as __mp_main__).
if __name__ == "__main__":
    sys.exit(main())
