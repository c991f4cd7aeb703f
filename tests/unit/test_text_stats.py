import math

import numpy as np
import pandas as pd
import pytest

from instsel_assets.features.text_stats import (
    detect_language,
    lexical_diversity,
    mtld,
    response_text,
    type_token_ratio,
    user_text,
    words,
)
from instsel_assets.registry import SCORERS


# ------------------------------------------------------------------ words


def test_words_english_lowercases_and_drops_punctuation():
    assert words("Hello, World! It's 3.14 -- ok_done?") == ["hello", "world", "it's", "3", "14", "ok", "done"]


def test_words_chinese_sentence_is_one_token_per_ideograph():
    text = "今天天气很好，我们去公园散步吧。"
    toks = words(text)
    assert len(toks) == 14  # 16 characters minus 2 punctuation marks
    assert toks[:4] == ["今", "天", "天", "气"]
    assert "，" not in toks and "。" not in toks


def test_words_mixed_chinese_and_latin():
    assert words("请用Python写一个函数") == ["请", "用", "python", "写", "一", "个", "函", "数"]


def test_words_other_scripts_and_empty():
    assert words("Привет, мир") == ["привет", "мир"]
    assert words("café naïve") == ["café", "naïve"]
    assert words("") == []
    assert words("...!!!") == []


# ------------------------------------------------------------------ TTR / MTLD


def test_type_token_ratio():
    assert type_token_ratio(["a", "b", "a", "c"]) == pytest.approx(0.75)
    assert type_token_ratio([]) == 0.0


def test_mtld_hand_computed_asymmetric():
    # forward: 10 distinct tokens then "a a": no full factor; remainder TTR 10/12,
    #   partial factor (1 - 10/12) / 0.28 = 0.595238..., pass = 12 / 0.595238 = 20.16
    # backward: "a a" -> TTR 1/2 <= 0.72: one full factor, reset; then 10 distinct (TTR 1):
    #   partial 0, pass = 12 / 1 = 12
    # MTLD = (20.16 + 12) / 2 = 16.08
    toks = list("abcdefghij") + ["a", "a"]
    assert mtld(toks) == pytest.approx(16.08)


def test_mtld_hand_computed_full_factors():
    # "a b" repeated: TTR reaches 2/3 at every third token -> a factor every 3 tokens, both ways
    toks = ["a", "b"] * 6
    assert mtld(toks) == pytest.approx(3.0)


def test_mtld_repetitive_text_scores_lower_than_varied_text():
    varied = words(
        "The quick brown fox jumps over the lazy dog while a curious cat watches from the old "
        "wooden fence, and birds sing softly in the tall green trees near a quiet river bank."
    )
    repetitive = words("the cat and the cat and the cat and the cat and the cat and the cat and the dog")
    assert mtld(varied) > 2 * mtld(repetitive)


def test_mtld_short_and_empty_texts_are_never_nan():
    assert mtld([]) == 0.0
    assert mtld(["a", "b", "c"]) == 3.0  # fewer than 10 tokens: the token count
    assert mtld(["a", "a", "a", "a"]) == 4.0
    value = mtld(list("abcdefghijklmnop"))  # all distinct: zero factors -> token count
    assert value == 16.0
    assert not math.isnan(value)


def test_mtld_threshold_must_be_a_ratio():
    with pytest.raises(ValueError, match="threshold"):
        mtld(["a"] * 20, threshold=1.5)


def test_mtld_on_chinese_is_sensible():
    # a long, diverse Chinese text must not collapse to one "word"
    text = ("春天来了，公园里的花都开了，红的像火，粉的像霞，白的像雪。小朋友们在草地上放风筝，"
            "老人们坐在长椅上聊天，湖面上还有几只小船慢慢地划过。")
    toks = words(text)
    assert len(toks) > 50
    assert mtld(toks) > 20


# ------------------------------------------------------------------ language


@pytest.mark.parametrize(
    "text, lang",
    [
        ("Write a poem about the sea.", "en"),
        ("Écris un poème sur la mer.", "en"),  # every Latin-script language is "en" for now
        ("写一首关于大海的诗。", "zh"),
        ("请用Python写一个计算斐波那契数列的函数", "zh"),
        ("東京へ行きたいです。", "ja"),
        ("바다에 대한 시를 써 주세요.", "ko"),
        ("Напишите стихотворение о море.", "ru"),
        ("اكتب قصيدة عن البحر", "ar"),
        ("12345 + 678 = ?", "und"),
        ("", "und"),
    ],
)
def test_detect_language(text, lang):
    assert detect_language(text) == lang


def test_english_text_quoting_a_chinese_word_stays_english():
    assert detect_language("Translate the word 你好 into English, please, and explain its usage.") == "en"


# ------------------------------------------------------------------ row texts and scorer


def test_row_texts_from_conversations_and_flat_columns():
    conv = np.array(
        [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Hi"},
            {"role": "assistant", "content": "Hello"},
            {"role": "user", "content": "Bye"},
            {"role": "assistant", "content": "Goodbye"},
        ],
        dtype=object,
    )
    row = {"conversations": conv, "instruction": "Hi", "input": "", "output": "Hello"}
    assert user_text(row) == "Hi\nBye"
    assert response_text(row) == "Hello\nGoodbye"
    flat = {"conversations": None, "instruction": "Add", "input": "2 and 3", "output": "5"}
    assert user_text(flat) == "Add\n2 and 3"
    assert response_text(flat) == "5"


def test_lexical_diversity_scorer_is_registered_and_computes_columns():
    info = SCORERS["lexical_diversity"]
    assert info.family == "metric-set"
    assert info.columns == ("ttr", "mtld", "language")
    pool = pd.DataFrame(
        {
            "id": ["x", "y"],
            "conversations": [None, None],
            "instruction": ["写一首诗", "Say hi"],
            "input": ["", ""],
            "output": ["床前明月光，疑是地上霜。举头望明月，低头思故乡。", "hi hi hi hi hi hi hi hi hi hi hi"],
        }
    )
    out = info.fn(pool)
    assert list(out.columns) == ["id", "ttr", "mtld", "language"]
    assert out["id"].tolist() == ["x", "y"]
    assert out["language"].tolist() == ["zh", "en"]
    assert out.loc[0, "ttr"] == pytest.approx(type_token_ratio(words(pool.loc[0, "output"])))
    assert out.loc[1, "ttr"] == pytest.approx(1 / 11)
    assert out.loc[0, "mtld"] > out.loc[1, "mtld"]
    assert lexical_diversity is info.fn
