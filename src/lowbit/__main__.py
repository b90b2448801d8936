"""``python -m lowbit ...`` = the ``lowbit`` command (and ``torchrun ... -m lowbit train ...``)."""
import sys

from lowbit.cli import main

if __name__ == "__main__":
    sys.exit(main())
