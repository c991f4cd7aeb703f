"""instruction_pool and pool_quarantine: every raw row normalised, deduplicated or quarantined."""

import dagster as dg
import pandas as pd

from instsel_assets import settings
from instsel_assets.defs._common import code_version_of, suite_check
from instsel_assets.defs.raw import raw_asset_key
from instsel_assets.ingest.sources import load_sources

CODE_VERSION = code_version_of("instsel_assets.ingest.normalize")


def pool_assets() -> list[dg.AssetsDefinition]:
    names = [spec.name for spec in load_sources(settings.data_root())]

    @dg.multi_asset(
        name="instruction_pool_assets",
        outs={
            "instruction_pool": dg.AssetOut(
                group_name="pool", code_version=CODE_VERSION, kinds={"duckdb", "pandas"},
                description="Every usable row in the shared schema (docs/METHODS.md): content-hash id, "
                            "conversations, flat instruction/input/output; exact duplicates removed."),
            "pool_quarantine": dg.AssetOut(
                group_name="pool", code_version=CODE_VERSION, kinds={"duckdb", "pandas"},
                description="Rows not in the pool, each with its reason: unusable rows "
                            "(kind='invalid') and exact duplicates (kind='duplicate')."),
        },
        ins={f"raw_{name}": dg.AssetIn(key=raw_asset_key(name)) for name in names},
        check_specs=[
            dg.AssetCheckSpec("accounting", asset="instruction_pool", blocking=True,
                              description="read = kept + duplicates + quarantined, for every source."),
            dg.AssetCheckSpec("unique_ids", asset="instruction_pool", blocking=True,
                              description="Content ids are unique."),
            dg.AssetCheckSpec("great_expectations_suite", asset="instruction_pool",
                              description="Great Expectations suite 'instruction_pool'."),
            dg.AssetCheckSpec("reasons_present", asset="pool_quarantine",
                              description="Every quarantined row carries a reason."),
            dg.AssetCheckSpec("great_expectations_suite", asset="pool_quarantine",
                              description="Great Expectations suite 'pool_quarantine'."),
        ],
    )
    def instruction_pool_assets(context: dg.AssetExecutionContext, **raw_frames: pd.DataFrame):
        from instsel_assets.ingest.normalize import build_pool

        frames = [f for f in raw_frames.values() if len(f)]
        raw = pd.concat(frames, ignore_index=True) if frames else next(iter(raw_frames.values()))
        result = build_pool(raw)
        pool, quarantine, counts = result.pool, result.quarantine, result.counts
        for source, c in counts.items():
            context.log.info(f"{source}: read {c['read']} = kept {c['kept']} + duplicates {c['duplicates']} "
                             f"+ quarantined {c['quarantined']}")
        table = pd.DataFrame.from_dict(counts, orient="index").rename_axis("source").reset_index()
        yield dg.Output(pool, output_name="instruction_pool", metadata={
            "dagster/row_count": len(pool),
            "counts_per_source": dg.MetadataValue.md(table.to_markdown(index=False)),
            "read": int(table["read"].sum()), "kept": int(table["kept"].sum()),
            "duplicates": int(table["duplicates"].sum()), "quarantined": int(table["quarantined"].sum()),
        })
        reasons = quarantine["reason"].str.split(":").str[0].value_counts().head(20).to_dict() if len(quarantine) else {}
        yield dg.Output(quarantine, output_name="pool_quarantine", metadata={
            "dagster/row_count": len(quarantine), "top_reasons": dg.MetadataValue.json(reasons)})

        # The accounting is recomputed from the outputs, independently of build_pool's own counts.
        bad = []
        for source in raw["source"].unique() if len(raw) else []:
            read = int((raw["source"] == source).sum())
            kept = int((pool["source"] == source).sum())
            q = quarantine[quarantine["source"] == source]
            dup, inv = int((q["kind"] == "duplicate").sum()), int((q["kind"] == "invalid").sum())
            if read != kept + dup + inv:
                bad.append(f"{source}: read {read} != kept {kept} + duplicates {dup} + quarantined {inv}")
        yield dg.AssetCheckResult(asset_key="instruction_pool", check_name="accounting", passed=not bad,
                                  metadata={"violations": dg.MetadataValue.json(bad), "rows_read": len(raw)})
        yield dg.AssetCheckResult(asset_key="instruction_pool", check_name="unique_ids",
                                  passed=bool(pool["id"].is_unique),
                                  metadata={"duplicate_ids": int(pool["id"].duplicated().sum())})
        yield suite_check(pool, "instruction_pool", asset_key="instruction_pool")
        missing_reason = int((quarantine["reason"].fillna("").str.strip() == "").sum()) if len(quarantine) else 0
        yield dg.AssetCheckResult(asset_key="pool_quarantine", check_name="reasons_present",
                                  passed=missing_reason == 0, metadata={"rows_without_reason": missing_reason})
        yield suite_check(quarantine, "pool_quarantine", asset_key="pool_quarantine")

    return [instruction_pool_assets]
