"""WaveCoder judge template: per-task-type requirements, yes/no per requirement, non-code rows not judged."""

from __future__ import annotations

import pytest

from instsel_assets import registry
from instsel_assets.judge.templates import wavecoder
from instsel_assets.judge.types import ReplyParseError

GEN_ROW = {"id": "g", "instruction": "Write a Python function that returns the factorial of n.", "input": "",
           "output": "```python\nimport math\n\ndef fact(n):\n    return math.factorial(n)\n```"}
REFERENCE_STYLE = """- step 1: check the Instruction:
G1. Instruction: the programming language should be specified in the instruction. <answer: yes, The instruction \
says "Write a Python function".>
- step 2: check the Solution:
G2. Solution: Solution is related to instruction and information. <answer: yes, it computes the factorial.>
G3. Solution: In the solution, it should only contain the code and comments within the code. <answer: yes, code only.>
G4. Solution: The code ... should not often buried inside complex or poorly documented functions. <answer: yes, simple.>
G5. Solution: The code should import the required necessary libraries. <answer: no, `math` is used but the \
import is missing.>
- Overall answer: no
- reasons: the math library is not imported."""

GOOD = [
    (REFERENCE_STYLE, "generation", False, ["G5"]),
    ("G1: yes, Python is named\nG2: yes\nG3: yes\nG4: yes\nG5: yes\nOverall answer: yes", "generation", True, []),
    ("**S1**: Yes - asks for a summary\n**S2**: Yes\n**S3**: No, the summary is wrong\n**S4**: Yes\n\n"
     "Overall answer: **no**", "summarization", False, ["S3"]),
    ("Analysis:\n1. T1 - yes\n2. T2 - yes\n3. T3 - no (prose around the code)\n4. T4 - yes\n5. T5 - no\n"
     "- reasons: explanation outside the code, missing import.", "translation", False, ["T3", "T5"]),
    ("R1. Instruction: asks to fix the bug. <answer: yes, it does>\nR2. <answer: yes>\nR3. <answer: yes>\n"
     "R4. <answer: yes>\nR5. <answer: yes>\nR1 restated: the instruction is clear.\n- Overall answer: yes",
     "repair", True, []),
]

BAD = [
    ("", "empty"),
    ("The data looks good to me. Overall answer: yes", "no per-requirement answers"),
    ("G1: yes\nG2: yes\nG3: yes\nG4: yes", "no answer for requirement.*G5"),
    ("G1: yes\nG2: yes\nG3: yes\nG4: yes\nG5: yes\nG5: no", "both yes and no"),
    ("G1: yes\nG2: yes\nG3: yes\nG4: yes\nG5: yes\nS1: yes", "several task types"),
    ("G1: yes\nG2: yes\nG3: yes\nG4: yes\nG5: yes\nG9: no", "unknown requirement id 'G9'"),
    ("G1: yes\nG2: yes\nG3: yes\nG4: yes\nG5: no\nOverall answer: yes", "contradicts"),
    ("G1: yes\nG2: yes\nG3: yes\nG4: yes\nG5: yes\nOverall answer: yes\nOverall answer: no", "conflicting overall"),
    ("G1: maybe\nG2: yes\nG3: yes\nG4: yes\nG5: yes", "no answer for requirement.*G1"),
]


@pytest.mark.parametrize("text,subtopic,passed,failed", GOOD)
def test_parses_discriminator_replies(text, subtopic, passed, failed):
    verdict = wavecoder.parse(text)
    assert verdict.subtopic == subtopic and verdict.passed is passed
    assert wavecoder.combine([verdict]) == {"wavecoder_pass": passed, "wavecoder_failed_criteria": failed,
                                            "wavecoder_subtopic": subtopic}


@pytest.mark.parametrize("text,why", BAD)
def test_refuses_malformed_replies(text, why):
    with pytest.raises(ReplyParseError, match=why):
        wavecoder.parse(text)


@pytest.mark.parametrize("instruction,information,solution,expected", [
    ("Write a Python function that reverses a list.", "", "def rev(x):\n    return x[::-1]", "generation"),
    ("Implement binary search in Java.", "", "See below.", "generation"),
    ("Fix the bug in this code.", "```python\ndef add(a, b):\n    return a - b\n```", "def add(a, b): ...", "repair"),
    ("Translate this Python code to JavaScript.", "def f(x):\n    return x * 2", "const f = x => x * 2;",
     "translation"),
    ("Summarize what this code does.", "```c\nint main() { return 0; }\n```", "It returns 0.", "summarization"),
    ("Give three tips for staying healthy.", "", "Eat well, sleep, exercise.", None),
    ("Translate 'good morning' into French.", "", "Bonjour.", None),
    ("What is Java famous for?", "", "Coffee and volcanoes.", None),
])
def test_detect_subtopic(instruction, information, solution, expected):
    assert wavecoder.detect_subtopic(instruction, information, solution) == expected


def test_build_uses_the_reference_requirements_and_sample_layout():
    (request,) = wavecoder.build(GEN_ROW)
    (message,) = request.messages
    content = message["content"]
    assert message["role"] == "user"
    assert content.startswith("\nPlease analyze and judge whether the data meets the specifications")
    assert "- step 1: check the Instruction:\nG1. Instruction: the programming language should be specified in the " \
           "instruction. <answer (yes/no), reason>" in content
    assert "G5. Solution: The code should import the required necessary libraries." in content
    assert "task_name: code generation\ninstruction: Write a Python function" in content
    assert "information: <noinput>" in content and "solution: ```python" in content
    assert content.endswith("\n\nAnalysis:\n")
    assert request.max_tokens == 500 and request.rating is None


def test_explicit_task_column_wins_and_non_code_rows_are_not_judged():
    row = dict(GEN_ROW, wavecoder_task="code_repair")
    assert "task_name: code repair" in wavecoder.build(row)[0].messages[0]["content"]
    assert "R1." in wavecoder.build(row)[0].messages[0]["content"]
    assert wavecoder.subtopic_of(dict(GEN_ROW, task_type="code translation")) == "translation"
    assert wavecoder.subtopic_of(dict(GEN_ROW, task_type="open_qa")) == "generation"  # not a code label: text
    assert wavecoder.build({"id": "n", "instruction": "Name a fruit.", "input": "", "output": "Apple."}) == []
    assert wavecoder.build({"id": "e", "conversations": []}) == []


def test_a_reply_for_another_task_type_than_the_rows_is_unparsable():
    import pandas as pd

    from instsel_assets.judge.engine import judge_pool
    from instsel_assets.judge.types import JudgeReply

    generation_reply = "G1: yes\nG2: yes\nG3: yes\nG4: yes\nG5: yes\nOverall answer: yes"

    class Replies:  # the same generation-style answer to every request (a judge that ignored the criteria)
        backend_id, model = "fake:wavecoder", "m"

        def count_tokens(self, text):
            return 1

        def complete(self, request):
            return JudgeReply(text=generation_reply, prompt_tokens=1, completion_tokens=1)

    repair = dict(GEN_ROW, id="r", wavecoder_task="repair")
    wavecoder.validate(GEN_ROW, [wavecoder.parse(generation_reply)])  # fits a generation row
    with pytest.raises(ReplyParseError, match="answers the generation requirements but the row is a code repair"):
        wavecoder.validate(repair, [wavecoder.parse(generation_reply)])
    out = judge_pool(pd.DataFrame([GEN_ROW, repair]), wavecoder.TEMPLATE, Replies())
    assert out["judge_status"].tolist() == ["ok", "unparsable"]
    assert out["wavecoder_pass"].tolist()[0] is True and pd.isna(out["wavecoder_pass"].tolist()[1])
    assert out["judge_error"].iloc[1].startswith("validate: the reply answers the generation requirements")
    assert out.attrs["n_unparsable_replies"] == 1


def test_registration():
    info = registry.SCORERS["wavecoder"]
    assert info.family == "powerful-llm" and info.fn() is wavecoder.TEMPLATE
    assert info.columns == ("wavecoder_pass", "wavecoder_failed_criteria", "wavecoder_subtopic")
