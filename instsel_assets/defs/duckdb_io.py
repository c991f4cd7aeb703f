"""The DuckDB IO manager of the tables, with fixes over dagster-duckdb-pandas' stock handler.

- An empty DataFrame is written as an empty table (the stock handler skips it, so a clean run
  with nothing quarantined left no ``pool_quarantine`` table and downstream loads failed).
- An unpartitioned table is replaced on each materialisation (``CREATE OR REPLACE``) rather than
  emptied and re-filled, so adding a column to an asset does not break on the old table's schema.
  Partitioned tables keep the stock behaviour: the partition's rows are deleted, then inserted.
- Every write is one transaction. The stock IO manager emptied the table (or the partition) in a
  statement of its own *before* writing the new rows, so a write that then failed (a full disk, an
  unwritable storage root) left the previous materialisation's table empty. Here the delete and the
  write commit together or not at all: a failed write leaves the previous table as it was.
- A failed write is one clear line: the table, the DuckDB file and the cause with its errno name
  (``ENOSPC``, ``EACCES``, ``EROFS``), e.g. ``cannot write table public.instruction_pool to
  /data/instsel.duckdb: No space left on device (ENOSPC); the previous materialisation is unchanged``.
  Only lock contention (another process holding the file) is retried when connecting, not a cause
  that waiting cannot fix.
"""

from __future__ import annotations

import errno
import os
import re
from collections.abc import Sequence
from contextlib import contextmanager

import duckdb
import pandas as pd
from dagster import MetadataValue, OutputContext, TableColumn, TableSchema
from dagster._core.definitions.metadata import TableMetadataSet
from dagster._core.storage.db_io_manager import DbIOManager, DbTypeHandler, TablePartitionDimension, TableSlice
from dagster._utils.backoff import backoff
from dagster_duckdb.io_manager import DuckDbClient, _partition_where_clause
from dagster_duckdb_pandas import DuckDBPandasIOManager
from dagster_duckdb_pandas.duckdb_pandas_type_handler import DuckDBPandasTypeHandler

_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
# DuckDB reports OS errors as text; the errno names they map to (the first that matches wins).
_OS_CAUSES = (
    ("no space left on device", errno.ENOSPC),
    ("disk quota exceeded", errno.EDQUOT),
    ("file too large", errno.EFBIG),
    ("read-only file system", errno.EROFS),
    ("permission denied", errno.EACCES),
    ("operation not permitted", errno.EPERM),
    ("no such file or directory", errno.ENOENT),
)


class TableWriteError(RuntimeError):
    """A table could not be written (or its DuckDB file opened); the message is one line naming the table, the
    file and the cause. The previous materialisation of the table is unchanged."""


def describe_cause(exc: BaseException) -> str:
    """``"<reason> (<ERRNO>)"`` for an OS-level cause (from ``OSError.errno`` or DuckDB's message text), else
    the first line of the error."""
    code = exc.errno if isinstance(exc, OSError) and exc.errno else None
    text = str(exc)
    if code is None:
        low = text.lower()
        code = next((c for phrase, c in _OS_CAUSES if phrase in low), None)
    if code is not None:
        return f"{os.strerror(code)} ({errno.errorcode.get(code, code)})"
    first = text.strip().splitlines()[0] if text.strip() else type(exc).__name__
    return f"{type(exc).__name__}: {first}"


def _is_lock_contention(exc: BaseException) -> bool:
    return "lock" in str(exc).lower()


def _typed_for_empty(obj: pd.DataFrame) -> pd.DataFrame:
    # DuckDB cannot infer a type from an empty object column; text is the honest default.
    if not obj.empty:
        return obj
    return obj.astype({c: "string" for c in obj.columns if obj[c].dtype == object})


def _partition_filter(dimensions: Sequence[TablePartitionDimension]) -> tuple[str, list]:
    """The WHERE clause selecting the partitions of ``dimensions``, with the keys as bound parameters (static
    partitions); a time window goes through dagster-duckdb's clause (its bounds are dates it formats)."""
    clauses, params = [], []
    for dim in dimensions:
        if isinstance(dim.partitions, (list, tuple)) and _IDENTIFIER.match(dim.partition_expr or ""):
            keys = list(dim.partitions)
            clauses.append(f'"{dim.partition_expr}" in ({", ".join("?" for _ in keys)})')
            params.extend(keys)
        else:
            clauses.append(_partition_where_clause([dim]))
    return " and ".join(clauses), params


class ReplacingDuckDBPandasTypeHandler(DuckDBPandasTypeHandler):
    def handle_output(self, context: OutputContext, table_slice: TableSlice, obj: pd.DataFrame, connection):
        name = f"{table_slice.schema}.{table_slice.table}"
        obj = _typed_for_empty(obj)  # noqa: F841 - read by DuckDB's replacement scan below
        connection.execute("begin transaction")
        try:
            connection.execute(f"create schema if not exists {table_slice.schema}")
            if not table_slice.partition_dimensions:
                connection.execute(f"create or replace table {name} as select * from obj")
            else:
                exists = connection.execute(
                    "select count(*) from information_schema.tables where table_schema = ? and table_name = ?",
                    [table_slice.schema, table_slice.table]).fetchone()[0]
                if not exists:
                    connection.execute(f"create table {name} as select * from obj")
                else:
                    where, params = _partition_filter(table_slice.partition_dimensions)
                    connection.execute(f"delete from {name} where {where}", params)
                    if not obj.empty:
                        connection.execute(f"insert into {name} select * from obj")
            connection.execute("commit")
        except BaseException:
            try:
                connection.execute("rollback")
            except duckdb.Error:
                pass  # the failed commit already ended the transaction
            raise
        context.add_output_metadata({
            **(TableMetadataSet(partition_row_count=len(obj), storage_kind="duckdb") if context.has_partition_key
               else TableMetadataSet(row_count=len(obj), storage_kind="duckdb")),
            "dataframe_columns": MetadataValue.table_schema(TableSchema(
                columns=[TableColumn(name=str(name), type=str(dtype)) for name, dtype in obj.dtypes.items()])),
        })


class TransactionalDuckDbClient(DuckDbClient):
    """dagster-duckdb's client without the separate delete before a write (the type handler deletes and writes
    in one transaction), creating the schema inside that transaction too, and closing its connection on error."""

    @staticmethod
    def delete_table_slice(context: OutputContext, table_slice: TableSlice, connection) -> None:
        return None

    @staticmethod
    def ensure_schema_exists(context: OutputContext, table_slice: TableSlice, connection) -> None:
        return None

    @staticmethod
    @contextmanager
    def connect(context, _):
        config = {"custom_user_agent": "dagster", **context.resource_config["connection_config"]}
        database = context.resource_config["database"]

        def _connect():
            try:
                return duckdb.connect(database=database, read_only=False, config=config)
            except (RuntimeError, duckdb.IOException) as exc:
                if _is_lock_contention(exc):
                    raise  # retried below: another process holds the file
                raise _Final(exc) from exc

        try:
            conn = backoff(fn=_connect, retry_on=(RuntimeError, duckdb.IOException), max_retries=10)
        except _Final as wrapped:
            raise wrapped.error from None
        try:
            yield conn
        finally:
            conn.close()


class _Final(Exception):
    """Carries a connection error that retrying cannot fix past the backoff loop."""

    def __init__(self, error: BaseException):
        super().__init__(str(error))
        self.error = error


class ClearErrorDbIOManager(DbIOManager):
    """``DbIOManager`` whose write errors are one line naming the table, the DuckDB file and the cause."""

    def handle_output(self, context: OutputContext, obj: object) -> None:
        try:
            super().handle_output(context, obj)
        except (duckdb.Error, OSError) as exc:
            table_slice = self._get_table_slice(context, context)
            raise TableWriteError(
                f"cannot write table {table_slice.schema}.{table_slice.table} to {self._database}: "
                f"{describe_cause(exc)}; the previous materialisation is unchanged") from None


class InstselDuckDBIOManager(DuckDBPandasIOManager):
    """DuckDB IO manager for pandas tables (see the module docstring for how it differs)."""

    @staticmethod
    def type_handlers() -> Sequence[DbTypeHandler]:
        return [ReplacingDuckDBPandasTypeHandler()]

    def create_io_manager(self, context) -> DbIOManager:
        return ClearErrorDbIOManager(
            db_client=TransactionalDuckDbClient(),
            database=self.database,
            schema=self.schema_,
            type_handlers=self.type_handlers(),
            default_load_type=self.default_load_type(),
            io_manager_name="DuckDBIOManager",
        )
