"""LIFT judge template: five criteria rated 1-10 in one reply; lift_score = their mean."""

from __future__ import annotations

import pytest

from instsel_assets import registry
from instsel_assets.judge.templates import lift
from instsel_assets.judge.types import ReplyParseError

ROW = {"id": "l1", "instruction": "Explain why the sky is blue.", "input": "",
       "output": "Rayleigh scattering: shorter wavelengths scatter more."}

EXPECTED = {"accuracy": 9.0, "explainability": 7.0, "clarity": 8.0, "difficulty": 4.0, "length": 6.0}

GOOD = [
    "Accuracy: 9\nExplainability: 7\nClarity: 8\nDifficulty: 4\nLength: 6\n\nThe answer is correct but brief.",
    "**Accuracy**: 9/10\n**Explainability**: 7/10\n**Clarity**: 8/10\n**Difficulty**: 4/10\n**Length**: 6/10\n\n"
    "### Explanation\n- Accuracy: The physics is right.\n- Length: A single sentence; more detail would help.",
    "1. Accuracy: 9\n2. Explainability: 7\n3. Clarity: 8\n4. Difficulty: 4\n5. Length: 6",
    "Here is my evaluation.\n\nLength: 6\nDifficulty - 4\nClarity = 8\nExplainability score: 7\nAccuracy: 9.",
    '```json\n{"accuracy": 9, "explainability": 7, "clarity": 8, "difficulty": 4, "length": 6}\n```',
    '{"Accuracy": "9", "Explainability": 7.0, "Clarity": 8, "Difficulty": 4, "Length": "6/10"}',
    "Accuracy: 9 out of 10\nExplainability: 7\nClarity: 8\nDifficulty: 4\nLength: 6\nAccuracy: 9 (restated)",
]

BAD = [
    ("", "empty"),
    ("The response is accurate and clear.", "no criterion scores"),
    ("Accuracy: 9\nExplainability: 7\nClarity: 8\nDifficulty: 4", "no score for length"),
    ("Accuracy: 11\nExplainability: 7\nClarity: 8\nDifficulty: 4\nLength: 6", "accuracy 11 is outside"),
    ("Accuracy: 0\nExplainability: 7\nClarity: 8\nDifficulty: 4\nLength: 6", "outside the scale"),
    ("Accuracy: 9\nExplainability: 7\nClarity: 8\nDifficulty: 4\nLength: 6\nAccuracy: 5", "conflicting"),
    ("Accuracy: NaN\nExplainability: 7\nClarity: 8\nDifficulty: 4\nLength: 6", "accuracy: 'NaN' is not a number"),
    ("Accuracy: high\nExplainability: 7\nClarity: 8\nDifficulty: 4\nLength: 6", "not a number"),
    ("Accuracy: 4/5\nExplainability: 7\nClarity: 8\nDifficulty: 4\nLength: 6", "1-10 scale"),
    ('{"accuracy": 9, "clarity": 8}', "no score for explainability"),
    ('{"accuracy": true, "explainability": 7, "clarity": 8, "difficulty": 4, "length": 6}', "not a number"),
    ('{"accuracy": [9], "explainability": 7, "clarity": 8, "difficulty": 4, "length": 6}', "not a number"),
]


@pytest.mark.parametrize("text", GOOD)
def test_parses_five_criteria(text):
    assert lift.parse(text) == EXPECTED


@pytest.mark.parametrize("text,why", BAD)
def test_refuses_malformed_replies(text, why):
    with pytest.raises(ReplyParseError, match=why):
        lift.parse(text)


def test_build_puts_the_triplet_and_the_five_criteria_in_the_prompt():
    (request,) = lift.build(ROW)
    user = request.messages[-1]["content"]
    for criterion in ("Accuracy", "Explainability", "Clarity", "Difficulty", "Length"):
        assert f"{criterion}: <score>" in user
    assert "scale of 1 to 10" in user
    assert "### Instruction:\nExplain why the sky is blue.\n\n### Input:\n\n\n### Response:\nRayleigh" in user
    assert request.rating is None and request.temperature == 0.0
    assert lift.build({"id": "x", "conversations": []}) == []


def test_combine_means_the_criteria_and_registration():
    out = lift.combine([EXPECTED])
    assert out["lift_accuracy"] == 9.0 and out["lift_length"] == 6.0
    assert out["lift_score"] == pytest.approx((9 + 7 + 8 + 4 + 6) / 5)
    assert tuple(out) == lift.COLUMNS
    info = registry.SCORERS["lift"]
    assert info.family == "powerful-llm" and info.fn() is lift.TEMPLATE and info.columns == lift.COLUMNS
