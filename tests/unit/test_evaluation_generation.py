"""Answers to test prompts: turn-by-turn requests, greedy generation through the engine, the cache, accounting."""

import pandas as pd

from instsel_assets.evaluation.generation import (
    GenerationSettings, checkpoint_model_name, generate_answers, turn_request)
from instsel_assets.judge.backends import LocalBackend
from instsel_assets.judge.cache import JudgeCache


def test_turn_requests_interleave_user_turns_and_own_answers():
    settings = GenerationSettings(max_new_tokens=7)
    first = turn_request(["q1", "q2"], [], settings)
    second = turn_request(["q1", "q2"], ["a1"], settings)
    assert [m["content"] for m in first.messages] == ["q1"]
    assert [(m["role"], m["content"]) for m in second.messages] == [("user", "q1"), ("assistant", "a1"), ("user", "q2")]
    assert first.max_tokens == 7 and first.temperature == 0.0 and first.rating is None


def test_generate_answers_multi_turn_cached_and_accounted(tiny_lm, tmp_path):
    model, tokenizer = tiny_lm
    backend = LocalBackend(model, tokenizer, "tiny-ckpt", batch_size=2, max_length=160)
    items = [("vicuna_80|1", ["Give three tips for staying healthy."]),
             ("mt_bench|81", ["Write a haiku.", "Now rewrite it in French."]),
             ("koala_180|k", ["  "]),  # empty user turn: counted as failed, never sent
             ("lima_300|x", ["word " * 200])]  # longer than max_length: refused, not cut
    settings = GenerationSettings(max_new_tokens=5)
    cache = JudgeCache(tmp_path / "cache")
    table, runs = generate_answers(items, backend, settings, cache=cache)
    assert list(table["key"]) == [k for k, _ in items]
    assert list(table["status"]) == ["ok", "ok", "failed", "failed"]
    assert len(table.loc[0, "answer"]) == 1 and len(table.loc[1, "answer"]) == 2
    assert table.loc[2, "error"].endswith("empty user turn") and "prompt too long" in table.loc[3, "error"]
    assert all(0 < n <= 5 * len(a) for n, a in zip(table["n_new_tokens"][:2], table["answer"][:2]))
    assert [len(r) for r in table["finish_reasons"][:2]] == [1, 2]
    assert len(runs) == 2 and runs[1]["requested"] == 1  # turn 2 only for the two-turn item
    again, runs2 = generate_answers(items, backend, settings, cache=cache)
    cache.close()
    pd.testing.assert_frame_equal(again.drop(columns="error"), table.drop(columns="error"))
    assert "prompt too long" in again.loc[3, "error"]  # failures are not cached: tried again, refused again
    assert sum(r["cache_hits"] for r in runs2) == 3 and sum(r["sent"] for r in runs2) == 1  # only the refused one


def test_checkpoint_name_changes_with_the_weights(tmp_path):
    (tmp_path / "adapter_model.safetensors").write_bytes(b"a")
    (tmp_path / "instsel_checkpoint.json").write_text("{}")
    one = checkpoint_model_name(tmp_path, "base")
    (tmp_path / "adapter_model.safetensors").write_bytes(b"b")
    assert one.startswith("base+ckpt:") and checkpoint_model_name(tmp_path, "base") != one
