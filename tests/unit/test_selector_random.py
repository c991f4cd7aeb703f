import pandas as pd
import pytest

from instsel_assets.registry import SELECTORS
from instsel_assets.selection.random_subset import select_random


@pytest.fixture()
def candidates():
    return pd.DataFrame({"id": [f"id{i:03d}" for i in range(100)], "x": range(100)})


def test_registered():
    info = SELECTORS["random"]
    assert info.fn is select_random and info.family == "baseline"


def test_budget_is_exact_and_ids_are_distinct(candidates):
    for budget in (0, 1, 10, 99, 100):
        ids = select_random(candidates, budget, seed=3)
        assert len(ids) == budget
        assert len(set(ids)) == budget
        assert set(ids) <= set(candidates["id"])
    assert sorted(select_random(candidates, 500)) == sorted(candidates["id"])


def test_deterministic_for_a_seed_and_different_across_seeds(candidates):
    assert select_random(candidates, 10, seed=7) == select_random(candidates, 10, seed=7)
    assert select_random(candidates, 10, seed=7) != select_random(candidates, 10, seed=8)


def test_roughly_uniform(candidates):
    counts = pd.Series(0, index=candidates["id"])
    for seed in range(400):
        counts[select_random(candidates, 10, seed=seed)] += 1
    # each id is expected 40 times; a biased sampler (e.g. always the head) fails this
    assert counts.min() > 15 and counts.max() < 70


def test_errors(candidates):
    with pytest.raises(ValueError, match="budget"):
        select_random(candidates, -1)
    with pytest.raises(ValueError, match="'id'"):
        select_random(candidates.drop(columns=["id"]), 3)
    assert select_random(candidates.iloc[:0], 5) == []
