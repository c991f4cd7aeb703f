"""Pairwise evaluation judge: Vicuna reviewer prompt in both orders, two scores per reply, verdict and WS."""

from __future__ import annotations

import pytest

from instsel_assets import registry
from instsel_assets.judge.templates import pairwise
from instsel_assets.judge.types import ReplyParseError

ROW = {"id": "q1", "question": "What causes tides?", "answer_a": "The Moon's gravity.",
       "answer_b": "Wind blowing over the ocean."}

GOOD = [
    ("8 3\n\nAssistant 1 correctly names the Moon's gravity; Assistant 2 is wrong.", (8.0, 3.0)),
    ("9, 6\nBoth are relevant, but Assistant 1 is more accurate.", (9.0, 6.0)),
    ("8.5 7\nAssistant 1 gives more detail.", (8.5, 7.0)),
    ("**Assistant 1: 9**\n**Assistant 2: 6**\n\nExplanation: ...", (9.0, 6.0)),
    ("Scores: 7 7\nBoth answers are equally good.", (7.0, 7.0)),
    ("After comparing both answers carefully, my final scores are below.\n[[4, 9]]", (4.0, 9.0)),
    ("10 1\nThe second answer is off-topic. [[10, 1]]", (10.0, 1.0)),
    ("Assistant 1 receives 6, Assistant 2 receives 8.\nAssistant 2 explains the physics.", (6.0, 8.0)),
]

BAD = [
    ("", "empty"),
    ("Assistant 1 is better than Assistant 2.", "no scores"),
    ("8\nAssistant 1 is better.", "expected two scores.*found 1"),
    ("8 7 6\n", "found 3"),
    ("8 7\nOn reflection: [[7, 8]]", "disagree"),
    ("[[8, 7]] ... [[6, 9]]", "conflicting score pairs"),
    ("11 5\n", "assistant 1 score 11 is outside"),
    ("7 0\n", "assistant 2 score 0 is outside"),
    ("NaN NaN\n", "no scores"),
]


@pytest.mark.parametrize("text,expected", GOOD)
def test_parses_two_scores(text, expected):
    assert pairwise.parse(text) == expected


@pytest.mark.parametrize("text,why", BAD)
def test_refuses_malformed_replies(text, why):
    with pytest.raises(ReplyParseError, match=why):
        pairwise.parse(text)


def test_build_judges_both_orders_with_the_vicuna_prompt():
    ab, ba = pairwise.build(ROW)
    for request in (ab, ba):
        assert request.messages[0] == {"role": "system", "content": pairwise.SYSTEM_PROMPT}
        assert request.messages[1]["content"].startswith("[Question]\nWhat causes tides?\n\n")
        assert "Each assistant receives an overall score on a scale of 1 to 10" in request.messages[1]["content"]
    assert "[The Start of Assistant 1's Answer]\nThe Moon's gravity.\n" in ab.messages[1]["content"]
    assert "[The Start of Assistant 2's Answer]\nWind blowing" in ab.messages[1]["content"]
    assert "[The Start of Assistant 1's Answer]\nWind blowing" in ba.messages[1]["content"]
    assert "[The Start of Assistant 2's Answer]\nThe Moon's gravity.\n" in ba.messages[1]["content"]
    assert pairwise.build(dict(ROW, answer_b="  ")) == []
    with pytest.raises(ValueError, match=r"row 'q1', field 'answer_a'"):
        pairwise.build(dict(ROW, answer_a=3))


@pytest.mark.parametrize("score_ab,score_ba,expected", [
    ((8, 6), (5, 9), "win"),     # A better both times
    ((8, 6), (7, 7), "win"),     # better once, tied once
    ((7, 7), (6, 8), "win"),
    ((5, 9), (9, 5), "lose"),    # B better both times
    ((7, 7), (9, 4), "lose"),    # worse once, tied once
    ((8, 6), (8, 6), "tie"),     # the first-shown answer wins each time: position bias
    ((7, 7), (7, 7), "tie"),
    ((6.5, 6.0), (6.0, 6.5), "win"),
])
def test_verdict_rule(score_ab, score_ba, expected):
    assert pairwise.verdict(score_ab, score_ba) == expected


def test_verdict_refuses_bad_pairs():
    for bad in ((8,), (8, float("nan")), ("8", 7), None, (True, 7)):
        with pytest.raises(ValueError, match="score_ab"):
            pairwise.verdict(bad, (7, 8))


def test_winning_score():
    assert pairwise.winning_score(6, 2, 10) == pytest.approx(1.4)
    assert pairwise.winning_score(0, 10, 10) == 0.0 and pairwise.winning_score(10, 0, 10) == 2.0
    assert pairwise.winning_score(3, 3, 8) == 1.0
    with pytest.raises(ValueError, match="n_all"):
        pairwise.winning_score(0, 0, 0)
    with pytest.raises(ValueError, match="exceeds"):
        pairwise.winning_score(6, 5, 10)
    with pytest.raises(ValueError, match="n_win"):
        pairwise.winning_score(-1, 0, 3)


def test_combine_and_not_a_pool_scorer():
    out = pairwise.combine([(8.0, 6.0), (5.0, 9.0)])
    assert out == {"score_a_ab": 8.0, "score_b_ab": 6.0, "score_a_ba": 9.0, "score_b_ba": 5.0, "verdict": "win"}
    assert tuple(out) == pairwise.TEMPLATE.columns
    assert "pairwise" not in registry.SCORERS
