"""The embedded default dataset: real media files with a known latent structure.

Every item has three hidden attributes, each expressed in one modality only:
    topic (8 values)   -> title and description words
    visual (6 values)  -> palette (3) x pattern (2) of its keyframes
    audio (6 values)   -> pitch band (3) x rhythm (2) of its audio clip
Users prefer a few values of each attribute; an item's utility for a user is the sum of the
user's log-preferences for its three values plus a popularity term and Gumbel noise. So each
modality alone explains part of the preferences and the three together explain more.

One more term crosses two modalities: an item is *in sync* when its keyframe pattern matches its
audio rhythm (stripes with the slow rhythm, dots with the fast one). Half of the users favour
in-sync items and half out-of-sync ones, by ``cross_weight`` nats of utility. That is an XOR of
a visual bit and an audio bit: no sum of a visual score and an audio score can express it, so a
fusion that adds per-modality embeddings (mean, late) cannot learn it, while one that combines
them non-linearly (attention, concat) can.

Items also carry categorical metadata in a ``tags`` column (``|``-separated): a genre tag that
names the topic for half of the items (a random topic for the rest), the format word of the
title, and a random duration bucket, for the categorical-metadata modality.

A fraction of items ships an MP4 (frames and an AAC audio track) instead of images and a WAV,
so that video decoding is exercised, and some items miss a modality on purpose.

    python -m mmrec.data.synthetic --out data/synthetic --items 2000 --users 1000 --seed 0
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pandas as pd
import soundfile as sf
from filelock import FileLock
from PIL import Image
from tqdm import tqdm

from mmrec.io import atomic_path, write_text

log = logging.getLogger(__name__)

TOPICS = {
    "cooking": ["recipe", "pasta", "kitchen", "baking", "chef", "sauce", "dough", "spices"],
    "football": ["goal", "match", "striker", "league", "penalty", "stadium", "keeper", "tactics"],
    "jazz": ["saxophone", "improvisation", "swing", "trumpet", "bebop", "ballad", "quartet", "groove"],
    "travel": ["backpacking", "island", "itinerary", "hostel", "mountains", "passport", "roadtrip", "airport"],
    "gaming": ["speedrun", "console", "boss", "multiplayer", "level", "controller", "quest", "esports"],
    "astronomy": ["telescope", "galaxy", "planet", "nebula", "comet", "orbit", "eclipse", "stargazing"],
    "gardening": ["seedlings", "compost", "tomatoes", "pruning", "greenhouse", "soil", "roses", "harvest"],
    "finance": ["budget", "stocks", "savings", "mortgage", "dividends", "inflation", "portfolio", "taxes"],
}
FILLER_ADJECTIVES = [
    "quick",
    "complete",
    "honest",
    "weekly",
    "beginner",
    "advanced",
    "late-night",
    "classic",
    "simple",
    "ultimate",
]
FILLER_FORMATS = ["video", "episode", "session", "story", "review", "guide", "livestream", "clip"]
PALETTES = [  # (background, foreground) RGB: warm, cool, forest
    ((200, 60, 30), (250, 180, 40)),
    ((20, 60, 160), (90, 200, 230)),
    ((30, 110, 40), (190, 220, 60)),
]
PATTERNS = ("stripes", "dots")
PITCH_HZ = (300.0, 1200.0, 3600.0)
RHYTHMS = ((2.0, 0.2), (6.0, 0.7))  # (pulses per second, fraction of each pulse that sounds)
IMAGE_SIZE = 64
FRAMES_PER_ITEM = 3
AUDIO_RATE = 22050  # written at 22.05 kHz so that loading exercises resampling to 16 kHz
AUDIO_SECONDS = 1.0
VIDEO_FPS = 8
VIDEO_FRAMES = 8
GENERATOR_VERSION = 2  # 2: the cross-modal (pattern x rhythm) taste; a folder of another version is regenerated


def _frame(rng: np.random.Generator, palette: int, pattern: int, phase: float) -> np.ndarray:
    """One 64x64 keyframe: palette sets the colours, pattern the shape. (H, W, 3) uint8."""
    background, foreground = (np.array(c, dtype=np.float32) for c in PALETTES[palette])
    yy, xx = np.mgrid[0:IMAGE_SIZE, 0:IMAGE_SIZE].astype(np.float32)
    if PATTERNS[pattern] == "stripes":
        on = np.sin((xx + yy * 0.3) / 3.0 + phase) > 0
    else:
        on = (np.sin(xx / 4.0 + phase) * np.sin(yy / 4.0 + phase)) > 0.35
    img = np.where(on[..., None], foreground, background)
    img = img * rng.uniform(0.85, 1.15) + rng.normal(0, 12, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8)


def _clip(rng: np.random.Generator, pitch: int, rhythm: int, rate: int) -> np.ndarray:
    """One mono clip: a harmonic tone in the pitch band, gated in the rhythm's pulse pattern. (T,) float32."""
    t = np.arange(int(AUDIO_SECONDS * rate)) / rate
    f0 = PITCH_HZ[pitch] * rng.uniform(0.9, 1.1)
    tone = np.sin(2 * np.pi * f0 * t) + 0.4 * np.sin(2 * np.pi * 2 * f0 * t + rng.uniform(0, np.pi))
    pulses, duty = RHYTHMS[rhythm]
    gate = ((t * pulses + rng.uniform(0, 1)) % 1.0) < duty
    wave = 0.3 * tone * gate + rng.normal(0, 0.01, t.shape)
    return wave.astype(np.float32)


def _tags(rng: np.random.Generator, topic: int, fmt: str) -> str:
    """Metadata tags: a half-reliable genre, the title's format word, a random duration bucket."""
    genre = list(TOPICS)[topic] if rng.random() < 0.5 else rng.choice(list(TOPICS))
    return f"genre:{genre}|format:{fmt}|duration:{rng.choice(['short', 'medium', 'long'])}"


def _text(rng: np.random.Generator, topic: int) -> tuple[str, str]:
    """Title and description that carry the topic through its words only."""
    words = list(TOPICS.values())[topic]
    chosen = rng.choice(words, size=3, replace=False)
    adjective, fmt = rng.choice(FILLER_ADJECTIVES), rng.choice(FILLER_FORMATS)
    title = f"{adjective.capitalize()} {chosen[0]} {fmt}"
    adjective2 = rng.choice(FILLER_ADJECTIVES)
    description = f"A {adjective2} {fmt} about {chosen[1]} and {chosen[2]}, with some {chosen[0]} along the way."
    return title, description, fmt


def _write_video(path: Path, rng: np.random.Generator, palette: int, pattern: int, pitch: int, rhythm: int) -> None:
    """An MP4 with MPEG-4 video frames and an AAC audio track (codecs built into every FFmpeg)."""
    with av.open(str(path), mode="w") as container:
        video = container.add_stream("mpeg4", rate=VIDEO_FPS)
        video.width = video.height = IMAGE_SIZE
        video.pix_fmt = "yuv420p"
        audio_rate = 16000
        audio = container.add_stream("aac", rate=audio_rate)
        audio.layout = "mono"
        for i in range(VIDEO_FRAMES):
            frame = av.VideoFrame.from_ndarray(_frame(rng, palette, pattern, phase=i * 0.4), format="rgb24")
            for packet in video.encode(frame):
                container.mux(packet)
        for packet in video.encode():
            container.mux(packet)
        wave = _clip(rng, pitch, rhythm, audio_rate)
        chunk = 1024  # the AAC encoder takes 1024-sample frames
        for start in range(0, len(wave), chunk):
            piece = np.zeros((1, chunk), dtype=np.float32)
            part = wave[start : start + chunk]
            piece[0, : len(part)] = part
            frame = av.AudioFrame.from_ndarray(piece, format="fltp", layout="mono")
            frame.sample_rate = audio_rate
            frame.pts = start
            frame.time_base = Fraction(1, audio_rate)
            for packet in audio.encode(frame):
                container.mux(packet)
        for packet in audio.encode():
            container.mux(packet)


def _preferences(rng: np.random.Generator, n: int, size: int) -> np.ndarray:
    """Per-user preference over one attribute's values: most mass on one or two favourites. (U, size)."""
    prefs = np.full((n, size), 0.1 / size)
    for u in range(n):
        favourites = rng.choice(size, size=rng.integers(1, 3), replace=False)
        prefs[u, favourites] += 0.9 / len(favourites)
    return prefs / prefs.sum(axis=1, keepdims=True)


def generate(
    out: str | Path,
    items: int = 2000,
    users: int = 1000,
    interactions_per_user: int = 40,
    seed: int = 0,
    video_fraction: float = 0.1,
    missing_fraction: float = 0.05,
    popularity_weight: float = 0.5,
    cross_weight: float = 3.0,
) -> Path:
    """Write the dataset to ``out`` in the native layout and return ``out``."""
    out = Path(out)
    if items < 20 or users < 2 or interactions_per_user < 5:
        raise ValueError(
            f"synthetic dataset too small: items={items} (>=20), users={users} (>=2), "
            f"interactions_per_user={interactions_per_user} (>=5)"
        )
    options = {
        "items": items,
        "users": users,
        "interactions_per_user": interactions_per_user,
        "seed": seed,
        "video_fraction": video_fraction,
        "missing_fraction": missing_fraction,
        "popularity_weight": popularity_weight,
        "cross_weight": cross_weight,
    }
    start = time.time()
    rng = np.random.default_rng(seed)
    tag_rng = np.random.default_rng([seed, 1])  # its own stream: tags leave every other value as before
    cross_rng = np.random.default_rng([seed, 2])  # likewise for the cross-modal taste
    for sub in ("images", "audio", "video"):
        (out / sub).mkdir(parents=True, exist_ok=True)

    topic = rng.integers(0, len(TOPICS), items)
    palette, pattern = rng.integers(0, len(PALETTES), items), rng.integers(0, len(PATTERNS), items)
    pitch, rhythm = rng.integers(0, len(PITCH_HZ), items), rng.integers(0, len(RHYTHMS), items)
    visual, audio_attr = palette * len(PATTERNS) + pattern, pitch * len(RHYTHMS) + rhythm
    is_video = rng.random(items) < video_fraction
    no_image = ~is_video & (rng.random(items) < missing_fraction)
    no_audio = ~is_video & (rng.random(items) < missing_fraction)
    no_description = rng.random(items) < 2 * missing_fraction

    rows = []
    for i in tqdm(range(items), desc="synthetic items", unit="item", leave=False):
        item_id = f"i{i:05d}"
        title, description, fmt = _text(rng, topic[i])
        row = {
            "item_id": item_id,
            "title": title,
            "description": "" if no_description[i] else description,
            "image": "",
            "video": "",
            "audio": "",
        }
        row["tags"] = _tags(tag_rng, topic[i], fmt)
        if is_video[i]:
            row["video"] = f"video/{item_id}.mp4"
            _write_video(out / row["video"], rng, palette[i], pattern[i], pitch[i], rhythm[i])
        else:
            if not no_image[i]:
                paths = [f"images/{item_id}_{k}.png" for k in range(FRAMES_PER_ITEM)]
                for k, path in enumerate(paths):
                    Image.fromarray(_frame(rng, palette[i], pattern[i], phase=k * 0.7)).save(out / path)
                row["image"] = "|".join(paths)
            if not no_audio[i]:
                row["audio"] = f"audio/{item_id}.wav"
                sf.write(out / row["audio"], _clip(rng, pitch[i], rhythm[i], AUDIO_RATE), AUDIO_RATE)
        rows.append(row)

    pref_topic = _preferences(rng, users, len(TOPICS))
    pref_visual = _preferences(rng, users, len(PALETTES) * len(PATTERNS))
    pref_audio = _preferences(rng, users, len(PITCH_HZ) * len(RHYTHMS))
    popularity = rng.zipf(1.6, items).clip(max=200).astype(np.float64)
    utility = (
        np.log(pref_topic[:, topic]) + np.log(pref_visual[:, visual]) + np.log(pref_audio[:, audio_attr])
    )  # (U, I)
    utility += popularity_weight * np.log(popularity)[None, :]
    in_sync = pattern == rhythm  # stripes (0) with slow (0), dots (1) with fast (1)
    likes_sync = cross_rng.random(users) < 0.5
    utility += cross_weight * (in_sync[None, :] == likes_sync[:, None])
    counts = np.clip(rng.poisson(interactions_per_user - 5, users) + 5, 5, items // 2)
    base_time = 1_735_689_600  # 2025-01-01
    inter = []
    for u in range(users):
        noisy = utility[u] + rng.gumbel(size=items)  # Gumbel-top-k: a sample without replacement
        chosen = np.argpartition(-noisy, counts[u])[: counts[u]]
        times = base_time + rng.integers(0, 86400 * 30) + np.cumsum(rng.exponential(86400, counts[u])).astype(np.int64)
        for item, ts in zip(rng.permutation(chosen), times):
            inter.append((f"u{u:05d}", f"i{item:05d}", int(ts)))

    pd.DataFrame(inter, columns=["user_id", "item_id", "timestamp"]).to_csv(out / "interactions.csv", index=False)
    pd.DataFrame(
        {
            "item_id": [r["item_id"] for r in rows],
            "topic": np.array(list(TOPICS))[topic],
            "palette": palette,
            "pattern": np.array(PATTERNS)[pattern],
            "visual": visual,
            "pitch_hz": np.array(PITCH_HZ)[pitch],
            "rhythm": rhythm,
            "audio": audio_attr,
            "in_sync": in_sync,
            "popularity": popularity,
        }
    ).to_csv(out / "attributes.csv", index=False)
    np.savez(
        out / "user_preferences.npz", topic=pref_topic, visual=pref_visual, audio=pref_audio, likes_sync=likes_sync
    )
    manifest = {
        "generator": "mmrec.data.synthetic",
        "version": GENERATOR_VERSION,
        "options": options,
        "items": items,
        "users": users,
        "interactions": len(inter),
        "seed": seed,
        "video_items": int(is_video.sum()),
        "items_without_image": int(no_image.sum()),
        "items_without_audio": int(no_audio.sum()),
        "items_without_description": int(no_description.sum()),
    }
    write_text(out / "manifest.json", json.dumps(manifest, indent=2))
    with atomic_path(out / "items.csv") as tmp:  # written last: its presence marks a complete dataset
        pd.DataFrame(rows).to_csv(tmp, index=False)
    log.info(
        "synthetic dataset: %d items, %d users, %d interactions written to %s in %.1fs",
        items,
        users,
        len(inter),
        out,
        time.time() - start,
    )
    return out


def ensure_generated(out: str | Path, **options) -> Path:
    """Generate the dataset at ``out`` unless it is already there (once, under a file lock)."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(out) + ".lock"):
        if not (out / "items.csv").is_file():
            log.info("synthetic dataset not found at %s: generating it", out)
            generate(out, **options)
        elif (stale := _stale(out, options)) is not None:
            log.warning("synthetic dataset at %s was generated %s: generating it again", out, stale)
            (out / "items.csv").unlink()
            generate(out, **options)
    return out


def _stale(out: Path, options: dict) -> str | None:
    """Why the generated folder ``out`` does not match this generator and ``options`` (None: it does).
    Only folders this generator wrote (its manifest says so) are ever regenerated."""
    try:
        manifest = json.loads((out / "manifest.json").read_text())
    except (OSError, ValueError):
        return None  # not ours to judge: a user's own folder with an items.csv is used as it is
    if manifest.get("generator") != "mmrec.data.synthetic":
        return None
    if manifest.get("version") != GENERATOR_VERSION:
        return f"by generator version {manifest.get('version', 1)}, this is version {GENERATOR_VERSION}"
    recorded = manifest.get("options", {})
    changed = {k: (recorded.get(k), v) for k, v in options.items() if recorded.get(k) != v}
    return f"with other options (recorded, requested): {changed}" if changed else None


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--items", type=int, default=2000)
    parser.add_argument("--users", type=int, default=1000)
    parser.add_argument("--interactions-per-user", type=int, default=40)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--video-fraction", type=float, default=0.1)
    parser.add_argument("--cross-weight", type=float, default=3.0, help="utility of the cross-modal (sync) taste")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    generate(
        args.out,
        args.items,
        args.users,
        args.interactions_per_user,
        args.seed,
        args.video_fraction,
        cross_weight=args.cross_weight,
    )


if __name__ == "__main__":
    main()
