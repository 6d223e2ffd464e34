"""The base everything else stands on: errors, atomic writes, the typed config, prompts, base models, file formats, reading from the Hub.

Imports nothing else from the package.
"""
