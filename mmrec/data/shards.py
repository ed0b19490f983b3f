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

Decoding (and encoding) runs in blocks of items on a media engine: this process's DataLoader workers
by default, or Ray Data actors over a cluster (``mmrec.data.ray_media``); the blocks come back in
catalogue order and this process writes them, so every engine gives the same folder.
"""

from __future__ import annotations

import io
import json
import logging
import math
import os
import shutil
import tempfile
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from functools import partial
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


def check_codec(codec: str) -> None:
    """``data.media_codec`` is one of CODECS, or a ValueError naming it."""
    if codec not in CODECS:
        raise ValueError(f"unknown data.media_codec '{codec}': expected one of {CODECS}")


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


@dataclass(frozen=True)
class ShardLayout:
    """How every item's feature is stored: item 0's shapes, and the keyframe codec."""

    modality: str
    codec: str
    value_shape: tuple[int, ...]
    mask_shape: tuple[int, ...]


def featurise_block(featurizer: Featurizer, layout: ShardLayout, items: np.ndarray) -> dict[str, np.ndarray]:
    """Items (B,) featurised, keyframes encoded, as one block of rows: ``item`` (B,), ``value`` (B, *shape) when
    raw, else ``frames`` (B,) bytes and ``lengths`` (B, F), ``mask``, ``present`` (B,), ``problems`` (B,) JSON.

    The work a media engine spreads over its workers (decoding, resizing, JPEG encoding): it runs in a
    DataLoader worker or a Ray actor, and the process writing the shards only copies bytes.
    """
    values, frames, lengths, masks, present, problems = [], [], [], [], [], []
    for i in items.tolist():
        feature = featurizer(i, item_problems := [])
        if tuple(feature.value.shape) != layout.value_shape or tuple(feature.mask.shape) != layout.mask_shape:
            raise ValueError(
                f"{layout.modality} featurizer gave item {i} a value of shape {tuple(feature.value.shape)}, "
                f"expected {layout.value_shape} like item 0: media shards need fixed-shape features"
            )
        if layout.codec == "raw":
            values.append(feature.value.numpy())
        else:
            encoded = [encode_frame(frame, layout.codec) for frame in feature.value.numpy()]
            frames.append(b"".join(encoded))
            lengths.append([len(e) for e in encoded])
        masks.append(feature.mask.numpy())
        present.append(feature.present)
        problems.append(json.dumps(item_problems) if item_problems else "")
    block = {
        "item": np.asarray(items, dtype=np.int64),
        "mask": np.stack(masks),
        "present": np.array(present, dtype=np.bool_),
        "problems": np.array(problems, dtype=object),
    }
    if layout.codec == "raw":
        block["value"] = np.stack(values)
    else:
        block["frames"] = np.empty(len(frames), dtype=object)
        block["frames"][:] = frames  # one bytes object a row (np.array would make a fixed-width bytes array)
        block["lengths"] = np.array(lengths, dtype=np.int64)
    return block


# (featurise one block of item indices, number of items, modality) -> the blocks, in catalogue order
MediaEngine = Callable[[Callable[[np.ndarray], dict], int, str], Iterable[dict]]


class _Blocks(Dataset):
    """Block k of item indices -> its featurised rows, computed in a DataLoader worker."""

    def __init__(self, featurise: Callable[[np.ndarray], dict], blocks: list[np.ndarray]):
        self.featurise, self.blocks = featurise, blocks

    def __len__(self) -> int:
        return len(self.blocks)

    def __getitem__(self, k: int) -> dict:
        return self.featurise(self.blocks[k])


def _as_is(block: dict) -> dict:
    return block


def local_blocks(
    featurise: Callable[[np.ndarray], dict], num_items: int, num_workers: int = 0, block_size: int = 64
) -> Iterator[dict]:
    """The blocks featurised by this machine's DataLoader workers, in catalogue order (the default engine)."""
    blocks = np.array_split(np.arange(num_items), max(1, math.ceil(num_items / block_size)))
    loader = DataLoader(
        _Blocks(featurise, blocks),
        batch_size=None,
        num_workers=num_workers,
        collate_fn=_as_is,
        generator=torch.Generator().manual_seed(0),  # worker seeds from here, never from the global RNG
    )
    with torch.random.fork_rng(devices=[]):  # building the shards leaves training's random state as it was
        yield from loader


def write_shards(
    featurizer: Featurizer,
    num_items: int,
    folder: Path,
    num_workers: int,
    modality: str,
    codec: str = "raw",
    engine: MediaEngine | None = None,
) -> None:
    """Featurise every item into ``folder`` (value/mask/present .npy and problems.json, or with a codec
    frames.bin + offsets.npy in place of value.npy), atomically, on ``engine`` (None: DataLoader workers)."""
    first = featurizer(0, [])
    if codec != "raw" and not encodable(first.value):
        log.info("%s shards stay raw: data.media_codec=%s stores keyframes only", modality, codec)
        codec = "raw"
    layout = ShardLayout(modality, codec, tuple(first.value.shape), tuple(first.mask.shape))
    row_bytes = first.value.numel() * first.value.element_size() + first.mask.numel()
    log.info(
        "decoding %s once for the media shards: %d items x %.1f kB = %.1f MB raw in %s",
        modality,
        num_items,
        row_bytes / 1e3,
        num_items * row_bytes / 1e6,
        folder,
    )
    featurise = partial(featurise_block, featurizer, layout)
    blocks = (
        local_blocks(featurise, num_items, num_workers) if engine is None else engine(featurise, num_items, modality)
    )
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
    try:
        if codec == "raw":
            value = np.lib.format.open_memmap(
                tmp / "value.npy", "w+", first.value.numpy().dtype, (num_items, *layout.value_shape)
            )
        else:
            frames, lengths = open(tmp / "frames.bin", "wb"), []  # noqa: SIM115 (closed below, or with tmp)
        mask = np.lib.format.open_memmap(tmp / "mask.npy", "w+", np.bool_, (num_items, *layout.mask_shape))
        present = np.zeros(num_items, dtype=np.bool_)
        problems: dict[str, list[str]] = {}
        done = 0
        with tqdm(total=num_items, desc=f"decoding {modality} into shards", unit="item", leave=False) as bar:
            for block in blocks:
                items = block["item"]
                if not np.array_equal(items, np.arange(done, done + len(items))):
                    raise RuntimeError(
                        f"the media engine returned items {items[:3].tolist()}... after {done} items: "
                        "blocks must come back whole and in catalogue order"
                    )
                rows = slice(done, done + len(items))
                if codec == "raw":
                    value[rows] = block["value"]
                else:
                    for data in block["frames"]:
                        frames.write(data)
                    lengths.append(block["lengths"].ravel())
                mask[rows], present[rows] = block["mask"], block["present"]
                problems.update({str(i): json.loads(p) for i, p in zip(items.tolist(), block["problems"]) if p})
                done += len(items)
                bar.update(len(items))
        if done != num_items:
            raise RuntimeError(f"the media engine returned {done} of {num_items} items")
        if codec == "raw":
            value.flush()
            del value
        else:
            frames.close()
            offsets = np.concatenate([[0], np.cumsum(np.concatenate(lengths))]).astype(np.int64)
            np.save(tmp / "offsets.npy", offsets)
        mask.flush()
        del mask
        (tmp / "meta.json").write_text(json.dumps({"codec": codec, "value_shape": list(layout.value_shape)}))
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
    engine: MediaEngine | None = None,
) -> ShardedFeaturizer:
    """``featurizer`` read from the shards in ``directory / name``, writing them first if absent
    (keyframes stored with ``codec``: raw, jpeg or png; decoded on ``engine``, or DataLoader workers).

    A file lock makes concurrent ranks or runs decode once; a folder that cannot be read (damaged,
    of another catalogue size) is logged, removed and rebuilt.
    """
    check_codec(codec)
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
        write_shards(featurizer, num_items, folder, num_workers, modality, codec, engine)
        return ShardedFeaturizer(featurizer, folder)
