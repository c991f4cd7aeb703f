"""A full disk or an unwritable storage root: the run fails with one clear line naming the DuckDB file and the cause
(ENOSPC / EACCES / EROFS), and the previous materialisation's table stays intact and readable.

The storage root (``INSTSEL_HOME``, holding the DuckDB file) is put on a small tmpfs mounted for the test, which is
then filled to the last byte (ENOSPC) or remounted read-only (EROFS). Not root: the mount is not permitted, so the
full-disk case is skipped with that reason and the unwritable case uses ``chmod`` (EACCES). The old table is read
back from a separate process, so what is checked is the file on disk, not a connection's view of it.

Before the fix in ``defs/duckdb_io.py`` the stock IO manager emptied the table in a statement of its own before
writing the new rows: a write that then failed on a full disk left the previous table with 0 rows.
"""


import contextlib
import os
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pandas as pd
import pytest

pytestmark = pytest.mark.integration

FIRST_ROWS = 100
BIG_ROWS = 200_000  # several MB in DuckDB: more than the filesystem has left


def _table(n: int, tag: str) -> pd.DataFrame:
    return pd.DataFrame({"id": [f"{tag}{i:08d}" for i in range(n)], "text": [f"row {i} of {tag} " * 4 for i in range(n)]})


def _mount_tmpfs(path: Path, size: str):
    """Mount a tmpfs of ``size`` at ``path``; the reason it is not possible, or None."""
    path.mkdir(parents=True, exist_ok=True)
    try:
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                              capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"cannot run mount: {exc}"
    return None if done.returncode == 0 else f"mount -t tmpfs not permitted here: {done.stderr.strip()[:200]}"


@contextlib.contextmanager
def small_filesystem(tmp_path: Path, size: str = "8m"):
    mnt = tmp_path / "small_fs"
    reason = _mount_tmpfs(mnt, size)
    if reason:
        pytest.skip(reason)
    try:
        yield mnt
    finally:
        subprocess.run(["mount", "-o", "remount,rw", str(mnt)], capture_output=True)
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


def _fill(mnt: Path) -> Path:
    """Fill the filesystem of ``mnt`` to the last byte; the filler file."""
    filler = mnt / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        for size in (1 << 20, 65536, 4096, 512, 1):  # unbuffered: big blocks, then the last partial ones
            try:
                while True:
                    os.write(fd, b"\0" * size)
            except OSError:
                continue
    finally:
        os.close(fd)
    st = os.statvfs(mnt)
    assert st.f_bavail * st.f_frsize < 65536, "the filesystem did not fill"
    return filler


def _read_back(db: Path, query: str) -> list[tuple]:
    """Run ``query`` on ``db`` (read-only) in a separate process."""
    code = ("import duckdb, json, sys; c = duckdb.connect(sys.argv[1], read_only=True); "
            "print(json.dumps(c.execute(sys.argv[2]).fetchall()))")
    done = subprocess.run([sys.executable, "-c", code, str(db), query], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr[-2000:]
    import json

    return [tuple(r) for r in json.loads(done.stdout)]


def _assets():
    @dg.asset(name="fault_table", kinds={"duckdb", "pandas"})
    def fault_table(context: dg.AssetExecutionContext) -> pd.DataFrame:
        return _table(int(context.run.tags["rows"]), context.run.tags["tag"])

    parts = dg.StaticPartitionsDefinition(["a", "b"])

    @dg.asset(name="fault_partitioned", partitions_def=parts, metadata={"partition_expr": "part"})
    def fault_partitioned(context: dg.AssetExecutionContext) -> pd.DataFrame:
        frame = _table(int(context.run.tags["rows"]), context.run.tags["tag"])
        frame["part"] = context.partition_key
        return frame

    return fault_table, fault_partitioned


def _materialise(asset, db: Path, instance, rows: int, tag: str, partition: str | None = None):
    from instsel_assets.defs.duckdb_io import InstselDuckDBIOManager

    return dg.materialize([asset], instance=instance, resources={"io_manager": InstselDuckDBIOManager(database=str(db))},
                          tags={"rows": str(rows), "tag": tag}, partition_key=partition, raise_on_error=False)


def _failure_line(result) -> str:
    (failure,) = [e for e in result.all_events if e.event_type_value == "STEP_FAILURE"]
    error = failure.event_specific_data.error
    cause = error.cause if error.cause is not None else error
    return cause.message.strip()


@pytest.fixture
def home_on(tmp_path, monkeypatch):
    def _home(mnt: Path) -> Path:
        home = mnt / "home"
        home.mkdir()
        monkeypatch.setenv("INSTSEL_HOME", str(home))
        monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "dagster_home"))  # the run storage stays writable
        (tmp_path / "dagster_home").mkdir(exist_ok=True)
        return home / "instsel.duckdb"

    return _home


def test_a_full_disk_fails_clearly_and_keeps_the_previous_tables(tmp_path, home_on):
    table, partitioned = _assets()
    with small_filesystem(tmp_path) as mnt:
        db = home_on(mnt)
        instance = dg.DagsterInstance.ephemeral()
        assert _materialise(table, db, instance, FIRST_ROWS, "old").success
        for part in ("a", "b"):
            assert _materialise(partitioned, db, instance, 10, f"old{part}", part).success
        filler = _fill(mnt)

        result = _materialise(table, db, instance, BIG_ROWS, "new")
        assert not result.success
        line = _failure_line(result)
        assert "\n" not in line, line
        assert f"cannot write table public.fault_table to {db}" in line and "(ENOSPC)" in line, line
        assert "previous materialisation is unchanged" in line
        # no materialisation was recorded for the failed write
        assert len(instance.fetch_materializations(dg.AssetKey("fault_table"), limit=10).records) == 1

        partition_result = _materialise(partitioned, db, instance, BIG_ROWS, "new", "a")
        assert not partition_result.success and "(ENOSPC)" in _failure_line(partition_result)

        # still full: the previous tables are whole and readable, from another process
        expected = [(FIRST_ROWS, "old00000000", f"old{FIRST_ROWS - 1:08d}")]
        assert _read_back(db, "select count(*), min(id), max(id) from public.fault_table") == expected
        assert _read_back(db, "select part, count(*), min(id) from public.fault_partitioned group by 1 order by 1") == [
            ("a", 10, "olda00000000"), ("b", 10, "oldb00000000")]

        # space again: the next materialisation succeeds in the same process and replaces the table
        filler.unlink()
        assert _materialise(table, db, instance, 7, "next").success
        assert _read_back(db, "select count(*), min(id) from public.fault_table") == [(7, "next00000000")]
        assert _materialise(partitioned, db, instance, 3, "nexta", "a").success
        assert _read_back(db, "select part, count(*) from public.fault_partitioned group by 1 order by 1") == [
            ("a", 3), ("b", 10)]


def test_an_unwritable_storage_root_fails_clearly_and_keeps_the_previous_table(tmp_path, home_on):
    table, _ = _assets()
    if os.geteuid() == 0:
        # root ignores the permission bits: a read-only mount makes the root unwritable instead (EROFS)
        with small_filesystem(tmp_path) as mnt:
            db = home_on(mnt)
            instance = dg.DagsterInstance.ephemeral()
            assert _materialise(table, db, instance, FIRST_ROWS, "old").success
            subprocess.run(["mount", "-o", "remount,ro", str(mnt)], check=True, capture_output=True)
            result = _materialise(table, db, instance, 50, "new")
            expected_cause = "(EROFS)"
            check_after = lambda: _read_back(db, "select count(*), min(id) from public.fault_table")  # noqa: E731
            assert not result.success
            line = _failure_line(result)
            assert check_after() == [(FIRST_ROWS, "old00000000")]
    else:
        db = home_on(tmp_path / "plain")
        instance = dg.DagsterInstance.ephemeral()
        assert _materialise(table, db, instance, FIRST_ROWS, "old").success
        home = db.parent
        home.chmod(0o555)
        db.chmod(0o444)
        try:
            result = _materialise(table, db, instance, 50, "new")
            expected_cause = "(EACCES)"
            assert not result.success
            line = _failure_line(result)
            assert _read_back(db, "select count(*), min(id) from public.fault_table") == [(FIRST_ROWS, "old00000000")]
        finally:
            home.chmod(0o755)
            db.chmod(0o644)
    assert "\n" not in line, line
    assert f"cannot write table public.fault_table to {db}" in line and expected_cause in line, line
