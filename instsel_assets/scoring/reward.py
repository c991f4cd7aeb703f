"""Reward score of each (instruction, response) pair: MoDS's quality step and a Family 1 indicator.

MoDS (Du et al. 2023) scores every pair with a reward model and keeps the pairs above a threshold (its
high-quality set D_h); it scores the answers of its seed-trained model with the same reward model to find
the "necessary" instructions. The reward score is also one of the indicators every metric-set method reads
(docs/METHODS.md, Family 1).

Two paths, chosen from the model given to the scorer (``scoring_mode``):

**Reward model** (the real path): any ``AutoModelForSequenceClassification`` the user configures, a Hugging
Face id or a local directory (``load_reward_model``; e.g. OpenAssistant's deberta reward models, or a
decoder reward model with a chat template). Each pair is encoded with the tokenizer's OWN chat template when
it has one (a user turn with the instruction, an assistant turn with the response: how chat reward models
are trained), otherwise as a plain text pair ``tokenizer(question, answer)`` with the tokenizer's special
tokens (how OpenAssistant's deberta reward models take their input). ``reward_score`` is the model's logit:
with one label the only one (the usual reward head), with several the one named by ``label_index``.

- Pairs are sorted by length (longest first), run ``batch_size`` at a time, and put back in input order.
- Batches are always padded on the RIGHT with an attention mask, whatever the tokenizer's ``padding_side``:
  an encoder classifier reads its first token ([CLS]), which left padding would make a pad, and a decoder
  classifier finds its last non-pad token either way. Right padding keeps every real token at its true
  position, so a pair gets the same score alone or in a batch (up to float rounding).
- The padding id is the model config's ``pad_token_id`` (what a decoder classifier looks for to find the
  last real token); a model with none is run one pair per pass, where no padding is needed.
- ``torch.inference_mode()``, the model's own dtype; the logits are read in fp32.

**Stand-in** (the embedded default, because no reward model can be loaded offline here): with a causal LM
(by default the packaged SmolLM2-135M-Instruct), the model rates how helpful the response is on 1-5 with
``STAND_IN_PROMPT``; the prompt is a user turn of the model's chat template and the assistant turn is
started with "Score: ", so one forward pass gives the next-token distribution over the digits "1".."5" and
``reward_score`` is the expected rating ``sum_d d * p(d)`` (``p`` renormalised over the five digits). The
digit tokens, the batched forward pass and the expected rating are self-curation's
(``self_curation.digit_token_ids``, ``next_token.candidate_logprobs``, ``self_curation.expected_rating``);
only the prompt differs: it asks for helpfulness in a few lines instead of Humpback's long rubric. The
``reward_model`` column then says ``"stand-in: packaged SmolLM2 rating, not a reward model"`` (or names the
other causal LM given), so a table of stand-in scores is never mistaken for a reward model's. A 135M model's
rating is a weak quality signal; configure a real reward model for MoDS.

Scales differ: a reward model's logit is unbounded and only its order means something; the stand-in's is in
[1, 5]. Thresholds (MoDS's D_h) must be chosen per model.

What is scored: the user turn(s) before the first assistant turn of ``conversations`` (joined by a blank
line; for a flat row ``instruction`` plus ``"\\n\\n" + input``) and that first assistant turn. Rows without
such a pair get NaN, counted in ``out.attrs["n_unscorable"]``. A pair longer than ``max_length`` tokens
has its response, then its instruction, shortened from the end until it fits (the end of the encoding,
where a decoder reads its score, and the stand-in's rating question always stay); such rows are counted in
``out.attrs["n_truncated"]``.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from instsel_assets.features.text_stats import flat_text, is_missing
from instsel_assets.models import chat
from instsel_assets.models.loading import PACKAGED_SMOLLM2, packaged_cache_dir, pick_device, pick_dtype
from instsel_assets.registry import register_scorer
from instsel_assets.scoring.loss_engine import _input_device, attention_backends
from instsel_assets.scoring.next_token import candidate_logprobs
from instsel_assets.scoring.self_curation import (
    ANSWER_PREFIX,
    LOW_DIGIT_MASS,
    RATINGS,
    digit_token_ids,
    expected_rating,
    rated_pair,
)

log = logging.getLogger(__name__)

REWARD_COLUMNS = ("reward_score", "reward_model")
DEFAULT_REWARD_MODEL = PACKAGED_SMOLLM2
STAND_IN_NAME = "stand-in: packaged SmolLM2 rating, not a reward model"
MODES = ("auto", "reward_model", "stand_in")

STAND_IN_PROMPT = (
    "Below is an instruction from a user and a response from an AI assistant. Rate how helpful the response "
    "is to the user on a scale of 1 to 5:\n"
    "1: unhelpful: wrong, off-topic, or does not answer the instruction.\n"
    "2: partly helpful: addresses some of the instruction, with major gaps or errors.\n"
    "3: helpful: answers the instruction, but is incomplete, imprecise or poorly written.\n"
    "4: very helpful: correct and complete, with minor room for improvement.\n"
    "5: perfect: correct, complete, clear and well written.\n"
    "Reply with \"Score: <rating>\".\n"
    "\n"
    "Instruction:\n{instruction}\n"
    "\n"
    "Response:\n{response}"
)
"""The stand-in's rating prompt; ``{instruction}`` and ``{response}`` are the pair."""

# How many times a too-long field is shortened and re-encoded (re-tokenising a cut text can differ by a
# token or two at the cut, so one pass may leave the encoding a little too long).
_SHORTEN_TRIES = 4


# ------------------------------------------------------------------------------------------------ loading
def load_reward_model(name_or_path: str = DEFAULT_REWARD_MODEL, *, dtype: str | torch.dtype = "auto",
                      device: str | torch.device = "auto"):
    """``(model, tokenizer)`` for ``reward_scores``, in eval mode on ``pick_device(device)``.

    ``PACKAGED_SMOLLM2`` (the default) loads the packaged causal LM for the stand-in rating
    (``loading.load_causal_lm``). Anything else is a Hugging Face id or local directory loaded with
    ``AutoModelForSequenceClassification`` and ``AutoTokenizer``; a tokenizer without a pad token gets its
    eos token as pad (or a new ``<|pad|>`` token, with the embeddings resized), and a config without
    ``pad_token_id`` gets the tokenizer's, so batches can be padded.
    """
    from instsel_assets.models.loading import load_causal_lm, resolve_model_path

    if name_or_path == PACKAGED_SMOLLM2:
        return load_causal_lm(name_or_path, dtype=dtype, device=device)
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    dev = pick_device(device)
    source = resolve_model_path(name_or_path)
    model = AutoModelForSequenceClassification.from_pretrained(source, dtype=pick_dtype(dev, dtype))
    tokenizer = AutoTokenizer.from_pretrained(source)
    if tokenizer.pad_token_id is None:
        if tokenizer.eos_token is not None:
            tokenizer.pad_token = tokenizer.eos_token
        else:
            tokenizer.add_special_tokens({"pad_token": "<|pad|>"})
    if len(tokenizer) > model.get_input_embeddings().weight.shape[0]:
        model.resize_token_embeddings(len(tokenizer))
    if _config_pad_id(model) is None:
        model.config.pad_token_id = tokenizer.pad_token_id
    model.to(dev)
    model.eval()
    return model, tokenizer


# ------------------------------------------------------------------------------------------------ helpers
def _base(model):
    get_base = getattr(model, "get_base_model", None)  # peft
    return get_base() if callable(get_base) else model


def is_sequence_classifier(model) -> bool:
    """True for a ``...ForSequenceClassification`` model (also inside a peft wrapper)."""
    return type(_base(model)).__name__.endswith("ForSequenceClassification")


def scoring_mode(model, mode: str = "auto") -> str:
    """``"reward_model"`` or ``"stand_in"``. ``"auto"``: a sequence classifier is a reward model, a model
    with an LM head is rated by the stand-in prompt; anything else is refused."""
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    if mode != "auto":
        return mode
    if is_sequence_classifier(model):
        return "reward_model"
    if getattr(_base(model), "get_output_embeddings", lambda: None)() is not None:
        return "stand_in"
    raise ValueError(f"{type(_base(model)).__name__} is neither a sequence classifier (reward model) nor a causal "
                     f"LM (stand-in rating)")


def _config_pad_id(model) -> int | None:
    cfg = _base(model).config
    cfg = cfg.get_text_config() if hasattr(cfg, "get_text_config") else cfg
    return getattr(cfg, "pad_token_id", None)


def _model_name(model, model_name: str | None) -> str:
    if model_name:
        return str(model_name)
    name = getattr(_base(model).config, "name_or_path", "") or ""
    return str(name) or type(_base(model)).__name__


def stand_in_label(model, model_name: str | None = None) -> str:
    """The ``reward_model`` value of stand-in scores: :data:`STAND_IN_NAME` for the packaged SmolLM2, else
    ``"stand-in: <model> rating, not a reward model"``."""
    name = _model_name(model, model_name)
    if name == PACKAGED_SMOLLM2:
        return STAND_IN_NAME
    try:
        if Path(name).resolve() == packaged_cache_dir(PACKAGED_SMOLLM2).resolve():
            return STAND_IN_NAME
    except (OSError, ValueError):
        pass
    return f"stand-in: {name} rating, not a reward model"


def reward_pair(row: Mapping[str, Any]) -> tuple[str, str] | None:
    """``(instruction, response)`` of a pool row (module docstring), or None when it has no such pair."""
    conv = row.get("conversations")
    if not is_missing(conv) and len(conv) > 0:
        try:
            return rated_pair(conv)
        except (KeyError, TypeError) as exc:
            raise ValueError(f"row {row.get('id')!r}, field 'conversations': turns must be mappings with 'role' "
                             f"and 'content' ({type(exc).__name__}: {exc})") from exc
    instruction, inp, output = flat_text(row, "instruction"), flat_text(row, "input"), flat_text(row, "output")
    if not instruction or not output:
        return None
    return instruction + ("\n\n" + inp if inp else ""), output


def _ids(tokenizer, text: str) -> list[int]:
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def _shorten(tokenizer, text: str, n_tokens: int) -> str:
    ids = _ids(tokenizer, text)
    return tokenizer.decode(ids[: max(len(ids) - n_tokens, 0)])


def fit_pair(encode: Callable[[str, str], dict[str, list[int]]], tokenizer, instruction: str, response: str,
             max_length: int, row_id: Any = None) -> tuple[dict[str, list[int]], bool]:
    """``(encoding, shortened)``: ``encode(instruction, response)``, with the response and then the
    instruction shortened from their ends until ``input_ids`` holds at most ``max_length`` tokens."""
    enc = encode(instruction, response)
    if len(enc["input_ids"]) <= max_length:
        return enc, False
    texts = {"response": response, "instruction": instruction}
    for field in ("response", "instruction"):
        for _ in range(_SHORTEN_TRIES):
            over = len(enc["input_ids"]) - max_length
            if over <= 0:
                return enc, True
            if not texts[field]:
                break
            texts[field] = _shorten(tokenizer, texts[field], over)
            enc = encode(texts["instruction"], texts["response"])
    if len(enc["input_ids"]) > max_length:
        bare = len(encode("", "")["input_ids"])
        raise ValueError(f"max_length={max_length} cannot hold row {row_id!r} (the encoding of an empty pair alone "
                         f"is {bare} tokens)")
    return enc, True


def _check_positive_int(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


# ------------------------------------------------------------------------------------------------ reward model
def classifier_encoder(tokenizer) -> tuple[Callable[[str, str], dict[str, list[int]]], str]:
    """``(encode, how)`` for a reward model's tokenizer: ``how`` is ``"chat_template"`` when the tokenizer has
    its own template, else ``"text_pair"`` (module docstring)."""
    if getattr(tokenizer, "chat_template", None):
        def encode(instruction: str, response: str) -> dict[str, list[int]]:
            text = tokenizer.apply_chat_template(
                [{"role": "user", "content": instruction}, {"role": "assistant", "content": response}],
                tokenize=False)
            return {"input_ids": _ids(tokenizer, text)}

        return encode, "chat_template"

    def encode_pair(instruction: str, response: str) -> dict[str, list[int]]:
        enc = tokenizer(instruction, response)
        out = {"input_ids": list(enc["input_ids"])}
        if "token_type_ids" in enc:
            out["token_type_ids"] = list(enc["token_type_ids"])
        return out

    return encode_pair, "text_pair"


def _forward_accepts(model, name: str) -> bool:
    try:
        return name in inspect.signature(model.forward).parameters
    except (TypeError, ValueError):
        return False


def classifier_logits(model, encodings: Sequence[Mapping[str, Sequence[int]]], *, batch_size: int = 8,
                      pad_token_id: int | None = None,
                      progress: Callable[[int, int], None] | None = None) -> np.ndarray:
    """Logits ``(n, num_labels)`` (float64) of a sequence classifier for pre-tokenised inputs, in input order.

    Length-sorted batches of ``batch_size``, right padding with ``pad_token_id`` (default: the model
    config's) and an attention mask; ``token_type_ids`` are passed when every encoding has them and the
    model takes them. Without a pad id, every input runs alone.
    """
    batch_size = _check_positive_int("batch_size", batch_size)
    n = len(encodings)
    pad_id = _config_pad_id(model) if pad_token_id is None else pad_token_id
    if pad_id is None:
        batch_size = 1
        pad_id = 0
    num_labels = int(getattr(_base(model).config, "num_labels", 1))
    out = np.full((n, num_labels), np.nan, dtype=np.float64)
    if progress is not None:
        progress(0, n)
    if n == 0:
        return out
    for i, enc in enumerate(encodings):
        if len(enc["input_ids"]) == 0:
            raise ValueError(f"encoding {i} is empty")
    use_types = _forward_accepts(model, "token_type_ids") and all("token_type_ids" in e for e in encodings)
    device = _input_device(model)
    order = sorted(range(n), key=lambda i: (-len(encodings[i]["input_ids"]), i))
    was_training = model.training
    model.eval()
    done = 0
    try:
        with torch.inference_mode(), attention_backends(device):
            for b in range(0, n, batch_size):
                batch = order[b: b + batch_size]
                width = max(len(encodings[i]["input_ids"]) for i in batch)
                input_ids = torch.full((len(batch), width), int(pad_id), dtype=torch.long)
                attention_mask = torch.zeros((len(batch), width), dtype=torch.long)
                token_types = torch.zeros((len(batch), width), dtype=torch.long)
                for r, i in enumerate(batch):
                    ids = encodings[i]["input_ids"]
                    input_ids[r, : len(ids)] = torch.tensor(list(ids), dtype=torch.long)
                    attention_mask[r, : len(ids)] = 1
                    if use_types:
                        token_types[r, : len(ids)] = torch.tensor(list(encodings[i]["token_type_ids"]),
                                                                  dtype=torch.long)
                kwargs = {"input_ids": input_ids.to(device), "attention_mask": attention_mask.to(device)}
                if use_types:
                    kwargs["token_type_ids"] = token_types.to(device)
                logits = model(**kwargs).logits
                out[batch] = logits.float().reshape(len(batch), -1).cpu().numpy()
                done += len(batch)
                if progress is not None:
                    progress(done, n)
    finally:
        if was_training:
            model.train()
    return out


# ------------------------------------------------------------------------------------------------ stand-in
def stand_in_prompt_text(tokenizer, instruction: str, response: str) -> str:
    """The rendered text the causal LM continues: the prompt as a user turn, the generation prompt, "Score: "."""
    content = STAND_IN_PROMPT.format(instruction=instruction, response=response)
    return chat.render(tokenizer, [{"role": "user", "content": content}], add_generation_prompt=True) + ANSWER_PREFIX


def stand_in_encoder(tokenizer, digit_ids: Sequence[int]) -> Callable[[str, str], dict[str, list[int]]]:
    """``encode(instruction, response)``: the stand-in prompt's ids, everything before the rating token."""
    def encode(instruction: str, response: str) -> dict[str, list[int]]:
        full = _ids(tokenizer, stand_in_prompt_text(tokenizer, instruction, response) + str(RATINGS[0]))
        if not full or full[-1] != digit_ids[0]:
            raise ValueError(f"the stand-in rating prompt does not end with the rating token {digit_ids[0]} after "
                             f"{ANSWER_PREFIX!r} for this pair; its text changes how 'Score: 1' is tokenised")
        return {"input_ids": full[:-1]}

    return encode


# ------------------------------------------------------------------------------------------------ scorer
@register_scorer(
    "reward_score",
    family="small-model",
    paper="Du et al. 2023, MoDS: Model-oriented Data Selection (reward-model quality, steps 1 and 3); "
          "reward-score indicator of docs/METHODS.md Family 1",
    summary="Reward model score of each (instruction, response) pair from any configured "
            "AutoModelForSequenceClassification (chat template when the tokenizer has one, else a text pair). "
            "Default, as no reward model is available offline: " + STAND_IN_NAME + " (SmolLM2's expected "
            "1-5 helpfulness rating from the probabilities of the digit tokens).",
    writes=REWARD_COLUMNS,
)
def reward_scores(pool: pd.DataFrame, model, tokenizer, *, model_name: str | None = None, mode: str = "auto",
                  batch_size: int = 8, max_length: int = 1024, label_index: int | None = None,
                  progress: Callable[[int, int], None] | None = None, cache=None,
                  low_digit_mass: float = LOW_DIGIT_MASS) -> pd.DataFrame:
    """One row per pool row (same order): ``id``, ``reward_score`` (float64, NaN when unscorable) and
    ``reward_model`` (the model's name, or the stand-in label of :func:`stand_in_label`).

    ``model`` / ``tokenizer``: a sequence classifier (reward model) or a causal LM (stand-in), as returned by
    :func:`load_reward_model`; ``mode`` forces a path (module docstring). ``model_name``: what the
    ``reward_model`` column names (default: the model config's ``name_or_path``). ``label_index``: the logit
    read from a classifier with several labels (required then). ``cache`` is accepted for the uniform scorer
    signature and not consulted (the loss cache stores answer losses, not these scores).

    ``out.attrs``: ``mode``, ``reward_model``, ``encoding`` (``chat_template``, ``text_pair`` or
    ``stand_in_prompt``), ``n_unscorable``, ``n_truncated``; for the stand-in also ``n_low_digit_mass`` (rows
    with under ``low_digit_mass`` probability on the five digits) and ``digit_token_ids``.
    """
    batch_size = _check_positive_int("batch_size", batch_size)
    max_length = _check_positive_int("max_length", max_length)
    if "id" not in pool.columns:
        raise ValueError(f"reward_score needs column 'id'; pool has {list(pool.columns)}")
    if "conversations" not in pool.columns and not {"instruction", "output"} <= set(pool.columns):
        raise ValueError("reward_score needs column 'conversations' or columns 'instruction' and 'output'; "
                         f"pool has {list(pool.columns)}")
    path = scoring_mode(model, mode)
    n = len(pool)
    attrs: dict[str, Any] = {"mode": path}
    if path == "reward_model":
        num_labels = int(getattr(_base(model).config, "num_labels", 1))
        if label_index is None and num_labels != 1:
            labels = getattr(_base(model).config, "id2label", None)
            raise ValueError(f"the reward model has {num_labels} labels ({labels}); pass label_index to choose the "
                             f"logit that is the reward")
        column = 0 if label_index is None else int(label_index)
        if not 0 <= column < num_labels:
            raise ValueError(f"label_index {label_index} is outside the model's {num_labels} labels")
        encode, how = classifier_encoder(tokenizer)
        name = _model_name(model, model_name)
        attrs["label_index"] = column
    else:
        digit_ids = digit_token_ids(tokenizer)
        encode, how = stand_in_encoder(tokenizer, digit_ids), "stand_in_prompt"
        name = stand_in_label(model, model_name)
        attrs["digit_token_ids"] = [int(i) for i in digit_ids]

    cols = list(pool.columns)
    encodings: list[dict[str, list[int]]] = []
    owners: list[int] = []
    n_truncated = 0
    for i, values in enumerate(pool.itertuples(index=False, name=None)):
        row = dict(zip(cols, values))
        pair = reward_pair(row)
        if pair is None:
            continue
        enc, shortened = fit_pair(encode, tokenizer, pair[0], pair[1], max_length, row.get("id"))
        encodings.append(enc)
        owners.append(i)
        n_truncated += int(shortened)

    score = np.full(n, np.nan)
    if path == "reward_model":
        if owners:
            logits = classifier_logits(model, encodings, batch_size=batch_size, progress=progress)
            score[np.asarray(owners)] = logits[:, column]
    else:
        logprobs = np.full((n, len(RATINGS)), np.nan)
        if owners:
            logprobs[np.asarray(owners)] = candidate_logprobs(
                model, tokenizer, [e["input_ids"] for e in encodings], digit_ids, batch_size=batch_size,
                max_length=max_length, progress=progress)
        score, _, mass = expected_rating(logprobs)
        low = np.isfinite(mass) & (mass < low_digit_mass)
        attrs["n_low_digit_mass"] = int(low.sum())
        attrs["low_digit_mass"] = float(low_digit_mass)
        if low.any():
            log.warning("reward stand-in: %d of %d rated rows put less than %.2f probability on the ratings 1-5",
                        int(low.sum()), len(owners), low_digit_mass)
    out = pd.DataFrame({
        "id": pool["id"].to_numpy(),
        "reward_score": score.astype(np.float64),
        "reward_model": np.full(n, name, dtype=object),
    })
    attrs.update({"reward_model": name, "encoding": how, "n_unscorable": int(n - len(owners)),
                  "n_truncated": int(n_truncated)})
    out.attrs.update(attrs)
    return out
