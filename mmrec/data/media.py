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
MAX_IMAGE_PIXELS = 25_000_000  # 5000 x 5000: about 75 MB decoded; larger images are refused from their header
MAX_FRAMES_AFTER_SEEK = 300  # frames decoded forward from a keyframe to reach a keyframe time
MAX_SCANNED_FRAMES = 300  # frames read from a stream whose duration is not stated


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


def load_image(path: Path, max_pixels: int = MAX_IMAGE_PIXELS) -> Image.Image:
    """An RGB PIL image, fully decoded (truncated files fail here, not later).

    The size is read from the header first: an image over ``max_pixels`` (a decompression bomb,
    e.g. a 100k x 100k PNG of a few bytes) is refused before any pixel is decoded.
    """
    _check_file(path)
    try:
        with Image.open(path) as img:
            width, height = img.size
            if width * height > max_pixels:
                raise MediaError(
                    path, f"image is {width}x{height} pixels, over the limit of {max_pixels:,} (refused undecoded)"
                )
            img.load()
            return img.convert("RGB")
    except Image.DecompressionBombError as err:
        raise MediaError(path, f"image refused as a decompression bomb ({err})") from err
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
        raise MediaError(path, f"cannot decode image ({err})") from err


def video_keyframes(path: Path, num_frames: int) -> list[Image.Image]:
    """``num_frames`` RGB frames spread evenly over the video (fewer when the video is shorter).

    Each frame is reached by seeking to the keyframe before its time and decoding forward, so the
    cost does not grow with the video's length; a stream without a stated duration is read for at
    most MAX_SCANNED_FRAMES frames.
    """
    _check_file(path)
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise MediaError(path, "no video stream")
            stream = container.streams.video[0]
            duration = _duration(container, stream)
            frames = (
                _frames_by_seeking(container, stream, duration, num_frames)
                if duration
                else _frames_by_scanning(container, stream, num_frames)
            )
    except av.error.FFmpegError as err:
        raise MediaError(path, f"cannot decode video ({err})") from err
    if not frames:
        raise MediaError(path, "no frame could be decoded")
    return frames


def _duration(container, stream) -> float | None:
    if stream.duration and stream.time_base:
        return float(stream.duration * stream.time_base)
    if container.duration:
        return container.duration / av.time_base
    return None


def _frames_by_seeking(container, stream, duration: float, num_frames: int) -> list[Image.Image]:
    frames = []
    start = float(stream.start_time * stream.time_base) if stream.start_time is not None else 0.0
    for k in range(num_frames):
        target = start + (k + 0.5) * duration / num_frames
        container.seek(int(target / stream.time_base), stream=stream, backward=True, any_frame=False)
        for decoded, frame in enumerate(container.decode(stream)):
            if frame.time is None or frame.time + 1e-6 >= target or decoded >= MAX_FRAMES_AFTER_SEEK:
                frames.append(frame.to_image())
                break
    return frames


def _frames_by_scanning(container, stream, num_frames: int) -> list[Image.Image]:
    decoded = [frame.to_image() for _, frame in zip(range(MAX_SCANNED_FRAMES), container.decode(stream))]
    if not decoded:
        return []
    picks = np.linspace(0, len(decoded) - 1, num=min(num_frames, len(decoded))).round().astype(int)
    return [decoded[i] for i in sorted(set(picks.tolist()))]


def _video_audio(path: Path, seconds: float) -> tuple[np.ndarray, int]:
    """The first ``seconds`` of a video's first audio track as (channels, samples) float32, and its
    rate; decoding stops once enough samples are read."""
    try:
        with av.open(str(path)) as container:
            if not container.streams.audio:
                raise MediaError(path, "no audio stream")
            stream = container.streams.audio[0]
            chunks, rate, have = [], stream.rate, 0
            for frame in container.decode(stream):
                data = frame.to_ndarray().astype(np.float32)
                if frame.format.is_packed:  # packed samples interleave channels in one row
                    data = data.reshape(-1, frame.layout.nb_channels).T
                chunks.append(data)
                rate = frame.sample_rate
                have += data.shape[1]
                if have >= seconds * rate:
                    break
    except av.error.FFmpegError as err:
        raise MediaError(path, f"cannot decode audio track ({err})") from err
    if not chunks:
        raise MediaError(path, "audio track has no samples")
    data = np.concatenate(chunks, axis=1)
    if np.issubdtype(data.dtype, np.integer):
        data = data / np.iinfo(np.int16).max
    return data, rate


def _audio_file(path: Path, seconds: float) -> tuple[np.ndarray, int]:
    """The first ``seconds`` of an audio file (soundfile reads only those frames), (channels, samples)."""
    try:
        info = sf.info(str(path))
        frames = (
            min(info.frames, int(np.ceil(seconds * info.samplerate)))
            if info.frames > 0
            else int(np.ceil(seconds * info.samplerate))
        )
        raw, rate = sf.read(str(path), frames=frames, dtype="float32", always_2d=True)  # (samples, channels)
    except (sf.LibsndfileError, RuntimeError, TypeError) as err:
        raise MediaError(path, f"cannot decode audio ({err})") from err
    return raw.T, rate


def load_audio(path: Path, sample_rate: int, seconds: float) -> tuple[torch.Tensor, int]:
    """Mono audio resampled to ``sample_rate``, cropped or zero-padded to ``seconds``; only that
    window is decoded, however long the file. Returns the (T,) waveform and its real sample count."""
    _check_file(path)
    if path.suffix.lower() in VIDEO_SUFFIXES:
        data, rate = _video_audio(path, seconds)
    else:
        data, rate = _audio_file(path, seconds)
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
