"""Supervised fine-tuning (SFT) of a causal language model with a LoRA adapter.

``finetune_lora`` trains a small LoRA adapter (through ``peft``) on a selected subset of
conversations and writes a checkpoint directory with :func:`instsel_assets.training.checkpoint.save_checkpoint`
(adapter + tokenizer + manifest; never the full merged model).

Contracts worth knowing:

- **Ownership of the model.** ``finetune_lora`` takes ownership of the ``model`` it is given: LoRA
  layers are injected into it in place, it may be moved to float32 (on CPU) and it is left in eval
  mode wrapped as a ``peft.PeftModel`` (returned as ``TrainResult.model``). The caller must pass a
  freshly loaded base model and must not reuse that object as "the base model" afterwards; load a
  new one (``load_causal_lm``) when a pristine base is needed.
- **Loss on answer tokens only.** Examples are encoded by :func:`instsel_assets.models.chat.encode_for_training`;
  labels are the input ids where its mask is true and ``-100`` elsewhere. The loss of a batch is the
  mean cross-entropy over all answer tokens of the batch (every answer token weighs the same).
- **Precision.** On CPU the weights are float32 (a model loaded in half precision is converted);
  on CUDA they keep their dtype. The forward pass runs under ``torch.autocast(bfloat16)`` where the
  hardware has native bf16 (``SFTConfig.precision="auto"``: CUDA with bf16 support, or a CPU with
  AVX512-BF16/AMX), float32 otherwise; the LoRA weights themselves are always float32
  (peft's ``autocast_adapter_dtype``), so the optimizer state is float32.
- **Determinism.** ``config.seed`` seeds the LoRA initialisation, dropout and the example order;
  two runs on the same device with the same inputs give the same losses.

No dagster import here: the asset layer calls this function and forwards ``progress`` to its logger.
"""

from __future__ import annotations

import inspect
import random
import time
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from instsel_assets.models.chat import encode_for_training

IGNORE_INDEX = -100


@dataclass
class SFTConfig:
    """Options of one LoRA fine-tuning run (all recorded in the checkpoint manifest)."""

    max_steps: int = 20
    """Number of optimizer steps. Batches are drawn from seeded shuffled epochs over the subset,
    cycling over as many epochs as needed (a small subset is seen several times)."""
    batch_size: int = 4
    """Examples per optimizer step (no gradient accumulation). Every batch holds exactly this many
    examples; with fewer examples than ``batch_size`` a batch repeats examples."""
    learning_rate: float = 2e-4
    """Peak learning rate of AdamW (reached after ``warmup_steps``, then linear decay to 0 at ``max_steps``)."""
    max_length: int = 512
    """Maximum tokens per example (prompt + answer, chat template included); longer examples are
    truncated on the right. Batches are padded only to their longest example (dynamic padding)."""
    lora_r: int = 8
    """Rank of the LoRA update matrices."""
    lora_alpha: int = 16
    """LoRA scaling numerator: the update is scaled by ``lora_alpha / lora_r``."""
    lora_dropout: float = 0.05
    """Dropout applied to the LoRA branch input during training."""
    target_modules: tuple[str, ...] = ("q_proj", "v_proj")
    """Names of the linear modules that receive a LoRA adapter (Llama-style attention projections by default)."""
    seed: int = 0
    """Seed of the LoRA initialisation, the dropout masks and the example order."""
    warmup_steps: int = 0
    """Steps of linear learning-rate warm-up from 0 to ``learning_rate``."""
    weight_decay: float = 0.0
    """AdamW decoupled weight decay (applied to the LoRA parameters only: the only trainable ones)."""
    grad_clip: float = 1.0
    """Maximum global L2 norm of the gradients (clipping); 0 or a negative value disables clipping."""
    log_every: int = 5
    """Call ``progress`` every this many steps (and after the last step)."""
    precision: str = "auto"
    """Compute precision of the forward/backward pass: ``"auto"`` runs under bf16 autocast where the
    hardware computes bf16 natively (CUDA with bf16 support; CPUs with AVX512-BF16/AMX, where it is
    about twice as fast as fp32), else fp32; ``"float32"`` or ``"bfloat16"`` force one. Master
    weights, LoRA weights and optimizer state stay fp32 either way."""

    def validate(self) -> None:
        if self.max_steps < 1:
            raise ValueError(f"SFTConfig.max_steps must be >= 1, got {self.max_steps}")
        if self.batch_size < 1:
            raise ValueError(f"SFTConfig.batch_size must be >= 1, got {self.batch_size}")
        if self.max_length < 2:
            raise ValueError(f"SFTConfig.max_length must be >= 2, got {self.max_length}")
        if self.lora_r < 1:
            raise ValueError(f"SFTConfig.lora_r must be >= 1, got {self.lora_r}")
        if not self.learning_rate > 0:
            raise ValueError(f"SFTConfig.learning_rate must be > 0, got {self.learning_rate}")
        if self.warmup_steps < 0:
            raise ValueError(f"SFTConfig.warmup_steps must be >= 0, got {self.warmup_steps}")
        if self.log_every < 1:
            raise ValueError(f"SFTConfig.log_every must be >= 1, got {self.log_every}")
        if not self.target_modules:
            raise ValueError("SFTConfig.target_modules must name at least one module")
        if self.precision not in ("auto", "float32", "bfloat16"):
            raise ValueError(f"SFTConfig.precision must be 'auto', 'float32' or 'bfloat16', got {self.precision!r}")

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["target_modules"] = list(self.target_modules)
        return d


@dataclass
class TrainResult:
    """What a fine-tuning run produced. ``model`` is the trained ``PeftModel`` (unmerged, eval mode)."""

    out_dir: Path
    steps: int
    losses: list[float]
    first_loss: float
    last_loss: float
    n_examples: int  # examples trained on (after skipping)
    n_skipped: int  # examples with no answer token left after truncation
    trainable_params: int
    seconds: float
    model: Any = field(default=None, repr=False, compare=False)

    def metrics(self) -> dict[str, Any]:
        """JSON-friendly metrics (no model, no path), as written into the manifest."""
        return {
            "steps": self.steps,
            "losses": list(self.losses),
            "first_loss": self.first_loss,
            "last_loss": self.last_loss,
            "n_examples": self.n_examples,
            "n_skipped": self.n_skipped,
            "trainable_params": self.trainable_params,
            "seconds": self.seconds,
        }


@dataclass(frozen=True)
class EncodedExample:
    input_ids: list[int]
    labels: list[int]


def encode_example(tokenizer, conversations: Sequence[Mapping[str, Any]], max_length: int) -> EncodedExample | None:
    """Input ids and labels (-100 outside the answer) of one conversation; None if no answer token is left."""
    ids, mask = encode_for_training(tokenizer, conversations, max_length)
    labels = [t if m else IGNORE_INDEX for t, m in zip(ids, mask)]
    # The first token is never predicted (no context), so an answer must have a token at position >= 1.
    if not any(lab != IGNORE_INDEX for lab in labels[1:]):
        return None
    return EncodedExample(list(ids), labels)


def collate(examples: Sequence[EncodedExample], pad_token_id: int) -> dict[str, torch.Tensor]:
    """Right-pad a batch to its longest example: ``input_ids``, ``attention_mask``, ``labels``."""
    width = max(len(e.input_ids) for e in examples)
    input_ids = torch.full((len(examples), width), pad_token_id, dtype=torch.long)
    attention_mask = torch.zeros((len(examples), width), dtype=torch.long)
    labels = torch.full((len(examples), width), IGNORE_INDEX, dtype=torch.long)
    for row, e in enumerate(examples):
        n = len(e.input_ids)
        input_ids[row, :n] = torch.tensor(e.input_ids, dtype=torch.long)
        attention_mask[row, :n] = 1
        labels[row, :n] = torch.tensor(e.labels, dtype=torch.long)
    return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}


def batch_indices(n: int, batch_size: int, seed: int) -> Iterator[list[int]]:
    """Endless batches of example indices: seeded shuffled epochs, concatenated (cycle over epochs)."""
    rng = random.Random(seed)
    stream: list[int] = []
    while True:
        while len(stream) < batch_size:
            order = list(range(n))
            rng.shuffle(order)
            stream.extend(order)
        batch, stream = stream[:batch_size], stream[batch_size:]
        yield batch


def linear_warmup_decay(step: int, warmup_steps: int, max_steps: int) -> float:
    """Learning-rate factor for step ``step`` (0-based): linear warm-up then linear decay to 0."""
    if step < warmup_steps:
        return float(step + 1) / float(warmup_steps + 1)
    return max(0.0, float(max_steps - step) / float(max(1, max_steps - warmup_steps)))


def adamw_with_schedule(param_groups: list[dict[str, Any]], *, weight_decay: float, warmup_steps: int,
                        max_steps: int) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LambdaLR]:
    """AdamW over ``param_groups`` (each with its own ``lr``) and the linear warm-up/decay schedule."""
    optimizer = torch.optim.AdamW(param_groups, weight_decay=weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: linear_warmup_decay(s, warmup_steps, max_steps))
    return optimizer, scheduler


def optimizer_step(loss: torch.Tensor, optimizer: torch.optim.Optimizer, scheduler, params: Sequence[torch.Tensor],
                   grad_clip: float, *, who: str, step: int) -> float:
    """One training step from a computed loss: refuse a non-finite loss (``FloatingPointError`` naming
    ``who`` and ``step``), back-propagate, clip the global gradient norm to ``grad_clip`` (off when <= 0),
    step the optimizer and the schedule. Returns the loss as a float."""
    if not torch.isfinite(loss):
        raise FloatingPointError(f"{who}: non-finite loss {loss.item()} at step {step}")
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    if grad_clip and grad_clip > 0:
        torch.nn.utils.clip_grad_norm_(params, grad_clip)
    optimizer.step()
    scheduler.step()
    return float(loss.detach().item())


def _pad_token_id(tokenizer) -> int:
    for attr in ("pad_token_id", "eos_token_id", "unk_token_id"):
        value = getattr(tokenizer, attr, None)
        if value is not None:
            return int(value)
    return 0


def _supports_logits_to_keep(model) -> bool:
    try:
        base = model.get_base_model()
    except AttributeError:
        base = model
    try:
        return "logits_to_keep" in inspect.signature(base.forward).parameters
    except (TypeError, ValueError):
        return False


def batch_loss(model, batch: Mapping[str, torch.Tensor], *, fast_head: bool = True) -> tuple[torch.Tensor, int]:
    """Mean cross-entropy over the answer tokens of a batch, and how many answer tokens there were.

    With ``fast_head`` the LM head is applied only at positions whose next token is an answer
    token (``logits_to_keep`` with a boolean mask), which saves the vocabulary projection on prompt
    and padding positions; the loss is the same as with full logits.
    """
    input_ids, attention_mask, labels = batch["input_ids"], batch["attention_mask"], batch["labels"]
    targets = labels[:, 1:]
    keep = torch.zeros_like(labels, dtype=torch.bool)
    keep[:, :-1] = targets != IGNORE_INDEX
    n_tokens = int(keep.sum())
    logits = None
    if fast_head:
        try:
            out = model(input_ids=input_ids, attention_mask=attention_mask, logits_to_keep=keep, use_cache=False)
        except (IndexError, TypeError, RuntimeError):
            # transformers releases before boolean ``logits_to_keep`` masks index with it and fail: take the
            # full logits below instead.
            out = None
        if out is not None:
            logits = out.logits
            if logits.ndim == 2 and logits.shape[0] == n_tokens:
                loss = torch.nn.functional.cross_entropy(logits.float(), targets[keep[:, :-1]], reduction="mean")
                return loss, n_tokens
    if logits is None or logits.ndim != 3:
        logits = model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).logits
    # Full logits (model without boolean logits_to_keep support).
    shifted = logits[:, :-1, :].float()
    loss = torch.nn.functional.cross_entropy(
        shifted.reshape(-1, shifted.shape[-1]), targets.reshape(-1), ignore_index=IGNORE_INDEX, reduction="mean")
    return loss, n_tokens


def autocast_dtype_for(device: torch.device, precision: str) -> torch.dtype | None:
    """The autocast dtype of ``SFTConfig.precision`` on ``device`` (None: plain fp32)."""
    if precision == "float32":
        return None
    if precision == "bfloat16":
        return torch.bfloat16
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else None
    if device.type == "cpu":
        from instsel_assets.models.loading import cpu_has_native_bf16

        return torch.bfloat16 if cpu_has_native_bf16() else None
    return None


def count_trainable(model) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def finetune_lora(model, tokenizer, conversations_list: Sequence[Sequence[Mapping[str, Any]]], out_dir: Path,
                  config: SFTConfig, *, base_model_id: str,
                  progress: Callable[[dict[str, Any]], None] | None = None,
                  manifest: Mapping[str, Any] | None = None) -> TrainResult:
    """Fine-tune ``model`` with a LoRA adapter on ``conversations_list`` and write a checkpoint to ``out_dir``.

    ``model`` is owned by this function from now on (LoRA layers are injected in place; see the
    module docstring); it stays on the device it was loaded on. ``base_model_id`` is what
    ``load_checkpoint`` will pass to its ``base_loader`` to re-create the base (a Hugging Face id,
    a local path or ``"packaged:..."``). ``progress`` receives ``{step, loss, lr, tokens_seen, seconds}``
    every ``config.log_every`` steps and after the last step (``loss``: mean over the steps since
    the previous report; ``tokens_seen``: non-padding tokens processed so far). ``manifest`` adds
    caller fields (subset hash, selection method, budget, scorer settings...) to the checkpoint
    manifest. Raises ``ValueError`` on an empty subset or when no example keeps an answer token.
    """
    from peft import LoraConfig, TaskType, get_peft_model

    from instsel_assets.training.checkpoint import save_checkpoint

    config.validate()
    if len(conversations_list) == 0:
        raise ValueError("finetune_lora: the training subset is empty")

    started = time.perf_counter()
    examples: list[EncodedExample] = []
    n_skipped = 0
    for conversations in conversations_list:
        encoded = encode_example(tokenizer, conversations, config.max_length)
        if encoded is None:
            n_skipped += 1
        else:
            examples.append(encoded)
    if not examples:
        raise ValueError(
            f"finetune_lora: none of the {len(conversations_list)} examples has an answer token within "
            f"max_length={config.max_length}")

    param = next(model.parameters())
    device = param.device
    use_cuda = device.type == "cuda"
    autocast_dtype = autocast_dtype_for(device, config.precision)
    if not use_cuda and param.dtype != torch.float32:
        model = model.float()

    torch.manual_seed(config.seed)
    if use_cuda:
        torch.cuda.manual_seed_all(config.seed)
    lora_config = LoraConfig(
        task_type=TaskType.CAUSAL_LM, r=config.lora_r, lora_alpha=config.lora_alpha,
        lora_dropout=config.lora_dropout, target_modules=list(config.target_modules), bias="none")
    with warnings.catch_warnings():  # peft 0.21 calls a transformers 5 deprecated property
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
        peft_model = get_peft_model(model, lora_config)
    peft_model.peft_config["default"].base_model_name_or_path = base_model_id
    trainable = [p for p in peft_model.parameters() if p.requires_grad]
    trainable_params = sum(p.numel() for p in trainable)

    optimizer, scheduler = adamw_with_schedule([{"params": trainable, "lr": config.learning_rate}],
                                               weight_decay=config.weight_decay, warmup_steps=config.warmup_steps,
                                               max_steps=config.max_steps)
    fast_head = _supports_logits_to_keep(peft_model)
    pad_id = _pad_token_id(tokenizer)

    peft_model.train()
    losses: list[float] = []
    tokens_seen = 0
    window: list[float] = []
    batches = batch_indices(len(examples), config.batch_size, config.seed)
    for step in range(1, config.max_steps + 1):
        batch = collate([examples[i] for i in next(batches)], pad_id)
        batch = {k: v.to(device) for k, v in batch.items()}
        lr = optimizer.param_groups[0]["lr"]
        with torch.autocast(device_type=device.type, dtype=autocast_dtype, enabled=autocast_dtype is not None):
            loss, _ = batch_loss(peft_model, batch, fast_head=fast_head)
        value = optimizer_step(loss, optimizer, scheduler, trainable, config.grad_clip, who="finetune_lora", step=step)
        losses.append(value)
        window.append(value)
        tokens_seen += int(batch["attention_mask"].sum())
        if progress is not None and (step % config.log_every == 0 or step == config.max_steps):
            progress({"step": step, "loss": sum(window) / len(window), "lr": lr, "tokens_seen": tokens_seen,
                      "seconds": time.perf_counter() - started})
            window = []
    peft_model.eval()
    seconds = time.perf_counter() - started

    result = TrainResult(
        out_dir=Path(out_dir), steps=config.max_steps, losses=losses, first_loss=losses[0], last_loss=losses[-1],
        n_examples=len(examples), n_skipped=n_skipped, trainable_params=trainable_params, seconds=seconds,
        model=peft_model)
    full_manifest: dict[str, Any] = dict(manifest or {})
    full_manifest.update({
        "base_model": base_model_id,
        "sft_config": config.to_dict(),
        "metrics": result.metrics(),
        "device": str(device),
        "autocast_dtype": str(autocast_dtype).replace("torch.", "") if autocast_dtype else None,
    })
    save_checkpoint(peft_model, tokenizer, out_dir, full_manifest)
    return result

