"""Schedules: their jobs, cadence from the environment, stopped by default, and a clear error for a bad cron."""

import datetime

import dagster as dg
import pytest

from instsel_assets.defs.schedules import build_schedules


def test_defaults_target_the_jobs_and_start_stopped():
    by_name = {s.name: s for s in build_schedules()}
    assert by_name["rescore_pool_schedule"].job_name == "prepare_pool_job"
    assert by_name["reevaluate_schedule"].job_name == "evaluate_job"
    assert by_name["rescore_pool_schedule"].cron_schedule == "0 2 * * *"
    assert all(s.default_status == dg.DefaultScheduleStatus.STOPPED for s in by_name.values())
    assert all(s.execution_timezone == "UTC" for s in by_name.values())


def test_cadence_from_the_environment(monkeypatch):
    monkeypatch.setenv("INSTSEL_REEVALUATE_CRON", "30 5 * * 1")
    monkeypatch.setenv("INSTSEL_SCHEDULE_TIMEZONE", "Europe/Berlin")
    schedule = {s.name: s for s in build_schedules()}["reevaluate_schedule"]
    assert schedule.cron_schedule == "30 5 * * 1" and schedule.execution_timezone == "Europe/Berlin"
    context = dg.build_schedule_context(scheduled_execution_time=datetime.datetime(2026, 11, 30, 5, 30))
    (request,) = list(schedule.evaluate_tick(context).run_requests)
    assert request.tags["dagster/schedule_name"] == "reevaluate_schedule"


def test_bad_cron_names_the_variable(monkeypatch):
    monkeypatch.setenv("INSTSEL_RESCORE_CRON", "every night")
    with pytest.raises(ValueError, match="INSTSEL_RESCORE_CRON='every night' is not a valid cron string"):
        build_schedules()
