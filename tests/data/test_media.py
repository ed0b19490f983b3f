"""Media decoding and the counted, logged skip of bad files."""

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
from PIL import Image

from mmrec.data.features import featurize_items
from mmrec.data.media import MediaError, load_audio, load_image, video_keyframes
from mmrec.data.schema import RecDataset
from mmrec.modalities.audio import AudioFeaturizer
from mmrec.modalities.image import ImageFeaturizer


def test_audio_is_mono_resampled_and_cropped(tmp_path):
    t = np.arange(8000) / 8000
    stereo = np.stack([np.sin(2 * np.pi * 440 * t), np.zeros_like(t)], axis=1).astype(np.float32)
    sf.write(tmp_path / "a.wav", stereo, 8000)  # 1 s at 8 kHz
    wave, length = load_audio(tmp_path / "a.wav", 16000, 2.0)
    assert wave.shape == (32000,) and length == 16000
    assert wave[length:].abs().max() == 0
    spectrum = np.abs(np.fft.rfft(wave[:length].numpy()))
    assert abs(np.argmax(spectrum) * 16000 / length - 440) < 2  # the tone survives resampling
    cropped, length = load_audio(tmp_path / "a.wav", 16000, 0.5)
    assert cropped.shape == (8000,) and length == 8000


def test_video_keyframes_and_audio_track(tiny_dataset):
    items = pd.read_csv(tiny_dataset / "items.csv", keep_default_na=False)
    video = tiny_dataset / items.loc[items["video"] != "", "video"].iloc[0]
    frames = video_keyframes(video, 3)
    assert len(frames) == 3 and frames[0].size == (64, 64)
    wave, length = load_audio(video, 16000, 1.0)
    assert length > 15000 and wave[:length].abs().max() > 0.05


@pytest.mark.parametrize(
    "content, reason",
    [(None, "file not found"), (b"", "file is empty"), (b"\x89PNG\r\n\x1a\nnot really", "cannot decode image")],
)
def test_bad_images_raise_media_error(tmp_path, content, reason):
    path = tmp_path / "x.png"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(MediaError, match=reason):
        load_image(path)


def test_truncated_image_and_audio(tmp_path):
    Image.fromarray(np.full((64, 64, 3), 100, dtype=np.uint8)).save(tmp_path / "ok.png")
    data = (tmp_path / "ok.png").read_bytes()
    (tmp_path / "cut.png").write_bytes(data[: len(data) // 2])
    with pytest.raises(MediaError):
        load_image(tmp_path / "cut.png")
    (tmp_path / "bad.wav").write_bytes(b"RIFF0000WAVEjunk")
    with pytest.raises(MediaError, match="cannot decode audio"):
        load_audio(tmp_path / "bad.wav", 16000, 1.0)
    (tmp_path / "bad.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42 garbage")
    with pytest.raises(MediaError, match="cannot decode"):
        video_keyframes(tmp_path / "bad.mp4", 2)


def test_featurizer_marks_bad_media_missing_and_reports_each_file(tmp_path):
    Image.fromarray(np.full((16, 16, 3), 200, dtype=np.uint8)).save(tmp_path / "good.png")
    (tmp_path / "broken.png").write_bytes(b"nope")
    sf.write(tmp_path / "good.wav", np.zeros(1600, dtype=np.float32) + 0.1, 16000)
    items = pd.DataFrame(
        {
            "item_id": ["a", "b", "c"],
            "title": ["first", "", "third"],
            "image": ["good.png|broken.png", "broken.png", ""],
            "audio": ["good.wav", "missing.wav", ""],
        }
    )
    inter = pd.DataFrame({"user_id": ["u"], "item_id": ["a"], "timestamp": [0]})
    ds = RecDataset.from_frames("t", tmp_path, items, inter)
    featurizers = {
        "image": ImageFeaturizer(ds, "mmrec-tiny-vit", num_frames=2),
        "audio": AudioFeaturizer(ds, seconds=0.2),
    }
    batch = featurize_items(featurizers, [0, 1, 2])
    assert batch.present["image"].tolist() == [True, False, False]
    assert batch.input_mask["image"].tolist() == [[True, False], [False, False], [False, False]]
    assert batch.present["audio"].tolist() == [True, False, False]
    assert batch.inputs["audio"].shape == (3, 3200)
    assert batch.input_mask["audio"][0].sum() == 1600
    assert len(batch.problems) == 3
    assert sum("broken.png: cannot decode image" in p for p in batch.problems) == 2
    assert sum(p.endswith("missing.wav: file not found") for p in batch.problems) == 1


def test_decompression_bomb_is_refused_from_its_header(tmp_path):
    """A PNG whose header declares 100,000 x 100,000 pixels: refused before any pixel is decoded."""
    import struct
    import zlib

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", 100_000, 100_000, 8, 2, 0, 0, 0)
    png = (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"\x00" * 1000))
        + chunk(b"IEND", b"")
    )
    (tmp_path / "bomb.png").write_bytes(png)
    with pytest.raises(MediaError, match="decompression bomb|over the limit"):
        load_image(tmp_path / "bomb.png")
    Image.fromarray(np.zeros((60, 50, 3), dtype=np.uint8)).save(tmp_path / "big.png")
    with pytest.raises(MediaError, match="image is 50x60 pixels, over the limit of 2,000"):
        load_image(tmp_path / "big.png", max_pixels=2000)


def test_long_audio_decodes_only_its_window(tmp_path):
    """A one-hour WAV: only the first seconds are read (bounded memory and time, not the whole file)."""
    import time
    import tracemalloc

    rate = 8000
    with sf.SoundFile(tmp_path / "hour.wav", "w", samplerate=rate, channels=1, subtype="PCM_U8") as f:
        block = (np.sin(np.arange(rate * 60) / 10) * 0.5).astype(np.float32)
        for _ in range(60):
            f.write(block)
    assert (tmp_path / "hour.wav").stat().st_size > 28_000_000
    tracemalloc.start()
    start = time.perf_counter()
    wave, length = load_audio(tmp_path / "hour.wav", 16000, 2.0)
    elapsed = time.perf_counter() - start
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert length == 32000
    assert peak < 20_000_000, peak  # the whole file as float32 would be ~115 MB
    assert elapsed < 1.0, elapsed


def test_long_video_is_read_by_seeking(tmp_path):
    """A two-hour MP4 (1 frame per second): keyframes and the audio window cost about what a short video does."""
    import time
    from fractions import Fraction

    import av

    path = tmp_path / "long.mp4"
    with av.open(str(path), mode="w") as container:
        video = container.add_stream("mpeg4", rate=Fraction(1, 1))
        video.width = video.height = 16
        video.pix_fmt = "yuv420p"
        video.gop_size = 60
        for i in range(7200):
            frame = av.VideoFrame.from_ndarray(np.full((16, 16, 3), (i * 255) // 7200, dtype=np.uint8), format="rgb24")
            for packet in video.encode(frame):
                container.mux(packet)
        for packet in video.encode():
            container.mux(packet)
    start = time.perf_counter()
    frames = video_keyframes(path, 3)
    elapsed = time.perf_counter() - start
    assert len(frames) == 3 and elapsed < 1.0, elapsed
    levels = [int(np.asarray(f)[..., 0].mean()) for f in frames]
    assert levels[0] < 60 < levels[1] < 200 < levels[2]  # spread over the whole two hours, in order


def test_media_paths_stay_inside_the_dataset_root(tmp_path):
    root = tmp_path / "data"
    root.mkdir()
    outside = tmp_path / "secret.png"
    Image.fromarray(np.full((8, 8, 3), 7, dtype=np.uint8)).save(outside)
    (root / "link.png").symlink_to(outside)
    Image.fromarray(np.full((8, 8, 3), 9, dtype=np.uint8)).save(root / "ok.png")
    items = pd.DataFrame({"item_id": list("abcd"), "image": ["../secret.png", str(outside), "link.png", "ok.png"]})
    ds = RecDataset.from_frames("t", root, items, pd.DataFrame({"user_id": ["u"], "item_id": ["a"], "timestamp": [0]}))
    batch = featurize_items({"image": ImageFeaturizer(ds, "mmrec-tiny-vit", num_frames=1)}, [0, 1, 2, 3])
    assert batch.present["image"].tolist() == [False, False, False, True]
    assert sum("outside the dataset root" in p for p in batch.problems) == 2
    assert sum("absolute media path refused" in p for p in batch.problems) == 1
    ds.allow_external_media = True  # the opt-in for media kept elsewhere
    assert featurize_items({"image": ImageFeaturizer(ds, "mmrec-tiny-vit", num_frames=1)}, [1]).present["image"].all()
