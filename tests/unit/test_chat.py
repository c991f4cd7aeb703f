"""Chat-template rendering into (prefix, answer) pairs and training masks."""

from __future__ import annotations

import numpy as np
import pytest

from instsel_assets.models import chat

CONV = [
    {"role": "user", "content": "Give three tips for staying healthy."},
    {"role": "assistant", "content": "Eat well, exercise and sleep."},
    {"role": "user", "content": "三原色是什么？"},
    {"role": "assistant", "content": "红色、蓝色和黄色。"},
]

# SmolLM2's own template: injects a default system prompt into every non-empty conversation.
SMOLLM2_TEMPLATE = (
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n' }}"
    "{% endif %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
# A Llama-3-like template that renders a BOS text first.
BOS_TEMPLATE = (
    "{{ '<s>' }}{% for message in messages %}{{ '[' + message['role'] + '] ' + message['content'] + '<|im_end|>' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '[assistant] ' }}{% endif %}"
)


def dec(tok, ids):
    return tok.decode(ids)


def test_one_pair_per_assistant_turn_with_history(tiny_tokenizer):
    tok = tiny_tokenizer
    pairs = chat.prefix_answer_pairs(tok, CONV)
    assert [p.turn for p in pairs] == [1, 3]
    assert dec(tok, pairs[0].prefix_ids) == (
        "<|im_start|>user\nGive three tips for staying healthy.<|im_end|>\n<|im_start|>assistant\n")
    assert dec(tok, pairs[0].answer_ids) == "Eat well, exercise and sleep.<|im_end|>\n"
    assert dec(tok, pairs[1].prefix_ids).endswith("三原色是什么？<|im_end|>\n<|im_start|>assistant\n")
    assert dec(tok, pairs[1].prefix_ids).startswith(dec(tok, pairs[0].prefix_ids + pairs[0].answer_ids))
    assert dec(tok, pairs[1].answer_ids) == "红色、蓝色和黄色。<|im_end|>\n"


def test_without_prefix_keeps_header_and_same_answer_ids(tiny_tokenizer):
    tok = tiny_tokenizer
    with_q = chat.prefix_answer_pairs(tok, CONV, with_prefix=True)
    without_q = chat.prefix_answer_pairs(tok, CONV, with_prefix=False)
    for a, b in zip(with_q, without_q):
        assert dec(tok, b.prefix_ids) == "<|im_start|>assistant\n"
        assert a.answer_ids == b.answer_ids


def test_template_with_injected_system_prompt(tiny_lm):
    """Regression: SmolLM2's template cannot render an empty conversation (transformers 5 refuses it)
    and injects a system prompt; s(A) must still be the bare assistant header + the same answer ids."""
    _, tok = tiny_lm
    tok.chat_template = SMOLLM2_TEMPLATE
    with_q = chat.prefix_answer_pairs(tok, CONV[:2], with_prefix=True)[0]
    without_q = chat.prefix_answer_pairs(tok, CONV[:2], with_prefix=False)[0]
    assert dec(tok, with_q.prefix_ids).startswith("<|im_start|>system\nYou are a helpful AI assistant")
    assert dec(tok, without_q.prefix_ids) == "<|im_start|>assistant\n"
    assert with_q.answer_ids == without_q.answer_ids


def test_header_keeps_a_rendered_bos(tiny_lm):
    _, tok = tiny_lm
    tok.chat_template = BOS_TEMPLATE
    tok.bos_token = "<s>"
    assert chat.assistant_header(tok) == "<s>[assistant] "
    without_q = chat.prefix_answer_pairs(tok, CONV[:2], with_prefix=False)[0]
    assert dec(tok, without_q.prefix_ids) == "<s>[assistant] "


def test_accepts_numpy_array_of_dicts(tiny_tokenizer):
    conv = np.array(CONV, dtype=object)
    assert chat.prefix_answer_pairs(tiny_tokenizer, conv) == chat.prefix_answer_pairs(tiny_tokenizer, CONV)


def test_no_assistant_turn_gives_no_pairs(tiny_tokenizer):
    assert chat.prefix_answer_pairs(tiny_tokenizer, CONV[:1]) == []


def test_missing_template_falls_back_to_chatml(tiny_lm):
    _, tok = tiny_lm
    tok.chat_template = None
    pairs = chat.prefix_answer_pairs(tok, CONV[:2])
    assert tok.chat_template == chat.DEFAULT_CHAT_TEMPLATE
    assert dec(tok, pairs[0].answer_ids) == "Eat well, exercise and sleep.<|im_end|>\n"


def test_encode_for_training_masks_assistant_tokens_only(tiny_tokenizer):
    tok = tiny_tokenizer
    ids, mask = chat.encode_for_training(tok, CONV, max_length=10_000)
    assert len(ids) == len(mask)
    assert dec(tok, ids) == chat.render(tok, chat.as_messages(CONV), add_generation_prompt=False)
    answer_text = dec(tok, [i for i, m in zip(ids, mask) if m])
    assert answer_text == "Eat well, exercise and sleep.<|im_end|>\n红色、蓝色和黄色。<|im_end|>\n"
    pairs = chat.prefix_answer_pairs(tok, CONV)
    assert sum(mask) == sum(len(p.answer_ids) for p in pairs)
    short_ids, short_mask = chat.encode_for_training(tok, CONV, max_length=7)
    assert short_ids == ids[:7] and short_mask == mask[:7]


def test_encode_for_training_with_injected_system_prompt(tiny_lm):
    _, tok = tiny_lm
    tok.chat_template = SMOLLM2_TEMPLATE
    ids, mask = chat.encode_for_training(tok, CONV, max_length=10_000)
    assert dec(tok, ids).startswith("<|im_start|>system\n")
    assert dec(tok, [i for i, m in zip(ids, mask) if m]).startswith("Eat well")


def test_inconsistent_template_is_an_error(tiny_lm):
    _, tok = tiny_lm
    # renders the generation prompt BEFORE the history: prefixes are not prefixes
    tok.chat_template = ("{% if add_generation_prompt %}GEN {% endif %}"
                         "{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}")
    with pytest.raises(ValueError):
        chat.prefix_answer_pairs(tok, CONV[:2])
