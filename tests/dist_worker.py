"""Run under ``torchrun --nproc_per_node 2``: train, and record per rank what it saw and what it ended with."""

import json
import os
import sys
from pathlib import Path

from conftest import make_cfg


def main(data_dir: str, out_dir: str, *overrides: str) -> None:
    from peft import get_peft_model_state_dict
    from safetensors.torch import save_file

    from dermdiff_lora.data import cache
    from dermdiff_lora.training import train

    rank = int(os.environ.get("RANK", 0))
    seen: list[int] = []
    info: dict = {"encoded": []}  # latent-cache rows this process encoded; how DDP wrapped the UNet
    real_loss, real_finish, real_encode = train.training_loss, train.finish, cache.encode_latents

    def encode(vae, index, data_cfg, chunks, *args, **kwargs):
        info["encoded"] += [list(c) for c in chunks]
        return real_encode(vae, index, data_cfg, chunks, *args, **kwargs)

    def loss(run, batch):
        seen.extend(int(i) for i in batch["index"])
        return real_loss(run, batch)

    def finish(run, state, seconds):
        unet = run.accelerator.unwrap_model(run.parts.unet)
        state_dict = {k: v.contiguous() for k, v in get_peft_model_state_dict(unet).items()}
        save_file(state_dict, str(Path(out_dir) / f"rank{rank}.safetensors"))
        (Path(out_dir) / f"rank{rank}.json").write_text(json.dumps(seen))
        ddp = run.parts.unet
        info.update(wrapper=type(ddp).__name__, gradient_as_bucket_view=getattr(ddp, "gradient_as_bucket_view", None))
        (Path(out_dir) / f"rank{rank}_info.json").write_text(json.dumps(info))
        return real_finish(run, state, seconds)

    train.training_loss = loss
    train.finish = finish
    cache.encode_latents = encode
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    train.train(make_cfg(Path(data_dir), Path(out_dir), *overrides))


if __name__ == "__main__":
    main(*sys.argv[1:])
