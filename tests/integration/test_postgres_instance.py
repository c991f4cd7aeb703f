"""The Dagster instance in PostgreSQL: the shipped `deploy/dagster-postgres.yaml` against a real server.

A throwaway PostgreSQL cluster on loopback (``pg_server.PostgresServer``, with a password that needs URL
quoting, so the password path is exercised); the example ``dagster.yaml`` copied verbatim into a temporary
``DAGSTER_HOME`` and configured only through its ``DAGSTER_PG_*`` variables; two real materialisations of
``evaluation_test_sets`` (no model: it reads ``data/eval``) by the ``dagster`` CLI in a subprocess; then, in this
process, the instance read back: both runs succeeded, the materialisations with their metadata, the asset check
evaluations, the latest materialisation; and PostgreSQL itself, read with psycopg2, holds the runs, the events
and the check executions (no SQLite file appears in ``DAGSTER_HOME``).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from instsel_assets import settings
from pg_server import PostgresServer

EXAMPLE = settings.PROJECT_ROOT / "deploy" / "dagster-postgres.yaml"
ASSET = "evaluation_test_sets"
ROWS = 1915  # 80 + 180 + 218 + 252 + 300 + 80 + 805 items
PASSWORD = "s3cret:/@%?# pass"  # every character that must be quoted in a URL
MATERIALIZE_TIMEOUT = 300


@pytest.fixture
def postgres():
    with PostgresServer(db_name="instsel_dagster", password=PASSWORD) as server:
        yield server


def materialize(env: dict[str, str], log: Path) -> None:
    command = [sys.executable, "-m", "dagster", "asset", "materialize", "-f", "definitions.py", "--select", ASSET]
    with open(log, "wb") as out:
        try:
            result = subprocess.run(command, cwd=settings.PROJECT_ROOT, env=env, stdin=subprocess.DEVNULL, stdout=out,
                                    stderr=subprocess.STDOUT, timeout=MATERIALIZE_TIMEOUT)
        except subprocess.TimeoutExpired:
            pytest.fail(f"`dagster asset materialize` did not finish within {MATERIALIZE_TIMEOUT} s; its output ends "
                        f"with:\n{log.read_text(errors='replace')[-4000:]}")
    assert result.returncode == 0, (f"`dagster asset materialize` failed ({result.returncode}); its output ends with:\n"
                                    f"{log.read_text(errors='replace')[-4000:]}")


@pytest.mark.integration
def test_instance_in_postgres(tmp_path, monkeypatch, postgres):
    import dagster as dg
    from dagster import DagsterInstance, DagsterRunStatus
    from dagster._core.storage.asset_check_execution_record import AssetCheckExecutionRecordStatus
    from dagster_postgres import PostgresEventLogStorage, PostgresRunStorage

    dagster_home = tmp_path / "dagster_home"
    dagster_home.mkdir()
    shutil.copyfile(EXAMPLE, dagster_home / "dagster.yaml")  # the shipped example, unchanged
    monkeypatch.setenv("DAGSTER_HOME", str(dagster_home))
    monkeypatch.setenv("INSTSEL_HOME", str(tmp_path / "home"))
    for name, value in {"DAGSTER_PG_HOST": postgres.host, "DAGSTER_PG_PORT": str(postgres.port),
                        "DAGSTER_PG_USER": postgres.superuser, "DAGSTER_PG_PASSWORD": PASSWORD,
                        "DAGSTER_PG_DB": postgres.db_name}.items():
        monkeypatch.setenv(name, value)
    for name in [n for n in os.environ if n.startswith("PG")]:  # libpq must not pick up another server's settings
        monkeypatch.delenv(name)

    for attempt in (1, 2):
        materialize(dict(os.environ), tmp_path / f"materialize-{attempt}.log")
    assert not [p for p in dagster_home.rglob("*") if p.suffix in (".db", ".sqlite")], "SQLite storage was created"

    instance = DagsterInstance.from_config(str(dagster_home))
    try:
        assert isinstance(instance.run_storage, PostgresRunStorage)
        assert isinstance(instance.event_log_storage, PostgresEventLogStorage)

        runs = instance.get_runs()  # newest first
        assert len(runs) == 2
        assert [run.status for run in runs] == [DagsterRunStatus.SUCCESS] * 2
        for run in runs:
            assert run.asset_selection == {dg.AssetKey(ASSET)}
        newest, oldest = runs

        key = dg.AssetKey(ASSET)
        records = instance.fetch_materializations(key, limit=10).records  # newest first
        assert [record.run_id for record in records] == [newest.run_id, oldest.run_id]
        for record in records:
            metadata = record.asset_materialization.metadata
            assert metadata["dagster/row_count"].value == ROWS
            assert sum(metadata["items"].value.values()) == ROWS
            assert len(metadata["items"].value) == 7
        latest = instance.get_latest_materialization_event(key)
        assert latest is not None and latest.run_id == newest.run_id
        assert latest.asset_materialization.metadata["dagster/row_count"].value == ROWS

        for check in ("declared_counts", "great_expectations_suite"):
            history = instance.event_log_storage.get_asset_check_execution_history(
                dg.AssetCheckKey(key, check), limit=10)
            assert [h.run_id for h in history] == [newest.run_id, oldest.run_id], check
            assert {h.status for h in history} == {AssetCheckExecutionRecordStatus.SUCCEEDED}, check
            evaluation = history[0].evaluation
            assert evaluation is not None and evaluation.passed, check
        declared = instance.event_log_storage.get_asset_check_execution_history(
            dg.AssetCheckKey(key, "declared_counts"), limit=1)[0].evaluation
        assert declared.metadata["counts"].value == declared.metadata["expected"].value
    finally:
        instance.dispose()

    # PostgreSQL itself holds them: the instance is not SQLite by accident
    connection = postgres.connect()
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT run_id, status FROM runs")
            assert dict(cursor.fetchall()) == {newest.run_id: "SUCCESS", oldest.run_id: "SUCCESS"}
            cursor.execute("SELECT run_id FROM event_logs WHERE dagster_event_type = 'ASSET_MATERIALIZATION' "
                           "AND asset_key = %s ORDER BY id", (key.to_string(),))
            assert [row[0] for row in cursor.fetchall()] == [oldest.run_id, newest.run_id]
            cursor.execute("SELECT count(*) FROM asset_check_executions WHERE execution_status = 'SUCCEEDED'")
            assert cursor.fetchone()[0] == 4
    finally:
        connection.close()
