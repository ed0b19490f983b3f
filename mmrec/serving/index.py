"""The FAISS index over item embeddings, searched by inner product: the model's score (a cosine when
the towers normalise, the default; SASRec's plain dot product with ``model.normalize=false``).

    flat       exact search (IndexFlatIP); the default below 1M items
    flat_fp16  exact search over float16-compressed vectors (half the memory)
    hnsw       HNSW graph (IndexHNSWFlat, M=32): sub-millisecond at millions of items
    ivfpq      inverted lists + product quantisation (8-bit codes): the smallest index

Positions in the index are catalogue positions (vectors are added in catalogue order); deleted
items are filtered from results, since HNSW cannot remove vectors.
"""

from __future__ import annotations

import math

import numpy as np

try:
    import faiss
except ImportError as err:  # an extra, so that a user's own FAISS build (faiss-gpu) is not shadowed
    raise ImportError(
        'mmrec\'s export and serving need FAISS: pip install "mmrec[serve]" (faiss-cpu), or your own faiss-gpu'
    ) from err

INDEX_TYPES = ("flat", "flat_fp16", "hnsw", "ivfpq")


def build_index(vectors: np.ndarray, kind: str = "flat", hnsw_m: int = 32, ef_search: int = 128) -> faiss.Index:
    """An index of ``kind`` holding ``vectors`` (N, D) float32 in order."""
    if kind not in INDEX_TYPES:
        raise ValueError(f"unknown index '{kind}': expected one of {INDEX_TYPES}")
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    n, d = vectors.shape
    if kind == "flat":
        index = faiss.IndexFlatIP(d)
    elif kind == "flat_fp16":
        index = faiss.IndexScalarQuantizer(d, faiss.ScalarQuantizer.QT_fp16, faiss.METRIC_INNER_PRODUCT)
    elif kind == "hnsw":
        index = faiss.IndexHNSWFlat(d, hnsw_m, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = 80
        index.hnsw.efSearch = ef_search
    else:
        nlist = max(1, min(int(math.sqrt(n)), n // 39))  # FAISS wants ~39 training points per list
        sub = next(m for m in (16, 8, 4, 2, 1) if d % m == 0)
        bits = 8 if n >= 256 else max(1, int(math.log2(max(n, 2))) - 1)
        index = faiss.IndexIVFPQ(faiss.IndexFlatIP(d), d, nlist, sub, bits, faiss.METRIC_INNER_PRODUCT)
        index.nprobe = max(1, nlist // 4)
    if not index.is_trained:
        index.train(vectors)
    if n:
        index.add(vectors)
    return index


def search(index: faiss.Index, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(scores, positions), each (Q, k); position -1 where fewer than k items exist."""
    k = max(1, min(k, index.ntotal))
    return index.search(np.ascontiguousarray(queries, dtype=np.float32), k)


def recall_against_exact(index: faiss.Index, vectors: np.ndarray, queries: np.ndarray, k: int) -> float:
    """Mean share of the exact top-k (brute force over ``vectors``) that ``index`` returns."""
    exact = np.argsort(-(queries @ vectors.T), axis=1)[:, :k]
    _, found = search(index, queries, k)
    return float(np.mean([len(set(a) & set(b)) / k for a, b in zip(exact, found)]))


def write_index(index: faiss.Index, path: str) -> None:
    """FAISS's own binary format (no pickle)."""
    faiss.write_index(index, path)


def read_index(path: str) -> faiss.Index:
    return faiss.read_index(path)
