"""InsTag (Lu et al. 2023, "#InsTag: Instruction Tagging for Analyzing Supervised Fine-tuning of Large Language
Models"): the judge lists open-set, fine-grained intention tags of each query, each with an explanation.

Prompt: the InsTag tagging prompt, the text the paper's ChatGPT tagging and its released InsTagger model use:
"You are a helpful assistant. Please identify tags of user intentions in the following user query and provide
an explanation for each tag. Please respond in the JSON format {"tag": str, "explanation": str}." followed by
``Query: <query>``, sent as one user message (InsTagger's own template then appends "Assistant:", which a chat
template provides). The paper tags with ChatGPT; ``build`` uses temperature 0.

What is tagged: as in the paper, every query (user turn) is tagged on its own, and a row's (session's) tags
are the union of its queries' tags, so ``build`` makes one request per non-empty user turn (several user turns
in a row without an answer between them form one query); without conversations, the flat ``instruction`` and
``input`` joined by a blank line are the one query. A row with no user text cannot be judged (``[]``).

Parser: the reply must be JSON, optionally inside a code fence and optionally after a line of prose: a list of
``{"tag": str, "explanation": str}`` objects, a single such object, one object per line (JSON Lines), or an
object ``{"tags": [...]}``. Every object needs a non-empty string ``tag``; ``explanation`` may be missing but,
when present, must be a string. Truncated or otherwise invalid JSON, wrong types, and an empty tag list raise
``ReplyParseError``. Tags are stripped with inner whitespace collapsed; repeats within one reply are kept once
(first occurrence, exact string). The tags are stored as the judge wrote them: normalisation (frequency
filter, lowercase and lemma rules, semantic and association merging) is a pool-level step,
``judge/instag_normalize.py``, run on the column of all rows before selection.

Columns: ``instag_tags`` (list of str: the union over the row's queries) and ``instag_n_tags`` (the row's
complexity: its number of tags). Selection: ``selection/instag_complexity_first.py``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from typing import Any

from instsel_assets.judge.templates._common import messages, require_text, strip_fences, turns, user_query
from instsel_assets.judge.types import JudgeRequest, JudgeTemplate, ReplyParseError
from instsel_assets.registry import register_scorer

USER_PROMPT = ("You are a helpful assistant. Please identify tags of user intentions in the following user query and "
               "provide an explanation for each tag. Please respond in the JSON format {{\"tag\": str, "
               "\"explanation\": str}}.\nQuery: {query}")
MAX_TOKENS = 1024
COLUMNS = ("instag_tags", "instag_n_tags")


def queries(row: Mapping[str, Any]) -> list[str]:
    """The row's queries: each run of user turns (joined by a blank line) before an assistant turn or the end;
    without conversations, the flat ``instruction`` and ``input`` as one query."""
    runs: list[list[str]] = [[]]
    for turn in turns(row):
        if turn["role"] == "user" and turn["content"].strip():
            runs[-1].append(turn["content"])
        elif turn["role"] == "assistant" and runs[-1]:
            runs.append([])
    out = ["\n\n".join(run) for run in runs if run]
    if out:
        return out
    flat = user_query(row)
    return [flat] if flat.strip() else []


def build(row: Mapping[str, Any]) -> list[JudgeRequest]:
    """One tagging request per query of the row; [] when it has no user text."""
    return [JudgeRequest(messages=messages(None, USER_PROMPT.format(query=query)), max_tokens=MAX_TOKENS,
                         temperature=0.0) for query in queries(row)]


def _json_payload(text: str) -> Any:
    """The JSON value of a reply: the whole (fence-stripped) text when it is JSON; else the first value that
    starts at the start of a line (tried first) or inside a line of prose (counted only when it is an object or
    a list of objects); prose may come before and after it. A run of objects one after another (JSON Lines)
    is read as a list. A value that starts a line and does not decode (e.g. a list cut off by the token
    limit) is refused, never read in part."""
    body = strip_fences(text).strip()
    try:
        return json.loads(body)
    except json.JSONDecodeError:
        pass
    line_starts = sorted(m.end() - 1 for m in re.finditer(r"(?m)^[ \t]*[\[{]", body))
    inline = [m.start() for m in re.finditer(r"[\[{]", body) if m.start() not in set(line_starts)]
    if not line_starts and not inline:
        raise ReplyParseError(f"no JSON in the reply ({body[:60]!r})")
    decoder = json.JSONDecoder()
    for start in line_starts + inline:
        try:
            value, end = decoder.raw_decode(body, start)
        except json.JSONDecodeError as exc:
            if start in line_starts:
                raise ReplyParseError(f"invalid or truncated JSON: {exc.msg} at character {exc.pos}") from exc
            continue  # a bracket inside a line of prose
        if start not in line_starts and not _looks_like_tags(value):
            continue
        if not isinstance(value, dict):
            return value
        objects = [value]
        while True:
            m = re.match(r"[\s,]*\{", body[end:])
            if m is None:
                break
            try:
                value, end = decoder.raw_decode(body, end + m.end() - 1)
            except json.JSONDecodeError as exc:
                raise ReplyParseError(f"invalid or truncated JSON: {exc.msg} at character {exc.pos}") from exc
            objects.append(value)
        return objects[0] if len(objects) == 1 else objects
    raise ReplyParseError("no JSON in the reply")


def _looks_like_tags(value: Any) -> bool:
    """A dict, or a non-empty list of dicts: what a tag reply holds (used for JSON that starts mid-line)."""
    return isinstance(value, dict) or (isinstance(value, list) and bool(value)
                                       and all(isinstance(v, dict) for v in value))


def parse(text: str) -> list[str]:
    """The tags of a reply, in order, each once; ``ReplyParseError`` when the reply is not a JSON list of
    ``{"tag", "explanation"}`` objects (module docstring)."""
    payload = _json_payload(require_text(text))
    if isinstance(payload, dict) and "tag" not in payload:
        if list(payload) != ["tags"] or not isinstance(payload["tags"], list):
            raise ReplyParseError(f"JSON object without a 'tag' field (keys {sorted(payload)[:5]})")
        payload = payload["tags"]
    items = [payload] if isinstance(payload, dict) else payload
    if not isinstance(items, list):
        raise ReplyParseError(f"expected a JSON list of tag objects, got {type(payload).__name__}")
    if not items:
        raise ReplyParseError("the reply lists no tags")
    tags: list[str] = []
    for k, item in enumerate(items):
        if not isinstance(item, dict):
            raise ReplyParseError(f"item {k} is {type(item).__name__}, not a {{\"tag\", \"explanation\"}} object")
        tag = item.get("tag")
        if not isinstance(tag, str):
            raise ReplyParseError(f"item {k}: 'tag' is {type(tag).__name__}, not a string")
        if not tag.strip():
            raise ReplyParseError(f"item {k}: empty tag")
        if "explanation" in item and not isinstance(item["explanation"], str):
            raise ReplyParseError(f"item {k}: 'explanation' is {type(item['explanation']).__name__}, not a string")
        tag = re.sub(r"\s+", " ", tag.strip())
        if tag not in tags:
            tags.append(tag)
    return tags


def combine(values: Sequence[list[str]]) -> dict[str, Any]:
    """The union of the queries' tags (first-seen order) and its size."""
    if len(values) == 0:
        raise ValueError("instag: expected at least one parsed tag list per row")
    tags: list[str] = []
    for query_tags in values:
        tags.extend(t for t in query_tags if t not in tags)
    return {"instag_tags": tags, "instag_n_tags": len(tags)}


TEMPLATE = JudgeTemplate(
    name="instag",
    columns=COLUMNS,
    build=build,
    parse=parse,
    combine=combine,
    description="InsTag open-set intention tags (JSON list of {tag, explanation}); complexity = number of tags.",
)


@register_scorer(
    "instag",
    family="powerful-llm",
    paper="Lu et al. 2023, #InsTag: Instruction Tagging for Analyzing Supervised Fine-tuning of LLMs",
    summary="The judge lists open-set intention tags of every query (user turn) with the paper's tagging prompt "
            "(JSON list of {tag, explanation}); complexity = number of distinct tags of the row; normalised over "
            "the pool by instag_normalize.",
    writes=TEMPLATE.columns,
)
def template() -> JudgeTemplate:
    """The InsTag judge template (run by the judge engine)."""
    return TEMPLATE
