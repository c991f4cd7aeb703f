"""Tree-Instruct (Zhao et al. 2023, "A Preliminary Study of the Intrinsic Relationship between Complexity and
Alignment"): an instruction's complexity is the size of its semantic tree. The paper has GPT-4 write the
semantic tree of an instruction, add a chosen number of nodes to it and turn the larger tree back into a new,
harder instruction; the number of nodes measures (and controls) complexity.

Prompt: written here from the paper's first step (its prompt asks GPT-4 to generate the semantic tree of the
instruction, then to add nodes and rewrite; only the tree is needed to measure complexity, so the prompt stops
there). The tree format is specified so that it can be parsed: bracket notation, every node ``[label children...]``
with a non-empty label, one root, on a line starting with ``Tree:``; a worked example is included.

Parser: the tree is read from the text right after ``Tree:`` (when there are several such labels, their trees
must be identical up to whitespace and separators), else from the first ``[`` of the reply (and then it must be
the only bracketed text). Code fences and markdown emphasis are ignored, the tree may span several lines, and
prose may follow it (on the tree's own line only without brackets). ``ReplyParseError`` for: no tree,
unbalanced brackets (e.g. a reply cut off by the token limit), a node without a label, text between child nodes
outside any label, a second root on the tree's line, different trees in one reply, or more than ``MAX_NODES``
nodes.

Column: ``tree_nodes`` (int, the number of nodes: the row's complexity). Selection:
``selection/tree_instruct_threshold.py``. What is parsed: all user turns of the row (the instruction, with its
input), joined by a blank line; rows without user text cannot be judged (``[]``).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

from instsel_assets.judge.templates._common import messages, require_text, strip_fences, user_query
from instsel_assets.judge.types import JudgeRequest, JudgeTemplate, ReplyParseError
from instsel_assets.registry import register_scorer

SYSTEM_PROMPT = "You are an expert linguist who analyses the semantic structure of instructions."
USER_PROMPT = (
    "Generate the semantic tree of the instruction below. The root is the main action or request of the "
    "instruction; its children are the objects, topics, constraints, conditions, formats and sub-tasks of that "
    "request, and each of them is broken down into its own parts in the same way. Every node is a short "
    "phrase taken from, or summarising, the instruction; do not add anything the instruction does not ask.\n\n"
    "Write the tree in bracket notation: every node is an opening bracket, its label, its children, and a "
    "closing bracket, as in [label [child] [child [grandchild]]]. There is exactly one root. Put the whole tree "
    "on one line that starts with \"Tree:\" and write nothing else.\n\n"
    "Example:\n"
    "Instruction: Write a haiku about autumn leaves in a melancholic tone.\n"
    "Tree: [write [haiku [topic [autumn leaves]] [tone [melancholic]]]]\n\n"
    "Instruction: {instruction}"
)
MAX_TOKENS = 512
MAX_NODES = 1000
COLUMNS = ("tree_nodes",)


def build(row: Mapping[str, Any]) -> list[JudgeRequest]:
    """One request asking for the semantic tree of the row's instruction; [] without user text."""
    instruction = user_query(row)
    if not instruction.strip():
        return []
    return [JudgeRequest(messages=messages(SYSTEM_PROMPT, USER_PROMPT.format(instruction=instruction)),
                         max_tokens=MAX_TOKENS, temperature=0.0)]


def _split_tree(text: str) -> tuple[str, str]:
    """``(tree, rest)``: the bracket expression that ``text`` starts with (after whitespace) and what follows
    it; ``ReplyParseError`` when it does not start with ``[`` or its brackets never balance."""
    body = text.lstrip()
    if not body.startswith("["):
        raise ReplyParseError(f"no bracket tree where one was expected ({body[:40]!r})")
    depth = 0
    for pos, ch in enumerate(body):
        depth += (ch == "[") - (ch == "]")
        if depth == 0:
            return body[:pos + 1], body[pos + 1:]
    raise ReplyParseError(f"unbalanced brackets: {depth} node(s) not closed (truncated reply?)")


def count_nodes(tree: str) -> int:
    """The number of nodes of one bracket tree ``[label [child] ...]``; ``ReplyParseError`` when ``tree`` is
    not exactly one well-formed tree with a label on every node."""
    body, rest = _split_tree(tree)
    if rest.strip().rstrip(".").strip():
        raise ReplyParseError(f"text after the tree: {rest.strip()[:40]!r}")
    nodes = 0
    label: str | None = None  # the label of the node just opened, while it is being read
    for pos, ch in enumerate(body):
        if ch in "[]":
            if label is not None and not label.strip():
                raise ReplyParseError(f"a node without a label at character {pos}")
            label = "" if ch == "[" else None
            nodes += ch == "["
            if nodes > MAX_NODES:
                raise ReplyParseError(f"more than {MAX_NODES} nodes")
        elif label is not None:
            label += ch
        elif not ch.isspace() and ch not in ",;":
            raise ReplyParseError(f"text {body[pos:pos + 20]!r} between child nodes (labels go right after '[')")
    return nodes


def _tree_at(text: str) -> tuple[int, str]:
    """``(node count, canonical tree)`` of the tree ``text`` starts with (canonical: no whitespace around
    brackets, no separators between siblings); the rest of its line must not hold another tree."""
    tree, rest = _split_tree(text)
    line_rest = rest.split("\n", 1)[0]
    if "[" in line_rest:
        raise ReplyParseError("more than one root (a bracketed node after the tree on its line)")
    if "]" in line_rest:
        raise ReplyParseError("unbalanced brackets: ']' without '[' after the tree")
    canonical = re.sub(r"\s*([\[\]])\s*", r"\1", re.sub(r"\s+", " ", tree))
    return count_nodes(tree), re.sub(r"\][,;]+\[", "][", canonical)


def parse(text: str) -> int:
    """The node count of the tree in a reply (module docstring); ``ReplyParseError`` otherwise."""
    body = strip_fences(require_text(text)).replace("`", "").replace("**", "")
    labels = list(re.finditer(r"(?im)^[ \t>*#-]*tree\s*:", body))
    if labels:
        trees = {_tree_at(body[m.end():]) for m in labels}
        if len({t for _, t in trees}) > 1:
            raise ReplyParseError(f"{len(trees)} different trees in one reply")
        return trees.pop()[0]
    start = body.find("[")
    if start < 0:
        raise ReplyParseError(f"no tree in the reply ({body.strip()[:60]!r})")
    count, _ = _tree_at(body[start:])
    if body.count("[") > count:
        raise ReplyParseError("more than one tree in the reply")
    return count


def combine(values: Sequence[int]) -> dict[str, Any]:
    if len(values) != 1:
        raise ValueError(f"tree_instruct: expected one parsed tree per row, got {len(values)}")
    return {"tree_nodes": int(values[0])}


TEMPLATE = JudgeTemplate(
    name="tree_instruct",
    columns=COLUMNS,
    build=build,
    parse=parse,
    combine=combine,
    description="Tree-Instruct: the judge writes the semantic tree of the instruction; complexity = node count.",
)


@register_scorer(
    "tree_instruct",
    family="powerful-llm",
    paper="Zhao et al. 2023, A Preliminary Study of the Intrinsic Relationship between Complexity and Alignment "
          "(Tree-Instruct)",
    summary="The judge writes the semantic tree of each instruction in bracket notation; complexity = its number "
            "of nodes (tree_nodes).",
    writes=TEMPLATE.columns,
)
def template() -> JudgeTemplate:
    """The Tree-Instruct judge template (run by the judge engine)."""
    return TEMPLATE
