"""Greedy facility location: the similarity kernel, greedy == lazy greedy, the (1 - 1/e) guarantee."""

import itertools
import math

import numpy as np
import pytest

from instsel_assets.selection import facility_location as fl
from instsel_assets.selection.facility_location import (facility_location_indices, facility_location_value,
                                                        similarity_matrix)


def reference_similarity(x, similarity, gamma=None):
    """Textbook kernels in float64 with explicit pairwise differences."""
    x = np.asarray(x, dtype=np.float64)
    if similarity == "euclidean":
        gamma = 1.0 / x.shape[1] if gamma is None else gamma
        dist = np.sqrt(((x[:, None, :] - x[None, :, :]) ** 2).sum(axis=2))
        return np.exp(-gamma * dist)
    norms = np.linalg.norm(x, axis=1)
    cos = (x @ x.T) / np.maximum(np.outer(norms, norms), 1e-300)
    cos[norms == 0, :] = 0.0
    cos[:, norms == 0] = 0.0
    return np.clip(cos, 0.0, None)


def objective(sim, subset):
    if not subset:
        return 0.0
    return float(np.maximum(sim[:, list(subset)].max(axis=1), 0.0).sum())


def assert_is_greedy(sim, picks, tol=1e-9):
    """Every pick has the largest marginal gain f(S + j) - f(S), recomputed from scratch in float64.
    Gains equal up to ``tol`` are ties (a mutually-nearest pair far from the rest has two exactly
    equal gains, which float32 rounding may order either way)."""
    for step, p in enumerate(picks):
        chosen = list(picks[:step])
        base = objective(sim, chosen)
        gains = {j: objective(sim, chosen + [j]) - base for j in range(len(sim)) if j not in chosen}
        best = max(gains.values())
        assert gains[p] >= best - tol, f"pick {step} ({p}) has gain {gains[p]}, the best is {best}"




@pytest.fixture()
def blobs():
    rng = np.random.default_rng(0)
    centers = np.array([[6.0, 0, 0], [0, 6.0, 0], [0, 0, 6.0], [6.0, 6.0, 6.0]])
    label = np.repeat(np.arange(4), 25)
    x = centers[label] + 0.3 * rng.standard_normal((100, 3))
    order = rng.permutation(100)
    return x[order], label[order]


@pytest.mark.parametrize("similarity", ["euclidean", "cosine"])
def test_similarity_matches_the_textbook_kernel(similarity):
    rng = np.random.default_rng(1)
    x = rng.standard_normal((40, 7))
    x[5] = 0.0  # an all-zero row: cosine 0 (scikit-learn's convention)
    np.testing.assert_allclose(similarity_matrix(x, similarity=similarity), reference_similarity(x, similarity),
                               atol=1e-12)
    # blocks of a few rows build the same matrix
    np.testing.assert_allclose(similarity_matrix(x, similarity=similarity, block_bytes=8 * 40 * 3),
                               reference_similarity(x, similarity), atol=1e-12)
    np.testing.assert_allclose(similarity_matrix(x, gamma=0.5), reference_similarity(x, "euclidean", 0.5),
                               atol=1e-12)


def test_submodlib_euclidean_kernel_uses_gamma_one_over_dimension():
    x = np.array([[0.0, 0.0, 0.0, 0.0], [3.0, 4.0, 0.0, 0.0]])  # distance 5, d = 4
    assert similarity_matrix(x)[0, 1] == pytest.approx(math.exp(-5 / 4))
    assert similarity_matrix(x)[0, 0] == pytest.approx(1.0)


@pytest.mark.parametrize("similarity", ["euclidean", "cosine"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_lazy_greedy_equals_greedy_and_the_textbook(similarity, seed):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((120, 5))
    gamma = 0.5 if similarity == "euclidean" else None  # a kernel with spread-out similarities
    lazy = facility_location_indices(x, 25, similarity=similarity, gamma=gamma)
    naive = facility_location_indices(x, 25, similarity=similarity, gamma=gamma, optimizer="naive")
    blockwise = facility_location_indices(x, 25, similarity=similarity, gamma=gamma, max_dense=0,
                                          block_bytes=8 * 120 * 7)
    blockwise_naive = facility_location_indices(x, 25, similarity=similarity, gamma=gamma, max_dense=0,
                                                block_bytes=8 * 120 * 7, optimizer="naive")
    assert lazy == naive == blockwise == blockwise_naive
    assert_is_greedy(reference_similarity(x, similarity, gamma), lazy)
    assert len(set(lazy)) == 25


def test_lazy_greedy_evaluates_fewer_gains(blobs, monkeypatch):
    x, _ = blobs
    evaluated = []
    real = fl._gain_sums

    def spy(block, cover):
        evaluated.append(block.shape[0])
        return real(block, cover)

    monkeypatch.setattr(fl, "_gain_sums", spy)
    lazy = facility_location_indices(x, 20)
    n_lazy = sum(evaluated)
    evaluated.clear()
    naive = facility_location_indices(x, 20, optimizer="naive")
    assert lazy == naive
    assert sum(evaluated) == 20 * 100
    assert n_lazy < sum(evaluated) / 2


def brute_force_optimum(sim, budget):
    return max(objective(sim, list(s)) for s in itertools.combinations(range(len(sim)), budget))


@pytest.mark.parametrize("seed", range(6))
def test_greedy_is_within_one_minus_one_over_e_of_the_optimum(seed):
    rng = np.random.default_rng(seed)
    # three groups of four points, at random places: covering every group is what counts
    centers = rng.uniform(-6, 6, (3, 2))
    x = np.repeat(centers, 4, axis=0) + rng.uniform(0.2, 1.0) * rng.standard_normal((12, 2))
    sim = reference_similarity(x, "euclidean", 1.0)
    budget = 3
    optimum = brute_force_optimum(sim, budget)
    worst = min(objective(sim, list(s)) for s in itertools.combinations(range(12), budget))
    # on these instances a bad subset is below the bound, so the bound tells greedy apart from chance
    assert worst < (1 - 1 / math.e) * optimum
    picks = facility_location_indices(x, budget, gamma=1.0)
    value = facility_location_value(x, picks, gamma=1.0)
    assert value == pytest.approx(objective(sim, picks))
    assert value >= (1 - 1 / math.e) * optimum
    # the first pick is the best single facility
    assert picks[0] == int(np.argmax(sim.sum(axis=0)))


def test_picks_one_representative_per_cluster(blobs):
    x, label = blobs
    assert sorted(label[facility_location_indices(x, 4)]) == [0, 1, 2, 3]
    # with a kernel under which other clusters look ~0 similar, f splits into one term per cluster, and
    # each representative is its cluster's medoid: the member with the largest summed similarity
    picks = facility_location_indices(x, 4, gamma=3.0)
    assert sorted(label[picks]) == [0, 1, 2, 3]
    sim = similarity_matrix(x, gamma=3.0)
    for p in picks:
        members = np.flatnonzero(label == label[p])
        assert p == members[np.argmax(sim[np.ix_(members, members)].sum(axis=1))]


def test_value_of_sets():
    x = np.array([[0.0, 0.0], [0.0, 2.0], [10.0, 0.0]])
    sim = reference_similarity(x, "euclidean")
    assert facility_location_value(x, []) == 0.0
    assert facility_location_value(x, [1, 1]) == pytest.approx(sim[:, 1].sum())
    assert facility_location_value(x, [0, 2]) == pytest.approx(np.maximum(sim[:, 0], sim[:, 2]).sum())
    assert facility_location_value(x, [0, 1, 2]) == pytest.approx(3.0)
    with pytest.raises(ValueError, match="indices"):
        facility_location_value(x, [3])


def test_duplicates_budget_beyond_distinct_points_and_ties_to_lowest_index():
    x = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0], [0.0, 1.0], [1.0, 0.0]])
    picks = facility_location_indices(x, 5)
    # two distinct points cover everything; the remaining zero-gain picks go by lowest index
    assert sorted(picks[:2]) == [0, 1] and picks[0] == 0
    assert picks[2:] == [2, 3, 4]
    assert facility_location_indices(np.ones((4, 3)), 4) == [0, 1, 2, 3]
    assert facility_location_indices(x, 50) == picks


def test_negative_cosines_count_as_zero():
    x = np.array([[1.0, 0.0], [-1.0, 0.0], [0.9, 0.1]])
    sim = similarity_matrix(x, similarity="cosine")
    assert sim[0, 1] == 0.0 and sim[1, 2] == 0.0
    assert facility_location_value(x, [1], similarity="cosine") == pytest.approx(1.0)


def test_empty_and_zero_budget():
    assert facility_location_indices(np.zeros((0, 4)), 3) == []
    assert facility_location_indices(np.eye(3), 0) == []


@pytest.mark.parametrize("kwargs, name", [
    (dict(similarity="dot"), "similarity"),
    (dict(optimizer="stochastic"), "optimizer"),
    (dict(max_dense=-1), "max_dense"),
    (dict(block_bytes=0), "block_bytes"),
    (dict(gamma=0.0), "gamma"),
    (dict(gamma=float("nan")), "gamma"),
    (dict(similarity="cosine", gamma=1.0), "gamma"),
])
def test_bad_parameters_name_the_parameter(kwargs, name):
    with pytest.raises(ValueError, match=name):
        facility_location_indices(np.eye(3), 2, **kwargs)


def test_bad_inputs():
    with pytest.raises(ValueError, match="budget"):
        facility_location_indices(np.eye(3), -1)
    with pytest.raises(ValueError, match="2-d"):
        facility_location_indices(np.ones(3), 1)
    x = np.eye(3)
    x[1, 2] = np.nan
    with pytest.raises(ValueError, match="row 1"):
        facility_location_indices(x, 1)
    with pytest.raises(ValueError, match="dimension 0"):
        facility_location_indices(np.zeros((3, 0)), 1)
