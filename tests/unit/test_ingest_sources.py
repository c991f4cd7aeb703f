"""sources.yaml: the bundled file, and every validation error."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest
import yaml

from instsel_assets.ingest.formats import SourceError, read_sources
from instsel_assets.ingest.normalize import build_pool
from instsel_assets.ingest.sources import FIELDS, SourceSpec, load_sources, load_sources_file

DATA = Path(__file__).resolve().parents[2] / "data"


def entry(**overrides) -> dict:
    base = {
        "name": "mine",
        "path": "pool.json",
        "format": "auto",
        "license": "CC0",
        "origin": "test",
        "description": "a test source",
    }
    base.update(overrides)
    return {k: v for k, v in base.items() if v is not ...}


@pytest.fixture
def root(tmp_path: Path) -> Path:
    r = tmp_path / "data"
    r.mkdir()
    (r / "pool.json").write_text('[{"instruction": "a", "input": "", "output": "b"}]')
    (r / "other.jsonl").write_text('{"instruction": "c", "input": "", "output": "d"}\n')
    (r / "notes.txt").write_text("not data")
    (tmp_path / "outside.json").write_text("[]")
    return r


def write(root: Path, doc) -> Path:
    f = root / "sources.yaml"
    f.write_text(doc if isinstance(doc, str) else yaml.safe_dump(doc, allow_unicode=True), encoding="utf-8")
    return f


# --------------------------------------------------------------------------- the bundled file


def test_bundled_sources_yaml():
    specs = load_sources(DATA)
    assert [s.name for s in specs] == ["alpaca", "dolly", "belle_zh"]
    assert [s.format for s in specs] == ["alpaca", "dolly", "auto"]
    for s in specs:
        assert s.license and s.origin and s.description
        assert (DATA / s.path).is_file()
    assert "NC" in specs[0].license


def test_bundled_sample_reads_about_600_rows_with_chinese_and_accounting():
    raw = read_sources(load_sources(DATA), DATA)
    assert len(raw) == 600
    assert raw.groupby("source").size().to_dict() == {"alpaca": 300, "dolly": 150, "belle_zh": 150}
    assert (raw["parse_error"] == "").all()
    belle = raw[raw["source"] == "belle_zh"]
    assert belle["raw"].str.contains(r"[\u4e00-\u9fff]").all()
    result = build_pool(raw)
    for c in result.counts.values():
        assert c["read"] == c["kept"] + c["duplicates"] + c["quarantined"]
    assert sum(c["read"] for c in result.counts.values()) == 600
    assert result.pool["source"].eq("belle_zh").sum() >= 140


def test_every_bundled_data_folder_carries_a_licence():
    for s in load_sources(DATA):
        folder = (DATA / s.path).parent
        assert any(p.name.startswith(("LICENSE", "DATA_LICENSE")) for p in folder.iterdir()), folder


def test_default_data_root_follows_the_environment(root, monkeypatch):
    write(root, {"sources": [entry()]})
    monkeypatch.setenv("INSTSEL_DATA_DIR", str(root))
    assert [s.name for s in load_sources()] == ["mine"]


# --------------------------------------------------------------------------- valid variants


def test_plain_list_folder_path_and_spec_is_frozen(root):
    (root / "dir" / "sub").mkdir(parents=True)
    (root / "dir" / "sub" / "x.jsonl").write_text("")
    write(root, [entry(), entry(name="folder_2", path="dir", format="sharegpt", origin=None)])
    specs = load_sources(root)
    assert specs[1] == SourceSpec("folder_2", "dir", "sharegpt", "CC0", "", "a test source")
    with pytest.raises(dataclasses.FrozenInstanceError):
        specs[0].name = "x"  # type: ignore[misc]


# --------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    "entries, message",
    [
        ([entry(license=...)], r"sources\[0\] \('mine'\): missing field\(s\) 'license'"),
        ([entry(name=..., path=...)], r"sources\[0\]: missing field\(s\) 'name', 'path'"),
        ([entry(), entry(name="two", fromat="alpaca")], r"sources\[1\] \('two'\): unknown field\(s\) 'fromat'"),
        ([entry(name="../x")], r"field 'name': '\.\./x' is not a lowercase identifier"),
        ([entry(name="Alpaca")], r"field 'name': 'Alpaca' is not a lowercase identifier"),
        ([entry(name="1st")], r"field 'name': '1st'"),
        ([entry(name="my-data")], r"field 'name': 'my-data'"),
        ([entry(name=3)], r"field 'name' must be a string \(got int\)"),
        ([entry(license="  ")], r"field 'license' is empty"),
        ([entry(), entry(path="other.jsonl")], r"sources\[1\]: field 'name': duplicate name 'mine' \(also sources\[0\]\)"),
        ([entry(format="csv")], r"field 'format': unknown format 'csv' \(expected one of auto, alpaca, dolly, sharegpt, messages\)"),
        ([entry(path="../outside.json")], r"field 'path': path '\.\./outside\.json' escapes the data root"),
        ([entry(path="sub/../../outside.json")], r"escapes the data root"),
        ([entry(path="/etc/passwd")], r"field 'path': path '/etc/passwd' must be relative to the data root"),
        ([entry(path="missing.json")], r"field 'path': 'missing\.json' does not exist"),
        ([entry(path="notes.txt")], r"field 'path': 'notes\.txt' is not a \.json/\.jsonl file or a folder"),
        (["just a string"], r"sources\[0\]: expected a mapping"),
        ([], r"lists no sources"),
    ],
)
def test_invalid_entries_are_refused_with_file_index_and_field(root, entries, message):
    f = write(root, {"sources": entries})
    with pytest.raises(SourceError, match=message) as e:
        load_sources(root)
    assert str(e.value).startswith(str(f))
    assert "\n" not in str(e.value)


def test_symlinked_path_out_of_the_root_is_refused(root):
    (root / "link.json").symlink_to(root.parent / "outside.json")
    write(root, {"sources": [entry(path="link.json")]})
    with pytest.raises(SourceError, match=r"sources\[0\] \('mine'\): field 'path': path 'link\.json' escapes the data root"):
        load_sources(root)


def test_symlink_inside_the_root_is_accepted(root):
    (root / "link.json").symlink_to(root / "pool.json")
    write(root, {"sources": [entry(path="link.json")]})
    assert load_sources(root)[0].path == "link.json"


@pytest.mark.parametrize(
    "text, message",
    [
        ("sources:\n  - name: a\n    path: [unclosed\n", r"invalid YAML at line \d+ column \d+"),
        ("other: 1\n", r"expected a list of sources or a mapping with only the key 'sources'"),
        ("sources: 5\n", r"expected a list of sources \(got int\)"),
        ("", r"lists no sources"),
    ],
)
def test_malformed_files_are_refused(root, text, message):
    write(root, text)
    with pytest.raises(SourceError, match=message):
        load_sources(root)


def test_missing_sources_yaml(tmp_path):
    with pytest.raises(SourceError, match=re.escape(str(tmp_path / "sources.yaml")) + ": not found"):
        load_sources(tmp_path)


def test_fields_documented_in_the_bundled_file_header():
    header = (DATA / "sources.yaml").read_text(encoding="utf-8").split("sources:")[0]
    for f in FIELDS:
        assert re.search(rf"^#\s+{f}:", header, re.M), f


def test_errors_name_the_line_of_the_entry_or_field(root):
    f = write(root, "sources:\n" + "".join(
        f"  - name: {n}\n    path: {p}\n    format: auto\n    license: CC0\n    origin: test\n    description: x\n"
        for n, p in (("one", "pool.json"), ("two", "missing.json"))))
    with pytest.raises(SourceError) as e:
        load_sources(root)
    assert str(e.value).startswith(f"{f} line 9: sources[1] ('two'): field 'path': 'missing.json' does not exist")
    write(root, [entry(), {**entry(name="Bad")}])
    with pytest.raises(SourceError, match=r"sources\.yaml line 10: sources\[1\] \('Bad'\): field 'name': 'Bad'"):
        load_sources(root)


def test_load_sources_file_reads_any_file_name(root):
    f = root / "mine.yaml"
    f.write_text(yaml.safe_dump([entry()]), encoding="utf-8")
    assert [s.name for s in load_sources_file(f)] == ["mine"]
