"""The image modality: keyframes or cover images (an ``image`` column of paths, or frames decoded
from a ``video``), preprocessed as the open_clip model expects, encoded by its image tower and
pooled over frames by mean or attention.

The featurizer resizes and crops to uint8 pixels; scaling and mean/std normalisation run in the
encoder, on the device: a batch crosses to the GPU (and sits in the media shards) at a quarter of
its float32 size."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np
import open_clip
import torch
from open_clip.constants import OPENAI_DATASET_MEAN, OPENAI_DATASET_STD
from open_clip.transform import PreprocessCfg, image_transform_v2, merge_preprocess_dict
from torch import nn
from torchvision.transforms import Compose, PILToTensor

from mmrec.data.media import MAX_IMAGE_PIXELS, MediaError, load_image, video_keyframes
from mmrec.data.schema import IMAGE_SEPARATOR, Catalogue
from mmrec.modalities import Feature, Modality
from mmrec.models.adapt import ModalityEncoder, apply_training_mode, masked_mean

PRESETS_DIR = Path(__file__).resolve().parent.parent / "models" / "presets"
FRAME_POOLINGS = ("mean", "attn")


def register_presets() -> None:
    """Make mmrec's own open_clip architectures (plain JSON in models/presets) known to open_clip."""
    for path in sorted(PRESETS_DIR.glob("*.json")):
        if open_clip.get_model_config(path.stem) is None:
            open_clip.add_model_config(path)


def model_config(model_name: str) -> dict:
    """open_clip's architecture config for ``model_name`` (mmrec's presets included), or a ValueError."""
    register_presets()
    config = open_clip.get_model_config(model_name)
    if config is None:
        raise ValueError(
            f"unknown open_clip model '{model_name}': expected one of open_clip.list_models() or a JSON in "
            f"{PRESETS_DIR}"
        )
    return config


def preprocess_config(model_name: str, pretrained: str | None) -> PreprocessCfg:
    """The model's own preprocessing: its input size from the architecture, mean/std/interpolation
    from the pretrained tag (open_clip's defaults for random init or a local weights file)."""
    config = model_config(model_name)
    overlay = {"size": config["vision_cfg"]["image_size"], **config.get("preprocess_cfg", {})}
    tag_cfg = (
        open_clip.get_pretrained_cfg(model_name, pretrained) if pretrained and not Path(pretrained).exists() else {}
    )
    overlay.update({k: v for k, v in tag_cfg.items() if k in PreprocessCfg.__dataclass_fields__})
    return PreprocessCfg(**merge_preprocess_dict(PreprocessCfg(), overlay))


def pixel_transform(preprocess: PreprocessCfg) -> Compose:
    """open_clip's eval transform for ``preprocess`` up to its pixels: resize, crop and RGB, then
    uint8 (3, H, W); its ToTensor scaling and Normalize are left to ImageBackbone."""
    steps = image_transform_v2(preprocess, is_train=False).transforms
    kept = [t for t in steps if type(t).__name__ not in ("MaybeToTensor", "ToTensor", "Normalize")]
    return Compose([*kept, PILToTensor()])


class ImageFeaturizer:
    """Up to ``num_frames`` frames per item: its images (evenly picked) or else its video's keyframes."""

    def __init__(
        self,
        catalogue: Catalogue,
        model_name: str,
        pretrained: str | None = None,
        num_frames: int = 3,
        max_pixels: int = MAX_IMAGE_PIXELS,
    ):
        """``max_pixels``: larger images are refused from their header, undecoded (decompression bombs)."""
        if num_frames < 1:
            raise ValueError(f"encoder.image.featurizer.num_frames must be >= 1, got {num_frames}")
        if not isinstance(max_pixels, int) or max_pixels < 1:
            raise ValueError(f"data.max_image_pixels must be a positive integer, got {max_pixels!r}")
        self.catalogue, self.num_frames, self.max_pixels = catalogue, num_frames, max_pixels
        self.preprocess = preprocess_config(model_name, pretrained)
        self.transform = pixel_transform(self.preprocess)
        self.size = self.preprocess.size if isinstance(self.preprocess.size, int) else self.preprocess.size[0]

    def _frames(self, row, problems: list[str]) -> list:
        frames = []
        paths = [p.strip() for p in row.image.split(IMAGE_SEPARATOR) if p.strip()] if row.image else []
        if paths:
            picks = np.linspace(0, len(paths) - 1, num=min(self.num_frames, len(paths))).round().astype(int)
            for k in sorted(set(picks.tolist())):
                try:
                    frames.append(load_image(self.catalogue.media_path(paths[k]), self.max_pixels))
                except MediaError as err:
                    problems.append(str(err))
        if not frames and row.video:
            try:
                frames = video_keyframes(self.catalogue.media_path(row.video), self.num_frames)
            except MediaError as err:
                problems.append(str(err))
        return frames

    def __call__(self, index: int, problems: list[str]) -> Feature:
        pixels = torch.zeros(self.num_frames, 3, self.size, self.size, dtype=torch.uint8)
        mask = torch.zeros(self.num_frames, dtype=torch.bool)
        for k, frame in enumerate(self._frames(self.catalogue.items.iloc[index], problems)[: self.num_frames]):
            pixels[k], mask[k] = self.transform(frame), True
        return Feature(pixels, mask, bool(mask.any()))

    def settings(self) -> dict:
        return {
            "num_frames": self.num_frames,
            "preprocess": repr(self.preprocess),
            "pixels": "uint8",
            "max_pixels": self.max_pixels,
        }

    def media_files(self) -> list[Path]:
        items = self.catalogue.items
        paths = [p.strip() for cell in items["image"] for p in cell.split(IMAGE_SEPARATOR) if p.strip()]
        return [self.catalogue.media_path(p, check=False) for p in [*paths, *(v for v in items["video"] if v)]]

    def encoder_kwargs(self) -> dict:
        return {}


class FrameAttentionPool(nn.Module):
    """A learned query attends over the frames of an item; padded frames get no weight."""

    def __init__(self, dim: int):
        super().__init__()
        self.query = nn.Parameter(torch.zeros(dim))
        self.key = nn.Linear(dim, dim)

    def forward(self, frames: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        scores = self.key(frames) @ self.query / frames.shape[-1] ** 0.5  # (B, F)
        weights = scores.masked_fill(~mask, float("-inf")).softmax(dim=1).nan_to_num(0.0)
        return (weights.unsqueeze(-1) * frames).sum(1)


class ImageBackbone(nn.Module):
    """(B, F, 3, H, W) uint8 RGB frames + (B, F) frame mask -> (B, D); only real frames are encoded,
    after scaling to [0, 1] and normalising by the model's ``mean`` and ``std``."""

    def __init__(
        self,
        visual: nn.Module,
        output_dim: int,
        frame_pooling: str,
        mean: tuple[float, ...] = OPENAI_DATASET_MEAN,
        std: tuple[float, ...] = OPENAI_DATASET_STD,
    ):
        super().__init__()
        if frame_pooling not in FRAME_POOLINGS:
            raise ValueError(f"unknown frame pooling '{frame_pooling}': expected one of {FRAME_POOLINGS}")
        self.visual = visual
        self.pool = FrameAttentionPool(output_dim) if frame_pooling == "attn" else None
        # derived from the config, so not saved: bundles and checkpoints hold weights only
        self.register_buffer("scale", 1.0 / (255.0 * torch.tensor(std).view(1, 3, 1, 1)), persistent=False)
        self.register_buffer("shift", (torch.tensor(mean) / torch.tensor(std)).view(1, 3, 1, 1), persistent=False)

    def forward(self, frames: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        if frames.dtype != torch.uint8:
            raise TypeError(f"image frames must be uint8 pixels (ImageFeaturizer's output), got {frames.dtype}")
        real = frames[mask].float() * self.scale - self.shift  # (n_real_frames, 3, H, W): (x / 255 - mean) / std
        encoded = self.visual(real)  # (n_real_frames, D)
        per_frame = encoded.new_zeros(*mask.shape, encoded.shape[-1])
        per_frame[mask] = encoded
        return masked_mean(per_frame, mask) if self.pool is None else self.pool(per_frame, mask)


def build_encoder(
    model_name: str,
    pretrained: str | None = None,
    mode: str = "frozen",
    frame_pooling: str = "mean",
    lora_targets: tuple[str, ...] = ("attn",),
    lora_r: int = 8,
    lora_alpha: int = 16,
    gradient_checkpointing: bool = False,
) -> ModalityEncoder:
    """Build the image ModalityEncoder from ``open_clip.create_model(model_name, pretrained)``.

    ``pretrained`` is an open_clip tag ('openai', 'laion2b_s34b_b79k', ...), a local checkpoint
    file, or None for random init. A frame pooling of 'attn' adds a trainable attention pool.
    """
    if frame_pooling == "attn" and mode == "frozen":
        raise ValueError(
            "encoder.image.frame_pooling=attn trains an attention pool, but mode=frozen encoders are cached "
            "once: use frame_pooling=mean, or mode=full/lora"
        )
    if not model_name.startswith("hf-hub:"):
        model_config(model_name)
    try:
        model = open_clip.create_model(model_name, pretrained=pretrained or None, require_pretrained=bool(pretrained))
    except Exception as err:  # open_clip raises RuntimeError, OSError or URLError variants
        raise OSError(
            f"cannot load open_clip weights '{pretrained}' for '{model_name}': download the checkpoint where the "
            f"network is reachable and set encoder.image.pretrained to its local file path. ({err})"
        ) from err
    visual = model.visual
    if gradient_checkpointing:
        visual.set_grad_checkpointing(True)
    visual = apply_training_mode(visual, mode, list(lora_targets), lora_r, lora_alpha)
    preprocess = preprocess_config(model_name, pretrained) if not model_name.startswith("hf-hub:") else PreprocessCfg()
    backbone = ImageBackbone(visual, visual.output_dim, frame_pooling, preprocess.mean, preprocess.std)
    return ModalityEncoder(backbone, visual.output_dim, mode)


class ImageModality(Modality):
    """Keyframes or cover images through an open_clip image tower."""

    reads_media = True

    def request_fields(self, featurizer_config: Mapping) -> dict[str, str]:
        return {"image": "paths", "video": "path"}

    def offline_config(self, config: dict, encoder, featurizer, folder: Path, bundle_path: str) -> dict:
        config["pretrained"] = None  # the featurizer keeps the tag: its preprocessing (mean/std) depends on it
        return config

    def random_init(self, config: dict) -> dict:
        config["pretrained"] = None
        return config

    def with_mode(self, config: dict, mode: str) -> dict:
        """A frozen tower cannot train an attention pool over frames (build refuses it): mean instead."""
        config = {**config, "mode": mode}
        if mode == "frozen" and config.get("frame_pooling") == "attn":
            config["frame_pooling"] = "mean"
        return config

    def example_inputs(self, featurizer_config: Mapping, batch: int) -> tuple[torch.Tensor, torch.Tensor]:
        size = preprocess_config(featurizer_config["model_name"], None).size
        size = size if isinstance(size, int) else size[0]
        frames = featurizer_config.get("num_frames", 3)
        pixels = torch.randint(0, 256, (batch, frames, 3, size, size), dtype=torch.uint8)
        return pixels, torch.ones(batch, frames, dtype=torch.bool)


MODALITY = ImageModality()
