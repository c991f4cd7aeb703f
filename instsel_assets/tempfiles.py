"""Leftovers of killed writers: every on-disk store here writes a temporary beside its target and renames it into
place (a loss-cache shard ``shard-*.parquet.tmp``, a result-cache entry ``.tmp-*.parquet``, a checkpoint or a
converted model in ``.<name>.tmp-*``), so a reader never sees half a file. A process killed between the write and
the rename (SIGKILL, OOM, a preempted pod) leaves the temporary behind; nothing reads it, but it holds disk (a
converted model is hundreds of MB). ``sweep_stale`` removes such temporaries once they are older than any write
takes, so a writer that is still busy (in this process or another pod sharing the directory) is never disturbed.
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from pathlib import Path

log = logging.getLogger(__name__)

# A temporary untouched this long belongs to a dead writer: writing one takes seconds (a shard, a table) to a few
# minutes (a converted model on a slow disk). INSTSEL_STALE_TEMP_SECONDS overrides it.
DEFAULT_STALE_SECONDS = 3600.0


def stale_seconds() -> float:
    from instsel_assets.settings import env_seconds

    return env_seconds("INSTSEL_STALE_TEMP_SECONDS", DEFAULT_STALE_SECONDS)


def _last_touched(path: Path) -> float:
    """The newest modification time of ``path`` and, for a directory, of anything in it (a directory being
    filled keeps getting newer files even when its own entry list stops changing)."""
    newest = path.lstat().st_mtime
    if path.is_dir() and not path.is_symlink():
        for child in path.rglob("*"):
            try:
                newest = max(newest, child.lstat().st_mtime)
            except FileNotFoundError:
                continue
    return newest


def sweep_stale(parent: str | os.PathLike, pattern: str, older_than: float | None = None) -> list[Path]:
    """Remove the entries of ``parent`` matching ``pattern`` (a glob, not recursive) untouched for ``older_than``
    seconds (default ``stale_seconds()``); return what was removed. A missing ``parent`` is nothing to sweep; an
    entry another process removes first is skipped; one that cannot be removed is logged and left."""
    parent = Path(parent)
    if not parent.is_dir():
        return []
    limit = stale_seconds() if older_than is None else older_than
    now = time.time()
    removed = []
    for path in sorted(parent.glob(pattern)):
        try:
            age = now - _last_touched(path)
            if age < limit:
                continue
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            else:
                path.unlink()
        except FileNotFoundError:
            continue
        except OSError as exc:
            log.warning("could not remove the stale temporary %s (%s)", path, exc.strerror or type(exc).__name__)
            continue
        log.info("removed %s: a temporary left by a writer that did not finish, untouched for %.0f s", path, age)
        removed.append(path)
    return removed
