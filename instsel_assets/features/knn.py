"""KNN-k mean distance in embedding space (docs/METHODS.md, Family 1; InstructMining uses k = 6).

A row far from its neighbours is rare/novel in the pool; a row with distance ~0 has a
near-duplicate. The similarity matrix is built one block of rows at a time (never ``n x n``:
a one-shot ``X @ X.T`` crashed OpenBLAS at n = 52K on a 2-core machine) with numpy BLAS, and the
k largest similarities per row are taken with ``torch.topk`` on a zero-copy view of the block
(values only: 3-4x faster than ``np.partition`` and ~10x faster than ``np.argpartition`` on a
2048 x 20K block here; the block product still dominates the run time).

Registered scorer: ``knn_distance`` (column ``knn6_mean_distance``).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from instsel_assets.features.embeddings import embedding_matrix, l2_normalize
from instsel_assets.registry import register_scorer

# Cap on the similarity block (bytes of float32): block rows shrink as n grows.
_BLOCK_BYTES = 256 * 1024 * 1024


def knn_mean_distance(embeddings: np.ndarray, k: int = 6, block_rows: int = 2048) -> np.ndarray:
    """Mean cosine distance ``1 - cos`` from each row to its ``k`` nearest *other* rows.

    - Rows are L2-normalised first (already-normalised input is unchanged; an all-zero row has
      cosine 0 to everything, so distance 1).
    - The row itself is excluded by index (an exact duplicate elsewhere still counts, distance 0).
    - When ``n - 1 < k`` the ``n - 1`` other rows are used; ``n <= 1`` gives ``0.0`` (no neighbours).
    - Rows are processed ``block_rows`` at a time, fewer when ``block x n`` float32 would exceed
      256 MiB, so memory is O(block x n), never O(n^2).

    Returns float64 values in ``[0, 2]``, shape ``(n,)``.
    """
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    if block_rows < 1:
        raise ValueError(f"block_rows must be >= 1, got {block_rows}")
    x = np.asarray(embeddings)
    if x.ndim != 2:
        raise ValueError(f"embeddings must be a 2-d array (n, d), got shape {x.shape}")
    n = x.shape[0]
    if n <= 1:
        return np.zeros(n, dtype=np.float64)
    x = np.ascontiguousarray(l2_normalize(x))
    kk = min(k, n - 1)
    rows = max(1, min(block_rows, _BLOCK_BYTES // (4 * n)))
    out = np.empty(n, dtype=np.float64)
    for start in range(0, n, rows):
        stop = min(n, start + rows)
        sims = x[start:stop] @ x.T  # (b, n) float32
        b = stop - start
        sims[np.arange(b), np.arange(start, stop)] = -np.inf  # exclude self
        top = torch.topk(torch.from_numpy(sims), kk, dim=1, largest=True, sorted=False).values
        top = top.numpy().astype(np.float64)
        out[start:stop] = 1.0 - top.mean(axis=1)
    return np.clip(out, 0.0, 2.0)


@register_scorer(
    "knn_distance",
    family="metric-set",
    paper="Cao et al. 2023 (InstructMining): KNN-6 indicator",
    summary="Mean cosine distance to the 6 nearest other rows in embedding space (reads 'embedding').",
    writes=("knn6_mean_distance",),
)
def knn_distance(frame: pd.DataFrame, *, block_rows: int = 2048) -> pd.DataFrame:
    """Scorer: ``id, knn6_mean_distance`` for a frame with ``id`` and ``embedding`` columns
    (the output of the ``minilm_embedding`` scorer). Neighbours are searched within ``frame``."""
    missing = [c for c in ("id", "embedding") if c not in frame.columns]
    if missing:
        raise ValueError(f"knn_distance needs column(s) {missing}")
    x = embedding_matrix(frame["embedding"])
    dist = knn_mean_distance(x, k=6, block_rows=block_rows) if len(frame) else np.zeros(0)
    return pd.DataFrame({"id": frame["id"].astype(str).to_numpy(), "knn6_mean_distance": dist})
