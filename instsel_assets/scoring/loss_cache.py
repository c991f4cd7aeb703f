"""A resumable on-disk cache of loss-engine results, keyed by what determines them.

Every (prefix, answer) pair the engine scores is keyed by a hash of

- the model: a digest of every parameter and buffer (names, shapes, dtypes, values: a fine-tuned or merged
  model never reuses its base's results), the compute device type and the LM head's logit post-processing
  settings, combined in :func:`model_key`;
- the tokenizer: its vocabulary and special tokens (:func:`tokenizer_key`);
- the chat template text;
- the exact token ids fed to the model after truncation: the prefix and the answer.

Results are appended in *shards*: every ``shard_size`` newly computed pairs are written as one Parquet file
(written to a temporary name, then renamed, so a shard is either whole or absent). A run that is killed
loses at most the pairs of its unfinished shard; the next run reads every shard and computes only what is
missing, and a re-run on unchanged data computes nothing. Several processes may share a directory: each
writes its own shard files (names carry the process id and a counter), readers take the union.

Layout: ``<root>/<model_key[:20]>/shard-<time>-<pid>-<n>.parquet`` with columns ``key`` (hex digest),
``loss_sum`` (float64, summed cross-entropy of the scored answer tokens) and ``n_tokens`` (int64).
Deleting a model's directory (or the whole root) is always safe.
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
import time
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import torch

log = logging.getLogger(__name__)

DEFAULT_SHARD_SIZE = 256
_KEY_VERSION = b"instsel-loss-cache-v1"


def _tensor_bytes(t: torch.Tensor) -> bytes:
    t = t.detach().to("cpu").contiguous()
    if t.dtype in (torch.bfloat16, torch.float16):
        return t.view(torch.int16).numpy().tobytes()
    return t.numpy().tobytes()


def weights_digest(model) -> str:
    """BLAKE2b over every named parameter and buffer (name, shape, dtype, values) of ``model``.

    Hashes the full tensors (about 1 s for a 135M-parameter model on one CPU core): a sampled hash could
    miss a fine-tune that touched only some rows of a matrix, and a stale cache would silently give wrong
    scores.
    """
    h = hashlib.blake2b(digest_size=20)
    seen: set[int] = set()
    tensors = list(model.named_parameters()) + list(model.named_buffers())
    for name, tensor in sorted(tensors, key=lambda kv: kv[0]):
        if id(tensor) in seen:  # tied weights are hashed once (under their first name)
            continue
        seen.add(id(tensor))
        h.update(name.encode())
        h.update(str(tuple(tensor.shape)).encode())
        h.update(str(tensor.dtype).encode())
        h.update(_tensor_bytes(tensor))
    return h.hexdigest()


def tokenizer_key(tokenizer) -> str:
    """Digest of the tokenizer's vocabulary, special tokens and chat template."""
    h = hashlib.blake2b(digest_size=20)
    vocab = tokenizer.get_vocab() if tokenizer is not None else {}
    for token, idx in sorted(vocab.items(), key=lambda kv: kv[1]):
        h.update(f"{idx}\t{token}\n".encode())
    special = getattr(tokenizer, "all_special_tokens", []) if tokenizer is not None else []
    h.update(("\x00".join(sorted(map(str, special)))).encode())
    template = getattr(tokenizer, "chat_template", None) if tokenizer is not None else None
    h.update(b"\x01template\x01" + (str(template) if template else "").encode())
    return h.hexdigest()


def model_key(model, tokenizer) -> str:
    """The part of every pair's key that depends on the model, its device type and the tokenizer."""
    from instsel_assets.scoring.loss_engine import _input_device, _parts

    _, _, postprocess = _parts(model)
    h = hashlib.blake2b(digest_size=20)
    h.update(_KEY_VERSION)
    h.update(weights_digest(model).encode())
    h.update(_input_device(model).type.encode())
    h.update(repr(getattr(postprocess, "settings", None)).encode())
    h.update(tokenizer_key(tokenizer).encode())
    return h.hexdigest()


def pair_key(model_part: str, prefix_ids: Sequence[int], answer_ids: Sequence[int]) -> str:
    """Key of one (prefix, answer) pair under a model (``model_key``)."""
    h = hashlib.blake2b(digest_size=20)
    h.update(model_part.encode())
    h.update(np.asarray(prefix_ids, dtype=np.int64).tobytes())
    h.update(b"|")
    h.update(np.asarray(answer_ids, dtype=np.int64).tobytes())
    h.update(len(prefix_ids).to_bytes(8, "little"))
    return h.hexdigest()


class LossCache:
    """Shard-per-chunk cache for one model (see the module docstring).

    ``LossCache.for_model(root, model, tokenizer)`` computes the model key (hashing the weights) and opens
    the model's directory. ``lookup(keys)`` returns the cached ``(loss_sum, n_tokens)`` of the keys it
    holds; ``add(keys, loss_sums, n_tokens)`` records results and writes a shard every ``shard_size``
    pairs; ``flush()`` writes what is pending (the engine calls it when it finishes or fails).
    """

    def __init__(self, directory: str | os.PathLike, model_part: str, *, shard_size: int = DEFAULT_SHARD_SIZE):
        if shard_size < 1:
            raise ValueError(f"shard_size must be >= 1, got {shard_size}")
        self.directory = Path(directory)
        self.model_part = model_part
        self.shard_size = shard_size
        self._lock = threading.Lock()
        self._data: dict[str, tuple[float, int]] = {}
        self._pending: list[tuple[str, float, int]] = []
        self._counter = 0
        self.hits = 0
        self.misses = 0
        self.shards_read = 0
        self.shards_written = 0
        self.stale_removed = 0
        self._load()

    @classmethod
    def for_model(cls, root: str | os.PathLike, model, tokenizer, *,
                  shard_size: int = DEFAULT_SHARD_SIZE) -> "LossCache":
        t0 = time.perf_counter()
        part = model_key(model, tokenizer)
        cache = cls(Path(root) / part[:20], part, shard_size=shard_size)
        log.info("loss cache %s: %d pairs in %d shards (model key %s, %.1f s to hash the weights and read)",
                 cache.directory, len(cache), cache.shards_read, part[:12], time.perf_counter() - t0)
        return cache

    def __len__(self) -> int:
        return len(self._data)

    def key(self, prefix_ids: Sequence[int], answer_ids: Sequence[int]) -> str:
        return pair_key(self.model_part, prefix_ids, answer_ids)

    def _load(self) -> None:
        import pyarrow.parquet as pq

        if not self.directory.is_dir():
            return
        from instsel_assets.tempfiles import sweep_stale

        self.stale_removed = len(sweep_stale(self.directory, "shard-*.parquet.tmp"))  # left by a killed writer
        for path in sorted(self.directory.glob("shard-*.parquet")):
            try:
                table = pq.read_table(path, columns=["key", "loss_sum", "n_tokens"])
            except Exception as exc:  # noqa: BLE001 - a damaged shard is skipped (recomputed), and said so
                log.warning("loss cache: skipping unreadable shard %s (%s); its pairs will be recomputed",
                            path, type(exc).__name__)
                continue
            keys = table.column("key").to_pylist()
            sums = table.column("loss_sum").to_numpy()
            counts = table.column("n_tokens").to_numpy()
            for k, s, c in zip(keys, sums, counts):
                self._data[k] = (float(s), int(c))
            self.shards_read += 1

    def lookup(self, keys: Iterable[str]) -> dict[str, tuple[float, int]]:
        found = {}
        with self._lock:
            for k in keys:
                got = self._data.get(k)
                if got is not None:
                    found[k] = got
                    self.hits += 1
                else:
                    self.misses += 1
        return found

    def add(self, keys: Sequence[str], loss_sums: Sequence[float], n_tokens: Sequence[int]) -> None:
        with self._lock:
            for k, s, c in zip(keys, loss_sums, n_tokens):
                self._data[k] = (float(s), int(c))
                self._pending.append((k, float(s), int(c)))
            if len(self._pending) >= self.shard_size:
                self._write_locked()

    def flush(self) -> None:
        with self._lock:
            if self._pending:
                self._write_locked()

    def _write_locked(self) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        rows, self._pending = self._pending, []
        self.directory.mkdir(parents=True, exist_ok=True)
        self._counter += 1
        name = f"shard-{time.time_ns()}-{os.getpid()}-{self._counter:05d}.parquet"
        table = pa.table({
            "key": pa.array([r[0] for r in rows], pa.string()),
            "loss_sum": pa.array([r[1] for r in rows], pa.float64()),
            "n_tokens": pa.array([r[2] for r in rows], pa.int64()),
        })
        tmp = self.directory / (name + ".tmp")
        pq.write_table(table, tmp)
        os.replace(tmp, self.directory / name)
        self.shards_written += 1

    def stats(self) -> dict[str, int | str]:
        return {"directory": str(self.directory), "pairs": len(self), "hits": self.hits, "misses": self.misses,
                "shards_read": self.shards_read, "shards_written": self.shards_written}
