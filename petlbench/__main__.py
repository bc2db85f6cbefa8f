"""`python -m petlbench ...`: the same command as the `petlbench` console script."""
import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
