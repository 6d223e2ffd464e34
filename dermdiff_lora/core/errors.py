"""The package's exceptions: each message names the bad file, key or value and how to fix it."""


class DermDiffError(Exception):
    """Base class. The CLI prints these as one line (no traceback unless --debug) and exits 1."""


class ConfigError(DermDiffError):
    """A config file or override is wrong (unknown key, wrong type, value out of range)."""


class DataError(DermDiffError):
    """The dataset folder, its metadata or one of its images is unusable."""


class ModelError(DermDiffError):
    """A base model or adapter cannot be found or does not fit."""


class AdapterError(DermDiffError):
    """An adapter file is corrupt, of another architecture, or of an unknown key layout."""


class HubError(DermDiffError):
    """A Hugging Face Hub call failed (network, token, permissions)."""


class TrainingError(DermDiffError):
    """Training cannot go on (non-finite loss, ...)."""


class DiskError(DermDiffError):
    """An output could not be written (disk full, quota, file-size limit, read-only): nothing half-written."""
