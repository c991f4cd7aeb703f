"""LoRA fine-tuning on a tiny in-process Llama (seconds, CPU)."""

from __future__ import annotations

import math

import pytest
import torch

from instsel_assets.models.chat import encode_for_training
from instsel_assets.training.sft import (
    IGNORE_INDEX,
    SFTConfig,
    batch_indices,
    batch_loss,
    collate,
    encode_example,
    finetune_lora,
    linear_warmup_decay,
)

CONVERSATIONS = [
    [{"role": "user", "content": "What is the capital of France?"},
     {"role": "assistant", "content": "The capital of France is Paris."}],
    [{"role": "user", "content": "Name a primary color."},
     {"role": "assistant", "content": "Red is a primary color."}],
    [{"role": "system", "content": "You are terse."},
     {"role": "user", "content": "Add two and three."},
     {"role": "assistant", "content": "Five."}],
    [{"role": "user", "content": "Say hello."},
     {"role": "assistant", "content": "Hello there, friend!"},
     {"role": "user", "content": "Again."},
     {"role": "assistant", "content": "Hello again."}],
]


def test_labels_are_ignored_outside_answers(fresh_tiny_lm):
    _, tokenizer = fresh_tiny_lm
    for conv in CONVERSATIONS:
        ids, mask = encode_for_training(tokenizer, conv, 512)
        ex = encode_example(tokenizer, conv, 512)
        assert ex.input_ids == ids
        assert ex.labels == [t if m else IGNORE_INDEX for t, m in zip(ids, mask)]
        assert any(mask) and not all(mask)
    batch = collate([encode_example(tokenizer, c, 512) for c in CONVERSATIONS], pad_token_id=0)
    for row, conv in enumerate(CONVERSATIONS):
        ids, mask = encode_for_training(tokenizer, conv, 512)
        n = len(ids)
        assert batch["attention_mask"][row, :n].all() and not batch["attention_mask"][row, n:].any()
        assert (batch["labels"][row, n:] == IGNORE_INDEX).all()  # right padding never counts
        labels = batch["labels"][row, :n].tolist()
        assert [lab != IGNORE_INDEX for lab in labels] == mask
        assert batch["input_ids"][row, :n].tolist() == ids


def test_fast_head_loss_equals_full_logits_loss(fresh_tiny_lm):
    make, tokenizer = fresh_tiny_lm
    model = make()
    batch = collate([encode_example(tokenizer, c, 512) for c in CONVERSATIONS], tokenizer.pad_token_id)
    with torch.no_grad():
        fast, n_fast = batch_loss(model, batch, fast_head=True)
        full, n_full = batch_loss(model, batch, fast_head=False)
        ref = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], labels=batch["labels"]).loss
    assert n_fast == n_full > 0
    assert torch.allclose(fast, full, atol=1e-5) and torch.allclose(full, ref, atol=1e-5)


def test_loss_decreases_and_only_lora_is_trainable(fresh_tiny_lm, tmp_path):
    make, tokenizer = fresh_tiny_lm
    model = make()
    # Measured over 3 model seeds x 2 LoRA seeds: mean of the first 5 losses ~6.6, of the last 5 ~1.6-2.0.
    cfg = SFTConfig(max_steps=30, batch_size=4, learning_rate=2e-2, lora_dropout=0.0, log_every=10)
    reports = []
    result = finetune_lora(model, tokenizer, CONVERSATIONS * 2, tmp_path / "ckpt", cfg,
                           base_model_id="tiny-test", progress=reports.append)
    assert result.steps == 30 and len(result.losses) == 30
    assert all(math.isfinite(x) for x in result.losses)
    first, last = sum(result.losses[:5]) / 5, sum(result.losses[-5:]) / 5
    assert last < 0.6 * first, (first, last)
    assert result.first_loss == result.losses[0] and result.last_loss == result.losses[-1]
    assert result.n_examples == 8 and result.n_skipped == 0

    # LoRA on q_proj and v_proj only: r * (in + out) per adapted linear layer.
    c = model.config if hasattr(model, "config") else result.model.config
    head_dim = c.hidden_size // c.num_attention_heads
    q_out, v_out = c.num_attention_heads * head_dim, c.num_key_value_heads * head_dim
    expected = c.num_hidden_layers * cfg.lora_r * ((c.hidden_size + q_out) + (c.hidden_size + v_out))
    trainable = {n: p.numel() for n, p in result.model.named_parameters() if p.requires_grad}
    assert result.trainable_params == sum(trainable.values()) == expected
    assert all("lora_" in n and ("q_proj" in n or "v_proj" in n) for n in trainable)

    assert [r["step"] for r in reports] == [10, 20, 30]
    for r in reports:
        assert set(r) == {"step", "loss", "lr", "tokens_seen", "seconds"}
        assert r["tokens_seen"] > 0 and r["seconds"] >= 0 and math.isfinite(r["loss"])
    assert reports[0]["tokens_seen"] < reports[-1]["tokens_seen"]
    assert reports[-1]["lr"] < reports[0]["lr"] <= cfg.learning_rate  # linear decay


def test_same_seed_same_losses(fresh_tiny_lm, tmp_path):
    make, tokenizer = fresh_tiny_lm
    cfg = SFTConfig(max_steps=6, batch_size=2, learning_rate=1e-3, seed=7)
    a = finetune_lora(make(), tokenizer, CONVERSATIONS, tmp_path / "a", cfg, base_model_id="tiny-test")
    b = finetune_lora(make(), tokenizer, CONVERSATIONS, tmp_path / "b", cfg, base_model_id="tiny-test")
    assert a.losses == b.losses
    cfg.seed = 8
    c = finetune_lora(make(), tokenizer, CONVERSATIONS, tmp_path / "c", cfg, base_model_id="tiny-test")
    assert c.losses != a.losses


def test_empty_subset_raises(fresh_tiny_lm, tmp_path):
    make, tokenizer = fresh_tiny_lm
    with pytest.raises(ValueError, match="empty"):
        finetune_lora(make(), tokenizer, [], tmp_path / "x", SFTConfig(max_steps=1), base_model_id="t")
    assert not (tmp_path / "x").exists()


def test_examples_without_answer_after_truncation_are_skipped(fresh_tiny_lm, tmp_path):
    make, tokenizer = fresh_tiny_lm
    short = CONVERSATIONS[1]
    limit = encode_for_training(tokenizer, short, 512)[1].index(True) + 2  # keeps two answer tokens of `short`
    long_prompt = [{"role": "user", "content": "hello world " * 200}, {"role": "assistant", "content": "Yes."}]
    ids, mask = encode_for_training(tokenizer, long_prompt, limit)
    assert len(ids) == limit and not any(mask)
    cfg = SFTConfig(max_steps=2, batch_size=2, max_length=limit)
    result = finetune_lora(make(), tokenizer, [long_prompt, short, long_prompt], tmp_path / "s", cfg,
                           base_model_id="t")
    assert result.n_skipped == 2 and result.n_examples == 1
    with pytest.raises(ValueError, match="answer token"):
        finetune_lora(make(), tokenizer, [long_prompt], tmp_path / "t", cfg, base_model_id="t")


def test_batches_cycle_over_seeded_epochs():
    gen = batch_indices(5, 3, seed=1)
    batches = [next(gen) for _ in range(10)]
    assert all(len(b) == 3 for b in batches)
    flat = [i for b in batches for i in b]
    for epoch in range(6):  # 30 indices = 6 full permutations of range(5)
        assert sorted(flat[epoch * 5:(epoch + 1) * 5]) == list(range(5))
    again = batch_indices(5, 3, seed=1)
    assert [next(again) for _ in range(10)] == batches
    small = batch_indices(1, 4, seed=0)
    assert next(small) == [0, 0, 0, 0]


def test_schedule_warmup_then_linear_decay():
    factors = [linear_warmup_decay(s, 2, 6) for s in range(6)]
    assert factors[0] < factors[1] < 1.0
    assert factors[2] == 1.0 and factors[2] > factors[3] > factors[4] > factors[5] > 0
    assert linear_warmup_decay(0, 0, 4) == 1.0


def test_config_validation():
    with pytest.raises(ValueError, match="max_steps"):
        SFTConfig(max_steps=0).validate()
    d = SFTConfig().to_dict()
    assert d["target_modules"] == ["q_proj", "v_proj"] and d["max_steps"] == 20


def test_precision_option_picks_the_autocast_dtype():
    import torch

    from instsel_assets.models.loading import cpu_has_native_bf16
    from instsel_assets.training.sft import autocast_dtype_for

    cpu = torch.device("cpu")
    assert autocast_dtype_for(cpu, "float32") is None
    assert autocast_dtype_for(cpu, "bfloat16") is torch.bfloat16
    assert autocast_dtype_for(cpu, "auto") is (torch.bfloat16 if cpu_has_native_bf16() else None)
    with pytest.raises(ValueError, match="precision"):
        SFTConfig(precision="int8").validate()
