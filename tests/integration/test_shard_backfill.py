"""Shards through the daemon, a model change marking them stale, and a backfill that brings them back.

``dagster dev`` (webserver + daemon) on loopback against ``workspace.yaml``, with a landing folder holding two
shards of real Alpaca rows and both sensors running (intervals shortened to 5 s by environment variables):

1. The daemon alone does the work: ``pool_shard_sensor`` adds the two ``pool_shards`` partitions and ingests them;
   ``shards_automation_sensor`` (eager conditions) featurises and scores both shards, then materialises
   ``sharded_superfiltering_subset``. The test only waits, then asks GraphQL for the stale status the UI shows:
   FRESH everywhere.
2. ``dagster dev`` is restarted with ``INSTSEL_FILTER_MODEL`` naming another model directory (the converted weights
   of the packaged SmolLM2 as a local directory: another model id, so another code version). GraphQL now reports
   ``shard_superfiltering_scores`` STALE in both partitions with a CODE cause ("has a new code version"); the
   features (another model) stay FRESH, and so does the subset: Dagster marks a downstream asset stale when an
   input's data version changes, which happens when the scores are recomputed. Nothing reruns by itself (eager
   automation does not react to code versions).
3. ``launchPartitionBackfill`` over all ``pool_shards`` partitions of the scores and the subset; the test waits for
   the backfill to complete: every asset is FRESH again and the scores record the new model, every row recomputed.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

from instsel_assets import settings
from test_pool_shards import alpaca_rows
from ui_server import DagsterDev, DagsterDevError, write_instance_config

pytestmark = pytest.mark.integration

SHARDS = ["a.jsonl", "b.json"]
WAIT = 420  # seconds for the daemon to ingest, featurise, score and select (measured: ~1-2 min)

STALE = """
query Stale {
  scores_a: assetNodes(assetKeys: [{path: ["shard_superfiltering_scores"]}]) {
    staleStatus(partition: "a.jsonl") staleCauses(partition: "a.jsonl") { category reason key { path } } }
  scores_b: assetNodes(assetKeys: [{path: ["shard_superfiltering_scores"]}]) {
    staleStatus(partition: "b.json") staleCauses(partition: "b.json") { category reason key { path } } }
  features_a: assetNodes(assetKeys: [{path: ["shard_metric_features"]}]) { staleStatus(partition: "a.jsonl") }
  subset: assetNodes(assetKeys: [{path: ["sharded_superfiltering_subset"]}]) {
    staleStatus staleCauses { category reason key { path } } }
}
"""

LATEST = """
query Latest($path: [String!]!, $partitions: [String!]) {
  assetOrError(assetKey: {path: $path}) {
    __typename
    ... on Asset {
      assetMaterializations(partitions: $partitions, limit: 1) {
        runId partition timestamp
        metadataEntries { label ... on TextMetadataEntry { text } ... on IntMetadataEntry { intValue }
                          ... on BoolMetadataEntry { boolValue } }
      }
    }
  }
}
"""

LAUNCH_BACKFILL = """
mutation Backfill($params: LaunchBackfillParams!) {
  launchPartitionBackfill(backfillParams: $params) {
    __typename
    ... on LaunchBackfillSuccess { backfillId }
    ... on PythonError { message stack }
    ... on Error { message }
  }
}
"""

BACKFILL = """
query Backfill($id: String!) {
  partitionBackfillOrError(backfillId: $id) {
    __typename
    ... on PartitionBackfill { id status numPartitions runs(limit: 20) { runId status } }
    ... on PythonError { message }
  }
}
"""


def latest(dev: DagsterDev, asset: str, partition: str | None = None) -> dict | None:
    data = dev.graphql(LATEST, {"path": [asset], "partitions": [partition] if partition else None})["assetOrError"]
    if data["__typename"] != "Asset" or not data["assetMaterializations"]:
        return None
    mat = data["assetMaterializations"][0]
    meta = {}
    for entry in mat["metadataEntries"]:
        for field in ("text", "intValue", "boolValue"):
            if field in entry:
                meta[entry["label"]] = entry[field]
    return {"run_id": mat["runId"], "timestamp": mat["timestamp"], "metadata": meta}


def stale(dev: DagsterDev) -> dict:
    data = dev.graphql(STALE)
    return {name: nodes[0] for name, nodes in data.items()}


def wait_for(what: str, predicate, dev: DagsterDev, timeout: float = WAIT):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(2)
    raise DagsterDevError(f"timed out after {timeout:.0f} s waiting for {what}\n{dev.log_tail()}")


def local_model_dir() -> Path:
    from instsel_assets.models.loading import PACKAGED_SMOLLM2, load_causal_lm, packaged_cache_dir

    directory = packaged_cache_dir(PACKAGED_SMOLLM2)
    if not (directory / "config.json").exists():
        load_causal_lm(PACKAGED_SMOLLM2)  # converts the packaged GGUF into that directory once
    return directory


def test_model_change_marks_shards_stale_and_a_backfill_refreshes_them(tmp_path):
    landing = tmp_path / "landing"
    landing.mkdir()
    rows = alpaca_rows()
    (landing / "a.jsonl").write_text("\n".join(json.dumps(r) for r in rows[:5]) + "\n", encoding="utf-8")
    (landing / "b.json").write_text(json.dumps(rows[5:9]), encoding="utf-8")
    home = tmp_path / "dagster_home"
    write_instance_config(home)
    os.environ.setdefault("INSTSEL_MODEL_CACHE", str(settings.PROJECT_ROOT / ".instsel" / "models"))
    model_dir = local_model_dir()
    env = {**os.environ, "DAGSTER_HOME": str(home), "INSTSEL_HOME": str(tmp_path / "home"),
           "INSTSEL_LANDING_DIR": str(landing), "INSTSEL_LANDING_SENSOR_INTERVAL": "5",
           "INSTSEL_AUTOMATION_INTERVAL": "5", "INSTSEL_MODEL_CACHE": os.environ["INSTSEL_MODEL_CACHE"]}
    for var in ("INSTSEL_FILTER_MODEL", "INSTSEL_LANGUAGE_MODEL", "INSTSEL_LANDING_S3_PREFIX", "INSTSEL_STORAGE"):
        env.pop(var, None)

    # 1. The daemon ingests, featurises, scores and selects with nobody launching anything.
    t0 = time.monotonic()
    with DagsterDev(tmp_path / "dagster_dev_1.log", env=env) as dev:
        print(f"\ndagster dev start-up: {dev.startup_seconds:.1f} s")
        subset = wait_for("sharded_superfiltering_subset from the sensors",
                          lambda: latest(dev, "sharded_superfiltering_subset"), dev)
        # The subset may have been computed before the second shard's scores landed; wait for one over both.
        subset = wait_for("a subset over both shards", lambda: (
            s := latest(dev, "sharded_superfiltering_subset")) and s["metadata"].get("shards") == 2
            and s["metadata"].get("rows_read") == 9 and s, dev)
        print(f"daemon-driven ingest + features + scores + subset: {time.monotonic() - t0:.0f} s")
        first_scores = {p: latest(dev, "shard_superfiltering_scores", p) for p in SHARDS}
        assert all(s and s["metadata"]["rows_computed"] > 0 for s in first_scores.values()), first_scores
        status = stale(dev)
        assert {k: v["staleStatus"] for k, v in status.items()} == {
            "scores_a": "FRESH", "scores_b": "FRESH", "features_a": "FRESH", "subset": "FRESH"}, status

    # 2. Another filter model: a new code version of the scores, shown as stale with its cause.
    env["INSTSEL_FILTER_MODEL"] = str(model_dir)
    with DagsterDev(tmp_path / "dagster_dev_2.log", env=env) as dev:
        print(f"dagster dev restart: {dev.startup_seconds:.1f} s")
        status = stale(dev)
        for name in ("scores_a", "scores_b"):
            assert status[name]["staleStatus"] == "STALE", status
            assert any(c["category"] == "CODE" for c in status[name]["staleCauses"]), status[name]
        assert status["features_a"]["staleStatus"] == "FRESH", status  # features do not use the filter model
        # Not stale yet: its inputs' data versions change only when the scores are recomputed (the backfill).
        assert status["subset"]["staleStatus"] == "FRESH", status
        time.sleep(12)  # two automation ticks: nothing is launched for a code-version change
        assert latest(dev, "shard_superfiltering_scores", "a.jsonl")["run_id"] == first_scores["a.jsonl"]["run_id"]

        # 3. A backfill over every shard brings the scores and the subset back.
        t1 = time.monotonic()
        launched = dev.graphql(LAUNCH_BACKFILL, {"params": {
            "partitionNames": SHARDS,
            "assetSelection": [{"path": ["shard_superfiltering_scores"]}, {"path": ["sharded_superfiltering_subset"]}],
            "title": "rescore shards with the new filter model"}})["launchPartitionBackfill"]
        assert launched["__typename"] == "LaunchBackfillSuccess", launched
        backfill_id = launched["backfillId"]

        def done():
            b = dev.graphql(BACKFILL, {"id": backfill_id})["partitionBackfillOrError"]
            return b if b["status"] not in ("REQUESTED", "CANCELING", "FAILING") else None

        backfill = wait_for(f"backfill {backfill_id}", done, dev)
        print(f"backfill {backfill_id}: {backfill['status']} in {time.monotonic() - t1:.0f} s, "
              f"{len(backfill['runs'])} run(s)")
        assert backfill["status"] in ("COMPLETED", "COMPLETED_SUCCESS"), backfill
        assert all(r["status"] == "SUCCESS" for r in backfill["runs"]), backfill["runs"]
        status = stale(dev)
        assert {k: v["staleStatus"] for k, v in status.items()} == {
            "scores_a": "FRESH", "scores_b": "FRESH", "features_a": "FRESH", "subset": "FRESH"}, status
        for partition, n in (("a.jsonl", 5), ("b.json", 4)):
            after = latest(dev, "shard_superfiltering_scores", partition)
            assert after["run_id"] != first_scores[partition]["run_id"]
            assert after["metadata"]["model"] == str(model_dir)
            assert (after["metadata"]["result_cache_hit"], after["metadata"]["rows_computed"]) == (False, n)
        assert latest(dev, "sharded_superfiltering_subset")["run_id"] != subset["run_id"]
