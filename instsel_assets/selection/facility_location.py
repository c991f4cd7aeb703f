"""Greedy facility-location maximisation on embeddings (Superfiltering's optional diversity pass).

The objective (Mirchandani & Francis 1990; submodlib's ``FacilityLocationFunction``) is

    f(S) = sum_i max(0, max_{j in S} sim(i, j)),   f(empty set) = 0,

summed over every row ``i`` of the ground set: a subset scores high when every row has a chosen row
that resembles it (representativeness). Negative similarities count as 0, as in submodlib, whose
"similarity to the nearest chosen row" starts at 0; this keeps ``f`` monotone and submodular, so
greedy maximisation is within ``1 - 1/e`` of the optimum (Nemhauser et al. 1978).

Similarity, as submodlib builds it from the data in ``mode="dense"``:

- ``"euclidean"`` (what Superfiltering's ``code_diversity_fla/do_fla.py`` passes: ``metric="euclidean"``):
  ``exp(-gamma * ||x_i - x_j||)`` with ``gamma = 1 / d`` (``d`` the embedding dimension), submodlib's
  ``euclidean_similarity``. On unit-norm 384-d MiniLM vectors every similarity lies in
  ``[exp(-2/384), 1]``, so the values are computed in float64 and stored as ``sim - 1`` (``expm1``):
  a constant shift changes no marginal gain, and float32 then keeps ~7 significant digits of the
  small differences that decide the greedy.
- ``"cosine"``: cosine similarity, 0 for all-zero rows (as scikit-learn and submodlib do).

Greedy: each step adds the row with the largest marginal gain
``gain(j) = sum_i max(0, sim(i, j) - cover_i)`` (``cover_i``: similarity of row ``i`` to its nearest
chosen row, 0 at the start); ties go to the lowest row index; it never stops early on a zero gain
(submodlib's ``stopIfZeroGain=False``), so exactly ``min(budget, n)`` distinct rows come back.
The default optimizer is lazy greedy (Minoux 1978), what the reference calls with
``optimizer='LazyGreedy'``: marginal gains only shrink as the chosen set grows, so a row's last
computed gain is an upper bound; a max-heap of these bounds is popped and only popped rows are
re-evaluated (in batches, see ``_lazy_greedy``) until a row whose gain is current stays on top. It
returns the same rows as plain greedy (``optimizer="naive"``, kept to check it) with fewer gain
evaluations. Worst case (near-uniform gains) both are ``O(budget n^2)``: measured on random unit
384-d vectors on a busy 2-core machine, 2,000 rows -> 200 picks took ~1 s and 5,000 -> 500 ~90 s.

Memory. ``n <= max_dense`` (4096 by default): the symmetric ``n x n`` float32 matrix is kept
(``4 n^2`` bytes: 64 MiB at 4096 rows), built at most ``block_bytes`` (64 MiB) of float64 rows at a
time, so no ``n x n x d`` or float64 ``n x n`` temporary exists. Above ``max_dense`` no matrix is
kept: the initial gains are summed over row blocks of at most ``block_bytes`` each, and every gain
re-evaluation or pick recomputes its rows of similarities (``O(n d)`` each). Extra memory is then a
float64 copy of the embeddings (``8 n d`` bytes) plus one block.
"""

from __future__ import annotations

import heapq
import math
import numbers
from collections.abc import Callable, Sequence

import numpy as np

from instsel_assets.selection.random_subset import check_budget

SIMILARITIES = ("euclidean", "cosine")
OPTIMIZERS = ("lazy", "naive")
DEFAULT_MAX_DENSE = 4096
DEFAULT_BLOCK_BYTES = 64 * 1024 * 1024


class _Similarity:
    """Rows of the similarity matrix of ``x``, computed on demand, SHIFTED by -1: ``s(i, j) - 1``.

    ``s`` lies in ``[0, 1]`` (negative cosines count as 0, see the module docstring), so the shifted
    value lies in ``[-1, 0]``; a constant shift changes no marginal gain, and it keeps float32
    accurate where ``s`` is close to 1 (``expm1`` for the euclidean kernel). The greedy works on
    these float32 rows, starting from a cover of -1 (similarity 0).
    """

    def __init__(self, x: np.ndarray, similarity: str, gamma: float | None):
        if similarity not in SIMILARITIES:
            raise ValueError(f"similarity must be one of {list(SIMILARITIES)}, got {similarity!r}")
        self.n, self.d = x.shape
        self.similarity = similarity
        if similarity == "euclidean":
            if gamma is None:
                if self.d == 0:
                    raise ValueError("embeddings have dimension 0; the euclidean similarity needs gamma = 1/d")
                gamma = 1.0 / self.d
            if isinstance(gamma, bool) or not isinstance(gamma, numbers.Real) or not (
                    math.isfinite(gamma) and gamma > 0):
                raise ValueError(f"gamma must be a finite number > 0, got {gamma!r}")
            self.gamma = float(gamma)
            self.x = x
            self.sq = np.einsum("ij,ij->i", x, x)
        else:
            if gamma is not None:
                raise ValueError("gamma applies to the euclidean similarity only; got gamma with similarity='cosine'")
            self.gamma = None
            norms = np.linalg.norm(x, axis=1, keepdims=True)
            self.x = np.divide(x, norms, out=np.zeros_like(x), where=norms > 0)
            self.sq = None

    def shifted64(self, index) -> np.ndarray:
        """``s - 1`` in float64 for the rows ``index`` (a slice or an index array) against every row."""
        prod = self.x[index] @ self.x.T
        if self.similarity == "cosine":
            np.clip(prod, 0.0, 1.0, out=prod)
            prod -= 1.0
            return prod
        prod *= -2.0
        prod += self.sq[index][:, None]
        prod += self.sq[None, :]
        np.maximum(prod, 0.0, out=prod)  # rounding can make a squared distance slightly negative
        np.sqrt(prod, out=prod)
        prod *= -self.gamma
        return np.expm1(prod, out=prod)

    def rows(self, start: int, stop: int) -> np.ndarray:
        """Shifted float32 rows ``start:stop``, shape ``(stop - start, n)``."""
        return self.shifted64(slice(start, stop)).astype(np.float32)

    def rows_at(self, index: np.ndarray) -> np.ndarray:
        """Shifted float32 rows ``index``, shape ``(len(index), n)``."""
        return self.shifted64(np.asarray(index, dtype=np.int64)).astype(np.float32)


def _block_rows(n: int, block_bytes: int) -> int:
    # float64 is the widest buffer a block holds
    return max(1, block_bytes // (8 * max(n, 1)))


def similarity_matrix(x: np.ndarray, *, similarity: str = "euclidean", gamma: float | None = None,
                      block_bytes: int = DEFAULT_BLOCK_BYTES) -> np.ndarray:
    """The dense ``n x n`` float64 matrix of ``max(0, sim(i, j))`` (see the module docstring), filled
    ``block_bytes`` of rows at a time. ``8 n^2`` bytes: meant for small ``n`` and for checking."""
    x = _as_embeddings(x)
    sim = _Similarity(x, similarity, gamma)
    n = x.shape[0]
    out = np.empty((n, n), dtype=np.float64)
    step = _block_rows(n, block_bytes)
    for s in range(0, n, step):
        out[s:s + step] = sim.shifted64(slice(s, min(n, s + step))) + 1.0
    return out


def facility_location_value(x: np.ndarray, indices: Sequence[int], *, similarity: str = "euclidean",
                            gamma: float | None = None, block_bytes: int = DEFAULT_BLOCK_BYTES) -> float:
    """``f(S)`` for the rows ``indices`` of ``x`` (duplicates in ``indices`` count once); 0 for none."""
    x = _as_embeddings(x)
    sim = _Similarity(x, similarity, gamma)
    n = x.shape[0]
    chosen = sorted({int(i) for i in indices})
    if any(i < 0 or i >= n for i in chosen):
        raise ValueError(f"indices must be in [0, {n})")
    cover = np.full(n, -1.0, dtype=np.float64)
    step = _block_rows(n, block_bytes)
    for s in range(0, len(chosen), step):
        np.maximum(cover, sim.shifted64(np.asarray(chosen[s:s + step])).max(axis=0), out=cover)
    return float((cover + 1.0).sum())


def facility_location_indices(
    x: np.ndarray,
    budget: int,
    *,
    similarity: str = "euclidean",
    gamma: float | None = None,
    optimizer: str = "lazy",
    max_dense: int = DEFAULT_MAX_DENSE,
    block_bytes: int = DEFAULT_BLOCK_BYTES,
) -> list[int]:
    """Row indices of ``x`` chosen by greedy facility location, in pick order (``min(budget, n)``).

    - ``similarity``: ``"euclidean"`` (submodlib's ``exp(-gamma * distance)``, ``gamma = 1/d`` unless
      given; Superfiltering's choice) or ``"cosine"``;
    - ``optimizer``: ``"lazy"`` (priority queue of stale gains) or ``"naive"`` (every gain every step);
      both give the same rows;
    - ``max_dense``: the largest ``n`` for which the ``n x n`` matrix is kept (``4 n^2`` bytes);
      above it gains are computed blockwise without one;
    - ``block_bytes``: memory of one block of similarity rows.
    Deterministic; ties in the gain go to the lowest row index.
    """
    budget = check_budget(budget)
    if optimizer not in OPTIMIZERS:
        raise ValueError(f"optimizer must be one of {list(OPTIMIZERS)}, got {optimizer!r}")
    if isinstance(max_dense, bool) or not isinstance(max_dense, numbers.Integral) or max_dense < 0:
        raise ValueError(f"max_dense must be an integer >= 0, got {max_dense!r}")
    if isinstance(block_bytes, bool) or not isinstance(block_bytes, numbers.Integral) or block_bytes < 1:
        raise ValueError(f"block_bytes must be an integer >= 1, got {block_bytes!r}")
    x = _as_embeddings(x)
    n = x.shape[0]
    sim = _Similarity(x, similarity, gamma)  # validates similarity and gamma even when nothing is picked
    m = min(budget, n)
    if m == 0:
        return []
    step = _block_rows(n, block_bytes)
    if n <= max_dense:
        matrix = np.empty((n, n), dtype=np.float32)
        for s in range(0, n, step):
            matrix[s:s + step] = sim.rows(s, min(n, s + step))

        # both return fresh arrays: the gain computation overwrites them
        def rows(start: int, stop: int) -> np.ndarray:
            return matrix[start:stop].copy()

        def rows_at(index: np.ndarray) -> np.ndarray:
            return matrix[index]  # the matrix is symmetric: row j is column j
    else:
        rows, rows_at = sim.rows, sim.rows_at

    if optimizer == "naive":
        return _naive_greedy(rows, rows_at, n, m, step)
    return _lazy_greedy(rows, rows_at, n, m, step)


def _gain_sums(block: np.ndarray, cover: np.ndarray) -> np.ndarray:
    """``gain(j) = sum_i max(0, s(j, i) - cover_i)`` for the (shifted float32) rows of ``block``;
    overwrites ``block``."""
    block -= cover[None, :]
    np.maximum(block, 0.0, out=block)
    return block.sum(axis=1, dtype=np.float64)


def _gains(rows: Callable[[int, int], np.ndarray], n: int, step: int, cover: np.ndarray) -> np.ndarray:
    """``gain(j)`` of every row ``j`` given ``cover``, one block of rows at a time."""
    gains = np.empty(n, dtype=np.float64)
    for s in range(0, n, step):
        gains[s:s + step] = _gain_sums(rows(s, min(n, s + step)), cover)
    return gains


def _naive_greedy(rows, rows_at, n: int, m: int, step: int) -> list[int]:
    cover = np.full(n, -1.0, dtype=np.float32)  # shifted: similarity 0 to the empty set
    chosen = np.zeros(n, dtype=bool)
    picks: list[int] = []
    for _ in range(m):
        gains = _gains(rows, n, step, cover)
        gains[chosen] = -np.inf
        j = int(np.argmax(gains))  # first maximum: ties go to the lowest index
        picks.append(j)
        chosen[j] = True
        np.maximum(cover, rows_at(np.array([j]))[0], out=cover)
    return picks


def _lazy_greedy(rows, rows_at, n: int, m: int, step: int) -> list[int]:
    """Lazy greedy whose stale bounds are re-evaluated in batches.

    Popping one stale row at a time is exact but pays Python overhead per row; when the gains are
    nearly uniform (high-dimensional embeddings) most rows go stale every round. So the stale rows at
    the top of the heap are popped in batches (1, 2, 4, ... up to ``max_batch`` rows, within the
    memory of one block) and their gains computed in one array operation. Evaluating a few extra rows
    changes nothing: a row is picked only when its gain is current and at the top of the heap.
    """
    cover = np.full(n, -1.0, dtype=np.float32)  # shifted: similarity 0 to the empty set
    gains = _gains(rows, n, step, cover)
    # (-bound, index): the max-heap of gain upper bounds, ties popped by lowest index
    heap = [(-float(g), j) for j, g in enumerate(gains)]
    heapq.heapify(heap)
    evaluated_in = np.zeros(n, dtype=np.int64)  # round in which each bound was last computed exactly
    max_batch = max(1, min(step, 1024))
    picks: list[int] = []
    for round_no in range(m):
        batch_size = 1
        while evaluated_in[heap[0][1]] != round_no:
            batch = []
            while heap and len(batch) < batch_size and evaluated_in[heap[0][1]] != round_no:
                batch.append(heapq.heappop(heap)[1])
            fresh = _gain_sums(rows_at(np.asarray(batch, dtype=np.int64)), cover)
            for j, g in zip(batch, fresh):
                evaluated_in[j] = round_no
                heapq.heappush(heap, (-float(g), j))
            batch_size = min(2 * batch_size, max_batch)
        _, j = heapq.heappop(heap)  # its gain is current and no other bound is larger
        picks.append(j)
        np.maximum(cover, rows_at(np.array([j]))[0], out=cover)
    return picks


def _as_embeddings(x) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2:
        raise ValueError(f"embeddings must be 2-d (n, d), got shape {x.shape}")
    finite = np.isfinite(x).all(axis=1)
    if not finite.all():
        raise ValueError(f"embedding of row {int(np.flatnonzero(~finite)[0])} has a NaN or infinite value")
    return np.ascontiguousarray(x)
