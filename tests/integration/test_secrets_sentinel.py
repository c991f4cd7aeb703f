"""Secrets reach the server they are meant for and nothing else: a sentinel per secret variable, a small chain on the
``openai`` judge backend against the scripted OpenAI-compatible server on 127.0.0.1, then a search of everything the
runs left behind for the sentinels: zero hits.

Set as sentinels: ``INSTSEL_JUDGE_API_KEY`` (the judge's key, wired as ``dg.EnvVar``), ``OPENAI_API_KEY`` and the
three AWS credential variables (read by ``defs/storage.py``'s ``S3Resource`` as ``dg.EnvVar``). The sentinels are not
shaped like an OpenAI key (``sk-...``), so the backend's key-shaped-text redaction cannot hide a leak: only handling
the secrets as secrets can.

The chain: a stub ``instruction_pool`` of 4 rows -> ``alpagasus_scores`` (one row meets a 401 whose body echoes the
bearer token, as a careless proxy might; one a 500 then an answer) and ``judge_fidelity`` on 1 LLMBar pair (the
local packaged judge and the OpenAI one), in a Dagster instance on disk (``DAGSTER_HOME``: run, event-log and
compute-log storage); then a dry run (a ``dg.Failure`` naming the endpoint), the backend's own exceptions for a 401
and for repeated 500s (text, repr and formatted traceback) and the S3 resource's description.

Searched: every file under ``DAGSTER_HOME``, ``INSTSEL_HOME`` (DuckDB file, reports, caches) and the judge cache
(bytes), the captured stdout/stderr and Python log records, every event-log record of each run (messages, metadata,
errors), the run records (config, tags), every materialisation's and check's metadata, the output tables and the
exception texts. The test also asserts that the server did receive the judge key (so it can fail) and that the 401
body carried it back to the client.
"""

import json
import logging
import os
import sys
import traceback
from pathlib import Path

import dagster as dg
import pandas as pd
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "unit"))  # scripted_openai_server

from sentinel_search import SENTINELS, file_hits, leaks, run_texts, set_sentinels  # noqa: E402

from instsel_assets import settings  # noqa: E402

pytestmark = pytest.mark.integration

ROWS = 4


@pytest.fixture
def scripted_server(monkeypatch):
    from scripted_openai_server import ScriptedOpenAIServer

    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    with ScriptedOpenAIServer(delay_seconds=0.6) as srv:
        yield srv


def test_no_secret_reaches_a_log_an_event_metadata_a_report_or_an_exception(tmp_path, monkeypatch, scripted_server,
                                                                             capfd, caplog):
    set_sentinels(monkeypatch)
    home, dagster_home, judge_cache = tmp_path / "home", tmp_path / "dagster_home", tmp_path / "judge-cache"
    dagster_home.mkdir()
    monkeypatch.setenv("INSTSEL_HOME", str(home))
    monkeypatch.setenv("DAGSTER_HOME", str(dagster_home))
    monkeypatch.setenv("INSTSEL_JUDGE_CACHE", str(judge_cache))
    monkeypatch.setenv("INSTSEL_MODEL_CACHE", str(settings.PROJECT_ROOT / ".instsel" / "models"))  # shared weights
    monkeypatch.delenv("INSTSEL_STORAGE", raising=False)

    from instsel_assets.bench import bench_pool
    from instsel_assets.defs.evaluation import judge_fidelity
    from instsel_assets.defs.judge import alpagasus_scores
    from instsel_assets.defs.resources import EmbeddingModelResource, JudgeResource, default_resources
    from instsel_assets.judge.backends import FatalError, OpenAIBackend, RetryableError
    from instsel_assets.judge.templates.alpagasus import TEMPLATE

    server = scripted_server
    rows = bench_pool(settings.PROJECT_ROOT / "data" / "bench" / "alpaca_500.json", ROWS)
    markers = [c[0]["content"][:40] for c in rows["conversations"]]
    server.script(markers[0], "401")  # the error body echoes the bearer token
    server.script(markers[1], "500")  # retried, then answered

    @dg.asset(name="instruction_pool")
    def instruction_pool() -> pd.DataFrame:
        return rows.copy()

    judge = JudgeResource(backend="openai", model="judge-model", base_url=server.url,
                          api_key=dg.EnvVar("INSTSEL_JUDGE_API_KEY"), concurrency=2, max_attempts=2, timeout_s=5.0,
                          max_reply_tokens=16)
    resources = {"judge": judge, "embedding_model": EmbeddingModelResource(),
                 "io_manager": default_resources()["io_manager"]}
    instance = dg.DagsterInstance.get()
    assets = [instruction_pool, alpagasus_scores, judge_fidelity]
    texts: list[str] = []
    with caplog.at_level(logging.DEBUG):
        run_config = {"ops": {"alpagasus_scores": {"config": {"max_unparsable_fraction": 1.0}},
                              "judge_fidelity": {"config": {"limit": 1, "max_unparsable_fraction": 1.0}}}}
        result = dg.materialize(assets, instance=instance, run_config=run_config, resources=resources,
                                raise_on_error=False)
        # a run that fails: the dry run's dg.Failure names the endpoint and what would be sent
        dry = dg.materialize([instruction_pool, alpagasus_scores], instance=instance, resources=resources,
                             run_config={"ops": {"alpagasus_scores": {"config": {"dry_run": True}}}},
                             raise_on_error=False)

    # the chain ran against the server, with the key
    table = result.output_for_node("alpagasus_scores")
    status = dict(zip(table["id"], table["judge_status"]))
    assert status[rows["id"].iloc[0]] == "failed"
    assert set(status.values()) <= {"ok", "unparsable", "failed"} and list(status.values()).count("failed") == 1
    fidelity = result.output_for_node("judge_fidelity")
    assert len(fidelity) == 2 and any(b.startswith("openai:") for b in fidelity["judge_backend"])
    assert not dry.success
    assert f"Bearer {SENTINELS['INSTSEL_JUDGE_API_KEY']}" in server.auth_headers  # the key reached the server...
    assert server.faults_served["401"] == 1 and server.faults_served["500"] == 1  # ... and came back in a 401 body
    assert not any(SENTINELS["OPENAI_API_KEY"] in h for h in server.auth_headers)  # the configured key was used
    error_401 = table.loc[table["id"] == rows["id"].iloc[0], "judge_error"].iloc[0]
    assert error_401.startswith("http 401") and "Incorrect API key provided" in error_401
    texts += [table.to_json(), fidelity.to_json(), error_401]

    # the backend's own exceptions, with request details (a 401 echoing the key; 500s until the attempts run out)
    backend = OpenAIBackend("judge-model", base_url=server.url, api_key=os.environ["INSTSEL_JUDGE_API_KEY"],
                            timeout=5.0)
    try:
        (request,) = TEMPLATE.build(rows.iloc[2].to_dict())
        server.script(markers[2], "401", "500")
        for expected in (FatalError, RetryableError):
            with pytest.raises(expected) as caught:
                backend.complete(request)
            exc = caught.value
            texts += [str(exc), repr(exc), "".join(traceback.format_exception(exc)), repr(vars(exc))]
        texts += [repr(backend), repr(vars(backend).get("backend_id"))]
    finally:
        backend.close()
    assert any("401" in t for t in texts)

    # the S3 resource built from the AWS variables: EnvVar references, not values
    monkeypatch.setenv("INSTSEL_S3_BUCKET", "sentinel-test-bucket")
    from instsel_assets.defs.storage import s3_resource, s3_settings

    s3 = s3_resource()
    texts += [repr(s3), repr(s3_settings()), json.dumps(s3._get_non_default_public_field_values(), default=repr)]

    # what the runs recorded
    texts += run_texts(instance, [result.run_id, dry.run_id])
    for run in (result, dry):
        for event in run.all_events:
            texts.append(repr(event))
            data = event.event_specific_data
            if getattr(data, "error", None) is not None:
                texts.append(data.error.to_string())
    (failure,) = [e for e in dry.all_events if e.event_type_value == "STEP_FAILURE"]
    assert server.url in failure.event_specific_data.error.to_string()  # the failure does name the endpoint
    for key in ("alpagasus_scores", "judge_fidelity"):
        for mat in result.asset_materializations_for_node(key):
            texts.append(repr({k: getattr(v, "value", v) for k, v in mat.metadata.items()}))
    for evaluation in result.get_asset_check_evaluations():
        texts.append(repr({k: getattr(v, "value", v) for k, v in evaluation.metadata.items()}))
    texts += [repr(judge), json.dumps(judge.settings_dict())]
    captured = capfd.readouterr()
    texts += [captured.out, captured.err, caplog.text]
    assert "alpagasus" in captured.err + caplog.text  # the logs were captured

    assert leaks(texts) == {}

    # every file the runs wrote: run / event-log / compute-log storage, the DuckDB file, reports and caches
    compute_logs = [p for p in dagster_home.rglob("*") if p.is_file() and p.suffix in (".err", ".out", ".complete")]
    assert compute_logs, "no compute log was written: the search below would miss them"
    assert any(b"alpagasus" in p.read_bytes() for p in compute_logs)  # they hold the runs' log lines
    found, n_files = file_hits(dagster_home, home, judge_cache)
    assert n_files >= 5 and (home / "instsel.duckdb").is_file()
    assert found == {}
