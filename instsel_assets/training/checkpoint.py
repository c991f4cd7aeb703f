"""Checkpoint directories of fine-tuned models: LoRA adapter + tokenizer + manifest.

A checkpoint directory holds

- ``adapter_model.safetensors`` and ``adapter_config.json``: the LoRA adapter only (a few MB), never
  the merged full model; the base is re-created from ``manifest["base_model"]`` when loading;
- the tokenizer files (``tokenizer.json``, ``tokenizer_config.json``, ...), chat template included;
- ``instsel_checkpoint.json``: the manifest (base model id, SFT config, training metrics and whatever
  the caller adds: subset hash, selection method, budget, scorer settings...).

Writes are atomic: everything goes to a temporary sibling directory which replaces ``out_dir`` only
once complete (an existing checkpoint is moved aside, the new one renamed in, the old one deleted).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
import uuid
import warnings
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch

MANIFEST_NAME = "instsel_checkpoint.json"
ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
FORMAT = "instsel-checkpoint"
FORMAT_VERSION = 1


class CheckpointError(ValueError):
    """A checkpoint directory is incomplete or its manifest is invalid (the message names the directory)."""


def _jsonable(value: Any) -> Any:
    """Manifests must be JSON: tuples become lists, paths and other objects become strings."""
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [_jsonable(v) for v in value]
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    if hasattr(value, "item") and callable(value.item):  # numpy / torch scalars
        try:
            return value.item()
        except (TypeError, ValueError):
            pass
    return str(value)


def save_checkpoint(peft_model, tokenizer, out_dir: str | os.PathLike, manifest: Mapping[str, Any]) -> Path:
    """Write the LoRA adapter, the tokenizer and the manifest to ``out_dir`` atomically; returns ``out_dir``.

    ``manifest`` must name the base model (``"base_model"``) unless the adapter config carries it.
    ``out_dir`` is replaced only after the new checkpoint is completely written.
    """
    out_dir = Path(out_dir)
    body = dict(manifest)
    base_model = body.get("base_model")
    if not base_model:
        try:
            base_model = peft_model.peft_config["default"].base_model_name_or_path
        except (AttributeError, KeyError):
            base_model = None
    if not base_model:
        raise CheckpointError(f"save_checkpoint({out_dir}): the manifest must name the base model ('base_model')")
    body["base_model"] = str(base_model)
    body.setdefault("format", FORMAT)
    body.setdefault("format_version", FORMAT_VERSION)
    body.setdefault("adapter", "lora")
    body.setdefault("created_at", time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
    try:
        body.setdefault("lora", _jsonable(peft_model.peft_config["default"].to_dict()))
    except (AttributeError, KeyError):
        pass

    from instsel_assets.tempfiles import sweep_stale

    out_dir.parent.mkdir(parents=True, exist_ok=True)
    sweep_stale(out_dir.parent, f".{out_dir.name}.tmp-*")  # left by a save that was killed
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.tmp-", dir=out_dir.parent))
    try:
        # save_embedding_layers=False: the base (embeddings included) is re-created by the base loader;
        # "auto" would probe the hub for the base config.
        peft_model.save_pretrained(str(tmp), safe_serialization=True, save_embedding_layers=False)
        if not (tmp / ADAPTER_WEIGHTS).is_file():
            raise CheckpointError(f"save_checkpoint({out_dir}): peft did not write {ADAPTER_WEIGHTS}")
        tokenizer.save_pretrained(str(tmp))
        body["files"] = sorted(p.name for p in tmp.iterdir()) + [MANIFEST_NAME]
        text = json.dumps(_jsonable(body), indent=2, sort_keys=True, allow_nan=True)
        with open(tmp / MANIFEST_NAME, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        replace_directory(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out_dir


def replace_directory(tmp: Path, out_dir: Path) -> None:
    """Swap a fully written sibling directory ``tmp`` into ``out_dir`` (the old one, if any, is renamed aside
    first and removed after), so a reader never sees a half-written checkpoint."""
    old = None
    if out_dir.exists():
        old = out_dir.parent / f".{out_dir.name}.old-{uuid.uuid4().hex[:8]}"
        os.replace(out_dir, old)
    os.replace(tmp, out_dir)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def read_manifest(out_dir: str | os.PathLike) -> dict[str, Any]:
    """The manifest of a checkpoint directory; ``FileNotFoundError`` / ``CheckpointError`` name the directory."""
    out_dir = Path(out_dir)
    if not out_dir.is_dir():
        raise FileNotFoundError(f"checkpoint directory {out_dir} does not exist")
    path = out_dir / MANIFEST_NAME
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint directory {out_dir} has no {MANIFEST_NAME} (incomplete or not a checkpoint)")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"checkpoint directory {out_dir}: {MANIFEST_NAME} is not valid JSON ({exc})") from exc
    if not isinstance(manifest, dict):
        raise CheckpointError(f"checkpoint directory {out_dir}: {MANIFEST_NAME} is not a JSON object")
    base_model = manifest.get("base_model")
    if not isinstance(base_model, str) or not base_model:
        raise CheckpointError(f"checkpoint directory {out_dir}: {MANIFEST_NAME} has no 'base_model'")
    if manifest.get("format", FORMAT) != FORMAT:
        raise CheckpointError(
            f"checkpoint directory {out_dir}: {MANIFEST_NAME} has format {manifest.get('format')!r}, expected {FORMAT!r}")
    return manifest


def load_checkpoint(out_dir: str | os.PathLike, *, base_loader: Callable[[str], tuple[Any, Any]],
                    merge: bool = True) -> tuple[Any, Any, dict[str, Any]]:
    """Re-create the fine-tuned model: ``(model, tokenizer, manifest)``.

    The base comes from ``base_loader(manifest["base_model"])`` (e.g. ``load_causal_lm``) and keeps
    the device/dtype the loader chose; the adapter is applied on top and, with ``merge=True``,
    merged into the base weights (a plain transformers model: fastest for inference). With
    ``merge=False`` a ``peft.PeftModel`` is returned. The tokenizer is the one saved in the
    checkpoint (the one used for training, chat template included); the loader's tokenizer is
    used only when the checkpoint holds none. The model is returned in eval mode.
    """
    from peft import PeftModel

    out_dir = Path(out_dir)
    manifest = read_manifest(out_dir)
    for name in (ADAPTER_CONFIG, ADAPTER_WEIGHTS):
        if not (out_dir / name).is_file():
            raise FileNotFoundError(f"checkpoint directory {out_dir} has no {name} (the LoRA adapter is missing)")
    base, base_tokenizer = base_loader(manifest["base_model"])
    with warnings.catch_warnings():  # peft 0.21 calls a transformers 5 deprecated property
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
        model = PeftModel.from_pretrained(base, str(out_dir), is_trainable=False)
    if merge:
        model = model.merge_and_unload()
    model.eval()
    tokenizer = base_tokenizer
    if (out_dir / "tokenizer.json").is_file() or (out_dir / "tokenizer_config.json").is_file():
        from transformers import AutoTokenizer

        try:
            tokenizer = AutoTokenizer.from_pretrained(str(out_dir))
        except Exception as exc:  # noqa: BLE001 - the base tokenizer is a valid fallback, but say so
            if base_tokenizer is None:
                raise CheckpointError(f"checkpoint directory {out_dir}: the tokenizer does not load ({exc})") from exc
    if tokenizer is None:
        raise CheckpointError(f"checkpoint directory {out_dir}: no tokenizer saved and the base loader gave none")
    return model, tokenizer, manifest


@torch.no_grad()
def generate_text(model, tokenizer, prompt: str, max_new_tokens: int = 32) -> str:
    """Greedy continuation of ``prompt`` as a user turn (chat template, generation prompt); only the new text."""
    from instsel_assets.models.chat import render

    text = render(tokenizer, [{"role": "user", "content": prompt}], add_generation_prompt=True)
    encoded = tokenizer(text, add_special_tokens=False, return_tensors="pt")
    device = next(model.parameters()).device
    input_ids = encoded["input_ids"].to(device)
    attention_mask = encoded.get("attention_mask")
    attention_mask = torch.ones_like(input_ids) if attention_mask is None else attention_mask.to(device)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    was_training = model.training
    model.eval()
    try:
        output = model.generate(input_ids=input_ids, attention_mask=attention_mask, max_new_tokens=max_new_tokens,
                                do_sample=False, pad_token_id=pad_id)
    finally:
        if was_training:
            model.train()
    new_tokens = output[0, input_ids.shape[1]:]
    return tokenizer.decode(new_tokens, skip_special_tokens=True)
