"""Read pool files (JSON or JSON Lines) into one raw row per input record.

Supported record formats (``detect_format`` decides per record, so one file may mix them):

- ``alpaca``: ``{instruction, input, output}``, optional ``system`` and ``history``
  (a list of ``[user, assistant]`` pairs, as in LLaMA-Factory).
- ``dolly``: ``{instruction, context, response, category}`` (databricks-dolly-15k) and the
  AlpaGasus variant ``{instruction, input, output, category}``.
- ``sharegpt``: ``{conversations: [{from, value}]}`` with ``from`` in human/gpt/system
  (``user``/``assistant`` accepted too), optional top-level ``system``.
- ``messages``: OpenAI chat ``{messages: [{role, content}]}``.

File layouts (``read_file``):

- a JSON document whose top level is a list of records; ``source_row`` is the list index;
- a JSON document whose top level is an object holding exactly one list (``{"data": [...]}``);
  ``source_row`` is the index in that list. An object that is itself a record (``detect_format``
  recognises it) is read as a file of one record (``source_row`` 0);
- JSON Lines: one record per line, for ``.jsonl`` files and for ``.json`` files whose content is
  JSON Lines (BELLE's ``dev1K.json``: the whole text fails with "Extra data" and its first
  non-blank line parses on its own). ``source_row`` is the 0-based physical line index
  (line number - 1, blank lines counted but yielding no row), so a row is found at line
  ``source_row + 1``. A line that does not parse becomes a row with ``parse_error`` set
  (quarantined later, never dropped silently).

A UTF-8 byte order mark is accepted. Problems with a whole file (missing, invalid UTF-8, a JSON
document that does not parse, a top level that is a number/string/...) raise ``SourceError``
with a one-line message naming the file and the line/column.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable

import pandas as pd

if TYPE_CHECKING:  # pragma: no cover
    from instsel_assets.ingest.sources import SourceSpec

FORMATS = ("alpaca", "dolly", "sharegpt", "messages")
DECLARABLE_FORMATS = ("auto",) + FORMATS
DATA_SUFFIXES = (".json", ".jsonl")

RAW_COLUMNS = ("source", "source_file", "source_row", "format", "raw", "parse_error")


class SourceError(ValueError):
    """A source (``sources.yaml`` entry or data file) that cannot be read at all."""


# --------------------------------------------------------------------------- detection


def detect_format(record: Any) -> str | None:
    """The format of one record, or ``None`` when it matches none (or is not a dict)."""
    if not isinstance(record, dict):
        return None
    if "messages" in record:
        return "messages"
    if "conversations" in record:
        return "sharegpt"
    if "instruction" in record:
        if "response" in record or "context" in record:
            return "dolly"
        if "output" in record and "category" in record:
            return "dolly"
        return "alpaca"  # also when 'output' is missing: normalisation then names the field
    return None


# --------------------------------------------------------------------------- paths


def resolve_under_root(data_root: Path, rel: str | Path, where: str) -> Path:
    """``data_root / rel`` with symlinks resolved; ``SourceError`` if it leaves the data root."""
    root = Path(data_root).resolve()
    rel_path = Path(rel)
    if rel_path.is_absolute():
        raise SourceError(f"{where}: path '{rel}' must be relative to the data root {root}")
    full = (root / rel_path).resolve()
    if not full.is_relative_to(root):
        raise SourceError(f"{where}: path '{rel}' escapes the data root {root} (resolves to {full})")
    return full


def data_files(path: Path, where: str) -> list[Path]:
    """The data files of a source path: the file itself, or every *.json/*.jsonl below a folder."""
    if path.is_dir():
        files = sorted(
            (p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in DATA_SUFFIXES),
            key=lambda p: p.relative_to(path).as_posix(),
        )
        if not files:
            raise SourceError(f"{where}: folder {path} holds no .json/.jsonl data files")
        return files
    if not path.exists():
        raise SourceError(f"{where}: {path} does not exist")
    if path.suffix.lower() not in DATA_SUFFIXES:
        raise SourceError(f"{where}: {path} is not a .json or .jsonl file")
    return [path]


# --------------------------------------------------------------------------- parsing


def _decode(data: bytes, name: str) -> str:
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        raise SourceError(f"{name}: not valid UTF-8 at byte {e.start} (line {line}): {e.reason}") from None


def _json_lines(text: str, name: str) -> list[tuple[int, Any, str, str]]:
    """(line index, record, raw text, parse error) for every non-blank line.

    Lines are split on ``\\n`` only: JSON strings may hold U+2028 and friends unescaped, which
    ``str.splitlines`` would treat as line ends.
    """
    out: list[tuple[int, Any, str, str]] = []
    for i, line in enumerate(text.split("\n")):
        line = line.rstrip("\r")
        if not line.strip():
            continue
        try:
            out.append((i, json.loads(line), "", ""))
        except json.JSONDecodeError as e:
            out.append((i, None, line, f"{name} line {i + 1}: invalid JSON: {e.msg} (column {e.colno})"))
    return out


def _first_line_parses(text: str) -> bool:
    for line in text.split("\n"):
        if line.strip():
            try:
                return isinstance(json.loads(line), dict)
            except json.JSONDecodeError:
                return False
    return False


def _type_name(value: Any) -> str:
    return {
        str: "a string", int: "a number", float: "a number", bool: "a boolean", type(None): "null",
    }.get(type(value), type(value).__name__)


def _document_records(doc: Any, name: str) -> list[Any]:
    if isinstance(doc, list):
        return doc
    if isinstance(doc, dict):
        if detect_format(doc) is not None:
            return [doc]
        lists = [k for k, v in doc.items() if isinstance(v, list)]
        if len(lists) == 1:
            return doc[lists[0]]
        if not lists:
            raise SourceError(
                f"{name}: top-level JSON object holds no list of records (keys {list(doc)[:10]})"
            )
        raise SourceError(f"{name}: top-level JSON object holds several lists {lists[:10]}; expected one")
    raise SourceError(
        f"{name}: top-level JSON value is {_type_name(doc)}; expected a list of records, "
        "an object holding one list, or JSON Lines"
    )


def parse_text(text: str, name: str, suffix: str) -> list[tuple[int, Any, str, str]]:
    """Records of one file's text as (source_row, record, raw text if unparsed, parse error)."""
    if suffix.lower() == ".jsonl":
        stripped = text.lstrip()
        # a .jsonl that really holds one (pretty-printed) JSON document
        if stripped[:1] == "[" and not _first_line_parses(text):
            try:
                doc = json.loads(text)
            except json.JSONDecodeError:
                pass
            else:
                return [(i, r, "", "") for i, r in enumerate(_document_records(doc, name))]
        return _json_lines(text, name)
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as e:
        if e.msg == "Extra data" and _first_line_parses(text):
            return _json_lines(text, name)
        raise SourceError(f"{name}: invalid JSON at line {e.lineno} column {e.colno}: {e.msg}") from None
    return [(i, r, "", "") for i, r in enumerate(_document_records(doc, name))]


def _empty_raw() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "source": pd.Series([], dtype=object),
            "source_file": pd.Series([], dtype=object),
            "source_row": pd.Series([], dtype="int64"),
            "format": pd.Series([], dtype=object),
            "raw": pd.Series([], dtype=object),
            "parse_error": pd.Series([], dtype=object),
        }
    )


def read_file(path: Path, source: str, source_file: str, declared: str = "auto") -> pd.DataFrame:
    """One file of a source as raw rows (columns ``RAW_COLUMNS``)."""
    if declared not in DECLARABLE_FORMATS:
        raise SourceError(f"{source_file}: unknown format '{declared}' (expected one of {', '.join(DECLARABLE_FORMATS)})")
    try:
        data = Path(path).read_bytes()
    except OSError as e:
        raise SourceError(f"{source_file}: cannot read: {e.strerror or e}") from None
    text = _decode(data, source_file)
    items = parse_text(text, source_file, Path(path).suffix)
    if not items:
        return _empty_raw()
    rows, records, raws, errors = zip(*items)
    fmts = [
        "" if err else (declared if declared != "auto" else (detect_format(rec) or ""))
        for rec, err in zip(records, errors)
    ]
    raw_text = [
        raw if err else json.dumps(rec, ensure_ascii=False) for rec, raw, err in zip(records, raws, errors)
    ]
    n = len(rows)
    return pd.DataFrame(
        {
            "source": [source] * n,
            "source_file": [source_file] * n,
            "source_row": pd.Series(rows, dtype="int64"),
            "format": fmts,
            "raw": raw_text,
            "parse_error": list(errors),
        }
    )


def read_source(spec: "SourceSpec", data_root: Path) -> pd.DataFrame:
    """Every record of one source, one row each, in file order then record order.

    Columns: ``source``, ``source_file`` (relative to the data root, POSIX), ``source_row``
    (see the module docstring), ``format`` (declared, or detected per record; "" if unknown or
    unparsed), ``raw`` (the record as JSON text, ``ensure_ascii=False``; the line itself for an
    unparsed line), ``parse_error`` ("" or the reason).
    """
    root = Path(data_root).resolve()
    where = f"source '{spec.name}'"
    path = resolve_under_root(root, spec.path, where)
    frames = []
    for f in data_files(path, where):
        real = f.resolve()
        if not real.is_relative_to(root):
            raise SourceError(f"{where}: file {f} escapes the data root {root}")
        rel = f.relative_to(root).as_posix()
        frames.append(read_file(real, spec.name, rel, spec.format))
    frames = [fr for fr in frames if len(fr)]
    if not frames:
        return _empty_raw()
    out = pd.concat(frames, ignore_index=True)
    out["source_row"] = out["source_row"].astype("int64")
    return out


def read_sources(specs: Iterable["SourceSpec"], data_root: Path) -> pd.DataFrame:
    """``read_source`` for every spec, concatenated in the given order."""
    frames = [fr for fr in (read_source(s, data_root) for s in specs) if len(fr)]
    if not frames:
        return _empty_raw()
    out = pd.concat(frames, ignore_index=True)
    out["source_row"] = out["source_row"].astype("int64")
    return out
