"""``python -m meer.train --config ...``: the entry point for torchrun."""

import sys

from meer.cli import main

sys.exit(main(["train", *sys.argv[1:]]))
