"""Helpers the judge templates share: what a pool row asks and answers, chat messages, reply clean-up and
the reading of a numeric rating from a judge's reply text.

Row access: a row is a mapping (a dict, or a pandas Series) with ``id`` and ``conversations`` (a sequence of
``{role, content}`` turns, possibly a numpy object array as DuckDB returns it) and, for single-turn rows, the
flat columns ``instruction``, ``input`` and ``output``. Malformed conversations raise ``ValueError`` naming the
row id and the field.

Rating replies (:func:`parse_rating`): the score may stand

(a) at the start of the first non-empty line (optionally after a label such as ``Score:``), followed by prose,
    as AlpaGasus asks ("first output a single line containing value indicating the scores");
(b) alone on a line of its own (optionally labelled), anywhere in the reply;
(c) after a label and a colon anywhere in the reply (``... Score: 4``), the fallback of AlpaGasus's own parser.

Every value found these ways must agree, else the reply is refused as conflicting. A number written as
``x/high`` or ``x out of high`` is read as ``x``; any other denominator is refused (a different scale). Markdown
emphasis, headings, bullets and code fences are ignored. The words NaN/inf are refused as not finite.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from typing import Any

from instsel_assets.judge.types import ReplyParseError

NUMBER = r"[-+]?(?:\d+(?:\.\d*)?|\.\d+)"
_FENCE = re.compile(r"^\s*(```|~~~)[\w+-]*\s*$")
_NONFINITE = re.compile(r"(?<![a-z])(nan|inf|infinity)(?![a-z])", re.I)
_LIST_MARKER = re.compile(r"^\d+[.)]\s+[^\d\s]")


# --------------------------------------------------------------------------------------------- row access
def is_missing(value: Any) -> bool:
    """None or a float NaN (how pandas and DuckDB write an absent text)."""
    return value is None or (isinstance(value, float) and math.isnan(value))


def row_id(row: Mapping[str, Any]) -> str:
    value = row.get("id") if hasattr(row, "get") else None
    return "<no id>" if is_missing(value) else str(value)


def text_field(row: Mapping[str, Any], name: str) -> str:
    """A flat text column as a string ("" when absent); ``ValueError`` naming the row and field when it is
    not text."""
    value = row.get(name)
    if is_missing(value):
        return ""
    if not isinstance(value, str):
        raise ValueError(f"row {row_id(row)!r}, field {name!r}: expected text, got {type(value).__name__}")
    return value


def turns(row: Mapping[str, Any]) -> list[dict[str, str]]:
    """The row's conversation as plain ``{role, content}`` dicts ([] when there is none)."""
    conv = row.get("conversations")
    if conv is None or (isinstance(conv, float) and math.isnan(conv)):
        return []
    if isinstance(conv, (str, bytes, Mapping)):
        raise ValueError(f"row {row_id(row)!r}, field 'conversations': expected a list of turns, "
                         f"got {type(conv).__name__}")
    out = []
    for k, turn in enumerate(conv):
        if not isinstance(turn, Mapping) or "role" not in turn or "content" not in turn:
            raise ValueError(f"row {row_id(row)!r}, field 'conversations': turn {k} is not a mapping with "
                             f"'role' and 'content' ({turn!r:.80})")
        content = turn["content"]
        if is_missing(content):
            content = ""
        if not isinstance(content, str):
            raise ValueError(f"row {row_id(row)!r}, field 'conversations': turn {k} content is "
                             f"{type(content).__name__}, not text")
        out.append({"role": str(turn["role"]), "content": content})
    return out


def qa_pairs(row: Mapping[str, Any]) -> list[tuple[str, str]]:
    """One ``(instruction, answer)`` per assistant turn: the user turn(s) since the previous assistant turn
    (joined by a blank line) and that assistant turn. Assistant turns with no user text before them and
    empty answers are left out; system turns are ignored."""
    pairs: list[tuple[str, str]] = []
    users: list[str] = []
    for turn in turns(row):
        if turn["role"] == "user":
            users.append(turn["content"])
        elif turn["role"] == "assistant":
            instruction = "\n\n".join(u for u in users if u.strip())
            if instruction.strip() and turn["content"].strip():
                pairs.append((instruction, turn["content"]))
            users = []
    return pairs


def single_turn(row: Mapping[str, Any]) -> tuple[str, str, str] | None:
    """``(instruction, input, output)`` of a row: the flat columns when ``instruction`` and ``output`` are
    both present, else the first pair of :func:`qa_pairs` with an empty input; None when there is none."""
    instruction, output = text_field(row, "instruction"), text_field(row, "output")
    if instruction.strip() and output.strip():
        return instruction, text_field(row, "input"), output
    pairs = qa_pairs(row)
    if not pairs:
        return None
    return pairs[0][0], "", pairs[0][1]


def user_query(row: Mapping[str, Any]) -> str:
    """Every user turn of the row joined by a blank line; without conversations, the flat ``instruction``
    and ``input`` joined the same way."""
    users = [t["content"] for t in turns(row) if t["role"] == "user" and t["content"].strip()]
    if users:
        return "\n\n".join(users)
    return "\n\n".join(p for p in (text_field(row, "instruction"), text_field(row, "input")) if p.strip())


def messages(system: str | None, user: str) -> tuple[dict[str, str], ...]:
    """A chat: an optional system message, then one user message."""
    out = [] if system is None else [{"role": "system", "content": system}]
    out.append({"role": "user", "content": user})
    return tuple(out)


# ------------------------------------------------------------------------------------------ reply clean-up
def require_text(text: Any) -> str:
    """The reply as a stripped string; ``ReplyParseError`` when it is not text or is empty."""
    if text is None:
        raise ReplyParseError("no reply text")
    if not isinstance(text, str):
        raise ReplyParseError(f"reply is {type(text).__name__}, not text")
    if not text.strip():
        raise ReplyParseError("empty reply")
    return text.strip()


def strip_fences(text: str) -> str:
    """The text without its code-fence lines (```` ``` ````, ```` ```json ````, ``~~~``)."""
    return "\n".join(line for line in text.splitlines() if not _FENCE.match(line))


def clean_line(line: str) -> str:
    """A line without markdown decoration: headings, quotes, bullets, emphasis and inline code marks."""
    line = line.strip()
    line = re.sub(r"^(?:#{1,6}|>)\s*", "", line)
    line = re.sub(r"^[-*+\u2022]\s+", "", line)
    line = line.replace("**", "").replace("__", "").replace("`", "")
    line = re.sub(r"(?<!\w)\*(?=\S)|(?<=\S)\*(?!\w)", "", line)
    return line.strip()


def clean_lines(text: str) -> list[str]:
    """The non-empty lines of a reply, fences removed and each line cleaned."""
    return [c for c in (clean_line(line) for line in strip_fences(text).splitlines()) if c]


# -------------------------------------------------------------------------------------------------- ratings
def _label_pattern(labels: Sequence[str]) -> str:
    words = "|".join(re.escape(w) for w in labels)
    return rf"(?:(?:overall|final|total)\s+)?(?:{words})(?:\s+score)?"


def _leading_value(text: str, high: float) -> float | None:
    """The number ``text`` starts with (``x``, ``x/high``, ``x out of high``), or None when it does not
    start with one. Refuses a second number right after it and a denominator other than ``high``."""
    text = text.strip()
    if _LIST_MARKER.match(text):
        return None
    m = re.match(rf"({NUMBER})(?:\s*(?:/|out\s+of)\s*({NUMBER}))?", text, re.I)
    if m is None:
        return None
    value = float(m.group(1))
    if m.group(2) is not None and float(m.group(2)) != float(high):
        raise ReplyParseError(f"score {m.group(0)!r} is not on the requested scale (out of {high:g})")
    rest = text[m.end():]
    if re.match(rf"\s*(?:,|;|&|\bor\b|\band\b|\bto\b|-|\u2013|\s)\s*{NUMBER}", rest, re.I):
        raise ReplyParseError(f"two conflicting numbers where one score was expected: {text[:60]!r}")
    return value


def parse_rating(text: Any, low: float, high: float, labels: Sequence[str] = ("score", "rating")) -> float:
    """The single rating in a judge reply, a finite number in ``[low, high]`` (module docstring for where
    it may stand). ``ReplyParseError`` says why otherwise: empty reply, no score, not finite, conflicting
    scores, a different scale, out of range."""
    body = require_text(text)
    lines = clean_lines(body)
    if not lines:
        raise ReplyParseError("empty reply")
    label = _label_pattern(labels)
    found: list[float] = []
    # (a) leading score of the first line
    first = re.sub(rf"^{label}\s*[:=]?\s*", "", lines[0], flags=re.I)
    value = _leading_value(first, high)
    if value is not None:
        found.append(value)
    # (b) a line that is only a (labelled) score
    for line in lines[1:]:
        bare = re.sub(rf"^{label}\s*[:=]?\s*", "", line, flags=re.I)
        if re.fullmatch(rf"{NUMBER}(?:\s*(?:/|out\s+of)\s*{NUMBER})?\s*\.?", bare, re.I):
            found.append(_leading_value(bare, high))
    # (c) labelled scores anywhere
    for line in lines:
        for m in re.finditer(rf"\b{label}\s*[:=]\s*(.*)$", line, re.I):
            v = _leading_value(m.group(1), high)
            if v is not None:
                found.append(v)
    if not found:
        if _NONFINITE.search(lines[0]) or any(_NONFINITE.search(m.group(1)) for line in lines
                                              for m in re.finditer(rf"\b{label}\s*[:=]\s*(.*)$", line, re.I)):
            raise ReplyParseError("the score is not a finite number")
        raise ReplyParseError(f"no score found: the reply neither starts with a number nor has a "
                              f"'{labels[0].capitalize()}: <number>' line ({lines[0][:60]!r})")
    distinct = sorted(set(found))
    if len(distinct) > 1:
        raise ReplyParseError(f"conflicting scores in one reply: {', '.join(f'{v:g}' for v in distinct)}")
    return check_range(distinct[0], low, high, "score")


def check_range(value: float, low: float, high: float, what: str) -> float:
    if not math.isfinite(value):
        raise ReplyParseError(f"{what} is not a finite number")
    if not low <= value <= high:
        raise ReplyParseError(f"{what} {value:g} is outside the scale [{low:g}, {high:g}]")
    return float(value)
