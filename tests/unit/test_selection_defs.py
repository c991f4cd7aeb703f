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


# ------------------------------------------------------------------ the asset itself, invoked directly
def _ten_row_tables():
    ids = [f"r{i}" for i in range(10)]
    pool = pd.DataFrame({"id": ids, "source": ["alpaca"] * 10})
    features = pd.DataFrame({"id": ids, "embedding": [np.eye(10)[i] for i in range(10)], "language": ["en"] * 10})
    lengths = pd.DataFrame({"id": ids, "output_chars": range(10), "total_tokens": range(10)})
    return pool, features, lengths


def _select(method, tmp_path, monkeypatch, *, ratings=None, **config):
    import dagster as dg

    from instsel_assets.defs.selection import SelectionConfig, selected_subsets

    db = tmp_path / "t.duckdb"
    monkeypatch.setenv("INSTSEL_DUCKDB", str(db))
    pool, features, lengths = _ten_row_tables()
    if ratings is not None:
        con = duckdb.connect(str(db))
        con.execute("create schema if not exists public")
        frame = pd.DataFrame({"id": pool["id"], "self_curation_score": ratings})  # noqa: F841 - read by duckdb
        con.execute("create table public.self_curation_scores as select * from frame")
        con.close()
    context = dg.build_asset_context(partition_key=method, instance=dg.DagsterInstance.ephemeral())
    events = list(selected_subsets(context, SelectionConfig(budget_fraction=0.5, **config),
                                   instruction_pool=pool, metric_features=features, length_indicators=lengths))
    output = next(e for e in events if isinstance(e, dg.Output))
    checks = {e.check_name: e for e in events if isinstance(e, dg.AssetCheckResult)}
    return output, checks


RATINGS = [4.9, 4.6, 4.2, 3.9, 3.6, 3.1, 2.5, 2.0, 1.5, 1.0]


def test_a_threshold_selector_may_keep_fewer_than_the_budget(tmp_path, monkeypatch):
    output, checks = _select("self_curation", tmp_path, monkeypatch, ratings=RATINGS)
    assert list(output.value["id"]) == ["r0", "r1"]  # the two rows rated >= 4.5, of a budget of 5
    size = checks["size_fits_budget"]
    assert size.passed
    assert size.metadata["shortfall"].value == 3 and size.metadata["fills_budget"].value is False


def test_a_threshold_selector_that_keeps_nothing_fails_the_size_check(tmp_path, monkeypatch):
    output, checks = _select("self_curation", tmp_path, monkeypatch, ratings=[3.0] * 10)
    assert len(output.value) == 0
    assert not checks["size_fits_budget"].passed


def test_selector_params_override_the_plan_and_are_recorded(tmp_path, monkeypatch):
    output, checks = _select("self_curation", tmp_path, monkeypatch, ratings=RATINGS,
                             selector_params={"threshold": 3.5})
    assert list(output.value["id"]) == ["r0", "r1", "r2", "r3", "r4"]
    assert output.metadata["selector_params"].value == {"threshold": 3.5}
    assert checks["size_fits_budget"].passed


def test_a_misspelt_selector_param_is_an_error_naming_the_accepted_ones(tmp_path, monkeypatch):
    with pytest.raises(ValueError, match=r"\['treshold'\] are not parameters of selector 'self_curation'.*threshold"):
        _select("self_curation", tmp_path, monkeypatch, ratings=RATINGS, selector_params={"treshold": 3.5})


def test_a_selector_that_fills_the_budget_must_return_exactly_the_budget(tmp_path, monkeypatch):
    output, checks = _select("random", tmp_path, monkeypatch)
    assert len(output.value) == 5 and checks["size_fits_budget"].passed
    assert checks["size_fits_budget"].metadata["fills_budget"].value is True


def test_the_instag_selection_reads_the_normalised_tags(tmp_path, monkeypatch):
    db = tmp_path / "t.duckdb"
    monkeypatch.setenv("INSTSEL_DUCKDB", str(db))
    ids = [f"r{i}" for i in range(10)]
    normalised = [["math", "code", "poem"], ["math"]] + [[]] * 7 + [None]
    raw = [["Math"], ["Math"]] + [[f"raw tag {i}", f"other {i}"] for i in range(2, 10)]
    tags = pd.DataFrame({"id": ids, "instag_tags": normalised, "instag_tags_raw": raw})  # noqa: F841 - read by duckdb
    con = duckdb.connect(str(db))
    con.execute("create schema if not exists public")
    con.execute("create table public.instag_tags as select * from tags")
    con.close()
    output, checks = _select("instag", tmp_path, monkeypatch)
    # Complexity-first on the normalised tags: r0 covers every tag in the first pass, r1 opens the second.
    assert list(output.value["id"]) == ["r0", "r1"]
    assert output.metadata["columns_read"].value == ["id", "instag_tags"]
    assert checks["size_fits_budget"].passed


@pytest.mark.parametrize("method", ["dataset_quantization", "coreset"])
def test_the_embedding_partitions_fill_the_budget_from_the_pool_tables_alone(method, tmp_path, monkeypatch):
    output, checks = _select(method, tmp_path, monkeypatch)
    assert len(output.value) == 5 and output.value["id"].is_unique
    assert output.metadata["columns_read"].value == ["id", "embedding"]
    assert output.metadata["score_assets_read"].value == {}
    assert all(c.passed for c in checks.values())


def test_the_reward_top_partition_reads_reward_scores(tmp_path, monkeypatch):
    db = tmp_path / "t.duckdb"
    monkeypatch.setenv("INSTSEL_DUCKDB", str(db))
    ids = [f"r{i}" for i in range(10)]
    values = [0.1, 2.0, np.nan, -1.0, 3.5, 0.7, 1.2, 2.2, -0.5, 0.0]
    rewards = pd.DataFrame({"id": ids, "reward_score": values, "reward_model": ["rm"] * 10})  # noqa: F841
    con = duckdb.connect(str(db))
    con.execute("create schema if not exists public")
    con.execute("create table public.reward_scores as select * from rewards")
    con.close()
    output, checks = _select("reward_top", tmp_path, monkeypatch)
    assert list(output.value["id"]) == ["r4", "r7", "r1", "r6", "r5"]  # highest first; the NaN row never
    assert output.metadata["columns_read"].value == ["id", "reward_score"]
    assert output.metadata["scorer_settings"].value["reward_score"]["asset"] == "reward_scores"
    assert checks["size_fits_budget"].passed and checks["ids_in_pool"].passed


def test_a_budget_partition_takes_its_size_from_its_key(tmp_path, monkeypatch):
    output, checks = _select("longest@5pct", tmp_path, monkeypatch)  # budget_fraction=0.5 is the default's only
    assert list(output.value["id"]) == ["r9"]  # 5% of 10 rows: max(1, round(0.5)) = 1, the longest
    assert set(output.value["method"]) == {"longest@5pct"}
    meta = {k: getattr(v, "value", v) for k, v in output.metadata.items()}
    assert (meta["selection"], meta["budget"], meta["budget_fraction"], meta["budget_label"]) == (
        "longest", 1, 0.05, "5pct")
    assert checks["size_fits_budget"].passed
    default, _ = _select("longest", tmp_path, monkeypatch)
    assert len(default.value) == 5
    assert {k: getattr(v, "value", v) for k, v in default.metadata.items()}["budget_label"] == "default"
