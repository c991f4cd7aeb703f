"""``instsel validate``: the pool's verdict on a data file, a folder or a sources file, before ingesting it.

The input is read exactly as the ``raw_datasets/<source>`` assets read it (``formats.read_source``,
the same rules and errors) and normalised and deduplicated exactly as ``instruction_pool`` does
(``normalize.build_pool``), so the counts and reasons are those the pool would get:

- a ``.json``/``.jsonl`` file or a folder of them: one source with the declared ``--format``
  (default ``auto``). Symlinks must stay inside the data root (``INSTSEL_DATA_DIR``) when the
  path is inside it, else inside the path's parent folder;
- a ``.yaml``/``.yml`` file: a sources file (``sources.yaml``'s format, paths relative to its
  folder): every entry is checked as ``load_sources`` checks it, then every source is read, and
  duplicates are found across sources as in the pool.

``validate`` returns a ``Validation`` (read = kept + duplicates + quarantined per source, and every
quarantined or duplicate row with its file, row, line and reason) or raises ``SourceError`` with
the one-line message the raw asset would fail with. ``run`` is the command: it prints the report
(or JSON), or the one-line error on stderr and exits 1; it never prints a traceback.
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from instsel_assets import settings
from instsel_assets.ingest.formats import (
    DECLARABLE_FORMATS,
    LAYOUTS_ATTR,
    SourceError,
    printable,
    read_sources,
)
from instsel_assets.ingest.normalize import build_pool
from instsel_assets.ingest.sources import SourceSpec, load_sources_file

SOURCES_SUFFIXES = (".yaml", ".yml")
COUNT_KEYS = ("read", "kept", "duplicates", "quarantined")


@dataclass
class Validation:
    path: str
    data_root: str
    mode: str  # "path" (one file or folder) or "sources" (a sources file)
    sources: list[dict[str, Any]] = field(default_factory=list)  # name, path, format, files + COUNT_KEYS
    rows: list[dict[str, Any]] = field(default_factory=list)  # source, file, row, line, kind, reason, duplicate_of

    @property
    def totals(self) -> dict[str, int]:
        return {k: sum(int(s[k]) for s in self.sources) for k in COUNT_KEYS}

    def to_dict(self) -> dict[str, Any]:
        return {"ok": True, "path": self.path, "data_root": self.data_root, "mode": self.mode,
                "totals": self.totals, "sources": self.sources, "rows": self.rows}


def _root_and_rel(path: Path, data_root: Path | None) -> tuple[Path, str]:
    """The data root a path is read under (as the raw asset would) and the path relative to it."""
    absolute = Path(os.path.abspath(path))
    # resolve the folders above, not the path itself: a symlink must be judged by where it points
    anchor = Path(os.path.realpath(absolute.parent)) / absolute.name if absolute.name else absolute
    root = Path(data_root if data_root is not None else settings.data_root()).resolve()
    if anchor == root or anchor.is_relative_to(root):
        return root, anchor.relative_to(root).as_posix()
    return anchor.parent, anchor.name


def validate(path: str | Path, fmt: str = "auto", data_root: Path | None = None) -> Validation:
    """Read ``path`` with the pool's rules; ``SourceError`` when it is unusable (see the module docstring)."""
    if fmt not in DECLARABLE_FORMATS:
        raise SourceError(f"unknown format {fmt!r} (expected one of {', '.join(DECLARABLE_FORMATS)})")
    p = Path(path)
    if not p.exists() and not p.is_symlink():
        raise SourceError(f"{path}: does not exist")
    if p.suffix.lower() in SOURCES_SUFFIXES and not p.is_dir():
        if fmt != "auto":
            raise SourceError(f"{path}: --format applies to a data file or folder; a sources file declares the "
                              "format of each source")
        root = Path(os.path.realpath(Path(os.path.abspath(p)).parent))
        specs = load_sources_file(p, root)
        mode = "sources"
    else:
        root, rel = _root_and_rel(p, data_root)
        name = p.name or str(path)
        specs = [SourceSpec(name=name, path=rel, format=fmt, license="(validate)", origin="(validate)",
                            description="")]
        mode = "path"
    raw = read_sources(specs, root)
    result = build_pool(raw)
    layouts: dict[str, str] = raw.attrs.get(LAYOUTS_ATTR, {})
    report = Validation(path=str(path), data_root=str(root), mode=mode)
    for spec in specs:
        files = sorted(set(raw.loc[raw["source"] == spec.name, "source_file"]))
        counts = result.counts.get(spec.name, dict.fromkeys(COUNT_KEYS, 0))
        report.sources.append({"name": spec.name, "path": spec.path, "format": spec.format, "files": files,
                               **{k: int(counts[k]) for k in COUNT_KEYS}})
    q = result.quarantine
    for source, sfile, srow, kind, reason, dup in zip(q["source"], q["source_file"], q["source_row"], q["kind"],
                                                      q["reason"], q["duplicate_of"]):
        line = int(srow) + 1 if layouts.get(sfile) == "json_lines" else None
        report.rows.append({"source": source, "file": sfile, "row": int(srow), "line": line, "kind": kind,
                            "reason": reason, "duplicate_of": dup})
    return report


def _location(row: dict[str, Any]) -> str:
    return f"{row['file']} line {row['line']}" if row["line"] is not None else f"{row['file']} record {row['row']}"


def _reason(row: dict[str, Any], where: str) -> str:
    reason = row["reason"]
    return reason[len(where) + 2:] if reason.startswith(where + ": ") else reason


def _counts(c: dict[str, Any]) -> str:
    return (f"read {c['read']} = kept {c['kept']} + duplicates {c['duplicates']} "
            f"+ quarantined {c['quarantined']}")


def format_text(report: Validation) -> str:
    """The human report: counts per source, then every quarantined and duplicate row with its reason."""
    lines = []
    if report.mode == "path":
        s = report.sources[0]
        lines.append(f"{printable(report.path)}: {_counts(s)} ({len(s['files'])} file(s), format {s['format']})")
    else:
        lines.append(f"{printable(report.path)}: {len(report.sources)} source(s), "
                     f"data root {printable(report.data_root)}")
        for s in report.sources:
            lines.append(f"  {s['name']}: {_counts(s)} ({len(s['files'])} file(s), format {s['format']})")
        lines.append(f"total: {_counts(report.totals)}")
    for kind, title in (("invalid", "quarantined"), ("duplicate", "duplicates")):
        rows = [r for r in report.rows if r["kind"] == kind]
        if rows:
            lines.append(f"{title} ({len(rows)}):")
            for r in rows:
                where = _location(r)
                lines.append(f"  {printable(where)}: {printable(_reason(r, where))}")
    return "\n".join(lines)


def one_line(message: str) -> str:
    """A message as one printable line."""
    return printable(" ".join(str(message).splitlines()))


def run(path: str, fmt: str = "auto", as_json: bool = False, out: TextIO | None = None,
        err: TextIO | None = None) -> int:
    """The ``instsel validate`` command: 0 when the input is usable (rows may be quarantined), 1 when not."""
    out = out or sys.stdout
    err = err or sys.stderr
    try:
        report = validate(path, fmt)
    except SourceError as e:
        message = one_line(str(e))
        if as_json:
            print(json.dumps({"ok": False, "path": str(path), "error": message}, ensure_ascii=False), file=out)
        print(f"instsel validate: {message}", file=err)
        return 1
    if as_json:
        text = json.dumps(report.to_dict(), ensure_ascii=False, indent=2)
        print(text.encode("utf-8", "backslashreplace").decode("utf-8"), file=out)
    else:
        print(format_text(report), file=out)
    return 0
