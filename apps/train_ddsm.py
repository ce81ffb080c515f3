"""apps/train.py under its earlier name, which commands and scripts written before
still use (python apps/train_ddsm.py --backend cuda): the same app, the same options."""

import sys

from train import main, parse_args  # noqa: F401  (this folder is the first on sys.path)

from tinycnn.mammo.cli import tolerant_std_streams

if __name__ == "__main__":
    tolerant_std_streams()
    sys.exit(main())
