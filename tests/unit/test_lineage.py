"""defs/lineage.py: the upstream a partitioned materialisation read, even when another partition of the
upstream asset was materialised after it (Dagster's input pointer then names that newer partition)."""

import dagster as dg
import pytest

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


# ---------------------------------------------------------------------------------- an older checkpoint
# A small graph with the chain's asset names and shapes (a checkpoint per selection partition, reports reading the
# newest checkpoint of every partition): lineage must name the reports that read the chosen checkpoint.
selection = dg.StaticPartitionsDefinition(["ifd", "random"])


@dg.asset(name="finetuned_checkpoints", partitions_def=selection)
def checkpoint_stub(context: dg.AssetExecutionContext) -> str:
    context.add_output_metadata({"subset_hash": f"hash-{context.run_id[:6]}"})
    return context.partition_key


def _reads(context, with_metadata: bool) -> None:
    from instsel_assets.defs.lineage import latest_record

    if with_metadata:
        read = {m: {"run_id": r.run_id, "storage_id": r.storage_id}
                for m in ("ifd", "random") if (r := latest_record(context.instance, "finetuned_checkpoints", m))}
        context.add_output_metadata({"checkpoints_read": dg.MetadataValue.json(read)})


class ReportConfig(dg.Config):
    with_metadata: bool = True


@dg.asset(name="evaluation_reports", deps=["finetuned_checkpoints"])
def report_stub(context: dg.AssetExecutionContext, config: ReportConfig) -> int:
    _reads(context, config.with_metadata)
    return 1


@dg.asset(name="method_comparison")
def comparison_stub(evaluation_reports: int) -> int:
    return evaluation_reports


@pytest.mark.parametrize("with_metadata", [True, False], ids=["checkpoints_read", "event-order fallback"])
def test_lineage_of_an_older_checkpoint_names_its_own_reports(tmp_path, with_metadata):
    from instsel_assets.cli import lineage_report

    instance = dg.DagsterInstance.ephemeral()
    assets = [checkpoint_stub, report_stub, comparison_stub]
    resources = {"io_manager": dg.FilesystemIOManager(base_dir=str(tmp_path))}
    config = dg.RunConfig(ops={"evaluation_reports": ReportConfig(with_metadata=with_metadata)})

    def run(selection_, partition=None):
        result = dg.materialize(assets, instance=instance, resources=resources, selection=selection_,
                                partition_key=partition, run_config=config if report_stub in selection_ else None)
        assert result.success
        return result.run_id

    first_ifd = run([checkpoint_stub], "ifd")
    run([checkpoint_stub], "random")
    first_report = run([report_stub, comparison_stub])
    second_ifd = run([checkpoint_stub], "ifd")
    second_random = run([checkpoint_stub], "random")  # a newer checkpoint of another partition changes nothing
    second_report = run([report_stub])

    newest = lineage_report(instance, "ifd")
    assert newest["checkpoint"]["run_id"] == second_ifd
    assert newest["evaluation_report"]["run_id"] == second_report
    assert newest["method_comparison"] is None  # no comparison read the second report
    older = lineage_report(instance, "ifd", materialization=1)
    assert older["checkpoint"]["run_id"] == first_ifd
    assert older["subset_hash"] == f"hash-{first_ifd[:6]}"
    assert older["evaluation_report"]["run_id"] == first_report
    assert older["method_comparison"]["run_id"] == first_report
    assert lineage_report(instance, "ifd", run_id=first_ifd[:8])["checkpoint"]["run_id"] == first_ifd
    assert [m["run_id"] for m in older["materializations"]] == [second_ifd, first_ifd]
    assert lineage_report(instance, "random")["checkpoint"]["run_id"] == second_random
    with pytest.raises(LookupError, match="has 2 materialisation"):
        lineage_report(instance, "ifd", materialization=2)
    with pytest.raises(LookupError, match="no materialisation of finetuned_checkpoints\\[ifd\\] in a run"):
        lineage_report(instance, "ifd", run_id="nope")
