"""Greedy k-center (farthest-first traversal) on embeddings.

Used by Coreset (Chen et al. 2023: "Maybe only 0.5% data is needed"), MoDS (Du et al. 2023: seed
instructions and the augmented set) and DiverseEvol (Wu et al. 2023: iterative growth, each round
starting from the already selected set). Each step adds the point whose Euclidean distance to its
nearest chosen center is largest (Sener & Savarese 2018's k-center-greedy).

Unlike DiverseEvol's reference code (a full ``n x n`` distance matrix), this keeps one running
min-distance vector: O(n*m*d) time, O(n) extra memory. Squared distances
``|x|^2 - 2 x.c + |c|^2`` in float32; one matrix-vector product per step. The product is numpy
BLAS in float32 (measured here: as fast as torch's); the per-step element-wise work stays in
numpy because torch's OpenMP threads made it ~36 ms per step instead of ~0.01 ms on a busy
2-core machine. ``precision="float16"`` stores the embeddings in half precision and multiplies
with torch: each step streams the whole matrix once, so the step is memory-bound and half precision
halves it (quiet 2-core box, 52K x 384 -> 2,600 centers: 4.1-4.5 s against 10.0-10.5 s in float32; covering
radius within 1e-4 of float32's there, 1.6e-4 off once at 20K; benchmarks/RESULTS.md). Selections pass it as
``selector_params={"precision": "float16"}``.

``prune=True`` adds triangle-inequality pruning: each row remembers the center it is nearest to
(``a``); when a new center ``c`` is at least twice as far from ``a`` as the row is
(``d(a, c) >= 2 d(x, a)``), then ``d(x, c) >= d(a, c) - d(x, a) >= d(x, a)`` and the row's distance
to ``c`` is not computed. The center-to-center distances cost one ``(m, d)`` product per step; the
remaining rows are gathered and multiplied (all rows are multiplied, without a gather, while more
than a fifth remain). This pays off once the covering radius is small against the spread of the
data (clustered embeddings); on diffuse high-dimensional data nearly every distance is close to the
diameter and nothing is skipped. In float32 the pruned path multiplies with numpy's ``einsum`` (one
thread, the same rounding for a row whichever rows go with it), which on a busy 2-core machine was
also several times faster per step than OpenBLAS's matrix-vector product (``instsel bench kcenter``
measures both).

Registered selector: ``kcenter_greedy`` (reads ``id``, ``embedding``).
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import contextmanager

import numpy as np
import pandas as pd
import torch

from instsel_assets.features.embeddings import embedding_matrix
from instsel_assets.registry import register_selector
from instsel_assets.selection.random_subset import check_budget, require_columns

_BLOCK_BYTES = 256 * 1024 * 1024
_PRECISIONS = {"float32": torch.float32, "float16": torch.float16}


def kcenter_greedy_indices(
    x: np.ndarray,
    budget: int,
    *,
    seed: int = 0,
    initial: Sequence[int] = (),
    centers: np.ndarray | None = None,
    precision: str = "float32",
    prune: bool = False,
    stats: dict | None = None,
) -> list[int]:
    """Row indices of ``x`` picked by greedy k-center, in pick order (``min(budget, eligible)`` of them).

    - ``initial``: row indices that are already centers (not returned, never picked again);
    - ``centers``: extra center vectors ``(m0, d)`` that are not rows of ``x``;
    - with neither, the first center is drawn uniformly by ``numpy.random.default_rng(seed)``
      among the rows (the only random step; everything after it is deterministic, ties in the
      farthest distance go to the lowest row index).
    - ``precision``: storage of the embeddings for the per-step matrix-vector product:
      ``float32`` (numpy BLAS), or ``float16`` (torch matrix-vector product: half the memory
      traffic; products rounded to float16, so near-ties may order differently; the min-distance
      vector stays float32).
    - ``prune``: skip the distances that the triangle inequality shows cannot lower a row's
      running minimum (``_pruned_greedy``). The skip test carries a margin for the rounding of
      every squared distance involved, so a skipped distance could not have changed the minimum
      even as computed. In float16 each step's products are the plain path's (torch), so the
      values are the same. In float32 they come from a per-row kernel (``einsum``) rather than
      BLAS, which can round the last bit of a row's dot product differently (and ``initial`` /
      ``centers`` are added one by one rather than by a matrix product in both precisions): the
      same centers as without pruning except where two rows' distances tie to within that last
      bit, when either is a farthest point and the covering radius agrees to that rounding.
    - ``stats``: a dict that pruning fills with ``distances_computed`` and ``distances_skipped``:
      row-to-center distances computed, and left out by the triangle inequality (rows that are
      centers themselves are in neither).
    Exact duplicates of chosen points are only picked once every other point is covered.
    """
    budget = check_budget(budget)
    if precision not in _PRECISIONS:
        raise ValueError(f"precision must be one of {sorted(_PRECISIONS)}, got {precision!r}")
    x = np.ascontiguousarray(np.asarray(x, dtype=np.float32))
    if x.ndim != 2:
        raise ValueError(f"embeddings must be 2-d (n, d), got shape {x.shape}")
    n, d = x.shape
    initial = sorted({int(i) for i in initial})
    if any(i < 0 or i >= n for i in initial):
        raise ValueError(f"initial center indices must be in [0, {n})")
    m = min(budget, n - len(initial))
    if m <= 0:
        return []

    sq = np.einsum("ij,ij->i", x, x).astype(np.float32)  # squared norms
    has_centers = centers is not None and np.size(centers) > 0
    c = np.zeros((0, d), dtype=np.float32)
    if has_centers:
        c = np.atleast_2d(np.asarray(centers, dtype=np.float32))
        if c.ndim != 2 or c.shape[1] != d:
            raise ValueError(f"center embeddings must have shape (m, {d}), got {np.shape(centers)}")
    first = None if initial or has_centers else int(np.random.default_rng(seed).integers(n))
    if prune:
        return _pruned_greedy(x, sq, m, initial, c, first, precision, stats)

    min_d = np.full(n, np.inf, dtype=np.float32)
    dtype = _PRECISIONS[precision]
    if dtype == torch.float32:
        def products(c: np.ndarray) -> np.ndarray:  # x @ c for c of shape (d,) or (d, k)
            return x @ c
    else:
        xh = torch.from_numpy(x).to(dtype)

        def products(c: np.ndarray) -> np.ndarray:
            ch = torch.from_numpy(np.ascontiguousarray(c)).to(dtype)
            return (xh @ ch).numpy().astype(np.float32)

    def cover(block: np.ndarray) -> None:
        """min_d = min(min_d, squared distance to every center in ``block`` (c, d)), in chunks."""
        b_sq = np.einsum("ij,ij->i", block, block)
        step = max(1, _BLOCK_BYTES // (4 * n))
        for s in range(0, block.shape[0], step):
            dist = products(np.ascontiguousarray(block[s:s + step].T))
            dist *= -2.0
            dist += sq[:, None]
            dist += b_sq[None, s:s + step]
            np.minimum(min_d, dist.min(axis=1), out=min_d)

    if has_centers:
        cover(c)
    if initial:
        cover(x[initial])
        min_d[initial] = -np.inf

    p = first if first is not None else int(np.argmax(min_d))
    picks: list[int] = []
    for _ in range(m):
        picks.append(p)
        min_d[p] = -np.inf
        if len(picks) == m:
            break
        dist = products(x[p])
        dist *= -2.0
        dist += sq
        dist += sq[p]
        np.minimum(min_d, dist, out=min_d)
        p = int(np.argmax(min_d))
    return picks


_U32 = 2.0 ** -24  # unit roundoff of float32
_U16 = 2.0 ** -11  # unit roundoff of float16
_FULL_PRODUCT_SHARE = 0.2  # above this share of rows left to compute, multiply all rows: gathering a row
# costs about four times streaming it (measured: 52K x 384, 30% of the rows gathered took 1.4x the full product)
_GATHER_ROWS = 8192  # rows gathered per product: bounds the copy (8192 x d values) whatever n is


@contextmanager
def _torch_threads(n: int):
    """Run torch's CPU kernels on ``n`` threads inside the block, then restore the setting."""
    before = torch.get_num_threads()
    if before != n:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        if before != n:
            torch.set_num_threads(before)


def _distance_error(d: int, r2: float, precision: str) -> float:
    """Bound on |computed - exact| of one squared distance ``|x|^2 - 2 x.c + |c|^2`` (norms <= sqrt(r2)).

    float32: the dot product and the squared norms each within ``d u |x||c|`` (any summation order),
    two additions within ``u`` of at most ``4 r2``. float16 adds the rounding of both inputs and of
    the product to half precision (``3 * 2^-11`` relative; torch accumulates half products in float32
    on the CPU). Doubled, for the rounding of the bound itself and of the comparison that uses it.
    """
    gamma = d * _U32 / (1 - d * _U32)
    dot = gamma + (3 * _U16 * 1.01 if precision == "float16" else 0.0)
    return 2.0 * r2 * (2 * dot + 2 * gamma + 8 * _U32)


def _pruned_greedy(x: np.ndarray, sq: np.ndarray, m: int, initial: list[int], extra: np.ndarray,
                   first: int | None, precision: str, stats: dict | None = None) -> list[int]:
    """Greedy k-center with triangle-inequality pruning; same contract as ``kcenter_greedy_indices``.

    Per row: ``min_d`` (squared distance to its nearest center, as computed), ``owner`` (that center)
    and ``limit = 4 min_d + slack``. A new center ``c`` is compared with every existing center
    (``cd2[a]``, squared); a row is skipped when ``cd2[owner] >= limit``. Why that is safe with
    rounding: with ``e`` the bound of ``_distance_error`` on every computed squared distance,
    ``cd2[a] >= 4 (min_d + e) + e`` gives ``d(a, c) >= 2 sqrt(min_d + e) >= 2 d(x, a)``, so
    ``d(x, c)^2 >= min_d + e`` and the computed value is ``>= min_d``: the minimum would not move.
    Every product comes from a per-row kernel, whose result for a row does not depend on which
    other rows are multiplied with it, so skipping rows changes no computed value: numpy
    ``einsum`` in float32 (OpenBLAS's matrix-vector product rounds some rows differently depending
    on the rows around them), torch's half matrix-vector product in float16 (the plain path's
    kernel, so float16 with and without pruning compute the same values; a gathered product runs
    on one thread: thread start-up cost milliseconds per call on a busy machine, more than a small
    late product).
    """
    n, d = x.shape
    r2 = float(max(sq.max(initial=0.0), np.einsum("ij,ij->i", extra, extra).max(initial=0.0)))
    slack = np.float32(4 * _distance_error(d, r2, precision) + _distance_error(d, r2, "float32"))
    if precision == "float16":
        xh = torch.from_numpy(x).to(torch.float16).numpy()

        def products(rows: np.ndarray | None, v: np.ndarray) -> np.ndarray:
            vh = torch.from_numpy(np.ascontiguousarray(v)).to(torch.float16)
            if rows is None:
                return (torch.from_numpy(xh) @ vh).numpy().astype(np.float32)
            out = np.empty(rows.size, dtype=np.float32)
            with _torch_threads(1):
                for s in range(0, rows.size, _GATHER_ROWS):
                    out[s:s + _GATHER_ROWS] = (torch.from_numpy(xh[rows[s:s + _GATHER_ROWS]]) @ vh).numpy()
            return out
    else:
        def products(rows: np.ndarray | None, v: np.ndarray) -> np.ndarray:
            if rows is None:
                return np.einsum("ij,j->i", x, v)
            out = np.empty(rows.size, dtype=np.float32)
            for s in range(0, rows.size, _GATHER_ROWS):
                out[s:s + _GATHER_ROWS] = np.einsum("ij,j->i", x[rows[s:s + _GATHER_ROWS]], v)
            return out

    n_centers = len(initial) + extra.shape[0] + m
    cvec = np.empty((n_centers, d), dtype=np.float32)  # the centers so far, and their squared norms
    csq = np.empty(n_centers, dtype=np.float32)
    cd2 = np.zeros(n_centers + 1, dtype=np.float32)  # last slot: rows without a center (never skipped)
    min_d = np.full(n, np.inf, dtype=np.float32)
    limit = np.full(n, np.inf, dtype=np.float32)
    owner = np.full(n, n_centers, dtype=np.int32 if n_centers < 2**31 - 1 else np.int64)
    count = 0
    computed = skipped = 0
    n_done = 0  # rows that are centers themselves (limit -inf): neither computed nor skipped

    def add_center(v: np.ndarray, v_sq: np.float32) -> None:
        nonlocal count, computed, skipped
        if count:
            cd2[:count] = cvec[:count] @ v
            cd2[:count] *= -2.0
            cd2[:count] += csq[:count]
            cd2[:count] += v_sq
        rows = np.flatnonzero(cd2.take(owner) < limit)
        computed += rows.size
        skipped += n - n_done - rows.size
        if rows.size > _FULL_PRODUCT_SHARE * n:
            dist = products(None, v)[rows]
        else:
            dist = products(rows, v)
        dist *= -2.0
        dist += sq[rows]
        dist += v_sq
        closer = dist < min_d[rows]
        rows = rows[closer]
        min_d[rows] = dist[closer]
        owner[rows] = count
        limit[rows] = 4.0 * min_d[rows] + slack
        cvec[count] = v
        csq[count] = v_sq
        count += 1

    for v in extra:
        add_center(v, np.float32(np.einsum("i,i->", v, v)))
    for i in initial:
        add_center(x[i], sq[i])
    if initial:
        min_d[initial] = -np.inf
        limit[initial] = -np.inf
        n_done = len(initial)
    p = first if first is not None else int(np.argmax(min_d))
    picks: list[int] = []
    for _ in range(m):
        picks.append(p)
        min_d[p] = -np.inf
        limit[p] = -np.inf
        n_done += 1
        if len(picks) == m:
            break
        add_center(x[p], sq[p])
        p = int(np.argmax(min_d))
    if stats is not None:
        stats.update(distances_computed=int(computed), distances_skipped=int(skipped))
    return picks


@register_selector(
    "kcenter_greedy",
    family="small-model",
    paper="Sener & Savarese 2018 (k-center greedy); used by Coreset (Chen et al. 2023), MoDS (Du et al. 2023), "
          "DiverseEvol (Wu et al. 2023)",
    summary="Farthest-first traversal on the embeddings: each pick is the row farthest from all chosen ones.",
    reads=("id", "embedding"),
)
def select_kcenter_greedy(
    candidates: pd.DataFrame,
    budget: int,
    *,
    seed: int = 0,
    already_selected: Sequence[str] | None = None,
    center_embeddings: np.ndarray | None = None,
    precision: str = "float32",
    prune: bool = False,
    **params,
) -> list[str]:
    """Greedy k-center ids, in pick order.

    - ``embedding`` holds one vector (array or list) per row; rows with a missing embedding are
      not eligible; Euclidean distance (on L2-normalised embeddings it ranks like cosine).
    - The first center is drawn by ``default_rng(seed)`` among the eligible rows, unless
      ``already_selected`` (ids among ``candidates``: existing centers, e.g. DiverseEvol's previous
      rounds) or ``center_embeddings`` (vectors of centers outside ``candidates``) are given; then
      the first pick is the row farthest from them and ``seed`` plays no part.
    - ``already_selected`` ids are not returned again: the result is the ``budget`` *new* ids.
      Unknown ids raise ``ValueError``.
    - ``precision`` and ``prune``: as in ``kcenter_greedy_indices``.
    """
    require_columns(candidates, ("id", "embedding"), "kcenter_greedy")
    budget = check_budget(budget)
    if budget == 0 or len(candidates) == 0:
        return []
    ids_all = candidates["id"].astype(str).to_numpy()
    present = np.array([not _missing(v) for v in candidates["embedding"]], dtype=bool)
    ids = ids_all[present]
    x = embedding_matrix(candidates["embedding"].to_numpy()[present]) if present.any() else None
    if x is None or x.shape[0] == 0:
        return []

    initial: list[int] = []
    if already_selected:
        pos = {i: k for k, i in enumerate(ids)}
        wanted = [str(i) for i in already_selected]
        unknown = [i for i in wanted if i not in pos]
        if unknown:
            raise ValueError(
                f"kcenter_greedy: already_selected ids not among the candidates (with an embedding): {unknown[:5]}"
                + (f" and {len(unknown) - 5} more" if len(unknown) > 5 else "")
            )
        initial = [pos[i] for i in wanted]
    picks = kcenter_greedy_indices(
        x, budget, seed=seed, initial=initial, centers=center_embeddings, precision=precision,
        prune=prune,
    )
    return [str(ids[i]) for i in picks]


def _missing(v) -> bool:
    if v is None:
        return True
    if isinstance(v, float) and np.isnan(v):
        return True
    return False
