"""dermdiff-lora: fine-tune Stable Diffusion v1-x on dermatology images to fight skin-tone bias."""

from .core.errors import ConfigError, DataError, DermDiffError  # noqa: F401
from .core.version import __version__  # noqa: F401
