"""full_pool: the internal full-data baseline keeps every row and refuses a budget below the pool."""

import pandas as pd
import pytest

from instsel_assets import registry
from instsel_assets.selection.full_pool import select_full_pool


def test_keeps_every_row_in_pool_order():
    candidates = pd.DataFrame({"id": ["c", "a", "b"]})
    assert select_full_pool(candidates, 3) == ["c", "a", "b"]
    assert select_full_pool(candidates, 10) == ["c", "a", "b"]


def test_refuses_a_budget_smaller_than_the_pool():
    with pytest.raises(ValueError, match="budget 2 is smaller than the pool"):
        select_full_pool(pd.DataFrame({"id": ["a", "b", "c"]}), 2)


def test_registered_as_a_baseline():
    registry.load_all()
    entry = registry.get_selector("full_pool")
    assert entry.family == "baseline" and entry.columns == ("id",)
