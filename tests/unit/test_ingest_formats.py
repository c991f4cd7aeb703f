"""Reading pool files: every format in JSON and JSON Lines, layouts, and whole-file errors."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from instsel_assets.ingest.formats import (
    LAYOUTS_ATTR,
    RAW_COLUMNS,
    SourceError,
    detect_format,
    read_file,
    read_source,
    read_sources,
)
from instsel_assets.ingest.sources import SourceSpec

FIXTURES = Path(__file__).resolve().parent.parent / "data" / "ingest"


def spec(path: str, fmt: str = "auto", name: str = "t") -> SourceSpec:
    return SourceSpec(name=name, path=path, format=fmt, license="test", origin="test", description="")


def read(path: str, fmt: str = "auto", root: Path = FIXTURES) -> pd.DataFrame:
    return read_source(spec(path, fmt), root)


@pytest.mark.parametrize(
    "path, expected_formats",
    [
        ("alpaca.json", ["alpaca"] * 3),
        ("alpaca.jsonl", ["alpaca"] * 3),
        ("dolly.json", ["dolly"] * 2),
        ("dolly.jsonl", ["dolly"] * 2),
        ("sharegpt.json", ["sharegpt"] * 3),
        ("sharegpt.jsonl", ["sharegpt"] * 3),
        ("messages.json", ["messages"] * 2),
        ("messages.jsonl", ["messages"] * 2),
        ("bom.json", ["alpaca"]),
        ("bom.jsonl", ["alpaca"]),
    ],
)
def test_every_format_in_json_and_jsonl(path, expected_formats):
    df = read(path)
    assert list(df.columns) == list(RAW_COLUMNS)
    assert df["format"].tolist() == expected_formats
    assert df["source"].eq("t").all()
    assert df["source_file"].eq(path).all()
    assert df["source_row"].tolist() == list(range(len(expected_formats)))
    assert df["source_row"].dtype == "int64"
    assert df["parse_error"].eq("").all()
    for raw in df["raw"]:
        assert isinstance(json.loads(raw), dict)


@pytest.mark.parametrize("stem", ["alpaca", "sharegpt", "messages"])  # dolly: two variants, see normalize tests
def test_json_and_jsonl_give_the_same_records(stem):
    a = [json.loads(r) for r in read(f"{stem}.json")["raw"]]
    b = [json.loads(r) for r in read(f"{stem}.jsonl")["raw"]]
    assert a == b and len(a) >= 2


def test_raw_keeps_non_ascii_text():
    raw = read("messages.json")["raw"].tolist()[1]
    assert "长城" in raw and "\\u" not in raw


def test_bom_is_accepted():
    assert json.loads(read("bom.json")["raw"][0])["output"] == "Bonjour."
    assert json.loads(read("bom.jsonl")["raw"][0])["output"] == "Bonjour."


def test_json_lines_inside_a_json_file_is_detected():
    df = read("jsonl_named.json")
    assert df["parse_error"].eq("").all()
    assert df["format"].tolist() == ["alpaca"] * 3
    # source_row is the 0-based physical line index: the blank line 3 yields no row
    assert df["source_row"].tolist() == [0, 1, 3]
    lines = (FIXTURES / "jsonl_named.json").read_text(encoding="utf-8").split("\n")
    for row, raw in zip(df["source_row"], df["raw"]):
        assert json.loads(lines[row]) == json.loads(raw)


def test_bad_line_in_json_lines_becomes_a_row_naming_the_line():
    df = read("bad_line.jsonl")
    assert df["source_row"].tolist() == [0, 1, 2, 3]
    bad = df[df["parse_error"] != ""]
    assert len(bad) == 1
    row = bad.iloc[0]
    assert row["source_row"] == 2
    assert "bad_line.jsonl line 3" in row["parse_error"]
    assert "invalid JSON" in row["parse_error"]
    assert row["format"] == ""
    assert row["raw"].startswith('{"instruction": "Broken line')
    assert df.loc[df["parse_error"] == "", "format"].eq("alpaca").all()


def test_truncated_json_raises_naming_file_and_line():
    with pytest.raises(SourceError, match=r"truncated\.json: invalid JSON at line 3 column \d+") as e:
        read("truncated.json")
    assert "\n" not in str(e.value)


@pytest.mark.parametrize(
    "path, what", [("top_number.json", "a number"), ("top_string.json", "a string")]
)
def test_wrong_top_level_type_raises(path, what):
    with pytest.raises(SourceError, match=rf"{path}: top-level JSON value is {what}"):
        read(path)


@pytest.mark.parametrize(
    "content, message",
    [
        (b'{"a": 1, "b": 2}', "holds no list of records"),
        (b'{"a": [1], "b": [2]}', "holds several lists"),
        (b"", "invalid JSON at line 1 column 1"),
        (b"null", "top-level JSON value is null"),
        (b'[{"instruction": "x", "output": "y"}]\n]', "invalid JSON at line 2"),
    ],
)
def test_other_whole_file_problems_raise(tmp_path, content, message):
    (tmp_path / "f.json").write_bytes(content)
    with pytest.raises(SourceError, match=rf"f\.json: .*{message}"):
        read("f.json", root=tmp_path)


def test_invalid_utf8_in_a_json_document_raises_naming_file_and_line(tmp_path):
    (tmp_path / "bad.json").write_bytes(b'[{"instruction": "ok", "output": "ok"},\n{"instruction": "\xff\xfe"}]\n')
    with pytest.raises(SourceError, match=r"bad\.json: not valid UTF-8 at byte \d+ \(line 2\)"):
        read("bad.json", root=tmp_path)


def test_invalid_utf8_in_json_lines_quarantines_the_line(tmp_path):
    (tmp_path / "bad.jsonl").write_bytes(b'{"instruction": "ok", "output": "ok"}\n{"instruction": "\xff\xfe"}\n')
    df = read("bad.jsonl", root=tmp_path)
    assert df["source_row"].tolist() == [0, 1]
    assert df["parse_error"].tolist() == ["", "bad.jsonl line 2: not valid UTF-8 (byte 18 of the line)"]
    assert df["raw"][1] == '{"instruction": "\ufffd\ufffd"}'


def test_object_holding_one_list_and_single_record_object(tmp_path):
    df = read("messages.json")  # {"data": [...]}
    assert len(df) == 2
    (tmp_path / "one.json").write_text(json.dumps({"messages": [{"role": "user", "content": "a"}]}))
    one = read("one.json", root=tmp_path)
    assert len(one) == 1 and one["format"].tolist() == ["messages"]


def test_mixed_schemas_detected_per_record():
    df = read("mixed.jsonl")
    assert df["format"].tolist() == ["alpaca", "sharegpt", "messages", "dolly", "", ""]
    assert df["parse_error"].eq("").all()


def test_declared_format_is_used_instead_of_detection():
    df = read("mixed.jsonl", fmt="alpaca")
    assert df["format"].eq("alpaca").all()


def test_folder_reads_every_data_file_sorted_recursively():
    df = read("folder")
    assert df["source_file"].tolist() == ["folder/b.jsonl", "folder/sub/a.json", "folder/sub/a.json"]
    assert df["source_row"].tolist() == [0, 0, 1]
    assert [json.loads(r)["output"] for r in df["raw"]] == ["b1", "a1", "a2"]


def test_folder_without_data_files_raises(tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("x")
    with pytest.raises(SourceError, match="holds no .json/.jsonl data files"):
        read("empty", root=tmp_path)


def test_missing_file_raises(tmp_path):
    with pytest.raises(SourceError, match="does not exist"):
        read("nope.json", root=tmp_path)


def test_symlink_out_of_the_root_raises(tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "x.json").write_text('[{"instruction": "a", "output": "b"}]')
    root = tmp_path / "root"
    (root / "pool").mkdir(parents=True)
    (root / "pool" / "x.json").symlink_to(outside / "x.json")
    with pytest.raises(SourceError, match="escapes the data root"):
        read("pool", root=root)
    with pytest.raises(SourceError, match="escapes the data root"):
        read("../outside/x.json", root=root)


def test_line_separator_characters_do_not_split_json_lines(tmp_path):
    rec = {"instruction": "a\u2028b\u2029c\x85d", "input": "", "output": "ok"}
    (tmp_path / "f.jsonl").write_text(json.dumps(rec, ensure_ascii=False) + "\r\n", encoding="utf-8")
    df = read("f.jsonl", root=tmp_path)
    assert len(df) == 1 and json.loads(df["raw"][0]) == rec


def test_empty_jsonl_gives_an_empty_frame_with_dtypes_and_an_empty_source_raises(tmp_path):
    (tmp_path / "e.jsonl").write_text("\n\n")
    df = read_file(tmp_path / "e.jsonl", "t", "e.jsonl")
    assert len(df) == 0 and list(df.columns) == list(RAW_COLUMNS)
    assert df["source_row"].dtype == "int64" and df["raw"].dtype == object
    with pytest.raises(SourceError, match=r"source 't': no records in e\.jsonl: only blank lines"):
        read("e.jsonl", root=tmp_path)


def test_read_sources_concatenates_in_order():
    df = read_sources([spec("alpaca.json", name="a"), spec("dolly.jsonl", name="d")], FIXTURES)
    assert df["source"].tolist() == ["a"] * 3 + ["d"] * 2
    assert df.index.tolist() == list(range(5))


@pytest.mark.parametrize(
    "record, expected",
    [
        ({"instruction": "a", "input": "", "output": "b"}, "alpaca"),
        ({"instruction": "a", "output": "b"}, "alpaca"),
        ({"instruction": "a"}, "alpaca"),
        ({"instruction": "a", "context": "", "response": "b", "category": "open_qa"}, "dolly"),
        ({"instruction": "a", "input": "", "output": "b", "category": "open_qa"}, "dolly"),
        ({"conversations": [{"from": "human", "value": "a"}]}, "sharegpt"),
        ({"messages": [{"role": "user", "content": "a"}]}, "messages"),
        ({"foo": 1}, None),
        ([1, 2], None),
        ("text", None),
    ],
)
def test_detect_format(record, expected):
    assert detect_format(record) == expected


def test_frames_record_the_layout_of_every_file():
    df = read("folder")
    assert df.attrs[LAYOUTS_ATTR] == {"folder/b.jsonl": "json_lines", "folder/sub/a.json": "json"}
    both = read_sources([spec("jsonl_named.json", name="a"), spec("alpaca.json", name="b")], FIXTURES)
    assert both.attrs[LAYOUTS_ATTR] == {"jsonl_named.json": "json_lines", "alpaca.json": "json"}
