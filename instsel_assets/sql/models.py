"""SQL models: each ``.sql`` file in ``dbt_like_sql/`` is one table, written in DuckDB's dialect.

A model is a single ``SELECT`` (CTEs allowed). Its upstream tables are the tables it reads,
found by parsing the SQL with sqlglot (never by regex), minus its own CTE names; each upstream
name must be another SQL model or an asset of the graph. Leading ``--`` comment lines are the
model's description, shown in the Dagster UI.

Models run in an in-memory DuckDB connection over the upstream tables handed in as DataFrames,
so the same SQL runs whatever stores the tables (the DuckDB file by default, S3 at scale).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import duckdb
import pandas as pd
import sqlglot
from sqlglot import exp

_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_NAME = re.compile(r"^[a-z][a-z0-9_]*$")


class SqlModelError(ValueError):
    """A SQL model that cannot be parsed or run; the message names the file."""


@dataclass(frozen=True)
class SqlModel:
    name: str  # the file stem, also the table and asset name
    path: Path
    sql: str
    upstream: tuple[str, ...]  # tables read, sorted
    description: str

    @property
    def code_version(self) -> str:
        import hashlib

        return hashlib.sha256(self.sql.encode("utf-8")).hexdigest()[:12]


def parse_sql_model(path: Path) -> SqlModel:
    path = Path(path)
    name = path.stem
    if not _NAME.match(name):
        raise SqlModelError(f"{path}: model name {name!r} must match [a-z][a-z0-9_]* (it becomes a table name)")
    sql = path.read_text(encoding="utf-8")
    try:
        statements = [s for s in sqlglot.parse(sql, dialect="duckdb") if s is not None]
    except sqlglot.errors.ParseError as err:
        message = _ANSI.sub("", str(err)).replace("\n", " ")
        raise SqlModelError(f"{path}: SQL parse error: {message}") from None
    if len(statements) != 1 or not isinstance(statements[0], exp.Query):
        raise SqlModelError(f"{path}: a SQL model must be exactly one SELECT statement (found {len(statements)} statements)")
    tree = statements[0]
    ctes = {cte.alias_or_name for cte in tree.find_all(exp.CTE)}
    upstream = sorted({table.name for table in tree.find_all(exp.Table) if table.name and table.name not in ctes})
    if not upstream:
        raise SqlModelError(f"{path}: the model reads no table")
    description_lines = []
    for line in sql.splitlines():
        if line.strip().startswith("--"):
            description_lines.append(line.strip()[2:].strip())
        elif line.strip():
            break
    return SqlModel(name, path, sql, tuple(upstream), " ".join(description_lines))


def discover_sql_models(directory: Path) -> list[SqlModel]:
    """Every ``*.sql`` file of ``directory``, parsed; sorted by name."""
    directory = Path(directory)
    if not directory.is_dir():
        raise SqlModelError(f"{directory}: SQL model folder not found")
    return [parse_sql_model(p) for p in sorted(directory.glob("*.sql"))]


def run_sql_model(model: SqlModel, tables: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """Run ``model`` over the given upstream tables (name -> DataFrame) and return the result."""
    missing = [name for name in model.upstream if name not in tables]
    if missing:
        raise SqlModelError(f"{model.path}: upstream tables not provided: {missing}")
    con = duckdb.connect(":memory:")
    try:
        for name in model.upstream:
            con.register(name, tables[name])
        return con.execute(model.sql).df()
    except duckdb.Error as err:
        raise SqlModelError(f"{model.path}: DuckDB error: {err}") from None
    finally:
        con.close()
