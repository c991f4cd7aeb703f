"""Small helpers the stage modules share: code versions, GX-backed checks, logging of progress."""

from __future__ import annotations

import hashlib
import importlib.util
import time
from collections.abc import Iterable
from pathlib import Path

import dagster as dg
import pandas as pd

from instsel_assets.quality.expectations import validate_frame


def code_version_of(*module_names: str) -> str:
    """A short hash of the source of the library modules an asset runs.

    Editing a method's code changes its asset's code version, so Dagster marks the asset and
    everything downstream stale in the UI.
    """
    digest = hashlib.sha256()
    for name in sorted(module_names):
        # Read the file rather than importing it: loading the definitions stays free of torch.
        spec = importlib.util.find_spec(name)
        if spec is None or not spec.origin:
            raise ModuleNotFoundError(f"code_version_of: no module {name!r}")
        digest.update(Path(spec.origin).read_bytes())
    return digest.hexdigest()[:12]


def suite_check(df: pd.DataFrame, suite: str, *, asset_key: dg.AssetKey | str | None = None,
                check_name: str | None = None, extra: list | None = None) -> dg.AssetCheckResult:
    """Run the Great Expectations suite ``suite`` (plus the ``extra`` expectations, ``(class name, kwargs)``) on
    ``df`` as an asset check result."""
    result = validate_frame(df, suite, extra)
    return dg.AssetCheckResult(
        asset_key=asset_key,
        check_name=check_name or "great_expectations_suite",
        passed=result.success,
        metadata={
            "suite": suite,
            "summary": result.summary(),
            "expectations_evaluated": result.evaluated,
            "expectations_failed": len(result.failures),
            "rows": result.rows,
            # every expectation's result: a table in the UI, and the same as JSON for tools
            "expectations": dg.MetadataValue.md(result.markdown()),
            "expectation_results": dg.MetadataValue.json(result.results),
        },
    )


def subset_hash(ids: Iterable[str]) -> str:
    """Content hash of a subset: order-independent, over its example ids."""
    return hashlib.sha256("\n".join(sorted(ids)).encode("utf-8")).hexdigest()[:16]


class ProgressLogger:
    """Throttled progress lines in the run log: ``done/total``, rate and time left."""

    def __init__(self, log, what: str, every_seconds: float = 10.0):
        self.log, self.what, self.every = log, what, every_seconds
        self.start = self.last = time.monotonic()
        self.first_done: int | None = None  # work found done at the start (e.g. cached) is not in the rate

    def __call__(self, done: int, total: int) -> None:
        if total == 0:
            return  # nothing to do (everything cached): no rate to report
        now = time.monotonic()
        if self.first_done is None:
            self.first_done = done
            if done:
                self.log.info(f"{self.what}: {done}/{total} already done (cache)")
        if done < total and now - self.last < self.every:
            return
        self.last = now
        elapsed = now - self.start
        rate = (done - self.first_done) / elapsed if elapsed > 0 else 0.0
        left = (total - done) / rate if rate > 0 else float("nan")
        self.log.info(f"{self.what}: {done}/{total} ({rate:.1f}/s, ~{left:.0f}s left)")
