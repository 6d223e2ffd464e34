"""What every downstream classifier shares: its settings, image loading, class weights and score matrices."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np
from PIL import Image, ImageOps

from ..core.errors import ConfigError, DataError
from ..eval.features import prepare
from ..eval.report import EvalItem, load_images

CLASSIFIERS = ("probe", "resnet", "timm")
DEFAULT_RESNET = "microsoft/resnet-50"
TINY_RESNET = "tiny-resnet"  # built in code with seeded random weights: for tests only
DEFAULT_TIMM = "resnext101_32x8d"  # the paper's ResNeXt-101 (needs the timm extra)


@dataclass(frozen=True)
class ClassifierSpec:
    """How to build and train a lesion classifier (the CLI's flags, one for one).

    - ``probe``: logistic regression (class_weight="balanced", C = ``c``) on standardised features of the
      ``extractor`` (``model_id`` = its DINOv2 Hub id or folder). The seed draws which training images
      enter horizontally flipped.
    - ``resnet``: a transformers image classifier (``model_id``: Hub id or folder, default
      microsoft/resnet-50; ``tiny-resnet`` = random weights built in code) fine-tuned end to end.
    - ``timm``: a timm model by name (default resnext101_32x8d), pretrained weights; needs the timm extra.

    Fine-tuning: AdamW (``lr``, ``weight_decay``), class-weighted cross-entropy, ``epochs`` over the
    training set in ``batch_size`` batches; the seed sets the new head's init, the shuffling and the flips.
    """

    kind: str = "probe"
    extractor: str = "dinov2"
    model_id: str | None = None
    image_size: int | None = None
    epochs: int = 5
    batch_size: int = 32
    lr: float = 1e-4
    weight_decay: float = 1e-4
    c: float = 1.0
    device: str = "cpu"

    def check(self) -> ClassifierSpec:
        """The spec itself; ConfigError naming the bad setting otherwise."""
        if self.kind not in CLASSIFIERS:
            raise ConfigError(f"classifier {self.kind!r} is unknown; use one of {', '.join(CLASSIFIERS)}")
        for name in ("epochs", "batch_size"):
            if int(getattr(self, name)) < 1:
                raise ConfigError(f"classifier {name}={getattr(self, name)!r} must be at least 1")
        if self.lr <= 0 or self.c <= 0 or self.weight_decay < 0:
            raise ConfigError(f"lr={self.lr}, c={self.c} must be > 0 and weight_decay={self.weight_decay} >= 0")
        if self.image_size is not None and self.image_size < 8:
            raise ConfigError(f"image_size={self.image_size} must be at least 8 pixels")
        return self

    def as_dict(self) -> dict:
        """The settings as a JSON-serialisable dict."""
        return asdict(self)


def load_batch(paths: Sequence[str | os.PathLike], size: int,
               flips: Sequence[bool] | None = None) -> list[Image.Image]:
    """RGB images of ``paths``, each mirrored left-right where ``flips`` says so (same length)."""
    images = load_images([EvalItem(p, ()) for p in paths])
    if flips is not None:
        images = [ImageOps.mirror(im) if f else im for im, f in zip(images, flips)]
    return [im if im.size == (size, size) else im.resize((size, size), Image.BICUBIC) for im in images]


def batch_tensor(paths: Sequence[str | os.PathLike], size: int, flips: Sequence[bool] | None = None):
    """A uint8 (N, 3, size, size) tensor of ``paths`` (PIL bicubic resize, as the feature extractors)."""
    return prepare(load_batch(paths, size, flips), size)


def check_labels(labels: Sequence[int], n_classes: int, n_paths: int) -> np.ndarray:
    """Labels as an int array of class indices; DataError unless one per image and >= 2 classes seen."""
    y = np.asarray(labels, dtype=int)
    if y.shape != (n_paths,):
        raise DataError(f"got {n_paths} images but {y.size} labels; give one label per image")
    if y.size and (y.min() < 0 or y.max() >= n_classes):
        raise DataError(f"labels must be class indices 0..{n_classes - 1}; got {sorted(set(y.tolist()))}")
    if len(set(y.tolist())) < 2:
        raise DataError(f"the training set has {y.size} image(s) of {len(set(y.tolist()))} class: a "
                        "classifier needs at least two classes; check the split and the label column")
    return y


def class_weights(y: np.ndarray, n_classes: int) -> np.ndarray:
    """sklearn's "balanced" weights n / (K_present * count) per class (1.0 for a class without images)."""
    count = np.bincount(y, minlength=n_classes).astype(float)
    present = int((count > 0).sum())
    return np.where(count > 0, y.size / (present * np.maximum(count, 1.0)), 1.0)


def full_proba(proba: np.ndarray, seen: Sequence[int], n_classes: int) -> np.ndarray:
    """(N, K) probabilities from a model that saw only the classes ``seen`` (0 for the others)."""
    out = np.zeros((proba.shape[0], n_classes))
    out[:, np.asarray(seen, dtype=int)] = proba
    return out
