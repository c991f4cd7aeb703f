"""DQ, Dataset Quantization (Zhou et al. 2023b, ICCV 2023, arXiv 2308.10524), on sentence embeddings.

Rule (paper section 3.1, "dataset bin generation" then "bin sampling"; reference code
``magic-research/Dataset_Quantization``, ``alpaca_sample.py``):

1. Split the pool into ``K = n_bins`` non-overlapping bins. Bin ``k`` is built greedily from the rows
   that no earlier bin took (the remaining pool ``R``): each step adds the row ``j`` of ``R \\ S`` with
   the largest GraphCut marginal gain with respect to the bin so far ``S``, where

       f(S) = sum_{i in R, j in S} s(i, j) - lam * sum_{i, j in S} s(i, j)

   so ``gain(j | S) = sum_{i in R} s(i, j) - lam * (2 * sum_{p in S} s(p, j) + s(j, j))``: similarity to
   the remaining pool (representativeness) minus similarity to the bin so far (diversity).
2. Draw uniformly without replacement from every bin; the union is the selection.

Similarity is the cosine: the embeddings are L2-normalised (all-zero rows stay zero) and
``s(i, j) = x_i . x_j``. This is what the reference does for Alpaca (the dot product of unit-norm
OpenAI embeddings). The paper writes the step with squared Euclidean distances,
``argmax_x sum_{p in S} ||x - p||^2 - sum_{p in R \\ S} ||x - p||^2``; on unit vectors that is, up to a
constant of the step, ``2 * (sum_{p in R} s(p, x) - 2 * sum_{p in S} s(p, x))``: the gain above with
``lam = 1``. The reference's ``GraphCut`` (from DeepCore) scores ``lam_ref * sum_R s - 2 * sum_S s`` with
``lam_ref = 1``, the same ranking again. Hence the default ``lam = 1.0`` (``DEFAULT_LAMBDA``); ``lam = 0``
is pure representativeness, larger values weigh diversity inside a bin more. GraphCut is monotone
submodular only for ``lam <= 0.5``; like the reference (``NaiveGreedy`` with a fixed budget), the greedy
never stops on a negative gain: each bin is filled to its size.

Reference defaults: ``--k 10`` bins and ``--ratio 0.1`` (the data keep ratio) in ``alpaca_sample.py``;
10 bins is also the default of the image experiments. Here ``n_bins`` defaults to 10
(``DEFAULT_N_BINS``), and the keep ratio is ``budget / len(candidates)``: the selection's budget sets it,
so there is no ``ratio`` parameter (passing one raises ``ValueError``).

Memory and time. No ``n x n`` matrix is built. Because the similarity is a dot product,
``sum_{i in R} s(i, j) = x_j . c_R`` and ``sum_{p in S} s(p, j) = x_j . c_S`` with ``c_R`` and ``c_S`` the
sums of the rows of ``R`` and ``S``, so every gain is ``x_j . (c_R - 2 lam c_S) - lam |x_j|^2``: exact,
``O(d)`` per row, with ``c_S`` updated in ``O(d)`` after each pick. Extra memory is ``O(n d)`` (a
float32 copy of the remaining rows per bin). A plain greedy evaluates every remaining row at every
step (``optimizer="naive"``, kept to check the default): ``O(n^2 d)`` over all bins. The default
``optimizer="shortlist"`` gives the same picks with fewer evaluations: after one full evaluation it
keeps the ``L`` best rows and re-evaluates only those; for the rows left out it keeps an upper bound
on their gain under the current ``v`` (``v = c_R - 2 lam c_S``), from their projection on the
direction of ``v`` at the full evaluation (see ``_OutsideBound``). The list's best row is taken
while it beats that bound plus a float32 rounding margin; otherwise everything is evaluated again
(and ``L`` doubles when a list served few picks). Measured on clustered random 384-d vectors with one
BLAS thread on a busy 2-core machine: 20,000 rows into 10 bins took ~19 s naive, ~2.4 s shortlist.

Deliberate differences from the reference code:

- Bin sizes: the reference makes ``K`` bins of ``n // K`` rows each, so the ``n % K`` rows that the
  last greedy leaves are in no bin; here the bins partition the pool, sizes ``n // K`` or ``n // K + 1`` (the larger
  ones first), so every row can be drawn. The last bin is simply the rows left.
- Bin sampling: the reference draws ``int(ratio * n / K)`` rows per bin, which can fall short of the
  keep ratio; here bin ``k`` gets ``floor(budget * |bin_k| / n)`` rows and the remaining few go one each
  to the bins with the largest remainders (ties in a seeded random order), so exactly
  ``min(budget, eligible rows)`` ids come back.
- Canonical order: the rows are first sorted by ``id``, and every tie in the gain goes to the earlier
  row in that order, so the selected ids depend on the set of ``(id, embedding)`` rows and the seed,
  not on the order of the candidates.
- Rows with a missing embedding are not eligible (as in ``kcenter_greedy``).

Ties within float32 rounding between different rows may resolve either way between the two
optimizers; they pick the same rows otherwise.

Registered selector: ``dataset_quantization`` (reads ``id``, ``embedding``).
"""

from __future__ import annotations

import math
import numbers

import numpy as np
import pandas as pd

from instsel_assets.features.embeddings import embedding_matrix
from instsel_assets.registry import register_selector
from instsel_assets.selection.random_subset import check_budget, require_columns

DEFAULT_N_BINS = 10
DEFAULT_LAMBDA = 1.0
OPTIMIZERS = ("shortlist", "naive")
_INITIAL_SHORTLIST = 512
_MIN_SERVED = 8  # a shortlist that served fewer picks than this before a refresh doubles in size


def _n_bins(value) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValueError(f"n_bins must be an integer >= 1, got {value!r}")
    return int(value)


def _lam(value) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not (math.isfinite(value) and value >= 0):
        raise ValueError(f"lam must be a finite number >= 0, got {value!r}")
    return float(value)


def _normalised(x) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    if x.ndim != 2:
        raise ValueError(f"embeddings must be 2-d (n, d), got shape {x.shape}")
    finite = np.isfinite(x).all(axis=1)
    if not finite.all():
        raise ValueError(f"embedding of row {int(np.flatnonzero(~finite)[0])} has a NaN or infinite value")
    norms = np.linalg.norm(x.astype(np.float64), axis=1, keepdims=True)
    out = np.divide(x, norms, out=np.zeros_like(x), where=norms > 0).astype(np.float32, copy=False)
    return np.ascontiguousarray(out)


def bin_sizes(n: int, n_bins: int) -> list[int]:
    """Sizes of the ``min(n_bins, n)`` bins that partition ``n`` rows: ``n // K`` or one more, larger first."""
    k = min(_n_bins(n_bins), n)
    if k == 0:
        return []
    base, extra = divmod(n, k)
    return [base + (1 if i < extra else 0) for i in range(k)]


def _graphcut_bin(x: np.ndarray, size: int, lam: float, optimizer: str) -> list[int]:
    """Row positions of ``x`` (the remaining pool, unit or zero rows) forming one bin, in pick order."""
    r, d = x.shape
    if size >= r:
        return list(range(r))
    sq = np.einsum("ij,ij->i", x, x, dtype=np.float64)  # s(j, j): 1, or 0 for a zero row
    penalty = lam * sq
    v = x.sum(axis=0, dtype=np.float64)  # c_R - 2 lam c_S, with S empty
    taken = np.zeros(r, dtype=bool)
    # float32 dot products of length d are within about d * 2^-24 * |x| |v| of the exact value
    rel_err = (d + 4) * 2.0 ** -23

    def gains(rows) -> np.ndarray:
        g = (x[rows] @ v.astype(np.float32)).astype(np.float64)
        g -= penalty[rows]
        return g

    picks: list[int] = []
    if optimizer == "naive":
        for _ in range(size):
            g = gains(slice(None))
            g[taken] = -np.inf
            p = int(np.argmax(g))  # first maximum: the earliest row in canonical order
            picks.append(p)
            taken[p] = True
            v -= (2.0 * lam) * x[p]
        return picks

    length = min(r, _INITIAL_SHORTLIST)
    shortlist = None
    served = 0
    while len(picks) < size:
        p = -1
        if shortlist is not None:
            g = (xs @ v.astype(np.float32)).astype(np.float64)
            g -= penalty[shortlist]
            g[taken[shortlist]] = -np.inf
            k = int(np.argmax(g))  # the shortlist is in ascending row order: ties go to the earliest row
            margin = rel_err * (float(np.linalg.norm(v)) + v0_norm + lam + 1.0)  # rows have norm ~1 or 0
            if np.isfinite(g[k]) and g[k] > outside.bound(v, lam) + margin:
                p = int(shortlist[k])
                served += 1
            else:
                if served < _MIN_SERVED:
                    length = min(r, 2 * length)
                shortlist = None
        if p < 0:  # full evaluation, then a fresh shortlist of the best rows after the pick
            g = gains(slice(None))
            raw = g + penalty  # x_j . v
            g[taken] = -np.inf
            p = int(np.argmax(g))
            g[p] = -np.inf
            free = r - len(picks) - 1
            if free > length:
                shortlist = np.sort(np.argpartition(-g, length - 1)[:length])
                out = ~taken
                out[p] = False
                out[shortlist] = False
                outside = _OutsideBound(raw[out], sq[out], v, rel_err)
            else:  # every free row fits in the list: nothing outside it to bound
                shortlist = np.flatnonzero(~taken)
                shortlist = shortlist[shortlist != p]
                outside = _OutsideBound(raw[:0], sq[:0], v, rel_err)
            xs = np.ascontiguousarray(x[shortlist])
            v0_norm = float(np.linalg.norm(v))
            served = 0
        picks.append(p)
        taken[p] = True
        v -= (2.0 * lam) * x[p]
    return picks


class _OutsideBound:
    """An upper bound on the current gain of every row left out of the shortlist.

    At the full evaluation, with ``u = v0 / |v0|``, each such row is ``x_j = a_j u + w_j`` where
    ``a_j = x_j . u`` (known from that evaluation) and ``|w_j| = sqrt(|x_j|^2 - a_j^2)``, with
    ``|x_j|^2 <= s2`` (1 up to rounding). For the current ``v``,
    ``x_j . v = a_j (u . v) + w_j . v <= a_j A + sqrt(s2 - a_j^2) B`` with ``A = u . v`` and
    ``B = |v - A u|`` (Cauchy-Schwarz on the part orthogonal to ``u``). That function of ``a`` is concave,
    largest at ``a* = sqrt(s2) A / sqrt(A^2 + B^2)``, so over the rows it is at most its value at ``a*``
    clipped to the range of their ``a_j`` (widened by the rounding error). Gain = ``x_j . v - lam |x_j|^2``;
    an all-zero row always has gain 0.
    """

    def __init__(self, raw: np.ndarray, sq: np.ndarray, v0: np.ndarray, rel_err: float):
        norm = float(np.linalg.norm(v0))
        unit = sq > 0.5
        self.has_zero = bool((~unit).any())
        self.has_unit = bool(unit.any())
        if not self.has_unit:
            return
        self.s2 = float(sq[unit].max())
        self.min_sq = float(sq[unit].min())
        s = math.sqrt(self.s2)
        if norm > 0:
            self.u = v0 / norm
            a = raw[unit] / norm
            self.lo = max(-s, float(a.min()) - 2 * rel_err)
            self.hi = min(s, float(a.max()) + 2 * rel_err)
        else:  # no direction to split on: plain Cauchy-Schwarz, x_j . v <= |x_j| |v|
            self.u = np.zeros_like(v0)
            self.lo, self.hi = -s, s

    def bound(self, v: np.ndarray, lam: float) -> float:
        best = 0.0 if self.has_zero else -np.inf
        if self.has_unit:
            along = float(self.u @ v)
            across = float(np.linalg.norm(v - along * self.u))
            length = math.hypot(along, across)
            a = math.sqrt(self.s2) * along / length if length > 0 else 0.0
            a = min(max(a, self.lo), self.hi)
            best = max(best, a * along + math.sqrt(max(0.0, self.s2 - a * a)) * across - lam * self.min_sq)
        return best


def quantization_bins(x, n_bins: int = DEFAULT_N_BINS, *, lam: float = DEFAULT_LAMBDA,
                      optimizer: str = "shortlist") -> list[np.ndarray]:
    """DQ's bins of the rows of ``x`` (``(n, d)``; cosine similarity on the L2-normalised rows).

    Returns ``min(n_bins, n)`` arrays of row indices, each in pick order; together they partition
    ``range(n)``. Bin ``k`` is the GraphCut greedy (see the module docstring) on the rows that earlier
    bins left; the last bin is the rows left. Deterministic; gain ties go to the lowest row index.
    """
    n_bins = _n_bins(n_bins)
    lam = _lam(lam)
    if optimizer not in OPTIMIZERS:
        raise ValueError(f"optimizer must be one of {list(OPTIMIZERS)}, got {optimizer!r}")
    x = _normalised(x)
    n = x.shape[0]
    sizes = bin_sizes(n, n_bins)
    remaining = np.arange(n)
    bins: list[np.ndarray] = []
    for k, size in enumerate(sizes):
        if k == len(sizes) - 1:
            bins.append(remaining)
            break
        sub = np.ascontiguousarray(x[remaining])
        local = _graphcut_bin(sub, size, lam, optimizer)
        chosen = remaining[np.asarray(local, dtype=np.int64)]
        bins.append(chosen)
        keep = np.ones(len(remaining), dtype=bool)
        keep[local] = False
        remaining = remaining[keep]
    return bins


def bin_quotas(sizes: list[int], budget: int, rng: np.random.Generator) -> list[int]:
    """Rows drawn from each bin: ``floor(budget * size / n)``, the rest one each to the largest remainders
    (ties in the random order of ``rng``); they sum to ``min(budget, n)`` and never exceed a bin."""
    n = sum(sizes)
    budget = min(check_budget(budget), n)
    if n == 0:
        return []
    base = [budget * s // n for s in sizes]
    rest = [budget * s % n for s in sizes]
    short = budget - sum(base)
    tiebreak = rng.permutation(len(sizes))
    order = sorted(range(len(sizes)), key=lambda i: (-rest[i], tiebreak[i]))
    for i in order[:short]:
        base[i] += 1
    return base


@register_selector(
    "dataset_quantization",
    family="metric-set",
    paper="Zhou et al. 2023b, Dataset Quantization (ICCV 2023)",
    summary="GraphCut greedy splits the pool into n_bins non-overlapping bins on the embeddings (cosine); "
            "a uniform sample from every bin, proportional to its size, makes up the budget.",
    reads=("id", "embedding"),
)
def select_dataset_quantization(
    candidates: pd.DataFrame,
    budget: int,
    *,
    seed: int = 0,
    n_bins: int = DEFAULT_N_BINS,
    lam: float = DEFAULT_LAMBDA,
    optimizer: str = "shortlist",
    **params,
) -> list[str]:
    """DQ ids: bin by bin (bin 1 first), each bin's draws in draw order.

    - ``n_bins``: number of bins ``K`` (default 10, the reference's); more bins than rows means one row
      per bin;
    - ``lam``: GraphCut's diversity weight ``lambda`` (default 1.0, what the paper's rule and the
      reference code amount to on unit vectors);
    - ``optimizer``: ``"shortlist"`` (default) or ``"naive"``; both pick the same bins;
    - ``seed``: ``numpy.random.default_rng(seed)`` breaks ties between bin remainders and draws the
      rows of every bin (the only random steps; bins are deterministic).
    Returns ``min(budget, eligible rows)`` distinct ids; rows without an embedding are not eligible.
    """
    if "ratio" in params:
        raise ValueError("dataset_quantization: ratio is not a parameter here: DQ's data keep ratio is "
                         "budget / len(candidates), so set the budget instead")
    if "lambda" in params:
        raise ValueError("dataset_quantization: pass GraphCut's lambda as lam, not 'lambda'")
    require_columns(candidates, ("id", "embedding"), "dataset_quantization")
    budget = check_budget(budget)
    n_bins = _n_bins(n_bins)
    lam = _lam(lam)
    if optimizer not in OPTIMIZERS:
        raise ValueError(f"optimizer must be one of {list(OPTIMIZERS)}, got {optimizer!r}")
    if budget == 0 or len(candidates) == 0:
        return []
    ids_all = candidates["id"].astype(str).to_numpy()
    present = np.array([not _missing(v) for v in candidates["embedding"]], dtype=bool)
    if not present.any():
        return []
    ids = ids_all[present]
    order = np.argsort(ids, kind="stable")  # canonical order: the result does not depend on the row order
    ids = ids[order]
    x = embedding_matrix(candidates["embedding"].to_numpy()[present][order])
    finite = np.isfinite(x).all(axis=1)
    if not finite.all():
        raise ValueError(f"dataset_quantization: the embedding of id {ids[~finite][0]!r} has a NaN or infinite value")
    n = len(ids)
    rng = np.random.default_rng(seed)
    if budget >= n:
        return [str(i) for i in ids[rng.permutation(n)]]
    bins = quantization_bins(x, n_bins, lam=lam, optimizer=optimizer)
    quotas = bin_quotas([len(b) for b in bins], budget, rng)
    out: list[str] = []
    for members, quota in zip(bins, quotas):
        if quota == 0:
            continue
        members = np.sort(members)  # draw in canonical order, not pick order
        drawn = rng.choice(len(members), size=quota, replace=False)
        out.extend(str(i) for i in ids[members[drawn]])
    return out


def _missing(v) -> bool:
    if v is None:
        return True
    if isinstance(v, float) and np.isnan(v):
        return True
    return False
