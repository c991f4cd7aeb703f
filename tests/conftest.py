"""Shared test fixtures: offline environment, seeds, a tiny Llama + tokenizer, the packaged SmolLM2.

- ``tiny_tokenizer`` (session): a byte-level BPE trained in-process on English + Chinese text (~0.5 s),
  wrapped in ``PreTrainedTokenizerFast`` with ``<|im_start|>``/``<|im_end|>``/``<|pad|>`` special tokens,
  eos = ``<|im_end|>``, pad = ``<|pad|>`` and ChatML (``chat.DEFAULT_CHAT_TEMPLATE``).
  Treat it as read-only; ``tiny_lm`` hands out a copy.
- ``tiny_lm`` (function): ``(model, tokenizer)``, a freshly initialised 2-layer ``LlamaForCausalLM``
  (hidden 64, fp32, eval mode, seed 0) with a copy of the tokenizer.
- ``tiny_lm_factory`` (session): ``make(**config_overrides) -> (model, tokenizer)`` for other shapes
  (``make(num_hidden_layers=1)``, ``make(tie_word_embeddings=True)``, ``make(seed=3)``).
- ``smollm2`` (session): ``(model, tokenizer)`` of the packaged SmolLM2 in fp32 via
  ``loading.load_causal_lm``; tests using it must be marked ``@pytest.mark.integration``.
"""

from __future__ import annotations

import copy
import os
import random

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(2)

SEED = 0

TINY_CORPUS = [
    "Give three tips for staying healthy. Eat a balanced diet, exercise regularly and sleep well.",
    "What are the three primary colors? The three primary colors are red, blue, and yellow.",
    "Describe the structure of an atom. An atom is made up of a nucleus and electrons that orbit it.",
    "Write a short poem about the sea. The waves roll in, the gulls cry out, the tide goes back again.",
    "Translate 'good morning' into French. Bonjour.",
    "Summarise the following paragraph in one sentence.",
    "The quick brown fox jumps over the lazy dog while the cat sleeps in the sun.",
    "Explain why the sky is blue: sunlight is scattered by the molecules of the air, blue light the most.",
    "List five animals that live in the ocean: dolphin, shark, octopus, whale, and sea turtle.",
    "def add(a, b):\n    return a + b\n\nprint(add(2, 3))",
    "给出三个保持健康的建议。均衡饮食，经常锻炼，保证充足的睡眠。",
    "三原色是什么？三原色是红色、蓝色和黄色。",
    "描述原子的结构。原子由原子核和围绕它运动的电子组成。",
    "请把下面的句子翻译成英文：今天天气很好。The weather is nice today.",
    "写一首关于大海的短诗。海浪拍打着沙滩，海鸥在天空中飞翔。",
]
SPECIAL_TOKENS = ["<|im_start|>", "<|im_end|>", "<|pad|>"]


def build_tiny_tokenizer(texts: list[str] | None = None, vocab_size: int = 600):
    """Byte-level BPE trained on ``texts`` (default: ``TINY_CORPUS``), with ChatML."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    from instsel_assets.models import chat

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIAL_TOKENS,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    bpe.train_from_iterator((texts or TINY_CORPUS) * 4, trainer=trainer)
    tok = PreTrainedTokenizerFast(tokenizer_object=bpe, bos_token=None, eos_token="<|im_end|>",
                                  pad_token="<|pad|>", additional_special_tokens=["<|im_start|>"])
    tok.chat_template = chat.DEFAULT_CHAT_TEMPLATE
    tok.padding_side = "right"
    return tok


def build_tiny_llama(tokenizer, seed: int = SEED, **overrides):
    """A 2-layer, d=64 ``LlamaForCausalLM`` in fp32 and eval mode, sized to ``tokenizer``."""
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = dict(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
               num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=2048,
               tie_word_embeddings=False, pad_token_id=tokenizer.pad_token_id,
               eos_token_id=tokenizer.eos_token_id, bos_token_id=None)
    cfg.update(overrides)
    torch.manual_seed(seed)
    model = LlamaForCausalLM(LlamaConfig(**cfg))
    # Default init (std 0.02) gives near-uniform predictions; a larger scale makes per-token losses
    # differ, so tests that compare or rank losses are meaningful.
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() == 2:
                p.normal_(0.0, 0.2)
    return model.float().eval()


@pytest.fixture(scope="session", autouse=True)
def _seeds():
    random.seed(SEED)
    np.random.seed(SEED)
    torch.manual_seed(SEED)
    yield


@pytest.fixture(scope="session")
def tiny_tokenizer():
    return build_tiny_tokenizer()


@pytest.fixture(scope="session")
def tiny_lm_factory(tiny_tokenizer):
    def make(seed: int = SEED, **overrides):
        tok = copy.deepcopy(tiny_tokenizer)
        return build_tiny_llama(tok, seed=seed, **overrides), tok

    return make


@pytest.fixture
def tiny_lm(tiny_lm_factory):
    return tiny_lm_factory()


@pytest.fixture(scope="session")
def smollm2():
    from instsel_assets.models.loading import PACKAGED_SMOLLM2, load_causal_lm

    return load_causal_lm(PACKAGED_SMOLLM2, dtype="float32", device="cpu")


@pytest.fixture
def fresh_tiny_lm(tiny_lm_factory):
    """``(make_fresh_model, tokenizer)`` for code that takes ownership of its model (``finetune_lora``):
    every ``make_fresh_model()`` call is a deep copy of the same tiny Llama."""
    model, tokenizer = tiny_lm_factory()
    return lambda: copy.deepcopy(model), tokenizer


# ------------------------------------------------------------------- the scripted OpenAI-compatible server
@pytest.fixture
def server(monkeypatch):
    """``ScriptedOpenAIServer`` (tests/unit/scripted_openai_server.py) on 127.0.0.1: no ``OPENAI_API_KEY`` from
    the environment, no proxy for loopback; its ``"delay"`` fault waits 0.6 s."""
    from scripted_openai_server import ScriptedOpenAIServer

    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    with ScriptedOpenAIServer(delay_seconds=0.6) as srv:
        yield srv


@pytest.fixture
def backend(server):
    """An ``OpenAIBackend`` for model ``judge-model`` on ``server`` with the key ``TEST_API_KEY`` and a 0.3 s
    timeout, so that a scripted delay is a client timeout."""
    from scripted_openai_server import TEST_API_KEY

    from instsel_assets.judge.backends import OpenAIBackend

    b = OpenAIBackend("judge-model", base_url=server.url, api_key=TEST_API_KEY, timeout=0.3)
    yield b
    b.close()


# ------------------------------------------------------------------- isolated project home for defs tests
@pytest.fixture
def dagster_home(tmp_path, monkeypatch):
    """``INSTSEL_HOME`` and ``DAGSTER_HOME`` under ``tmp_path`` (the latter created), so a test's materialisations
    and tables stay in its own directory; returns ``tmp_path``."""
    monkeypatch.setenv("INSTSEL_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "dagster_home"))
    (tmp_path / "dagster_home").mkdir()
    return tmp_path


def save_tiny_causal_lm(directory, tokenizer) -> str:
    """A tiny random Llama (``build_tiny_llama``) and ``tokenizer`` saved to ``directory``: a model directory that
    loads through the real ``from_pretrained`` path. Returns the directory as a string."""
    build_tiny_llama(tokenizer).save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return str(directory)
