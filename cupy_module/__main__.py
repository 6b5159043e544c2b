"""``python -m cupy_module``: build the CPU warp library ahead of time (install step, CI)."""

import sys

from cupy_module.build import main

sys.exit(main())
