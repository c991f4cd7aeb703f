"""TEGIT-style task discriminator (Chen et al. 2023c, TeGit: text-grounded task design).

TeGit generates (instruction, input, output) tasks from human-written documents and filters the noise
with a discriminator: a language model trained to judge whether a generated task is a good training
task; what the discriminator accepts is kept (docs/METHODS.md, Family 2). This module is that
discriminator, made general: a binary classifier "is this (instruction, response) a good training
example?" fine-tuned from any causal LM, trained on whatever labelled judgements the user has, and
applied to the pool as the score column ``tegit_good_prob`` (the ``tegit`` selector keeps
``tegit_good_prob >= 0.5``).

The model (:class:`Discriminator`):

- the LM's decoder (no LM head: the vocabulary projection is never computed) with LoRA adapters on the
  attention projections (``q_proj, k_proj, v_proj, o_proj`` by default, through ``peft`` as
  ``training.sft`` does), plus a trainable linear head ``hidden -> 1`` (a logit) in float32;
- pooling: the hidden state of the LAST real token. In a causal decoder only the last position has
  attended to the whole conversation, so it alone summarises instruction and response together (the
  choice of transformers' ``*ForSequenceClassification`` and of reward models); a mean over positions
  would mostly average states that have not seen the response yet. Sequences are right-padded with an
  attention mask, so the last real token of a row is at ``sum(attention_mask) - 1``;
- binary cross-entropy on the logit, AdamW (LoRA and head with their own learning rates), linear
  warm-up/decay, gradient clipping, seeded (LoRA initialisation, dropout, example order, split); the head
  starts at zero, so every example starts at probability 0.5. Training batches group examples of
  similar length (``DiscriminatorConfig.group_by_length``), since a batch costs as much as its longest
  example times its size.

Inputs: the conversation up to and including its FIRST assistant turn (as the IFD scorer), rendered
with the model's chat template by ``chat.encode_for_training``. When it exceeds ``max_length`` tokens it
is cut as the loss engine cuts a (prefix, answer) pair (``loss_engine.fit_to_length``): the prefix
(template system prompt, instruction) from the LEFT first, then the answer on the right; the response,
which is what is judged, is kept whole whenever it fits.

Training data (a deliberate difference from the paper, which trains its discriminator for the tasks
its own generator writes; those labels are not available here): any labelled set of conversations:

- :func:`labelled_pairs_from_llmbar`: LLMBar preference pairs (bundled: ``data/labels/llmbar_natural``);
  the human-preferred output of each pair is a positive, the other a negative, and both halves share
  a ``group`` so that a train/validation split never separates them. The judgement is relative (the
  better of two answers to the same input), so the absolute labels are noisy: a rejected answer may
  still be acceptable. The pairwise accuracy below is the metric that matches the labels;
- :func:`labelled_from_scores`: any judged or curated table (e.g. AlpaGasus judge scores), positive
  when ``score >= threshold``.

:func:`train_discriminator` holds out whole groups (``validation_fraction``, seeded) and reports accuracy,
ROC AUC and, where a held-out group has both labels, pairwise accuracy (the preferred half scored higher:
LLMBar's own metric) on them; the directory it writes holds the LoRA adapter, the head, the tokenizer
and a JSON manifest, never the full model weights. :func:`load_discriminator` re-creates it on top of a
freshly loaded base model.
"""

from __future__ import annotations

import json
import logging
import math
import numbers
import os
import shutil
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from instsel_assets.models import chat
from instsel_assets.registry import register_scorer
from instsel_assets.scoring.loss_engine import fit_to_length
from instsel_assets.training.checkpoint import replace_directory
from instsel_assets.training.sft import (adamw_with_schedule, autocast_dtype_for, batch_indices, count_trainable,
                                        optimizer_step)

log = logging.getLogger(__name__)

GOOD_PROB_COLUMN = "tegit_good_prob"
TEGIT_COLUMNS = (GOOD_PROB_COLUMN,)

MANIFEST_NAME = "tegit_discriminator.json"
HEAD_WEIGHTS = "discriminator_head.safetensors"
ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
FORMAT = "instsel-tegit-discriminator"
FORMAT_VERSION = 1
POOLING = "last_token"

LLMBAR_FIELDS = ("input", "output_1", "output_2", "label")


# ---------------------------------------------------------------------------------------------- configuration
@dataclass
class DiscriminatorConfig:
    """Options of one discriminator training run (all recorded in the manifest)."""

    max_steps: int = 100
    """Optimizer steps; batches come from seeded shuffled epochs over the training rows (cycled)."""
    batch_size: int = 8
    """Examples per optimizer step; also the batch size of the validation pass."""
    learning_rate: float = 2e-4
    """Peak AdamW learning rate of the LoRA parameters."""
    head_learning_rate: float = 1e-3
    """Peak AdamW learning rate of the linear head (it starts at zero and has no pretrained value, so it
    gets a larger rate than the adapters)."""
    max_length: int = 512
    """Maximum tokens per example (chat template included); longer ones are cut as the module docstring says."""
    lora_r: int = 8
    lora_alpha: int = 16
    lora_dropout: float = 0.05
    target_modules: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "o_proj")
    """Modules that receive a LoRA adapter: the attention projections of Llama-style models."""
    validation_fraction: float = 0.2
    """Share of the label GROUPS held out for validation (rounded, at least one group when > 0); 0 trains
    on everything and reports no validation metrics."""
    seed: int = 0
    """Seed of the split, the LoRA initialisation, the dropout masks and the example order."""
    warmup_steps: int = 0
    weight_decay: float = 0.0
    grad_clip: float = 1.0
    """Maximum global gradient L2 norm; 0 or less disables clipping."""
    group_by_length: bool = True
    """Batch examples of similar length together (:func:`length_grouped_batches`): a batch is padded to
    its longest example, and on LLMBar-like data (median ~100 tokens, a tail to 800) random batches are
    mostly padding. False: plain seeded shuffled batches (``training.sft.batch_indices``)."""
    log_every: int = 5
    """Call ``progress`` every this many steps (and after the last one)."""
    precision: str = "auto"
    """``"auto"`` (bf16 autocast where the hardware computes bf16 natively), ``"float32"`` or ``"bfloat16"``:
    as ``SFTConfig.precision``. The head always runs in float32."""

    def validate(self) -> None:
        def positive_int(name: str, minimum: int = 1) -> None:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
                raise ValueError(f"DiscriminatorConfig.{name} must be an integer >= {minimum}, got {value!r}")

        for name in ("max_steps", "batch_size", "lora_r", "log_every"):
            positive_int(name)
        positive_int("max_length", 2)
        positive_int("warmup_steps", 0)
        for name in ("learning_rate", "head_learning_rate"):
            value = getattr(self, name)
            if not (isinstance(value, numbers.Real) and math.isfinite(value) and value > 0):
                raise ValueError(f"DiscriminatorConfig.{name} must be a finite number > 0, got {value!r}")
        if not (isinstance(self.validation_fraction, numbers.Real) and 0.0 <= self.validation_fraction < 1.0):
            raise ValueError(
                f"DiscriminatorConfig.validation_fraction must be in [0, 1), got {self.validation_fraction!r}")
        if not 0.0 <= self.lora_dropout < 1.0:
            raise ValueError(f"DiscriminatorConfig.lora_dropout must be in [0, 1), got {self.lora_dropout!r}")
        if self.weight_decay < 0:
            raise ValueError(f"DiscriminatorConfig.weight_decay must be >= 0, got {self.weight_decay!r}")
        if not self.target_modules:
            raise ValueError("DiscriminatorConfig.target_modules must name at least one module")
        if self.precision not in ("auto", "float32", "bfloat16"):
            raise ValueError(
                f"DiscriminatorConfig.precision must be 'auto', 'float32' or 'bfloat16', got {self.precision!r}")

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["target_modules"] = list(self.target_modules)
        return d


# ---------------------------------------------------------------------------------------------- labelled data
def _conversation(instruction: str, response: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": instruction}, {"role": "assistant", "content": response}]


def labelled_pairs_from_llmbar(path: str | os.PathLike) -> pd.DataFrame:
    """LLMBar pairs as labelled conversations: ``DataFrame(conversations, label, group)``.

    The file is a JSON list of ``{input, output_1, output_2, label}`` where ``label`` (1 or 2) names the
    human-preferred output. Each pair gives two rows with the same user turn (``input``): the preferred
    output with ``label`` 1 and the other with 0; ``group`` is the pair's index in the file. Rows come in
    file order, ``output_1`` before ``output_2``. ``ValueError`` names the file, the row and the field of
    the first bad record. ``.attrs["label_source"]`` describes the origin (recorded in the manifest).
    """
    path = Path(path)
    try:
        records = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise FileNotFoundError(f"LLMBar label file {path} does not exist") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"{path}: not valid JSON ({exc})") from exc
    if not isinstance(records, list):
        raise ValueError(f"{path}: expected a JSON list of {{input, output_1, output_2, label}} records, "
                         f"got {type(records).__name__}")
    if not records:
        raise ValueError(f"{path}: the file holds no pairs")
    conversations: list[list[dict[str, str]]] = []
    labels: list[int] = []
    groups: list[int] = []
    for row, record in enumerate(records):
        if not isinstance(record, dict):
            raise ValueError(f"{path}: row {row}: expected an object, got {type(record).__name__}")
        for name in LLMBAR_FIELDS:
            if name not in record:
                raise ValueError(f"{path}: row {row}: field {name!r} is missing")
        for name in ("input", "output_1", "output_2"):
            if not isinstance(record[name], str):
                raise ValueError(f"{path}: row {row}: field {name!r} must be a string, "
                                 f"got {type(record[name]).__name__}")
        if not record["input"].strip():
            raise ValueError(f"{path}: row {row}: field 'input' is empty")
        preferred = record["label"]
        if isinstance(preferred, bool) or preferred not in (1, 2):
            raise ValueError(f"{path}: row {row}: field 'label' must be 1 or 2 (the preferred output), "
                             f"got {preferred!r}")
        for which in (1, 2):
            conversations.append(_conversation(record["input"], record[f"output_{which}"]))
            labels.append(int(preferred == which))
            groups.append(row)
    out = pd.DataFrame({"conversations": conversations, "label": np.asarray(labels, dtype=np.int64),
                        "group": np.asarray(groups, dtype=np.int64)})
    out.attrs["label_source"] = {"kind": "llmbar_pairs", "path": str(path), "n_pairs": len(records)}
    return out


def labelled_from_scores(frame: pd.DataFrame, score_column: str, threshold: float) -> pd.DataFrame:
    """Labels from any judged or curated table: ``label = 1`` where ``score_column >= threshold``, else 0.

    ``frame`` needs ``conversations`` and ``score_column``; ``group`` is its ``id`` when it has one (each
    row its own group), else the row position. Rows without a score (NaN/None, e.g. an unparsable judge
    reply) carry no judgement: they are left out and counted in ``.attrs["n_unscored"]``. A score that
    is not a number raises ``ValueError`` naming the row id and the column.
    """
    if not isinstance(score_column, str) or score_column not in frame.columns:
        raise ValueError(f"score_column {score_column!r} is not a column of the frame; it has {list(frame.columns)}")
    if "conversations" not in frame.columns:
        raise ValueError(f"labelled_from_scores needs a 'conversations' column; the frame has {list(frame.columns)}")
    if isinstance(threshold, bool) or not isinstance(threshold, numbers.Real) or not math.isfinite(threshold):
        raise ValueError(f"threshold must be a finite number, got {threshold!r}")
    ids = frame["id"].astype(str).tolist() if "id" in frame.columns else [str(i) for i in range(len(frame))]
    raw = frame[score_column].tolist()
    scores = np.full(len(frame), np.nan)
    for i, value in enumerate(raw):
        if value is None or (isinstance(value, float) and math.isnan(value)):
            continue
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            try:
                value = float(value)
            except (TypeError, ValueError):
                raise ValueError(f"row id {ids[i]!r}: column {score_column!r} is not a number: {raw[i]!r}") from None
        scores[i] = float(value)
    scored = ~np.isnan(scores)
    out = pd.DataFrame({
        "conversations": frame["conversations"].to_numpy()[scored],
        "label": (scores[scored] >= threshold).astype(np.int64),
        "group": np.asarray(ids, dtype=object)[scored],
    })
    out.attrs["n_unscored"] = int((~scored).sum())
    out.attrs["label_source"] = {"kind": "scores", "score_column": score_column, "threshold": float(threshold),
                                 "n_rows": len(frame), "n_unscored": int((~scored).sum())}
    return out


def grouped_split(groups: Sequence[Any], validation_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``(train_rows, validation_rows)``: row positions, every group wholly on one side.

    The distinct groups (in order of first appearance) are permuted with ``default_rng(seed)`` and the
    first ``round(validation_fraction * n_groups)`` (at least 1 when the fraction is > 0, at most
    ``n_groups - 1``) are held out.
    """
    if not 0.0 <= validation_fraction < 1.0:
        raise ValueError(f"validation_fraction must be in [0, 1), got {validation_fraction!r}")
    keys = pd.Series(list(groups), dtype=object).map(str)
    distinct = pd.unique(keys)
    n_rows, n_groups = len(keys), len(distinct)
    if validation_fraction == 0.0:
        return np.arange(n_rows), np.arange(0)
    if n_groups < 2:
        raise ValueError(f"a validation split needs at least 2 label groups, got {n_groups} "
                         f"(set validation_fraction=0 to train on everything)")
    n_val = min(max(1, round(validation_fraction * n_groups)), n_groups - 1)
    held_out = set(distinct[np.random.default_rng(seed).permutation(n_groups)[:n_val]])
    in_val = keys.isin(held_out).to_numpy()
    return np.flatnonzero(~in_val), np.flatnonzero(in_val)


# ---------------------------------------------------------------------------------------------- encoding
def encode_first_turn(tokenizer, conversations, max_length: int) -> tuple[list[int], int] | None:
    """``(token_ids, n_dropped)`` of the conversation up to its first assistant turn, cut to
    ``max_length`` (prefix from the left first, see the module docstring); None when there is no
    assistant turn or the chat template cannot render the conversation."""
    if conversations is None or len(conversations) == 0:
        return None
    turns = list(conversations)
    roles = [str(t["role"]) for t in turns]
    if "assistant" not in roles:
        return None
    turns = turns[: roles.index("assistant") + 1]
    try:
        # No cut here: fit_to_length below decides what to drop, with the response kept whole when it fits.
        ids, answer_mask = chat.encode_for_training(tokenizer, turns, max_length=2 ** 62)
    except ValueError as exc:
        log.warning("cannot render conversation for the discriminator: %s", exc)
        return None
    start = answer_mask.index(True) if True in answer_mask else len(ids)
    prefix, answer, dropped = fit_to_length(ids[:start], ids[start:], max_length)
    seq = prefix + answer
    return (seq, dropped) if seq else None


def length_grouped_batches(lengths: Sequence[int], batch_size: int, seed: int,
                           window: int = 16) -> Iterator[list[int]]:
    """Endless batches of example indices whose members have similar lengths.

    The example stream is ``training.sft.batch_indices``' (seeded shuffled epochs, cycled); each
    ``window * batch_size`` consecutive indices of it (fewer when the data set is smaller) are sorted by
    length, cut into full batches, and those batches are yielded in a seeded random order. Every
    example is still seen once per epoch (up to the window boundary), in random company of similar
    length, and long batches are not clustered at the start or the end of training.
    """
    if batch_size < 1 or window < 1:
        raise ValueError(f"batch_size and window must be >= 1, got {batch_size} and {window}")
    rng = np.random.default_rng(seed)
    # A window no larger than the data set, so that a small set is not repeated inside one window.
    per_window = batch_size * max(1, min(window, len(lengths) // batch_size))
    stream = batch_indices(len(lengths), per_window, seed)
    while True:
        chunk = sorted(next(stream), key=lambda i: lengths[i])
        batches = [chunk[b: b + batch_size] for b in range(0, len(chunk), batch_size)]
        for k in rng.permutation(len(batches)):
            yield batches[k]


def _pad_id(tokenizer) -> int:
    for attr in ("pad_token_id", "eos_token_id", "unk_token_id"):
        value = getattr(tokenizer, attr, None)
        if value is not None:
            return int(value)
    return 0


def _pad_batch(seqs: Sequence[Sequence[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Right padding to the longest row: ``(input_ids, attention_mask)``."""
    width = max(len(s) for s in seqs)
    input_ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    attention_mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for row, seq in enumerate(seqs):
        input_ids[row, : len(seq)] = torch.tensor(list(seq), dtype=torch.long)
        attention_mask[row, : len(seq)] = 1
    return input_ids, attention_mask


# ---------------------------------------------------------------------------------------------- model
def _hidden_size(model) -> int:
    cfg = model.config
    text_cfg = cfg.get_text_config() if hasattr(cfg, "get_text_config") else cfg
    return int(text_cfg.hidden_size)


class Discriminator(torch.nn.Module):
    """A causal LM's decoder (with LoRA adapters) + a linear head on the last real token's hidden state.

    ``forward(input_ids, attention_mask)`` returns one logit per row (float32); ``sigmoid`` of it is the
    probability that the example is a good training task. ``manifest`` is the saved manifest (or None
    before saving).
    """

    def __init__(self, lm, head: torch.nn.Linear, manifest: Mapping[str, Any] | None = None):
        super().__init__()
        self.lm = lm
        self.head = head
        self.manifest: dict[str, Any] | None = dict(manifest) if manifest is not None else None

    @property
    def device(self) -> torch.device:
        return self.head.weight.device

    def _decoder(self):
        base = self.lm.get_base_model() if callable(getattr(self.lm, "get_base_model", None)) else self.lm
        decoder = base.get_decoder()
        if decoder is base:
            raise TypeError(f"{type(base).__name__}: could not find its decoder (get_decoder returned the model)")
        return decoder

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        out = self._decoder()(input_ids=input_ids, attention_mask=attention_mask, use_cache=False)
        hidden = out.last_hidden_state if hasattr(out, "last_hidden_state") else out[0]
        last = attention_mask.sum(dim=1) - 1  # right padding: the last real token of each row
        pooled = hidden[torch.arange(hidden.shape[0], device=hidden.device), last.to(hidden.device)]
        with torch.autocast(device_type=pooled.device.type, enabled=False):
            return self.head(pooled.float().to(self.head.weight.device)).squeeze(-1)


def _predict(discriminator: Discriminator, seqs: Sequence[Sequence[int]], batch_size: int, pad_id: int,
             progress: Callable[[int], None] | None = None) -> np.ndarray:
    """Probabilities for token sequences: longest first (an out-of-memory error shows on the first batch),
    ``batch_size`` at a time, back in input order."""
    probs = np.full(len(seqs), np.nan)
    if not seqs:
        return probs
    order = sorted(range(len(seqs)), key=lambda i: (-len(seqs[i]), i))
    was_training = discriminator.training
    discriminator.eval()
    try:
        with torch.inference_mode():
            for b in range(0, len(order), batch_size):
                batch = order[b: b + batch_size]
                input_ids, attention_mask = _pad_batch([seqs[i] for i in batch], pad_id)
                logits = discriminator(input_ids.to(discriminator.device), attention_mask.to(discriminator.device))
                probs[batch] = torch.sigmoid(logits.double()).cpu().numpy()
                if progress is not None:
                    progress(len(batch))
    finally:
        if was_training:
            discriminator.train()
    return probs


# ---------------------------------------------------------------------------------------------- metrics
def roc_auc(labels: np.ndarray, scores: np.ndarray) -> float:
    """Area under the ROC curve (Mann-Whitney U, ties count half); NaN unless both labels occur."""
    labels = np.asarray(labels)
    scores = np.asarray(scores, dtype=np.float64)
    n_pos, n_neg = int((labels == 1).sum()), int((labels == 0).sum())
    if n_pos == 0 or n_neg == 0:
        return math.nan
    ranks = pd.Series(scores).rank(method="average").to_numpy()
    return float((ranks[labels == 1].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def pairwise_accuracy(labels: np.ndarray, scores: np.ndarray, groups: Sequence[Any]) -> tuple[float, int]:
    """Share of (positive, negative) pairs WITHIN a group where the positive scores higher (ties count
    half), and the number of such pairs; NaN when no group has both labels. For LLMBar pairs this is the
    benchmark's accuracy: the preferred output judged better."""
    frame = pd.DataFrame({"label": np.asarray(labels), "score": np.asarray(scores, dtype=np.float64),
                          "group": pd.Series(list(groups), dtype=object).map(str).to_numpy()})
    wins, n_pairs = 0.0, 0
    for _, g in frame.groupby("group", sort=False):
        pos = g.loc[g["label"] == 1, "score"].to_numpy()
        neg = g.loc[g["label"] == 0, "score"].to_numpy()
        if len(pos) and len(neg):
            diff = pos[:, None] - neg[None, :]
            wins += float((diff > 0).sum() + 0.5 * (diff == 0).sum())
            n_pairs += diff.size
    return (wins / n_pairs if n_pairs else math.nan), n_pairs


# ---------------------------------------------------------------------------------------------- training
@dataclass
class DiscriminatorResult:
    """What a training run produced; ``discriminator`` is the trained model (eval mode)."""

    out_dir: Path
    steps: int
    train_losses: list[float]
    n_train: int
    n_validation: int
    n_skipped: int  # labelled rows with no assistant turn (or unrenderable), not used
    train_groups: list[str]
    validation_groups: list[str]
    validation_accuracy: float  # at probability 0.5; NaN without validation rows
    validation_roc_auc: float  # NaN unless both labels are held out
    validation_pair_accuracy: float  # NaN unless a held-out group has both labels
    validation_majority_accuracy: float  # accuracy of always answering the held-out majority label
    validation_loss: float  # mean binary cross-entropy on the held-out rows
    trainable_params: int
    seconds: float
    discriminator: Discriminator | None = field(default=None, repr=False, compare=False)

    def metrics(self) -> dict[str, Any]:
        """JSON-friendly metrics, as written into the manifest."""
        losses = self.train_losses
        tail = losses[-max(1, len(losses) // 10):]
        return {
            "steps": self.steps,
            "train_losses": list(losses),
            "first_train_loss": losses[0],
            "last_train_loss": losses[-1],
            "final_train_loss_mean": float(np.mean(tail)),
            "n_train": self.n_train,
            "n_validation": self.n_validation,
            "n_skipped": self.n_skipped,
            "n_train_groups": len(self.train_groups),
            "n_validation_groups": len(self.validation_groups),
            "validation_accuracy": self.validation_accuracy,
            "validation_roc_auc": self.validation_roc_auc,
            "validation_pair_accuracy": self.validation_pair_accuracy,
            "validation_majority_accuracy": self.validation_majority_accuracy,
            "validation_loss": self.validation_loss,
            "trainable_params": self.trainable_params,
            "seconds": self.seconds,
        }


def _check_labelled(labelled: pd.DataFrame) -> tuple[list[Any], np.ndarray, list[Any]]:
    for name in ("conversations", "label"):
        if name not in labelled.columns:
            raise ValueError(f"labelled data needs a {name!r} column; it has {list(labelled.columns)}")
    if len(labelled) == 0:
        raise ValueError("labelled data is empty")
    groups = labelled["group"].tolist() if "group" in labelled.columns else list(range(len(labelled)))
    labels = np.zeros(len(labelled), dtype=np.int64)
    for row, value in enumerate(labelled["label"].tolist()):
        if isinstance(value, (bool, np.bool_)):
            value = int(value)
        if not isinstance(value, numbers.Real) or value not in (0, 1):  # 1.0 from a float column is fine
            raise ValueError(f"labelled row {row} (group {groups[row]!r}): field 'label' must be 0 or 1, got {value!r}")
        labels[row] = int(value)
    return labelled["conversations"].tolist(), labels, groups


def train_discriminator(model, tokenizer, labelled: pd.DataFrame, *, out_dir: str | os.PathLike,
                        config: DiscriminatorConfig | None = None,
                        progress: Callable[[dict[str, Any]], None] | None = None,
                        base_model_id: str | None = None,
                        label_source: Any = None) -> DiscriminatorResult:
    """Train a discriminator on ``labelled`` (``conversations``, ``label`` 0/1, optional ``group``) and save it.

    ``model`` is owned by this function from now on (as in ``finetune_lora``: LoRA layers are injected in
    place, on CPU it is converted to float32); pass a freshly loaded causal LM. Whole groups are held out
    for validation (``config.validation_fraction``, seeded by ``config.seed``); the reported validation
    metrics come from those rows only. ``base_model_id`` is what :func:`load_discriminator` passes to its
    base loader (default: the model's ``name_or_path``); ``label_source`` (default
    ``labelled.attrs["label_source"]``) is recorded in the manifest. ``progress`` receives
    ``{step, loss, lr, seconds}`` every ``config.log_every`` steps and after the last one (``loss``: mean
    over the steps since the previous report). ``out_dir`` is replaced atomically with the adapter, the
    head, the tokenizer and the manifest.
    """
    from peft import LoraConfig, get_peft_model

    config = config or DiscriminatorConfig()
    config.validate()
    started = time.perf_counter()
    conversations, labels, groups = _check_labelled(labelled)
    train_rows, val_rows = grouped_split(groups, config.validation_fraction, config.seed)

    encoded: list[list[int] | None] = []
    for conv in conversations:
        got = encode_first_turn(tokenizer, conv, config.max_length)
        encoded.append(got[0] if got is not None else None)
    n_skipped = sum(e is None for e in encoded)
    train_rows = np.asarray([i for i in train_rows if encoded[i] is not None], dtype=np.int64)
    val_rows = np.asarray([i for i in val_rows if encoded[i] is not None], dtype=np.int64)
    if len(train_rows) == 0:
        raise ValueError("train_discriminator: no training row has an assistant turn to judge")
    if len(set(labels[train_rows].tolist())) < 2:
        raise ValueError(f"train_discriminator: the training rows all have label {int(labels[train_rows][0])}; "
                         "a discriminator needs both labels 0 and 1")

    if base_model_id is None:
        base_model_id = getattr(model, "name_or_path", None) or getattr(model.config, "_name_or_path", None)
    if not base_model_id:
        raise ValueError("train_discriminator: pass base_model_id (the model has no name_or_path to record)")
    param = next(model.parameters())
    device = param.device
    autocast_dtype = autocast_dtype_for(device, config.precision)
    if device.type != "cuda" and param.dtype != torch.float32:
        model = model.float()

    torch.manual_seed(config.seed)
    if device.type == "cuda":
        torch.cuda.manual_seed_all(config.seed)
    lora_config = LoraConfig(r=config.lora_r, lora_alpha=config.lora_alpha, lora_dropout=config.lora_dropout,
                             target_modules=list(config.target_modules), bias="none")
    with warnings.catch_warnings():  # peft 0.21 calls a transformers 5 deprecated property
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
        peft_model = get_peft_model(model, lora_config)
    peft_model.peft_config["default"].base_model_name_or_path = str(base_model_id)
    head = torch.nn.Linear(_hidden_size(model), 1, dtype=torch.float32, device=device)
    torch.nn.init.zeros_(head.weight)
    torch.nn.init.zeros_(head.bias)
    discriminator = Discriminator(peft_model, head)

    lora_params = [p for p in peft_model.parameters() if p.requires_grad]
    optimizer, scheduler = adamw_with_schedule(
        [{"params": lora_params, "lr": config.learning_rate},
         {"params": list(head.parameters()), "lr": config.head_learning_rate}],
        weight_decay=config.weight_decay, warmup_steps=config.warmup_steps, max_steps=config.max_steps)
    trainable = lora_params + list(head.parameters())
    pad_id = _pad_id(tokenizer)
    loss_fn = torch.nn.BCEWithLogitsLoss()

    discriminator.train()
    losses: list[float] = []
    window: list[float] = []
    if config.group_by_length:
        batches = length_grouped_batches([len(encoded[i]) for i in train_rows], config.batch_size, config.seed)
    else:
        batches = batch_indices(len(train_rows), config.batch_size, config.seed)
    for step in range(1, config.max_steps + 1):
        rows = train_rows[next(batches)]
        input_ids, attention_mask = _pad_batch([encoded[i] for i in rows], pad_id)
        targets = torch.tensor(labels[rows], dtype=torch.float32, device=device)
        lr = optimizer.param_groups[0]["lr"]
        with torch.autocast(device_type=device.type, dtype=autocast_dtype, enabled=autocast_dtype is not None):
            logits = discriminator(input_ids.to(device), attention_mask.to(device))
        loss = loss_fn(logits.float(), targets)
        value = optimizer_step(loss, optimizer, scheduler, trainable, config.grad_clip, who="train_discriminator",
                               step=step)
        losses.append(value)
        window.append(value)
        if progress is not None and (step % config.log_every == 0 or step == config.max_steps):
            progress({"step": step, "loss": sum(window) / len(window), "lr": lr,
                      "seconds": time.perf_counter() - started})
            window = []
    discriminator.eval()

    val_labels = labels[val_rows]
    val_groups = [groups[i] for i in val_rows]
    val_probs = _predict(discriminator, [encoded[i] for i in val_rows], config.batch_size, pad_id)
    if len(val_rows):
        accuracy = float(((val_probs >= 0.5).astype(np.int64) == val_labels).mean())
        majority = float(max(val_labels.mean(), 1.0 - val_labels.mean()))
        clipped = np.clip(val_probs, 1e-12, 1 - 1e-12)
        val_loss = float(-np.mean(val_labels * np.log(clipped) + (1 - val_labels) * np.log(1 - clipped)))
    else:
        accuracy = majority = val_loss = math.nan
    pair_accuracy, _ = pairwise_accuracy(val_labels, val_probs, val_groups)
    result = DiscriminatorResult(
        out_dir=Path(out_dir), steps=config.max_steps, train_losses=losses,
        n_train=len(train_rows), n_validation=len(val_rows), n_skipped=n_skipped,
        train_groups=sorted({str(groups[i]) for i in train_rows}),
        validation_groups=sorted({str(g) for g in val_groups}),
        validation_accuracy=accuracy, validation_roc_auc=roc_auc(val_labels, val_probs),
        validation_pair_accuracy=pair_accuracy, validation_majority_accuracy=majority, validation_loss=val_loss,
        trainable_params=count_trainable(discriminator), seconds=time.perf_counter() - started,
        discriminator=discriminator)

    if label_source is None:
        label_source = labelled.attrs.get("label_source", "unspecified")
    manifest = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "base_model": str(base_model_id),
        "config": config.to_dict(),
        "label_source": label_source,
        "metrics": result.metrics(),
        "head": {"pooling": POOLING, "hidden_size": head.in_features, "file": HEAD_WEIGHTS},
        "device": str(device),
        "autocast_dtype": str(autocast_dtype).replace("torch.", "") if autocast_dtype else None,
        "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    discriminator.manifest = _save(discriminator, tokenizer, Path(out_dir), manifest)
    return result


def _jsonable(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None  # strict JSON has no NaN: an undefined metric is null
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    if hasattr(value, "item"):
        return _jsonable(value.item())
    return str(value)


def _save(discriminator: Discriminator, tokenizer, out_dir: Path, manifest: dict[str, Any]) -> dict[str, Any]:
    """Adapter + head + tokenizer + manifest into a temporary sibling, then swapped into ``out_dir``
    (a crash never leaves a half-written discriminator behind)."""
    from safetensors.torch import save_file

    from instsel_assets.tempfiles import sweep_stale

    out_dir.parent.mkdir(parents=True, exist_ok=True)
    sweep_stale(out_dir.parent, f".{out_dir.name}.tmp-*")  # left by a save that was killed
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.tmp-", dir=out_dir.parent))
    try:
        # save_embedding_layers=False: the base, embeddings included, comes back from the base loader.
        discriminator.lm.save_pretrained(str(tmp), safe_serialization=True, save_embedding_layers=False)
        if not (tmp / ADAPTER_WEIGHTS).is_file():
            raise RuntimeError(f"saving the discriminator to {out_dir}: peft did not write {ADAPTER_WEIGHTS}")
        head_state = {k: v.detach().float().cpu().contiguous() for k, v in discriminator.head.state_dict().items()}
        save_file(head_state, str(tmp / HEAD_WEIGHTS))
        tokenizer.save_pretrained(str(tmp))
        manifest = _jsonable(manifest)
        manifest["files"] = sorted(p.name for p in tmp.iterdir()) + [MANIFEST_NAME]
        (tmp / MANIFEST_NAME).write_text(json.dumps(manifest, indent=2, sort_keys=True), encoding="utf-8")
        replace_directory(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return manifest


def load_discriminator(out_dir: str | os.PathLike,
                       base_loader: Callable[[str], tuple[Any, Any]]) -> tuple[Discriminator, Any]:
    """``(discriminator, tokenizer)`` from a directory written by :func:`train_discriminator`.

    The base model comes from ``base_loader(manifest["base_model"])`` (e.g. ``load_causal_lm``) and keeps
    the device and dtype the loader chose: the probabilities equal those at training time when the loader
    gives the training dtype (float32 on CPU), and differ by rounding otherwise. The adapter is NOT
    merged, so the computation is the one of training. The tokenizer is the one saved with the
    discriminator (the loader's when none was saved). ``discriminator.manifest`` holds the manifest.
    """
    from peft import PeftModel
    from safetensors.torch import load_file

    out_dir = Path(out_dir)
    path = out_dir / MANIFEST_NAME
    if not path.is_file():
        raise FileNotFoundError(f"{out_dir} is not a discriminator directory: {MANIFEST_NAME} is missing")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"{path}: not valid JSON ({exc})") from exc
    found = manifest.get("format") if isinstance(manifest, dict) else None
    if found != FORMAT:
        raise ValueError(f"{path}: manifest format {found!r}, expected {FORMAT!r}")
    if not manifest.get("base_model"):
        raise ValueError(f"{path}: the manifest names no 'base_model'")
    for name in (ADAPTER_CONFIG, ADAPTER_WEIGHTS, HEAD_WEIGHTS):
        if not (out_dir / name).is_file():
            raise FileNotFoundError(f"discriminator directory {out_dir} has no {name}")
    base, base_tokenizer = base_loader(manifest["base_model"])
    with warnings.catch_warnings():  # peft 0.21 calls a transformers 5 deprecated property
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
        lm = PeftModel.from_pretrained(base, str(out_dir), is_trainable=False)
    state = load_file(str(out_dir / HEAD_WEIGHTS))
    hidden = _hidden_size(base)
    shape = tuple(state["weight"].shape) if "weight" in state else None
    if shape != (1, hidden) or "bias" not in state:
        raise ValueError(f"{out_dir / HEAD_WEIGHTS}: head weight shape {shape} (bias {'bias' in state}) does not "
                         f"match a 1-logit head on the base model's hidden size {hidden}")
    device = next(base.parameters()).device
    head = torch.nn.Linear(hidden, 1, dtype=torch.float32, device=device)
    head.load_state_dict(state)
    discriminator = Discriminator(lm, head, manifest)
    discriminator.eval()
    tokenizer = base_tokenizer
    if (out_dir / "tokenizer_config.json").is_file() or (out_dir / "tokenizer.json").is_file():
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(str(out_dir))
    if tokenizer is None:
        raise ValueError(f"discriminator directory {out_dir}: no tokenizer saved and the base loader gave none")
    return discriminator, tokenizer


# ---------------------------------------------------------------------------------------------- scoring
@register_scorer(
    "tegit_discriminator",
    family="trainable-llm",
    paper="Chen et al. 2023c, TeGit: Generating High-Quality Instruction-Tuning Data with Text-Grounded Task Design",
    summary="Probability that a trained task discriminator (causal-LM decoder + LoRA + linear head on the last "
            "token) accepts the first (instruction, response) turn as a good training task.",
    writes=TEGIT_COLUMNS,
)
def discriminator_scores(pool: pd.DataFrame, model_and_head: Discriminator, tokenizer, *, batch_size: int = 8,
                         max_length: int = 1024, progress: Callable[[int, int], None] | None = None,
                         cache=None) -> pd.DataFrame:
    """One row per pool row (same order): ``id`` and ``tegit_good_prob`` in [0, 1].

    ``model_and_head`` is a :class:`Discriminator` (from :func:`train_discriminator` or
    :func:`load_discriminator`), not a plain causal LM. Rows are batched longest first, right-padded,
    under ``torch.inference_mode``. Rows without an assistant turn (or whose conversation the template
    cannot render) get NaN, counted in ``.attrs["n_unscorable"]``; ``.attrs["n_truncated"]`` counts rows
    cut to ``max_length``. ``progress(done, total)`` counts rows. ``cache`` is accepted for the common
    scorer signature and not used: the loss cache stores language-model losses keyed by token ids, and a
    discriminator's output depends on its adapter and head, which that key does not capture.
    """
    if not isinstance(model_and_head, Discriminator):
        raise TypeError(f"tegit_discriminator scores with a Discriminator (train_discriminator / "
                        f"load_discriminator), got {type(model_and_head).__name__}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, numbers.Integral) or batch_size < 1:
        raise ValueError(f"batch_size must be an integer >= 1, got {batch_size!r}")
    if isinstance(max_length, bool) or not isinstance(max_length, numbers.Integral) or max_length < 2:
        raise ValueError(f"max_length must be an integer >= 2, got {max_length!r}")
    n = len(pool)
    seqs: list[list[int]] = []
    owners: list[int] = []
    n_truncated = 0
    for i, conv in enumerate(pool["conversations"].tolist()):
        got = encode_first_turn(tokenizer, conv, max_length)
        if got is None:
            continue
        seqs.append(got[0])
        owners.append(i)
        n_truncated += int(got[1] > 0)
    done = n - len(owners)
    if progress is not None:
        progress(done, n)

    def advance(k: int) -> None:
        nonlocal done
        done += k
        if progress is not None:
            progress(done, n)

    probs = np.full(n, np.nan)
    if owners:
        probs[np.asarray(owners, dtype=np.int64)] = _predict(model_and_head, seqs, int(batch_size),
                                                             _pad_id(tokenizer), advance)
    out = pd.DataFrame({"id": pool["id"].to_numpy(), GOOD_PROB_COLUMN: probs})
    out.attrs["n_unscorable"] = int(n - len(owners))
    out.attrs["n_truncated"] = int(n_truncated)
    return out
