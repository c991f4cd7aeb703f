"""Reference-style greedy k-center: the full ``n x n`` distance matrix, as DiverseEvol's code builds it.

Used only to check and measure ``kcenter_greedy.kcenter_greedy_indices`` (``instsel bench kcenter``,
``benchmarks/bench_kcenter.py``); no selector calls it. It follows the steps of DiverseEvol's
k-center query (Wu et al. 2023, ``evol_schedules/kcenter_sampling.py``), in numpy float32 so that
``tracemalloc`` sees its memory:

1. the Gram matrix ``X X^T``, computed in row partitions appended to the matrix built so far;
2. squared norms from its diagonal, then ``sqrt(|x|^2 - 2 x.y + |y|^2)`` in place: all ``n x n``
   distances (float32: 4 n^2 bytes, 1.6 GB at n = 20,000, 10.8 GB at n = 52,002);
3. the unlabeled-to-labeled block ``D[~labeled][:, labeled]`` (a copy of the unlabeled rows first);
4. per pick: the row minimum of that block, its argmax, then the block without the picked row and
   with one more column (the distances to the new center), rebuilt by copying.

So its memory is O(n^2) (about twice the matrix at its peak: the partitions are concatenated and the
unlabeled rows are copied) and its time O(n^2 d + n k^2) (the block is rescanned and copied every
step), against O(n) memory and O(n k d) time for the running-minimum version.

Two details differ from that code, so that its picks can be compared with the O(n) version:
squared distances are clamped at 0 before the square root (rounding makes those of duplicate rows
slightly negative, and the reference code's square root then gives NaN), and with no labeled rows
the first center is drawn by ``numpy.random.default_rng(seed)``, as ``kcenter_greedy_indices`` does,
and counts as a pick (the reference code always starts from a labeled set).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from instsel_assets.selection.random_subset import check_budget


def reference_peak_bytes(n: int, k: int = 0) -> int:
    """Rough peak memory of ``kcenter_reference_indices``: two ``n x n`` float32 matrices (the
    concatenation and the unlabeled-rows copy) plus two ``n x k`` blocks (the copies of each step)."""
    return 2 * 4 * n * n + 2 * 4 * n * k


def kcenter_reference_indices(
    x: np.ndarray,
    budget: int,
    *,
    seed: int = 0,
    initial: Sequence[int] = (),
    partition: int | None = None,
) -> list[int]:
    """Row indices picked by greedy k-center from the full distance matrix, in pick order.

    Same contract as ``kcenter_greedy_indices`` for ``budget``, ``seed`` and ``initial`` (already
    labeled rows: never returned); ties in the farthest distance go to the lowest row index.
    ``partition``: rows of the Gram matrix computed per product (default: all at once, as the
    reference code's default does).
    """
    budget = check_budget(budget)
    x = np.ascontiguousarray(np.asarray(x, dtype=np.float32))
    if x.ndim != 2:
        raise ValueError(f"embeddings must be 2-d (n, d), got shape {x.shape}")
    n = x.shape[0]
    labeled = np.zeros(n, dtype=bool)
    for i in initial:
        if not 0 <= int(i) < n:
            raise ValueError(f"initial center indices must be in [0, {n})")
        labeled[int(i)] = True
    m = min(budget, n - int(labeled.sum()))
    if m <= 0:
        return []

    # 1-2: all pairwise distances.
    step = partition or n
    dist = np.empty((0, n), dtype=np.float32)
    for s in range(0, n, step):
        dist = np.concatenate([dist, x[s:s + step] @ x.T], axis=0)
    sq = dist.diagonal().copy().reshape(n, 1)
    dist *= -2.0
    dist += sq
    dist += sq.T
    np.maximum(dist, 0.0, out=dist)
    np.sqrt(dist, out=dist)

    picks: list[int] = []
    if not labeled.any():
        first = int(np.random.default_rng(seed).integers(n))
        labeled[first] = True
        picks.append(first)
    # 3: unlabeled rows x labeled columns.
    mat = dist[~labeled][:, labeled]
    # 4: one pick per step.
    while len(picks) < m:
        q_tmp = int(mat.min(axis=1).argmax())
        q = int(np.arange(n)[~labeled][q_tmp])
        labeled[q] = True
        picks.append(q)
        keep = np.ones(mat.shape[0], dtype=bool)
        keep[q_tmp] = False
        mat = mat[keep, :]
        mat = np.concatenate((mat, dist[~labeled, q][:, None]), axis=1)
    return picks


def covering_radius(x: np.ndarray, centers: Sequence[int], *, block_bytes: int = 64 * 1024 * 1024) -> float:
    """max over rows of the Euclidean distance to the nearest of ``centers`` (row indices), exact to
    float64 rounding.

    Distances to every center come from float32 matrix products in row blocks; the rows whose float32
    minimum is within a safe margin of the largest are then recomputed in float64 against every
    center, so the maximum is the float64 one without an ``n x k`` float64 product.
    """
    x = np.ascontiguousarray(np.asarray(x, dtype=np.float32))
    idx = np.asarray(list(centers), dtype=np.int64)
    if idx.size == 0:
        return float("inf")
    c = x[idx]
    c_sq = np.einsum("ij,ij->i", c, c)
    x_sq = np.einsum("ij,ij->i", x, x)
    n, d = x.shape
    near = np.empty(n, dtype=np.float32)  # squared distance to the nearest center, float32
    step = max(1, block_bytes // (4 * idx.size))
    for s in range(0, n, step):
        block = x[s:s + step] @ c.T
        block *= -2.0
        block += x_sq[s:s + step, None]
        block += c_sq[None, :]
        near[s:s + step] = block.min(axis=1)
    # float32 error of each squared distance is below (2 d + 8) u (|x| + |c|)^2; keep a wide margin.
    r2 = float(max(x_sq.max(), c_sq.max()))
    margin = 4 * (2 * d + 8) * 2.0 ** -24 * 4 * r2 + 1e-12
    top = np.flatnonzero(near >= near.max() - 2 * margin)
    c64 = c.astype(np.float64)
    c64_sq = (c64 * c64).sum(1)
    best = 0.0
    rows_per = max(1, block_bytes // (8 * idx.size))
    for s in range(0, top.size, rows_per):
        rows = x[top[s:s + rows_per]].astype(np.float64)
        d2 = (rows * rows).sum(1)[:, None] - 2 * rows @ c64.T + c64_sq[None, :]
        best = max(best, float(np.sqrt(max(d2.min(axis=1).max(), 0.0))))
    return best
