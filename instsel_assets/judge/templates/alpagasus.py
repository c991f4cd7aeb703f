"""AlpaGasus (Chen et al. 2023b, "AlpaGasus: Training a Better Alpaca with Fewer Data"): the judge rates the
accuracy of each (instruction, input, response) triplet on a 0-5 scale; the rows rated >= 4.5 are kept.

Prompt: the reference code's accuracy-rating prompt, verbatim (gpt4life/alpagasus, ``rating/chatgpt_rating.py``;
the paper prints the same prompt): the system message ``SYSTEM_PROMPT`` and a user message made of the
Alpaca-style triplet followed by ``USER_PROMPT``. The reference sends it to ChatGPT (gpt-3.5-turbo-0301) with
temperature 0 and 256 reply tokens, as ``build`` does here. The reference's helpfulness variant (left commented
out there) is not used. Rows without an input keep the empty ``### Input:`` section, as the reference does
with Alpaca's empty inputs.

What is rated: the flat ``instruction``, ``input`` and ``output`` columns of a single-turn row; for rows without
them (e.g. multi-turn chats), the first assistant turn and the user turn(s) before it, with an empty input.
Rows with no (instruction, answer) pair cannot be judged (``build`` returns ``[]``).

Parser (a deliberate difference from the reference): the reference reads ``float(first line)`` and falls back
to the text after ``score:``; an unreadable reply becomes ``-1``, which its 4.5 filter then drops silently.
Here the leading score (``4.5``, ``Score: 4``, ``**4**``, ``4.5/5``) or a labelled score (``Score: 4``)
anywhere is read; a reply with no score, conflicting scores, a non-finite value, another scale (``8/10``) or
a score outside [0, 5] raises ``ReplyParseError`` and is counted, never scored. ``rating=RatingSpec(0, 5)``
lets the in-process local backend answer by digit probabilities; its reply ``"Score: 4.1234"`` parses the
same way.

Column: ``alpagasus_score`` (float in [0, 5]). Selection: ``selection/alpagasus_threshold.py``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from instsel_assets.judge.templates._common import messages, parse_rating, single_turn
from instsel_assets.judge.types import JudgeRequest, JudgeTemplate, RatingSpec
from instsel_assets.registry import register_scorer

SYSTEM_PROMPT = ("We would like to request your feedback on the performance of AI assistant in response to the "
                 "instruction and the given input displayed following.")
USER_PROMPT = ("Please rate according to the accuracy of the response to the instruction and the input. Each "
               "assistant receives a score on a scale of 0 to 5, where a higher score indicates higher level of "
               "the accuracy. Please first output a single line containing value indicating the scores. In the "
               "subsequent line, please provide a comprehensive explanation of your evaluation, avoiding any "
               "potential bias. \n\n")
TRIPLET = "###Instruction:\n{instruction}\n\n### Input:\n{input}\n\n### Response:\n{output}\n\n"
"""The reference's triplet format (its first header has no space after ``###``)."""

SCALE = (0, 5)
RATING = RatingSpec(*SCALE)
MAX_TOKENS = 256
COLUMNS = ("alpagasus_score",)


def build(row: Mapping[str, Any]) -> list[JudgeRequest]:
    """One request: the reference's system message and triplet + accuracy prompt; [] without a pair."""
    triplet = single_turn(row)
    if triplet is None:
        return []
    instruction, input_text, output = triplet
    user = TRIPLET.format(instruction=instruction, input=input_text, output=output) + USER_PROMPT
    return [JudgeRequest(messages=messages(SYSTEM_PROMPT, user), max_tokens=MAX_TOKENS, temperature=0.0,
                         rating=RATING)]


def parse(text: str) -> float:
    """The accuracy score in [0, 5] (module docstring); ``ReplyParseError`` when unreadable."""
    return parse_rating(text, *SCALE, labels=("score", "rating", "accuracy"))


def combine(values: Sequence[float]) -> dict[str, Any]:
    if len(values) != 1:
        raise ValueError(f"alpagasus: expected one parsed score per row, got {len(values)}")
    return {"alpagasus_score": float(values[0])}


TEMPLATE = JudgeTemplate(
    name="alpagasus",
    columns=COLUMNS,
    build=build,
    parse=parse,
    combine=combine,
    description="AlpaGasus accuracy rating 0-5 of (instruction, input, response); reference prompt verbatim.",
)


@register_scorer(
    "alpagasus",
    family="powerful-llm",
    paper="Chen et al. 2023b, AlpaGasus: Training a Better Alpaca with Fewer Data",
    summary="The judge rates the accuracy of each response to its instruction and input on 0-5 (the reference "
            "prompt: score on the first line, then an explanation); judge template 'alpagasus'.",
    writes=TEMPLATE.columns,
)
def template() -> JudgeTemplate:
    """The AlpaGasus judge template (run by the judge engine)."""
    return TEMPLATE
