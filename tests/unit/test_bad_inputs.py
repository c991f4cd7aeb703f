"""The bad-input corpus (tests/data/bad/, manifest cases.yaml, table README.md) through the real pool assets
and through ``instsel validate``.

Every case is one file or folder (or one sources.yaml entry) with its expected outcome: either its rows go
to ``instruction_pool`` / ``pool_quarantine`` with the expected counts and reasons, or the source is unusable
and the raw asset (``stage: read``) or the definitions' ``sources.yaml`` (``stage: sources``) fail with a
one-line ``SourceError`` naming file, line and field. The accounting read = kept + duplicates + quarantined
must hold on every case, nothing may crash or hang (every step runs under a deadline).

The Dagster side runs in three passes, in-process with the project's DuckDB IO manager and INSTSEL_DATA_DIR,
INSTSEL_HOME and DAGSTER_HOME under a tmp dir: one ``dg.materialize`` of every ``raw_datasets/<case>`` plus
``instruction_pool``/``pool_quarantine`` for the row-level cases (one source per case; case contents are
unique, so deduplication across sources cannot move a row from one case to another), one for the read-error
cases (each raw step must fail with SourceError and the pool must not be built), and one definitions load
per sources.yaml-level case. ``instsel validate`` then gets the same verdict on every case, in-process through
``cli.main`` (and a few cases through a subprocess: exit codes, one stderr line, no traceback).

Huge inputs (5 MB fields, 20,000 turns, 100,000-deep nesting), symlinks, a FIFO and a non-UTF-8 file name are
generated here (``GENERATORS``), not committed.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path
from types import SimpleNamespace

import dagster as dg
import pytest
import yaml

from instsel_assets.cli import main
from instsel_assets.ingest.formats import SourceError

BAD = Path(__file__).resolve().parents[1] / "data" / "bad"
MANIFEST_FILES = {"cases.yaml", "README.md", ".gitattributes"}
CASES: list[dict] = yaml.safe_load((BAD / "cases.yaml").read_text(encoding="utf-8"))["cases"]
BY_ID = {c["id"]: c for c in CASES}
COUNTS = ("read", "kept", "duplicates", "quarantined")
FIVE_MB = 5 * 1024 * 1024


def stage(case: dict) -> str:
    return case["expect"].get("stage", "pool")


POOL_CASES = [c["id"] for c in CASES if stage(c) == "pool"]
READ_CASES = [c["id"] for c in CASES if stage(c) == "read"]
SOURCES_CASES = [c["id"] for c in CASES if stage(c) == "sources"]


class Hang(BaseException):
    """Raised by ``deadline``; a BaseException so that no ``except OSError`` / ``except Exception`` in the code
    under test can turn a hang into an ordinary error (``TimeoutError`` is an ``OSError``)."""


@contextmanager
def deadline(seconds: float, what: str):
    """Fail (``Hang``) instead of hanging: SIGALRM interrupts Python code and blocking system calls."""
    def expired(signum, frame):
        raise Hang(f"{what}: no result after {seconds} s (a hang)")

    previous = signal.signal(signal.SIGALRM, expired)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


# ------------------------------------------------------------------------------------------ generated cases


def _line(record) -> str:
    return json.dumps(record, ensure_ascii=False) + "\n"


def _alpaca(instruction: str, output: str) -> dict:
    return {"instruction": instruction, "input": "", "output": output}


def _ok_file(folder: Path, name: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "ok.jsonl").write_text(_line(_alpaca(f"{name}: a usable row", "Fine.")), encoding="utf-8")


def gen_huge_field(root: Path, outside: Path) -> None:
    big = "".join(f"{i:07d} " for i in range(FIVE_MB // 8 + 1))[: FIVE_MB - 1] + "."
    with open(root / "huge_field.jsonl", "w", encoding="utf-8") as f:
        f.write(_line(_alpaca("huge_field: summarise this 5 MB text", big)))
        f.write(_line(_alpaca("huge_field: a normal row", "Fine.")))
        f.write('{"instruction": "huge_field: a 5 MB line without its closing brace", "output": "' + big + '"\n')


def gen_long_conversation(root: Path, outside: Path) -> None:
    turns = []
    for i in range(10_000):
        turns += [{"from": "human", "value": f"long_conversation: question {i}"},
                  {"from": "gpt", "value": f"answer {i}"}]
    messages = []
    for i in range(5_000):
        messages += [{"role": "user", "content": f"long_conversation: message {i}"},
                     {"role": "assistant", "content": f"reply {i}"}]
    messages.append({"role": "user", "content": "long_conversation: and the last word is the user's"})
    (root / "long_conversation.jsonl").write_text(_line({"conversations": turns}) + _line({"messages": messages}),
                                                  encoding="utf-8")


def gen_deeply_nested(root: Path, outside: Path) -> None:
    (root / "deeply_nested.jsonl").write_text(
        '{"instruction": "deeply_nested: a 200-deep unused field", "input": "", "output": "Kept.", "meta": '
        + "[" * 200 + "]" * 200 + "}\n"
        + "[" * 100_000 + "]" * 100_000 + "\n"
        + _line({"instruction": "deeply_nested: the output is an object", "output": {"a": {"b": {"c": "d"}}}}),
        encoding="utf-8")


def gen_deeply_nested_document(root: Path, outside: Path) -> None:
    (root / "deeply_nested_document.json").write_text("[" * 100_000 + "]" * 100_000 + "\n", encoding="utf-8")


def gen_symlinked_subfolder(root: Path, outside: Path) -> None:
    target = root / "symlinked_subfolder_target"
    target.mkdir()
    (target / "b.jsonl").write_text(_line(_alpaca("symlinked_subfolder: b, through the link", "Two.")),
                                    encoding="utf-8")
    (root / "symlinked_subfolder").mkdir()
    (root / "symlinked_subfolder" / "a.jsonl").write_text(_line(_alpaca("symlinked_subfolder: a", "One.")),
                                                          encoding="utf-8")
    (root / "symlinked_subfolder" / "more").symlink_to(Path("..") / "symlinked_subfolder_target")


def gen_symlink_in_folder_leaving_root(root: Path, outside: Path) -> None:
    folder = root / "symlink_in_folder_leaving_root"
    _ok_file(folder, folder.name)
    (folder / "evil.jsonl").symlink_to(outside / "secret.jsonl")


def gen_symlinked_dir_leaving_root(root: Path, outside: Path) -> None:
    folder = root / "symlinked_dir_leaving_root"
    _ok_file(folder, folder.name)
    (folder / "linked").symlink_to(outside / "secret_dir")


def gen_dangling_symlink_in_folder(root: Path, outside: Path) -> None:
    folder = root / "dangling_symlink_in_folder"
    _ok_file(folder, folder.name)
    (folder / "gone.jsonl").symlink_to(folder / "nowhere.jsonl")


def gen_symlink_loop_in_folder(root: Path, outside: Path) -> None:
    folder = root / "symlink_loop_in_folder"
    _ok_file(folder, folder.name)
    (folder / "again").symlink_to(".")


def gen_fifo_instead_of_file(root: Path, outside: Path) -> None:
    os.mkfifo(root / "fifo_instead_of_file.jsonl")


def gen_invalid_utf8_file_name(root: Path, outside: Path) -> None:
    folder = root / "invalid_utf8_file_name"
    _ok_file(folder, folder.name)
    with open(os.path.join(os.fsencode(folder), b"caf\xe9.jsonl"), "wb") as f:
        f.write(_line(_alpaca("invalid_utf8_file_name: in a Latin-1 named file", "x")).encode())


def gen_symlink_leaving_root(root: Path, outside: Path) -> None:
    (root / "symlink_leaving_root.jsonl").symlink_to(outside / "secret.jsonl")


def gen_symlink_loop(root: Path, outside: Path) -> None:
    (root / "symlink_loop.jsonl").symlink_to("symlink_loop.jsonl")


GENERATORS = {name[len("gen_"):]: fn for name, fn in globals().items() if name.startswith("gen_")}


# ------------------------------------------------------------------------------------------ fixtures


def source_name(case: dict) -> str:
    return str(case.get("entry", {}).get("name", case["id"]))


def sources_entry(case: dict) -> dict:
    entry = {"name": case["id"], "path": case["path"], "format": case.get("format", "auto"),
             "license": "test data", "origin": "tests/data/bad/cases.yaml", "description": case["what"]}
    entry.update(case.get("entry", {}))
    return entry


def write_sources(root: Path, cases: list[dict]) -> Path:
    f = root / "sources.yaml"
    f.write_text(yaml.safe_dump({"sources": [sources_entry(c) for c in cases]}, sort_keys=False,
                                allow_unicode=True, width=10_000), encoding="utf-8")
    return f


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """The corpus copied to ``<tmp>/data`` plus the generated cases, with INSTSEL_DATA_DIR, INSTSEL_HOME and
    DAGSTER_HOME under ``<tmp>`` for the whole module."""
    tmp = tmp_path_factory.mktemp("bad_inputs")
    root = tmp / "data"
    shutil.copytree(BAD, root, symlinks=True, ignore=shutil.ignore_patterns(*MANIFEST_FILES))
    outside = tmp / "outside"
    (outside / "secret_dir").mkdir(parents=True)
    secret = _line(_alpaca("outside the data root", "Must never be read."))
    (outside / "secret.jsonl").write_text(secret, encoding="utf-8")
    (outside / "secret_dir" / "secret.jsonl").write_text(secret, encoding="utf-8")
    (tmp / "outside.jsonl").write_text(secret, encoding="utf-8")  # what path_with_dotdot points at
    for case in CASES:
        if case.get("generated"):
            GENERATORS[case["id"]](root, outside)
    (tmp / "dagster_home").mkdir()
    mp = pytest.MonkeyPatch()
    mp.setenv("INSTSEL_DATA_DIR", str(root))
    mp.setenv("INSTSEL_HOME", str(tmp / "home"))
    mp.setenv("DAGSTER_HOME", str(tmp / "dagster_home"))
    yield SimpleNamespace(tmp=tmp, root=root)
    mp.undo()


def materialize_sources(corpus, cases: list[dict], what: str) -> dg.ExecuteInProcessResult:
    """``raw_datasets/<case>`` for every case plus the pool assets, as the definitions build them."""
    from instsel_assets import settings
    from instsel_assets.defs.duckdb_io import InstselDuckDBIOManager
    from instsel_assets.defs.pool import pool_assets
    from instsel_assets.defs.raw import raw_assets

    write_sources(corpus.root, cases)
    home = settings.storage_root()
    home.mkdir(parents=True, exist_ok=True)
    with deadline(240, what):
        return dg.materialize([*raw_assets(), *pool_assets()], raise_on_error=False,
                              instance=dg.DagsterInstance.ephemeral(),
                              resources={"io_manager": InstselDuckDBIOManager(database=str(home / "instsel.duckdb"))})


@pytest.fixture(scope="module")
def pool_run(corpus):
    """One run over every row-level case: the result, the raw frame per source, the pool and the quarantine."""
    result = materialize_sources(corpus, [BY_ID[i] for i in POOL_CASES], "materialising the row-level cases")
    assert result.success, [e.message for e in result.all_events if e.is_failure]
    raw = {source_name(BY_ID[i]): result.asset_value(dg.AssetKey(["raw_datasets", source_name(BY_ID[i])]))
           for i in POOL_CASES}
    return SimpleNamespace(result=result, raw=raw, pool=result.asset_value("instruction_pool"),
                           quarantine=result.asset_value("pool_quarantine"))


@pytest.fixture(scope="module")
def read_run(corpus):
    """One run over every read-error case: the error chain of each failed step, by step key."""
    result = materialize_sources(corpus, [BY_ID[i] for i in READ_CASES], "materialising the read-error cases")
    failures = {}
    for event in result.all_events:
        if event.event_type_value == "STEP_FAILURE":
            chain, error = [], event.step_failure_data.error
            while error is not None:
                chain.append(error)
                error = error.cause
            failures[event.step_key] = chain
    return SimpleNamespace(result=result, failures=failures)


# ------------------------------------------------------------------------------------------ shared assertions


def assert_rows(case: dict, actual: list[dict]) -> None:
    """``actual``: the case's quarantine rows as {file, row, kind, reason}; exactly the expected ones."""
    expected = case["expect"]["rows"]
    assert len(actual) == len(expected), (case["id"], actual)
    for exp in expected:
        kind = exp.get("kind", "invalid")
        hits = [r for r in actual if r["row"] == exp["row"] and r["kind"] == kind
                and ("file" not in exp or r["file"] == exp["file"])]
        assert len(hits) == 1, (case["id"], exp, actual)
        assert exp["reason"] in hits[0]["reason"], (case["id"], exp, hits[0])
    for r in actual:
        assert r["reason"].strip() and "\n" not in r["reason"], (case["id"], r)


def assert_error(case: dict, message: str, key: str = "error") -> None:
    assert "\n" not in message.strip(), (case["id"], message)
    for part in case["expect"][key]:
        assert part in message, (case["id"], part, message)


# ------------------------------------------------------------------------------------------ the corpus itself


def test_the_corpus_covers_the_issue_and_every_file_belongs_to_a_case():
    assert len(CASES) >= 30
    assert len(BY_ID) == len(CASES)
    for case in CASES:
        assert re.fullmatch(r"[a-z][a-z0-9_]*", case["id"]), case["id"]
        assert case["what"] and case["path"], case["id"]
        exp = case["expect"]
        if stage(case) == "pool":
            assert exp["read"] == exp["kept"] + exp["duplicates"] + exp["quarantined"], case["id"]
            assert len(exp["rows"]) == exp["duplicates"] + exp["quarantined"], case["id"]
        else:
            assert stage(case) in ("read", "sources") and exp["error"], case["id"]
        if case.get("generated"):
            assert case["id"] in GENERATORS, case["id"]
            assert not (BAD / case["path"]).exists(), f"{case['id']} is generated, not committed"
        elif not (stage(case) == "sources" and case["id"] in ("missing_file", "path_with_dotdot", "absolute_path")):
            assert (BAD / case["path"]).exists(), case["id"]
    assert set(GENERATORS) <= set(BY_ID)
    owned = {Path(c["path"]).parts[0] for c in CASES if not c.get("generated") and not Path(c["path"]).is_absolute()}
    orphans = sorted(p.name for p in BAD.iterdir() if p.name not in MANIFEST_FILES | owned)
    assert not orphans, f"files in tests/data/bad/ without a case in cases.yaml: {orphans}"
    assert {stage(c) for c in CASES} == {"pool", "read", "sources"}


def test_byte_exact_inputs_were_not_normalised_by_git_or_an_editor():
    mixed = (BAD / "mixed_newlines.jsonl").read_bytes()
    assert b"\r\n" in mixed and re.search(rb"\r(?!\n)", mixed) and not mixed.endswith(b"\n")
    assert (BAD / "bom_json.json").read_bytes().startswith(b"\xef\xbb\xbf")
    assert (BAD / "bom_jsonl.jsonl").read_bytes().count(b"\xef\xbb\xbf") == 2
    assert b"caf\xe9" in (BAD / "invalid_utf8_line.jsonl").read_bytes()
    control = (BAD / "control_characters.jsonl").read_bytes()
    assert b"\x01" in control and b"raw\ttab" in control
    assert (BAD / "whitespace_only.jsonl").read_bytes().endswith(b"\xc2\xa0\n\x0c\n")
    assert (BAD / "gzip_named_jsonl.jsonl").read_bytes().startswith(b"\x1f\x8b")
    assert (BAD / "empty_file.json").read_bytes() == b"" and (BAD / "empty_file_jsonl.jsonl").read_bytes() == b""
    assert not (BAD / "truncated_last_line.jsonl").read_bytes().endswith(b"\n")


def test_readme_has_a_row_per_case():
    readme = (BAD / "README.md").read_text(encoding="utf-8")
    rows = re.findall(r"^\| `([a-z0-9_]+)` \|", readme, re.M)
    assert rows == [c["id"] for c in CASES]


# ------------------------------------------------------------------------------------------ the pool assets


def test_row_level_cases_materialise_with_every_check_passing(pool_run):
    evaluations = pool_run.result.get_asset_check_evaluations()
    failed = [(e.asset_key.to_user_string(), e.check_name) for e in evaluations if not e.passed]
    assert not failed
    names = {(e.asset_key.to_user_string(), e.check_name) for e in evaluations}
    assert {("instruction_pool", "accounting"), ("instruction_pool", "unique_ids"),
            ("instruction_pool", "great_expectations_suite"), ("pool_quarantine", "reasons_present")} <= names
    assert sum(1 for _, check in names if check == "has_rows") == len(POOL_CASES)
    pool, quarantine = pool_run.pool, pool_run.quarantine
    assert pool["id"].is_unique
    assert (quarantine["raw"].str.len() <= 2000).all()
    dup = quarantine[quarantine["kind"] == "duplicate"]
    assert dup["duplicate_of"].isin(pool["id"]).all()
    assert len(pool) + len(quarantine) == sum(len(f) for f in pool_run.raw.values())


def test_tables_are_in_duckdb_even_for_a_source_named_select(pool_run, corpus):
    import duckdb

    from instsel_assets import settings

    con = duckdb.connect(str(settings.storage_root() / "instsel.duckdb"), read_only=True)
    try:
        assert con.execute('select count(*) from raw_datasets."select"').fetchone()[0] == 1
        tables = {r[0] for r in con.execute("select table_name from information_schema.tables").fetchall()}
        assert {"instruction_pool", "pool_quarantine"} <= tables
        assert con.execute("select count(*) from public.instruction_pool").fetchone()[0] == len(pool_run.pool)
        got = con.execute("select instruction from public.instruction_pool where source = 'sql_in_content' "
                          "order by source_row").fetchall()
        assert got[0][0] == "sql_in_content: '; DROP TABLE instruction_pool; --"
    finally:
        con.close()


@pytest.mark.parametrize("case_id", POOL_CASES)
def test_pool_assets_give_each_row_level_case_its_outcome(pool_run, case_id):
    case = BY_ID[case_id]
    exp = case["expect"]
    name = source_name(case)
    raw = pool_run.raw[name]
    pool = pool_run.pool[pool_run.pool["source"] == name]
    q = pool_run.quarantine[pool_run.quarantine["source"] == name]
    got = {"read": len(raw), "kept": len(pool), "duplicates": int((q["kind"] == "duplicate").sum()),
           "quarantined": int((q["kind"] == "invalid").sum())}
    assert got == {k: exp[k] for k in COUNTS}
    assert got["read"] == got["kept"] + got["duplicates"] + got["quarantined"]  # nothing dropped silently
    assert_rows(case, [{"file": f, "row": int(r), "kind": k, "reason": why}
                       for f, r, k, why in zip(q["source_file"], q["source_row"], q["kind"], q["reason"])])
    if "kept_rows" in exp:
        assert sorted(pool["source_row"].tolist()) == exp["kept_rows"]
    if "kept_files" in exp:
        assert sorted(pool["source_file"].tolist()) == sorted(exp["kept_files"])
    if "kept_text" in exp:
        text = "\n".join(t["content"] for conv in pool["conversations"] for t in conv)
        for part in exp["kept_text"]:
            assert part in text, (case_id, part)
    if "max_output_chars" in exp:
        assert pool["output"].str.len().max() == exp["max_output_chars"]
    if "max_n_turns" in exp:
        assert pool["n_turns"].max() == exp["max_n_turns"]


@pytest.mark.parametrize("case_id", READ_CASES)
def test_raw_asset_fails_with_a_one_line_source_error(read_run, case_id):
    case = BY_ID[case_id]
    step = f"raw_datasets__{source_name(case)}"
    assert step in read_run.failures, f"{case_id}: the raw asset did not fail"
    errors = [e for e in read_run.failures[step] if e.cls_name == "SourceError"]
    assert errors, (case_id, [(e.cls_name, e.message) for e in read_run.failures[step]])
    message = errors[0].message.strip()
    assert message.startswith("instsel_assets.ingest.formats.SourceError: ")
    assert_error(case, message)


def test_an_unusable_source_stops_the_pool_instead_of_being_dropped(read_run):
    assert not read_run.result.success
    assert len(read_run.failures) == len(READ_CASES)
    materialised = {e.asset_key.to_user_string() for e in read_run.result.get_asset_materialization_events()}
    assert "instruction_pool" not in materialised and "pool_quarantine" not in materialised


@pytest.mark.parametrize("case_id", SOURCES_CASES)
def test_sources_yaml_is_refused_when_the_definitions_load(corpus, case_id):
    from instsel_assets.defs.pool import pool_assets
    from instsel_assets.defs.raw import raw_assets

    case = BY_ID[case_id]
    f = write_sources(corpus.root, [case])
    for build in (raw_assets, pool_assets):
        with deadline(30, case_id), pytest.raises(SourceError) as e:
            build()
        assert str(e.value).startswith(str(f))
        assert_error(case, str(e.value))


# ------------------------------------------------------------------------------------------ instsel validate


def validate_target(corpus, case: dict) -> tuple[Path, list[str]]:
    if stage(case) == "sources":
        return write_sources(corpus.root, [case]), []
    fmt = case.get("format", "auto")
    return corpus.root / case["path"], ([] if fmt == "auto" else ["--format", fmt])


def run_validate(argv: list[str], capsys, what: str) -> tuple[int, str, str]:
    with deadline(60, what):
        rc = main(["validate", *argv])
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    return rc, out, err


@pytest.mark.parametrize("case_id", [c["id"] for c in CASES])
def test_instsel_validate_gives_the_same_verdict(corpus, case_id, capsys):
    case = BY_ID[case_id]
    exp = case["expect"]
    target, options = validate_target(corpus, case)
    rc, out, err = run_validate([str(target), "--json", *options], capsys, case_id)
    if stage(case) != "pool":
        assert rc == 1, (case_id, out, err)
        assert err.endswith("\n") and err.count("\n") == 1 and err.startswith("instsel validate: "), err
        assert_error(case, err)
        report = json.loads(out)
        assert report["ok"] is False and report["error"] == err[len("instsel validate: "):].strip()
        if "path_error" in exp:
            rc, out, err = run_validate([str(corpus.root / case["path"])], capsys, case_id)
            assert rc == 1 and err.count("\n") == 1 and err.startswith("instsel validate: "), err
            assert_error(case, err, "path_error")
        return
    assert rc == 0 and err == "", (case_id, err)
    report = json.loads(out)
    assert report["ok"] is True and len(report["sources"]) == 1
    assert report["totals"] == {k: exp[k] for k in COUNTS}
    assert report["sources"][0] | report["totals"] == report["sources"][0]
    assert_rows(case, report["rows"])
    for r in report["rows"]:  # JSON Lines rows are found by line, JSON document rows by list index
        json_lines = r["file"].lower().endswith(".jsonl") or case_id == "json_lines_named_json"
        assert r["line"] == (r["row"] + 1 if json_lines else None), (case_id, r)


def test_validate_text_report_names_line_and_reason(corpus, capsys):
    rc, out, err = run_validate([str(corpus.root / "invalid_line_middle.jsonl")], capsys, "text report")
    assert rc == 0 and err == ""
    assert out.splitlines() == [
        f"{corpus.root / 'invalid_line_middle.jsonl'}: read 5 = kept 4 + duplicates 0 + quarantined 1 "
        "(1 file(s), format auto)",
        "quarantined (1):",
        "  invalid_line_middle.jsonl line 3: invalid JSON: Expecting ',' delimiter (column 55)",
    ]
    rc, out, err = run_validate([str(corpus.root / "duplicate_keys_json.json")], capsys, "text report")
    assert "  duplicate_keys_json.json record 1: an object repeats the key 'output' with a different value" in out


def test_validate_a_sources_file_dedups_across_sources_like_the_pool(corpus, capsys, tmp_path):
    root = tmp_path / "data"
    root.mkdir()
    row = _line(_alpaca("the same row in two sources", "Twice."))
    (root / "a.jsonl").write_text(row, encoding="utf-8")
    (root / "b.jsonl").write_text(row + _line(_alpaca("only in b", "Once.")), encoding="utf-8")
    f = root / "my_sources.yml"
    f.write_text(yaml.safe_dump([{"name": n, "path": f"{n}.jsonl", "format": "auto", "license": "x", "origin": "",
                                  "description": ""} for n in ("a", "b")]), encoding="utf-8")
    rc, out, err = run_validate([str(f), "--json"], capsys, "sources file")
    report = json.loads(out)
    assert rc == 0 and report["mode"] == "sources"
    assert [(s["name"], s["read"], s["kept"], s["duplicates"]) for s in report["sources"]] == [("a", 1, 1, 0),
                                                                                               ("b", 2, 1, 1)]
    rc, out, err = run_validate([str(f), "--format", "alpaca"], capsys, "sources file with --format")
    assert rc == 1 and "--format applies to a data file or folder" in err


def test_validate_usage_errors_exit_2_without_traceback(capsys):
    with pytest.raises(SystemExit) as e:
        main(["validate", "x.json", "--format", "csv"])
    assert e.value.code == 2
    assert "invalid choice: 'csv'" in capsys.readouterr().err


@pytest.mark.parametrize("case_id, options, rc", [
    ("invalid_line_middle", [], 0),
    ("huge_field", ["--json"], 0),
    ("truncated_json", [], 1),
    ("fifo_instead_of_file", [], 1),
    ("name_with_dotdot", [], 1),
])
def test_validate_as_a_process(corpus, case_id, options, rc):
    case = BY_ID[case_id]
    target, fmt_options = validate_target(corpus, case)
    env = {**os.environ, "INSTSEL_DATA_DIR": str(corpus.root), "PYTHONWARNINGS": "ignore"}
    proc = subprocess.run([sys.executable, "-m", "instsel_assets.cli", "validate", str(target), *options, *fmt_options],
                          capture_output=True, text=True, timeout=60, env=env)
    assert proc.returncode == rc, proc.stderr
    assert "Traceback" not in proc.stdout + proc.stderr
    if rc:
        assert proc.stdout == "" and proc.stderr.count("\n") == 1 and proc.stderr.startswith("instsel validate: ")
        assert_error(case, proc.stderr)
    elif "--json" in options:
        assert json.loads(proc.stdout)["totals"] == {k: case["expect"][k] for k in COUNTS}
    else:
        assert proc.stdout.startswith(f"{target}: read {case['expect']['read']} = kept {case['expect']['kept']}")
