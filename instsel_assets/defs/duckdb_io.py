"""The DuckDB IO manager of the tables, with two fixes over dagster-duckdb-pandas' stock handler.

- An empty DataFrame is written as an empty table (the stock handler skips it, so a clean run
  with nothing quarantined left no ``pool_quarantine`` table and downstream loads failed).
- An unpartitioned table is replaced on each materialisation (``CREATE OR REPLACE``) rather than
  emptied and re-filled, so adding a column to an asset does not break on the old table's schema.
Partitioned tables keep the stock behaviour: the partition's rows are deleted, then inserted.
"""

from collections.abc import Sequence

import pandas as pd
from dagster import MetadataValue, OutputContext, TableColumn, TableSchema
from dagster._core.definitions.metadata import TableMetadataSet
from dagster._core.storage.db_io_manager import DbTypeHandler, TableSlice
from dagster_duckdb_pandas import DuckDBPandasIOManager
from dagster_duckdb_pandas.duckdb_pandas_type_handler import DuckDBPandasTypeHandler


def _typed_for_empty(obj: pd.DataFrame) -> pd.DataFrame:
    # DuckDB cannot infer a type from an empty object column; text is the honest default.
    if not obj.empty:
        return obj
    return obj.astype({c: "string" for c in obj.columns if obj[c].dtype == object})


class ReplacingDuckDBPandasTypeHandler(DuckDBPandasTypeHandler):
    def handle_output(self, context: OutputContext, table_slice: TableSlice, obj: pd.DataFrame, connection):
        name = f"{table_slice.schema}.{table_slice.table}"
        obj = _typed_for_empty(obj)  # noqa: F841 - read by DuckDB's replacement scan below
        if not table_slice.partition_dimensions:
            connection.execute(f"create or replace table {name} as select * from obj")
        else:
            connection.execute(f"create table if not exists {name} as select * from obj")
            if not connection.fetchall() and not obj.empty:
                connection.execute(f"insert into {name} select * from obj")
        context.add_output_metadata({
            **(TableMetadataSet(partition_row_count=len(obj), storage_kind="duckdb") if context.has_partition_key
               else TableMetadataSet(row_count=len(obj), storage_kind="duckdb")),
            "dataframe_columns": MetadataValue.table_schema(TableSchema(
                columns=[TableColumn(name=str(name), type=str(dtype)) for name, dtype in obj.dtypes.items()])),
        })


class InstselDuckDBIOManager(DuckDBPandasIOManager):
    """DuckDB IO manager for pandas tables (see the module docstring for how it differs)."""

    @staticmethod
    def type_handlers() -> Sequence[DbTypeHandler]:
        return [ReplacingDuckDBPandasTypeHandler()]
