"""The ``dermdiff-lora`` command: one module per command group, each a thin layer over library functions.

The top layer: may import everything; nothing imports it.
"""

from .app import main  # noqa: F401  (the console-script entry point)
