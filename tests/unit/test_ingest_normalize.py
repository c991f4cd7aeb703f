"""Normalisation into the shared record schema, content ids, and the pool/quarantine split."""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from instsel_assets.ingest.formats import RAW_COLUMNS, read_source, read_sources
from instsel_assets.ingest.normalize import build_pool, content_id, normalize_record
from instsel_assets.ingest.sources import SourceSpec, load_sources
from instsel_assets.schema import POOL_COLUMNS, QUARANTINE_COLUMNS

FIXTURES = Path(__file__).resolve().parent.parent / "data" / "ingest"
DATA = Path(__file__).resolve().parents[2] / "data"


def spec(path: str, name: str = "t", fmt: str = "auto") -> SourceSpec:
    return SourceSpec(name=name, path=path, format=fmt, license="test", origin="test", description="")


def raw_of(*pairs: tuple[str, str]) -> pd.DataFrame:
    """Raw rows of fixture files, one source per (name, path) pair."""
    return read_sources([spec(path, name) for name, path in pairs], FIXTURES)


def turns(*pairs: tuple[str, str]) -> list[dict[str, str]]:
    return [{"role": r, "content": c} for r, c in pairs]


# --------------------------------------------------------------------------- normalize_record


def test_alpaca_without_input_is_the_instruction():
    row, reason = normalize_record({"instruction": " Hi ", "input": "", "output": "Hello\n"}, "alpaca")
    assert reason == ""
    assert row == {
        "conversations": turns(("user", "Hi"), ("assistant", "Hello")),
        "instruction": "Hi",
        "input": "",
        "output": "Hello",
        "n_turns": 1,
        "category": "",
    }


@pytest.mark.parametrize("inp", [None, "   ", ""])
def test_alpaca_missing_null_or_blank_input_is_no_input(inp):
    record = {"instruction": "Hi", "output": "Hello"}
    if inp is not None:
        record["input"] = inp
    row, _ = normalize_record(record, "alpaca")
    assert row["conversations"][0]["content"] == "Hi" and row["input"] == ""


def test_alpaca_input_follows_the_instruction_after_a_blank_line():
    row, _ = normalize_record({"instruction": "Translate.", "input": "Good morning.", "output": "Guten Morgen."}, "alpaca")
    assert row["conversations"][0] == {"role": "user", "content": "Translate.\n\nGood morning."}
    assert (row["instruction"], row["input"], row["output"]) == ("Translate.", "Good morning.", "Guten Morgen.")


def test_alpaca_system_and_history_become_earlier_turns():
    record = json.loads((FIXTURES / "alpaca.json").read_text())[2]
    row, reason = normalize_record(record, "alpaca")
    assert reason == ""
    assert row["conversations"] == turns(
        ("system", "You are a geography tutor."),
        ("user", "What is the capital of Spain?"),
        ("assistant", "Madrid."),
        ("user", "And what about Italy?"),
        ("assistant", "The capital of Italy is Rome."),
    )
    assert row["n_turns"] == 2
    assert row["instruction"] == "And what about Italy?"


def test_dolly_original_and_alpagasus_variant_normalise_alike():
    original = [json.loads(r) for r in read_source(spec("dolly.jsonl"), FIXTURES)["raw"]]
    variant = [json.loads(r) for r in read_source(spec("dolly.json"), FIXTURES)["raw"]]
    for a, b in zip(original, variant):
        ra, _ = normalize_record(a, "dolly")
        rb, _ = normalize_record(b, "dolly")
        assert ra == rb
    row, _ = normalize_record(original[0], "dolly")
    assert row["category"] == "closed_qa"
    assert row["input"] == "Moby-Dick is an 1851 novel by Herman Melville."
    assert row["conversations"][0]["content"] == "Who wrote the novel?\n\nMoby-Dick is an 1851 novel by Herman Melville."


def test_sharegpt_multi_turn_with_system():
    record = json.loads((FIXTURES / "sharegpt.json").read_text())[1]
    row, reason = normalize_record(record, "sharegpt")
    assert reason == ""
    assert [t["role"] for t in row["conversations"]] == ["system", "user", "assistant", "user", "assistant"]
    assert (row["instruction"], row["input"], row["output"], row["n_turns"]) == ("Name a prime number.", "", "7", 2)


def test_sharegpt_user_assistant_in_from_and_stripping():
    record = json.loads((FIXTURES / "sharegpt.json").read_text())[2]
    row, _ = normalize_record(record, "sharegpt")
    assert row["conversations"] == turns(("user", "Say hi."), ("assistant", "Hi!"))


def test_messages_with_text_content_parts():
    record = {
        "messages": [
            {"role": "user", "content": [{"type": "text", "text": "Part one."}, {"type": "text", "text": "Part two."}]},
            {"role": "assistant", "content": "Done."},
        ]
    }
    row, reason = normalize_record(record, "messages")
    assert reason == ""
    assert row["conversations"][0]["content"] == "Part one.\nPart two."


def test_auto_detects_the_format():
    row, reason = normalize_record({"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]}, "")
    assert reason == "" and row["conversations"] == turns(("user", "a"), ("assistant", "b"))


def chat(*pairs, key="conversations", role_key="from", content_key="value"):
    return {key: [{role_key: r, content_key: c} for r, c in pairs]}


@pytest.mark.parametrize(
    "record, fmt, reason",
    [
        ({"instruction": "a", "input": "", "output": ""}, "alpaca", "field 'output' is empty"),
        ({"instruction": "a", "input": "", "output": " \n\t "}, "alpaca", "field 'output' is empty"),
        ({"instruction": "   ", "output": "b"}, "alpaca", "field 'instruction' is empty"),
        ({"instruction": 5, "output": "b"}, "alpaca", "field 'instruction' is not a string (got int)"),
        ({"instruction": "a", "input": 3, "output": "b"}, "alpaca", "field 'input' is not a string (got int)"),
        ({"instruction": "a", "output": ["b"]}, "alpaca", "field 'output' is not a string (got list)"),
        ({"instruction": "a", "output": None}, "alpaca", "field 'output' is null"),
        ({"instruction": "a"}, "alpaca", "field 'output' is missing"),
        ({"instruction": "a"}, "", "field 'output' is missing"),
        ({"instruction": "a", "output": "b", "history": "x"}, "alpaca", "field 'history' is not a list (got str)"),
        ({"instruction": "a", "output": "b", "history": [["u"]]}, "alpaca", "field 'history' item 1: expected a [user, assistant] pair"),
        ({"instruction": "a", "output": "b", "history": [["u", " "]]}, "alpaca", "field 'history' item 1: assistant text is empty"),
        ({"instruction": "a", "context": "", "response": "", "category": "x"}, "dolly", "field 'response' is empty"),
        ({"instruction": "a", "input": "", "output": "b", "category": 7}, "dolly", "field 'category' is not a string (got int)"),
        (chat(("human", "a"), ("gpt", "b"), ("bot", "c")), "sharegpt", "conversations turn 3: unknown role 'bot' (expected human/user, gpt/assistant or system)"),
        (chat(("gpt", "a"), ("human", "b")), "sharegpt", "conversations turn 1: expected role 'user', got 'assistant'"),
        (chat(("human", "a"), ("human", "b"), ("gpt", "c")), "sharegpt", "conversations turn 2: expected role 'assistant', got 'user'"),
        (chat(("human", "a"), ("gpt", "b"), ("human", "c")), "sharegpt", "conversations: last turn is 'user', expected an assistant reply"),
        (chat(("human", "a"), ("gpt", "  ")), "sharegpt", "conversations turn 2: content is empty"),
        (chat(("human", 1), ("gpt", "b")), "sharegpt", "conversations turn 1: content is not a string (got int)"),
        (chat(("human", "a"), ("system", "s"), ("gpt", "b")), "sharegpt", "conversations turn 2: system turn is only allowed as the first turn"),
        (chat(("system", "s")), "sharegpt", "conversations: last turn is 'system', expected an assistant reply"),
        ({"conversations": []}, "sharegpt", "field 'conversations' is empty"),
        ({"conversations": "hi"}, "sharegpt", "field 'conversations' is not a list (got str)"),
        ({"conversations": ["hi"]}, "sharegpt", "conversations turn 1: not an object (got str)"),
        (chat(("user", "a"), ("tool", "b"), key="messages", role_key="role", content_key="content"), "messages", "messages turn 2: unknown role 'tool' (expected human/user, gpt/assistant or system)"),
        ({"messages": [{"role": "user", "content": [{"type": "image_url"}]}]}, "messages", "messages turn 1: non-text content part 'image_url'"),
        ({"messages": None}, "messages", "field 'messages' is null"),
        ({"foo": 1, "bar": 2}, "", "unknown format: no field 'instruction', 'conversations' or 'messages' (keys ['foo', 'bar'])"),
        ({"foo": 1}, "csv", "unknown format 'csv'"),
        ([1, 2], "", "record is not a JSON object (got list)"),
        ({"instruction": "half an emoji \ud83d", "output": "b"}, "alpaca",
         "field 'instruction' holds an unpaired surrogate \\ud83d (invalid Unicode)"),
        (chat(("human", "a"), ("gpt", "\udc00")), "sharegpt",
         "conversations turn 2: content holds an unpaired surrogate \\udc00 (invalid Unicode)"),
        ({"x" * 100: 1}, "", "unknown format: no field 'instruction', 'conversations' or 'messages' "
                             "(keys ['xxxxxxxxxxxxxxxxxxxxxxxxx...'])"),
        (chat(("human", "a"), ("r" * 100, "b")), "sharegpt",
         "conversations turn 2: unknown role 'rrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrr...' "
         "(expected human/user, gpt/assistant or system)"),
    ],
)
def test_unusable_records_name_the_field(record, fmt, reason):
    row, got = normalize_record(record, fmt)
    assert row is None
    assert got == reason


# --------------------------------------------------------------------------- content_id


def test_content_id_is_sha256_of_canonical_json():
    conv = turns(("user", "你好"), ("assistant", "Hello"))
    canon = json.dumps(conv, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    assert content_id(conv) == hashlib.sha256(canon.encode("utf-8")).hexdigest()[:16]
    assert content_id(conv) == "49a2715c49ad956c"  # pinned: ids must not drift between releases


def test_content_id_ignores_key_order_and_container_type():
    conv = turns(("user", "a"), ("assistant", "b"))
    reordered = [{"content": t["content"], "role": t["role"]} for t in conv]
    as_numpy = np.array(conv, dtype=object)  # what DuckDB hands back
    assert content_id(conv) == content_id(reordered) == content_id(as_numpy)
    assert content_id(conv) != content_id(turns(("user", "a"), ("assistant", "b ")))
    assert content_id(conv) != content_id(turns(("system", "a"), ("assistant", "b")))


def test_same_content_from_two_formats_gets_the_same_id():
    a, _ = normalize_record({"instruction": "Q?", "input": "", "output": "A."}, "alpaca")
    b, _ = normalize_record(chat(("human", "Q?"), ("gpt", " A. ")), "sharegpt")
    assert content_id(a["conversations"]) == content_id(b["conversations"])


# --------------------------------------------------------------------------- build_pool


def check_accounting(result, raw):
    for src, c in result.counts.items():
        assert c["read"] == c["kept"] + c["duplicates"] + c["quarantined"], src
        assert c["read"] == int((raw["source"] == src).sum())
        assert c["kept"] == int((result.pool["source"] == src).sum())
        q = result.quarantine[result.quarantine["source"] == src]
        assert c["duplicates"] == int((q["kind"] == "duplicate").sum())
        assert c["quarantined"] == int((q["kind"] == "invalid").sum())
    assert len(result.pool) + len(result.quarantine) == len(raw)


def check_frames(result):
    assert list(result.pool.columns) == list(POOL_COLUMNS)
    assert list(result.quarantine.columns) == list(QUARANTINE_COLUMNS)
    assert result.pool["id"].is_unique
    for frame in (result.pool, result.quarantine):
        for col in frame.columns:
            expected = "int64" if col in ("n_turns", "source_row") else object
            assert frame[col].dtype == expected, col


def test_all_fixture_formats_build_a_pool():
    raw = raw_of(("alp", "alpaca.json"), ("dol", "dolly.jsonl"), ("sg", "sharegpt.jsonl"), ("msg", "messages.json"))
    result = build_pool(raw)
    check_frames(result)
    check_accounting(result, raw)
    # sharegpt s1 repeats alpaca row 0 (same conversation): a duplicate across sources and formats
    assert result.counts == {
        "alp": {"read": 3, "kept": 3, "duplicates": 0, "quarantined": 0},
        "dol": {"read": 2, "kept": 2, "duplicates": 0, "quarantined": 0},
        "sg": {"read": 3, "kept": 2, "duplicates": 1, "quarantined": 0},
        "msg": {"read": 2, "kept": 2, "duplicates": 0, "quarantined": 0},
    }
    dup = result.quarantine.iloc[0]
    kept = result.pool[(result.pool["source"] == "alp") & (result.pool["source_row"] == 0)].iloc[0]
    assert (dup["kind"], dup["source"], dup["source_row"]) == ("duplicate", "sg", 0)
    assert dup["duplicate_of"] == kept["id"]
    assert "alpaca.json" in dup["reason"]
    assert result.pool.loc[result.pool["source"] == "dol", "category"].tolist() == ["closed_qa", "brainstorming"]
    assert result.pool.loc[result.pool["source"] == "msg", "n_turns"].tolist() == [1, 2]


def test_duplicates_within_a_source_keep_the_first_in_input_order():
    raw = raw_of(("a", "alpaca.json"), ("a", "alpaca.jsonl"))  # same source, same content twice
    result = build_pool(raw)
    check_accounting(result, raw)
    assert result.counts["a"] == {"read": 6, "kept": 3, "duplicates": 3, "quarantined": 0}
    assert result.pool["source_file"].eq("alpaca.json").all()
    q = result.quarantine
    assert q["kind"].eq("duplicate").all() and q["source_file"].eq("alpaca.jsonl").all()
    assert q["duplicate_of"].tolist() == result.pool["id"].tolist()


def test_parse_errors_and_invalid_records_are_quarantined_with_reasons():
    raw = raw_of(("bad", "bad_line.jsonl"), ("mix", "mixed.jsonl"))
    result = build_pool(raw)
    check_frames(result)
    check_accounting(result, raw)
    q = result.quarantine.set_index(["source", "source_row"])
    assert q.loc[("bad", 2), "kind"] == "invalid"
    assert "bad_line.jsonl line 3: invalid JSON" in q.loc[("bad", 2), "reason"]
    assert q.loc[("bad", 2), "raw"].startswith('{"instruction": "Broken line')
    assert q.loc[("mix", 4), "reason"] == "unknown format: no field 'instruction', 'conversations' or 'messages' (keys ['foo', 'bar'])"
    assert q.loc[("mix", 5), "reason"] == "record is not a JSON object (got list)"
    assert (q["duplicate_of"] == "").all()
    assert result.counts["bad"] == {"read": 4, "kept": 3, "duplicates": 0, "quarantined": 1}
    assert result.counts["mix"] == {"read": 6, "kept": 4, "duplicates": 0, "quarantined": 2}


def test_quarantined_raw_is_truncated_to_2000_characters():
    raw = pd.DataFrame(
        {
            "source": ["s"], "source_file": ["f.jsonl"], "source_row": [0], "format": ["alpaca"],
            "raw": [json.dumps({"instruction": "x" * 5000, "output": ""})], "parse_error": [""],
        }
    )
    result = build_pool(raw)
    assert len(result.quarantine["raw"][0]) == 2000
    assert result.quarantine["reason"][0] == "field 'output' is empty"


def test_empty_raw_gives_empty_frames_with_dtypes():
    raw = pd.DataFrame({c: pd.Series([], dtype="int64" if c == "source_row" else object) for c in RAW_COLUMNS})
    result = build_pool(raw)
    assert len(result.pool) == 0 and len(result.quarantine) == 0 and result.counts == {}
    check_frames(result)


def test_missing_raw_columns_raise():
    with pytest.raises(ValueError, match="lacks columns"):
        build_pool(pd.DataFrame({"source": ["a"]}))


def test_bundled_sample_builds_a_pool():
    raw = read_sources(load_sources(DATA), DATA)
    result = build_pool(raw)
    check_frames(result)
    check_accounting(result, raw)
    assert set(result.counts) == {"alpaca", "dolly", "belle_zh"}
    assert sum(c["kept"] for c in result.counts.values()) >= 590
    zh = result.pool[result.pool["source"] == "belle_zh"]
    assert zh["instruction"].str.contains(r"[\u4e00-\u9fff]").all()


def test_fifty_thousand_rows_normalise_in_a_few_seconds():
    base = read_sources(load_sources(DATA), DATA)
    reps = 50_000 // len(base) + 1
    frames = []
    for k in range(reps):  # every copy changes the text so that nothing is a duplicate
        f = base.copy()
        f["raw"] = f["raw"].str.replace('"instruction": "', f'"instruction": "[{k}] ', n=1, regex=False)
        frames.append(f)
    raw = pd.concat(frames, ignore_index=True).head(50_000)
    start = time.perf_counter()
    result = build_pool(raw)
    elapsed = time.perf_counter() - start
    check_accounting(result, raw)
    assert len(result.pool) > 49_000
    assert elapsed < 15, f"build_pool took {elapsed:.1f}s for 50K rows"
