import math

import numpy as np
import pandas as pd
import pytest

from instsel_assets.registry import SELECTORS
from instsel_assets.selection.perplexity_lowest import select_lowest_perplexity


@pytest.fixture()
def candidates():
    return pd.DataFrame(
        {
            "id": ["a", "b", "c", "d", "e", "f", "g", "h"],
            "response_ppl": [3.5, 1.2, np.nan, 3.5, np.inf, 9.0, 2.0, 12.0],
            "unrelated": ["x"] * 8,
        }
    )


def test_registered():
    info = SELECTORS["perplexity"]
    assert info.fn is select_lowest_perplexity and info.family == "metric-set"
    assert info.columns == ("id", "response_ppl")
    assert "InstructMining" in info.paper or "Instruction Mining" in info.paper


def test_lowest_first_ties_by_id(candidates):
    assert select_lowest_perplexity(candidates, 4) == ["b", "g", "a", "d"]


def test_only_finite_perplexities_are_eligible(candidates):
    picked = select_lowest_perplexity(candidates, 100)
    assert picked == ["b", "g", "a", "d", "f", "h"]
    assert "c" not in picked and "e" not in picked


def test_max_ppl_bound_is_inclusive(candidates):
    assert select_lowest_perplexity(candidates, 100, max_ppl=9.0) == ["b", "g", "a", "d", "f"]
    assert select_lowest_perplexity(candidates, 100, max_ppl=1.0) == []
    assert select_lowest_perplexity(candidates, 2, max_ppl=100) == ["b", "g"]


def test_random_pool_order_independent_and_sorted():
    rng = np.random.default_rng(0)
    frame = pd.DataFrame({"id": [f"r{i}" for i in range(500)], "response_ppl": np.exp(rng.normal(2, 1, 500))})
    picked = select_lowest_perplexity(frame, 50, seed=1)
    assert picked == select_lowest_perplexity(frame.sample(frac=1.0, random_state=3), 50, seed=2)
    ppl = frame.set_index("id")["response_ppl"][picked].to_numpy()
    assert (np.diff(ppl) >= 0).all()
    assert ppl.max() <= frame["response_ppl"].nsmallest(50).max()


def test_errors(candidates):
    with pytest.raises(ValueError, match="'response_ppl'"):
        select_lowest_perplexity(candidates.drop(columns=["response_ppl"]), 2)
    with pytest.raises(ValueError, match="budget"):
        select_lowest_perplexity(candidates, -1)
    for bad in (0, -3.0, math.nan, "5", True):
        with pytest.raises(ValueError, match="max_ppl"):
            select_lowest_perplexity(candidates, 2, max_ppl=bad)
    assert select_lowest_perplexity(candidates, 0) == []
    assert select_lowest_perplexity(candidates.iloc[:0], 5) == []
