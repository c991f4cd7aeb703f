import os

import numpy as np
import pandas as pd
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

from instsel_assets.features.embeddings import (  # noqa: E402
    PACKAGED_MINILM,
    embed_texts,
    embedding_matrix,
    load_embedding_model,
    minilm_embedding,
    resolve_model_path,
)
from instsel_assets.registry import SCORERS  # noqa: E402


@pytest.fixture(scope="session")
def minilm():
    import torch

    torch.set_num_threads(2)
    return load_embedding_model(PACKAGED_MINILM)


def test_packaged_name_resolves_to_a_directory():
    path = resolve_model_path(PACKAGED_MINILM)
    assert isinstance(path, str) and os.path.isdir(path)
    assert resolve_model_path("sentence-transformers/all-MiniLM-L6-v2") == "sentence-transformers/all-MiniLM-L6-v2"
    with pytest.raises(ValueError, match="unknown packaged"):
        resolve_model_path("packaged:nope")


def test_shapes_dtype_and_normalisation(minilm):
    emb = embed_texts(minilm, ["Write a poem.", "", "写一首诗。"], batch_size=2)
    assert emb.shape == (3, 384)
    assert emb.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)
    empty = embed_texts(minilm, [])
    assert empty.shape == (0, 384) and empty.dtype == np.float32


def test_paraphrases_are_closer_than_unrelated_sentences(minilm):
    a, b, c, d = embed_texts(
        minilm,
        [
            "How do I bake a chocolate cake at home?",
            "What is a good recipe for making chocolate cake?",
            "Explain the causes of the French Revolution.",
            "Convert this Python list into a dictionary.",
        ],
    )
    assert a @ b > a @ c + 0.2
    assert a @ b > a @ d + 0.2


def test_batch_size_does_not_change_embeddings(minilm):
    texts = [f"instruction number {i} about topic {i % 3}" for i in range(7)]
    np.testing.assert_allclose(embed_texts(minilm, texts, batch_size=2), embed_texts(minilm, texts, batch_size=64), atol=1e-5)


def test_unloadable_model_gives_a_clear_error(tmp_path):
    with pytest.raises(RuntimeError, match="could not load embedding model"):
        load_embedding_model(str(tmp_path / "no-such-model"))


def test_scorer_embeds_the_user_side(minilm):
    info = SCORERS["minilm_embedding"]
    assert info.family == "metric-set" and info.columns == ("embedding",)
    assert info.fn is minilm_embedding
    pool = pd.DataFrame(
        {
            "id": ["a", "b"],
            "conversations": [
                np.array([{"role": "user", "content": "Name three fruits."},
                          {"role": "assistant", "content": "Apple, pear, plum."}], dtype=object),
                None,
            ],
            "instruction": ["Name three fruits.", "Summarise the text."],
            "input": ["", "The cat sat on the mat."],
            "output": ["Apple, pear, plum.", "A cat sat."],
        }
    )
    out = minilm_embedding(pool, model=minilm)
    assert list(out.columns) == ["id", "embedding"]
    assert out["id"].tolist() == ["a", "b"]
    expected = embed_texts(minilm, ["Name three fruits.", "Summarise the text.\nThe cat sat on the mat."])
    np.testing.assert_allclose(embedding_matrix(out["embedding"]), expected, atol=1e-5)


def test_embedding_matrix_accepts_lists_and_rejects_ragged_or_missing():
    m = embedding_matrix([[1, 2], np.array([3.0, 4.0])])
    assert m.shape == (2, 2) and m.dtype == np.float32
    with pytest.raises(ValueError, match="different lengths"):
        embedding_matrix([[1, 2], [1, 2, 3]])
    with pytest.raises(ValueError, match="missing"):
        embedding_matrix([[1, 2], None])
