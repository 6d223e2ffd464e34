"""The one training loop (LoRA or full UNet + EMA), its optimizers, checkpoints, validation grids and the memory plan.

May import every layer below it: ``core``, ``adapters``, ``data``, ``generation``.
"""
