"""Batched next-token log-probabilities of a few candidate tokens after many prompts.

Rating methods that read a score from the model's next-token distribution (self-curation's "Score: <d>",
DEITA-style expected scores) ask "how likely is each of these candidate tokens right after this prompt?"
for many prompts. ``candidate_logprobs`` answers it with the same machinery as ``loss_engine``:

- prompts are sorted by length (longest first, so an out-of-memory error shows up on the first batch),
  batched ``batch_size`` at a time, and results are put back in input order;
- right padding with an attention mask and explicit position ids ``0..L-1`` per row;
- ``torch.inference_mode()``, the model's own dtype;
- the decoder (``loss_engine._parts``, which unwraps a peft model) gives hidden states, and the LM head is
  applied ONLY at each row's last real position, so one vocabulary-sized logits row per prompt is ever
  built; the model's logit post-processing (softcapping, scales) is applied as in the loss engine.

The values are true log-probabilities: log-softmax over the FULL vocabulary (in fp32), then gathered at
the candidate ids. ``candidate_mass`` turns them into the total probability the model puts on the
candidates, which says whether the model was answering with one of them at all.

Prompts longer than ``max_length`` are cut from the LEFT (the end of the prompt, next to the predicted
token, is kept); ``truncated_tokens`` gives the number of tokens dropped per prompt.

Shared prefix (``shared_prefix=True``, the default): rating prompts are mostly the same text (the
self-curation prompt is ~450 fixed tokens before the row's instruction), so the tokens every prompt starts
with are run ONCE, batch 1, and their key/value cache is handed to every batch, which then runs only its
rows' own tokens (positions continue after the prefix). The causal mask makes this exact: no prefix
position attends to anything after it, so its keys and values are the same in every row. Used when at
least ``MIN_SHARED_PREFIX`` tokens are shared and the model's decoder accepts ``past_key_values``;
otherwise (or with ``shared_prefix=False``) every prompt runs whole. Scores agree with the whole-prompt path
up to float rounding (the test checks 1e-5 in fp32).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence

import numpy as np
import torch

from instsel_assets.scoring.loss_engine import _input_device, _parts, attention_backends


# Below this many shared tokens, the copy of the prefix cache per batch is not worth it.
MIN_SHARED_PREFIX = 16


def common_prefix_length(seqs: Sequence[Sequence[int]]) -> int:
    """Length of the token prefix every sequence starts with (0 for no sequences)."""
    if not seqs:
        return 0
    first = seqs[0]
    length = min(len(s) for s in seqs)
    for s in seqs[1:]:
        k = 0
        while k < length and s[k] == first[k]:
            k += 1
        length = k
        if length == 0:
            break
    return length


def truncated_tokens(prompts_ids: Sequence[Sequence[int]], max_length: int) -> np.ndarray:
    """Tokens ``candidate_logprobs`` drops from the left of each prompt (int64, 0 when it fits)."""
    return np.asarray([max(len(p) - max_length, 0) for p in prompts_ids], dtype=np.int64)


def candidate_mass(logprobs: np.ndarray) -> np.ndarray:
    """Total probability on the candidates, per prompt: ``sum_k exp(logprobs[:, k])`` (float64)."""
    logprobs = np.asarray(logprobs, dtype=np.float64)
    if logprobs.ndim != 2:
        raise ValueError(f"logprobs must be 2-D (prompts x candidates), got shape {logprobs.shape}")
    return np.exp(logprobs).sum(axis=1)


def _check_candidates(candidate_ids: Sequence[int], vocab_size: int) -> list[int]:
    ids = [int(c) for c in candidate_ids]
    if not ids:
        raise ValueError("candidate_ids must name at least one token id")
    if len(set(ids)) != len(ids):
        raise ValueError(f"candidate_ids has duplicates: {ids}")
    bad = [c for c in ids if not 0 <= c < vocab_size]
    if bad:
        raise ValueError(f"candidate_ids {bad} are outside the model's vocabulary [0, {vocab_size})")
    return ids


def candidate_logprobs(model, tokenizer, prompts_ids: Sequence[Sequence[int]], candidate_ids: Sequence[int], *,
                       batch_size: int = 8, max_length: int = 1024,
                       progress: Callable[[int, int], None] | None = None,
                       shared_prefix: bool = True) -> np.ndarray:
    """``log p(candidate | prompt)`` for every prompt and candidate: float64 array ``(n, len(candidate_ids))``.

    See the module docstring for batching and truncation. ``progress(done, total)`` is called once before
    the first batch and after every batch with the number of prompts finished. ``shared_prefix``: run the
    tokens all prompts share once (module docstring). Raises ``ValueError`` on
    an empty prompt (nothing predicts its first token), on empty, duplicate or out-of-vocabulary
    ``candidate_ids``, and on ``batch_size < 1`` or ``max_length < 1``.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if max_length < 1:
        raise ValueError(f"max_length must be >= 1, got {max_length}")
    decoder, head, postprocess = _parts(model)
    candidates = _check_candidates(candidate_ids, head.weight.shape[0])
    n = len(prompts_ids)
    seqs: list[list[int]] = []
    for i, prompt in enumerate(prompts_ids):
        prompt = [int(t) for t in prompt]
        if not prompt:
            raise ValueError(f"prompt {i} is empty: no position predicts the next token")
        seqs.append(prompt[-max_length:])
    out = np.full((n, len(candidates)), np.nan, dtype=np.float64)
    if progress is not None:
        progress(0, n)
    if n == 0:
        return out

    device = _input_device(model)
    pad_id = tokenizer.pad_token_id if tokenizer is not None and tokenizer.pad_token_id is not None else 0
    cand_t = torch.tensor(candidates, dtype=torch.long, device=head.weight.device)
    order = sorted(range(n), key=lambda i: (-len(seqs[i]), i))
    done = 0
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode(), attention_backends(device):  # no per-shape cuDNN plans on CUDA
            prefix_len = common_prefix_length(seqs) if shared_prefix else 0
            prefix_len = min(prefix_len, min(len(s) for s in seqs) - 1)  # every row keeps >= 1 own token
            prefix_cache = _prefix_cache(decoder, seqs[0][:prefix_len], device) \
                if prefix_len >= MIN_SHARED_PREFIX else None
            if prefix_cache is None:
                prefix_len = 0
            for b in range(0, n, batch_size):
                batch = order[b: b + batch_size]
                values = _batch_candidate_logprobs(decoder, head, postprocess, [seqs[i][prefix_len:] for i in batch],
                                                   cand_t, pad_id, device, prefix_cache=prefix_cache,
                                                   prefix_len=prefix_len)
                out[batch] = values
                done += len(batch)
                if progress is not None:
                    progress(done, n)
    finally:
        if was_training:
            model.train()
    return out


def _prefix_cache(decoder, prefix: list[int], device: torch.device):
    """Per-layer ``(keys, values)`` of the shared prefix (batch 1), or None when the decoder cannot take a
    key/value cache (then every prompt runs whole)."""
    try:
        result = decoder(input_ids=torch.tensor([prefix], dtype=torch.long, device=device), use_cache=True)
        cache = getattr(result, "cache", None) or getattr(result, "past_key_values", None)
        layers = [(layer.keys, layer.values) for layer in cache.layers]
    except (AttributeError, TypeError, ValueError):
        return None
    if not layers or any(k is None or k.shape[-2] != len(prefix) for k, _ in layers):
        return None
    return layers


def _cache_keyword(decoder) -> str:
    """The decoder's name for its key/value cache argument (``cache`` since transformers 5.x, formerly
    ``past_key_values``)."""
    return "cache" if "cache" in inspect.signature(decoder.forward).parameters else "past_key_values"


def _batch_cache(prefix_cache, bsz: int):
    """A fresh cache for one batch holding the shared prefix's keys/values for every row (a view, no copy
    until the batch's own tokens are appended)."""
    from transformers import DynamicCache

    cache = DynamicCache()
    for layer_idx, (keys, values) in enumerate(prefix_cache):
        cache.update(keys.expand(bsz, -1, -1, -1), values.expand(bsz, -1, -1, -1), layer_idx)
    return cache


def _batch_candidate_logprobs(decoder, head, postprocess, seqs: list[list[int]], cand_t: torch.Tensor, pad_id: int,
                              device: torch.device, prefix_cache=None, prefix_len: int = 0) -> np.ndarray:
    """Candidate log-probabilities after the last token of each sequence of one right-padded batch.

    With ``prefix_cache``, ``seqs`` are the rows' tokens AFTER the shared prefix of ``prefix_len`` tokens,
    whose keys/values the cache holds."""
    bsz = len(seqs)
    width = max(len(s) for s in seqs)
    input_ids = torch.full((bsz, width), pad_id, dtype=torch.long)
    attention_mask = torch.zeros((bsz, prefix_len + width), dtype=torch.long)
    attention_mask[:, :prefix_len] = 1
    for r, seq in enumerate(seqs):
        input_ids[r, : len(seq)] = torch.tensor(seq, dtype=torch.long)
        attention_mask[r, prefix_len: prefix_len + len(seq)] = 1
    position_ids = torch.arange(prefix_len, prefix_len + width, dtype=torch.long).unsqueeze(0).expand(bsz, -1)
    extra: dict = {"use_cache": False}
    if prefix_cache is not None:
        extra = {_cache_keyword(decoder): _batch_cache(prefix_cache, bsz), "use_cache": True}
    result = decoder(input_ids=input_ids.to(device), attention_mask=attention_mask.to(device),
                     position_ids=position_ids.to(device), **extra)
    hidden = result.last_hidden_state if hasattr(result, "last_hidden_state") else result[0]
    last = torch.tensor([len(s) - 1 for s in seqs], dtype=torch.long, device=hidden.device)
    selected = hidden[torch.arange(bsz, device=hidden.device), last]  # (bsz, hidden): the last real position only
    logits = postprocess(head(selected.to(head.weight.device))).float()
    logprobs = torch.log_softmax(logits, dim=-1)
    return logprobs.index_select(1, cand_t).double().cpu().numpy()
