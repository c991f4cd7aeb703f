import numpy as np
import pandas as pd
import pytest

from instsel_assets.registry import SELECTORS
from instsel_assets.selection.longest import select_longest


@pytest.fixture()
def candidates():
    return pd.DataFrame(
        {
            "id": ["e", "a", "d", "b", "c", "f"],
            "output_chars": [10, 50, 50, 5, 30, np.nan],
        }
    )


def test_registered():
    info = SELECTORS["longest"]
    assert info.fn is select_longest and info.family == "baseline"
    assert "output_chars" in info.columns


def test_longest_first_ties_by_id(candidates):
    assert select_longest(candidates, 3) == ["a", "d", "c"]
    assert select_longest(candidates, 5) == ["a", "d", "c", "e", "b"]


def test_independent_of_row_order_and_seed(candidates):
    shuffled = candidates.sample(frac=1.0, random_state=1)
    assert select_longest(shuffled, 4, seed=9) == select_longest(candidates, 4, seed=0)


def test_budget_exact_and_missing_lengths_not_eligible(candidates):
    assert select_longest(candidates, 0) == []
    assert len(select_longest(candidates, 2)) == 2
    assert select_longest(candidates, 100) == ["a", "d", "c", "e", "b"]  # "f" has no length


def test_errors(candidates):
    with pytest.raises(ValueError, match="output_chars"):
        select_longest(candidates.drop(columns=["output_chars"]), 2)
    with pytest.raises(ValueError, match="budget"):
        select_longest(candidates, -3)
