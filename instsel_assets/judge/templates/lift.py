"""LIFT (Xu et al. 2023b, "Rethinking the Instruction Quality: LIFT is What You Need"): after expanding the data
distribution and a diversity pre-selection on embeddings (``selection/lift_variance.py``), GPT-4 scores every
remaining instruction pair on accuracy, explainability, clarity and difficulty, with the length of the answer as
a fifth factor, and the data is re-selected on the combined score.

Prompt: written here from the paper's description of its quality-curation step; the paper's exact GPT-4 prompt
is not reproduced. The judge rates all five criteria, each on 1-10 (higher is better), in one reply of five
labelled lines (``Accuracy: 8`` ...), then a short explanation. Deliberate differences: the length criterion is
rated by the judge (how sufficiently detailed and informative the answer is) rather than computed from the
answer's token count; the data-expansion step (GPT-4 writing new instructions) is not part of this template.
The reply is free text with five numbers, so there is no ``RatingSpec``: the in-process local backend
generates it like an API judge.

What is judged: the flat ``instruction``, ``input`` and ``output`` of a single-turn row, else the first assistant
turn and the user turn(s) before it; rows without such a pair cannot be judged (``[]``).

Parser: one labelled score per criterion (``Accuracy: 8``, ``**Clarity**: 7/10``, ``- Difficulty - 6``, lines in
any order; or a JSON object ``{"accuracy": 8, ...}``, possibly in a code fence). Label lines whose text does not
start with a number (``Accuracy: The response is correct.`` in the explanation) are prose, not scores. A missing
criterion, a
criterion given twice with different values, a non-number, a non-finite value, another scale (``4/5``) or a
score outside [1, 10] raises ``ReplyParseError`` naming the criterion.

Columns: ``lift_accuracy``, ``lift_explainability``, ``lift_clarity``, ``lift_difficulty``, ``lift_length``
(each in [1, 10]) and ``lift_score`` = their unweighted mean (in [1, 10]; the paper combines the GPT-4 scores
without publishing weights, so equal weights are used).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from typing import Any

from instsel_assets.judge.templates._common import (NUMBER, check_range, clean_lines, messages, require_text,
                                                    single_turn, strip_fences)
from instsel_assets.judge.types import JudgeRequest, JudgeTemplate, ReplyParseError
from instsel_assets.registry import register_scorer

CRITERIA = ("accuracy", "explainability", "clarity", "difficulty", "length")
SCALE = (1, 10)
SYSTEM_PROMPT = "You are a helpful and precise assistant for checking the quality of instruction-tuning data."
USER_PROMPT = (
    "Please evaluate the following instruction, its input and the response, a sample used to fine-tune a "
    "language model. Rate the sample on each of the five criteria below on a scale of 1 to 10, where a higher "
    "score is better:\n"
    "1. Accuracy: the response is correct and completely fulfils the instruction and the input.\n"
    "2. Explainability: the response explains its answer, its reasoning or its steps so that they can be "
    "followed and learned from.\n"
    "3. Clarity: the instruction is clear and unambiguous, and the response is clearly written and well "
    "organised.\n"
    "4. Difficulty: the task is difficult and needs knowledge, reasoning or several steps (a trivial task "
    "scores low).\n"
    "5. Length: the response is sufficiently detailed and informative for the task, without padding.\n\n"
    "Answer with exactly these five lines first, then a brief explanation of your evaluation, avoiding any "
    "potential bias:\n"
    "Accuracy: <score>\nExplainability: <score>\nClarity: <score>\nDifficulty: <score>\nLength: <score>\n\n"
    "### Instruction:\n{instruction}\n\n### Input:\n{input}\n\n### Response:\n{output}\n"
)
MAX_TOKENS = 384
COLUMNS = tuple(f"lift_{c}" for c in CRITERIA) + ("lift_score",)


def build(row: Mapping[str, Any]) -> list[JudgeRequest]:
    """One request rating the row's (instruction, input, response) on the five criteria; [] without a pair."""
    triplet = single_turn(row)
    if triplet is None:
        return []
    instruction, input_text, output = triplet
    user = USER_PROMPT.format(instruction=instruction, input=input_text, output=output)
    return [JudgeRequest(messages=messages(SYSTEM_PROMPT, user), max_tokens=MAX_TOKENS, temperature=0.0)]


def _value(raw: Any, criterion: str) -> float:
    if isinstance(raw, bool) or not isinstance(raw, (int, float, str)):
        raise ReplyParseError(f"{criterion}: {raw!r} is not a number")
    if isinstance(raw, str):
        m = re.fullmatch(rf"\s*({NUMBER})\s*(?:(?:/|out\s+of)\s*({NUMBER}))?\s*", raw, re.I)
        if m is None:
            raise ReplyParseError(f"{criterion}: {raw!r} is not a number")
        if m.group(2) is not None and float(m.group(2)) != SCALE[1]:
            raise ReplyParseError(f"{criterion}: {raw!r} is not on the 1-10 scale")
        raw = float(m.group(1))
    return check_range(float(raw), *SCALE, what=criterion)


def _from_json(body: str) -> dict[str, float] | None:
    text = strip_fences(body).strip()
    start = text.find("{")
    if start < 0:
        return None
    try:
        obj, _ = json.JSONDecoder().raw_decode(text, start)
    except json.JSONDecodeError:
        return None
    if not isinstance(obj, dict):
        return None
    lowered = {str(k).strip().lower(): v for k, v in obj.items()}
    if not any(c in lowered for c in CRITERIA):
        return None
    missing = [c for c in CRITERIA if c not in lowered]
    if missing:
        raise ReplyParseError(f"no score for {', '.join(missing)}")
    return {c: _value(lowered[c], c) for c in CRITERIA}


def parse(text: str) -> dict[str, float]:
    """``{criterion: score}`` for the five criteria (module docstring); ``ReplyParseError`` otherwise."""
    body = require_text(text)
    as_json = _from_json(body)
    if as_json is not None:
        return as_json
    found: dict[str, list[str]] = {c: [] for c in CRITERIA}
    prose: dict[str, str] = {}
    for line in clean_lines(body):
        m = re.match(rf"^(?:\d+[.)]\s*)?({'|'.join(CRITERIA)})\b(?:\s+score)?\s*[:=\-\u2013]\s*(.*)$", line, re.I)
        if m is None:
            continue
        criterion, rest = m.group(1).lower(), m.group(2).strip()
        if not re.match(r"[-+]?[\d.]", rest):
            prose.setdefault(criterion, rest)  # e.g. "Accuracy: The response is correct" in the explanation
            continue
        value = re.match(rf"(\S+(?:\s*(?:/|out\s+of)\s*{NUMBER})?)", rest, re.I)
        found[criterion].append(value.group(1).rstrip(".,;"))
    missing = [c for c in CRITERIA if not found[c]]
    for c in missing:
        if c in prose:
            raise ReplyParseError(f"{c}: {prose[c][:40]!r} is not a number")
    if len(missing) == len(CRITERIA):
        raise ReplyParseError("no criterion scores found (expected lines such as 'Accuracy: 8')")
    if missing:
        raise ReplyParseError(f"no score for {', '.join(missing)}")
    scores = {}
    for c in CRITERIA:
        values = sorted({_value(v, c) for v in found[c]})
        if len(values) > 1:
            raise ReplyParseError(f"{c}: conflicting scores {', '.join(f'{v:g}' for v in values)}")
        scores[c] = values[0]
    return scores


def combine(values: Sequence[Mapping[str, float]]) -> dict[str, Any]:
    if len(values) != 1:
        raise ValueError(f"lift: expected one parsed reply per row, got {len(values)}")
    scores = values[0]
    out = {f"lift_{c}": float(scores[c]) for c in CRITERIA}
    out["lift_score"] = sum(out[f"lift_{c}"] for c in CRITERIA) / len(CRITERIA)
    return out


TEMPLATE = JudgeTemplate(
    name="lift",
    columns=COLUMNS,
    build=build,
    parse=parse,
    combine=combine,
    description="LIFT quality curation: accuracy, explainability, clarity, difficulty, length (1-10); "
                "lift_score = their mean.",
)


@register_scorer(
    "lift",
    family="powerful-llm",
    paper="Xu et al. 2023b, Rethinking the Instruction Quality: LIFT is What You Need",
    summary="The judge rates accuracy, explainability, clarity, difficulty and length (1-10 each) of every "
            "(instruction, input, response); lift_score = their mean, re-selected after the row-variance step.",
    writes=TEMPLATE.columns,
)
def template() -> JudgeTemplate:
    """The LIFT judge template (run by the judge engine)."""
    return TEMPLATE
