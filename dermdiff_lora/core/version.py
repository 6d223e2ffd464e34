"""The package version (one place; the package root and file metadata read it)."""

__version__ = "0.1.0"
