"""Hidden-state embeddings: batching/padding invariance, the pooling rules, truncation, peft models."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from instsel_assets.models import chat
from instsel_assets.models.hidden_embeddings import (
    hidden_size,
    hidden_state_embeddings,
    sequence_embeddings,
)


def conv(user, answer):
    return [{"role": "user", "content": user}, {"role": "assistant", "content": answer}]


CONVERSATIONS = [
    conv("Give three tips for staying healthy.", "Eat a balanced diet, exercise regularly and sleep well."),
    conv("Hi", "Hello."),
    conv("三原色是什么？", "三原色是红色、蓝色和黄色。"),
    [{"role": "system", "content": "You are terse."}, *conv("Describe the structure of an atom.",
                                                          "A nucleus and electrons that orbit it."),
     *conv("And a molecule?", "Atoms bound together.")],
    conv("Translate 'good morning' into French.", "Bonjour."),
]


def reference_vector(model, ids, pooling="mean"):
    """The reference code's definition: one unpadded sequence, ``hidden_states[-1]`` of the full model."""
    with torch.no_grad():
        out = model(input_ids=torch.tensor([ids]), output_hidden_states=True)
    last = out.hidden_states[-1][0]
    return (last.mean(dim=0) if pooling == "mean" else last[-1]).numpy()


@pytest.mark.parametrize("pooling", ["mean", "last"])
def test_batched_equals_one_at_a_time_and_reference(tiny_lm, pooling):
    model, tok = tiny_lm
    lengths = [len(chat.encode_for_training(tok, c, 512)[0]) for c in CONVERSATIONS]
    assert max(lengths) > 2 * min(lengths)  # padding really happens in a batch
    batched = hidden_state_embeddings(model, tok, CONVERSATIONS, batch_size=3, pooling=pooling)
    single = hidden_state_embeddings(model, tok, CONVERSATIONS, batch_size=1, pooling=pooling)
    assert batched.shape == (len(CONVERSATIONS), hidden_size(model)) == (5, 64)
    assert batched.dtype == np.float32
    np.testing.assert_allclose(batched, single, atol=1e-5, rtol=0)
    for i, c in enumerate(CONVERSATIONS):
        ids, _ = chat.encode_for_training(tok, c, 512)
        np.testing.assert_allclose(batched[i], reference_vector(model, ids, pooling), atol=1e-5, rtol=0)
    # rows are distinct (not all the same vector broadcast)
    assert np.linalg.norm(batched[0] - batched[1]) > 1e-2


def test_mean_and_last_pooling_differ(tiny_lm):
    model, tok = tiny_lm
    mean = hidden_state_embeddings(model, tok, CONVERSATIONS[:2])
    last = hidden_state_embeddings(model, tok, CONVERSATIONS[:2], pooling="last")
    assert np.abs(mean - last).max() > 1e-3


def test_input_order_is_kept(tiny_lm):
    model, tok = tiny_lm
    forward = hidden_state_embeddings(model, tok, CONVERSATIONS, batch_size=2)
    backward = hidden_state_embeddings(model, tok, CONVERSATIONS[::-1], batch_size=2)
    np.testing.assert_allclose(forward, backward[::-1], atol=1e-5, rtol=0)


def test_truncation_to_max_length(tiny_lm):
    model, tok = tiny_lm
    ids, _ = chat.encode_for_training(tok, CONVERSATIONS[0], 512)
    assert len(ids) > 10
    cut = hidden_state_embeddings(model, tok, CONVERSATIONS[:1], max_length=10)
    np.testing.assert_allclose(cut[0], reference_vector(model, ids[:10]), atol=1e-5, rtol=0)
    full = hidden_state_embeddings(model, tok, CONVERSATIONS[:1], max_length=512)
    assert np.abs(full - cut).max() > 1e-4


def test_empty_rows_are_nan_and_duckdb_arrays(tiny_lm):
    model, tok = tiny_lm
    convs = [np.array(CONVERSATIONS[0], dtype=object), [], None, CONVERSATIONS[1]]
    seen = []
    out = hidden_state_embeddings(model, tok, convs, progress=lambda d, t: seen.append((d, t)))
    assert np.isnan(out[1]).all() and np.isnan(out[2]).all()
    assert np.isfinite(out[[0, 3]]).all()
    np.testing.assert_allclose(out[[0, 3]], hidden_state_embeddings(model, tok, [CONVERSATIONS[0], CONVERSATIONS[1]]),
                               atol=1e-5, rtol=0)
    assert seen[0] == (2, 4) and seen[-1] == (4, 4)
    assert hidden_state_embeddings(model, tok, []).shape == (0, 64)


def test_bad_arguments(tiny_lm):
    model, tok = tiny_lm
    with pytest.raises(ValueError, match="pooling"):
        hidden_state_embeddings(model, tok, CONVERSATIONS, pooling="max")
    with pytest.raises(ValueError, match="batch_size"):
        hidden_state_embeddings(model, tok, CONVERSATIONS, batch_size=0)
    with pytest.raises(ValueError, match="max_length"):
        hidden_state_embeddings(model, tok, CONVERSATIONS, max_length=0)


def test_training_flag_is_restored(tiny_lm):
    model, tok = tiny_lm
    model.train()
    sequence_embeddings(model, [[5, 6, 7]], pad_token_id=0)
    assert model.training
    model.eval()
    sequence_embeddings(model, [[5, 6, 7]], pad_token_id=0)
    assert not model.training


@pytest.mark.filterwarnings("ignore:.*is_gradient_checkpointing.*:FutureWarning")
def test_peft_model_embeds_with_its_lora_layers(fresh_tiny_lm):
    from peft import LoraConfig, TaskType, get_peft_model

    make, tok = fresh_tiny_lm
    base = hidden_state_embeddings(make(), tok, CONVERSATIONS)
    peft_model = get_peft_model(make(), LoraConfig(task_type=TaskType.CAUSAL_LM, r=4, lora_alpha=8,
                                                   target_modules=["q_proj", "v_proj"], lora_dropout=0.0))
    with torch.no_grad():
        for name, p in peft_model.named_parameters():
            if "lora_B" in name:
                p.normal_(0.0, 0.5)  # B starts at zero: make the adapter change something
    peft_model.eval()
    adapted = hidden_state_embeddings(peft_model, tok, CONVERSATIONS)
    merged = hidden_state_embeddings(peft_model.merge_and_unload(), tok, CONVERSATIONS)
    assert np.abs(adapted - base).max() > 1e-3
    np.testing.assert_allclose(adapted, merged, atol=1e-4, rtol=0)
