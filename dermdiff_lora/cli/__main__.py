"""``python -m dermdiff_lora.cli`` (as ``accelerate launch`` and ``torchrun`` run it)."""

import sys

from .app import main

sys.exit(main())
