"""Drawing images from a base model and adapters: prompts × seeds, diagnosis × tone grids, PNG provenance.

May import ``core``, ``adapters`` and ``data``.
"""
