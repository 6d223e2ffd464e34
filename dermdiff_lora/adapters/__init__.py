"""Adapters: LoRA on live models (peft), and living with adapter files after training — inspect, merge,
combine, extract, resize, convert (kohya/ComfyUI).

One module per job; ``io`` reads, checks and writes adapter files for all of them. May import ``core``.
"""
