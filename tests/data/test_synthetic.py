"""The generator writes decodable media whose hidden attributes each modality reveals."""

import json

import numpy as np
import pandas as pd
import soundfile as sf
from PIL import Image

from mmrec.data.media import load_audio, video_keyframes
from mmrec.data.schema import load_native
from mmrec.data.synthetic import PALETTES, PITCH_HZ, RHYTHMS, TOPICS, ensure_generated


def frames_of(root, row):
    if row["image"]:
        return [np.asarray(Image.open(root / p)) for p in row["image"].split("|")]
    if row["video"]:
        return [np.asarray(f) for f in video_keyframes(root / row["video"], 3)]
    return []


def test_tables_manifest_and_missing_modalities(tiny_dataset):
    ds = load_native(tiny_dataset)
    manifest = json.loads((tiny_dataset / "manifest.json").read_text())
    assert ds.num_items == manifest["items"] == 60 and len(ds.interactions) == manifest["interactions"]
    assert manifest["video_items"] == int((ds.items["video"] != "").sum()) > 0
    assert manifest["items_without_image"] == int(((ds.items["image"] == "") & (ds.items["video"] == "")).sum())
    assert ds.interactions.groupby("user_id").size().min() >= 5


def test_text_reveals_topic(tiny_dataset):
    items = pd.read_csv(tiny_dataset / "items.csv", keep_default_na=False)
    attrs = pd.read_csv(tiny_dataset / "attributes.csv")
    for (_, row), topic in zip(items.iterrows(), attrs["topic"]):
        words = set((row["title"] + " " + row["description"]).lower().replace(",", " ").replace(".", " ").split())
        guessed = max(TOPICS, key=lambda t: len(words & set(TOPICS[t])))
        assert guessed == topic


def test_frames_reveal_palette(tiny_dataset):
    items = pd.read_csv(tiny_dataset / "items.csv", keep_default_na=False)
    attrs = pd.read_csv(tiny_dataset / "attributes.csv")
    centres = np.array([(np.array(bg) + np.array(fg)) / 2 for bg, fg in PALETTES])
    checked = 0
    for (_, row), palette in zip(items.iterrows(), attrs["palette"]):
        frames = frames_of(tiny_dataset, row)
        for frame in frames:
            mean = frame.reshape(-1, 3).mean(0)
            assert np.argmin(((centres - mean) ** 2).sum(1)) == palette
            checked += 1
    assert checked > 100


def test_audio_reveals_pitch_and_rhythm(tiny_dataset):
    items = pd.read_csv(tiny_dataset / "items.csv", keep_default_na=False)
    attrs = pd.read_csv(tiny_dataset / "attributes.csv")
    checked = 0
    for (_, row), pitch, rhythm in zip(items.iterrows(), attrs["pitch_hz"], attrs["rhythm"]):
        source = row["audio"] or row["video"]
        if not source:
            continue
        wave, length = load_audio(tiny_dataset / source, 16000, 1.0)
        wave = wave[:length].numpy()
        peak = np.argmax(np.abs(np.fft.rfft(wave))) * 16000 / len(wave)
        assert min(PITCH_HZ, key=lambda f: abs(f - peak)) == pitch
        envelope = np.abs(wave).reshape(-1, 160).max(1)  # 10 ms windows
        duty = (envelope > 0.5 * envelope.max()).mean()
        assert min(range(len(RHYTHMS)), key=lambda r: abs(RHYTHMS[r][1] - duty)) == rhythm
        checked += 1
    assert checked > 40


def test_wav_files_are_22k_mono(tiny_dataset):
    items = pd.read_csv(tiny_dataset / "items.csv", keep_default_na=False)
    info = sf.info(tiny_dataset / items.loc[items["audio"] != "", "audio"].iloc[0])
    assert info.samplerate == 22050 and info.channels == 1


def test_cross_modal_taste_follows_pattern_and_rhythm(tiny_dataset):
    """Users who like in-sync items (keyframe pattern matching the audio rhythm) pick far more of them."""
    attrs = pd.read_csv(tiny_dataset / "attributes.csv").set_index("item_id")
    assert (attrs["in_sync"] == (attrs["pattern"].map({"stripes": 0, "dots": 1}) == attrs["rhythm"])).all()
    likes_sync = np.load(tiny_dataset / "user_preferences.npz")["likes_sync"]
    inter = pd.read_csv(tiny_dataset / "interactions.csv")
    share = inter.assign(sync=attrs.loc[inter["item_id"], "in_sync"].to_numpy()).groupby("user_id")["sync"].mean()
    liked = likes_sync[share.index.str[1:].astype(int)]
    assert 0 < liked.sum() < len(liked)
    assert share[liked].mean() - share[~liked].mean() > 0.4


def test_regenerates_only_its_own_stale_folder(tmp_path, caplog):
    small = {"items": 20, "users": 3, "interactions_per_user": 6, "seed": 0}
    root = ensure_generated(tmp_path / "synthetic", **small)
    first = (root / "interactions.csv").read_text()
    assert ensure_generated(root, **small) == root and (root / "interactions.csv").read_text() == first
    ensure_generated(root, **{**small, "seed": 1})  # other options: generated again
    assert json.loads((root / "manifest.json").read_text())["options"]["seed"] == 1
    assert "generated with other options" in caplog.text
    assert (root / "interactions.csv").read_text() != first
    own = tmp_path / "mine"  # a folder this generator did not write is used as it is
    own.mkdir()
    (own / "items.csv").write_text("item_id,title\na,A\n")
    ensure_generated(own, **small)
    assert (own / "items.csv").read_text() == "item_id,title\na,A\n"
