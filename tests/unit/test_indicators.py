import os

import numpy as np
import pandas as pd
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

from instsel_assets.features.indicators import INDICATOR_COLUMNS, compute_text_indicators, count_tokens  # noqa: E402
from instsel_assets.features.text_stats import mtld, type_token_ratio, words  # noqa: E402


@pytest.fixture(scope="session")
def bert_tokenizer():
    """The real WordPiece tokenizer shipped inside the packaged MiniLM model."""
    from transformers import AutoTokenizer

    from instsel_assets.features.embeddings import PACKAGED_MINILM, resolve_model_path

    return AutoTokenizer.from_pretrained(resolve_model_path(PACKAGED_MINILM))


def conv(*turns):
    return np.array([{"role": r, "content": c} for r, c in turns], dtype=object)


@pytest.fixture()
def pool():
    return pd.DataFrame(
        {
            "id": ["single", "multi", "zh", "flat"],
            "source": ["t"] * 4,
            "conversations": [
                conv(("user", "Add the numbers.\n\n2 and 3"), ("assistant", "The sum is 5.")),
                conv(
                    ("system", "You are terse."),
                    ("user", "Name a colour."),
                    ("assistant", "Blue."),
                    ("user", "Another one?"),
                    ("assistant", "Red, like a rose."),
                ),
                conv(("user", "写一首关于春天的诗"), ("assistant", "春风吹绿了柳树，花儿开满了山坡。")),
                None,
            ],
            "instruction": ["Add the numbers.", "Name a colour.", "写一首关于春天的诗", "Say hello"],
            "input": ["2 and 3", "", "", ""],
            "output": ["The sum is 5.", "Blue.", "春风吹绿了柳树，花儿开满了山坡。", "Hello there, friend!"],
            "n_turns": [1, 2, 1, 1],
            "category": [""] * 4,
            "source_file": ["f"] * 4,
            "source_row": [0, 1, 2, 3],
        }
    )


def test_columns_and_order(pool):
    out = compute_text_indicators(pool)
    assert tuple(out.columns) == INDICATOR_COLUMNS
    assert out["id"].tolist() == ["single", "multi", "zh", "flat"]
    assert len(out) == len(pool)


def test_word_counts_without_tokenizer(pool):
    out = compute_text_indicators(pool).set_index("id")
    assert out.loc["single", "instruction_tokens"] == 3
    assert out.loc["single", "input_tokens"] == 3
    assert out.loc["single", "output_tokens"] == 4
    assert out.loc["single", "total_tokens"] == 3 + 3 + 4
    # multi-turn: every turn counts, the system prompt included (3 + 3 + 1 + 2 + 4)
    assert out.loc["multi", "total_tokens"] == 13
    assert out.loc["multi", "output_tokens"] == 1  # the flat column: first reply only
    # Chinese: one token per ideograph, punctuation not counted
    assert out.loc["zh", "instruction_tokens"] == 9
    assert out.loc["zh", "output_tokens"] == 14
    # no conversation: instruction + input + output
    assert out.loc["flat", "total_tokens"] == 2 + 0 + 3


def test_diversity_on_all_assistant_turns_and_language_on_user_turns(pool):
    out = compute_text_indicators(pool).set_index("id")
    reply = words("Blue.\nRed, like a rose.")
    assert out.loc["multi", "ttr"] == pytest.approx(type_token_ratio(reply))
    assert out.loc["multi", "mtld"] == pytest.approx(mtld(reply))
    assert out.loc["zh", "language"] == "zh"
    assert out.loc["single", "language"] == "en"
    assert out.loc["flat", "mtld"] == pytest.approx(3.0)
    assert not out[["ttr", "mtld"]].isna().any().any()


def test_counts_with_a_real_tokenizer(pool, bert_tokenizer):
    out = compute_text_indicators(pool, tokenizer=bert_tokenizer).set_index("id")

    def n(text):
        return len(bert_tokenizer(text, add_special_tokens=False)["input_ids"])

    for row in pool.itertuples():
        assert out.loc[row.id, "instruction_tokens"] == n(row.instruction)
        assert out.loc[row.id, "input_tokens"] == n(row.input)
        assert out.loc[row.id, "output_tokens"] == n(row.output)
    expected_multi = sum(n(t) for t in ["You are terse.", "Name a colour.", "Blue.", "Another one?", "Red, like a rose."])
    assert out.loc["multi", "total_tokens"] == expected_multi
    # WordPiece counts punctuation, words() does not: the tokenizer decided the count
    assert out.loc["single", "output_tokens"] == n("The sum is 5.") == 5


def test_count_tokens_batches_consistently(bert_tokenizer):
    texts = [f"sentence {i} " * (i % 5) for i in range(23)]
    small = count_tokens(texts, bert_tokenizer, batch_size=4)
    big = count_tokens(texts, bert_tokenizer, batch_size=1000)
    np.testing.assert_array_equal(small, big)
    assert small[0] == 0  # empty text
    assert count_tokens(["今天很好"]).tolist() == [4]


def test_missing_column_is_named(pool):
    with pytest.raises(ValueError, match="output"):
        compute_text_indicators(pool.drop(columns=["output"]))


def test_empty_pool(pool):
    out = compute_text_indicators(pool.iloc[:0])
    assert tuple(out.columns) == INDICATOR_COLUMNS and len(out) == 0
