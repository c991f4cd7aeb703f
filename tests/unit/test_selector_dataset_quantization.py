import tracemalloc

import numpy as np
import pandas as pd
import pytest

import instsel_assets.selection.dataset_quantization as dq
from instsel_assets.registry import SELECTORS
from instsel_assets.selection.dataset_quantization import (
    bin_quotas,
    bin_sizes,
    quantization_bins,
    select_dataset_quantization,
)


def frame_of(x, as_lists=False):
    return pd.DataFrame(
        {"id": [f"p{i:05d}" for i in range(len(x))], "embedding": [list(r) if as_lists else r for r in x]}
    )


def index_of(ids):
    return [int(i[1:]) for i in ids]


def reference_bins(x, n_bins, lam):
    """GraphCut bins straight from the definition: f(S) = sum_{i in R, j in S} s_ij - lam sum_{i,j in S} s_ij
    on the dense float64 cosine matrix; each step adds argmax_j f(S + j) - f(S) over the remaining pool R."""
    x = x.astype(np.float64)
    x = x / np.linalg.norm(x, axis=1, keepdims=True)
    sim = x @ x.T
    n = len(x)
    k = min(n_bins, n)
    sizes = [n // k + (1 if i < n % k else 0) for i in range(k)]
    remaining = list(range(n))
    bins = []
    for size in sizes[:-1]:
        def f(s):
            s = list(s)
            return sim[np.ix_(remaining, s)].sum() - lam * sim[np.ix_(s, s)].sum()

        chosen = []
        for _ in range(size):
            base = f(chosen)
            best, best_gain = None, -np.inf
            for j in remaining:
                if j in chosen:
                    continue
                gain = f(chosen + [j]) - base
                if gain > best_gain:
                    best, best_gain = j, gain
            chosen.append(best)
        bins.append(chosen)
        remaining = [j for j in remaining if j not in chosen]
    bins.append(remaining)
    return bins


def tight_clusters(sizes, d=6, noise=0.01, seed=0):
    """Clusters around orthogonal axes: cosine ~1 inside a cluster, ~0 across."""
    rng = np.random.default_rng(seed)
    rows, labels = [], []
    for c, m in enumerate(sizes):
        center = np.zeros(d)
        center[c] = 1.0
        rows.append(center + noise * rng.standard_normal((m, d)))
        labels += [c] * m
    return np.concatenate(rows).astype(np.float32), np.array(labels)


def test_registered():
    info = SELECTORS["dataset_quantization"]
    assert info.fn is select_dataset_quantization
    assert info.family == "metric-set"
    assert set(info.columns) == {"id", "embedding"}


def test_bins_partition_the_pool():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((103, 5)).astype(np.float32)
    bins = quantization_bins(x, 10)
    assert [len(b) for b in bins] == bin_sizes(103, 10) == [11, 11, 11] + [10] * 7
    flat = np.concatenate(bins)
    assert len(flat) == 103 and sorted(flat.tolist()) == list(range(103))  # disjoint and covering
    assert [len(b) for b in quantization_bins(x[:4], 10)] == [1, 1, 1, 1]  # more bins than rows
    assert [len(b) for b in quantization_bins(x, 1)] == [103]


@pytest.mark.parametrize("lam", [0.0, 0.5, 1.0, 2.0])
@pytest.mark.parametrize("optimizer", ["naive", "shortlist"])
def test_bins_follow_the_graphcut_definition(lam, optimizer):
    rng = np.random.default_rng(3)
    x = (rng.standard_normal((60, 6)) + 0.4).astype(np.float32)
    got = quantization_bins(x, 4, lam=lam, optimizer=optimizer)
    want = reference_bins(x, 4, lam)
    for g, w in zip(got[:-1], want[:-1]):
        assert g.tolist() == w  # same rows in the same pick order
    assert sorted(got[-1].tolist()) == sorted(want[-1])


@pytest.mark.parametrize("shortlist", [4, 512])
def test_shortlist_picks_what_the_plain_greedy_picks(monkeypatch, shortlist):
    monkeypatch.setattr(dq, "_INITIAL_SHORTLIST", shortlist)
    rng = np.random.default_rng(5)
    centers = rng.standard_normal((12, 16))
    x = (centers[rng.integers(12, size=1500)] + 0.7 * rng.standard_normal((1500, 16)) + 0.2).astype(np.float32)
    x[7] = 0.0  # an all-zero row: similarity 0 to everything
    for lam in (0.3, 1.0):
        naive = quantization_bins(x, 8, lam=lam, optimizer="naive")
        fast = quantization_bins(x, 8, lam=lam, optimizer="shortlist")
        assert [b.tolist() for b in naive] == [b.tolist() for b in fast]


def test_graphcut_bins_are_balanced_across_equal_clusters():
    # Gain of a row of cluster c ~ |c in R| - lam * (2 * |c in S| + 1): with lam = 1 the greedy alternates
    # between the clusters, so every bin holds each cluster equally.
    x, label = tight_clusters([30, 30, 30])
    for bins in (quantization_bins(x, 5), quantization_bins(x, 5, optimizer="naive")):
        for b in bins:
            assert np.bincount(label[b], minlength=3).tolist() == [6, 6, 6]


def test_lambda_zero_is_pure_representativeness():
    # Without the diversity term the first bin is the rows most similar to the pool: the big cluster.
    x, label = tight_clusters([50, 25, 25])
    first = quantization_bins(x, 5, lam=0.0)[0]
    assert np.bincount(label[first], minlength=3).tolist() == [20, 0, 0]
    first = quantization_bins(x, 5, lam=1.0)[0]
    assert np.bincount(label[first], minlength=3)[1:].min() > 0


def test_budget_exact_distinct_and_per_bin_quotas():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((97, 4)).astype(np.float32)
    frame = frame_of(x, as_lists=True)
    for budget in (0, 1, 9, 10, 11, 50, 96, 97, 500):
        ids = select_dataset_quantization(frame, budget, seed=4, n_bins=10)
        assert len(ids) == min(budget, 97)
        assert len(set(ids)) == len(ids)
        assert set(ids) <= set(frame["id"])
    bins = quantization_bins(x, 10)
    ids = index_of(select_dataset_quantization(frame, 23, seed=4, n_bins=10))
    where = {int(i): k for k, b in enumerate(bins) for i in b}
    counts = np.bincount([where[i] for i in ids], minlength=10)
    sizes = [len(b) for b in bins]
    assert counts.sum() == 23
    for c, s in zip(counts, sizes):  # proportional: floor or ceil of budget * size / n
        assert c in (23 * s // 97, -(-23 * s // 97))


def test_bin_quotas():
    rng = np.random.default_rng(0)
    assert bin_quotas([10, 10, 10], 30, rng) == [10, 10, 10]
    assert bin_quotas([10, 10, 10], 0, rng) == [0, 0, 0]
    q = bin_quotas([11, 11, 10, 10], 5, rng)
    assert sum(q) == 5 and all(v in (1, 2) for v in q)
    assert bin_quotas([3, 3], 100, rng) == [3, 3]  # never more than a bin holds
    assert bin_quotas([], 5, rng) == []


def test_sampling_is_uniform_inside_each_bin():
    rng = np.random.default_rng(2)
    x = rng.standard_normal((60, 3)).astype(np.float32)
    frame = frame_of(x)
    hits = np.zeros(60)
    runs = 300
    for seed in range(runs):
        hits[index_of(select_dataset_quantization(frame, 12, seed=seed, n_bins=3))] += 1
    # every bin has 20 rows and gets 4 draws: each row is drawn with probability 0.2 (60 expected hits)
    assert hits.min() >= 30 and hits.max() <= 95


def test_seed_reproducible_and_seed_dependent():
    x, _ = tight_clusters([20, 20, 20])
    frame = frame_of(x)
    assert select_dataset_quantization(frame, 9, seed=3) == select_dataset_quantization(frame, 9, seed=3)
    draws = {frozenset(select_dataset_quantization(frame, 9, seed=s)) for s in range(6)}
    assert len(draws) > 1


def test_row_order_does_not_change_the_selection():
    rng = np.random.default_rng(7)
    x = rng.standard_normal((150, 8)).astype(np.float32)
    frame = frame_of(x)
    shuffled = frame.sample(frac=1.0, random_state=1).reset_index(drop=True)
    for seed in (0, 1):
        assert select_dataset_quantization(frame, 20, seed=seed) == select_dataset_quantization(shuffled, 20, seed=seed)


def test_missing_embeddings_are_not_eligible():
    rng = np.random.default_rng(0)
    frame = frame_of(rng.standard_normal((12, 3)).astype(np.float32))
    frame.loc[[2, 5], "embedding"] = None
    ids = select_dataset_quantization(frame, 50, n_bins=3)
    assert len(ids) == 10 and "p00002" not in ids and "p00005" not in ids
    ids = select_dataset_quantization(frame, 4, n_bins=3)
    assert len(ids) == 4 and not {"p00002", "p00005"} & set(ids)


@pytest.mark.parametrize("params, name", [
    ({"n_bins": 0}, "n_bins"),
    ({"n_bins": 2.5}, "n_bins"),
    ({"n_bins": True}, "n_bins"),
    ({"lam": -1.0}, "lam"),
    ({"lam": float("nan")}, "lam"),
    ({"lam": "1"}, "lam"),
    ({"optimizer": "lazy"}, "optimizer"),
    ({"ratio": 0.1}, "ratio"),
    ({"lambda": 1.0}, "lambda"),
])
def test_bad_params_name_the_param(params, name):
    frame = frame_of(np.eye(4, dtype=np.float32))
    with pytest.raises(ValueError, match=name):
        select_dataset_quantization(frame, 2, **params)
    with pytest.raises(ValueError, match=name):  # checked even when there is nothing to select
        select_dataset_quantization(frame, 0, **params)


def test_bad_inputs():
    with pytest.raises(ValueError, match="embedding"):
        select_dataset_quantization(pd.DataFrame({"id": ["a"]}), 1)
    with pytest.raises(ValueError, match="budget"):
        select_dataset_quantization(frame_of(np.eye(3, dtype=np.float32)), -1)
    x = np.eye(3, dtype=np.float32)
    x[1, 1] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        select_dataset_quantization(frame_of(x), 1)


def test_no_n_by_n_matrix_for_20000_rows():
    n = 20000
    rng = np.random.default_rng(0)
    centers = rng.standard_normal((40, 16))
    x = (centers[rng.integers(40, size=n)] + 0.8 * rng.standard_normal((n, 16))).astype(np.float32)
    frame = frame_of(x)
    tracemalloc.start()
    try:
        ids = select_dataset_quantization(frame, 2000, seed=0)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert len(ids) == 2000
    assert peak < n * n * 4 / 50  # an n x n float32 matrix would be 1.6 GB; this is under 32 MB
