"""Schedules: re-score the pool and re-evaluate every checkpoint on a cadence.

- ``rescore_pool_schedule`` runs ``prepare_pool_job`` (sources -> pool -> features -> SQL models -> the demo's LM
  scores). Every step is cheap when nothing changed: the raw datasets' data versions are content hashes, and the
  loss engine's cache answers every (model, example) pair it has seen, so only new rows are scored.
- ``reevaluate_schedule`` runs ``evaluate_job`` two hours later (held-out loss, answers, pairwise judgements,
  judge fidelity, the method comparison) over every checkpoint materialised so far; the loss, generation and
  judge caches make everything already evaluated free, so a run costs only what is new.

Both are created stopped (``DefaultScheduleStatus.STOPPED``), so a development instance runs nothing on its own:
turn them on in the UI (Automation) or with ``dagster schedule start``. Cadence and time zone come from
environment variables, read when the definitions load:

- ``INSTSEL_RESCORE_CRON`` (default ``0 2 * * *``: every day at 02:00) and ``INSTSEL_REEVALUATE_CRON``
  (default ``0 4 * * *``);
- ``INSTSEL_SCHEDULE_TIMEZONE`` (default ``UTC``).
"""

from __future__ import annotations

import os

import dagster as dg

from instsel_assets.defs.jobs import evaluate_job, prepare_pool_job


def _schedule(name: str, job, variable: str, default: str, timezone: str, description: str):
    cron = os.environ.get(variable, default).strip()
    try:
        return dg.ScheduleDefinition(name=name, job=job, cron_schedule=cron, execution_timezone=timezone,
                                     default_status=dg.DefaultScheduleStatus.STOPPED, description=description)
    except dg.DagsterInvalidDefinitionError as exc:
        raise ValueError(f"{variable}={cron!r} is not a valid cron string (five fields, e.g. '0 2 * * *'), or "
                         f"INSTSEL_SCHEDULE_TIMEZONE={timezone!r} is not a time zone: {exc}") from None


def build_schedules() -> list[dg.ScheduleDefinition]:
    timezone = os.environ.get("INSTSEL_SCHEDULE_TIMEZONE", "UTC")
    return [
        _schedule("rescore_pool_schedule", prepare_pool_job, "INSTSEL_RESCORE_CRON", "0 2 * * *", timezone,
                  "Re-read the sources and re-score the pool (new rows only: content versions and the loss cache "
                  "make unchanged rows free)."),
        _schedule("reevaluate_schedule", evaluate_job, "INSTSEL_REEVALUATE_CRON", "0 4 * * *", timezone,
                  "Re-run the evaluation over every checkpoint materialised so far (cached work is free)."),
    ]
