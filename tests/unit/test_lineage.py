"""defs/lineage.py: the upstream a partitioned materialisation read, even when another partition of the
upstream asset was materialised after it (Dagster's input pointer then names that newer partition)."""

import dagster as dg

from instsel_assets.defs.lineage import describe, latest_record

parts = dg.StaticPartitionsDefinition(["a", "b"])


@dg.asset(partitions_def=parts)
def upstream_table(context: dg.AssetExecutionContext) -> str:
    return context.partition_key


@dg.asset(partitions_def=parts)
def downstream_table(context: dg.AssetExecutionContext, upstream_table: str) -> str:
    return upstream_table * 2


def test_describe_names_the_same_partition_of_the_upstream(tmp_path):
    instance = dg.DagsterInstance.ephemeral()
    io = dg.FilesystemIOManager(base_dir=str(tmp_path))
    assets = [upstream_table, downstream_table]
    for asset, partition in ((upstream_table, "a"), (upstream_table, "b"), (downstream_table, "a")):
        result = dg.materialize(assets, partition_key=partition, instance=instance, resources={"io_manager": io},
                                selection=[asset])
        assert result.success
    record = latest_record(instance, "downstream_table", "a")
    pointer = int(record.asset_materialization.tags["dagster/input_event_pointer/upstream_table"])
    newest_b = latest_record(instance, "upstream_table", "b")
    node = describe(instance, record)
    (up,) = node["upstream"]
    assert up["asset"] == "upstream_table" and up["partition"] == "a"
    assert up["storage_id"] == latest_record(instance, "upstream_table", "a").storage_id
    # what Dagster itself recorded, and that the correction is flagged when it was needed
    assert pointer == newest_b.storage_id  # Dagster points at the newest partition materialised ...
    assert up["pointer_corrected"] is True  # ... and describe() corrects it
