"""Item featurisation: an item row -> model inputs per modality, with masks and presence.

Modalities are always carried as three dicts keyed by modality name:
    inputs[m]      the tensor the encoder takes     text (L,) ids, image (F, 3, H, W), audio (T,)
    input_mask[m]  True on real elements            text (L,),     image (F,),         audio (T,)
    present[m]     True when the item has m at all  scalar bool
A missing, empty or undecodable file marks that modality absent for the item and is reported
in ``problems`` (one "path: reason" string per bad file) for the consumer to count and log.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import open_clip
import torch
from torch.utils.data import Dataset

from mmrec.data.media import MediaError, load_audio, load_image, video_keyframes
from mmrec.data.schema import IMAGE_SEPARATOR, RecDataset

MODALITIES = ("audio", "image", "text")  # sorted: code iterates modalities in this order
NO_AUDIO_STREAM = "no audio stream"


@dataclass(frozen=True)
class MediaConfig:
    """How raw media become encoder inputs; values come from the encoder presets."""

    tokenizer: str | None = None
    max_text_length: int = 32
    image_size: int = 32
    image_mean: tuple[float, ...] = open_clip.OPENAI_DATASET_MEAN
    image_std: tuple[float, ...] = open_clip.OPENAI_DATASET_STD
    num_frames: int = 3
    sample_rate: int = 16000
    audio_seconds: float = 1.0


@dataclass
class ItemBatch:
    """Model inputs for M items (see the module docstring for the per-modality shapes)."""

    index: torch.Tensor  # (M,) catalogue index of each item
    inputs: dict[str, torch.Tensor] = field(default_factory=dict)
    input_mask: dict[str, torch.Tensor] = field(default_factory=dict)
    present: dict[str, torch.Tensor] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)


def item_text(title: str, description: str) -> str:
    """The text an encoder reads for an item: title and description, whichever exist."""
    return ". ".join(part.strip() for part in (title, description) if part.strip())


class ItemFeaturizer:
    """Turns catalogue rows into encoder inputs for the requested modalities."""

    def __init__(self, dataset: RecDataset, config: MediaConfig, modalities: tuple[str, ...]):
        unknown = set(modalities) - set(MODALITIES)
        if unknown:
            raise ValueError(f"unknown modalities {sorted(unknown)}: expected a subset of {MODALITIES}")
        self.dataset, self.config, self.modalities = dataset, config, tuple(sorted(modalities))
        self.items = dataset.items
        if "text" in self.modalities:
            self._tokenize_catalogue()
        if "image" in self.modalities:
            self.image_transform = open_clip.image_transform(config.image_size, is_train=False, mean=config.image_mean, std=config.image_std)

    def _tokenize_catalogue(self) -> None:
        from transformers import AutoTokenizer

        if not self.config.tokenizer:
            raise ValueError("media.tokenizer is empty but the text modality is enabled: set it to the text encoder's name_or_path")
        tokenizer = AutoTokenizer.from_pretrained(self.config.tokenizer)
        texts = [item_text(t, d) for t, d in zip(self.items["title"], self.items["description"])]
        encoded = tokenizer(texts, padding="max_length", truncation=True, max_length=self.config.max_text_length, return_tensors="pt")
        self.text_ids, self.text_mask = encoded["input_ids"], encoded["attention_mask"].bool()
        self.text_present = torch.tensor([bool(t) for t in texts])

    def _frames(self, row, problems: list[str]) -> list:
        n = self.config.num_frames
        frames = []
        if row.image:
            paths = [p for p in row.image.split(IMAGE_SEPARATOR) if p.strip()]
            picks = np.linspace(0, len(paths) - 1, num=min(n, len(paths))).round().astype(int)
            for k in sorted(set(picks.tolist())):
                try:
                    frames.append(load_image(self.dataset.media_path(paths[k].strip())))
                except MediaError as err:
                    problems.append(str(err))
        if not frames and row.video:
            try:
                frames = video_keyframes(self.dataset.media_path(row.video), n)
            except MediaError as err:
                problems.append(str(err))
        return frames

    def _audio(self, row, problems: list[str]) -> tuple[torch.Tensor, int] | None:
        source = row.audio or row.video
        if not source:
            return None
        try:
            return load_audio(self.dataset.media_path(source), self.config.sample_rate, self.config.audio_seconds)
        except MediaError as err:
            if not (err.reason == NO_AUDIO_STREAM and not row.audio):  # a silent video simply has no audio
                problems.append(str(err))
            return None

    def __call__(self, index: int) -> dict:
        """One item's features as a flat dict (collated by ``collate_items``)."""
        row = self.items.iloc[index]
        out = {"index": index, "problems": []}
        cfg = self.config
        if "text" in self.modalities:
            out["text"] = (self.text_ids[index], self.text_mask[index], bool(self.text_present[index]))
        if "image" in self.modalities:
            frames = self._frames(row, out["problems"])
            pixels = torch.zeros(cfg.num_frames, 3, cfg.image_size, cfg.image_size)
            mask = torch.zeros(cfg.num_frames, dtype=torch.bool)
            for k, frame in enumerate(frames[: cfg.num_frames]):
                pixels[k], mask[k] = self.image_transform(frame), True
            out["image"] = (pixels, mask, bool(mask.any()))
        if "audio" in self.modalities:
            loaded = self._audio(row, out["problems"])
            samples = int(round(cfg.audio_seconds * cfg.sample_rate))
            wave, length = loaded if loaded is not None else (torch.zeros(samples), 0)
            out["audio"] = (wave, torch.arange(samples) < length, length > 0)
        return out


def collate_items(samples: list[dict]) -> ItemBatch:
    """Stack featuriser outputs into an ItemBatch."""
    batch = ItemBatch(index=torch.tensor([s["index"] for s in samples], dtype=torch.long))
    for modality in MODALITIES:
        if modality not in samples[0]:
            continue
        values, masks, present = zip(*(s[modality] for s in samples))
        batch.inputs[modality] = torch.stack(values)
        batch.input_mask[modality] = torch.stack(masks)
        batch.present[modality] = torch.tensor(present, dtype=torch.bool)
    batch.problems = [p for s in samples for p in s["problems"]]
    return batch


class ItemMediaDataset(Dataset):
    """The catalogue (or a list of catalogue indices) as a map-style dataset of item features."""

    def __init__(self, featurizer: ItemFeaturizer, indices: list[int] | None = None):
        self.featurizer = featurizer
        self.indices = list(range(featurizer.dataset.num_items)) if indices is None else indices

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> dict:
        return self.featurizer(self.indices[i])
