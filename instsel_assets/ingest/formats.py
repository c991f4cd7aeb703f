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
  non-blank line parses on its own). Lines end with ``\\n``, ``\\r\\n`` or a lone ``\\r`` (a file
  may mix them; U+2028 and friends are not line ends). ``source_row`` is the 0-based physical
  line index (line number - 1, blank lines counted but yielding no row), so a row is found at
  line ``source_row + 1``. A blank line holds only JSON whitespace (space, tab); any other line
  is a record: one that cannot be used as read becomes a row with ``parse_error`` set
  (quarantined later, never dropped silently): invalid JSON (also a number too long to convert
  or nesting too deep), bytes that are not UTF-8, an unpaired UTF-16 surrogate escape
  (``"\\ud83d"``, half an emoji), or an object repeating a key with a different value. A UTF-8
  byte order mark at the start of a line (files concatenated with ``cat``) is ignored.

Records of a JSON document get the same per-record checks (surrogates, repeated keys), named
``record N`` (the 0-based list index) instead of ``line N``.

A UTF-8 byte order mark is accepted. Problems with a whole file raise ``SourceError`` with a
one-line message naming the file and the line/column where there is one: missing, not a regular
file, compressed or UTF-16/UTF-32, invalid UTF-8 in a JSON document, a JSON document that does
not parse, a top level that is a number/string/... A folder source is read recursively,
following symlinked folders (a loop, or a folder resolving out of the data root, is an error
before it is walked); a broken symlink or a non-regular file with a data suffix is an error, a
file that resolves out of the data root or whose name is not UTF-8 is an error, and so is a
source that yields no record at all (empty files, only blank lines, an empty list).
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable

import pandas as pd

if TYPE_CHECKING:  # pragma: no cover
    from instsel_assets.ingest.sources import SourceSpec

FORMATS = ("alpaca", "dolly", "sharegpt", "messages")
DECLARABLE_FORMATS = ("auto",) + FORMATS
DATA_SUFFIXES = (".json", ".jsonl")

RAW_COLUMNS = ("source", "source_file", "source_row", "format", "raw", "parse_error")

# ``DataFrame.attrs`` key of the frames of read_file/read_source/read_sources: {source_file: layout},
# layout "json_lines" (source_row + 1 is the line number) or "json" (source_row is the list index).
LAYOUTS_ATTR = "instsel_layouts"

_LINE_BREAK = re.compile(r"\r\n|\r|\n")
_LINE_BREAK_BYTES = re.compile(rb"\r\n|\r|\n")
_JSON_BLANK = " \t"
_SURROGATE = re.compile("[\ud800-\udfff]")
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")  # how an unpaired surrogate can get into parsed JSON
_MAGIC = (
    (b"\x1f\x8b", "gzip-compressed"),
    (b"PK\x03\x04", "a zip archive"),
    (b"BZh", "bzip2-compressed"),
    (b"\xfd7zXZ\x00", "xz-compressed"),
    (b"\x28\xb5\x2f\xfd", "zstd-compressed"),
)
_WIDE_BOMS = (
    (b"\xff\xfe\x00\x00", "UTF-32"),
    (b"\x00\x00\xfe\xff", "UTF-32"),
    (b"\xff\xfe", "UTF-16"),
    (b"\xfe\xff", "UTF-16"),
)


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


def printable(text: str) -> str:
    """``text`` safe to print on one line: undecodable bytes (surrogate escapes) and control
    characters written as escapes."""
    text = text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in text)


def resolve_under_root(data_root: Path, rel: str | Path, where: str) -> Path:
    """``data_root / rel`` with symlinks resolved; ``SourceError`` if it leaves the data root."""
    root = Path(data_root).resolve()
    rel_path = Path(rel)
    if rel_path.is_absolute():
        raise SourceError(f"{where}: path '{rel}' must be relative to the data root {root}")
    try:
        full = (root / rel_path).resolve()
    except (RuntimeError, OSError) as e:  # Python 3.11 raises RuntimeError on a symlink loop
        raise SourceError(f"{where}: path '{rel}' cannot be resolved (symlink loop?): {e}") from None
    if not full.is_relative_to(root):
        raise SourceError(f"{where}: path '{rel}' escapes the data root {root} (resolves to {full})")
    return full


def _is_dir(entry: os.DirEntry) -> bool:
    try:
        return entry.is_dir()  # follows symlinks
    except OSError:  # a symlink loop
        return False


def _folder_files(top: Path, where: str, root: Path | None) -> list[Path]:
    """Every *.json/*.jsonl below ``top``, following symlinked folders (``Path.rglob`` of Python
    3.11 skips them silently), with loops, broken symlinks, non-regular files and folders that
    resolve out of ``root`` (checked before walking them) as errors."""
    out: list[Path] = []
    stack: list[tuple[Path, tuple[str, ...]]] = [(top, (os.path.realpath(top),))]
    while stack:
        folder, ancestors = stack.pop()
        try:
            entries = list(os.scandir(folder))
        except OSError as e:
            raise SourceError(f"{where}: cannot list folder {printable(str(folder))}: {e.strerror or e}") from None
        for entry in entries:
            p = Path(entry.path)
            if _is_dir(entry):
                real = os.path.realpath(p)
                if root is not None and not Path(real).is_relative_to(root):
                    shown = p.relative_to(root).as_posix() if p.is_relative_to(root) else str(p)
                    raise SourceError(f"{where}: folder {printable(shown)} escapes the data root {root} "
                                      f"(resolves to {printable(real)})")
                if real in ancestors:
                    raise SourceError(f"{where}: {printable(str(p))} is a symlink loop (it leads back to {real})")
                stack.append((p, ancestors + (real,)))
            elif p.suffix.lower() in DATA_SUFFIXES:
                if entry.is_file():
                    out.append(p)
                elif entry.is_symlink() and not p.exists():
                    raise SourceError(f"{where}: {printable(str(p))} is a broken symlink (or a symlink loop)")
                else:
                    raise SourceError(f"{where}: {printable(str(p))} is not a regular file (a pipe, socket or device)")
    return sorted(out, key=lambda p: p.relative_to(top).as_posix())


def data_files(path: Path, where: str, root: Path | None = None) -> list[Path]:
    """The data files of a source path: the file itself, or every *.json/*.jsonl below a folder
    (not walking into a symlinked folder that resolves out of ``root``, when given)."""
    if path.is_dir():
        files = _folder_files(path, where, Path(root).resolve() if root is not None else None)
        if not files:
            raise SourceError(f"{where}: folder {path} holds no .json/.jsonl data files")
        return files
    if not path.exists():
        if path.is_symlink():
            raise SourceError(f"{where}: {path} is a broken symlink (or a symlink loop)")
        raise SourceError(f"{where}: {path} does not exist")
    if path.suffix.lower() not in DATA_SUFFIXES:
        raise SourceError(f"{where}: {path} is not a .json or .jsonl file")
    if not path.is_file():  # reading a FIFO would wait forever
        raise SourceError(f"{where}: {path} is not a regular file (a pipe, socket or device)")
    return [path]


# --------------------------------------------------------------------------- parsing


def _sniff(data: bytes, name: str) -> None:
    for magic, what in _MAGIC:
        if data.startswith(magic):
            raise SourceError(f"{name}: line 1: the file is {what}, not JSON text; decompress it first")
    for bom, encoding in _WIDE_BOMS:
        if data.startswith(bom):
            raise SourceError(f"{name}: line 1: the file is {encoding}-encoded (byte order mark); convert it to UTF-8")
    if b"\x00" in data[:4]:
        raise SourceError(f"{name}: line 1: NUL bytes at the start of the file: UTF-16/UTF-32 without a byte order "
                          "mark, or not text; convert it to UTF-8")


def _decode(data: bytes, name: str) -> tuple[str, str]:
    """The text (undecodable bytes kept as surrogate escapes) and "" or the whole-file UTF-8 error."""
    try:
        return data.decode("utf-8-sig"), ""
    except UnicodeDecodeError as e:
        line = len(_LINE_BREAK_BYTES.findall(data, 0, e.start)) + 1
        error = f"{name}: not valid UTF-8 at byte {e.start} (line {line}): {e.reason}"
        return data.decode("utf-8-sig", errors="surrogateescape"), error


class _Repeated(dict):
    """A JSON object that repeated a key with a different value (the last value kept, as ``dict``)."""

    key = ""


class _PairsHook:
    """``object_pairs_hook`` that notices objects repeating a key with a different value."""

    def __init__(self) -> None:
        self.repeated: list[str] = []

    def __call__(self, pairs: list[tuple[str, Any]]) -> dict:
        obj = dict(pairs)
        if len(obj) != len(pairs):
            first: dict[str, Any] = {}
            for k, v in pairs:
                if k in first and first[k] != v:
                    self.repeated.append(k)
                    marked = _Repeated(obj)
                    marked.key = k
                    return marked
                first.setdefault(k, v)
        return obj


def _repeated_key(value: Any) -> str | None:
    """The repeated key of the first ``_Repeated`` object inside ``value`` (iterative: records may nest deep)."""
    stack = [value]
    while stack:
        v = stack.pop()
        if isinstance(v, _Repeated):
            return v.key
        if isinstance(v, dict):
            stack.extend(v.values())
        elif isinstance(v, list):
            stack.extend(v)
    return None


def _repeated_reason(key: str) -> str:
    return f"an object repeats the key {_short(printable(key))!r} with a different value"


def _short(text: str, limit: int = 60) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _loads(text: str) -> tuple[Any, str]:
    """(value, "") or (None, reason) for one JSON text; never raises."""
    hook = _PairsHook()
    try:
        value = json.loads(text, object_pairs_hook=hook)
    except json.JSONDecodeError as e:
        return None, f"invalid JSON: {e.msg} (column {e.colno})"
    except RecursionError:
        return None, "invalid JSON: nested too deeply"
    except ValueError as e:  # an integer literal longer than sys.get_int_max_str_digits()
        return None, f"invalid JSON: {str(e).split(':')[0]}"
    if hook.repeated:
        return None, _repeated_reason(hook.repeated[0])
    return value, ""


def _dump(record: Any, check: bool = True) -> tuple[str, str]:
    """(raw JSON text, "") or (ASCII-escaped raw text, reason) when the record holds an unpaired surrogate
    (only looked for when ``check``: the source text holds a surrogate escape)."""
    text = json.dumps(record, ensure_ascii=False)
    m = _SURROGATE.search(text) if check else None
    if m is None:
        return text, ""
    return (json.dumps(record, ensure_ascii=True),
            f"invalid Unicode: unpaired surrogate \\u{ord(m.group()):04x} (half of a UTF-16 pair, e.g. a cut emoji)")


def _split_lines(text: str) -> list[str]:
    if "\r" in text:
        text = text.replace("\r\n", "\n").replace("\r", "\n")
    return text.split("\n")


def _json_lines(text: str, name: str, undecodable: bool = False) -> list[tuple[int, Any, str, str]]:
    """(line index, record, raw text, parse error) for every non-blank line; ``undecodable``: the text
    holds bytes that were not UTF-8 (as surrogate escapes from ``_decode``)."""
    out: list[tuple[int, Any, str, str]] = []
    escapes = _SURROGATE_ESCAPE.search(text) is not None
    for i, line in enumerate(_split_lines(text)):
        if line.startswith("\ufeff"):
            line = line[1:]
        if not line.strip(_JSON_BLANK):
            continue
        where = f"{name} line {i + 1}"
        bad = _SURROGATE.search(line) if undecodable else None
        if bad is not None:
            at = len(line[: bad.start()].encode("utf-8", "surrogateescape")) + 1
            out.append((i, None, _replace_undecodable(line), f"{where}: not valid UTF-8 (byte {at} of the line)"))
            continue
        record, error = _loads(line)
        if not error:
            raw, error = _dump(record, escapes and "\\u" in line)
            if not error:
                out.append((i, record, raw, ""))
                continue
        out.append((i, None, line, f"{where}: {error}"))
    return out


def _replace_undecodable(line: str) -> str:
    """A line with undecodable bytes as U+FFFD, storable anywhere."""
    return line.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


def _first_line_parses(text: str) -> bool:
    for line in _split_lines(text):
        if line.startswith("\ufeff"):
            line = line[1:]
        if line.strip(_JSON_BLANK):
            try:
                return isinstance(json.loads(line), dict)
            except (ValueError, RecursionError):
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
        keys = [_short(printable(str(k)), 40) for k in list(doc)[:10]]
        if not lists:
            raise SourceError(f"{name}: top-level JSON object holds no list of records (keys {keys})")
        raise SourceError(f"{name}: top-level JSON object holds several lists {lists[:10]}; expected one")
    raise SourceError(
        f"{name}: top-level JSON value is {_type_name(doc)}; expected a list of records, "
        "an object holding one list, or JSON Lines"
    )


def _document(doc: Any, name: str, hook: _PairsHook, text: str) -> list[tuple[int, Any, str, str]]:
    out: list[tuple[int, Any, str, str]] = []
    escapes = _SURROGATE_ESCAPE.search(text) is not None
    for i, record in enumerate(_document_records(doc, name)):
        raw, error = _dump(record, escapes)
        if not error and hook.repeated:  # rare: find which records repeat a key
            key = _repeated_key(record)
            if key is not None:
                error = _repeated_reason(key)
        if error:
            out.append((i, None, raw, f"{name} record {i}: {error}"))
        else:
            out.append((i, record, raw, ""))
    return out


def _parse(text: str, name: str, suffix: str, utf8_error: str = "") -> tuple[list[tuple[int, Any, str, str]], str]:
    """(items, layout); layout is "json_lines" or "json"."""
    if suffix.lower() == ".jsonl":
        stripped = text.lstrip()
        # a .jsonl that really holds one (pretty-printed) JSON document
        if stripped[:1] == "[" and not _first_line_parses(text):
            hook = _PairsHook()
            try:
                doc = json.loads(text, object_pairs_hook=hook)
            except (ValueError, RecursionError):
                pass
            else:
                if utf8_error:
                    raise SourceError(utf8_error)
                return _document(doc, name, hook, text), "json"
        return _json_lines(text, name, bool(utf8_error)), "json_lines"
    hook = _PairsHook()
    try:
        doc = json.loads(text, object_pairs_hook=hook)
    except json.JSONDecodeError as e:
        if e.msg == "Extra data" and _first_line_parses(text):
            return _json_lines(text, name, bool(utf8_error)), "json_lines"
        if utf8_error:
            raise SourceError(utf8_error) from None
        if not text.strip(_JSON_BLANK + "\r\n"):
            raise SourceError(f"{name}: invalid JSON at line 1 column 1: the file is empty") from None
        raise SourceError(f"{name}: invalid JSON at line {e.lineno} column {e.colno}: {e.msg}") from None
    except RecursionError:
        raise SourceError(f"{name}: invalid JSON: nested too deeply") from None
    except ValueError as e:
        raise SourceError(f"{name}: invalid JSON: {str(e).split(':')[0]}") from None
    if utf8_error:
        raise SourceError(utf8_error)
    return _document(doc, name, hook, text), "json"


def parse_text(text: str, name: str, suffix: str) -> list[tuple[int, Any, str, str]]:
    """Records of one file's text as (source_row, record or None, raw JSON text, parse error)."""
    return _parse(text, name, suffix)[0]


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
    """One file of a source as raw rows (columns ``RAW_COLUMNS``; ``attrs[LAYOUTS_ATTR]`` gives its layout)."""
    if declared not in DECLARABLE_FORMATS:
        raise SourceError(f"{source_file}: unknown format '{declared}' (expected one of {', '.join(DECLARABLE_FORMATS)})")
    try:
        data = Path(path).read_bytes()
    except OSError as e:
        raise SourceError(f"{source_file}: cannot read: {e.strerror or e}") from None
    _sniff(data, source_file)
    text, utf8_error = _decode(data, source_file)
    items, layout = _parse(text, source_file, Path(path).suffix, utf8_error)
    if not items:
        out = _empty_raw()
        out.attrs[LAYOUTS_ATTR] = {source_file: layout}
        return out
    rows, records, raws, errors = zip(*items)
    fmts = [
        "" if err else (declared if declared != "auto" else (detect_format(rec) or ""))
        for rec, err in zip(records, errors)
    ]
    n = len(rows)
    out = pd.DataFrame(
        {
            "source": [source] * n,
            "source_file": [source_file] * n,
            "source_row": pd.Series(rows, dtype="int64"),
            "format": fmts,
            "raw": list(raws),
            "parse_error": list(errors),
        }
    )
    out.attrs[LAYOUTS_ATTR] = {source_file: layout}
    return out


def _concat(frames: list[pd.DataFrame]) -> pd.DataFrame:
    layouts: dict[str, str] = {}
    for fr in frames:
        layouts.update(fr.attrs.get(LAYOUTS_ATTR, {}))
    frames = [fr for fr in frames if len(fr)]
    out = pd.concat(frames, ignore_index=True) if frames else _empty_raw()
    out["source_row"] = out["source_row"].astype("int64")
    out.attrs = {LAYOUTS_ATTR: layouts}
    return out


def read_source(spec: "SourceSpec", data_root: Path) -> pd.DataFrame:
    """Every record of one source, one row each, in file order then record order.

    Columns: ``source``, ``source_file`` (relative to the data root, POSIX), ``source_row``
    (see the module docstring), ``format`` (declared, or detected per record; "" if unknown or
    unparsed), ``raw`` (the record as JSON text, ``ensure_ascii=False``; the line itself for an
    unparsed line), ``parse_error`` ("" or the reason). ``SourceError`` when the source is
    unusable, including when it yields no record at all.
    """
    root = Path(data_root).resolve()
    where = f"source '{spec.name}'"
    path = resolve_under_root(root, spec.path, where)
    frames = []
    files = data_files(path, where, root)
    for f in files:
        rel = f.relative_to(root).as_posix()
        if _SURROGATE.search(rel):
            raise SourceError(f"{where}: file name '{printable(rel)}' is not valid UTF-8; rename it")
        try:
            real = f.resolve()
        except (RuntimeError, OSError) as e:
            raise SourceError(f"{where}: file {rel} cannot be resolved (symlink loop?): {e}") from None
        if not real.is_relative_to(root):
            raise SourceError(f"{where}: file {rel} escapes the data root {root} (resolves to {real})")
        frames.append(read_file(real, spec.name, rel, spec.format))
    out = _concat(frames)
    if not len(out):
        rels = [f.relative_to(root).as_posix() for f in files]
        named = ", ".join(rels[:5]) + (f" and {len(rels) - 5} more" if len(rels) > 5 else "")
        if len(files) == 1 and files[0].stat().st_size == 0:
            why = "the file is empty"
        elif len(files) == 1:
            why = "only blank lines or an empty list"
        else:
            why = "every file is empty, holds only blank lines or an empty list"
        raise SourceError(f"{where}: no records in {named}: {why}")
    return out


def read_sources(specs: Iterable["SourceSpec"], data_root: Path) -> pd.DataFrame:
    """``read_source`` for every spec, concatenated in the given order."""
    return _concat([read_source(s, data_root) for s in specs])
