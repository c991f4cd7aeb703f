"""DEITA judge template: the reference scorer prompts, two requests per answered turn, evol = sum of c x q."""

from __future__ import annotations

import pytest

from instsel_assets import registry
from instsel_assets.judge.templates import deita
from instsel_assets.judge.types import RatingSpec, ReplyParseError

MULTI = {"id": "chat", "conversations": [
    {"role": "system", "content": "You are helpful."},
    {"role": "user", "content": "Write a Python function that reverses a string."},
    {"role": "assistant", "content": "def rev(s):\n    return s[::-1]"},
    {"role": "user", "content": "Now make it handle None."},
    {"role": "assistant", "content": "def rev(s):\n    return None if s is None else s[::-1]"},
    {"role": "user", "content": "Thanks!"},  # unanswered: not scored
]}

GOOD = [
    ("Score: 4.1234", 4.1234),
    ("5", 5.0),
    ("##Complexity: 3", 3.0),
    ("Quality: 6\nThe response is complete and correct.", 6.0),
    ("**4**", 4.0),
    ("Complexity score: 2", 2.0),
    ("1.0", 1.0),
]

BAD = [
    ("", "empty"),
    ("0", "outside the scale"),
    ("7", "outside the scale"),
    ("3 4", "conflicting"),
    ("The query is moderately complex.", "no score"),
    ("Score: NaN", "not a finite number"),
    ("5/10", "scale"),
    ("Complexity: 3\nQuality: 5", "conflicting"),
]


@pytest.mark.parametrize("text,expected", GOOD)
def test_parses_scores(text, expected):
    assert deita.parse(text) == pytest.approx(expected)


@pytest.mark.parametrize("text,why", BAD)
def test_refuses_malformed_scores(text, why):
    with pytest.raises(ReplyParseError, match=why):
        deita.parse(text)


def test_build_two_requests_per_answered_turn_with_the_reference_prompts():
    requests = deita.build(MULTI)
    assert len(requests) == 4
    contents = [r.messages[-1]["content"] for r in requests]
    assert contents[0] == deita.COMPLEXITY_PROMPT.format(instruction="Write a Python function that reverses a string.")
    assert contents[0].endswith("##Complexity: ")
    assert contents[1].startswith("You are a helpful assistant. Please identify the quality score of the Response")
    assert "#Question#:\nWrite a Python function that reverses a string.\n#Response#:\ndef rev(s):" in contents[1]
    assert "Now make it handle None." in contents[2] and "##Complexity" in contents[2]
    assert "return None if s is None" in contents[3]
    assert all("Thanks!" not in c for c in contents)
    assert all(r.rating == RatingSpec(1, 6) for r in requests)
    assert all(r.messages[0] == {"role": "system", "content": deita.SCALE_NOTE} for r in requests)


def test_reference_prompts_alone_and_unjudgeable_rows():
    bare = deita.deita_template(scale_note=None)
    requests = bare.build(MULTI)
    assert all(len(r.messages) == 1 and r.messages[0]["role"] == "user" for r in requests)
    assert deita.build({"id": "q", "conversations": [{"role": "user", "content": "hello?"}]}) == []


def test_combine_sums_complexity_times_quality_over_turns():
    out = deita.combine([3.0, 5.0, 2.0, 4.0])
    assert out == {"deita_complexity": 2.5, "deita_quality": 4.5, "deita_evol_score": 3 * 5 + 2 * 4}
    assert deita.combine([4.2, 5.5])["deita_evol_score"] == pytest.approx(23.1)
    with pytest.raises(ValueError, match="pairs"):
        deita.combine([3.0, 4.0, 5.0])


def test_registered_with_its_columns():
    info = registry.SCORERS["deita"]
    assert info.family == "powerful-llm" and info.fn() is deita.TEMPLATE
    assert info.columns == ("deita_complexity", "deita_quality", "deita_evol_score")
