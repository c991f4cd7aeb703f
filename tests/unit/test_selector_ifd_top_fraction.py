import numpy as np
import pandas as pd
import pytest

from instsel_assets.registry import SELECTORS
from instsel_assets.selection.ifd_top_fraction import select_ifd, top_fraction_budget


@pytest.fixture()
def candidates():
    return pd.DataFrame(
        {
            "id": ["a", "b", "c", "d", "e", "f", "g", "h"],
            "ifd": [0.95, 1.0, 1.7, 0.30, np.nan, 0.80, 0.95, 0.999],
        }
    )


def test_registered():
    info = SELECTORS["ifd"]
    assert info.fn is select_ifd and info.family == "trainable-llm"
    assert "ifd" in info.columns


def test_highest_ifd_below_one_first_ties_by_id(candidates):
    assert select_ifd(candidates, 3) == ["h", "a", "g"]


def test_never_selects_ifd_at_or_above_one_or_nan(candidates):
    picked = select_ifd(candidates, 100)
    assert picked == ["h", "a", "g", "f", "d"]
    ifd = candidates.set_index("id")["ifd"]
    assert (ifd[picked] < 1).all()
    assert "b" not in picked and "c" not in picked and "e" not in picked


def test_random_pool_budget_and_determinism():
    rng = np.random.default_rng(0)
    frame = pd.DataFrame({"id": [f"r{i}" for i in range(1000)], "ifd": rng.uniform(0.2, 1.4, 1000)})
    budget = top_fraction_budget(len(frame), 0.10)
    picked = select_ifd(frame, budget, seed=1)
    assert len(picked) == budget == 100
    assert picked == select_ifd(frame.sample(frac=1.0, random_state=3), budget, seed=2)
    scores = frame.set_index("id")["ifd"][picked].to_numpy()
    assert (scores < 1).all()
    assert (np.diff(scores) <= 0).all()  # in selection order: highest first
    eligible = frame[frame["ifd"] < 1]
    assert scores.min() >= eligible["ifd"].nlargest(100).min()


def test_top_fraction_budget():
    assert top_fraction_budget(52002, 0.10) == 5200
    assert top_fraction_budget(52002, 0.05) == 2600
    assert top_fraction_budget(3, 0.10) == 1  # never below 1
    assert top_fraction_budget(0, 0.10) == 0
    with pytest.raises(ValueError, match="fraction"):
        top_fraction_budget(10, 0.0)
    with pytest.raises(ValueError, match="fraction"):
        top_fraction_budget(10, 1.5)


def test_errors(candidates):
    with pytest.raises(ValueError, match="'ifd'"):
        select_ifd(candidates.drop(columns=["ifd"]), 2)
    with pytest.raises(ValueError, match="budget"):
        select_ifd(candidates, -1)
    assert select_ifd(candidates, 0) == []
