"""AlpaGasus judge template: the reference accuracy prompt, a 0-5 rating spec, a strict leading-score parser."""

from __future__ import annotations

import numpy as np
import pytest

from instsel_assets import registry
from instsel_assets.judge.templates import alpagasus
from instsel_assets.judge.types import JudgeTemplate, RatingSpec, ReplyParseError

ROW = {"id": "r1", "instruction": "Give three tips for staying healthy.", "input": "",
       "output": "1. Eat a balanced diet.\n2. Exercise regularly.\n3. Sleep well.",
       "conversations": [{"role": "user", "content": "Give three tips for staying healthy."},
                         {"role": "assistant", "content": "1. Eat a balanced diet.\n2. Exercise regularly.\n"
                                                          "3. Sleep well."}]}

GOOD = [
    ("4.5\n\nThe response gives three accurate, practical tips that directly address the instruction.", 4.5),
    ("5\nThe answer is fully accurate.", 5.0),
    ("Score: 4.1234", 4.1234),  # the local backend's rating reply
    ("**Score: 4**\n\nExplanation: the tips are correct but generic; 3 of them are listed.", 4.0),
    ("4.5/5\n\nThe response is accurate and complete.", 4.5),
    ("3 out of 5\nThe second tip is vague.", 3.0),
    ("## Evaluation\nScore: 2\nThe response misses the input entirely.", 2.0),
    ("```\n0\n```\nThe response answers a different question.", 0.0),
    ("Accuracy: 3.5\nThe translation has two errors.", 3.5),
    ("4.5\nScore: 4.5 (restated)", 4.5),
    ("I have evaluated the response carefully.\n\n4\n\nIt is accurate but misses one detail.", 4.0),
    ("5. The response is perfect in every respect.\nScore: 5", 5.0),
]

BAD = [
    ("", "empty"),
    ("   \n\n ", "empty"),
    ("7\nThe response is excellent.", "outside the scale"),
    ("-1\nCould not evaluate.", "outside the scale"),
    ("4 5\nThe response is good.", "conflicting"),
    ("Score: 4 or 5, depending on the reading.", "conflicting"),
    ("3.5\nOn reflection, Score: 4.5", "conflicting"),
    ("The response is accurate and helpful, but could be more detailed.", "no score"),
    ("NaN\nThe response cannot be rated.", "not a finite number"),
    ("Score: inf", "not a finite number"),
    ("8/10\nGood answer.", "scale"),
]


@pytest.mark.parametrize("text,expected", GOOD)
def test_parses_recorded_style_replies(text, expected):
    assert alpagasus.parse(text) == pytest.approx(expected)


@pytest.mark.parametrize("text,why", BAD)
def test_refuses_malformed_replies_with_a_reason(text, why):
    with pytest.raises(ReplyParseError, match=why):
        alpagasus.parse(text)


def test_parse_refuses_non_text():
    with pytest.raises(ReplyParseError):
        alpagasus.parse(None)


def test_build_uses_the_reference_prompt_and_rating_spec():
    (request,) = alpagasus.build(ROW)
    system, user = request.messages
    assert system == {"role": "system", "content": alpagasus.SYSTEM_PROMPT}
    assert user["role"] == "user"
    assert user["content"].startswith("###Instruction:\nGive three tips for staying healthy.\n\n### Input:\n\n\n"
                                      "### Response:\n1. Eat a balanced diet.")
    assert user["content"].endswith(alpagasus.USER_PROMPT)
    assert "scale of 0 to 5" in user["content"] and "accuracy" in user["content"]
    assert request.rating == RatingSpec(0, 5)
    assert request.temperature == 0.0 and request.max_tokens == 256


def test_build_falls_back_to_the_conversation_and_skips_unjudgeable_rows():
    row = {"id": "m", "conversations": np.array([
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "What are the three primary colors?"},
        {"role": "assistant", "content": "Red, blue and yellow."},
        {"role": "user", "content": "And secondary?"},
        {"role": "assistant", "content": "Green, orange, purple."}], dtype=object)}
    (request,) = alpagasus.build(row)
    content = request.messages[1]["content"]
    assert "What are the three primary colors?" in content and "Red, blue and yellow." in content
    assert "And secondary?" not in content
    assert alpagasus.build({"id": "x", "conversations": [{"role": "user", "content": "hi"}]}) == []
    assert alpagasus.build({"id": "x", "conversations": None}) == []


def test_build_names_the_row_and_field_on_bad_conversations():
    with pytest.raises(ValueError, match=r"row 'bad', field 'conversations'"):
        alpagasus.build({"id": "bad", "conversations": [{"content": "no role"}]})


def test_combine_and_registration():
    assert alpagasus.combine([4.5]) == {"alpagasus_score": 4.5}
    assert isinstance(alpagasus.TEMPLATE, JudgeTemplate)
    assert alpagasus.TEMPLATE.columns == ("alpagasus_score",)
    info = registry.SCORERS["alpagasus"]
    assert info.family == "powerful-llm" and info.columns == alpagasus.TEMPLATE.columns
    assert info.fn() is alpagasus.TEMPLATE and "AlpaGasus" in info.paper
