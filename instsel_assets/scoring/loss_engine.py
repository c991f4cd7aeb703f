"""The one hot path for every language-model score: mean loss of answer tokens given a prefix.

IFD, Superfiltering, perplexity, held-out loss, prompt uncertainty, Nuggets... all ask for
"the mean token cross-entropy of these answer tokens given this prefix" (docs/ARCHITECTURE.md). This module
computes it for many (prefix_ids, answer_ids) pairs at once:

- length-bucketed batches: pairs are sorted by total length (longest first, so an out-of-memory error
  shows up on the first batch), batched ``batch_size`` at a time, and results are put back in input order;
- right padding with an attention mask; position ids ``0..L-1`` per row (right padding keeps every real
  token at its true position);
- ``torch.inference_mode()``; the model's own dtype (bf16 when loaded so by ``loading.load_causal_lm``);
- the decoder (``model.get_decoder()``, after unwrapping a peft model) gives hidden states, and the LM head
  (``model.get_output_embeddings()``) is applied ONLY at the positions that predict answer tokens,
  in chunks, so no ``batch x length x vocabulary`` logits tensor is ever built. The cross-entropy is taken
  in fp32 (``logits.float()``). Known logit post-processing is reproduced: Gemma's
  ``final_logit_softcapping``, Cohere's ``logit_scale``, Granite's ``logits_scaling``.

- worker threads (``workers="auto"``): on a CPU, batches are computed concurrently by one worker per
  torch thread, each worker running its batch on a single intra-op thread. On small CPUs this beats one
  batch stream with intra-op parallelism (the matrices of a small model are too small to split well);
  torch releases the GIL inside its kernels. On an accelerator one stream is used. Results do not depend
  on the number of workers;
- an optional resumable result cache (``loss_cache.LossCache``): pairs already computed for the same
  model weights, tokenizer, template and token ids are read back instead of computed, and new results
  are written in shards as they finish, so an interrupted run resumes where it stopped. Batches are planned
  over all pairs, cached or not (:func:`plan_batches`), so a resumed run computes every missing batch with
  the same companions, hence the same numbers to the last bit, as an uninterrupted run.

Truncation, when ``len(prefix) + len(answer) > max_length``: the prefix is cut from the LEFT first (the
end of the instruction, next to the answer, is kept); when the answer alone does not fit, one prefix token
is kept (so the first answer token is still predicted from something) and the answer is cut on the RIGHT.
``n_truncated`` counts the tokens dropped per pair (prefix + answer).

The first answer token is predicted by the last prefix token. With an empty prefix the first answer token
has no prediction and is not scored (as with Hugging Face's shifted ``labels``). An empty answer gives a
NaN loss and ``n_answer_tokens = 0``.
"""

from __future__ import annotations

import contextlib
import math
import os
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

# Positions sent through the LM head at once: bounds the fp32 logits buffer to
# HEAD_CHUNK x vocabulary (2048 x 49152 x 4 B = 400 MB for SmolLM2).
HEAD_CHUNK = 2048


@dataclass(frozen=True)
class LossResult:
    """Per pair, in input order."""

    mean_loss: np.ndarray  # float64: mean cross-entropy (nats) of the scored answer tokens; NaN when none
    n_answer_tokens: np.ndarray  # int64: answer tokens scored (after truncation)
    n_truncated: np.ndarray  # int64: tokens dropped by truncation (prefix + answer)

    def __len__(self) -> int:
        return len(self.mean_loss)

    @property
    def sum_loss(self) -> np.ndarray:
        """Total (not mean) cross-entropy per pair; 0 where no token was scored."""
        return np.where(self.n_answer_tokens > 0, np.nan_to_num(self.mean_loss) * self.n_answer_tokens, 0.0)


def fit_to_length(prefix: Sequence[int], answer: Sequence[int], max_length: int) -> tuple[list[int], list[int], int]:
    """Truncate a pair to ``max_length`` tokens (rule in the module docstring); returns
    ``(prefix, answer, n_dropped)``."""
    if max_length < 2:
        raise ValueError(f"max_length must be at least 2, got {max_length}")
    prefix, answer = list(prefix), list(answer)
    total = len(prefix) + len(answer)
    if total <= max_length:
        return prefix, answer, 0
    if len(answer) < max_length:
        prefix = prefix[len(prefix) - (max_length - len(answer)):]
    elif prefix:
        prefix, answer = prefix[-1:], answer[: max_length - 1]
    else:
        answer = answer[:max_length]
    return prefix, answer, total - len(prefix) - len(answer)


def _unwrap(model):
    """The transformers ``*ForCausalLM`` inside a peft wrapper (or the model itself)."""
    get_base = getattr(model, "get_base_model", None)
    if callable(get_base):
        return get_base()
    return model


def _parts(model):
    """(decoder, lm_head, postprocess) of a causal LM."""
    base = _unwrap(model)
    head = base.get_output_embeddings()
    if head is None:
        raise TypeError(f"{type(base).__name__} has no output embeddings (LM head); not a causal LM?")
    decoder = base.get_decoder()
    if decoder is base:
        raise TypeError(f"{type(base).__name__}: could not find its decoder (get_decoder returned the model)")
    cfg = base.config
    text_cfg = cfg.get_text_config() if hasattr(cfg, "get_text_config") else cfg
    softcap = getattr(text_cfg, "final_logit_softcapping", None)
    logit_scale = getattr(base, "logit_scale", None)
    logits_scaling = getattr(text_cfg, "logits_scaling", None)

    def postprocess(logits: torch.Tensor) -> torch.Tensor:
        if logit_scale is not None and not isinstance(logit_scale, torch.nn.Module):
            logits = logits * logit_scale
        if logits_scaling:
            logits = logits / logits_scaling
        if softcap:
            logits = torch.tanh(logits / softcap) * softcap
        return logits

    postprocess.settings = (softcap, None if logit_scale is None else float(logit_scale), logits_scaling)
    return decoder, head, postprocess


def _input_device(model) -> torch.device:
    try:
        return _unwrap(model).get_input_embeddings().weight.device
    except Exception:
        return next(model.parameters()).device


def attention_backends(device: torch.device):
    """On CUDA, scaled-dot-product attention without the cuDNN backend.

    Length-bucketed batches have a new width almost every batch; cuDNN attention (which torch picks for
    bf16 on Hopper) builds an execution plan per new shape, which made bf16 scoring 3x SLOWER than fp32 on
    an H200 (measured: 140 vs 424 examples/s); the memory-efficient and flash kernels have no per-shape
    setup. Elsewhere: no change.
    """
    if device.type != "cuda":
        return contextlib.nullcontext()
    from torch.nn.attention import SDPBackend, sdpa_kernel

    return sdpa_kernel([SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH])


def resolve_workers(workers: int | str, device: torch.device, n_batches: int) -> int:
    """How many batches run at once. ``"auto"``: on CPU, one worker per intra-op thread torch would use
    (``torch.get_num_threads()``, at most the CPUs this process may run on), each worker on one thread;
    on an accelerator, 1 (one stream keeps the device busy). An integer >= 1 is taken as given.
    Never more workers than batches."""
    if workers == "auto":
        if device.type != "cpu":
            count = 1
        else:
            try:
                cpus = len(os.sched_getaffinity(0))
            except AttributeError:  # not on Linux
                cpus = os.cpu_count() or 1
            count = max(1, min(torch.get_num_threads(), cpus))
    else:
        try:
            count = int(workers)
        except (TypeError, ValueError):
            raise ValueError(f"workers must be 'auto' or an integer >= 1, got {workers!r}") from None
        if count < 1:
            raise ValueError(f"workers must be 'auto' or an integer >= 1, got {workers!r}")
    return max(1, min(count, n_batches))


def answer_losses(model, tokenizer, pairs: Sequence[tuple[Sequence[int], Sequence[int]]], *,
                  batch_size: int = 8, max_length: int = 1024,
                  progress: Callable[[int, int], None] | None = None, cache=None,
                  workers: int | str = "auto") -> LossResult:
    """Mean cross-entropy of each pair's answer tokens given its prefix (see the module docstring).

    ``pairs``: ``(prefix_ids, answer_ids)`` per example, or ``chat.PrefixAnswer`` objects.
    ``progress(done, total)`` is called after every batch with the number of pairs finished (a batch is
    handed to the cache before it is reported).
    ``cache``: an optional ``loss_cache.LossCache``; pairs already in it are not computed again. Identical pairs
    (after truncation) are computed, looked up and cached once: the cache's hits and misses count distinct pairs.
    ``workers``: batches computed concurrently (see :func:`resolve_workers`); results do not depend on it.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    n = len(pairs)
    mean_loss = np.full(n, np.nan, dtype=np.float64)
    n_tokens = np.zeros(n, dtype=np.int64)
    n_truncated = np.zeros(n, dtype=np.int64)

    seqs: list[list[int]] = []
    starts: list[int] = []  # first scored sequence position (>= 1)
    # The pairs with at least one token to score, each distinct (context, scored tokens) once: a repeated pair
    # (a duplicated row, or IFD's two passes of a row whose answer alone fills max_length) is computed once
    # and its result copied, so copies always agree exactly. Then: those of them not in the cache.
    todo: list[int] = []
    copies: dict[int, list[int]] = {}  # representative -> every pair it stands for (itself included)
    first_of: dict[tuple[int, tuple[int, ...]], int] = {}
    for i, pair in enumerate(pairs):
        prefix, answer = (pair.prefix_ids, pair.answer_ids) if hasattr(pair, "answer_ids") else pair
        p, a, dropped = fit_to_length(prefix, answer, max_length)
        n_truncated[i] = dropped
        seq = p + a
        start = max(len(p), 1)
        seqs.append(seq)
        starts.append(start)
        n_tokens[i] = max(len(seq) - start, 0)
        if n_tokens[i] > 0:
            rep = first_of.setdefault((start, tuple(seq)), i)
            if rep == i:
                todo.append(i)
                copies[i] = [i]
            else:
                copies[rep].append(i)
    scorable = list(todo)

    def weight(batch: Sequence[int]) -> int:
        return sum(len(copies[i]) for i in batch)

    if cache is not None and todo:
        # Keyed by the ids actually fed (after truncation): the context and the scored tokens.
        keys = {i: cache.key(seqs[i][:starts[i]], seqs[i][starts[i]:]) for i in todo}
        found = cache.lookup(keys[i] for i in todo)
        for i in todo:
            got = found.get(keys[i])
            if got is not None:
                mean_loss[copies[i]] = got[0] / got[1] if got[1] else math.nan
        todo = [i for i in todo if keys[i] not in found]
    if progress is not None:
        progress(n - weight(todo), n)
    if not todo:
        return LossResult(mean_loss, n_tokens, n_truncated)

    decoder, head, postprocess = _parts(model)
    device = _input_device(model)
    pad_id = tokenizer.pad_token_id if tokenizer is not None and tokenizer.pad_token_id is not None else 0
    batches = plan_batches([len(s) for s in seqs], scorable, set(todo), batch_size)
    n_workers = resolve_workers(workers, device, len(batches))
    # One intra-op thread per batch whenever this device and setting would run several workers, even when
    # fewer batches are left (a resumed run): a batch's numbers then never depend on how many remained.
    single_thread = resolve_workers(workers, device, 1 << 30) > 1
    state = {"done": n - weight(todo), "next": 0}
    lock = threading.Lock()
    errors: list[BaseException] = []

    def work() -> None:
        with torch.inference_mode(), attention_backends(device):  # thread-local: entered in every worker
            while True:
                with lock:
                    if errors or state["next"] >= len(batches):
                        return
                    batch = batches[state["next"]]
                    state["next"] += 1
                try:
                    sums = _batch_loss_sums(decoder, head, postprocess, [seqs[i] for i in batch],
                                            [starts[i] for i in batch], pad_id, device)
                    for i, s in zip(batch, sums):
                        mean_loss[copies[i]] = s / n_tokens[i]
                    if cache is not None:
                        cache.add([keys[i] for i in batch], sums, [int(n_tokens[i]) for i in batch])
                    with lock:
                        state["done"] += weight(batch)
                        if progress is not None:
                            progress(state["done"], n)
                except BaseException as exc:  # noqa: BLE001 - re-raised in the calling thread
                    with lock:
                        errors.append(exc)
                    return

    was_training = model.training
    model.eval()
    threads_before = torch.get_num_threads()
    try:
        if single_thread:
            # Each worker runs whole batches on one intra-op thread: on small CPUs this beats one batch
            # stream with intra-op parallelism (1.4x measured on 2 cores; see benchmarks/RESULTS.md).
            torch.set_num_threads(1)
        if n_workers == 1:
            work()
        else:
            pool = [threading.Thread(target=work, name=f"loss-engine-{k}", daemon=True) for k in range(n_workers)]
            for t in pool:
                t.start()
            for t in pool:
                t.join()
        if errors:
            raise errors[0]
    finally:
        if single_thread:
            torch.set_num_threads(threads_before)
        if cache is not None:
            cache.flush()
        if was_training:
            model.train()
    return LossResult(mean_loss, n_tokens, n_truncated)


def plan_batches(lengths: Sequence[int], scorable: Sequence[int], missing: set[int],
                 batch_size: int) -> list[list[int]]:
    """The batches to compute: lists of pair indices, longest first.

    The batches are planned over ALL ``scorable`` pairs, cached or not (sorted by length, longest first, ties
    by index, ``batch_size`` at a time), so a run resumed from the cache computes each batch with exactly the
    pairs an uninterrupted run puts in it. Padding changes a pair's loss in the last bits of fp32 (up to
    ~1e-6 measured), so this is what makes a killed and resumed run give the SAME numbers as an
    uninterrupted one: the cache receives whole batches (a shard never splits one), so after a kill every
    planned batch is either all cached (skipped) or all ``missing`` (computed as planned). The ``missing``
    pairs of batches that are only partly cached (another scorer or pool filled the cache, e.g. perplexity's
    conditioned pairs before IFD) are re-batched among themselves, so no cached pair is computed again.
    """
    planned_order = sorted(scorable, key=lambda i: (-lengths[i], i))
    planned = [planned_order[b: b + batch_size] for b in range(0, len(planned_order), batch_size)]
    batches: list[list[int]] = []
    leftovers: list[int] = []
    for batch in planned:
        miss = [i for i in batch if i in missing]
        if len(miss) == len(batch):
            batches.append(batch)
        else:
            leftovers.extend(miss)
    batches += [leftovers[b: b + batch_size] for b in range(0, len(leftovers), batch_size)]
    batches.sort(key=lambda b: (-lengths[b[0]], b[0]))  # longest first: an out-of-memory error shows early
    return batches


def _batch_loss_sums(decoder, head, postprocess, seqs: list[list[int]], starts: list[int], pad_id: int,
                     device: torch.device) -> list[float]:
    """Summed answer-token cross-entropy for one right-padded batch."""
    bsz = len(seqs)
    width = max(len(s) for s in seqs)
    input_ids = torch.full((bsz, width), pad_id, dtype=torch.long)
    attention_mask = torch.zeros((bsz, width), dtype=torch.long)
    rows, hid_pos, targets = [], [], []
    for r, (seq, start) in enumerate(zip(seqs, starts)):
        length = len(seq)
        input_ids[r, :length] = torch.tensor(seq, dtype=torch.long)
        attention_mask[r, :length] = 1
        rows.append(torch.full((length - start,), r, dtype=torch.long))
        hid_pos.append(torch.arange(start - 1, length - 1))  # hidden state at t predicts token t + 1
        targets.append(input_ids[r, start:length])
    rows_t = torch.cat(rows).to(device)
    pos_t = torch.cat(hid_pos).to(device)
    tgt_t = torch.cat(targets).to(device)
    position_ids = torch.arange(width, dtype=torch.long).unsqueeze(0).expand(bsz, -1)
    out = decoder(input_ids=input_ids.to(device), attention_mask=attention_mask.to(device),
                  position_ids=position_ids.to(device), use_cache=False)
    hidden = out.last_hidden_state if hasattr(out, "last_hidden_state") else out[0]
    selected = hidden[rows_t, pos_t]  # (n_answer_tokens_in_batch, hidden)
    head_device = head.weight.device
    losses = []
    for c in range(0, selected.shape[0], HEAD_CHUNK):
        logits = postprocess(head(selected[c: c + HEAD_CHUNK].to(head_device)))
        losses.append(F.cross_entropy(logits.float(), tgt_t[c: c + HEAD_CHUNK].to(head_device), reduction="none"))
    token_loss = torch.cat(losses).double().cpu()
    sums = torch.zeros(bsz, dtype=torch.float64).index_add_(0, rows_t.cpu(), token_loss)
    return sums.tolist()


def token_weighted_mean(result: LossResult) -> float:
    """Mean loss over all scored tokens of all pairs (NaN when there are none)."""
    total = int(result.n_answer_tokens.sum())
    return float(result.sum_loss.sum() / total) if total else math.nan
