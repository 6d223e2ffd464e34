"""Render docs/example_model_card.md: train the tiny demo adapter (offline, CPU) and write its model card.

    PYTHONPATH=. python scripts/example_card.py [--steps 200] [--out docs]

The card's grid is copied beside it as example_model_card_grid.png (the card links it relatively).
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
from pathlib import Path

REPO_ID = "your-name/dermdiff-demo-lora"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=200, help="training steps (the demo config's: 200)")
    parser.add_argument("--out", default="docs", help="folder for the card and its grid")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from dermdiff_lora.core import config
    from dermdiff_lora.hub.card import build_card
    from dermdiff_lora.hub.card_facts import find_grid
    from dermdiff_lora.tone.synthetic import make_dataset
    from dermdiff_lora.training.train import train

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        data = make_dataset(Path(tmp) / "data", n=60, size=64, seed=0)
        run = Path(tmp) / "lora"
        train(config.load("demo", [f"data.dir={data}", f"output.dir={run}", f"train.max_steps={args.steps}",
                                   "train.checkpoint_every=0", "validation.every=0", "logging.tensorboard=false"]))
        grid = find_grid(run)
        text = build_card(run, repo_id=REPO_ID)
        shutil.copyfile(grid, out / "example_model_card_grid.png")
        text = text.replace(grid.relative_to(run).as_posix(), "example_model_card_grid.png")
    (out / "example_model_card.md").write_text(text)
    print(f"wrote {out / 'example_model_card.md'} and {out / 'example_model_card_grid.png'}")


if __name__ == "__main__":
    main()
