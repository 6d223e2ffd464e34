"""Fine-tuned image classifiers: transformers (ResNet & co.) or, as an optional extra, timm (ResNeXt-101).

A plain torch loop, CPU-friendly: AdamW, class-weighted cross-entropy, ``epochs`` passes in seeded random
order, a seeded left-right flip per training image and pass. The seed also sets the initial weights of
what is not pretrained (the new classification head; all of ``tiny-resnet``), with the global torch RNG
left as it was. Inputs: PIL bicubic resize to the model's size, then its mean/std normalisation.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from ..core.errors import ModelError
from ..eval.features import IMAGENET_MEAN, IMAGENET_STD, module_device
from .classifier_spec import (
    DEFAULT_RESNET,
    DEFAULT_TIMM,
    TINY_RESNET,
    ClassifierSpec,
    batch_tensor,
    check_labels,
    class_weights,
)

TINY_SIZE = 32
PRETRAINED_SIZE = 224
SEED_EFFECT = "seeded init of the new head (all weights for tiny-resnet), shuffling and flips"
TIMM_HELP = ('the timm classifiers need timm and a working torchvision: pip install "dermdiff-lora[timm]"; '
             'the default classifier "probe" and "resnet" (transformers) work without it')


class LogitsNet(nn.Module):
    """uint8 images -> normalised floats -> class logits, for a transformers or a timm classifier."""

    def __init__(self, net: nn.Module, mean: Sequence[float], std: Sequence[float], hf: bool) -> None:
        super().__init__()
        self.net, self.hf = net, hf
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = (images.float() / 255.0 - self.mean) / self.std
        return self.net(pixel_values=x).logits if self.hf else self.net(x)


def tiny_resnet(n_classes: int) -> nn.Module:
    """A two-stage, 8/16-wide ResNet built in code (random weights from the current torch RNG)."""
    from transformers import ResNetConfig, ResNetForImageClassification

    config = ResNetConfig(embedding_size=8, hidden_sizes=[8, 16], depths=[1, 1], layer_type="basic",
                          num_labels=n_classes)
    return ResNetForImageClassification(config)


def _pretrained_hf(model_id: str, n_classes: int) -> nn.Module:
    """A transformers image classifier from a Hub id or folder with a new ``n_classes`` head."""
    from transformers import AutoModelForImageClassification

    if (os.path.isabs(model_id) or model_id.startswith((".", "~"))) and not os.path.isdir(model_id):
        raise ModelError(f"classifier folder {model_id!r} does not exist; pass a folder saved with "
                         f"save_pretrained or a Hub id such as {DEFAULT_RESNET!r}")
    try:
        return AutoModelForImageClassification.from_pretrained(model_id, num_labels=n_classes,
                                                               ignore_mismatched_sizes=True)
    except (OSError, ValueError) as e:
        reason = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise ModelError(f"cannot load image classifier {model_id!r} ({reason}). Fetch it once online with "
                         f"`hf download {model_id}` (then HF_HUB_OFFLINE=1 works), pass a local folder, or "
                         f"use --model-id {TINY_RESNET} (random weights, tests only)") from e


def _timm(name: str, n_classes: int) -> tuple[nn.Module, dict[str, Any]]:
    """A pretrained timm model with a new head, and its pretrained config; ModelError where it cannot load."""
    try:
        import timm
    except (ImportError, RuntimeError) as e:  # RuntimeError: torchvision built for another torch
        raise ModelError(f"{TIMM_HELP} ({e})") from e
    try:
        net = timm.create_model(name, pretrained=True, num_classes=n_classes)
    except (OSError, RuntimeError, ValueError) as e:
        raise ModelError(f"cannot create timm model {name!r} with pretrained weights ({e}); check the name "
                         "(timm.list_models()) and fetch the weights once online") from e
    return net, dict(getattr(net, "pretrained_cfg", {}) or {})


class FinetunedClassifier:
    """A transformers or timm classifier fine-tuned afresh on every ``fit`` (new seed, new training set)."""

    def __init__(self, spec: ClassifierSpec, n_classes: int) -> None:
        self.spec, self.n_classes = spec, n_classes
        default = DEFAULT_TIMM if spec.kind == "timm" else DEFAULT_RESNET
        self.model_id = str(spec.model_id or default)
        self.random_weights = spec.kind == "resnet" and self.model_id == TINY_RESNET
        self._build: Callable[[], LogitsNet] = self._builder()
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            probe_net = self._build()  # fails early (ModelError) when the model cannot load
        self.image_size = int(spec.image_size or self._size)
        self.info: dict[str, Any] = {
            "classifier": spec.kind, "model": type(probe_net.net).__name__, "model_id": self.model_id,
            "image_size": self.image_size, "random_weights": self.random_weights, "seed_effect": SEED_EFFECT,
            "settings": {k: getattr(spec, k) for k in ("epochs", "batch_size", "lr", "weight_decay")}
            | {"optimizer": "AdamW", "loss": "class-weighted cross-entropy", "device": spec.device}}

    def _builder(self) -> Callable[[], LogitsNet]:
        """A function building a fresh network (from the current torch RNG) and sets the default size."""
        k = self.n_classes
        if self.spec.kind == "timm":
            self._size = PRETRAINED_SIZE

            def build() -> LogitsNet:
                net, cfg = _timm(self.model_id, k)
                self._size = int((cfg.get("input_size") or (3, PRETRAINED_SIZE))[-1])
                return LogitsNet(net, cfg.get("mean", IMAGENET_MEAN), cfg.get("std", IMAGENET_STD), hf=False)
            return build
        self._size = TINY_SIZE if self.random_weights else PRETRAINED_SIZE
        if self.random_weights:
            return lambda: LogitsNet(tiny_resnet(k), IMAGENET_MEAN, IMAGENET_STD, hf=True)
        return lambda: LogitsNet(_pretrained_hf(self.model_id, k), IMAGENET_MEAN, IMAGENET_STD, hf=True)

    def fit(self, paths: Sequence[str | os.PathLike], labels: Sequence[int], seed: int) -> FittedNet:
        """Fine-tune a fresh network on the images; returns it, ready to score."""
        y = check_labels(labels, self.n_classes, len(paths))
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            net = self._build().to(self.spec.device)
        train_loop(net, [os.fspath(p) for p in paths], y, self.n_classes, self.spec, self.image_size, seed)
        return FittedNet(net.eval(), self.image_size, self.spec.batch_size, self.n_classes)


def train_loop(net: LogitsNet, paths: list[str], y: np.ndarray, n_classes: int, spec: ClassifierSpec,
               size: int, seed: int) -> list[float]:
    """``spec.epochs`` passes of AdamW on class-weighted cross-entropy; returns the mean loss per epoch."""
    gen = torch.Generator().manual_seed(seed)
    device = module_device(net)
    loss_fn = nn.CrossEntropyLoss(weight=torch.tensor(class_weights(y, n_classes), dtype=torch.float32,
                                                      device=device))
    opt = torch.optim.AdamW(net.parameters(), lr=spec.lr, weight_decay=spec.weight_decay)
    targets = torch.as_tensor(y, dtype=torch.long)
    losses = []
    net.train()
    for _ in range(spec.epochs):
        order = torch.randperm(len(paths), generator=gen).tolist()
        flips = (torch.rand(len(paths), generator=gen) < 0.5).tolist()
        total, seen = 0.0, 0
        for start in range(0, len(order), spec.batch_size):
            idx = order[start:start + spec.batch_size]
            if len(idx) < 2 < len(order):  # batch norm cannot train on one image
                continue
            x = batch_tensor([paths[i] for i in idx], size, [flips[i] for i in idx]).to(device)
            loss = loss_fn(net(x), targets[idx].to(device))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total, seen = total + loss.item() * len(idx), seen + len(idx)
        losses.append(total / max(seen, 1))
    return losses


class FittedNet:
    """A fine-tuned network in eval mode: scores images by softmax."""

    def __init__(self, net: LogitsNet, size: int, batch_size: int, n_classes: int) -> None:
        self.net, self.size, self.batch_size, self.n_classes = net, size, batch_size, n_classes

    def predict_proba(self, paths: Sequence[str | os.PathLike]) -> np.ndarray:
        """(N, K) softmax probabilities of the images."""
        device, out = module_device(self.net), []
        with torch.inference_mode():
            for start in range(0, len(paths), self.batch_size):
                x = batch_tensor(paths[start:start + self.batch_size], self.size).to(device)
                out.append(torch.softmax(self.net(x).float(), dim=1).double().cpu().numpy())
        return np.concatenate(out) if out else np.zeros((0, self.n_classes))
