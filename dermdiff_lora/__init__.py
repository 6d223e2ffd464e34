"""dermdiff-lora: fine-tune Stable Diffusion v1-x on dermatology images to fight skin-tone bias."""

__version__ = "0.1.0"

from .errors import ConfigError, DataError, DermDiffError  # noqa: E402,F401
