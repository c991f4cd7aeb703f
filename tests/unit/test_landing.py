"""The landing area of pool shards (ingest/landing.py): names, listing, confinement, fingerprints."""

from __future__ import annotations

import os

import pytest

from instsel_assets.ingest.formats import SourceError
from instsel_assets.ingest.landing import (
    list_folder, read_landed, shard_key_problem, validate_shard_key)


@pytest.mark.parametrize("name", ["a.jsonl", "2026-11-26_batch.json", "Shard.v2.JSONL", "x" * 94 + ".jsonl"])
def test_valid_shard_names(name):
    assert shard_key_problem(name) is None
    assert validate_shard_key(name) == name


@pytest.mark.parametrize("name,why", [
    ("../escape.jsonl", "letters, digits"), ("a/b.jsonl", "letters, digits"), ("a..b.jsonl", "'..'"),
    ("bad name.jsonl", "letters, digits"), ("'; drop table pool; --.jsonl", "letters, digits"),
    ("notes.txt", "must end in"), ("noext", "must end in"), ("-a.jsonl", "starting with"),
    ("x" * 101 + ".jsonl", "1-100"), ("", "1-100"), ("数据.jsonl", "letters, digits"),
])
def test_invalid_shard_names_say_why(name, why):
    problem = shard_key_problem(name)
    assert problem and why in problem
    with pytest.raises(SourceError, match="shard name"):
        validate_shard_key(name)


def test_listing_ignores_partials_rejects_bad_names_and_escaping_symlinks(tmp_path):
    root = tmp_path / "landing"
    root.mkdir()
    (root / "b.json").write_text("[]")
    (root / "a.jsonl").write_text('{"instruction": "x", "output": "y"}\n')
    (root / ".upload.jsonl").write_text("{")
    (root / "_SUCCESS").write_text("")
    (root / "sub").mkdir()
    (root / "sub" / "nested.jsonl").write_text("")
    (root / "bad name.jsonl").write_text("")
    outside = tmp_path / "secret.jsonl"
    outside.write_text("{}\n")
    os.symlink(outside, root / "leak.jsonl")
    os.symlink(root / "a.jsonl", root / "alias.jsonl")  # a link inside the folder is a shard like any other
    shards, rejected = list_folder(root)
    assert [s.key for s in shards] == ["a.jsonl", "alias.jsonl", "b.json"]
    assert shards[0].fingerprint == shards[1].fingerprint and shards[0].size == shards[1].size
    reasons = {r.name: r.reason for r in rejected}
    assert set(reasons) == {"bad name.jsonl", "leak.jsonl"}
    assert "leaves the landing folder" in reasons["leak.jsonl"]
    assert list_folder(tmp_path / "missing") == ([], [])


def test_fingerprint_follows_content(tmp_path):
    (tmp_path / "a.jsonl").write_text("one\n")
    before = list_folder(tmp_path)[0][0].fingerprint
    (tmp_path / "a.jsonl").write_text("two\n")
    assert list_folder(tmp_path)[0][0].fingerprint != before


def test_read_landed_is_confined_and_clear(tmp_path, monkeypatch):
    monkeypatch.setenv("INSTSEL_LANDING_DIR", str(tmp_path))
    monkeypatch.delenv("INSTSEL_LANDING_S3_PREFIX", raising=False)
    (tmp_path / "a.jsonl").write_text("row\n")
    data, location = read_landed("a.jsonl")
    assert data == b"row\n" and location == str(tmp_path / "a.jsonl")
    with pytest.raises(SourceError, match="no such shard"):
        read_landed("gone.jsonl")
    with pytest.raises(SourceError, match="shard name"):
        read_landed("../a.jsonl")
    outside = tmp_path.parent / f"{tmp_path.name}-outside.jsonl"
    outside.write_text("secret\n")
    os.symlink(outside, tmp_path / "link.jsonl")
    with pytest.raises(SourceError, match="leaves the landing folder"):
        read_landed("link.jsonl")


def test_s3_prefix_needs_a_bucket(monkeypatch):
    from instsel_assets.ingest.landing import list_landed

    monkeypatch.setenv("INSTSEL_LANDING_S3_PREFIX", "landing/")
    monkeypatch.delenv("INSTSEL_S3_BUCKET", raising=False)
    with pytest.raises(SourceError, match="INSTSEL_S3_BUCKET"):
        list_landed()
