"""Checkpoint directories: save -> load round trip, atomic replace, clear errors, generation."""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path

import pytest
import torch

from instsel_assets.training.checkpoint import (
    ADAPTER_WEIGHTS,
    MANIFEST_NAME,
    CheckpointError,
    generate_text,
    load_checkpoint,
    read_manifest,
    save_checkpoint,
)
from instsel_assets.training.sft import SFTConfig, finetune_lora

ALPACA = Path(__file__).resolve().parents[2] / "data" / "pools" / "alpaca" / "alpaca_sample.json"

CONVERSATIONS = [
    [{"role": "user", "content": "What is the capital of France?"},
     {"role": "assistant", "content": "The capital of France is Paris."}],
    [{"role": "user", "content": "Name a primary color."},
     {"role": "assistant", "content": "Red is a primary color."}],
    [{"role": "user", "content": "Add two and three."},
     {"role": "assistant", "content": "Five."}],
]


@pytest.fixture
def trained(fresh_tiny_lm, tmp_path):
    make, tokenizer = fresh_tiny_lm
    cfg = SFTConfig(max_steps=8, batch_size=2, learning_rate=2e-2, log_every=4)
    out = tmp_path / "run" / "ckpt"
    result = finetune_lora(make(), tokenizer, CONVERSATIONS, out, cfg, base_model_id="tiny-base",
                           manifest={"subset_hash": "abc123", "selection_method": "random", "budget": 3})
    loader_calls = []

    def base_loader(name):
        loader_calls.append(name)
        return make(), copy.deepcopy(tokenizer)

    return result, out, base_loader, loader_calls, tokenizer


def _logits(model, tokenizer):
    ids = tokenizer("<|im_start|>user\nWhat is the capital?<|im_end|>\n", return_tensors="pt")["input_ids"]
    with torch.no_grad():
        return model(input_ids=ids).logits


def test_round_trip_gives_same_logits(trained):
    result, out, base_loader, calls, tokenizer = trained
    expected = _logits(result.model, tokenizer)
    model, tok, manifest = load_checkpoint(out, base_loader=base_loader)
    assert calls == ["tiny-base"]
    assert not hasattr(model, "peft_config")  # merged: a plain transformers model
    assert not model.training
    assert torch.allclose(_logits(model, tok), expected, atol=1e-5)
    assert tok("hello world")["input_ids"] == tokenizer("hello world")["input_ids"]
    assert tok.chat_template == tokenizer.chat_template

    unmerged, _, _ = load_checkpoint(out, base_loader=base_loader, merge=False)
    assert hasattr(unmerged, "peft_config")
    assert torch.allclose(_logits(unmerged, tok), expected, atol=1e-5)
    # The adapter changed the model: the base alone gives other logits.
    base, _ = base_loader("tiny-base")
    assert not torch.allclose(_logits(base, tok), expected, atol=1e-4)


def test_manifest_records_config_metrics_and_caller_fields(trained):
    result, out, *_ = trained
    m = read_manifest(out)
    assert m["base_model"] == "tiny-base" and m["format"] == "instsel-checkpoint" and m["adapter"] == "lora"
    assert m["sft_config"]["max_steps"] == 8 and m["sft_config"]["target_modules"] == ["q_proj", "v_proj"]
    assert m["metrics"]["losses"] == result.losses and m["metrics"]["trainable_params"] == result.trainable_params
    assert m["subset_hash"] == "abc123" and m["selection_method"] == "random" and m["budget"] == 3
    assert MANIFEST_NAME in m["files"] and ADAPTER_WEIGHTS in m["files"]


def test_checkpoint_holds_the_adapter_not_the_full_model(trained):
    result, out, *_ = trained
    names = {p.name for p in out.iterdir()}
    assert {ADAPTER_WEIGHTS, "adapter_config.json", MANIFEST_NAME, "tokenizer.json"} <= names
    assert not any(n.startswith(("model", "pytorch_model")) for n in names)
    adapter_bytes = (out / ADAPTER_WEIGHTS).stat().st_size
    assert adapter_bytes < result.trainable_params * 4 + 64 * 1024  # fp32 LoRA weights + header
    full_bytes = sum(p.numel() * 4 for p in result.model.get_base_model().parameters())
    assert adapter_bytes < full_bytes / 5
    assert not [p for p in out.parent.iterdir() if p.name.startswith(".")]  # no temp dirs left


def test_save_replaces_existing_only_when_complete(trained):
    result, out, base_loader, _, tokenizer = trained
    before = read_manifest(out)
    save_checkpoint(result.model, tokenizer, out, {**before, "budget": 99})
    assert read_manifest(out)["budget"] == 99

    class BrokenTokenizer:
        def save_pretrained(self, path):
            raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(result.model, BrokenTokenizer(), out, {**before, "budget": 1})
    assert read_manifest(out)["budget"] == 99  # the previous checkpoint is intact
    assert not [p for p in out.parent.iterdir() if p.name.startswith(".")]
    load_checkpoint(out, base_loader=base_loader)


def test_errors_name_the_directory(trained, tmp_path):
    result, out, base_loader, _, tokenizer = trained
    missing = tmp_path / "nope"
    with pytest.raises(FileNotFoundError, match=str(missing)):
        read_manifest(missing)
    with pytest.raises(FileNotFoundError, match=str(missing)):
        load_checkpoint(missing, base_loader=base_loader)

    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(FileNotFoundError, match=f"{empty}.*{MANIFEST_NAME}"):
        read_manifest(empty)

    (empty / MANIFEST_NAME).write_text("{not json")
    with pytest.raises(CheckpointError, match=f"{empty}.*not valid JSON"):
        read_manifest(empty)
    (empty / MANIFEST_NAME).write_text("[1, 2]")
    with pytest.raises(CheckpointError, match=str(empty)):
        read_manifest(empty)
    (empty / MANIFEST_NAME).write_text(json.dumps({"sft_config": {}}))
    with pytest.raises(CheckpointError, match=f"{empty}.*base_model"):
        read_manifest(empty)

    (out / ADAPTER_WEIGHTS).unlink()
    with pytest.raises(FileNotFoundError, match=f"{out}.*{ADAPTER_WEIGHTS}"):
        load_checkpoint(out, base_loader=base_loader)

    with pytest.raises(CheckpointError, match="base_model"):
        result.model.peft_config["default"].base_model_name_or_path = None
        save_checkpoint(result.model, tokenizer, tmp_path / "other", {})


def test_generate_text_returns_new_text_only(trained):
    _, out, base_loader, _, _ = trained
    model, tok, _ = load_checkpoint(out, base_loader=base_loader)
    text = generate_text(model, tok, "What is the capital of France?", max_new_tokens=8)
    assert isinstance(text, str)
    assert "<|im_start|>" not in text and "What is the capital" not in text


# ------------------------------------------------------------------------------------------ integration
@pytest.mark.integration
def test_smollm2_two_steps_on_alpaca_rows(tmp_path):
    # Not the session `smollm2` fixture: finetune_lora takes ownership of (and modifies) its model.
    from instsel_assets.models import loading

    rows = json.loads(ALPACA.read_text())[:4]
    conversations = [
        [{"role": "user", "content": r["instruction"] + ("\n\n" + r["input"] if r["input"] else "")},
         {"role": "assistant", "content": r["output"]}]
        for r in rows
    ]
    model, tokenizer = loading.load_causal_lm(loading.PACKAGED_SMOLLM2)
    cfg = SFTConfig(max_steps=2, batch_size=4, max_length=256, log_every=1)
    reports = []
    result = finetune_lora(model, tokenizer, conversations, tmp_path / "smol", cfg,
                           base_model_id=loading.PACKAGED_SMOLLM2, progress=reports.append)
    assert all(math.isfinite(x) for x in result.losses) and len(result.losses) == 2
    assert 0.5 < result.first_loss < 10
    assert result.trainable_params == 460_800  # q_proj + v_proj, r=8, 30 layers of SmolLM2-135M
    assert [r["step"] for r in reports] == [1, 2]
    assert (tmp_path / "smol" / ADAPTER_WEIGHTS).stat().st_size < 4 * 1024 * 1024

    loaded, tok, manifest = load_checkpoint(tmp_path / "smol", base_loader=loading.load_causal_lm)
    assert manifest["base_model"] == loading.PACKAGED_SMOLLM2
    text = generate_text(loaded, tok, "Give three tips for staying healthy.", max_new_tokens=12)
    assert isinstance(text, str) and text.strip()
