"""SQL models never interpolate data values into SQL text; names that become tables, partitions or paths are
validated; data paths stay inside their root.

- Static: the code that runs the SQL models (``instsel_assets/sql/``, ``defs/sql_models.py``) hands DuckDB only the
  model file's text, never a string built with an f-string, ``%``, ``+`` or ``.format``; the model files hold no
  template placeholders or bound parameters (a value can only come from a table).
- Dynamic: the SQL models run through Dagster and the DuckDB IO manager over tables whose text, sources, file names,
  duplicate groups and ids are SQL (quotes, ``; DROP TABLE``, comments): every table survives and every value comes
  back byte for byte.
- Names: dataset (source) names, selection / partition keys, SQL model names and S3 partition folders are validated
  with a clear error; a source path with ``..`` or a symlink out of the data root is rejected.
"""

import ast
import json
from pathlib import Path

import dagster as dg
import duckdb
import pandas as pd
import pytest

from instsel_assets import settings

EVIL = [
    "'); DROP TABLE instruction_pool; --",
    "Robert'); DELETE FROM metric_features WHERE ('1'='1",
    "\" ; drop schema public cascade; --",
    "x' || (SELECT 'pwned') || '",
    "/* comment */ ' OR 1=1 --",
    "$1 ? :name {{ model }} %s {}",
]
SQL_CODE = [settings.PROJECT_ROOT / "instsel_assets" / "sql" / "models.py",
            settings.PROJECT_ROOT / "instsel_assets" / "defs" / "sql_models.py"]


# ------------------------------------------------------------------------------------------------ static
def _built_strings(node: ast.AST) -> bool:
    """True when ``node`` builds a string from parts (f-string, %, +, .format, .join)."""
    for sub in ast.walk(node):
        if isinstance(sub, ast.JoinedStr) and any(isinstance(v, ast.FormattedValue) for v in sub.values):
            return True
        if isinstance(sub, ast.BinOp) and isinstance(sub.op, (ast.Mod, ast.Add)):
            return True
        if isinstance(sub, ast.Call) and isinstance(sub.func, ast.Attribute) and sub.func.attr in ("format", "join",
                                                                                                 "replace"):
            return True
    return False


def test_sql_model_code_hands_duckdb_only_the_model_text():
    executed = []
    for path in SQL_CODE:
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in (
                    "execute", "sql", "query", "executemany"):
                assert node.args, f"{path.name}:{node.lineno}: execute without SQL"
                sql = node.args[0]
                assert not _built_strings(sql), f"{path.name}:{node.lineno}: SQL built from parts"
                executed.append((path.name, ast.unparse(sql)))
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "register":
                name = node.args[0]
                assert isinstance(name, ast.Name), f"{path.name}:{node.lineno}: register a validated name only"
    assert executed == [("models.py", "model.sql")]


def test_sql_model_files_hold_no_placeholders_or_parameters():
    import sqlglot
    from sqlglot import exp

    from instsel_assets.sql.models import discover_sql_models

    models = discover_sql_models(settings.sql_models_dir())
    assert {m.name for m in models} >= {"length_indicators", "dedup_length_filter", "ifd_top_per_source", "pool_summary"}
    for model in models:
        body = "\n".join(line for line in model.sql.splitlines() if not line.strip().startswith("--"))
        for token in ("{{", "{%", "%s", "%(", "${"):
            assert token not in body, (model.name, token)
        tree = sqlglot.parse_one(model.sql, dialect="duckdb")
        assert not list(tree.find_all(exp.Placeholder)) and not list(tree.find_all(exp.Parameter)), model.name


# ------------------------------------------------------------------------------------------------ dynamic
def evil_tables() -> dict[str, pd.DataFrame]:
    n = len(EVIL)
    ids = [f"{i:02d}'; DROP TABLE x;--"[:16].ljust(16, "z") for i in range(n)]
    pool = pd.DataFrame({
        "id": ids,
        "source": [f"src_{e}" for e in EVIL],
        "instruction": EVIL,
        "input": ["" if i % 2 else e for i, e in enumerate(EVIL)],
        "output": [f"answer to {e}" for e in EVIL],
        "conversations": [[{"role": "user", "content": e}, {"role": "assistant", "content": f"answer to {e}"}]
                          for e in EVIL],
        "n_turns": [1] * n,
        "source_file": [f"pools/{e}.json" for e in EVIL],
        "source_row": list(range(n)),
    })
    features = pd.DataFrame({
        "id": ids, "language": [f"lang_{e}" for e in EVIL], "instruction_tokens": [5] * n, "input_tokens": [1] * n,
        "output_tokens": [6] * n, "total_tokens": [12] * n, "mtld": [10.0] * n, "ttr": [0.5] * n})
    dups = pd.DataFrame({
        "id": ids, "exact_dup_group": EVIL, "exact_dup_rank": [0, 1, 0, 0, 0, 0],
        "near_dup_cluster": [f"c_{e}" for e in EVIL], "near_dup_rank": [0, 0, 1, 0, 0, 0],
        "near_dup_cluster_size": [1, 2, 2, 1, 1, 1]})
    ifd = pd.DataFrame({"id": ids, "ifd": [0.5, 0.6, 0.7, 0.8, 1.2, 0.9]})
    return {"instruction_pool": pool, "metric_features": features, "duplicate_indicators": dups, "ifd_scores": ifd}


def test_sql_models_keep_every_table_and_round_trip_sql_looking_values(tmp_path, monkeypatch):
    monkeypatch.setenv("INSTSEL_HOME", str(tmp_path / "home"))
    (tmp_path / "home").mkdir()
    from instsel_assets.defs.duckdb_io import InstselDuckDBIOManager
    from instsel_assets.defs.sql_models import sql_assets

    tables = evil_tables()

    def stub(name: str) -> dg.AssetsDefinition:
        @dg.asset(name=name)
        def _stub() -> pd.DataFrame:
            return tables[name].copy()

        return _stub

    db = tmp_path / "home" / "instsel.duckdb"
    models = sql_assets()
    result = dg.materialize([*(stub(n) for n in tables), *models], instance=dg.DagsterInstance.ephemeral(),
                            resources={"io_manager": InstselDuckDBIOManager(database=str(db))})
    assert result.success
    failed = [(e.asset_key.to_user_string(), e.check_name) for e in result.get_asset_check_evaluations() if not e.passed]
    assert failed == []  # has_rows and the models' GX suites pass on these values too

    con = duckdb.connect(str(db), read_only=True)
    try:
        names = {r[0] for r in con.execute("select table_name from information_schema.tables "
                                           "where table_schema = 'public'").fetchall()}
        assert names >= {*tables, "length_indicators", "dedup_length_filter", "ifd_top_per_source", "pool_summary"}
        pool = tables["instruction_pool"]
        stored = con.execute("select id, source, instruction, input, output, source_file "
                             "from public.instruction_pool order by source_row").df()
        for column in stored.columns:
            assert stored[column].tolist() == pool[column].tolist(), column
        lengths = con.execute("select id, source, language, instruction_chars from public.length_indicators").df()
        by_id = lengths.set_index("id")
        for i, row in pool.iterrows():
            assert by_id.loc[row["id"], "source"] == row["source"]
            assert by_id.loc[row["id"], "instruction_chars"] == len(row["instruction"])
            assert by_id.loc[row["id"], "language"] == tables["metric_features"]["language"].iloc[i]
        reasons = dict(con.execute("select id, drop_reason from public.dedup_length_filter").fetchall())
        assert reasons[pool["id"].iloc[1]] == f"exact duplicate of {EVIL[1]}"
        assert reasons[pool["id"].iloc[2]] == f"near duplicate in cluster c_{EVIL[2]}"
        summary = con.execute("select source, language, rows from public.pool_summary order by source").fetchall()
        assert sorted(s for s, _, _ in summary) == sorted(pool["source"]) and all(r == 1 for _, _, r in summary)
        top = {r[0] for r in con.execute("select source from public.ifd_top_per_source").fetchall()}
        assert top == set(pool["source"][tables["ifd_scores"]["ifd"] < 1])
    finally:
        con.close()


# ------------------------------------------------------------------------------------------------ names and paths
SOURCE = ("sources:\n  - name: {name}\n    path: {path}\n    format: alpaca\n    license: test\n    origin: test\n"
          "    description: test\n")


def write_sources(root: Path, name: str, path: str) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "sources.yaml").write_text(SOURCE.format(name=json.dumps(name), path=json.dumps(path)), encoding="utf-8")
    return root


@pytest.mark.parametrize("name", ["Alpaca", "a-b", "x; drop table y", "../up", "", "1abc", "a b", "a'b"])
def test_dataset_names_are_validated(tmp_path, name):
    from instsel_assets.ingest.formats import SourceError
    from instsel_assets.ingest.sources import load_sources

    root = write_sources(tmp_path / "data", name, "pool.json")
    (root / "pool.json").write_text("[]", encoding="utf-8")
    with pytest.raises(SourceError, match=r"name|empty"):
        load_sources(root)


def test_source_paths_are_confined_to_the_data_root(tmp_path):
    from instsel_assets.ingest.formats import SourceError
    from instsel_assets.ingest.sources import load_sources

    outside = tmp_path / "outside.json"
    outside.write_text('[{"instruction": "a", "input": "", "output": "b"}]', encoding="utf-8")
    root = write_sources(tmp_path / "data", "ok", "../outside.json")
    with pytest.raises(SourceError, match="outside|leaves|data root"):
        load_sources(root)
    (root / "link.json").symlink_to(outside)
    write_sources(root, "ok", "link.json")
    with pytest.raises(SourceError, match="outside|leaves|data root"):
        load_sources(root)
    write_sources(root, "ok", str(outside))  # an absolute path elsewhere
    with pytest.raises(SourceError, match="outside|leaves|data root|absolute"):
        load_sources(root)


@pytest.mark.parametrize("key", ["ifd'; drop table selected_subsets; --", "../ifd", "ifd@", "nope", "ifd@99pct",
                                 "IFD", ""])
def test_selection_partition_keys_are_validated(key):
    from instsel_assets.selection.plan import parse_selection_key, selection_keys

    assert key not in selection_keys()
    with pytest.raises(KeyError, match="selection|budget"):
        parse_selection_key(key)


def test_every_declared_partition_key_is_a_plain_name():
    import re

    from instsel_assets.selection.plan import selection_keys

    keys = selection_keys()
    assert keys and all(re.fullmatch(r"[a-z][a-z0-9_]*(@[0-9a-z.]+)?", k) for k in keys), keys


@pytest.mark.parametrize("stem", ["Drop", "x;y", "a-b", "1st"])
def test_sql_model_names_are_validated(tmp_path, stem):
    from instsel_assets.sql.models import SqlModelError, parse_sql_model

    path = tmp_path / f"{stem}.sql"
    path.write_text("select 1 from instruction_pool", encoding="utf-8")
    with pytest.raises(SqlModelError, match=r"must match \[a-z\]"):
        parse_sql_model(path)


def test_a_sql_model_must_be_one_select(tmp_path):
    from instsel_assets.sql.models import SqlModelError, parse_sql_model

    path = tmp_path / "bad.sql"
    path.write_text("select * from instruction_pool; drop table instruction_pool", encoding="utf-8")
    with pytest.raises(SqlModelError, match="exactly one SELECT"):
        parse_sql_model(path)
    path.write_text("drop table instruction_pool", encoding="utf-8")
    with pytest.raises(SqlModelError, match="exactly one SELECT"):
        parse_sql_model(path)


@pytest.mark.parametrize("partition", ["..", ".", "a/b", ""])
def test_s3_partition_folders_are_validated(partition):
    from instsel_assets.defs.storage import S3Store

    with pytest.raises(ValueError, match="cannot name an S3 folder"):
        S3Store(client=None, bucket="b", prefix="p").base(["selected_subsets"], partition)
