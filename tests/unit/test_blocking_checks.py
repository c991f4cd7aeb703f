"""A failed blocking asset check stops the run there: the assets downstream of the checked asset, in the same run,
are not materialised (their steps never start), shown from the run's events and event log. Real Dagster, in process, on a few
rows written to a temporary data root.

1. The pool's blocking ``accounting`` check (read = kept + duplicates + quarantined, recomputed from the outputs)
   fails when a row goes missing between the raw tables and the pool (a fault simulated in ``build_pool``'s
   result): the consumer of the pool is skipped; the same data without the fault passes and the consumer runs.
2. (For contrast) a source whose file holds no record fails its raw step before any check, with a clear error; the
   pool is skipped as well.
"""

import json

import dagster as dg
import pandas as pd
import pytest

ROWS = [
    {"instruction": "Name three primary colours.", "input": "", "output": "Red, blue and yellow."},
    {"instruction": "Add 2 and 3.", "input": "", "output": "5"},
    {"instruction": "Name three primary colours.", "input": "", "output": "Red, blue and yellow."},  # a duplicate
    {"instruction": "", "input": "", "output": "no instruction"},  # invalid
]


def write_data_root(root, *, empty_source: bool):
    (root / "pools").mkdir(parents=True)
    (root / "pools" / "good.json").write_text(json.dumps(ROWS), encoding="utf-8")
    (root / "pools" / "other.json").write_text(json.dumps([] if empty_source else ROWS[:2]), encoding="utf-8")
    entries = [f"  - name: {name}\n    path: pools/{name}.json\n    format: alpaca\n    license: test\n"
               f"    origin: test\n    description: test rows\n" for name in ("good", "other")]
    (root / "sources.yaml").write_text("sources:\n" + "".join(entries), encoding="utf-8")
    return root


@pytest.fixture
def project(tmp_path, monkeypatch):
    def make(empty_source: bool):
        monkeypatch.setenv("INSTSEL_DATA_DIR", str(write_data_root(tmp_path / "data", empty_source=empty_source)))
        monkeypatch.setenv("INSTSEL_HOME", str(tmp_path / "home"))
        from instsel_assets.defs.duckdb_io import InstselDuckDBIOManager
        from instsel_assets.defs.pool import pool_assets
        from instsel_assets.defs.raw import raw_assets

        consumed = []

        @dg.asset(name="pool_consumer", ins={"instruction_pool": dg.AssetIn()})
        def pool_consumer(instruction_pool: pd.DataFrame) -> pd.DataFrame:
            consumed.append(len(instruction_pool))
            return instruction_pool[["id"]]

        (tmp_path / "home").mkdir(exist_ok=True)
        assets = [*raw_assets(), *pool_assets(), pool_consumer]
        resources = {"io_manager": InstselDuckDBIOManager(database=str(tmp_path / "home" / "instsel.duckdb"))}
        return assets, resources, consumed

    return make


def events_by_step(result) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for event in result.all_events:
        if event.step_key:
            out.setdefault(event.step_key, []).append(event.event_type_value)
    return out


def skipped(instance, run_id: str, step: str) -> bool:
    """The run's event log says ``step`` was not executed because a step it depends on failed, and it never
    started (no start, output or materialisation event, no step stats; only the run's planned events name it)."""
    logs = instance.all_logs(run_id)
    started = [e for e in logs if e.step_key == step and e.dagster_event is not None
               and e.dagster_event.event_type_value in ("STEP_START", "ASSET_MATERIALIZATION", "STEP_OUTPUT")]
    notice = [e for e in logs if e.step_key == step and e.user_message.startswith(f"Dependencies for step {step}")
              and e.user_message.endswith("Not executing.")]
    stats = {s.step_key for s in instance.get_run_step_stats(run_id)}
    return not started and len(notice) == 1 and step not in stats


def materialised(result) -> set[str]:
    return {e.asset_key.to_user_string() for e in result.all_events
            if e.event_type_value == "ASSET_MATERIALIZATION"}


def test_an_empty_source_stops_the_run_before_the_pool(project):
    """An empty source never reaches its blocking ``has_rows`` check: reading it fails the step with a clear error
    (so the check is a second line of defence), and the pool and its consumer are skipped all the same."""
    assets, resources, consumed = project(empty_source=True)
    instance = dg.DagsterInstance.ephemeral()
    result = dg.materialize(assets, instance=instance, resources=resources, raise_on_error=False)
    assert not result.success
    (failure,) = [e for e in result.all_events if e.event_type_value == "STEP_FAILURE"]
    assert failure.step_key == "raw_datasets__other"
    assert "source 'other': no records in pools/other.json" in failure.event_specific_data.error.cause.message
    assert skipped(instance, result.run_id, "instruction_pool_assets") and skipped(instance, result.run_id, "pool_consumer")
    assert materialised(result) == {"raw_datasets/good"} and consumed == []


def test_a_failed_pool_accounting_check_stops_the_pool_consumer(project, monkeypatch):
    from instsel_assets.ingest import normalize

    real = normalize.build_pool

    def losing_build_pool(raw):  # a row lost between the raw tables and the outputs (build_pool's own counts agree)
        result = real(raw)
        return normalize.PoolResult(result.pool, result.quarantine.iloc[:-1], result.counts)

    monkeypatch.setattr(normalize, "build_pool", losing_build_pool)
    assets, resources, consumed = project(empty_source=False)
    instance = dg.DagsterInstance.ephemeral()
    result = dg.materialize(assets, instance=instance, resources=resources, raise_on_error=False)
    assert not result.success
    evaluations = {e.check_name: e for e in result.get_asset_check_evaluations()
                   if e.asset_key == dg.AssetKey("instruction_pool")}
    assert evaluations["accounting"].passed is False and evaluations["unique_ids"].passed is True
    violations = evaluations["accounting"].metadata["violations"].value
    assert len(violations) == 1 and violations == ["other: read 2 != kept 0 + duplicates 1 + quarantined 0"]
    steps = events_by_step(result)
    assert "STEP_FAILURE" in steps["instruction_pool_assets"]
    assert "pool_consumer" not in steps and skipped(instance, result.run_id, "pool_consumer")
    assert consumed == []
    assert "instruction_pool" in materialised(result) and "pool_consumer" not in materialised(result)

    # the same data without the fault: the check passes and the consumer runs (so the skip above is the check's)
    monkeypatch.setattr(normalize, "build_pool", real)
    again = dg.materialize(assets, instance=instance, resources=resources)
    assert again.success and consumed == [2] and "pool_consumer" in materialised(again)
