"""Media decoded once: a live modality's featurizer output for the whole catalogue, memory-mapped.

An encoder trained end to end sees every keyframe and audio window once an epoch; decoding MP4 /
PNG, resizing and resampling them each time is the data pipeline's cost. With
``data.media_shards=true`` each live modality that reads media files is featurised once into
``.npy`` files (uint8 pixels, int16 PCM: the featurizer's own output, so a run reads exactly what
decoding would give) and batches are then read from them with ``np.load(mmap_mode="r")``: no
pickle, pages shared by every DataLoader worker. The folder is keyed like the embedding cache (the
modality's fingerprint: catalogue, featurizer settings, size and time of every media file), is
built under a file lock in a temporary folder renamed when complete, and keeps the media problems
met while decoding, so a run that reads it reports them too.

Keyframes take H x W x 3 bytes each raw (about 450 GB for 10^6 items with three 224 x 224 frames).
``data.media_codec=jpeg`` (or ``png``, lossless) stores each keyframe encoded instead, in one
``frames.bin`` with per-frame offsets, decoded again when a batch reads it (in the DataLoader's
workers): JPEG at quality 90 with full chroma is about a tenth of the raw size on movie posters
(experiments/media_codec.py), at the cost of a mean pixel error of about 1 (of 255) and a decode
per read; PNG is lossless at about half. Audio stays int16 PCM.
"""

from __future__ import annotations

import io
import json
import logging
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import torch
from filelock import FileLock
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from mmrec.data.features import Feature, Featurizer

log = logging.getLogger(__name__)
ARRAYS = ("value", "mask", "present")
CODECS = ("raw", "jpeg", "png")  # data.media_codec
JPEG_QUALITY = 90


def encode_frame(frame: np.ndarray, codec: str) -> bytes:
    """One (3, H, W) uint8 keyframe as JPEG or PNG bytes."""
    from PIL import Image

    out = io.BytesIO()
    options = {"quality": JPEG_QUALITY, "subsampling": 0} if codec == "jpeg" else {"compress_level": 1}
    Image.fromarray(np.ascontiguousarray(frame.transpose(1, 2, 0))).save(out, format=codec.upper(), **options)
    return out.getvalue()


def decode_frame(data: bytes) -> np.ndarray:
    """JPEG/PNG bytes back to a (3, H, W) uint8 keyframe."""
    from PIL import Image

    with Image.open(io.BytesIO(data)) as image:
        return np.asarray(image.convert("RGB")).transpose(2, 0, 1)


def encodable(value: torch.Tensor) -> bool:
    """Whether a featurizer value is keyframes that a codec can store: (F, 3, H, W) uint8."""
    return value.dtype == torch.uint8 and value.dim() == 4 and value.shape[1] == 3


class _Featurised(Dataset):
    """Catalogue row i -> (i, Feature, its media problems), computed in a DataLoader worker."""

    def __init__(self, featurizer: Featurizer, num_items: int):
        self.featurizer, self.num_items = featurizer, num_items

    def __len__(self) -> int:
        return self.num_items

    def __getitem__(self, i: int) -> tuple[int, Feature, list[str]]:
        problems: list[str] = []
        return i, self.featurizer(i, problems), problems


def write_shards(
    featurizer: Featurizer, num_items: int, folder: Path, num_workers: int, modality: str, codec: str = "raw"
) -> None:
    """Featurise every item into ``folder`` (value/mask/present .npy and problems.json, or with a codec
    frames.bin + offsets.npy in place of value.npy), atomically."""
    first = featurizer(0, [])
    if codec != "raw" and not encodable(first.value):
        log.info("%s shards stay raw: data.media_codec=%s stores keyframes only", modality, codec)
        codec = "raw"
    value_shape, mask_shape = tuple(first.value.shape), tuple(first.mask.shape)
    row_bytes = first.value.numel() * first.value.element_size() + first.mask.numel()
    log.info(
        "decoding %s once for the media shards: %d items x %.1f kB = %.1f MB in %s",
        modality,
        num_items,
        row_bytes / 1e3,
        num_items * row_bytes / 1e6,
        folder,
    )
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
    try:
        if codec == "raw":
            value = np.lib.format.open_memmap(
                tmp / "value.npy", "w+", first.value.numpy().dtype, (num_items, *value_shape)
            )
        else:
            frames, offsets = open(tmp / "frames.bin", "wb"), [0]  # noqa: SIM115 (closed below, or with tmp)
        mask = np.lib.format.open_memmap(tmp / "mask.npy", "w+", np.bool_, (num_items, *mask_shape))
        present = np.zeros(num_items, dtype=np.bool_)
        problems: dict[str, list[str]] = {}
        loader = DataLoader(
            _Featurised(featurizer, num_items),
            batch_size=64,
            num_workers=num_workers,
            collate_fn=list,
            generator=torch.Generator().manual_seed(0),  # worker seeds from here, never from the global RNG
        )
        with torch.random.fork_rng(devices=[]):  # building the shards leaves training's random state as it was
            for rows in tqdm(loader, desc=f"decoding {modality} into shards", unit="batch", leave=False):
                for i, feature, item_problems in rows:
                    if tuple(feature.value.shape) != value_shape or tuple(feature.mask.shape) != mask_shape:
                        raise ValueError(
                            f"{modality} featurizer gave item {i} a value of shape {tuple(feature.value.shape)}, "
                            f"expected {value_shape} like item 0: media shards need fixed-shape features"
                        )
                    if codec == "raw":
                        value[i] = feature.value.numpy()
                    else:
                        for frame in feature.value.numpy():
                            offsets.append(offsets[-1] + frames.write(encode_frame(frame, codec)))
                    mask[i], present[i] = feature.mask.numpy(), feature.present
                    if item_problems:
                        problems[str(i)] = item_problems
        if codec == "raw":
            value.flush()
            del value
        else:
            frames.close()
            np.save(tmp / "offsets.npy", np.array(offsets, dtype=np.int64))
        mask.flush()
        del mask
        (tmp / "meta.json").write_text(json.dumps({"codec": codec, "value_shape": list(value_shape)}))
        np.save(tmp / "present.npy", present)
        (tmp / "problems.json").write_text(json.dumps(problems))
        os.chmod(tmp, 0o755)
        os.replace(tmp, folder)  # the folder appears complete or not at all
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


class ShardedFeaturizer:
    """Reads a featurizer's stored output; settings, media files and encoder sizes are the featurizer's."""

    def __init__(self, featurizer: Featurizer, folder: Path):
        self.featurizer, self.folder = featurizer, Path(folder)
        self.problems = json.loads((self.folder / "problems.json").read_text())
        self._arrays: dict[str, np.ndarray] | None = None

    def _open(self) -> dict[str, np.ndarray]:
        if self._arrays is None:  # opened in the process that reads (each DataLoader worker maps the files)
            meta = self.folder / "meta.json"
            self.meta = json.loads(meta.read_text()) if meta.is_file() else {"codec": "raw"}
            names = ARRAYS if self.meta["codec"] == "raw" else ("offsets", "mask", "present")
            arrays = {a: np.load(self.folder / f"{a}.npy", mmap_mode="r", allow_pickle=False) for a in names}
            if self.meta["codec"] != "raw":
                arrays["frames"] = np.memmap(self.folder / "frames.bin", dtype=np.uint8, mode="r")
            self._arrays = arrays
        return self._arrays

    def _value(self, arrays: dict[str, np.ndarray], index: int) -> torch.Tensor:
        if self.meta["codec"] == "raw":
            return torch.from_numpy(np.array(arrays["value"][index]))
        count, offsets = self.meta["value_shape"][0], arrays["offsets"]
        bounds = offsets[index * count : (index + 1) * count + 1]
        frames = [decode_frame(arrays["frames"][a:b].tobytes()) for a, b in zip(bounds[:-1], bounds[1:])]
        return torch.from_numpy(np.stack(frames))

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_arrays": None}  # workers map the files themselves; nothing is copied

    def __len__(self) -> int:
        return len(self._open()["present"])

    def __call__(self, index: int, problems: list[str]) -> Feature:
        arrays = self._open()
        problems.extend(self.problems.get(str(index), []))
        return Feature(
            self._value(arrays, index),
            torch.from_numpy(np.array(arrays["mask"][index])),
            bool(arrays["present"][index]),
        )

    def settings(self) -> dict:
        return self.featurizer.settings()

    def media_files(self) -> list[Path]:
        return self.featurizer.media_files()

    def encoder_kwargs(self) -> dict:
        return self.featurizer.encoder_kwargs()


def sharded(
    featurizer: Featurizer,
    num_items: int,
    directory: Path,
    name: str,
    num_workers: int = 0,
    modality: str = "",
    codec: str = "raw",
) -> ShardedFeaturizer:
    """``featurizer`` read from the shards in ``directory / name``, writing them first if absent
    (keyframes stored with ``codec``: raw, jpeg or png).

    A file lock makes concurrent ranks or runs decode once; a folder that cannot be read (damaged,
    of another catalogue size) is logged, removed and rebuilt.
    """
    if codec not in CODECS:
        raise ValueError(f"unknown data.media_codec '{codec}': expected one of {CODECS}")
    folder = Path(directory) / (name if codec == "raw" else f"{name}-{codec}")
    folder.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(folder) + ".lock"):
        if folder.is_dir():
            try:
                reader = ShardedFeaturizer(featurizer, folder)
                if len(reader) != num_items:
                    raise ValueError(f"it holds {len(reader)} items, the catalogue has {num_items}")
                log.info("reading %s from media shards %s", modality, folder)
                return reader
            except Exception as err:  # an unreadable shard folder is rebuilt, never fatal
                log.warning("media shards %s cannot be read (%s): removing and rebuilding them", folder, err)
                shutil.rmtree(folder)
        write_shards(featurizer, num_items, folder, num_workers, modality, codec)
        return ShardedFeaturizer(featurizer, folder)
