"""The pool sources the project ingests, declared in ``<data_root>/sources.yaml``.

The file is either a YAML list of entries or a mapping with a ``sources:`` list. Every entry has
exactly these fields (all strings):

- ``name``: lowercase identifier ``[a-z][a-z0-9_]*``, unique; becomes the ``source`` column;
- ``path``: relative to the data root, a ``.json``/``.jsonl`` file or a folder of them (read
  recursively, sorted); it must stay inside the data root after resolving symlinks and exist;
- ``format``: ``auto`` (detect per record) | ``alpaca`` | ``dolly`` | ``sharegpt`` | ``messages``;
- ``license``: the data licence (non-empty);
- ``origin``: where the data comes from (repository, path, commit);
- ``description``: free text.

Any problem raises ``SourceError`` naming the file, the line, the entry index and the field.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from instsel_assets import settings
from instsel_assets.ingest.formats import (
    DATA_SUFFIXES,
    DECLARABLE_FORMATS,
    SourceError,
    resolve_under_root,
)

__all__ = ["SourceSpec", "SourceError", "load_sources", "load_sources_file", "SOURCES_FILE", "FIELDS"]

SOURCES_FILE = "sources.yaml"
FIELDS = ("name", "path", "format", "license", "origin", "description")
NON_EMPTY = ("name", "path", "format", "license")
NAME_RE = re.compile(r"[a-z][a-z0-9_]*")


@dataclass(frozen=True)
class SourceSpec:
    name: str
    path: str  # relative to the data root
    format: str  # one of formats.DECLARABLE_FORMATS
    license: str
    origin: str
    description: str


def _entries(doc: Any, file: Path) -> list[Any]:
    if isinstance(doc, dict):
        if set(doc) != {"sources"}:
            raise SourceError(f"{file}: expected a list of sources or a mapping with only the key 'sources' (got keys {sorted(map(str, doc))})")
        doc = doc["sources"]
    if doc is None:
        doc = []
    if not isinstance(doc, list):
        raise SourceError(f"{file}: expected a list of sources (got {type(doc).__name__})")
    if not doc:
        raise SourceError(f"{file}: lists no sources")
    return doc


def _entry_lines(text: str) -> list[tuple[int, dict[str, int]]]:
    """(line of the entry, {field: line of its value}) per entry, 1-based, for error messages."""
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError:  # pragma: no cover - safe_load succeeded on the same text
        return []
    if isinstance(node, yaml.MappingNode):
        node = next((v for k, v in node.value if getattr(k, "value", None) == "sources"), None)
    if not isinstance(node, yaml.SequenceNode):
        return []
    out = []
    for item in node.value:
        fields = {}
        if isinstance(item, yaml.MappingNode):
            fields = {str(k.value): v.start_mark.line + 1 for k, v in item.value if isinstance(k, yaml.ScalarNode)}
        out.append((item.start_mark.line + 1, fields))
    return out


def _spec(entry: Any, i: int, file: Path, root: Path, lines: tuple[int, dict[str, int]] | None = None) -> SourceSpec:
    entry_line, field_lines = lines or (0, {})
    label = ""

    def where(field: str | None = None) -> str:
        line = field_lines.get(field, entry_line) if field else entry_line
        return f"{file}{f' line {line}' if line else ''}: sources[{i}]{label}"

    if not isinstance(entry, dict):
        raise SourceError(f"{where()}: expected a mapping with fields {', '.join(FIELDS)} (got {type(entry).__name__})")
    if "name" in entry and isinstance(entry["name"], str):
        label = f" ('{entry['name']}')"
    missing = [f for f in FIELDS if f not in entry]
    if missing:
        raise SourceError(f"{where()}: missing field(s) {', '.join(repr(f) for f in missing)}")
    unknown = [str(k) for k in entry if k not in FIELDS]
    if unknown:
        raise SourceError(f"{where(unknown[0])}: unknown field(s) {', '.join(repr(f) for f in unknown)} (expected {', '.join(FIELDS)})")
    for f in FIELDS:
        v = entry[f]
        if v is None:
            v = ""
        if not isinstance(v, str):
            raise SourceError(f"{where(f)}: field '{f}' must be a string (got {type(v).__name__})")
        if f in NON_EMPTY and not v.strip():
            raise SourceError(f"{where(f)}: field '{f}' is empty")
    values = {f: ("" if entry[f] is None else entry[f].strip()) for f in FIELDS}
    name = values["name"]
    if not NAME_RE.fullmatch(name):
        raise SourceError(f"{where('name')}: field 'name': {name!r} is not a lowercase identifier [a-z][a-z0-9_]*")
    if values["format"] not in DECLARABLE_FORMATS:
        raise SourceError(
            f"{where('format')}: field 'format': unknown format {values['format']!r} (expected one of {', '.join(DECLARABLE_FORMATS)})"
        )
    full = resolve_under_root(root, values["path"], f"{where('path')}: field 'path'")
    if not full.exists():
        raise SourceError(f"{where('path')}: field 'path': {values['path']!r} does not exist under {root}")
    if full.is_file() and full.suffix.lower() not in DATA_SUFFIXES:
        raise SourceError(f"{where('path')}: field 'path': {values['path']!r} is not a .json/.jsonl file or a folder")
    return SourceSpec(**values)


def load_sources(data_root: Path | None = None) -> list[SourceSpec]:
    """The validated entries of ``<data_root>/sources.yaml`` (default ``settings.data_root()``)."""
    root = Path(data_root if data_root is not None else settings.data_root()).resolve()
    return load_sources_file(root / SOURCES_FILE, root)


def load_sources_file(file: Path, data_root: Path | None = None) -> list[SourceSpec]:
    """The validated entries of a sources file; paths are relative to ``data_root`` (default: the file's folder)."""
    file = Path(file)
    root = Path(data_root if data_root is not None else file.parent).resolve()
    try:
        text = file.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise SourceError(f"{file}: not found (the data root must hold {SOURCES_FILE})") from None
    except (OSError, UnicodeDecodeError) as e:
        raise SourceError(f"{file}: cannot read: {e}") from None
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        at = f" at line {mark.line + 1} column {mark.column + 1}" if mark is not None else ""
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise SourceError(f"{file}: invalid YAML{at}: {problem}") from None
    specs: list[SourceSpec] = []
    seen: dict[str, int] = {}
    entries = _entries(doc, file)
    lines = _entry_lines(text)
    for i, entry in enumerate(entries):
        spec = _spec(entry, i, file, root, lines[i] if i < len(lines) else None)
        if spec.name in seen:
            line = lines[i][1].get("name", lines[i][0]) if i < len(lines) else 0
            raise SourceError(
                f"{file}{f' line {line}' if line else ''}: sources[{i}]: field 'name': duplicate name "
                f"'{spec.name}' (also sources[{seen[spec.name]}])"
            )
        seen[spec.name] = i
        specs.append(spec)
    return specs
