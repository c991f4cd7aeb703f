"""Example embeddings from a causal LM's own last-layer hidden states (DiverseEvol, Wu et al. 2023).

DiverseEvol embeds every example with the model being fine-tuned: the average of the last-layer hidden
states over all tokens of the example (prompt and response). This module computes that for many
examples at once:

- each conversation is rendered with the model's chat template and tokenised by
  ``chat.encode_for_training`` (the exact ids the fine-tuning step sees; cut on the right to
  ``max_length``);
- sequences are sorted by length (longest first, so an out-of-memory error shows up on the first batch),
  right-padded in batches of ``batch_size`` with an attention mask and position ids ``0..L-1``, and the
  vectors are put back in input order;
- only the decoder runs (``model.get_decoder()`` after unwrapping a peft model, so LoRA layers injected
  into it are used); the LM head is never applied. The decoder's ``last_hidden_state`` is the output
  after the final norm, which is what the reference code averages (``hidden_states[-1]``);
- ``pooling="mean"``: mean over the real tokens only (padding positions are masked out), accumulated in
  float32 whatever the model's dtype; ``pooling="last"``: the hidden state of the last real token;
- ``torch.inference_mode()``; the model's training flag is restored afterwards.

Right padding keeps every real token at its true position and the causal mask means a real token never
attends to a later (padding) position, so a batched vector equals the one-at-a-time vector up to float
rounding.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import torch

from instsel_assets.models import chat
from instsel_assets.scoring.loss_engine import _input_device, _parts, attention_backends

POOLINGS = ("mean", "last")


def hidden_size(model) -> int:
    """Width of the decoder's hidden states (the embedding dimension)."""
    return int(_parts(model)[1].weight.shape[1])


def sequence_embeddings(model, sequences: Sequence[Sequence[int]], *, pad_token_id: int, batch_size: int = 8,
                        pooling: str = "mean",
                        progress: Callable[[int, int], None] | None = None) -> np.ndarray:
    """Pooled last-layer hidden states of token id sequences: float32 ``(len(sequences), hidden)``.

    An empty sequence gives a row of NaN. ``progress(done, total)`` is called after every batch.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if pooling not in POOLINGS:
        raise ValueError(f"pooling must be one of {POOLINGS}, got {pooling!r}")
    decoder, head, _ = _parts(model)
    width = int(head.weight.shape[1])
    n = len(sequences)
    out = np.full((n, width), np.nan, dtype=np.float32)
    todo = [i for i in range(n) if len(sequences[i]) > 0]
    done = n - len(todo)
    if progress is not None:
        progress(done, n)
    if not todo:
        return out

    device = _input_device(model)
    order = sorted(todo, key=lambda i: (-len(sequences[i]), i))
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode(), attention_backends(device):  # no per-shape cuDNN plans on CUDA
            for b in range(0, len(order), batch_size):
                batch = order[b: b + batch_size]
                vectors = _batch_embeddings(decoder, [sequences[i] for i in batch], pad_token_id, device, pooling)
                out[batch] = vectors
                done += len(batch)
                if progress is not None:
                    progress(done, n)
    finally:
        if was_training:
            model.train()
    return out


def _batch_embeddings(decoder, seqs: list[Sequence[int]], pad_id: int, device: torch.device,
                      pooling: str) -> np.ndarray:
    bsz = len(seqs)
    width = max(len(s) for s in seqs)
    input_ids = torch.full((bsz, width), pad_id, dtype=torch.long)
    attention_mask = torch.zeros((bsz, width), dtype=torch.long)
    lengths = torch.tensor([len(s) for s in seqs], dtype=torch.long)
    for r, seq in enumerate(seqs):
        input_ids[r, : len(seq)] = torch.as_tensor(list(seq), dtype=torch.long)
        attention_mask[r, : len(seq)] = 1
    position_ids = torch.arange(width, dtype=torch.long).unsqueeze(0).expand(bsz, -1)
    out = decoder(input_ids=input_ids.to(device), attention_mask=attention_mask.to(device),
                  position_ids=position_ids.to(device), use_cache=False)
    hidden = out.last_hidden_state if hasattr(out, "last_hidden_state") else out[0]
    if pooling == "mean":
        mask = attention_mask.to(hidden.device, dtype=torch.float32).unsqueeze(-1)
        pooled = (hidden.float() * mask).sum(dim=1) / lengths.to(hidden.device, dtype=torch.float32).unsqueeze(-1)
    else:
        rows = torch.arange(bsz, device=hidden.device)
        pooled = hidden[rows, (lengths - 1).to(hidden.device)].float()
    return pooled.cpu().numpy()


def pad_token_id_of(tokenizer) -> int:
    """The id used for padding: the tokenizer's pad, else eos, else 0 (padding is masked out anyway)."""
    for attr in ("pad_token_id", "eos_token_id"):
        value = getattr(tokenizer, attr, None)
        if value is not None:
            return int(value)
    return 0


def hidden_state_embeddings(model, tokenizer, conversations: Sequence[Sequence[Mapping[str, Any]]], *,
                            batch_size: int = 8, max_length: int = 512, pooling: str = "mean",
                            progress: Callable[[int, int], None] | None = None) -> np.ndarray:
    """Pooled last-layer hidden states of whole conversations (module docstring): float32 ``(n, hidden)``.

    Every conversation is tokenised with ``chat.encode_for_training(tokenizer, conversation, max_length)``;
    one that yields no token (an empty conversation) gives a row of NaN. A conversation the chat template
    cannot render raises ``ValueError`` naming its position.
    """
    if max_length < 1:
        raise ValueError(f"max_length must be >= 1, got {max_length}")
    sequences: list[list[int]] = []
    for i, conv in enumerate(conversations):
        if conv is None or len(conv) == 0:
            sequences.append([])
            continue
        try:
            ids, _ = chat.encode_for_training(tokenizer, conv, max_length)
        except ValueError as exc:
            raise ValueError(f"conversation {i}: cannot render with the chat template: {exc}") from exc
        sequences.append(ids)
    return sequence_embeddings(model, sequences, pad_token_id=pad_token_id_of(tokenizer), batch_size=batch_size,
                               pooling=pooling, progress=progress)
