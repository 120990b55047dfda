"""``python -m meer``: the same as the ``meer`` command."""

import sys

from meer.cli import main

sys.exit(main())
