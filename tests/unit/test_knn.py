import numpy as np
import pandas as pd
import pytest
from sklearn.neighbors import NearestNeighbors

from instsel_assets.features.knn import knn_distance, knn_mean_distance
from instsel_assets.registry import SCORERS


def brute_force(x, k):
    nn = NearestNeighbors(n_neighbors=k, metric="cosine", algorithm="brute").fit(x)
    dist, _ = nn.kneighbors()  # no query: each point's neighbours exclude itself
    return dist.mean(axis=1)


@pytest.mark.parametrize("block_rows", [1, 7, 2048])
def test_matches_sklearn_brute_force(block_rows):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((53, 16)).astype(np.float32)  # not normalised on purpose
    got = knn_mean_distance(x, k=6, block_rows=block_rows)
    assert got.shape == (53,)
    np.testing.assert_allclose(got, brute_force(x, 6), atol=1e-5)


def test_other_k_and_clustered_points():
    rng = np.random.default_rng(1)
    centers = rng.standard_normal((4, 8))
    x = np.concatenate([c + 0.05 * rng.standard_normal((20, 8)) for c in centers]).astype(np.float32)
    got = knn_mean_distance(x, k=3, block_rows=16)
    np.testing.assert_allclose(got, brute_force(x, 3), atol=1e-5)
    outlier = np.concatenate([x, -10 * centers[:1].astype(np.float32) + 3])
    d = knn_mean_distance(outlier, k=3)
    assert d[-1] > d[:-1].max()


def test_few_rows_use_all_other_rows_and_tiny_inputs_are_zero():
    x = np.array([[1, 0], [0, 1], [1, 1]], dtype=np.float32)
    got = knn_mean_distance(x, k=6)  # n - 1 = 2 < k
    np.testing.assert_allclose(got, brute_force(x, 2), atol=1e-6)
    assert knn_mean_distance(np.ones((1, 4)), k=6).tolist() == [0.0]
    assert knn_mean_distance(np.zeros((0, 4)), k=6).shape == (0,)


def test_exact_duplicates_have_zero_distance_and_self_is_excluded():
    x = np.array([[1, 0], [1, 0], [0, 1]], dtype=np.float32)
    got = knn_mean_distance(x, k=1)
    np.testing.assert_allclose(got, [0.0, 0.0, 1.0], atol=1e-6)


def test_bad_arguments():
    with pytest.raises(ValueError, match="k must be"):
        knn_mean_distance(np.ones((3, 2)), k=0)
    with pytest.raises(ValueError, match="2-d"):
        knn_mean_distance(np.ones(3))


def test_scorer_reads_embedding_column():
    info = SCORERS["knn_distance"]
    assert info.fn is knn_distance and info.family == "metric-set"
    assert info.columns == ("knn6_mean_distance",)
    rng = np.random.default_rng(2)
    x = rng.standard_normal((12, 5)).astype(np.float32)
    frame = pd.DataFrame({"id": [f"r{i}" for i in range(12)], "embedding": [list(r) for r in x]})
    out = knn_distance(frame)
    assert list(out.columns) == ["id", "knn6_mean_distance"]
    np.testing.assert_allclose(out["knn6_mean_distance"].to_numpy(), brute_force(x, 6), atol=1e-5)
    with pytest.raises(ValueError, match="embedding"):
        knn_distance(frame[["id"]])
