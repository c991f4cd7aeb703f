"""defs/features.py duplicate_indicators: materialised with ``dg.materialize`` on a small pool with planted exact
and near duplicates (English and Chinese); its metadata, config, checks and GE suite, the consistency check on a
broken table, and the selection wiring of its columns."""

from __future__ import annotations

import random

import dagster as dg
import pandas as pd
import pytest

from instsel_assets.defs.features import duplicate_groups_consistency, duplicate_indicators
from instsel_assets.defs.selection import COLUMN_ASSETS, SCORE_ASSETS, columns_and_assets
from instsel_assets.features.duplicates import DUPLICATE_COLUMNS

WORDS = ("apple river stone garden window silver market engine planet forest yellow number bridge candle travel "
         "winter summer ocean mountain letter doctor teacher music painting kitchen village castle dragon rocket "
         "bottle camera island desert violin pencil mirror ladder blanket thunder lantern harbor meadow").split()
HAN = "的一是在不了有和人这中大为上个国我以要他时来用们生到作地于出就分对成会可主发年动同工也能下过子说产种面而方后多定行学"


def _row(row_id: str, instruction: str, output: str) -> dict:
    return {"id": row_id, "source": "test", "instruction": instruction, "input": "", "output": output,
            "conversations": [{"role": "user", "content": instruction}, {"role": "assistant", "content": output}]}


def small_pool() -> pd.DataFrame:
    """12 rows: ``a0`` / ``a1`` exact duplicates (case and spacing), ``a2`` a near duplicate of them (one word of 60
    changed); ``z0`` / ``z1`` Chinese near duplicates (one character of 60); seven unrelated rows."""
    rng = random.Random(3)

    def sentence(n: int) -> str:
        return " ".join(rng.choice(WORDS) for _ in range(n)).capitalize() + "."

    base = sentence(60)
    words = base.split(" ")
    words[30] = "zeppelin"
    han = "".join(rng.choice(HAN) for _ in range(60)) + "。"
    rows = [_row("a0", "Write a story.", base),
            _row("a1", "WRITE  a story.", "  " + base.replace(" ", "   ")),
            _row("a2", "Write a story.", " ".join(words)),
            _row("z0", "写一个故事。", han),
            _row("z1", "写一个故事。", han[:30] + "龙" + han[31:])]
    rows += [_row(f"u{i}", sentence(8), sentence(50)) for i in range(7)]
    return pd.DataFrame(rows)


@pytest.fixture(autouse=True)
def home(dagster_home):
    return dagster_home


def materialise(pool: pd.DataFrame, config: dict | None = None):
    @dg.asset(name="instruction_pool")
    def instruction_pool() -> pd.DataFrame:
        return pool.copy()

    run_config = {"ops": {"duplicate_indicators": {"config": config}}} if config else None
    return dg.materialize([instruction_pool, duplicate_indicators], run_config=run_config,
                          instance=dg.DagsterInstance.ephemeral())


def output_metadata(result) -> dict:
    (mat,) = result.asset_materializations_for_node("duplicate_indicators")
    return {k: getattr(v, "value", v) for k, v in mat.metadata.items()}


def checks_of(result) -> dict:
    return {e.check_name: e for e in result.get_asset_check_evaluations()}


@pytest.fixture(scope="module")
def default_run():
    return materialise(small_pool())


def test_materialised_table_metadata_and_checks(default_run):
    pool, result = small_pool(), default_run
    table = result.output_for_node("duplicate_indicators")
    assert list(table.columns) == ["id", *DUPLICATE_COLUMNS] and list(table["id"]) == list(pool["id"])
    rows = table.set_index("id")
    assert rows.loc["a1", "exact_dup_group"] == "a0" and rows.loc["a1", "exact_dup_rank"] == 1
    assert rows.loc["a2", "exact_dup_group"] == "a2"  # not an exact copy ...
    assert set(rows.index[rows["near_dup_cluster"] == "a0"]) == {"a0", "a1", "a2"}  # ... but a near one
    assert rows.loc["z1", "near_dup_cluster"] == "z0" and rows.loc["z1", "near_dup_rank"] == 1
    assert (rows.filter(like="u", axis=0)["near_dup_cluster_size"] == 1).all()

    meta = output_metadata(result)
    assert meta["dagster/row_count"] == 12 and meta["scorer"] == "duplicates"
    assert (meta["threshold"], meta["num_perm"], meta["seed"]) == (0.8, 128, 1)
    assert meta["scorer_settings"]["minhash_scheme"] == "affine32"
    assert meta["exact_duplicate_groups"] == 1 and meta["exact_duplicate_rows"] == 1
    assert meta["near_duplicate_clusters"] == 2 and meta["rows_in_near_clusters"] == 5
    assert meta["near_duplicate_rows"] == 3 and meta["linked_pairs"] >= 2
    assert "| a0 " in meta["largest_near_clusters"] and "Write a story." in meta["largest_near_clusters"]

    checks = checks_of(result)
    assert set(checks) == {"covers_pool", "groups_consistent", "great_expectations_suite"}
    assert all(c.passed for c in checks.values()), {k: c.metadata for k, c in checks.items()}
    assert all(v.value == 0 for v in checks["groups_consistent"].metadata.values())
    assert checks["great_expectations_suite"].metadata["expectations_failed"].value == 0


def test_config_reaches_the_scorer_and_the_metadata():
    result = materialise(small_pool(), {"threshold": 1.0, "num_perm": 64, "seed": 5})
    meta = output_metadata(result)
    assert (meta["threshold"], meta["num_perm"], meta["seed"]) == (1.0, 64, 5)
    # threshold 1: no LSH index; only the exact copies are linked
    assert meta["lsh_bands"] == 0 and meta["candidate_pairs"] == 0
    assert meta["near_duplicate_clusters"] == 1 and meta["rows_in_near_clusters"] == 2
    assert all(c.passed for c in result.get_asset_check_evaluations())


def test_invalid_config_fails_the_step():
    @dg.asset(name="instruction_pool")
    def instruction_pool() -> pd.DataFrame:
        return small_pool()

    with pytest.raises(ValueError, match="threshold must be a number in"):
        dg.materialize([instruction_pool, duplicate_indicators], instance=dg.DagsterInstance.ephemeral(),
                       run_config={"ops": {"duplicate_indicators": {"config": {"threshold": 1.5}}}})


@pytest.mark.parametrize("row, column, value, expected", [
    ("z1", "near_dup_cluster_size", 5, {"near_cluster_size_wrong": 1}),
    ("z0", "near_dup_rank", 1, {"near_ranks_not_in_id_order": 1}),
    ("a1", "exact_dup_rank", 0, {"exact_ranks_not_in_id_order": 1}),
    ("a1", "exact_dup_group", "a1", {"exact_not_named_by_smallest_id": 0, "exact_ranks_not_in_id_order": 1,
                                     "near_not_named_by_smallest_id": 0}),
    ("z1", "near_dup_cluster", "z1", {"near_ranks_not_in_id_order": 1, "near_cluster_size_wrong": 2}),
    ("a1", "near_dup_cluster", "a1", {"exact_groups_split_across_clusters": 1, "near_cluster_size_wrong": 3,
                                      "near_ranks_not_in_id_order": 2}),
])
def test_consistency_counts_the_rows_that_break_an_invariant(default_run, row, column, value, expected):
    table = default_run.output_for_node("duplicate_indicators")
    assert not any(duplicate_groups_consistency(table).values())
    broken = table.copy()
    broken.loc[broken["id"] == row, column] = value
    problems = duplicate_groups_consistency(broken)
    assert {k: v for k, v in problems.items() if v or k in expected} == expected


def test_a_group_not_named_by_its_smallest_id_is_counted(default_run):
    table = default_run.output_for_node("duplicate_indicators")
    renamed = table.replace({"near_dup_cluster": {"z0": "z1"}})
    assert duplicate_groups_consistency(renamed)["near_not_named_by_smallest_id"] == 2


def test_selections_read_the_duplicate_columns_from_this_asset():
    assert {COLUMN_ASSETS[c] for c in DUPLICATE_COLUMNS} == {"duplicate_indicators"}
    assert "duplicate_indicators" in SCORE_ASSETS
    read = columns_and_assets(("id", "near_dup_rank"), "dedup", "threshold")
    assert read == {"duplicate_indicators": "near_dup_rank"}
