"""SQL models: dependencies come from parsing the SQL; broken files fail with their name."""

from pathlib import Path

import pandas as pd
import pytest

from instsel_assets import settings
from instsel_assets.sql.models import SqlModelError, discover_sql_models, parse_sql_model, run_sql_model


def write(tmp_path: Path, name: str, sql: str) -> Path:
    path = tmp_path / f"{name}.sql"
    path.write_text(sql, encoding="utf-8")
    return path


def test_bundled_models_parse_with_their_upstream_tables():
    models = {m.name: m for m in discover_sql_models(settings.sql_models_dir())}
    assert models["length_indicators"].upstream == ("instruction_pool", "metric_features")
    assert models["pool_summary"].upstream == ("ifd_scores", "length_indicators", "metric_features")
    assert "Length and size indicators" in models["length_indicators"].description


@pytest.mark.parametrize("sql, expected", [
    ("SELECT a FROM t JOIN u USING (id)", ("t", "u")),
    ("WITH x AS (SELECT * FROM t) SELECT * FROM x", ("t",)),
    ("SELECT * FROM a WHERE id IN (SELECT id FROM b)", ("a", "b")),
    ("-- comment naming fake_table\nSELECT 1 AS one FROM real_table", ("real_table",)),
])
def test_upstream_tables_found_by_parser(tmp_path, sql, expected):
    assert parse_sql_model(write(tmp_path, "m", sql)).upstream == expected


@pytest.mark.parametrize("sql, fragment", [
    ("SELEC x FROM t", "SQL parse error"),
    ("SELECT * FROM t WHERE", "SQL parse error"),
    ("SELECT 1; SELECT 2", "exactly one SELECT"),
    ("SELECT 1 AS x", "reads no table"),
])
def test_broken_sql_names_the_file(tmp_path, sql, fragment):
    path = write(tmp_path, "broken_model", sql)
    with pytest.raises(SqlModelError) as err:
        parse_sql_model(path)
    assert str(path) in str(err.value) and fragment in str(err.value)
    assert "\x1b[" not in str(err.value)


def test_bad_model_name_is_refused(tmp_path):
    with pytest.raises(SqlModelError, match="must match"):
        parse_sql_model(write(tmp_path, "Bad-Name", "SELECT * FROM t"))


def test_length_indicators_runs_on_pool_rows():
    model = next(m for m in discover_sql_models(settings.sql_models_dir()) if m.name == "length_indicators")
    pool = pd.DataFrame({
        "id": ["b", "a"], "source": ["s", "s"], "instruction": ["Say hi", "翻译这句话"], "input": ["", "你好"],
        "output": ["hi", "hello"],
        "conversations": [
            [{"role": "user", "content": "Say hi"}, {"role": "assistant", "content": "hi"}],
            [{"role": "user", "content": "翻译这句话\n\n你好"}, {"role": "assistant", "content": "hello"},
             {"role": "user", "content": "again"}, {"role": "assistant", "content": "hello!"}],
        ],
        "n_turns": [1, 2],
    })
    features = pd.DataFrame({"id": ["a", "b"], "language": ["zh", "en"], "instruction_tokens": [5, 2],
                             "input_tokens": [2, 0], "output_tokens": [1, 1], "total_tokens": [8, 3]})
    out = run_sql_model(model, {"instruction_pool": pool, "metric_features": features}).set_index("id")
    assert out.loc["a", "instruction_chars"] == 5  # characters, not bytes
    assert out.loc["a", "response_chars_all_turns"] == len("hello") + len("hello!")
    assert out.loc["b", "output_chars"] == 2 and out.loc["a", "n_turns"] == 2
    assert list(out.index) == ["a", "b"]


def bundled(name: str):
    return next(m for m in discover_sql_models(settings.sql_models_dir()) if m.name == name)


def test_dedup_length_filter_gives_every_row_one_reason_or_keeps_it():
    model = bundled("dedup_length_filter")
    assert model.upstream == ("duplicate_indicators", "length_indicators")
    ids = ["a", "b", "c", "d", "e", "f"]
    lengths = pd.DataFrame({"id": ids, "source": "s", "language": "en", "output_chars": [10, 10, 10, 0, 4, 10],
                            "output_tokens": [5, 5, 5, 0, 2, 5], "total_tokens": [20, 20, 20, 9, 12, 3000]})
    dups = pd.DataFrame({"id": ids, "exact_dup_group": ["a", "a", "c", "d", "e", "f"],
                         "exact_dup_rank": [0, 1, 0, 0, 0, 0], "near_dup_cluster": ["a", "a", "a", "d", "e", "f"],
                         "near_dup_rank": [0, 1, 2, 0, 0, 0], "near_dup_cluster_size": [3, 3, 3, 1, 1, 1]})
    out = run_sql_model(model, {"duplicate_indicators": dups, "length_indicators": lengths}).set_index("id")
    assert list(out.index) == ids  # every row once: kept + dropped = read
    assert out["drop_reason"].tolist() == [None, "exact duplicate of a", "near duplicate in cluster a",
                                           "empty response", "response shorter than 3 tokens",
                                           "longer than 2048 tokens"]
    assert out["kept"].tolist() == [True, False, False, False, False, False]


def test_ifd_top_per_source_keeps_the_top_tenth_of_each_source_below_one():
    model = bundled("ifd_top_per_source")
    assert model.upstream == ("ifd_scores", "instruction_pool")
    pool = pd.DataFrame({"id": [f"x{i:02d}" for i in range(20)] + ["y0", "y1", "y2"],
                         "source": ["x"] * 20 + ["y"] * 3})
    ifd = [0.95, 0.5, 1.2, 0.9, None] + [0.1] * 15 + [0.3, 0.2, 2.0]
    scores = pd.DataFrame({"id": pool["id"], "ifd": ifd})
    out = run_sql_model(model, {"ifd_scores": scores, "instruction_pool": pool})
    # x: 20 rows -> 2 kept, the highest IFD below 1 (1.2 is not eligible, None neither); y: 3 rows -> 1 kept
    assert out["id"].tolist() == ["x00", "x03", "y0"]
    assert out["rank_in_source"].tolist() == [1, 2, 1] and out["source_rows"].tolist() == [20, 20, 3]


def test_run_reports_missing_tables_and_duckdb_errors(tmp_path):
    model = parse_sql_model(write(tmp_path, "m", "SELECT no_such_column FROM t"))
    with pytest.raises(SqlModelError, match="not provided"):
        run_sql_model(model, {})
    with pytest.raises(SqlModelError, match="DuckDB error"):
        run_sql_model(model, {"t": pd.DataFrame({"a": [1]})})
