"""Named image feature extractors for FID, KID and memorisation checks.

Every extractor is an ``nn.Module`` (a ``FeatureExtractor``) that takes images (N, 3, S, S) at its
``info.image_size`` S, as uint8 (0-255) or float (0-1), and returns (N, D) features. Its ``info``
(``ExtractorInfo``) goes into every figure computed from its features.

- ``dinov2`` (default): a DINOv2 backbone from the Hub or a local folder (default ``facebook/dinov2-large``,
  ViT-L/14 as Stein et al. 2023 used), pooled CLS token, ImageNet normalisation, 224 px: their FD_DINOv2.
  Any other DINOv2 (e.g. ``facebook/dinov2-base``) is named in every figure as not comparable with it.
- ``tiny-dinov2``: a 2-layer DINOv2 with seeded *random* weights, built in code, for offline tests.
  Its figures mean nothing and are not comparable with real FD_DINOv2 figures; its name says so.
- ``inception``: torchmetrics' Inception-v3 (torch-fidelity's ``FeatureExtractorInceptionV3``, 2048-d
  pool features, 299 px); needs the ``inception`` extra (torch-fidelity and torchvision).

Images are resized clean-fid style before they become tensors: PIL bicubic with antialiasing, straight
to S x S (no crop; a non-square image is stretched).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np
import torch
from PIL import Image
from torch import nn

from ..core.errors import ConfigError, ModelError

EXTRACTORS = ("dinov2", "tiny-dinov2", "inception")
DEFAULT_DINOV2 = "facebook/dinov2-large"  # ViT-L/14, as FD_DINOv2 (Stein et al. 2023)
DINOV2_SIZE = 224
INCEPTION_SIZE = 299
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

TINY_NAME = "tiny-dinov2 (random weights; not comparable to FD_DINOv2)"
TINY_MODEL_ID = "random-init:tiny-dinov2-seed0"
TINY_SEED = 0
TINY_SIZE = 32
# Init std 0.2 instead of DINOv2's 0.02: with 0.02 the pooled token barely depends on the image
# (cosine similarity > 0.95 between any two inputs), which makes nearest-neighbour tests meaningless.
TINY_INIT_STD = 0.2

INCEPTION_HELP = ('the Inception extractor needs torch-fidelity and a working torchvision: '
                  'pip install "dermdiff-lora[inception]"; the default extractor "dinov2" works without it')


@dataclass(frozen=True)
class ExtractorInfo:
    """What produced a set of features: extractor name, model id or folder, input size S, feature dim D.

    ``random_weights`` is True for extractors whose figures are only good for tests.
    """

    name: str
    model_id: str
    image_size: int
    dim: int
    random_weights: bool = False

    def as_dict(self) -> dict:
        """The record as a JSON-serialisable dict."""
        return asdict(self)


class FeatureExtractor(nn.Module):
    """Base class: never leaves eval mode; ``num_features`` lets torchmetrics' FID use it directly."""

    def __init__(self, info: ExtractorInfo) -> None:
        super().__init__()
        self.info = info
        self.num_features = info.dim

    def train(self, mode: bool = True) -> FeatureExtractor:
        """Stay in eval mode whatever ``mode`` says."""
        return super().train(False)

    @staticmethod
    def to_unit(images: torch.Tensor) -> torch.Tensor:
        """uint8 0-255 -> float 0-1; float images are taken as already 0-1."""
        return images.float() / 255.0 if images.dtype == torch.uint8 else images.float()


class Dinov2Features(FeatureExtractor):
    """DINOv2 backbone -> pooled (layer-normed) CLS token, after ImageNet mean/std normalisation."""

    def __init__(self, model: nn.Module, info: ExtractorInfo) -> None:
        super().__init__(info)
        self.model = model.eval()
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = (self.to_unit(images) - self.mean) / self.std
        return self.model(pixel_values=x).pooler_output


class InceptionFeatures(FeatureExtractor):
    """torchmetrics' ``NoTrainInceptionV3`` (2048-d); it takes uint8, so float input is quantised."""

    def __init__(self, net: nn.Module, info: ExtractorInfo) -> None:
        super().__init__(info)
        self.net = net

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if images.dtype != torch.uint8:
            images = (images.clamp(0, 1) * 255).round().to(torch.uint8)
        return self.net(images)


def tiny_dinov2() -> Dinov2Features:
    """A 2-layer, 32-wide DINOv2 (patch 8, 32 px) with random weights seeded by ``TINY_SEED``.

    The global torch RNG is left as it was. Same weights on every call, on every machine.
    """
    from transformers import Dinov2Config, Dinov2Model

    config = Dinov2Config(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                          patch_size=8, image_size=TINY_SIZE, initializer_range=TINY_INIT_STD)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(TINY_SEED)
        model = Dinov2Model(config)
    info = ExtractorInfo(TINY_NAME, TINY_MODEL_ID, TINY_SIZE, config.hidden_size, random_weights=True)
    return Dinov2Features(model, info)


def dinov2(model_id: str | os.PathLike = DEFAULT_DINOV2) -> Dinov2Features:
    """A pretrained DINOv2 from a Hub id or a local folder; ModelError says how to fetch it."""
    from transformers import AutoModel

    model_id = str(model_id)
    if (os.path.isabs(model_id) or model_id.startswith((".", "~"))) and not os.path.isdir(model_id):
        raise ModelError(f"DINOv2 model folder {model_id!r} does not exist; pass a folder saved with "
                         f"save_pretrained, or a Hub id such as {DEFAULT_DINOV2!r} "
                         f"(fetch it with `hf download {DEFAULT_DINOV2}`)")
    try:
        model = AutoModel.from_pretrained(model_id)
    except (OSError, ValueError) as e:
        offline = os.environ.get("HF_HUB_OFFLINE", "0")
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ModelError(
            f"cannot load the DINOv2 feature model {model_id!r} ({first}). Fetch it once while online with "
            f"`hf download {model_id}` (later runs work with HF_HUB_OFFLINE=1; now HF_HUB_OFFLINE={offline}), "
            "or pass a local folder saved with save_pretrained") from e
    if getattr(model.config, "model_type", "") not in ("dinov2", "dinov2_with_registers"):
        raise ModelError(f"{model_id!r} is a {model.config.model_type!r} model, not DINOv2; "
                         f"use a DINOv2 checkpoint such as {DEFAULT_DINOV2!r}")
    info = ExtractorInfo(dinov2_name(model.config), model_id, DINOV2_SIZE, int(model.config.hidden_size))
    return Dinov2Features(model, info)


def dinov2_name(config) -> str:
    """``"dinov2"`` for a ViT-L/14 DINOv2 (FD_DINOv2 as published); any other names its architecture and
    says that its figures are not comparable with published FD_DINOv2."""
    shape = (config.model_type, config.hidden_size, config.num_hidden_layers, config.patch_size)
    if shape == ("dinov2", 1024, 24, 14):
        return "dinov2"
    return (f"dinov2 ({config.model_type}, width {config.hidden_size}, {config.num_hidden_layers} layers, "
            f"patch {config.patch_size}: not the ViT-L/14 of FD_DINOv2, not comparable with published figures)")


def inception() -> InceptionFeatures:
    """torchmetrics' default FID Inception-v3; ModelError (with the install line) where it cannot load."""
    try:
        from torchmetrics.image.fid import NoTrainInceptionV3

        net = NoTrainInceptionV3(name="inception-v3-compat", features_list=["2048"])
    except ImportError as e:  # torch-fidelity missing (ModuleNotFoundError is an ImportError)
        raise ModelError(f"{INCEPTION_HELP} ({e})") from e
    except RuntimeError as e:  # torchvision built for another torch: "operator torchvision::nms does not exist"
        if "torchvision" not in str(e):
            raise
        raise ModelError(f"{INCEPTION_HELP} (torchvision does not load beside this torch: {e})") from e
    except OSError as e:  # weights not downloadable (offline)
        raise ModelError(f"cannot fetch the Inception weights ({e}); run once online, "
                         'or use the default extractor "dinov2"') from e
    return InceptionFeatures(net, ExtractorInfo("inception", "pt_inception-2015-12-05", INCEPTION_SIZE, 2048))


def load_extractor(name: str = "dinov2", model_id: str | os.PathLike | None = None,
                   device: str | torch.device = "cpu") -> tuple[FeatureExtractor, ExtractorInfo]:
    """The extractor called ``name`` (one of ``EXTRACTORS``) on ``device``, and its info.

    ``model_id`` (Hub id or folder) is only for ``dinov2``.
    """
    if name not in EXTRACTORS:
        raise ConfigError(f"unknown feature extractor {name!r}; use one of {EXTRACTORS}")
    if model_id is not None and name != "dinov2":
        raise ConfigError(f"model_id is only for the 'dinov2' extractor, not {name!r}")
    if name == "dinov2":
        module: FeatureExtractor = dinov2(model_id if model_id is not None else DEFAULT_DINOV2)
    elif name == "tiny-dinov2":
        module = tiny_dinov2()
    else:
        module = inception()
    module = module.to(device).eval()
    return module, module.info


def prepare(images: Sequence[Image.Image], size: int) -> torch.Tensor:
    """RGB uint8 tensor (N, 3, size, size); images of another size are resized with PIL bicubic
    (antialiased) first, as clean-fid does."""
    arrays = []
    for image in images:
        image = image.convert("RGB")
        if image.size != (size, size):
            image = image.resize((size, size), Image.BICUBIC)
        arrays.append(np.asarray(image, dtype=np.uint8))
    if not arrays:
        return torch.zeros((0, 3, size, size), dtype=torch.uint8)
    return torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).contiguous()


def module_device(module: nn.Module) -> torch.device:
    """The device of the module's first parameter or buffer (CPU when it has none)."""
    for tensor in (*module.parameters(), *module.buffers()):
        return tensor.device
    return torch.device("cpu")


def extract(module: FeatureExtractor, images: Sequence[Image.Image] | torch.Tensor,
            batch_size: int = 32) -> np.ndarray:
    """(N, D) float64 features of PIL images (resized by ``prepare``) or of a prepared tensor."""
    if batch_size < 1:
        raise ConfigError(f"batch_size must be at least 1, got {batch_size}")
    device, chunks = module_device(module), []
    with torch.inference_mode():
        for start in range(0, len(images), batch_size):
            batch = images[start:start + batch_size]
            x = batch if isinstance(batch, torch.Tensor) else prepare(batch, module.info.image_size)
            chunks.append(module(x.to(device)).double().cpu().numpy())
    return np.concatenate(chunks) if chunks else np.zeros((0, module.info.dim))
