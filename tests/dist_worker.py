"""Run under ``torchrun --nproc_per_node 2``: train, and record per rank what it saw and what it ended with."""

import json
import os
import sys
from pathlib import Path

from conftest import make_cfg


def main(data_dir: str, out_dir: str, *overrides: str) -> None:
    from peft import get_peft_model_state_dict
    from safetensors.torch import save_file

    from dermdiff_lora.training import train

    rank = int(os.environ.get("RANK", 0))
    seen: list[int] = []
    real_loss, real_finish = train.training_loss, train.finish

    def loss(run, batch):
        seen.extend(int(i) for i in batch["index"])
        return real_loss(run, batch)

    def finish(run, state, seconds):
        unet = run.accelerator.unwrap_model(run.parts.unet)
        state_dict = {k: v.contiguous() for k, v in get_peft_model_state_dict(unet).items()}
        save_file(state_dict, str(Path(out_dir) / f"rank{rank}.safetensors"))
        (Path(out_dir) / f"rank{rank}.json").write_text(json.dumps(seen))
        return real_finish(run, state, seconds)

    train.training_loss = loss
    train.finish = finish
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    train.train(make_cfg(Path(data_dir), Path(out_dir), *overrides))


if __name__ == "__main__":
    main(*sys.argv[1:])
