"""Normalise raw records into the shared record schema and build the pool and its quarantine.

Rules (``normalize_record``); any failure returns ``None`` and a reason naming the field:

- Text fields must be strings (``None`` counts as missing); contents are stripped of leading and
  trailing whitespace, and whitespace-only counts as empty. Numbers are not coerced. Text holding
  an unpaired surrogate (invalid Unicode, e.g. half an emoji) is refused. Values quoted in a
  reason (unknown keys, roles, content-part types) are cut to 40 characters.
- ``alpaca``: ``instruction`` and ``output`` are required and non-empty; ``input`` and
  ``system`` are optional (missing/null/empty = none). The user turn is ``instruction``, followed
  by ``"\\n\\n" + input`` when input is non-empty (how Alpaca and Cherry LLM build the prompt).
  ``history`` (optional) is a list of ``[user, assistant]`` pairs of non-empty strings that
  become earlier turns; ``system`` becomes a leading system turn.
- ``dolly``: ``instruction`` and ``response`` (or AlpaGasus' ``output``) required, ``context``
  (or ``input``) optional and appended like Alpaca's input; ``category`` kept (must be a string
  when present).
- ``sharegpt`` (``conversations``, turns ``{from, value}``; ``{role, content}`` accepted) and
  ``messages`` (turns ``{role, content}``; ``{from, value}`` accepted; OpenAI content-part lists
  of ``{"type": "text"}`` parts are joined with newlines). Roles: human/user -> user,
  gpt/assistant -> assistant, system -> system; anything else is refused. A conversation is:
  at most one system turn, only as the first turn (a top-level ``system`` string counts as that
  turn), then strictly alternating user/assistant turns starting with user and ending with
  assistant, every content non-empty. Turn numbers in reasons are 1-based.
- Flat columns: for alpaca/dolly the original ``instruction``/``input``/``output`` (stripped);
  for chat formats the first user turn, ``""`` and the first assistant reply. ``n_turns`` is the
  number of user turns; ``category`` is the record's string ``category`` or ``""``.

``build_pool`` keeps the first occurrence (input order) of every ``content_id`` and quarantines
exact duplicates (``kind="duplicate"``) and unusable rows (``kind="invalid"``, including rows
with a ``parse_error``). ``counts[source]["quarantined"]`` counts the invalid rows only, so that
``read == kept + duplicates + quarantined`` for every source.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from instsel_assets.ingest.formats import FORMATS, RAW_COLUMNS, detect_format
from instsel_assets.schema import POOL_COLUMNS, QUARANTINE_COLUMNS

RAW_TRUNCATE = 2000

ROLE_MAP = {
    "human": "user",
    "user": "user",
    "gpt": "assistant",
    "assistant": "assistant",
    "system": "system",
}

_INT_COLUMNS = {"n_turns", "source_row"}
_SURROGATE = re.compile("[\ud800-\udfff]")


class _Invalid(Exception):
    pass


def _kind(value: Any) -> str:
    return "null" if value is None else type(value).__name__


def _short(value: Any, limit: int = 40) -> str:
    """``repr(value)`` cut to ``limit`` characters (a reason must stay one readable line)."""
    text = repr(value)
    if len(text) <= limit:
        return text
    return text[: limit - 4] + "..." + text[0] if text[0] in "'\"" else text[: limit - 3] + "..."


def _checked(value: str, label: str) -> str:
    m = _SURROGATE.search(value)
    if m is not None:  # cannot be encoded as UTF-8 (content_id, DuckDB)
        raise _Invalid(f"{label} holds an unpaired surrogate \\u{ord(m.group()):04x} (invalid Unicode)")
    return value


def _text(record: Mapping[str, Any], key: str, required: bool, label: str | None = None) -> str:
    label = label or f"field '{key}'"
    if key not in record or record[key] is None:
        if required:
            raise _Invalid(f"{label} is {'missing' if key not in record else 'null'}")
        return ""
    value = record[key]
    if not isinstance(value, str):
        raise _Invalid(f"{label} is not a string (got {_kind(value)})")
    value = _checked(value.strip(), label)
    if required and not value:
        raise _Invalid(f"{label} is empty")
    return value


def _pick(record: Mapping[str, Any], *keys: str) -> str:
    """The first of ``keys`` present in the record (the first one when none is)."""
    for k in keys:
        if k in record:
            return k
    return keys[0]


def _category(record: Mapping[str, Any]) -> str:
    return _text(record, "category", required=False)


def _prompt(instruction: str, inp: str) -> str:
    return f"{instruction}\n\n{inp}" if inp else instruction


def _single_turn(record: Mapping[str, Any], out_key: str, in_key: str) -> dict[str, Any]:
    instruction = _text(record, "instruction", required=True)
    inp = _text(record, in_key, required=False)
    output = _text(record, out_key, required=True)
    system = _text(record, "system", required=False)
    conv: list[dict[str, str]] = [{"role": "system", "content": system}] if system else []
    history = record.get("history")
    n_hist = 0
    if history is not None:
        if not isinstance(history, list):
            raise _Invalid(f"field 'history' is not a list (got {_kind(history)})")
        for j, pair in enumerate(history, start=1):
            if not isinstance(pair, (list, tuple)) or len(pair) != 2:
                raise _Invalid(f"field 'history' item {j}: expected a [user, assistant] pair")
            u, a = pair
            for what, v in (("user", u), ("assistant", a)):
                if not isinstance(v, str):
                    raise _Invalid(f"field 'history' item {j}: {what} text is not a string (got {_kind(v)})")
                if not v.strip():
                    raise _Invalid(f"field 'history' item {j}: {what} text is empty")
            conv.append({"role": "user", "content": u.strip()})
            conv.append({"role": "assistant", "content": a.strip()})
            n_hist += 1
    conv.append({"role": "user", "content": _prompt(instruction, inp)})
    conv.append({"role": "assistant", "content": output})
    return {
        "conversations": conv,
        "instruction": instruction,
        "input": inp,
        "output": output,
        "n_turns": n_hist + 1,
        "category": _category(record),
    }


def _content(value: Any, label: str) -> str:
    if isinstance(value, list):  # OpenAI content parts
        texts = []
        for part in value:
            if not isinstance(part, Mapping) or part.get("type") != "text":
                t = _short(part.get("type")) if isinstance(part, Mapping) else _kind(part)
                raise _Invalid(f"{label}: non-text content part {t}")
            if not isinstance(part.get("text"), str):
                raise _Invalid(f"{label}: content part text is not a string (got {_kind(part.get('text'))})")
            texts.append(part["text"])
        value = "\n".join(texts)
    if value is None:
        raise _Invalid(f"{label}: content is missing")
    if not isinstance(value, str):
        raise _Invalid(f"{label}: content is not a string (got {_kind(value)})")
    value = _checked(value.strip(), f"{label}: content")
    if not value:
        raise _Invalid(f"{label}: content is empty")
    return value


def _chat(record: Mapping[str, Any], key: str) -> dict[str, Any]:
    if key not in record or record[key] is None:
        raise _Invalid(f"field '{key}' is {'missing' if key not in record else 'null'}")
    turns = record[key]
    if not isinstance(turns, list):
        raise _Invalid(f"field '{key}' is not a list (got {_kind(turns)})")
    if not turns:
        raise _Invalid(f"field '{key}' is empty")
    conv: list[dict[str, str]] = []
    system = _text(record, "system", required=False)
    if system:
        conv.append({"role": "system", "content": system})
    for n, turn in enumerate(turns, start=1):
        label = f"{key} turn {n}"
        if not isinstance(turn, Mapping):
            raise _Invalid(f"{label}: not an object (got {_kind(turn)})")
        role_key = "from" if "from" in turn else "role"
        content_key = "value" if "value" in turn else "content"
        if role_key not in turn:
            raise _Invalid(f"{label}: no 'from' or 'role'")
        raw_role = turn[role_key]
        role = ROLE_MAP.get(raw_role.strip().lower()) if isinstance(raw_role, str) else None
        if role is None:
            raise _Invalid(f"{label}: unknown role {_short(raw_role)} (expected human/user, gpt/assistant or system)")
        if content_key not in turn:
            raise _Invalid(f"{label}: no 'value' or 'content'")
        content = _content(turn[content_key], label)
        if role == "system":
            if conv:
                raise _Invalid(f"{label}: system turn is only allowed as the first turn")
        else:
            prev = conv[-1]["role"] if conv else "system"
            expected = "assistant" if prev == "user" else "user"
            if role != expected:
                raise _Invalid(f"{label}: expected role '{expected}', got '{role}'")
        conv.append({"role": role, "content": content})
    if conv[-1]["role"] != "assistant":
        raise _Invalid(f"{key}: last turn is '{conv[-1]['role']}', expected an assistant reply")
    users = [t["content"] for t in conv if t["role"] == "user"]
    first_reply = next(t["content"] for t in conv if t["role"] == "assistant")
    return {
        "conversations": conv,
        "instruction": users[0],
        "input": "",
        "output": first_reply,
        "n_turns": len(users),
        "category": _category(record),
    }


def normalize_record(record: Any, fmt: str | None) -> tuple[dict[str, Any] | None, str]:
    """The normalised row of one record (``None`` and a reason when it is unusable).

    ``fmt`` is the declared or detected format; ``""``, ``None`` or ``"auto"`` detects it.
    """
    if not isinstance(record, dict):
        return None, f"record is not a JSON object (got {_kind(record)})"
    if not fmt or fmt == "auto":
        fmt = detect_format(record)
        if fmt is None:
            keys = ", ".join(_short(k, 30) for k in list(record)[:12]) + (", ..." if len(record) > 12 else "")
            return None, f"unknown format: no field 'instruction', 'conversations' or 'messages' (keys [{keys}])"
    if fmt not in FORMATS:
        return None, f"unknown format {fmt!r}"
    try:
        if fmt == "alpaca":
            row = _single_turn(record, "output", "input")
        elif fmt == "dolly":
            row = _single_turn(record, _pick(record, "response", "output"), _pick(record, "context", "input"))
        elif fmt == "sharegpt":
            row = _chat(record, "conversations")
        else:
            row = _chat(record, "messages")
    except _Invalid as e:
        return None, str(e)
    return row, ""


def content_id(conversations: Sequence[Mapping[str, Any]]) -> str:
    """First 16 hex characters of the sha256 of the canonical JSON of the conversations."""
    canon = [{"role": str(t["role"]), "content": str(t["content"])} for t in conversations]
    text = json.dumps(canon, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


@dataclass
class PoolResult:
    pool: pd.DataFrame  # columns schema.POOL_COLUMNS
    quarantine: pd.DataFrame  # columns schema.QUARANTINE_COLUMNS
    counts: dict[str, dict[str, int]] = field(default_factory=dict)


def _frame(columns: Sequence[str], data: dict[str, list]) -> pd.DataFrame:
    out = {}
    for c in columns:
        out[c] = pd.Series(data[c], dtype="int64" if c in _INT_COLUMNS else object)
    return pd.DataFrame(out, columns=list(columns))


def build_pool(raw: pd.DataFrame) -> PoolResult:
    """Normalise raw rows (``formats.RAW_COLUMNS``), drop exact duplicates, quarantine the rest."""
    missing = [c for c in RAW_COLUMNS if c not in raw.columns]
    if missing:
        raise ValueError(f"build_pool: raw frame lacks columns {missing}")
    pool: dict[str, list] = {c: [] for c in POOL_COLUMNS}
    quar: dict[str, list] = {c: [] for c in QUARANTINE_COLUMNS}
    counts: dict[str, dict[str, int]] = {}
    seen: dict[str, str] = {}

    def quarantine(src, sfile, srow, kind, reason, dup_of, raw_text):
        quar["source"].append(src)
        quar["source_file"].append(sfile)
        quar["source_row"].append(srow)
        quar["kind"].append(kind)
        quar["reason"].append(reason)
        quar["duplicate_of"].append(dup_of)
        quar["raw"].append(raw_text[:RAW_TRUNCATE])

    columns = [raw[c].tolist() for c in RAW_COLUMNS]
    for src, sfile, srow, fmt, raw_text, perr in zip(*columns):
        src = "" if src is None else str(src)
        raw_text = "" if raw_text is None else str(raw_text)
        c = counts.setdefault(src, {"read": 0, "kept": 0, "duplicates": 0, "quarantined": 0})
        c["read"] += 1
        srow = int(srow)
        if isinstance(perr, str) and perr:
            reason = perr
            row = None
        else:
            try:
                record = json.loads(raw_text)
            except (json.JSONDecodeError, TypeError) as e:
                row, reason = None, f"raw is not valid JSON: {e}"
            else:
                row, reason = normalize_record(record, fmt if isinstance(fmt, str) else "")
        if row is None:
            c["quarantined"] += 1
            quarantine(src, sfile, srow, "invalid", reason, "", raw_text)
            continue
        cid = content_id(row["conversations"])
        if cid in seen:
            c["duplicates"] += 1
            quarantine(src, sfile, srow, "duplicate", f"exact duplicate of {cid} ({seen[cid]})", cid, raw_text)
            continue
        seen[cid] = f"{src} {sfile} row {srow}"
        c["kept"] += 1
        pool["id"].append(cid)
        pool["source"].append(src)
        for k in ("conversations", "instruction", "input", "output", "n_turns", "category"):
            pool[k].append(row[k])
        pool["source_file"].append(sfile)
        pool["source_row"].append(srow)

    for src, c in counts.items():
        if c["read"] != c["kept"] + c["duplicates"] + c["quarantined"]:
            raise RuntimeError(f"build_pool: accounting broken for source '{src}': {c}")
    result = PoolResult(_frame(POOL_COLUMNS, pool), _frame(QUARANTINE_COLUMNS, quar), counts)
    if len(result.pool) + len(result.quarantine) != len(raw):
        raise RuntimeError(
            f"build_pool: {len(raw)} rows read but {len(result.pool)} kept + {len(result.quarantine)} quarantined"
        )
    if not result.pool["id"].is_unique:
        raise RuntimeError("build_pool: pool ids are not unique")
    return result
