"""Small generated datasets in the public layouts mmrec reads, for tests (never the real files)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

HEADER = "user_id:token\titem_id_list:token_seq\titem_id:token\n"


def write_recbole_benchmark(root: Path, sequences: dict, asins: list[str], name: str, max_len=50, texts=None) -> Path:
    """UniSRec's released layout: prefix-augmented train rows (longest first), valid and test rows."""
    rows = {"train": [], "valid": [], "test": []}
    for user, seq in sequences.items():
        for end in range(len(seq) - 3, 0, -1):  # targets seq[1..n-3], longest history first
            rows["train"].append((user, seq[:end][-max_len:], seq[end]))
        rows["valid"].append((user, seq[:-2][-max_len:], seq[-2]))
        rows["test"].append((user, seq[:-1][-max_len:], seq[-1]))
    root.mkdir(parents=True, exist_ok=True)
    for part, lines in rows.items():
        body = "".join(f"{u}\t{' '.join(map(str, h))}\t{t}\n" for u, h, t in lines)
        (root / f"{name}.{part}.inter").write_text(HEADER + body)
    (root / f"{name}.item2index").write_text("".join(f"{a}\t{i}\n" for i, a in enumerate(asins)))
    texts = {a: f"text of {a}" for a in asins} if texts is None else texts
    body = "".join(f"{a}\t{t}\n" for a, t in texts.items())
    (root / f"{name}.text").write_text("item_id:token\ttext:token_seq\n" + body)
    return root


def random_sequences(users: int, items: int, length: tuple[int, int], seed: int = 0) -> dict[str, list[int]]:
    rng = np.random.default_rng(seed)
    return {str(u): rng.choice(items, rng.integers(*length), replace=False).tolist() for u in range(users)}


def write_scientific(root: Path) -> Path:
    asins = [f"B{i:05d}" for i in range(40)]
    return write_recbole_benchmark(root, random_sequences(30, 40, (5, 12)), asins, "Scientific")


def write_lastfm(root: Path, items: int = 30, users: int = 20) -> Path:
    """The MMRec layout as Last.fm-2k ships it: x_label split, original ids, tag text, audio vectors."""
    rng = np.random.default_rng(0)
    root.mkdir(parents=True, exist_ok=True)
    rows, original = [], []
    for u in range(users):
        for k, item in enumerate(rng.choice(items, 8, replace=False)):
            label = 0 if k < 6 else (1 if k == 6 else 2)
            rows.append(f"{u}\t{item}\t1\t{label}")
            original.append(f"{u + 100}\t{item + 1000}\t1\t{label}")
    header = "userID\titemID\trating\tx_label\n"
    (root / "lfm2k.inter").write_text(header + "\n".join(rows) + "\n")
    (root / "lfm2k_og_ids.inter").write_text(header + "\n".join(original) + "\n")
    tags = "".join(f"{i + 1000}\trock,tag{i}\n" for i in range(items))
    (root / "lfm2k_text.tsv").write_text("artistID\ttext\n" + tags)
    np.save(root / "vggish.npy", rng.normal(size=(items, 128)).astype(np.float64))
    np.save(root / "whisper.npy", rng.normal(size=(items, 512)).astype(np.float32))
    return root


def write_ml100k_tmdb(root: Path, movies: int = 1682) -> Path:
    """items_tmdb.csv for ml-100k's movie ids (the interactions come from the recbole wheel)."""
    root.mkdir(parents=True, exist_ok=True)
    lines = ["movie_id,title,year,Action,Comedy,Drama,overview,original_language"]
    lines += [
        f"{i},Movie {i},{1990 + i % 8}.0,{i % 2},{(i // 2) % 2},{(i // 4) % 2},A plot about topic {i % 7},en"
        for i in range(1, movies + 1)
    ]
    (root / "items_tmdb.csv").write_text("\n".join(lines) + "\n")
    return root


# the dataset loader a preset names -> the writer of a tiny dataset in its layout
WRITERS = {
    "mmrec.data.loaders.benchmark.load_recbole_benchmark": write_scientific,
    "mmrec.data.loaders.benchmark.load_mmrec": write_lastfm,
    "mmrec.data.loaders.movielens_tmdb.load_movielens_tmdb": write_ml100k_tmdb,
}
