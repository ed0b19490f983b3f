"""Decoding of media files: images (PIL), video keyframes and audio tracks (PyAV), audio files (soundfile).

Every failure raises MediaError naming the file and the reason; callers turn it into a
missing modality for that item (see features.py) so that one bad file never stops an epoch.
"""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np
import soundfile as sf
import torch
import torchaudio.functional as AF
from PIL import Image, UnidentifiedImageError

VIDEO_SUFFIXES = (".mp4", ".mkv", ".webm", ".mov", ".avi", ".m4v")
MAX_DECODED_FRAMES = 20_000  # a frame count the container does not state is found by decoding, up to this


class MediaError(Exception):
    """A media file that is missing, empty or cannot be decoded."""

    def __init__(self, path: Path, reason: str):
        super().__init__(f"{path}: {reason}")
        self.path, self.reason = Path(path), reason


def _check_file(path: Path) -> None:
    if not path.is_file():
        raise MediaError(path, "file not found")
    if path.stat().st_size == 0:
        raise MediaError(path, "file is empty")


def load_image(path: Path) -> Image.Image:
    """An RGB PIL image, fully decoded (truncated files fail here, not later)."""
    _check_file(path)
    try:
        with Image.open(path) as img:
            img.load()
            return img.convert("RGB")
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
        raise MediaError(path, f"cannot decode image ({err})") from err


def video_keyframes(path: Path, num_frames: int) -> list[Image.Image]:
    """``num_frames`` RGB frames spread evenly over the video (fewer when the video is shorter)."""
    _check_file(path)
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise MediaError(path, "no video stream")
            stream = container.streams.video[0]
            total = stream.frames
            if total <= 0:  # not stated by the container: decode to count, bounded
                total = sum(1 for _ in zip(range(MAX_DECODED_FRAMES), container.decode(stream)))
                container.seek(0)
            if total == 0:
                raise MediaError(path, "video has no frames")
            wanted = sorted(set(np.linspace(0, total - 1, num=min(num_frames, total)).round().astype(int).tolist()))
            frames, wanted_set = [], set(wanted)
            for index, frame in enumerate(container.decode(stream)):
                if index in wanted_set:
                    frames.append(frame.to_image())
                if index >= wanted[-1]:
                    break
    except av.error.FFmpegError as err:
        raise MediaError(path, f"cannot decode video ({err})") from err
    if not frames:
        raise MediaError(path, "no frame could be decoded")
    return frames


def _video_audio(path: Path) -> tuple[np.ndarray, int]:
    """The first audio track of a video as (channels, samples) float32, and its rate."""
    try:
        with av.open(str(path)) as container:
            if not container.streams.audio:
                raise MediaError(path, "no audio stream")
            stream = container.streams.audio[0]
            chunks, rate = [], stream.rate
            for frame in container.decode(stream):
                data = frame.to_ndarray().astype(np.float32)
                if frame.format.is_packed:  # packed samples interleave channels in one row
                    data = data.reshape(-1, frame.layout.nb_channels).T
                chunks.append(data)
                rate = frame.sample_rate
    except av.error.FFmpegError as err:
        raise MediaError(path, f"cannot decode audio track ({err})") from err
    if not chunks:
        raise MediaError(path, "audio track has no samples")
    data = np.concatenate(chunks, axis=1)
    if np.issubdtype(data.dtype, np.integer):
        data = data / np.iinfo(np.int16).max
    return data, rate


def load_audio(path: Path, sample_rate: int, seconds: float) -> tuple[torch.Tensor, int]:
    """Mono audio resampled to ``sample_rate``, cropped or zero-padded to ``seconds``.

    Returns the (T,) waveform and the number of real (unpadded) samples in it.
    """
    _check_file(path)
    if path.suffix.lower() in VIDEO_SUFFIXES:
        data, rate = _video_audio(path)
    else:
        try:
            raw, rate = sf.read(str(path), dtype="float32", always_2d=True)  # (samples, channels)
        except (sf.LibsndfileError, RuntimeError, TypeError) as err:
            raise MediaError(path, f"cannot decode audio ({err})") from err
        data = raw.T
    if data.shape[1] == 0:
        raise MediaError(path, "audio has no samples")
    wave = torch.from_numpy(np.ascontiguousarray(data.mean(axis=0), dtype=np.float32))
    if not torch.isfinite(wave).all():
        raise MediaError(path, "audio has non-finite samples")
    if rate != sample_rate:
        wave = AF.resample(wave, orig_freq=int(rate), new_freq=sample_rate)
    target = int(round(seconds * sample_rate))
    length = min(len(wave), target)
    out = torch.zeros(target)
    out[:length] = wave[:length]
    return out, length
