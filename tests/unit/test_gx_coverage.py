"""Every tabular asset has a Great Expectations suite run as its ``great_expectations_suite`` check, and the check's
metadata shows each expectation's result (a Markdown table in the UI, the same as JSON).

A tabular asset is one whose output goes to the table IO manager (``io_manager``: DataFrames in DuckDB or S3
Parquet); the artefacts on ``artifact_io_manager`` (checkpoints, selector models) are not tables. The thresholds live
in one place, ``instsel_assets/quality/expectations.py`` (``SUITES``).
"""

import json

import dagster as dg
import pandas as pd
import pytest

from instsel_assets.quality.expectations import SUITES, validate_frame

# Tabular assets whose check is not wired yet, with the reason. Each one still has its suite in SUITES. Remove an
# entry when its module runs the suite: the test fails while the list names an asset that has its check.
PENDING_CHECKS: dict[str, str] = {}


def suite_name_of(key: dg.AssetKey) -> str:
    """The suite of an asset: its name, or the key's first part for a family of assets (raw_datasets/<source>)."""
    return key.path[-1] if key.path[-1] in SUITES else key.path[0]


def tabular_assets():
    from definitions import defs

    graph = defs.resolve_asset_graph()
    out = {}
    for key in graph.get_all_asset_keys():
        assets_def = graph.assets_def_for_key(key)
        output = assets_def.node_def.output_def_named(assets_def.get_output_name_for_asset_key(key))
        out[key] = output.io_manager_key
    return graph, out


def test_every_tabular_asset_has_a_suite_and_a_gx_check():
    graph, io_managers = tabular_assets()
    assert set(io_managers.values()) == {"io_manager", "artifact_io_manager"}, set(io_managers.values())
    tables = sorted((k for k, m in io_managers.items() if m == "io_manager"), key=lambda k: k.to_user_string())
    assert len(tables) >= 40
    checks = {(c.asset_key, c.name) for c in graph.asset_check_keys}
    no_suite = [k.to_user_string() for k in tables if suite_name_of(k) not in SUITES]
    no_check = sorted(k.to_user_string() for k in tables if (k, "great_expectations_suite") not in checks)
    assert no_suite == []
    assert no_check == sorted(PENDING_CHECKS), "wire the suite check (or list the asset in PENDING_CHECKS)"
    # the families the issue names
    names = {k.to_user_string() for k in tables}
    for name in ("instruction_pool", "pool_quarantine", "metric_features", "ifd_scores", "alpagasus_scores",
                 "selected_subsets", "evaluation_reports", "method_comparison", "raw_datasets/alpaca"):
        assert name in names and (dg.AssetKey(name.split("/")) , "great_expectations_suite") in checks, name


def test_suites_are_well_formed_and_hold_their_thresholds():
    import great_expectations.expectations as gxe

    for name, expectations in SUITES.items():
        assert expectations, name
        for cls_name, kwargs in expectations:
            cls = getattr(gxe, cls_name)  # a real GX 1.x expectation
            cls(**kwargs)  # its settings validate
            assert "column" in kwargs or "column_list" in kwargs, (name, cls_name)


def test_the_check_metadata_shows_each_expectations_result():
    from instsel_assets.defs._common import suite_check

    frame = pd.DataFrame({"id": ["a", "b", "b"], "selection_rank": [0, 1, -3]})
    result = suite_check(frame, "selected_subsets", asset_key="selected_subsets")
    assert not result.passed
    meta = result.metadata
    assert meta["suite"].value == "selected_subsets"
    rows = meta["expectation_results"].value
    assert [r["expectation"] for r in rows] == ["expect_column_values_to_not_be_null",
                                                "expect_column_values_to_be_unique",
                                                "expect_column_values_to_be_between"]
    assert [r["success"] for r in rows] == [True, False, False]
    assert rows[1]["unexpected_count"] == 2 and rows[2]["unexpected_count"] == 1
    assert rows[2]["kwargs"] == {"min_value": 0} and rows[2]["examples"] == ["-3"]
    json.dumps(rows)  # plain JSON
    table = meta["expectations"].value
    lines = table.splitlines()
    assert len(lines) == 2 + 3
    assert "| expect_column_values_to_be_between | selection_rank | min_value=0.0 | **FAIL** | 1 | -3 |" in lines
    assert "| expect_column_values_to_not_be_null | id | - | pass | 0 | - |" in lines
    assert meta["expectations_failed"].value == 2 and meta["expectations_evaluated"].value == 3

    # a missing column: every expectation is listed, none silently passes
    missing = suite_check(frame.drop(columns=["selection_rank"]), "selected_subsets")
    rows = missing.metadata["expectation_results"].value
    assert not missing.passed and rows[0]["expectation"] == "column_exists(selection_rank)"
    assert not any(r["success"] for r in rows)


def test_the_new_suites_hold_on_tables_built_from_the_bundled_data():
    """The suites added for the raw sources, the quarantine, the external answers, the evaluation report and the
    InstructMining rule pass on tables the library builds (and fail on a broken one)."""
    import numpy as np

    from instsel_assets import settings
    from instsel_assets.evaluation.report import comparison_table
    from instsel_assets.evaluation.test_sets import load_external_answers
    from instsel_assets.ingest.formats import read_source
    from instsel_assets.ingest.normalize import build_pool
    from instsel_assets.ingest.sources import load_sources
    from instsel_assets.scoring.instruct_mining import fit_from_experiments

    spec = load_sources(settings.data_root())[0]
    raw = read_source(spec, settings.data_root()).head(60)
    raw = pd.concat([raw, raw.head(3).assign(source_row=raw["source_row"].max() + np.arange(1, 4))], ignore_index=True)
    raw.loc[len(raw) - 1, "raw"] = "{not json"
    assert validate_frame(raw, "raw_datasets").success
    pool = build_pool(raw)
    assert len(pool.quarantine) >= 3
    assert validate_frame(pool.quarantine, "pool_quarantine").success
    assert validate_frame(pool.quarantine.assign(reason=""), "pool_quarantine").failures[0]["unexpected_count"] >= 3
    external = load_external_answers("vicuna_80")
    external["answer"] = external["answer"].map(lambda a: json.dumps(list(a)))
    assert validate_frame(external, "external_answers").success
    report = comparison_table([
        {"model": "m", "method": m, "subset_rows": r, "subset_hash": "", "test_set": t, "n_examples": 4,
         "n_answer_tokens": 50, "mean_loss": x}
        for m, r, x in (("base", 0, 2.0), ("random", 5, 1.9), ("ifd", 5, 1.8)) for t in ("lima", "koala")])
    assert validate_frame(report, "evaluation_reports").success
    rng = np.random.default_rng(0)
    experiments = pd.DataFrame({"subset_id": [f"s{i}" for i in range(8)], "eval_loss": rng.uniform(1, 2, 8),
                                "mean_ttr": rng.uniform(0, 1, 8), "mean_mtld": rng.uniform(10, 50, 8)})
    rule = fit_from_experiments(experiments, ["ttr", "mtld"])
    assert validate_frame(rule.coefficient_table(), "instruct_mining_rule").success


@pytest.mark.parametrize("suite", ["pool_shard_quarantine"])
def test_shard_suites_extend_their_base(suite):
    assert SUITES[suite][: len(SUITES["pool_quarantine"])] == SUITES["pool_quarantine"]
