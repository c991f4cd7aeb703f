"""The judge reply cache: durable append-only JSON Lines shards, one per writer, torn last lines skipped."""

from __future__ import annotations

import json
import logging
import os
import threading

import pytest

from instsel_assets.judge.cache import JudgeCache, default_cache_dir
from instsel_assets.judge.types import JudgeReply, JudgeRequest, RatingSpec

BACKEND = "openai:http://127.0.0.1:1/v1"


def key(i: int) -> str:
    return JudgeRequest(messages=({"role": "user", "content": f"q{i}"},)).key(BACKEND, "m")


def answer(i: int, **kw) -> JudgeReply:
    return JudgeReply(text=f"Score: {i}", prompt_tokens=10 + i, completion_tokens=2, finish_reason="stop", **kw)


def test_round_trip_through_a_new_instance(tmp_path):
    cache = JudgeCache(tmp_path)
    rating = JudgeReply(text="Score: 4.2500", prompt_tokens=7, finish_reason="rating",
                        digit_probs={4: 0.75, 5: 0.25})
    cache.add(key(1), answer(1), model="m", backend_id=BACKEND)
    cache.add(key(2), rating, model="m", backend_id=BACKEND)
    cache.close()

    again = JudgeCache(tmp_path)
    found = again.lookup([key(1), key(2), key(3), key(1)])
    assert set(found) == {key(1), key(2)} and len(again) == 2
    assert found[key(1)] == JudgeReply(text="Score: 1", prompt_tokens=11, completion_tokens=2, finish_reason="stop",
                                       cached=True)
    assert found[key(2)].digit_probs == {4: 0.75, 5: 0.25} and found[key(2)].cached
    assert again.stats() == {"hits": 2, "misses": 1, "written": 0, "entries": 2, "shards": 1, "torn_lines": 0}

    [shard] = tmp_path.glob("judge-*.jsonl")
    record = json.loads(shard.read_text().splitlines()[0])
    assert set(record) == {"v", "key", "text", "prompt_tokens", "completion_tokens", "finish_reason", "model",
                           "backend_id", "digit_probs", "created"}
    assert (record["model"], record["backend_id"], record["created"][-1]) == ("m", BACKEND, "Z")


def test_every_answer_is_fsynced_as_it_is_added(tmp_path, monkeypatch):
    synced = []
    real_fsync = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (synced.append(fd), real_fsync(fd)))
    cache = JudgeCache(tmp_path)
    for i in range(3):
        cache.add(key(i), answer(i), model="m", backend_id=BACKEND)
        # readable by another process the moment add returns
        assert key(i) in JudgeCache(tmp_path).lookup([key(i)])
    assert len(synced) >= 3 and cache.stats()["written"] == 3


def test_errors_and_budget_stops_are_never_cached(tmp_path):
    cache = JudgeCache(tmp_path)
    for reply in (JudgeReply(text=None, error="budget"), JudgeReply(text=None, error="http 429 after 5 attempts"),
                  JudgeReply(text="partial", error="timeout"), JudgeReply(text=None)):
        with pytest.raises(ValueError, match="never cached"):
            cache.add(key(1), reply, model="m", backend_id=BACKEND)
    assert len(cache) == 0 and not list(tmp_path.glob("judge-*.jsonl"))


def test_a_torn_last_line_is_skipped_with_a_warning(tmp_path, caplog):
    cache = JudgeCache(tmp_path)
    cache.add(key(1), answer(1), model="m", backend_id=BACKEND)
    cache.add(key(2), answer(2), model="m", backend_id=BACKEND)
    cache.close()
    [shard] = tmp_path.glob("judge-*.jsonl")
    data = shard.read_bytes()
    shard.write_bytes(data[: len(data) - 25])  # a crash in the middle of writing the second line
    with caplog.at_level(logging.WARNING):
        again = JudgeCache(tmp_path)
    assert set(again.lookup([key(1), key(2)])) == {key(1)}
    assert "torn last line" in caplog.text and again.stats()["torn_lines"] == 1


def test_a_complete_last_record_without_its_newline_is_kept(tmp_path):
    cache = JudgeCache(tmp_path)
    cache.add(key(1), answer(1), model="m", backend_id=BACKEND)
    cache.close()
    [shard] = tmp_path.glob("judge-*.jsonl")
    shard.write_bytes(shard.read_bytes().rstrip(b"\n"))
    assert key(1) in JudgeCache(tmp_path).lookup([key(1)])


def test_a_corrupt_line_before_the_last_is_an_error_naming_file_and_line(tmp_path):
    cache = JudgeCache(tmp_path)
    for i in range(3):
        cache.add(key(i), answer(i), model="m", backend_id=BACKEND)
    cache.close()
    [shard] = tmp_path.glob("judge-*.jsonl")
    lines = shard.read_text().splitlines()
    lines[1] = lines[1][:20]
    shard.write_text("\n".join(lines) + "\n")
    with pytest.raises(ValueError, match=rf"{shard.name}, line 2: not a valid cache record"):
        JudgeCache(tmp_path)


def test_concurrent_writers_get_their_own_shards_and_readers_see_the_union(tmp_path):
    caches = [JudgeCache(tmp_path) for _ in range(3)]

    def write(c: int) -> None:
        for i in range(c * 20, c * 20 + 20):
            caches[c].add(key(i), answer(i), model="m", backend_id=BACKEND)

    threads = [threading.Thread(target=write, args=(c,)) for c in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    shards = sorted(tmp_path.glob("judge-*.jsonl"))
    assert len(shards) == 3 and all(f"-{os.getpid()}-" in s.name for s in shards)
    for shard in shards:  # no interleaved lines
        assert all(json.loads(line)["v"] == 1 for line in shard.read_text().splitlines())
    # a writer sees the others' answers on its next lookup
    assert len(caches[0].lookup([key(i) for i in range(60)])) == 60
    assert len(JudgeCache(tmp_path)) == 60


def test_keys_separate_backends_models_and_rating_specs():
    request = JudgeRequest(messages=({"role": "user", "content": "q"},))
    rated = JudgeRequest(messages=({"role": "user", "content": "q"},), rating=RatingSpec(1, 5))
    keys = {request.key(BACKEND, "m"), request.key(BACKEND, "n"), request.key("local:m", "m"), rated.key(BACKEND, "m")}
    assert len(keys) == 4


def test_default_directory_follows_instsel_home(tmp_path, monkeypatch):
    monkeypatch.setenv("INSTSEL_HOME", str(tmp_path))
    assert default_cache_dir() == tmp_path.resolve() / "cache" / "judge"
