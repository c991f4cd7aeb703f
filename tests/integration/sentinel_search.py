"""Sentinel secrets and the search for them, shared by the secret tests (test_secrets_sentinel.py, test_chain.py).

Each secret variable gets a sentinel value that is not shaped like an OpenAI key (``sk-...``), so the judge
backend's key-shaped-text redaction cannot hide a leak: only handling the secrets as secrets can. The search
reads every file under the given roots as bytes (UTF-8 and UTF-16), and every text Dagster kept of a run: the run
record (config, tags), each event-log record (messages, materialisation and check metadata, errors).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

SENTINELS = {
    "INSTSEL_JUDGE_API_KEY": "SENTINEL-judge-key-3b9e71c0d4",
    "OPENAI_API_KEY": "SENTINEL-openai-key-8f2a64e1b7",
    "AWS_ACCESS_KEY_ID": "AKIASENTINEL7Q2W4E6R",
    "AWS_SECRET_ACCESS_KEY": "SENTINEL-aws-secret-5c0d9e8f7a6b",
    "AWS_SESSION_TOKEN": "SENTINEL-aws-session-token-1a2b3c4d",
}


def set_sentinels(monkeypatch) -> None:
    for name, value in SENTINELS.items():
        monkeypatch.setenv(name, value)


def hits(text: str) -> list[str]:
    return [name for name, value in SENTINELS.items() if value in text]


def leaks(texts: list[str]) -> dict[int, tuple[list[str], str]]:
    """``{index: (sentinel names, the start of the text)}`` for every text holding a sentinel."""
    return {i: (hits(t), t[:300]) for i, t in enumerate(texts) if hits(t)}


def file_hits(*roots: Path) -> tuple[dict[str, list[str]], int]:
    """``{file: [sentinel names]}`` over every file under ``roots`` (bytes, UTF-8 and UTF-16), and the files read."""
    found, n = {}, 0
    for root in roots:
        for path in Path(root).rglob("*"):
            if not path.is_file() or path.is_symlink():
                continue
            data = path.read_bytes()
            n += 1
            names = [name for name, value in SENTINELS.items()
                     if value.encode() in data or value.encode("utf-16-le") in data]
            if names:
                found[str(path)] = names
    return found, n


def run_texts(instance, run_ids: Iterable[str]) -> list[str]:
    """What the instance kept of each run: the run record, its config and tags, and every event-log record (its
    repr holds the message, the materialisation / check metadata and any error), plus each error's text."""
    texts: list[str] = []
    for run_id in run_ids:
        record = instance.get_run_by_id(run_id)
        assert record is not None, f"no run {run_id} in the instance"
        texts += [repr(record), json.dumps(record.run_config, default=repr), json.dumps(dict(record.tags))]
        logs = instance.all_logs(run_id)
        assert logs, f"run {run_id} has no event log: the search would miss it"
        for entry in logs:
            texts += [repr(entry), entry.user_message]
            event = entry.dagster_event
            data = getattr(event, "event_specific_data", None) if event is not None else None
            if getattr(data, "error", None) is not None:
                texts.append(data.error.to_string())
    return texts
