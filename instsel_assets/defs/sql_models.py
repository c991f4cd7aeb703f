"""One asset per ``dbt_like_sql/*.sql`` file; its inputs are the tables its SQL reads."""

import dagster as dg
import pandas as pd

from instsel_assets import settings
from instsel_assets.quality.expectations import SUITES
from instsel_assets.sql.models import SqlModel, discover_sql_models, run_sql_model


def build_sql_asset(model: SqlModel) -> dg.AssetsDefinition:
    checks = [dg.AssetCheckSpec("has_rows", asset=model.name, description="The model returns rows.")]
    if model.name in SUITES:
        checks.append(dg.AssetCheckSpec("great_expectations_suite", asset=model.name,
                                        description=f"Great Expectations suite '{model.name}'."))

    @dg.asset(
        name=model.name,
        group_name="sql_models",
        code_version=model.code_version,
        kinds={"duckdb", "sql"},
        description=f"{model.description}\n\nSQL model `{model.path.name}`:\n```sql\n{model.sql}\n```",
        ins={table: dg.AssetIn(key=table) for table in model.upstream},
        check_specs=checks,
        metadata={"sql_file": str(model.path.relative_to(settings.PROJECT_ROOT)
                                  if model.path.is_relative_to(settings.PROJECT_ROOT) else model.path)},
    )
    def _sql(context: dg.AssetExecutionContext, **tables: pd.DataFrame):
        from instsel_assets.defs._common import suite_check

        result = run_sql_model(model, tables)
        context.log.info(f"{model.name}: {len(result)} rows from {', '.join(model.upstream)}")
        preview = result.head(20).drop(columns=[c for c in result.columns if result[c].dtype == object
                                                and len(result) and not isinstance(result[c].iloc[0], str)])
        yield dg.Output(result, metadata={"dagster/row_count": len(result),
                                          "preview": dg.MetadataValue.md(preview.to_markdown(index=False))})
        yield dg.AssetCheckResult(check_name="has_rows", passed=len(result) > 0, metadata={"rows": len(result)})
        if model.name in SUITES:
            yield suite_check(result, model.name)

    return _sql


def sql_assets() -> list[dg.AssetsDefinition]:
    return [build_sql_asset(m) for m in discover_sql_models(settings.sql_models_dir())]
