"""`python -m srfeat ...`: the `srfeat` command, for an environment whose scripts folder is not on PATH."""

import sys

from srfeat.cli import main

if __name__ == "__main__":
    sys.exit(main())
