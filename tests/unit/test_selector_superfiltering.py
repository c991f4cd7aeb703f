"""Superfiltering selector: IFD filter and ranking, and the facility-location diversity pass."""

import numpy as np
import pandas as pd
import pytest

from instsel_assets.registry import SELECTORS
from instsel_assets.selection.facility_location import facility_location_indices
from instsel_assets.selection.superfiltering_top import select_superfiltering


@pytest.fixture()
def candidates():
    return pd.DataFrame({
        "id": ["a", "b", "c", "d", "e", "f", "g", "h", "i"],
        "superfiltering_ifd": [0.95, 1.0, 1.7, 0.30, np.nan, 0.80, 0.95, 0.999, np.inf],
    })


def clustered_candidates():
    """40 rows: the 20 highest IFDs all lie in cluster 0, the other clusters score lower."""
    rng = np.random.default_rng(0)
    centers = np.eye(4, 8) * 5
    label = np.array([0] * 20 + [1] * 7 + [2] * 7 + [3] * 6)
    emb = centers[label] + 0.2 * rng.standard_normal((40, 8))
    ifd = np.concatenate([np.linspace(0.99, 0.80, 20), np.linspace(0.79, 0.40, 20)])
    order = rng.permutation(40)
    frame = pd.DataFrame({"id": [f"r{i:02d}" for i in range(40)], "superfiltering_ifd": ifd,
                          "embedding": list(emb), "cluster": label})
    return frame.iloc[order].reset_index(drop=True)


def test_registered():
    info = SELECTORS["superfiltering"]
    assert info.fn is select_superfiltering and info.family == "trainable-llm"
    assert info.columns == ("id", "superfiltering_ifd", "embedding")
    assert "Superfiltering" in info.paper


def test_highest_ifd_below_one_first_ties_by_id(candidates):
    assert select_superfiltering(candidates, 3) == ["h", "a", "g"]


def test_drops_ifd_at_or_above_one_nan_and_infinite(candidates):
    assert select_superfiltering(candidates, 100) == ["h", "a", "g", "f", "d"]
    assert select_superfiltering(candidates, 100, max_ifd=2.0) == ["c", "b", "h", "a", "g", "f", "d"]


def test_no_embedding_needed_without_diversity(candidates):
    assert "embedding" not in candidates.columns
    assert select_superfiltering(candidates, 2, seed=7) == select_superfiltering(candidates, 2, seed=0)


def test_diversity_is_facility_location_on_the_top_factor_x_budget():
    frame = clustered_candidates()
    budget = 4
    picked = select_superfiltering(frame, budget, diversity=True, diversity_pool_factor=2.5)
    # by hand: the 10 highest IFDs, then facility location on their embeddings, in pick order
    top = frame.sort_values("superfiltering_ifd", ascending=False).head(10)
    expected = facility_location_indices(np.stack(top["embedding"].to_list()), budget)
    assert picked == top["id"].iloc[expected].tolist()
    assert len(set(picked)) == budget


def test_diversity_spreads_over_clusters_that_ifd_alone_ignores():
    frame = clustered_candidates()
    cluster = frame.set_index("id")["cluster"]
    plain = select_superfiltering(frame, 4)
    assert set(cluster[plain]) == {0}
    diverse = select_superfiltering(frame, 4, diversity=True)  # ground set: top 40 = everything eligible
    assert sorted(cluster[diverse]) == [0, 1, 2, 3]
    # a ground set of only the top 20 (all cluster 0) cannot spread
    narrow = select_superfiltering(frame, 4, diversity=True, diversity_pool_factor=5)
    assert set(cluster[narrow]) == {0}


def test_diversity_never_picks_rows_outside_the_filter():
    frame = clustered_candidates()
    frame.loc[frame["cluster"] == 3, "superfiltering_ifd"] = 1.2  # the whole cluster is dropped
    picked = select_superfiltering(frame, 4, diversity=True)
    assert 3 not in set(frame.set_index("id")["cluster"][picked])
    assert len(picked) == 4


def test_budget_beyond_the_eligible_rows():
    frame = clustered_candidates()
    frame.loc[:4, "superfiltering_ifd"] = np.nan
    eligible = set(frame["id"][5:])
    assert set(select_superfiltering(frame, 100)) == eligible
    assert set(select_superfiltering(frame, 100, diversity=True)) == eligible


def test_missing_embeddings_name_the_row_only_where_used():
    frame = clustered_candidates()
    low = frame["superfiltering_ifd"].idxmin()
    frame.at[low, "embedding"] = None
    # the row is outside the top 2 x 2 ground set: not needed
    assert len(select_superfiltering(frame, 2, diversity=True, diversity_pool_factor=2)) == 2
    with pytest.raises(ValueError, match=f"'embedding'.*{frame.at[low, 'id']}"):
        select_superfiltering(frame, 20, diversity=True)
    with pytest.raises(ValueError, match="embedding"):
        select_superfiltering(frame.drop(columns="embedding"), 2, diversity=True)


def test_empty_and_zero_budget(candidates):
    assert select_superfiltering(candidates, 0) == []
    assert select_superfiltering(candidates.iloc[:0], 5) == []
    assert select_superfiltering(clustered_candidates().iloc[:0], 5, diversity=True) == []


@pytest.mark.parametrize("kwargs, name", [
    (dict(diversity=True, diversity_pool_factor=0.5), "diversity_pool_factor"),
    (dict(diversity=True, diversity_pool_factor=float("inf")), "diversity_pool_factor"),
    (dict(diversity="yes"), "diversity"),
    (dict(diversity=True, similarity="dot"), "similarity"),
    (dict(max_ifd=float("nan")), "max_ifd"),
])
def test_bad_parameters_name_the_parameter(kwargs, name):
    with pytest.raises(ValueError, match=name):
        select_superfiltering(clustered_candidates(), 3, **kwargs)


def test_bad_budget_and_missing_score_column(candidates):
    with pytest.raises(ValueError, match="budget"):
        select_superfiltering(candidates, -1)
    with pytest.raises(ValueError, match="superfiltering_ifd"):
        select_superfiltering(candidates.rename(columns={"superfiltering_ifd": "ifd"}), 2)
