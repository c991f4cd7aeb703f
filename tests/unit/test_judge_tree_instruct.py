"""Tree-Instruct judge template: the judge writes a bracket semantic tree; complexity = node count."""

from __future__ import annotations

import pytest

from instsel_assets import registry
from instsel_assets.judge.templates import tree_instruct
from instsel_assets.judge.types import ReplyParseError

GOOD = [
    ("Tree: [write [haiku [topic [autumn leaves]] [tone [melancholic]]]]", 6),
    ("Here is the semantic tree of the instruction.\n\n```\nTree: [explain [concept [photosynthesis]]\n"
     "    [audience [children]]]\n```\n\nThe root is the main request.", 5),
    ("**Tree:** [translate [sentence [good morning]] [target language [French]]].", 5),
    ("[list [items [three] [primary colors]]]", 4),
    ("Tree: [answer]", 1),
    ("Tree: [write [haiku]] (2 nodes)", 2),
    ("Tree: [compare [A [python]], [B [java]]]\n\nTree: [compare [A [python]] , [B [java]]]", 5),
    ("tree: [summarize [text [the paragraph]] [length [one sentence]]]\nIt has 5 nodes [root included].", 5),
]

BAD = [
    ("", "empty"),
    ("The instruction asks for a haiku about autumn.", "no tree"),
    ("Tree: [write [haiku [topic [autumn leaves]] [tone", "unbalanced"),
    ("Tree: [write [] [haiku]]", "without a label"),
    ("Tree: [[haiku]]", "without a label"),
    ("Tree: [write [haiku]] [poem]", "more than one root"),
    ("Tree: [write [haiku] and then [poem]]", "between child nodes"),
    ("Tree: [write [haiku]]\nTree: [write [poem] [short]]", "different trees"),
    ("[write [haiku]]\n[read [book]]", "more than one tree"),
    ("Tree: write -> haiku -> autumn", "no bracket tree"),
    ("Tree: [write]]", "unbalanced"),
]


@pytest.mark.parametrize("text,expected", GOOD)
def test_counts_nodes(text, expected):
    assert tree_instruct.parse(text) == expected


@pytest.mark.parametrize("text,why", BAD)
def test_refuses_malformed_trees(text, why):
    with pytest.raises(ReplyParseError, match=why):
        tree_instruct.parse(text)


def test_count_nodes_refuses_text_after_the_tree():
    with pytest.raises(ReplyParseError, match="text after the tree"):
        tree_instruct.count_nodes("[write [haiku]] because it is short")
    assert tree_instruct.count_nodes(" [write [haiku]]. ") == 2


def test_node_limit():
    deep = "[n " * (tree_instruct.MAX_NODES + 1) + "]" * (tree_instruct.MAX_NODES + 1)
    with pytest.raises(ReplyParseError, match="more than"):
        tree_instruct.count_nodes(deep)


def test_build_asks_for_the_tree_of_the_instruction():
    row = {"id": "t", "instruction": "Write a haiku.", "input": "",
           "conversations": [{"role": "user", "content": "Write a haiku about the sea."},
                             {"role": "assistant", "content": "Waves..."}]}
    (request,) = tree_instruct.build(row)
    user = request.messages[-1]["content"]
    assert user.endswith("Instruction: Write a haiku about the sea.")
    assert "bracket notation" in user and "Tree:" in user
    example = user.split("Tree: ", 1)[1].split("\n", 1)[0]
    assert tree_instruct.count_nodes(example) == 6
    assert request.rating is None
    assert tree_instruct.build({"id": "e", "conversations": []}) == []


def test_combine_and_registration():
    assert tree_instruct.combine([7]) == {"tree_nodes": 7}
    info = registry.SCORERS["tree_instruct"]
    assert info.family == "powerful-llm" and info.fn() is tree_instruct.TEMPLATE and info.columns == ("tree_nodes",)
