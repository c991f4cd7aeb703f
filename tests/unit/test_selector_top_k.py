import numpy as np
import pandas as pd
import pytest

from instsel_assets.registry import SELECTORS
from instsel_assets.selection.top_k import select_top_k


@pytest.fixture()
def candidates():
    # 10 rows; "f" has no score. Largest: a=d=9 (tie), then h=7, c=5, j=4, e=3, i=2, b=1, g=0.
    return pd.DataFrame(
        {
            "id": ["e", "a", "d", "b", "c", "f", "g", "h", "i", "j"],
            "score": [3.0, 9.0, 9.0, 1.0, 5.0, np.nan, 0.0, 7.0, 2.0, 4.0],
            "text": ["x"] * 10,
        }
    )


def test_registered_with_the_column_from_its_params():
    info = SELECTORS["top_k"]
    assert info.fn is select_top_k and info.family == "metric-set" and info.fills_budget is False
    assert info.columns == ("id",)
    assert info.columns_read({"column": "golden_score"}) == ("id", "golden_score")


def test_largest_first_ties_by_id(candidates):
    assert select_top_k(candidates, 4, column="score") == ["a", "d", "h", "c"]


def test_smallest_first(candidates):
    assert select_top_k(candidates, 3, column="score", descending=False) == ["g", "b", "i"]
    ties = pd.DataFrame({"id": ["z", "y", "x"], "score": [1.0, 1.0, 2.0]})
    assert select_top_k(ties, 2, column="score", descending=False) == ["y", "z"]


def test_fraction_of_the_pool_never_more_than_budget(candidates):
    # 10 candidates: fraction 0.3 -> 3 rows (under the budget of 5), 0.8 -> 8 rows, capped at the budget 5.
    assert select_top_k(candidates, 5, column="score", fraction=0.3) == ["a", "d", "h"]
    assert select_top_k(candidates, 5, column="score", fraction=0.8) == ["a", "d", "h", "c", "j"]
    assert select_top_k(candidates, 5, column="score", fraction=0.01) == ["a"]  # at least one row
    assert select_top_k(candidates, 5, column="score", fraction=1.0) == select_top_k(candidates, 5, column="score")


def test_missing_values_are_not_eligible(candidates):
    everything = select_top_k(candidates, 100, column="score")
    assert "f" not in everything and len(everything) == 9
    assert select_top_k(candidates, 0, column="score") == []
    assert select_top_k(candidates.iloc[:0], 3, column="score") == []


def test_independent_of_row_order_and_seed(candidates):
    for seed in range(3):
        shuffled = candidates.sample(frac=1.0, random_state=seed)
        assert select_top_k(shuffled, 5, seed=seed, column="score") == ["a", "d", "h", "c", "j"]
        assert (select_top_k(shuffled, 5, column="score", descending=False)
                == select_top_k(candidates, 5, column="score", descending=False))


def test_errors(candidates):
    with pytest.raises(ValueError, match=r"needs column\(s\) \['nope'\]"):
        select_top_k(candidates, 2, column="nope")
    with pytest.raises(ValueError, match="parameter 'column'"):
        select_top_k(candidates, 2)
    with pytest.raises(ValueError, match="column 'text' is not numeric"):
        select_top_k(candidates, 2, column="text")
    for fraction in (0, 1.5, -0.1, True, "0.2"):
        with pytest.raises(ValueError, match=r"parameter 'fraction' must be a number in \(0, 1\]"):
            select_top_k(candidates, 2, column="score", fraction=fraction)
    with pytest.raises(ValueError, match="parameter 'descending'"):
        select_top_k(candidates, 2, column="score", descending=None)
    with pytest.raises(ValueError, match="budget"):
        select_top_k(candidates, 2.5, column="score")
