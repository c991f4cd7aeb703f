import duckdb
import numpy as np
import pandas as pd
import pytest

from instsel_assets import registry
from instsel_assets.registry import SELECTORS
from instsel_assets.selection.compose import select_compose
from instsel_assets.selection.kcenter_greedy import select_kcenter_greedy
from instsel_assets.selection.plan import get_selection
from instsel_assets.selection.random_subset import select_random

IDS = [f"r{i}" for i in range(10)]
# By IFD (highest first, IFD >= 1 and NaN dropped): r0 r1 r2 r3 r4 r6 r7 r9.
IFD = [0.9, 0.8, 0.7, 0.6, 0.5, 1.2, 0.4, 0.3, np.nan, 0.2]
OUTPUT_CHARS = [10, 50, 30, 40, 20, 100, 90, 80, 70, 60]
# The five highest-IFD rows sit near the origin; r5 (IFD >= 1) and r8 (no IFD) are far-away outliers that
# k-center alone would take first.
EMBEDDINGS = [[0, 0], [1, 0], [0, 1], [1, 1], [0.5, 0.5], [100, 100], [2, 2], [3, 3], [-100, -100], [4, 4]]


@pytest.fixture()
def candidates():
    return pd.DataFrame({"id": IDS, "ifd": IFD, "output_chars": OUTPUT_CHARS,
                         "embedding": [np.array(e, dtype=np.float32) for e in EMBEDDINGS]})


def ifd_top(n):
    return {"selector": "ifd", "params": {}, "size": n}


def test_registered_and_reads_the_columns_of_both_stages():
    info = SELECTORS["compose"]
    assert info.fn is select_compose and info.family == "small-model" and info.fills_budget is False
    assert info.columns == ("id",)
    plan = get_selection("ifd_then_kcenter")
    assert plan.selector == "compose"
    assert info.columns_read(plan.params) == ("id", "ifd", "embedding")
    assert info.columns_read({"first": {"selector": "threshold", "params": {"column": "lift_score", "op": ">=",
                                                                            "value": 7}, "fraction": 0.5},
                              "then": {"selector": "top_k", "params": {"column": "golden_score"}}}) \
        == ("id", "lift_score", "golden_score")
    with pytest.raises(ValueError, match="first.selector 'nope'"):
        info.columns_read({"first": {"selector": "nope", "size": 3}, "then": {"selector": "random"}})


def test_the_plan_example_is_ifd_top_20_percent_then_kcenter():
    plan = get_selection("ifd_then_kcenter")
    assert plan.params["first"] == {"selector": "ifd", "params": {"max_ifd": 1.0}, "fraction": 0.2}
    assert plan.params["then"]["selector"] == "kcenter_greedy"
    assert "max_ifd" in registry.selector_parameters(registry.get_selector("ifd").fn)


def test_second_stage_picks_the_budget_among_the_first_stages_rows(candidates):
    # IFD top 5 = r0..r4; the two longest of those are r1 (50) and r3 (40), not r5/r6 (longer, but filtered).
    ids = select_compose(candidates, 2, first=ifd_top(5), then={"selector": "longest", "params": {}})
    assert ids == ["r1", "r3"]
    ids = select_compose(candidates, 3, first={"selector": "ifd", "fraction": 0.5},
                         then={"selector": "top_k", "params": {"column": "output_chars", "descending": False}})
    assert ids == ["r0", "r4", "r2"]


def test_ifd_then_kcenter_never_takes_the_filtered_outliers(candidates):
    alone = select_kcenter_greedy(candidates, 3, seed=0)
    assert {"r5", "r8"} <= set(alone)
    for seed in range(4):
        ids = select_compose(candidates, 3, seed=seed, first={"selector": "ifd", "params": {"max_ifd": 1.0},
                                                              "fraction": 0.5},
                             then=get_selection("ifd_then_kcenter").params["then"])
        assert len(ids) == 3 and set(ids) <= {"r0", "r1", "r2", "r3", "r4"}
    # When the first stage keeps exactly the budget, the second keeps all of it.
    assert sorted(select_compose(candidates, 5, first=ifd_top(5), then={"selector": "kcenter_greedy"})) \
        == ["r0", "r1", "r2", "r3", "r4"]


def test_second_stage_sees_the_first_stages_rows_in_selection_order_with_the_seed(candidates):
    shortlist = candidates.iloc[[0, 1, 2, 3, 4]].reset_index(drop=True)  # IFD order: r0 r1 r2 r3 r4
    results = set()
    for seed in range(6):
        ids = select_compose(candidates, 2, seed=seed, first=ifd_top(5), then={"selector": "random"})
        assert ids == select_random(shortlist, 2, seed=seed)
        ids_k = select_compose(candidates, 2, seed=seed, first=ifd_top(5), then={"selector": "kcenter_greedy"})
        assert ids_k == select_kcenter_greedy(shortlist, 2, seed=seed)
        results.add(tuple(ids))
    assert len(results) > 1  # the seed reaches the second stage


def test_independent_of_row_order(candidates):
    for seed in range(3):
        shuffled = candidates.sample(frac=1.0, random_state=seed).reset_index(drop=True)
        for then in ({"selector": "kcenter_greedy"}, {"selector": "random"}, {"selector": "longest"}):
            assert (select_compose(shuffled, 3, seed=seed, first=ifd_top(6), then=then)
                    == select_compose(candidates, 3, seed=seed, first=ifd_top(6), then=then))


def test_fewer_rows_when_the_first_stage_keeps_fewer(candidates):
    first = {"selector": "threshold", "params": {"column": "ifd", "op": ">=", "value": 0.75}, "size": 6}
    # r5 (IFD 1.2), r0 and r1 pass the threshold: 3 rows for a budget of 4.
    assert select_compose(candidates, 4, first=first, then={"selector": "longest"}) == ["r5", "r1", "r0"]
    assert select_compose(candidates, 0, first=first, then={"selector": "longest"}) == []
    assert select_compose(candidates.iloc[:0], 3, first=first, then={"selector": "longest"}) == []


def test_a_first_stage_allowed_fewer_rows_than_the_budget_is_an_error(candidates):
    with pytest.raises(ValueError, match=r"first.fraction = 0.1 of 10 rows keeps at most 1 rows, fewer than the "
                                         r"budget 2"):
        select_compose(candidates, 2, first={"selector": "ifd", "fraction": 0.1}, then={"selector": "random"})
    with pytest.raises(ValueError, match="first.size = 2 keeps at most 2 rows, fewer than the budget 3"):
        select_compose(candidates, 3, first=ifd_top(2), then={"selector": "random"})
    assert len(select_compose(candidates.iloc[:2], 3, first=ifd_top(2), then={"selector": "random"})) == 2


OK_FIRST = {"selector": "ifd", "params": {}, "fraction": 0.5}
OK_THEN = {"selector": "kcenter_greedy", "params": {}}


@pytest.mark.parametrize(
    ("first", "then", "match"),
    [
        (None, OK_THEN, "parameter 'first' is required"),
        (OK_FIRST, None, "parameter 'then' is required"),
        ("ifd", OK_THEN, "parameter 'first' must be a mapping"),
        ({"selector": "ifd", "fracton": 0.2}, OK_THEN, r"unknown key\(s\) \['first.fracton'\]"),
        ({"fraction": 0.2}, OK_THEN, "first.selector must name a registered selector"),
        ({"selector": "nope", "fraction": 0.2}, OK_THEN, "first.selector 'nope' is not a registered selector"),
        ({"selector": "compose", "fraction": 0.2}, OK_THEN, "first.selector cannot be 'compose'"),
        (OK_FIRST, {"selector": "compose"}, "then.selector cannot be 'compose'"),
        ({"selector": "ifd", "params": {"treshold": 1}, "fraction": 0.2}, OK_THEN,
         r"\['first.params.treshold'\] are not parameters of selector 'ifd'; it accepts \['max_ifd'\]"),
        ({"selector": "ifd", "params": {"seed": 1}, "fraction": 0.2}, OK_THEN, r"\['first.params.seed'\]"),
        ({"selector": "ifd", "params": [1], "fraction": 0.2}, OK_THEN, "first.params must be a mapping"),
        ({"selector": "ifd"}, OK_THEN, "first needs exactly one of first.fraction"),
        ({"selector": "ifd", "fraction": 0.2, "size": 3}, OK_THEN, "first needs exactly one of first.fraction"),
        ({"selector": "ifd", "fraction": 0}, OK_THEN, r"first.fraction must be a number in \(0, 1\], got 0"),
        ({"selector": "ifd", "fraction": 1.5}, OK_THEN, r"first.fraction must be a number in \(0, 1\]"),
        ({"selector": "ifd", "fraction": True}, OK_THEN, r"first.fraction must be a number in \(0, 1\]"),
        ({"selector": "ifd", "size": 0}, OK_THEN, "first.size must be a positive integer, got 0"),
        ({"selector": "ifd", "size": 2.5}, OK_THEN, "first.size must be a positive integer"),
        (OK_FIRST, {"selector": "kcenter_greedy", "fraction": 0.5},
         r"unknown key\(s\) \['then.fraction'\]; allowed: \['selector', 'params'\]"),
        (OK_FIRST, {"selector": "kcenter_greedy", "params": {"precison": "float16"}},
         r"\['then.params.precison'\] are not parameters of selector 'kcenter_greedy'"),
    ],
)
def test_bad_stages_are_errors_naming_the_key(candidates, first, then, match):
    with pytest.raises(ValueError, match=match):
        select_compose(candidates, 2, first=first, then=then)
    with pytest.raises(ValueError, match=match):  # the same error before any table is loaded
        SELECTORS["compose"].columns_read({"first": first, "then": then})


def test_unknown_parameters_and_bad_budget(candidates):
    with pytest.raises(ValueError, match=r"unknown parameter\(s\) \['frist'\]"):
        select_compose(candidates, 2, first=OK_FIRST, then=OK_THEN, frist=OK_FIRST)
    with pytest.raises(ValueError, match="budget"):
        select_compose(candidates, -1, first=OK_FIRST, then=OK_THEN)


# ------------------------------------------------------------------ the ifd_then_kcenter partition of the asset
def _materialise(tmp_path, monkeypatch, *, ifd_table: bool, **config):
    import dagster as dg

    from instsel_assets.defs.selection import SelectionConfig, selected_subsets

    db = tmp_path / "t.duckdb"
    monkeypatch.setenv("INSTSEL_DUCKDB", str(db))
    con = duckdb.connect(str(db))
    con.execute("create schema if not exists public")
    if ifd_table:
        scores = pd.DataFrame({"id": IDS, "ifd": IFD, "ifd_ppl_ratio": 0.5})  # noqa: F841 - read by duckdb
        con.execute("create table public.ifd_scores as select * from scores")
    con.close()
    pool = pd.DataFrame({"id": IDS, "source": ["alpaca"] * 10})
    features = pd.DataFrame({"id": IDS, "embedding": [np.array(e, dtype=np.float32) for e in EMBEDDINGS],
                             "language": ["en"] * 10})
    lengths = pd.DataFrame({"id": IDS, "output_chars": OUTPUT_CHARS, "total_tokens": OUTPUT_CHARS})
    context = dg.build_asset_context(partition_key="ifd_then_kcenter", instance=dg.DagsterInstance.ephemeral())
    events = list(selected_subsets(context, SelectionConfig(**config), instruction_pool=pool,
                                   metric_features=features, length_indicators=lengths))
    output = next(e for e in events if isinstance(e, dg.Output))
    checks = {e.check_name: e for e in events if isinstance(e, dg.AssetCheckResult)}
    return output, checks


def test_the_partition_loads_the_ifd_table_its_first_stage_reads(tmp_path, monkeypatch):
    first = {"selector": "ifd", "params": {}, "fraction": 0.5}
    output, checks = _materialise(tmp_path, monkeypatch, ifd_table=True, budget_fraction=0.3,
                                  selector_params={"first": first})
    ids = list(output.value["id"])
    assert len(ids) == 3 and set(ids) <= {"r0", "r1", "r2", "r3", "r4"}
    assert output.metadata["columns_read"].value == ["id", "ifd", "embedding"]
    assert checks["size_fits_budget"].passed and checks["ids_in_pool"].passed


def test_the_partition_without_ifd_scores_names_the_asset_to_materialise(tmp_path, monkeypatch):
    with pytest.raises(LookupError, match="materialise ifd_scores first"):
        _materialise(tmp_path, monkeypatch, ifd_table=False, budget_fraction=0.2)


def test_a_column_no_asset_provides_is_an_error_before_loading():
    from instsel_assets.defs.selection import columns_and_assets

    assert columns_and_assets(("id", "ifd", "embedding", "total_tokens"), "m", "compose") == {"ifd_scores": "ifd"}
    with pytest.raises(ValueError, match=r"m: selector 'threshold' reads column\(s\) \['rewrd'\], which no asset"):
        columns_and_assets(("id", "rewrd"), "m", "threshold")
