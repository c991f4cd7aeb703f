"""The batched answer-loss engine against a naive per-example full-logits computation."""

from __future__ import annotations

import math
import random

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from instsel_assets.scoring.loss_engine import LossResult, answer_losses, fit_to_length, token_weighted_mean


def naive_losses(model, pairs, max_length=1024):
    """One example per forward pass, full-vocabulary logits at every position, fp32 log-softmax."""
    out = []
    with torch.no_grad():
        for prefix, answer in pairs:
            p, a, _ = fit_to_length(prefix, answer, max_length)
            seq = p + a
            start = max(len(p), 1)
            if len(seq) - start <= 0:
                out.append(math.nan)
                continue
            logits = model(input_ids=torch.tensor([seq])).logits[0].float()
            logp = F.log_softmax(logits, dim=-1)
            targets = torch.tensor(seq[start:])
            nll = -logp[torch.arange(start - 1, len(seq) - 1), targets]
            out.append(nll.mean().item())
    return np.array(out)


def random_pairs(vocab, n, seed, max_prefix=60, max_answer=40):
    rng = random.Random(seed)
    pairs = []
    for _ in range(n):
        lp = rng.randint(0, max_prefix)
        la = rng.randint(1, max_answer)
        pairs.append(([rng.randrange(vocab) for _ in range(lp)], [rng.randrange(vocab) for _ in range(la)]))
    return pairs


_NAIVE_CACHE: dict = {}


@pytest.mark.parametrize("batch_size", [1, 3, 8, 64])
def test_batched_equals_naive_fp32(tiny_lm, batch_size):
    model, tok = tiny_lm  # freshly built with the same seed for every parameter: the naive result is shared
    pairs = random_pairs(len(tok), 18, seed=11)
    pairs.append(([], [5, 6, 7]))  # empty prefix: first answer token not scored
    pairs.append(([5], [9]))  # one token each
    res = answer_losses(model, tok, pairs, batch_size=batch_size)
    if "mixed" not in _NAIVE_CACHE:
        _NAIVE_CACHE["mixed"] = naive_losses(model, pairs)
    ref = _NAIVE_CACHE["mixed"]
    assert isinstance(res, LossResult) and len(res) == len(pairs)
    np.testing.assert_allclose(res.mean_loss, ref, atol=1e-4, rtol=0)
    expected_tokens = [len(a) - (0 if p else 1) for p, a in pairs]
    assert res.n_answer_tokens.tolist() == expected_tokens
    assert res.n_truncated.sum() == 0


def test_result_does_not_depend_on_batch_composition(tiny_lm):
    model, tok = tiny_lm
    pairs = random_pairs(len(tok), 17, seed=1)
    alone = answer_losses(model, tok, pairs, batch_size=1).mean_loss
    perm = list(range(len(pairs)))
    random.Random(0).shuffle(perm)
    shuffled = answer_losses(model, tok, [pairs[i] for i in perm], batch_size=5).mean_loss
    np.testing.assert_allclose(shuffled, alone[perm], atol=1e-5, rtol=0)


def test_pad_token_value_is_irrelevant(tiny_lm):
    model, tok = tiny_lm
    pairs = random_pairs(len(tok), 9, seed=2)
    a = answer_losses(model, tok, pairs, batch_size=9).mean_loss
    tok.pad_token = "<|im_start|>"
    b = answer_losses(model, tok, pairs, batch_size=9).mean_loss
    np.testing.assert_allclose(a, b, atol=1e-5, rtol=0)


def test_empty_answer_gives_nan_and_zero_tokens(tiny_lm):
    model, tok = tiny_lm
    res = answer_losses(model, tok, [([1, 2, 3], []), ([1, 2], [4, 5]), ([], [])], batch_size=2)
    assert math.isnan(res.mean_loss[0]) and math.isnan(res.mean_loss[2])
    assert math.isfinite(res.mean_loss[1])
    assert res.n_answer_tokens.tolist() == [0, 2, 0]
    assert answer_losses(model, tok, [], batch_size=2).mean_loss.shape == (0,)


def test_fit_to_length_rules():
    p, a = list(range(10)), list(range(100, 105))
    assert fit_to_length(p, a, 100) == (p, a, 0)
    # prefix cut from the left, answer kept whole
    assert fit_to_length(p, a, 8) == ([7, 8, 9], a, 7)
    # answer alone too long: one prefix token kept, answer cut on the right
    assert fit_to_length(p, a, 4) == ([9], [100, 101, 102], 11)
    assert fit_to_length([], a, 3) == ([], [100, 101, 102], 2)
    with pytest.raises(ValueError):
        fit_to_length(p, a, 1)


def test_truncation_matches_naive_on_truncated_input(tiny_lm):
    model, tok = tiny_lm
    pairs = random_pairs(len(tok), 12, seed=3, max_prefix=40, max_answer=30)
    res = answer_losses(model, tok, pairs, batch_size=4, max_length=24)
    np.testing.assert_allclose(res.mean_loss, naive_losses(model, pairs, max_length=24), atol=1e-4, rtol=0)
    expected = [max(len(p) + len(a) - 24, 0) for p, a in pairs]
    assert res.n_truncated.tolist() == expected
    assert (res.n_answer_tokens <= 23).all()


def test_lm_head_only_sees_answer_positions(tiny_lm):
    model, tok = tiny_lm
    pairs = random_pairs(len(tok), 10, seed=4)
    rows_seen = []
    handle = model.get_output_embeddings().register_forward_hook(
        lambda mod, inp, out: rows_seen.append(inp[0].shape))
    try:
        res = answer_losses(model, tok, pairs, batch_size=4)
    finally:
        handle.remove()
    assert all(len(s) == 2 for s in rows_seen)  # (positions, hidden): never (batch, length, hidden)
    assert sum(s[0] for s in rows_seen) == int(res.n_answer_tokens.sum())


def test_progress_is_reported(tiny_lm):
    model, tok = tiny_lm
    calls = []
    answer_losses(model, tok, random_pairs(len(tok), 10, seed=5) + [([1], [])], batch_size=4,
                  progress=lambda done, total: calls.append((done, total)))
    assert calls[-1] == (11, 11)
    assert [d for d, _ in calls] == sorted(d for d, _ in calls)


def test_bf16_model_stays_bf16_and_is_close(tiny_lm):
    model, tok = tiny_lm
    pairs = random_pairs(len(tok), 12, seed=6)
    ref = answer_losses(model, tok, pairs, batch_size=4).mean_loss
    model.to(torch.bfloat16)
    got = answer_losses(model, tok, pairs, batch_size=4).mean_loss
    assert next(model.parameters()).dtype == torch.bfloat16
    assert np.abs(got - ref).max() < 0.1
    assert np.corrcoef(got, ref)[0, 1] > 0.99


def test_tied_embeddings_and_training_flag(tiny_lm_factory):
    model, tok = tiny_lm_factory(tie_word_embeddings=True, seed=1)
    model.train()
    pairs = random_pairs(len(tok), 6, seed=7)
    res = answer_losses(model, tok, pairs, batch_size=3)
    assert model.training  # restored
    model.eval()
    np.testing.assert_allclose(res.mean_loss, naive_losses(model, pairs), atol=1e-4, rtol=0)


def test_peft_wrapped_model(tiny_lm):
    peft = pytest.importorskip("peft")
    model, tok = tiny_lm
    pairs = random_pairs(len(tok), 8, seed=8)
    base = answer_losses(model, tok, pairs, batch_size=4).mean_loss
    lora = peft.get_peft_model(model, peft.LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"]))
    lora.eval()
    np.testing.assert_allclose(answer_losses(lora, tok, pairs, batch_size=4).mean_loss, base, atol=1e-5)
    with torch.no_grad():  # make the adapter matter
        for name, p in lora.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.5)
    got = answer_losses(lora, tok, pairs, batch_size=4).mean_loss
    assert np.abs(got - base).max() > 1e-3
    np.testing.assert_allclose(got, naive_losses(lora, pairs), atol=1e-4, rtol=0)


def test_accepts_prefix_answer_objects(tiny_lm):
    from instsel_assets.models.chat import PrefixAnswer

    model, tok = tiny_lm
    pairs = random_pairs(len(tok), 4, seed=9)
    objs = [PrefixAnswer(1, p, a) for p, a in pairs]
    np.testing.assert_allclose(answer_losses(model, tok, objs).mean_loss, answer_losses(model, tok, pairs).mean_loss)


def test_token_weighted_mean():
    res = LossResult(np.array([1.0, 3.0, np.nan]), np.array([1, 3, 0]), np.zeros(3, dtype=np.int64))
    assert token_weighted_mean(res) == pytest.approx(2.5)
    assert res.sum_loss.tolist() == [1.0, 9.0, 0.0]
