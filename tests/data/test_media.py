"""Media decoding and the counted, logged skip of bad files."""

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
from PIL import Image

from mmrec.data.features import ItemFeaturizer, MediaConfig, collate_items
from mmrec.data.media import MediaError, load_audio, load_image, video_keyframes
from mmrec.data.schema import RecDataset


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
    feats = ItemFeaturizer(ds, MediaConfig(image_size=16, num_frames=2, audio_seconds=0.2), ("image", "audio"))
    batch = collate_items([feats(i) for i in range(3)])
    assert batch.present["image"].tolist() == [True, False, False]
    assert batch.input_mask["image"].tolist() == [[True, False], [False, False], [False, False]]
    assert batch.present["audio"].tolist() == [True, False, False]
    assert batch.inputs["audio"].shape == (3, 3200)
    assert batch.input_mask["audio"][0].sum() == 1600
    assert len(batch.problems) == 3
    assert sum("broken.png: cannot decode image" in p for p in batch.problems) == 2
    assert sum(p.endswith("missing.wav: file not found") for p in batch.problems) == 1
