"""Living with adapters after training: inspect, merge, combine, extract, resize, convert (kohya/ComfyUI).

One module per job; ``io`` reads, checks and writes adapter files for all of them.
"""
