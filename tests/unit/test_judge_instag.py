"""InsTag judge template: the paper's tagging prompt and a strict JSON tag-list parser."""

from __future__ import annotations

import pytest

from instsel_assets import registry
from instsel_assets.judge.templates import instag
from instsel_assets.judge.types import ReplyParseError

ROW = {"id": "t1", "conversations": [
    {"role": "user", "content": "Write a limerick about a cat who learns to code in Python."},
    {"role": "assistant", "content": "There once was a cat named Lou..."},
    {"role": "user", "content": "Make it rhyme better."},
    {"role": "assistant", "content": "..."},
]}

GOOD = [
    ('[{"tag": "creative writing", "explanation": "The user asks for a limerick."}, '
     '{"tag": "humor", "explanation": "Limericks are humorous."}]', ["creative writing", "humor"]),
    ('```json\n[\n  {"tag": "poetry", "explanation": "a poem"},\n  {"tag": "programming", "explanation": "Python"}\n]'
     '\n```', ["poetry", "programming"]),
    ('Here are the intention tags for the query:\n\n```json\n[{"tag": "Math", "explanation": "arithmetic"}]\n```\n\n'
     'These tags capture the main intent.', ["Math"]),
    ('{"tag": "translation", "explanation": "The user wants a French translation."}', ["translation"]),
    ('{"tag": "information retrieval", "explanation": "facts"}\n{"tag": "history", "explanation": "WWII"}',
     ["information retrieval", "history"]),
    ('{"tags": [{"tag": "coding", "explanation": "code"}, {"tag": "debugging", "explanation": "fix"}]}',
     ["coding", "debugging"]),
    ('[{"tag": "  question   answering ", "explanation": "x"}, {"tag": "question answering", "explanation": "dup"},'
     ' {"tag": "advice"}]', ["question answering", "advice"]),
    ('The query [as written] asks for: [{"tag": "summarization", "explanation": "summary"}]', ["summarization"]),
]

BAD = [
    ("", "empty"),
    ("The user wants a poem about cats.", "no JSON"),
    ('[{"tag": "poetry", "explanation": "a poem"}, {"tag": "programming", "explan', "truncated"),
    ('[\n  {"tag": "poetry", "explanation": "a poem"},\n  {"tag": "humor", "explanation": "funny"}\n', "truncated"),
    ('[{"tag": 5, "explanation": "number"}]', "not a string"),
    ('["poetry", "humor"]', "not a"),
    ('[{"tag": "", "explanation": "empty"}]', "empty tag"),
    ('[{"tag": "poetry", "explanation": ["a", "list"]}]', "'explanation' is list"),
    ("[]", "no tags"),
    ('{"label": "poetry"}', "without a 'tag'"),
    ('[{"tag": NaN, "explanation": "nan"}]', "not a string"),
    ('{"tag": "a"}\n{"tag": "b", "expl', "truncated"),
]


@pytest.mark.parametrize("text,expected", GOOD)
def test_parses_tag_lists(text, expected):
    assert instag.parse(text) == expected


@pytest.mark.parametrize("text,why", BAD)
def test_refuses_malformed_tag_lists(text, why):
    with pytest.raises(ReplyParseError, match=why):
        instag.parse(text)


def test_build_tags_every_query_with_the_paper_prompt():
    first, second = instag.build(ROW)
    (message,) = first.messages
    assert message["role"] == "user"
    assert message["content"] == ("You are a helpful assistant. Please identify tags of user intentions in the "
                                  "following user query and provide an explanation for each tag. Please respond in "
                                  'the JSON format {"tag": str, "explanation": str}.\nQuery: Write a limerick about '
                                  "a cat who learns to code in Python.")
    assert second.messages[0]["content"].endswith("Query: Make it rhyme better.")
    assert first.rating is None and first.temperature == 0.0


def test_build_uses_flat_columns_without_conversations_and_skips_empty_queries():
    (request,) = instag.build({"id": "f", "instruction": "Translate to French.", "input": "Good morning"})
    assert request.messages[0]["content"].endswith("Query: Translate to French.\n\nGood morning")
    assert instag.build({"id": "e", "conversations": [{"role": "assistant", "content": "hi"}]}) == []
    joined = {"id": "j", "conversations": [{"role": "user", "content": "a"}, {"role": "user", "content": "b"},
                                           {"role": "assistant", "content": "c"}]}
    assert instag.queries(joined) == ["a\n\nb"]


def test_combine_counts_tags_and_registration():
    assert instag.combine([["a", "b", "c"]]) == {"instag_tags": ["a", "b", "c"], "instag_n_tags": 3}
    assert instag.combine([["a", "b"], ["b", "c"]]) == {"instag_tags": ["a", "b", "c"], "instag_n_tags": 3}
    info = registry.SCORERS["instag"]
    assert info.family == "powerful-llm" and info.fn() is instag.TEMPLATE
    assert info.columns == ("instag_tags", "instag_n_tags")
