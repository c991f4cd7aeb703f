"""Self-curation from Instruction Backtranslation (Humpback; Li et al. 2023b, "Self-Alignment with Instruction
Backtranslation").

The paper's rule (section 2.3): the instruction-following model itself rates every candidate
(instruction, output) pair on a 5-point scale with the prompt ``SELF_CURATION_PROMPT`` (the paper's prompt,
its Table 1, reproduced verbatim apart from typographic apostrophes written as ASCII), and the pairs rated
``>= k`` form the curated set ``A_k``. Iterative self-curation: a model fine-tuned on the curated set (plus
the seed data) re-rates the candidates, giving ``A_k^(t)``; the paper runs two iterations and trains on
``A_5`` (which it describes as "score >= 4.5").

How the rating is read here (a deliberate difference from the paper, which samples a reasoning and then
parses "Score: <rating>" from the last line): the prompt is sent as a user turn through the model's chat
template with the generation prompt, and the assistant turn is started with the fixed text
``ANSWER_PREFIX = "Score: "``. The paper asks the model to end its reply with exactly that text, so
conditioning on it lets ONE forward pass read the model's distribution over the five ratings, with no
sampling and no unparsable replies. The model skips the brief reasoning the paper asks for first.

- ``self_curation_score`` = ``sum_d d * p(d)`` over the digit tokens "1".."5", ``p`` renormalised over
  the five digits (an expected rating in [1, 5]);
- ``self_curation_top`` = the most likely digit (what greedy decoding would write);
- ``digit_mass`` = the total probability on the five digits BEFORE renormalisation. Below
  ``low_digit_mass`` (0.5) the model was mostly not answering with a rating, so its expected score means
  little: such rows are counted in ``out.attrs["n_low_digit_mass"]`` and logged, never hidden.

Digit tokens: the rating must be ONE token right after the prompt. Tokenizers differ in how they encode
"Score: 5": some give ``..., ":", " ", "5"`` (SmolLM2), others merge the space into ``" 5"``. The ids
are derived by tokenizing the rendered prompt followed by each digit and taking the last token; the prompt
is what precedes it, which must be the same for all five digits (it ends with "Score: " in the first case
and with "Score:" in the second). A tokenizer that merges some digits with the space and not others, or
that does not end the text with a single token holding exactly the digit, is refused with a ``ValueError``.

What is rated: the FIRST assistant turn of each conversation (the answer) and the user turn(s) before it
(the instruction), as the paper rates single (instruction, output) pairs. Rows without an assistant turn
or without a user turn before it get NaN scores, counted in ``out.attrs["n_unscorable"]``.

Long rows: when the rendered prompt exceeds ``max_length`` tokens, the ANSWER is shortened from its end
(then, if needed, the instruction), so that the rating instructions and "Score: " always stay in the
window (the engine's own left cut would drop the rating scale first). Shortened rows are counted in
``out.attrs["n_truncated"]``.

The forward passes go through ``next_token.candidate_logprobs`` (batched, length-sorted, LM head only at
the last position; the fixed text every rating prompt starts with is run once and its key/value cache
reused by every batch). The scorer accepts ``cache`` for the uniform scorer signature; the shared loss cache
stores answer losses, and this scorer reads a next-token distribution instead, so it does not consult it.

``iterate_self_curation`` is the paper's iteration: rate with the base model, fine-tune a LoRA adapter
(``training.sft.finetune_lora``) on the rows rated ``>= threshold`` (plus optional seed conversations, as
the paper trains ``M_t`` on the seed data and ``A^(t-1)``), re-rate with the fine-tuned model. Like the
paper, every round fine-tunes a fresh base model, not the previous round's model. The paper also tags
seed and augmented examples with different system prompts; that tagging is left out here.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from instsel_assets.models import chat
from instsel_assets.registry import register_scorer
from instsel_assets.scoring.next_token import candidate_logprobs
from instsel_assets.selection.self_curation_threshold import DEFAULT_THRESHOLD, check_threshold, select_self_curation

log = logging.getLogger(__name__)

SELF_CURATION_PROMPT = (
    "Below is an instruction from an user and a candidate answer. Evaluate whether or not the answer is a "
    "good example of how AI Assistant should respond to the user's instruction. Please assign a score using "
    "the following 5-point scale:\n"
    "1: It means the answer is incomplete, vague, off-topic, controversial, or not exactly what the user "
    "asked for. For example, some content seems missing, numbered list does not start from the beginning, "
    "the opening sentence repeats user's question. Or the response is from another person's perspective "
    "with their personal experience (e.g. taken from blog posts), or looks like an answer from a forum. Or "
    "it contains promotional text, navigation text, or other irrelevant information.\n"
    "2: It means the answer addresses most of the asks from the user. It does not directly address the "
    "user's question. For example, it only provides a high-level methodology instead of the exact solution "
    "to user's question.\n"
    "3: It means the answer is helpful but not written by an AI Assistant. It addresses all the basic asks "
    "from the user. It is complete and self contained with the drawback that the response is not written "
    "from an AI assistant's perspective, but from other people's perspective. The content looks like an "
    "excerpt from a blog post, web page, or web search results. For example, it contains personal "
    "experience or opinion, mentions comments section, or share on social media, etc.\n"
    "4: It means the answer is written from an AI assistant's perspective with a clear focus of addressing "
    "the instruction. It provide a complete, clear, and comprehensive response to user's question or "
    "instruction without missing or irrelevant information. It is well organized, self-contained, and "
    "written in a helpful tone. It has minor room for improvement, e.g. more concise and focused.\n"
    "5: It means it is a perfect answer from an AI Assistant. It has a clear focus on being a helpful AI "
    "Assistant, where the response looks like intentionally written to address the user's question or "
    "instruction without any irrelevant sentences. The answer provides high quality content, demonstrating "
    "expert knowledge in the area, is very well written, logical, easy-to-follow, engaging and insightful.\n"
    "\n"
    "Please first provide a brief reasoning you used to derive the rating score, and then write "
    "\"Score: <rating>\" in the last line.\n"
    "\n"
    "{instruction}\n"
    "{answer}"
)
"""The paper's self-curation prompt (Humpback, Table 1); ``{instruction}`` and ``{answer}`` stand where the
paper writes ``<generated instruction>`` and ``<output>``."""

ANSWER_PREFIX = "Score: "
RATINGS = (1, 2, 3, 4, 5)
LOW_DIGIT_MASS = 0.5

SELF_CURATION_COLUMNS = ("self_curation_score", "self_curation_top", "digit_mass")
ROUND_SCORES_COLUMN = "self_curation_round_scores"

# How many times a too-long field is shortened and re-encoded: re-tokenising a cut text can differ by a
# token or two at the cut, so one pass may leave the prompt a little too long.
_SHORTEN_TRIES = 4


# ------------------------------------------------------------------------------------------ prompt building
def rated_pair(conversations: Sequence[Mapping[str, Any]] | None) -> tuple[str, str] | None:
    """``(instruction, answer)`` rated for a conversation: the user turn(s) before the first assistant turn
    (joined by a blank line) and that assistant turn; None when there is no such pair."""
    if conversations is None or len(conversations) == 0:
        return None
    messages = chat.as_messages(conversations)
    roles = [m["role"] for m in messages]
    if "assistant" not in roles:
        return None
    first = roles.index("assistant")
    users = [m["content"] for m in messages[:first] if m["role"] == "user"]
    if not users:
        return None
    return "\n\n".join(users), messages[first]["content"]


def rating_prompt_text(tokenizer, instruction: str, answer: str) -> str:
    """The rendered text the model continues: the prompt as a user turn, the generation prompt, "Score: "."""
    content = SELF_CURATION_PROMPT.format(instruction=instruction, answer=answer)
    return chat.render(tokenizer, [{"role": "user", "content": content}], add_generation_prompt=True) + ANSWER_PREFIX


def _ids(tokenizer, text: str) -> list[int]:
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def _token_strings(tokenizer, ids: Sequence[int]) -> list[str]:
    return [tokenizer.decode([i]) for i in ids]


def digit_token_ids(tokenizer) -> list[int]:
    """The token ids of the ratings "1".."5" in the position after "Score: " (see the module docstring).

    Raises ``ValueError`` when a rating is not exactly one token there, or when the five ratings do not
    share the same preceding tokens (a tokenizer that merges the space with some digits only).
    """
    probe = rating_prompt_text(tokenizer, "x", "y")
    prompts, ids = [], []
    for d in RATINGS:
        full = _ids(tokenizer, probe + str(d))
        last = full[-1] if full else None
        if last is None or tokenizer.decode([last]).strip() != str(d):
            raise ValueError(
                f"rating '{d}' is not exactly one token after {ANSWER_PREFIX!r} in this tokenizer: the text "
                f"ends with tokens {_token_strings(tokenizer, full[-3:])}")
        prompts.append(full[:-1])
        ids.append(last)
    for d, prompt in zip(RATINGS[1:], prompts[1:]):
        if prompt != prompts[0]:
            raise ValueError(
                f"ratings '1' and '{d}' are not single tokens after the same text in this tokenizer "
                f"({ANSWER_PREFIX!r} + '1' ends with {_token_strings(tokenizer, _ids(tokenizer, probe + '1')[-3:])}, "
                f"+ '{d}' ends with {_token_strings(tokenizer, _ids(tokenizer, probe + str(d))[-3:])}); one forward "
                f"pass cannot read all five ratings")
    return ids


def _encode(tokenizer, instruction: str, answer: str, digit_ids: Sequence[int], row_id: Any) -> list[int]:
    """Prompt ids of one pair: everything before the rating token (see ``digit_token_ids``)."""
    full = _ids(tokenizer, rating_prompt_text(tokenizer, instruction, answer) + str(RATINGS[0]))
    if not full or full[-1] != digit_ids[0]:
        raise ValueError(
            f"row {row_id!r}, field 'conversations': the rating prompt of this row does not end with the "
            f"rating token {digit_ids[0]} after {ANSWER_PREFIX!r} (it ends with "
            f"{_token_strings(tokenizer, full[-3:])}); its text changes how 'Score: 1' is tokenised")
    return full[:-1]


def _shorten(tokenizer, text: str, n_tokens: int) -> str:
    """``text`` without its last ``n_tokens`` tokens."""
    ids = _ids(tokenizer, text)
    return tokenizer.decode(ids[: max(len(ids) - n_tokens, 0)])


def rating_prompt_ids(tokenizer, instruction: str, answer: str, digit_ids: Sequence[int], max_length: int,
                      row_id: Any = None) -> tuple[list[int], bool]:
    """``(prompt_ids, shortened)`` for one pair, at most ``max_length`` tokens: the answer, then the
    instruction, is shortened from its end until the prompt fits (module docstring)."""
    ids = _encode(tokenizer, instruction, answer, digit_ids, row_id)
    if len(ids) <= max_length:
        return ids, False
    for field in ("answer", "instruction"):
        for _ in range(_SHORTEN_TRIES):
            over = len(ids) - max_length
            if over <= 0:
                return ids, True
            text = answer if field == "answer" else instruction
            if not text:
                break
            text = _shorten(tokenizer, text, over)
            if field == "answer":
                answer = text
            else:
                instruction = text
            ids = _encode(tokenizer, instruction, answer, digit_ids, row_id)
    if len(ids) > max_length:
        bare = len(_encode(tokenizer, "", "", digit_ids, row_id))
        raise ValueError(f"max_length={max_length} cannot hold the self-curation prompt of row {row_id!r} "
                         f"(the prompt alone is {bare} tokens)")
    return ids, True


# ------------------------------------------------------------------------------------------------ scoring
def expected_rating(logprobs: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(score, top, mass)`` from log-probabilities of the five ratings, shape ``(n, 5)``.

    ``mass`` = total probability on the five digits; ``score`` = ``sum_d d * p(d) / mass``; ``top`` = the
    digit of highest probability (the lower digit on an exact tie). Rows of NaN give NaN / -1 / NaN.
    """
    logprobs = np.asarray(logprobs, dtype=np.float64)
    if logprobs.ndim != 2 or logprobs.shape[1] != len(RATINGS):
        raise ValueError(f"logprobs must have shape (n, {len(RATINGS)}), got {logprobs.shape}")
    valid = np.isfinite(logprobs).all(axis=1)
    # Renormalise in log space (softmax over the five) so tiny masses do not underflow.
    shifted = logprobs[valid] - logprobs[valid].max(axis=1, keepdims=True)
    weights = np.exp(shifted)
    p = weights / weights.sum(axis=1, keepdims=True)
    score = np.full(len(logprobs), np.nan)
    top = np.full(len(logprobs), -1, dtype=np.int64)
    mass = np.full(len(logprobs), np.nan)
    score[valid] = p @ np.asarray(RATINGS, dtype=np.float64)
    top[valid] = np.asarray(RATINGS)[np.argmax(logprobs[valid], axis=1)]
    mass[valid] = np.exp(logprobs[valid]).sum(axis=1)
    return score, top, mass


def _check_positive_int(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


def _check_fraction(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.number)) or not 0.0 <= float(value) <= 1.0:
        raise ValueError(f"{name} must be a number in [0, 1], got {value!r}")
    return float(value)


@register_scorer(
    "self_curation",
    family="trainable-llm",
    paper="Li et al. 2023b, Self-Alignment with Instruction Backtranslation (Humpback), self-curation",
    summary="The model rates each (instruction, answer) pair 1-5 with the paper's self-curation prompt; "
            "expected rating from the next-token distribution after 'Score: ' (one forward pass), its "
            "argmax digit and the probability mass on the five digits.",
    writes=SELF_CURATION_COLUMNS,
)
def self_curation_scores(pool: pd.DataFrame, model, tokenizer, *, batch_size: int = 8, max_length: int = 1024,
                         progress: Callable[[int, int], None] | None = None, cache=None,
                         low_digit_mass: float = LOW_DIGIT_MASS) -> pd.DataFrame:
    """One row per pool row (same order): ``id`` and ``SELF_CURATION_COLUMNS``.

    ``pool`` needs ``id`` and ``conversations``. ``self_curation_top`` is a nullable integer (``<NA>`` for
    unscorable rows). ``out.attrs``: ``n_unscorable``, ``n_truncated`` (prompts shortened to fit
    ``max_length``), ``n_low_digit_mass`` (rows with ``digit_mass < low_digit_mass``), ``low_digit_mass``,
    ``digit_token_ids``. ``progress(done, total)`` counts scorable rows. ``cache`` is not consulted (module
    docstring).
    """
    batch_size = _check_positive_int("batch_size", batch_size)
    max_length = _check_positive_int("max_length", max_length)
    low_digit_mass = _check_fraction("low_digit_mass", low_digit_mass)
    for column in ("id", "conversations"):
        if column not in pool.columns:
            raise ValueError(f"self_curation needs column {column!r}; pool has {list(pool.columns)}")
    n = len(pool)
    digit_ids = digit_token_ids(tokenizer)
    prompts: list[list[int]] = []
    owners: list[int] = []
    n_truncated = 0
    for i, (row_id, conv) in enumerate(zip(pool["id"].tolist(), pool["conversations"].tolist())):
        try:
            pair = rated_pair(conv)
        except (KeyError, TypeError) as exc:
            raise ValueError(f"row {row_id!r}, field 'conversations': turns must be mappings with 'role' and "
                             f"'content' ({type(exc).__name__}: {exc})") from exc
        if pair is None:
            continue
        ids, shortened = rating_prompt_ids(tokenizer, pair[0], pair[1], digit_ids, max_length, row_id)
        prompts.append(ids)
        owners.append(i)
        n_truncated += int(shortened)
    logprobs = np.full((n, len(RATINGS)), np.nan)
    if owners:
        logprobs[np.asarray(owners)] = candidate_logprobs(model, tokenizer, prompts, digit_ids,
                                                          batch_size=batch_size, max_length=max_length,
                                                          progress=progress)
    score, top, mass = expected_rating(logprobs)
    out = pd.DataFrame({
        "id": pool["id"].to_numpy(),
        "self_curation_score": score,
        "self_curation_top": pd.array([int(d) if d > 0 else pd.NA for d in top], dtype="Int64"),
        "digit_mass": mass,
    })
    low = np.isfinite(mass) & (mass < low_digit_mass)
    out.attrs["n_unscorable"] = int(n - len(owners))
    out.attrs["n_truncated"] = int(n_truncated)
    out.attrs["n_low_digit_mass"] = int(low.sum())
    out.attrs["low_digit_mass"] = low_digit_mass
    out.attrs["digit_token_ids"] = [int(i) for i in digit_ids]
    if low.any():
        examples = ", ".join(repr(x) for x in out["id"][low].head(5))
        log.warning("self-curation: %d of %d rated rows put less than %.2f probability on the ratings 1-5 after "
                    "%r (e.g. %s); their expected scores are renormalised over little mass", int(low.sum()),
                    len(owners), low_digit_mass, ANSWER_PREFIX, examples)
    return out


# -------------------------------------------------------------------------------------------- iteration
def iterate_self_curation(pool: pd.DataFrame, model_factory: Callable[[], Any], tokenizer, *, iterations: int = 2,
                          threshold: float = DEFAULT_THRESHOLD, train_config, out_dir: str | Path,
                          base_model_id: str, seed_conversations: Sequence[Sequence[Mapping[str, Any]]] = (),
                          batch_size: int = 8, max_length: int = 1024,
                          progress: Callable[[int, int], None] | None = None,
                          train_progress: Callable[[dict[str, Any]], None] | None = None,
                          low_digit_mass: float = LOW_DIGIT_MASS) -> pd.DataFrame:
    """Iterative self-curation: ``iterations`` rating rounds (the paper's 2 by default).

    Round 1 rates ``pool`` with ``model_factory()``. Round ``t > 1`` fine-tunes a LoRA adapter with
    ``finetune_lora(fresh base, tokenizer, seed_conversations + conversations rated >= threshold in round
    t-1, out_dir / f"round{t}", train_config, base_model_id=...)`` and re-rates ``pool`` with that model.
    ``model_factory()`` must return a NEW base model on every call (``finetune_lora`` takes ownership of it;
    the round-1 rating model is handed to the first fine-tuning, so it is loaded once less).

    Returns the last completed round's ``self_curation_scores`` plus ``self_curation_round_scores`` (the
    list of every round's score per row). ``out.attrs``: the last round's counts, ``iterations_completed``,
    ``rounds`` (per round: ``round``, ``n_kept`` at ``threshold``, ``n_trained``, ``checkpoint_dir``,
    ``first_loss``, ``last_loss``, ``n_low_digit_mass``, ``n_unscorable``) and ``stopped_early`` (a reason,
    or None). When no row reaches ``threshold`` and there are no seed conversations, there is nothing to
    fine-tune on: the iteration stops there, says so in ``stopped_early`` and logs a warning.
    """
    from instsel_assets.training.sft import SFTConfig, finetune_lora

    iterations = _check_positive_int("iterations", iterations)
    threshold = check_threshold(threshold)
    if not isinstance(train_config, SFTConfig):
        raise ValueError(f"train_config must be an SFTConfig, got {type(train_config).__name__}")
    train_config.validate()
    out_dir = Path(out_dir)
    seed_conversations = list(seed_conversations)
    conversations = pool["conversations"].tolist() if "conversations" in pool.columns else []

    def rate(model) -> pd.DataFrame:
        return self_curation_scores(pool, model, tokenizer, batch_size=batch_size, max_length=max_length,
                                    progress=progress, low_digit_mass=low_digit_mass)

    model = model_factory()
    base_untouched = True
    scores = rate(model)
    history = [scores["self_curation_score"].to_numpy(dtype=float)]
    rounds: list[dict[str, Any]] = [_round_record(1, scores, threshold)]
    stopped_early = None
    for t in range(2, iterations + 1):
        # The kept set is exactly what the ``self_curation`` selector keeps at this threshold.
        kept_ids = set(select_self_curation(scores[["id", "self_curation_score"]], len(scores), threshold=threshold))
        kept = [i for i, row_id in enumerate(scores["id"].astype(str)) if row_id in kept_ids]
        train_set = seed_conversations + [conversations[i] for i in kept]
        if not train_set:
            stopped_early = (f"round {t - 1} rated no row >= {threshold} and there are no seed conversations: "
                             f"nothing to fine-tune on")
            log.warning("self-curation iteration stopped: %s", stopped_early)
            break
        base = model if base_untouched else None
        model = None  # the previous round's model is no longer needed: free it before loading a new base
        if base is None:
            base = model_factory()
        result = finetune_lora(base, tokenizer, train_set, out_dir / f"round{t}", train_config,
                               base_model_id=base_model_id, progress=train_progress,
                               manifest={"selection_method": "self_curation", "self_curation_round": t,
                                         "threshold": float(threshold), "n_kept": int(len(kept)),
                                         "n_seed": len(seed_conversations)})
        model, base_untouched = result.model, False
        scores = rate(model)
        history.append(scores["self_curation_score"].to_numpy(dtype=float))
        rounds.append(_round_record(t, scores, threshold, result=result, n_trained=len(train_set)))
    out = scores.copy()
    out[ROUND_SCORES_COLUMN] = [list(map(float, row)) for row in np.stack(history, axis=1)] if len(out) else []
    out.attrs = dict(scores.attrs)
    out.attrs.update({"iterations_completed": len(history), "threshold": float(threshold), "rounds": rounds,
                      "stopped_early": stopped_early})
    return out


def _round_record(t: int, scores: pd.DataFrame, threshold: float, *, result=None, n_trained: int = 0) -> dict[str, Any]:
    return {
        "round": t,
        "n_kept": int((scores["self_curation_score"].to_numpy(dtype=float) >= threshold).sum()),
        "n_trained": int(n_trained),
        "checkpoint_dir": str(result.out_dir) if result is not None else None,
        "first_loss": float(result.first_loss) if result is not None else None,
        "last_loss": float(result.last_loss) if result is not None else None,
        "n_low_digit_mass": int(scores.attrs["n_low_digit_mass"]),
        "n_unscorable": int(scores.attrs["n_unscorable"]),
    }
