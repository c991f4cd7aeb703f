"""A persistent cache of judge replies, keyed by ``JudgeRequest.key(backend_id, model)``.

The key is the sha256 of the exact payload a backend receives (with the backend's identity and the rating
spec), so a reply is reused only for the very same request to the very same model, and a request already
paid for is never paid again.

Storage: append-only JSON Lines shards in one directory. The directory is a constructor argument; callers
use ``default_cache_dir()`` = ``settings.storage_root() / "cache" / "judge"`` (``$INSTSEL_HOME/cache/judge``)
unless they have a reason not to. Deleting the directory is always safe: it only costs the answers again.

- Every answer is written as soon as it arrives: one line, then ``flush`` and ``os.fsync``, so a crash loses
  no answer that was paid for.
- Each ``JudgeCache`` writes its own shard, ``judge-<UTC time>-<pid>-<random>.jsonl``, created on its first
  write. Concurrent processes (and several caches in one process) never interleave lines, and readers take
  the union of every shard.
- A crash in the middle of a write leaves a torn last line in that process's shard (no newline, not valid
  JSON). Readers skip it with a warning; it is not an error. An unreadable line anywhere else is not a crash
  artefact (something else changed the file) and raises ``ValueError`` naming the file and line.
- Only real answers are stored: a reply with ``error`` set or without text (a failed request, a request the
  budget stopped) is refused by ``add``.

One line: ``{"v": 1, "key", "text", "prompt_tokens", "completion_tokens", "finish_reason", "model",
"backend_id", "digit_probs" ({"<digit>": p} or null), "created" (UTC, ISO 8601)}``.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import uuid
from collections.abc import Iterable
from datetime import datetime, timezone
from pathlib import Path
from typing import IO, Any

from instsel_assets import settings
from instsel_assets.judge.types import JudgeReply

log = logging.getLogger(__name__)

CACHE_FORMAT = 1
SHARD_GLOB = "judge-*.jsonl"


def default_cache_dir() -> Path:
    """Where callers keep the judge cache: ``settings.storage_root() / "cache" / "judge"``."""
    return settings.storage_root() / "cache" / "judge"


class JudgeCache:
    """Replies by request key, read from every shard in ``directory`` (module docstring).

    ``lookup(keys)`` returns the cached replies (``cached=True``) of the keys it holds and first reads what
    other writers appended since the last look; ``present(keys)`` says which keys are held without counting
    hits or misses (the dry run); ``add(key, reply, model=..., backend_id=...)`` stores one answer durably.
    Thread-safe. ``stats()``: ``hits``, ``misses``, ``written`` (by this instance), ``entries``, ``shards``,
    ``torn_lines`` (torn last lines skipped).
    """

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._entries: dict[str, JudgeReply] = {}
        self._offsets: dict[Path, int] = {}  # bytes of each shard already read (whole lines only)
        self._lines: dict[Path, int] = {}  # lines of each shard already read
        self._torn_seen: set[tuple[Path, int]] = set()
        self._shard: Path | None = None
        self._file: IO[str] | None = None
        self.hits = 0
        self.misses = 0
        self.written = 0
        with self._lock:
            self._refresh()

    # ------------------------------------------------------------------------------------------ reading
    def _refresh(self) -> None:
        for path in sorted(self.directory.glob(SHARD_GLOB)):
            if path == self._shard:
                continue  # our own answers are already in memory
            try:
                size = path.stat().st_size
            except FileNotFoundError:
                continue
            if size > self._offsets.get(path, 0):
                self._read_shard(path)

    def _read_shard(self, path: Path) -> None:
        start = self._offsets.get(path, 0)
        with open(path, "rb") as f:
            f.seek(start)
            data = f.read()
        complete, newline, tail = data.rpartition(b"\n")
        consumed = len(complete) + len(newline)
        line_no = self._lines.get(path, 0)
        if newline:
            for raw in complete.split(b"\n"):
                line_no += 1
                if not raw.strip():
                    continue
                record = self._parse(raw)
                if record is None:
                    raise ValueError(
                        f"judge cache shard {path}, line {line_no}: not a valid cache record; only a torn LAST line "
                        f"is expected after a crash, so the file was changed by something else. Delete the file to "
                        f"continue (its replies will be requested again).")
                self._store(record, path, line_no)
        if tail.strip():
            record = self._parse(tail)
            if record is not None:  # a whole record cut just before its newline: it was paid, keep it
                line_no += 1
                self._store(record, path, line_no)
                consumed += len(tail)
            elif (path, start + consumed) not in self._torn_seen:
                self._torn_seen.add((path, start + consumed))
                log.warning("judge cache shard %s: skipped a torn last line (%d bytes, line %d) left by an "
                            "interrupted write; that reply will be requested again", path, len(tail), line_no + 1)
        self._offsets[path] = start + consumed
        self._lines[path] = line_no

    @staticmethod
    def _parse(raw: bytes) -> dict[str, Any] | None:
        try:
            record = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError):
            return None
        if not isinstance(record, dict) or not isinstance(record.get("key"), str) or not isinstance(
                record.get("text"), str):
            return None
        return record

    def _store(self, record: dict[str, Any], path: Path, line_no: int) -> None:
        if record.get("v") != CACHE_FORMAT:
            log.warning("judge cache shard %s, line %d: record format %r is not %d; skipped", path, line_no,
                        record.get("v"), CACHE_FORMAT)
            return
        if record["key"] in self._entries:
            return  # the same answer paid twice by concurrent runs: the first one read wins
        probs = record.get("digit_probs")
        self._entries[record["key"]] = JudgeReply(
            text=record["text"],
            prompt_tokens=int(record.get("prompt_tokens") or 0),
            completion_tokens=int(record.get("completion_tokens") or 0),
            finish_reason=record.get("finish_reason"),
            cached=True,
            digit_probs=None if probs is None else {int(d): float(p) for d, p in probs.items()},
        )

    def lookup(self, keys: Iterable[str]) -> dict[str, JudgeReply]:
        """The cached replies of ``keys`` (each with ``cached=True``); counts one hit or miss per distinct key."""
        with self._lock:
            self._refresh()
            found: dict[str, JudgeReply] = {}
            for key in dict.fromkeys(keys):
                reply = self._entries.get(key)
                if reply is None:
                    self.misses += 1
                else:
                    self.hits += 1
                    found[key] = reply
            return found

    def present(self, keys: Iterable[str]) -> set[str]:
        """The keys of ``keys`` held in the cache; counts nothing (used by the dry run)."""
        with self._lock:
            self._refresh()
            return {k for k in keys if k in self._entries}

    # ------------------------------------------------------------------------------------------ writing
    def _open_shard(self) -> IO[str]:
        stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S")
        path = self.directory / f"judge-{stamp}-{os.getpid()}-{uuid.uuid4().hex[:8]}.jsonl"
        handle = open(path, "x", encoding="utf-8", newline="\n")
        try:  # make the new directory entry durable too
            fd = os.open(self.directory, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        except OSError:
            pass
        self._shard = path
        return handle

    def add(self, key: str, reply: JudgeReply, *, model: str, backend_id: str) -> None:
        """Store one answer durably (written, flushed and fsynced before returning).

        Raises ``ValueError`` for a reply that is not an answer (``error`` set, or ``text`` None): failures
        and budget stops are never cached, so the next run asks again.
        """
        if reply.error is not None or reply.text is None:
            raise ValueError(f"judge cache: request {key[:12]} has no answer to store (error={reply.error!r}); "
                             f"failures and budget stops are never cached")
        record = {
            "v": CACHE_FORMAT,
            "key": key,
            "text": reply.text,
            "prompt_tokens": int(reply.prompt_tokens),
            "completion_tokens": int(reply.completion_tokens),
            "finish_reason": reply.finish_reason,
            "model": model,
            "backend_id": backend_id,
            "digit_probs": None if reply.digit_probs is None else {str(d): float(p)
                                                                   for d, p in reply.digit_probs.items()},
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z"),
        }
        line = json.dumps(record, ensure_ascii=False, separators=(",", ":")) + "\n"
        with self._lock:
            if self._file is None:
                self._file = self._open_shard()
            self._file.write(line)
            self._file.flush()
            os.fsync(self._file.fileno())
            self.written += 1
            if key not in self._entries:
                self._entries[key] = JudgeReply(
                    text=reply.text, prompt_tokens=reply.prompt_tokens, completion_tokens=reply.completion_tokens,
                    finish_reason=reply.finish_reason, cached=True,
                    digit_probs=None if reply.digit_probs is None else dict(reply.digit_probs))

    # ------------------------------------------------------------------------------------------ misc
    @property
    def shard_path(self) -> Path | None:
        """This instance's shard (None until the first ``add``)."""
        return self._shard

    def __contains__(self, key: object) -> bool:
        with self._lock:
            return key in self._entries

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)

    def stats(self) -> dict[str, int]:
        with self._lock:
            return {"hits": self.hits, "misses": self.misses, "written": self.written,
                    "entries": len(self._entries), "shards": len(set(self._offsets) | ({self._shard} - {None})),
                    "torn_lines": len(self._torn_seen)}

    def close(self) -> None:
        """Close this instance's shard (writes are already durable; a later ``add`` opens a new shard)."""
        with self._lock:
            if self._file is not None:
                self._file.close()
                self._file = None

    def __enter__(self) -> JudgeCache:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            if self._file is not None:
                self._file.close()
        except Exception:
            pass

    def __repr__(self) -> str:
        return f"JudgeCache({str(self.directory)!r}, entries={len(self._entries)})"
