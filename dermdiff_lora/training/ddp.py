"""How training wraps models for several processes (DDP), shared by the loop and by ``plan``.

DDP keeps the gradients it all-reduces in flat buckets, one element per trained parameter element. By
default each parameter's ``.grad`` is a second tensor copied in and out of those buckets: twice the gradient
memory (+3.4 GB for a full SD v1-4 UNet in fp32). ``gradient_as_bucket_view=True`` makes each ``.grad`` a
view into its bucket: one copy. Once ``zero_grad(set_to_none=True)`` has dropped them, a parameter's new
gradient exists on its own only until DDP copies it into the bucket (the largest one tensor at a time).
"""

from __future__ import annotations

GRADIENT_AS_BUCKET_VIEW = True


def ddp_handlers() -> list:
    """``kwargs_handlers`` for ``accelerate.Accelerator``: DDP with gradients as bucket views."""
    from accelerate import DistributedDataParallelKwargs

    return [DistributedDataParallelKwargs(gradient_as_bucket_view=GRADIENT_AS_BUCKET_VIEW)]


def ddp_extra_bytes(trainable: list, processes: int) -> int:
    """Bytes DDP holds beyond one copy of the gradients: a second copy without bucket views; with them the
    largest gradient, allocated on its own before DDP copies it into its bucket. 0 for one process."""
    if processes <= 1 or not trainable:
        return 0
    sizes = [p.numel() * p.element_size() for p in trainable]
    return max(sizes) if GRADIENT_AS_BUCKET_VIEW else sum(sizes)


def ddp_note(processes: int, cfg) -> str:
    """``plan``'s line on what every GPU of a DDP run holds."""
    t = cfg.train
    how = "its gradients are views into DDP's buckets" if GRADIENT_AS_BUCKET_VIEW else "DDP keeps a 2nd gradient copy"
    return (f"each of the {processes} GPUs holds all of the above (DDP replicates weights, optimizer states "
            f"and EMA; {how}); global batch {t.batch_size} × {t.gradient_accumulation} accumulation × "
            f"{processes} processes = {t.batch_size * t.gradient_accumulation * processes}; NCCL's own buffers "
            "come on top (not counted)")
