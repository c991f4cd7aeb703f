"""selected_subsets' wiring: which score tables a partition reads, and the error for one never materialised."""

from __future__ import annotations

import duckdb
import numpy as np
import pandas as pd
import pytest

from instsel_assets import registry
from instsel_assets.defs.selection import COLUMN_ASSETS, SCORE_ASSETS, candidate_table, read_score_table
from instsel_assets.selection.plan import SELECTIONS


def _pool_tables():
    pool = pd.DataFrame({"id": ["a", "b", "c"], "source": ["alpaca"] * 3})
    features = pd.DataFrame({"id": ["a", "b", "c"], "embedding": [np.ones(3)] * 3, "language": ["en"] * 3})
    lengths = pd.DataFrame({"id": ["a", "b", "c"], "output_chars": [5, 9, 2], "total_tokens": [3, 4, 1]})
    return pool, features, lengths


def test_candidate_table_takes_only_the_score_columns_of_each_table():
    pool, features, lengths = _pool_tables()
    nuggets = pd.DataFrame({"id": ["c", "a", "b"], "golden_score": [0.5, 1.0, 0.0],
                            "mean_loss_delta": [0.1, -0.2, 0.3], "n_anchors_used": [4, 4, 4]})
    table = candidate_table(pool, features, lengths, {"nuggets_scores": nuggets})
    assert list(table["id"]) == ["a", "b", "c"]  # pool order
    assert list(table["golden_score"]) == [1.0, 0.0, 0.5]
    assert "n_anchors_used" not in table.columns


def test_every_selection_reads_columns_some_asset_computes():
    registry.load_all()
    for spec in SELECTIONS:
        selector = registry.get_selector(spec.selector)
        unknown = [c for c in selector.columns if c not in COLUMN_ASSETS and c not in ("id", "source")]
        assert not unknown, (spec.name, unknown)


def test_missing_score_table_names_the_asset_to_materialise(tmp_path, monkeypatch):
    db = tmp_path / "t.duckdb"
    monkeypatch.setenv("INSTSEL_DUCKDB", str(db))
    con = duckdb.connect(str(db))
    con.execute("create schema if not exists public")
    con.execute("create table public.nuggets_scores as select 'a' as id, 0.5 as golden_score")
    con.close()
    got = read_score_table("nuggets_scores", "golden_score", "nuggets")
    assert got.to_dict("records") == [{"id": "a", "golden_score": 0.5}]
    with pytest.raises(LookupError, match="materialise tegit_scores first"):
        read_score_table("tegit_scores", "tegit_good_prob", "tegit")


def test_score_assets_are_the_non_pool_column_sources():
    assert "metric_features" not in SCORE_ASSETS and "ifd_scores" in SCORE_ASSETS
    assert set(SCORE_ASSETS) == {a for a in COLUMN_ASSETS.values()} - {"metric_features", "length_indicators"}
