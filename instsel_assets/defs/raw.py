"""raw_datasets: one asset per pool source declared in ``data/sources.yaml``.

Each asset holds the source's records as read (one row per input record, the record kept as
JSON text), so a person can see in the UI exactly what came in before any normalisation.
"""

import hashlib

import dagster as dg
import pandas as pd

from instsel_assets import settings
from instsel_assets.defs._common import code_version_of, suite_check
from instsel_assets.ingest.sources import SourceSpec, load_sources

RAW_PREFIX = "raw_datasets"
CODE_VERSION = code_version_of("instsel_assets.ingest.formats", "instsel_assets.ingest.sources")


def raw_asset_key(name: str) -> dg.AssetKey:
    return dg.AssetKey([RAW_PREFIX, name])


def build_raw_asset(spec: SourceSpec) -> dg.AssetsDefinition:
    key = raw_asset_key(spec.name)

    @dg.asset(
        key=key,
        group_name="raw",
        code_version=CODE_VERSION,
        description=f"{spec.description}\n\nPath: `{spec.path}` · format: `{spec.format}` · licence: {spec.license}"
                    f"\n\nOrigin: {spec.origin}",
        kinds={"duckdb", "pandas"},
        check_specs=[dg.AssetCheckSpec("has_rows", asset=key, blocking=True,
                                       description="The source yields at least one record."),
                     dg.AssetCheckSpec("great_expectations_suite", asset=key,
                                       description="Great Expectations suite 'raw_datasets'.")],
        metadata={"source_path": spec.path, "format": spec.format, "license": spec.license},
    )
    def _raw(context: dg.AssetExecutionContext):
        from instsel_assets.ingest.formats import read_source

        frame: pd.DataFrame = read_source(spec, settings.data_root())
        parse_errors = int((frame["parse_error"] != "").sum()) if len(frame) else 0
        files = sorted(frame["source_file"].unique()) if len(frame) else []
        context.log.info(f"{spec.name}: read {len(frame)} records from {len(files)} file(s), {parse_errors} unparsable")
        # The data version is the content of what was read, so an unchanged source keeps its version
        # (and downstream assets are not marked stale) while an edited one changes it.
        content = hashlib.sha256()
        for file, raw in zip(frame["source_file"], frame["raw"]):
            content.update(f"{file}\0{raw}\0".encode("utf-8"))
        yield dg.Output(frame, data_version=dg.DataVersion(content.hexdigest()[:32]), metadata={
            "dagster/row_count": len(frame),
            "files": dg.MetadataValue.json(files),
            "unparsable_records": parse_errors,
            "formats": dg.MetadataValue.json(frame["format"].value_counts().to_dict() if len(frame) else {}),
        })
        yield dg.AssetCheckResult(check_name="has_rows", passed=len(frame) > 0,
                                  metadata={"rows": len(frame)})
        yield suite_check(frame, "raw_datasets", asset_key=key)

    return _raw


def raw_assets() -> list[dg.AssetsDefinition]:
    return [build_raw_asset(spec) for spec in load_sources(settings.data_root())]
