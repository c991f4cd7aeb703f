"""Incremental pool shards, in-process against a temporary Dagster instance and the packaged models.

Real landing files (rows of the bundled Stanford Alpaca sample) go into a landing folder; the sensor
``pool_shard_sensor`` is evaluated as the daemon would (``build_sensor_context`` with the previous cursor), its
requests applied (dynamic partitions added, ``pool_shard`` runs executed); the eager automation conditions of the
shards group are evaluated with ``dg.evaluate_automation_conditions`` carrying the cursor from tick to tick, and what
they request is materialised. Asserted: a new file becomes a partition and only it is ingested; per-shard features
and scores are computed once per shard (a re-materialised unchanged shard comes from the result cache: 0 rows
computed, same data versions); the subset reads every shard and counts a row repeated across shards once; a
changed file is ingested again; a rejected file name is reported, never read.
"""

from __future__ import annotations

import json
from pathlib import Path

import dagster as dg
import pytest

from instsel_assets import settings

pytestmark = pytest.mark.integration

SHARD_ASSETS = ("shard_metric_features", "shard_superfiltering_scores")


def alpaca_rows() -> list[dict]:
    rows = json.loads((settings.PROJECT_ROOT / "data" / "pools" / "alpaca" / "alpaca_sample.json").read_text())
    return [r for r in rows if len(r["output"]) < 300]  # short answers keep the LM passes quick on CPU


@pytest.fixture()
def shard_env(tmp_path, monkeypatch):
    landing = tmp_path / "landing"
    landing.mkdir()
    monkeypatch.setenv("INSTSEL_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("INSTSEL_LANDING_DIR", str(landing))
    monkeypatch.delenv("INSTSEL_LANDING_S3_PREFIX", raising=False)
    monkeypatch.setenv("INSTSEL_MODEL_CACHE", str(settings.PROJECT_ROOT / ".instsel" / "models"))
    return landing


class Harness:
    """The daemon's part, by hand: sensor ticks, automation ticks, runs."""

    def __init__(self, instance: dg.DagsterInstance):
        from instsel_assets.defs import build_definitions

        self.instance = instance
        self.defs = build_definitions()
        self.job = self.defs.resolve_implicit_global_asset_job_def()
        self.sensor_cursor: str | None = None
        self.automation_cursor = dg.evaluate_automation_conditions(defs=self.defs, instance=instance).cursor

    def sensor_tick(self):
        from instsel_assets.defs.shards import pool_shard_sensor

        context = dg.build_sensor_context(instance=self.instance, cursor=self.sensor_cursor, definitions=self.defs)
        result = pool_shard_sensor(context)
        if isinstance(result, dg.SkipReason):
            return result
        for request in result.dynamic_partitions_requests:
            self.instance.add_dynamic_partitions(request.partitions_def_name, list(request.partition_keys))
        self.sensor_cursor = result.cursor
        for run in result.run_requests:
            self.materialize(["pool_shard", "pool_shard_quarantine"], run.partition_key)
        return result

    def automation_tick(self) -> dict[str, set]:
        result = dg.evaluate_automation_conditions(defs=self.defs, instance=self.instance,
                                                   cursor=self.automation_cursor)
        self.automation_cursor = result.cursor
        requested = {}
        for name in (*SHARD_ASSETS, "sharded_superfiltering_subset"):
            parts = result.get_requested_partitions(dg.AssetKey(name))
            if parts:
                requested[name] = set(parts)
        return requested

    def materialize(self, assets: list[str], partition: str | None = None) -> dg.ExecuteInProcessResult:
        result = self.job.execute_in_process(instance=self.instance, partition_key=partition,
                                             asset_selection=[dg.AssetKey(a) for a in assets])
        assert result.success
        failed = [e.asset_check_evaluation_data.check_name for e in result.all_events
                  if e.event_type_value == "ASSET_CHECK_EVALUATION" and not e.asset_check_evaluation_data.passed]
        assert failed == [], f"checks failed: {failed}"
        return result

    def run_requested(self, requested: dict[str, set]) -> None:
        partitions = sorted({p for name in SHARD_ASSETS for p in requested.get(name, set())})
        for partition in partitions:
            self.materialize([name for name in SHARD_ASSETS if partition in requested.get(name, set())], partition)
        if "sharded_superfiltering_subset" in requested:
            self.materialize(["sharded_superfiltering_subset"])

    def latest(self, asset: str, partition: str | None = None) -> dict:
        records = self.instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=dg.AssetKey(asset), asset_partitions=[partition] if partition else None),
            limit=1).records
        mat = records[0].asset_materialization
        meta = {k: getattr(v, "value", v) for k, v in mat.metadata.items()}
        meta["data_version"] = (mat.tags or {}).get("dagster/data_version")
        meta["storage_id"] = records[0].storage_id
        return meta


def test_landing_shards_sensor_automation_and_cache(shard_env):
    landing = shard_env
    rows = alpaca_rows()
    # a.jsonl: 5 rows and an unparsable line (quarantined); b.json: 5 rows, one of them also in a.jsonl.
    (landing / "a.jsonl").write_text("\n".join(json.dumps(r) for r in rows[:5]) + "\n{not json\n", encoding="utf-8")
    (landing / "b.json").write_text(json.dumps(rows[4:9]), encoding="utf-8")
    (landing / "bad name!.jsonl").write_text(json.dumps(rows[0]) + "\n", encoding="utf-8")  # rejected name
    (landing / ".partial.jsonl").write_text("{", encoding="utf-8")  # an upload in progress: ignored

    with dg.instance_for_test() as instance:
        h = Harness(instance)
        first = h.sensor_tick()
        assert sorted(r.partition_key for r in first.run_requests) == ["a.jsonl", "b.json"]
        assert instance.get_dynamic_partitions("pool_shards") == ["a.jsonl", "b.json"]
        a = h.latest("pool_shard", "a.jsonl")
        assert (a["read"], a["kept"], a["duplicates"], a["quarantined"]) == (6, 5, 0, 1)
        assert isinstance(h.sensor_tick(), dg.SkipReason)  # nothing new: nothing requested

        # Declarative automation: both shards featurised and scored, then the subset over both.
        requested = h.automation_tick()
        assert requested == {name: {"a.jsonl", "b.json"} for name in SHARD_ASSETS}
        h.run_requested(requested)
        for name in SHARD_ASSETS:
            for shard, n in (("a.jsonl", 5), ("b.json", 5)):
                meta = h.latest(name, shard)
                assert (meta["result_cache_hit"], meta["rows_computed"]) == (False, n), (name, shard, meta)
        requested = h.automation_tick()
        assert requested == {"sharded_superfiltering_subset": {None}} or set(requested) == {
            "sharded_superfiltering_subset"}
        h.run_requested(requested)
        subset = h.latest("sharded_superfiltering_subset")
        assert (subset["shards"], subset["rows_read"], subset["distinct_rows"],
                subset["rows_repeated_across_shards"]) == (2, 10, 9, 1)
        assert subset["budget"] == 1 and subset["dagster/row_count"] <= 1
        assert h.automation_tick() == {}  # steady state: nothing to do

        # A new file: one new partition, and only it is ingested, featurised and scored.
        (landing / "c.jsonl").write_text("\n".join(json.dumps(r) for r in rows[9:13]) + "\n", encoding="utf-8")
        tick = h.sensor_tick()
        assert [r.partition_key for r in tick.run_requests] == ["c.jsonl"]
        requested = h.automation_tick()
        assert requested == {name: {"c.jsonl"} for name in SHARD_ASSETS}
        h.run_requested(requested)
        assert h.latest("shard_superfiltering_scores", "c.jsonl")["rows_computed"] == 4
        h.run_requested(h.automation_tick())
        subset = h.latest("sharded_superfiltering_subset")
        assert (subset["shards"], subset["rows_read"], subset["distinct_rows"]) == (3, 14, 13)
        assert json.loads(json.dumps(subset["rows_per_shard"])) == {"a.jsonl": 5, "b.json": 5, "c.jsonl": 4}

        # Re-materialising an unchanged shard costs nothing: same data version, per-shard results from the cache.
        before = {name: h.latest(name, "a.jsonl") for name in ("pool_shard", *SHARD_ASSETS)}
        h.materialize(["pool_shard", "pool_shard_quarantine"], "a.jsonl")
        assert h.latest("pool_shard", "a.jsonl")["data_version"] == before["pool_shard"]["data_version"]
        requested = h.automation_tick()
        assert requested == {name: {"a.jsonl"} for name in SHARD_ASSETS}
        h.run_requested(requested)
        for name in SHARD_ASSETS:
            after = h.latest(name, "a.jsonl")
            assert after["storage_id"] != before[name]["storage_id"]
            assert (after["result_cache_hit"], after["rows_computed"]) == (True, 0), name
            assert after["data_version"] == before[name]["data_version"], name

        # A changed file is ingested again (and only it).
        (landing / "b.json").write_text(json.dumps(rows[4:10]), encoding="utf-8")
        tick = h.sensor_tick()
        assert [r.partition_key for r in tick.run_requests] == ["b.json"]
        assert h.latest("pool_shard", "b.json")["kept"] == 6
        requested = h.automation_tick()
        assert requested == {name: {"b.json"} for name in SHARD_ASSETS} | {
            "sharded_superfiltering_subset": requested.get("sharded_superfiltering_subset", set())}
        h.run_requested(requested)
        assert h.latest("shard_superfiltering_scores", "b.json")["rows_computed"] == 6
        assert instance.get_dynamic_partitions("pool_shards") == ["a.jsonl", "b.json", "c.jsonl"]
