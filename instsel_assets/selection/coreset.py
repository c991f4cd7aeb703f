"""Coreset selection of "Maybe Only 0.5% Data is Needed" (Chen et al. 2023, arXiv 2305.09246).

The paper's data-pruning method: encode every sample into a sentence embedding (mean-pooled last
hidden state, L2-normalised), cluster the embeddings without supervision (K-Means), then retrieve the
core samples with the k-center-greedy algorithm (Sener & Savarese 2018) from the clusters. How the
budget is shared among the clusters is this module's choice (step 3): in proportion to their sizes,
so the subset keeps the pool's cluster mix while k-center spreads the picks inside each cluster.
Here:

1. ``x``: the ``embedding`` column, L2-normalised (all-zero rows stay zero; the pipeline's MiniLM
   embeddings already are unit vectors);
2. k-means with scikit-learn, ``KMeans(n_clusters, n_init, random_state=seed)``
   (:func:`instsel_assets.selection.cherry_pre_experience.cluster_labels`; ``n_clusters`` is clamped to
   the number of distinct embeddings);
3. the budget is split across the clusters in proportion to their sizes: cluster ``c`` gets
   ``floor(budget * |c| / n)`` rows, and the few rows left go one each to the clusters with the largest
   remainders (ties: the larger cluster, then the lower label); no cluster gets more rows than it has,
   and the quotas add up to ``min(budget, n)``;
4. inside each cluster, greedy k-center (farthest-first traversal, Euclidean distance, which on unit
   vectors ranks like cosine) picks the cluster's quota
   (:func:`instsel_assets.selection.kcenter_greedy.kcenter_greedy_indices`); its first center is
   drawn uniformly among the cluster's rows by a generator seeded from ``seed`` and the cluster.

Defaults: ``n_clusters = 10`` (``DEFAULT_N_CLUSTERS``; no cluster count is taken from the paper: 10
is the bin count of DQ, the other partition-then-sample method here) and ``n_init = 10`` (as
``cherry_pre_experience``; scikit-learn's default before 1.4).

Deliberate choices beyond the paper's description:

- The rows are first sorted by ``id``, so the k-means initialisation and every tie see the same order
  whatever the order of the candidates: the selection depends on the set of ``(id, embedding)`` rows
  and the seed only.
- The ids come back interleaved across clusters (the first pick of every cluster, the cluster with
  the largest quota first, then every second pick, ...), so a prefix of the result is spread over the
  clusters.
- Rows with a missing embedding are not eligible (as in ``kcenter_greedy``).

Memory: ``O(n d)`` plus k-means' ``O(n k)``; the k-center step keeps one distance vector per cluster,
never an ``n x n`` matrix.

Registered selector: ``coreset`` (reads ``id``, ``embedding``).
"""

from __future__ import annotations

import numbers

import numpy as np
import pandas as pd

from instsel_assets.features.embeddings import embedding_matrix, l2_normalize
from instsel_assets.registry import register_selector
from instsel_assets.selection.cherry_pre_experience import cluster_labels
from instsel_assets.selection.kcenter_greedy import kcenter_greedy_indices
from instsel_assets.selection.random_subset import check_budget, require_columns

DEFAULT_N_CLUSTERS = 10
DEFAULT_N_INIT = 10


def _positive_int(value, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
    return int(value)


def proportional_quotas(sizes, budget: int) -> list[int]:
    """Largest-remainder split of ``min(budget, sum(sizes))`` rows in proportion to ``sizes``.

    ``floor(budget * size / n)`` each, then one more to the largest remainders (ties: the larger size,
    then the lower position). No quota exceeds its size.
    """
    sizes = [int(s) for s in sizes]
    n = sum(sizes)
    budget = min(check_budget(budget), n)
    if n == 0:
        return [0] * len(sizes)
    quotas = [budget * s // n for s in sizes]
    rest = [budget * s % n for s in sizes]
    short = budget - sum(quotas)
    order = sorted(range(len(sizes)), key=lambda i: (-rest[i], -sizes[i], i))
    for i in order[:short]:
        quotas[i] += 1
    return quotas


def coreset_indices(x, budget: int, *, n_clusters: int = DEFAULT_N_CLUSTERS, seed: int = 0,
                    n_init: int = DEFAULT_N_INIT) -> list[int]:
    """Row indices of ``x`` chosen by the coreset rule (module docstring), interleaved across clusters."""
    budget = check_budget(budget)
    n_clusters = _positive_int(n_clusters, "n_clusters")
    n_init = _positive_int(n_init, "n_init")
    x = np.asarray(x, dtype=np.float32)
    if x.ndim != 2:
        raise ValueError(f"embeddings must be 2-d (n, d), got shape {x.shape}")
    if not np.isfinite(x).all():
        bad = int(np.flatnonzero(~np.isfinite(x).all(axis=1))[0])
        raise ValueError(f"embedding of row {bad} has a NaN or infinite value")
    n = x.shape[0]
    m = min(budget, n)
    if m == 0:
        return []
    x = l2_normalize(x)
    if m == n:
        return list(range(n))
    labels = cluster_labels(x, n_clusters=min(n_clusters, n), seed=seed, n_init=n_init)
    clusters = [np.flatnonzero(labels == c) for c in np.unique(labels)]
    quotas = proportional_quotas([len(c) for c in clusters], m)
    seeds = np.random.SeedSequence(seed).spawn(len(clusters))
    picked: list[list[int]] = []
    for label, (members, quota) in enumerate(zip(clusters, quotas)):
        if quota == 0:
            continue
        first_seed = int(np.random.default_rng(seeds[label]).integers(2**32))
        local = kcenter_greedy_indices(x[members], quota, seed=first_seed)
        picked.append([int(members[i]) for i in local])
    picked.sort(key=len, reverse=True)  # stable: equal quotas keep label order
    out: list[int] = []
    for step in range(max(len(p) for p in picked)):
        out.extend(p[step] for p in picked if step < len(p))
    return out


@register_selector(
    "coreset",
    family="small-model",
    paper="Chen et al. 2023, Maybe Only 0.5% Data is Needed (arXiv 2305.09246)",
    summary="k-means on the sentence embeddings, the budget split across clusters by size, then greedy "
            "k-center inside each cluster retrieves its core samples.",
    reads=("id", "embedding"),
)
def select_coreset(
    candidates: pd.DataFrame,
    budget: int,
    *,
    seed: int = 0,
    n_clusters: int = DEFAULT_N_CLUSTERS,
    n_init: int = DEFAULT_N_INIT,
    **params,
) -> list[str]:
    """Coreset ids, interleaved across clusters (largest quota first).

    - ``n_clusters``: k-means clusters (default 10; clamped to the number of distinct embeddings);
    - ``n_init``: k-means restarts (default 10);
    - ``seed``: k-means' ``random_state`` and the first center inside every cluster.
    Exactly ``min(budget, eligible rows)`` distinct ids; rows without an embedding are not eligible.
    """
    require_columns(candidates, ("id", "embedding"), "coreset")
    budget = check_budget(budget)
    n_clusters = _positive_int(n_clusters, "n_clusters")
    n_init = _positive_int(n_init, "n_init")
    if budget == 0 or len(candidates) == 0:
        return []
    present = np.array([not _missing(v) for v in candidates["embedding"]], dtype=bool)
    if not present.any():
        return []
    ids = candidates["id"].astype(str).to_numpy()[present]
    order = np.argsort(ids, kind="stable")  # canonical order: the result does not depend on the row order
    ids = ids[order]
    x = embedding_matrix(candidates["embedding"].to_numpy()[present][order])
    finite = np.isfinite(x).all(axis=1)
    if not finite.all():
        raise ValueError(f"coreset: the embedding of id {ids[~finite][0]!r} has a NaN or infinite value")
    picks = coreset_indices(x, budget, n_clusters=n_clusters, seed=seed, n_init=n_init)
    return [str(ids[i]) for i in picks]


def _missing(v) -> bool:
    if v is None:
        return True
    if isinstance(v, float) and np.isnan(v):
        return True
    return False
