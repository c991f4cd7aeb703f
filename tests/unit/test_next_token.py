"""Next-token candidate engine: exact agreement with plain full-logits forward passes, batching, truncation."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from instsel_assets.scoring import next_token
from instsel_assets.scoring.next_token import candidate_logprobs, candidate_mass, truncated_tokens


def reference_logprobs(model, prompt, candidates):
    """One prompt at a time, the plain way: full logits, log-softmax at the last position."""
    with torch.no_grad():
        logits = model(torch.tensor([prompt])).logits[0, -1].float()
    return torch.log_softmax(logits, dim=-1)[candidates].double().numpy()


def make_prompts(tok):
    texts = ["Give three tips for staying healthy.", "Red, blue", "三原色是什么？三原色是红色",
             "The quick brown fox jumps over the lazy dog while the cat sleeps in the sun. The waves roll in,",
             "def add(a, b):"]
    return [tok(t, add_special_tokens=False)["input_ids"] for t in texts]


def test_matches_plain_forward_with_padding_in_the_batch(tiny_lm):
    model, tok = tiny_lm
    prompts = make_prompts(tok)
    assert len({len(p) for p in prompts}) == len(prompts)  # every batch below needs padding
    candidates = [5, 17, 42, 300, len(tok) - 1]
    expected = np.stack([reference_logprobs(model, p, candidates) for p in prompts])
    for batch_size in (1, 2, 8):
        got = candidate_logprobs(model, tok, prompts, candidates, batch_size=batch_size)
        assert got.shape == (len(prompts), len(candidates)) and got.dtype == np.float64
        np.testing.assert_allclose(got, expected, atol=1e-5, rtol=0)
    assert np.all(got < 0)


def test_values_are_log_probabilities_over_the_full_vocabulary(tiny_lm):
    model, tok = tiny_lm
    prompts = make_prompts(tok)
    every_token = list(range(model.config.vocab_size))
    full = candidate_logprobs(model, tok, prompts, every_token, batch_size=3)
    np.testing.assert_allclose(candidate_mass(full), 1.0, atol=1e-5)
    few = candidate_logprobs(model, tok, prompts, [3, 9], batch_size=3)
    np.testing.assert_allclose(few, full[:, [3, 9]], atol=1e-6)
    mass = candidate_mass(few)
    np.testing.assert_allclose(mass, np.exp(full[:, 3]) + np.exp(full[:, 9]), rtol=1e-9)
    assert np.all((mass > 0) & (mass < 1))


def test_left_truncation_keeps_the_end_of_the_prompt(tiny_lm):
    model, tok = tiny_lm
    prompts = make_prompts(tok)
    candidates = [7, 8, 9]
    cut = candidate_logprobs(model, tok, prompts, candidates, max_length=4)
    expected = np.stack([reference_logprobs(model, p[-4:], candidates) for p in prompts])
    np.testing.assert_allclose(cut, expected, atol=1e-5)
    assert truncated_tokens(prompts, 4).tolist() == [max(len(p) - 4, 0) for p in prompts]
    long_one = max(range(len(prompts)), key=lambda i: len(prompts[i]))
    assert not np.allclose(cut[long_one], candidate_logprobs(model, tok, [prompts[long_one]], candidates)[0])


def test_order_progress_and_train_mode_restored(tiny_lm):
    model, tok = tiny_lm
    prompts = make_prompts(tok)
    seen = []
    forward = candidate_logprobs(model, tok, prompts, [1, 2], batch_size=2, progress=lambda d, t: seen.append((d, t)))
    backward = candidate_logprobs(model, tok, prompts[::-1], [1, 2], batch_size=2)
    np.testing.assert_allclose(forward, backward[::-1], atol=1e-6)
    assert seen == [(0, 5), (2, 5), (4, 5), (5, 5)]
    model.train()
    candidate_logprobs(model, tok, prompts[:1], [1])
    assert model.training


def test_peft_wrapped_model_uses_its_adapter(tiny_lm):
    from peft import LoraConfig, get_peft_model

    model, tok = tiny_lm
    prompts = make_prompts(tok)
    plain = candidate_logprobs(model, tok, prompts, [4, 6])
    wrapped = get_peft_model(model, LoraConfig(r=2, target_modules=["q_proj", "v_proj"]))
    with torch.no_grad():  # a trained-looking adapter: LoRA's B starts at zero
        for name, p in wrapped.named_parameters():
            if "lora_B" in name:
                p.normal_(0.0, 0.5)
    got = candidate_logprobs(wrapped, tok, prompts, [4, 6])
    expected = np.stack([reference_logprobs(wrapped, p, [4, 6]) for p in prompts])
    np.testing.assert_allclose(got, expected, atol=1e-5)
    assert np.abs(got - plain).max() > 1e-3


def test_only_last_positions_reach_the_lm_head(tiny_lm, monkeypatch):
    model, tok = tiny_lm
    rows_seen = []
    real_parts = next_token._parts

    def spy_parts(m):
        decoder, head, post = real_parts(m)

        class Head(torch.nn.Module):
            weight = head.weight

            def forward(self, x):
                rows_seen.append(tuple(x.shape))
                return head(x)

        return decoder, Head(), post

    monkeypatch.setattr(next_token, "_parts", spy_parts)
    candidate_logprobs(model, tok, make_prompts(tok), [1], batch_size=2)
    assert rows_seen == [(2, model.config.hidden_size), (2, model.config.hidden_size), (1, model.config.hidden_size)]


def test_empty_and_bad_arguments(tiny_lm):
    model, tok = tiny_lm
    empty = candidate_logprobs(model, tok, [], [1, 2, 3])
    assert empty.shape == (0, 3)
    assert candidate_mass(empty).shape == (0,)
    with pytest.raises(ValueError, match="prompt 1 is empty"):
        candidate_logprobs(model, tok, [[1, 2], []], [1])
    with pytest.raises(ValueError, match="candidate_ids"):
        candidate_logprobs(model, tok, [[1, 2]], [])
    with pytest.raises(ValueError, match="duplicates"):
        candidate_logprobs(model, tok, [[1, 2]], [3, 3])
    with pytest.raises(ValueError, match="outside the model's vocabulary"):
        candidate_logprobs(model, tok, [[1, 2]], [model.config.vocab_size])
    with pytest.raises(ValueError, match="batch_size"):
        candidate_logprobs(model, tok, [[1, 2]], [1], batch_size=0)
    with pytest.raises(ValueError, match="max_length"):
        candidate_logprobs(model, tok, [[1, 2]], [1], max_length=0)
    with pytest.raises(ValueError, match="2-D"):
        candidate_mass(np.zeros(3))


# ------------------------------------------------------------------------------------- shared prefix
def rating_like_prompts(tok, n=9):
    """Prompts that start with the same long text (as a rating prompt does) and end differently."""
    head = tok("Rate the answer below on a scale of 1 to 5. Consider helpfulness, accuracy and clarity. "
               "Instruction:", add_special_tokens=False)["input_ids"]
    tails = ["Give three tips.", "Red, blue", "三原色是什么？", "The quick brown fox jumps over the lazy dog.",
             "def add(a, b):", "Bonjour.", "List five animals.", "Explain why the sky is blue.", "x"]
    return head, [head + tok(t, add_special_tokens=False)["input_ids"] for t in tails[:n]]


def test_shared_prefix_is_run_once_and_gives_the_same_values(tiny_lm, monkeypatch):
    model, tok = tiny_lm
    head, prompts = rating_like_prompts(tok)
    assert len(head) >= next_token.MIN_SHARED_PREFIX
    candidates = [5, 17, 42]
    expected = np.stack([reference_logprobs(model, p, candidates) for p in prompts])
    seen = []
    real = next_token._prefix_cache

    def spy(decoder, prefix, device):
        seen.append(len(prefix))
        return real(decoder, prefix, device)

    monkeypatch.setattr(next_token, "_prefix_cache", spy)
    for batch_size in (1, 4):
        got = candidate_logprobs(model, tok, prompts, candidates, batch_size=batch_size)
        np.testing.assert_allclose(got, expected, atol=1e-5, rtol=0)
    assert seen == [len(head), len(head)]  # once per call, whatever the batch size
    off = candidate_logprobs(model, tok, prompts, candidates, batch_size=4, shared_prefix=False)
    np.testing.assert_allclose(off, expected, atol=1e-5, rtol=0)
    assert len(seen) == 2


def test_a_prompt_that_is_the_whole_shared_prefix_keeps_its_last_token(tiny_lm):
    model, tok = tiny_lm
    head, prompts = rating_like_prompts(tok, n=3)
    prompts = [head] + prompts  # the common prefix is all of prompt 0: it must still predict from its end
    expected = np.stack([reference_logprobs(model, p, [5, 6]) for p in prompts])
    np.testing.assert_allclose(candidate_logprobs(model, tok, prompts, [5, 6], batch_size=2), expected,
                               atol=1e-5, rtol=0)


def test_short_shared_prefixes_are_not_cached(tiny_lm, monkeypatch):
    model, tok = tiny_lm
    monkeypatch.setattr(next_token, "_prefix_cache", lambda *a: pytest.fail("prefix cache built for 2 tokens"))
    prompts = [[7, 8, 9, 10], [7, 8, 11], [7, 8, 12, 13, 14]]
    assert next_token.common_prefix_length(prompts) == 2
    candidate_logprobs(model, tok, prompts, [5, 6], batch_size=2)
    assert next_token.common_prefix_length([]) == 0 and next_token.common_prefix_length([[1, 2], [3]]) == 0
