"""The loss engine's resumable cache and its worker threads."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from instsel_assets.scoring.loss_cache import LossCache, model_key, pair_key, tokenizer_key, weights_digest
from instsel_assets.scoring.loss_engine import answer_losses, resolve_workers


def _pairs(tokenizer, n: int = 20):
    out = []
    for i in range(n):
        prefix = tokenizer(f"Question {i}: " + "tell me about the sea " * (i % 5 + 1))["input_ids"]
        answer = tokenizer("The sea is wide and deep. " * (i % 3 + 1))["input_ids"]
        out.append((prefix, answer))
    return out


def test_second_run_computes_nothing_and_matches(tiny_lm, tmp_path):
    model, tok = tiny_lm
    pairs = _pairs(tok)
    first = LossCache.for_model(tmp_path, model, tok, shard_size=6)
    r1 = answer_losses(model, tok, pairs, batch_size=4, cache=first)
    assert first.misses == len(pairs) and first.hits == 0
    # A shard is written once >= 6 pairs are pending; pairs arrive a batch (4) at a time: 8, 8, then the
    # final flush of 4.
    assert first.shards_written == 3

    second = LossCache.for_model(tmp_path, model, tok)
    assert len(second) == len(pairs) and second.shards_read == 3

    def forbidden(*args, **kwargs):
        raise AssertionError("a cached pair was computed again")

    calls = []
    r2 = answer_losses(model, tok, pairs, batch_size=4, cache=second, progress=lambda d, t: calls.append((d, t)))
    assert second.hits == len(pairs) and second.misses == 0
    np.testing.assert_array_equal(r1.mean_loss, r2.mean_loss)
    np.testing.assert_array_equal(r1.n_answer_tokens, r2.n_answer_tokens)
    assert calls == [(len(pairs), len(pairs))]


def test_interrupted_run_resumes_from_written_shards(tiny_lm, tmp_path):
    model, tok = tiny_lm
    pairs = _pairs(tok, 16)
    reference = answer_losses(model, tok, pairs, batch_size=4, workers=1)

    cache = LossCache.for_model(tmp_path, model, tok, shard_size=4)

    def crash(done, total):
        if done >= 8:
            raise KeyboardInterrupt("killed")

    with pytest.raises(KeyboardInterrupt):
        answer_losses(model, tok, pairs, batch_size=4, cache=cache, progress=crash, workers=1)
    resumed = LossCache.for_model(tmp_path, model, tok, shard_size=4)
    assert 8 <= len(resumed) < len(pairs)
    already = len(resumed)
    got = answer_losses(model, tok, pairs, batch_size=4, cache=resumed, workers=1)
    assert resumed.hits == already and resumed.misses == len(pairs) - already
    # the missing batches are computed with the companions they had in the uninterrupted run: same numbers
    np.testing.assert_array_equal(got.mean_loss, reference.mean_loss)


def test_key_changes_with_weights_tokens_and_template(tiny_lm, tmp_path):
    model, tok = tiny_lm
    base = model_key(model, tok)
    assert model_key(model, tok) == base  # deterministic

    changed = copy.deepcopy(model)
    with torch.no_grad():
        changed.model.layers[0].self_attn.q_proj.weight[3, 5] += 1e-3  # one element of one matrix
    assert weights_digest(changed) != weights_digest(model)
    assert model_key(changed, tok) != base

    other_template = copy.deepcopy(tok)
    other_template.chat_template = tok.chat_template + " "
    assert tokenizer_key(other_template) != tokenizer_key(tok)
    assert model_key(model, other_template) != base

    assert pair_key(base, [1, 2], [3]) != pair_key(base, [1], [2, 3])  # the boundary is part of the key
    assert pair_key(base, [1, 2], [3]) != pair_key(base, [1, 2], [4])

    # A fine-tuned model never reads its base's results.
    pairs = _pairs(tok, 4)
    answer_losses(model, tok, pairs, cache=LossCache.for_model(tmp_path, model, tok))
    other = LossCache.for_model(tmp_path, changed, tok)
    assert len(other) == 0


def test_damaged_shard_is_skipped_and_recomputed(tiny_lm, tmp_path, caplog):
    model, tok = tiny_lm
    pairs = _pairs(tok, 6)
    cache = LossCache.for_model(tmp_path, model, tok, shard_size=3)
    answer_losses(model, tok, pairs, batch_size=3, cache=cache, workers=1)
    shards = sorted(cache.directory.glob("shard-*.parquet"))
    shards[0].write_bytes(b"not parquet")
    reopened = LossCache.for_model(tmp_path, model, tok)
    assert len(reopened) == 3
    assert "skipping unreadable shard" in caplog.text


@pytest.mark.parametrize("workers", [1, 2, 3])
def test_worker_threads_give_identical_results(tiny_lm, workers):
    model, tok = tiny_lm
    pairs = _pairs(tok, 23)
    threads = torch.get_num_threads()
    one = answer_losses(model, tok, pairs, batch_size=3, workers=1)
    many = answer_losses(model, tok, pairs, batch_size=3, workers=workers)
    np.testing.assert_allclose(many.mean_loss, one.mean_loss, rtol=1e-6, atol=1e-7)
    assert torch.get_num_threads() == threads  # restored


def test_worker_errors_surface_in_the_caller(tiny_lm):
    model, tok = tiny_lm
    bad = [([1, 2], [len(tok) + 50, 3])] * 8  # token id outside the vocabulary
    with pytest.raises(IndexError):
        answer_losses(model, tok, bad, batch_size=2, workers=2)


def test_resolve_workers():
    cpu = torch.device("cpu")
    assert resolve_workers(3, cpu, 10) == 3
    assert resolve_workers(3, cpu, 2) == 2  # never more workers than batches
    assert resolve_workers("auto", torch.device("cuda"), 10) == 1
    assert 1 <= resolve_workers("auto", cpu, 10) <= torch.get_num_threads()
    for bad in (0, -1, "many"):
        with pytest.raises(ValueError, match="workers"):
            resolve_workers(bad, cpu, 10)


def test_batches_are_planned_over_all_pairs_cached_or_not():
    from instsel_assets.scoring.loss_engine import plan_batches

    lengths = [10, 9, 8, 7, 6, 5, 4, 3, 2]
    everything = list(range(9))
    assert plan_batches(lengths, everything, set(everything), 3) == [[0, 1, 2], [3, 4, 5], [6, 7, 8]]
    # after a kill: whole batches are cached, the others are computed with their planned companions
    assert plan_batches(lengths, everything, {0, 1, 2, 6, 7, 8}, 3) == [[0, 1, 2], [6, 7, 8]]
    # partly cached batches (another scorer filled the cache): their missing pairs are re-batched together,
    # and no cached pair is computed again
    assert plan_batches(lengths, everything, {1, 3, 4, 5, 8}, 3) == [[1, 8], [3, 4, 5]]  # longest first
