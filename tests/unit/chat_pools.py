"""The small chat pool the scorer tests share (imported by the test modules of this directory)."""

from __future__ import annotations

import numpy as np
import pandas as pd


def conv(user: str, answer: str) -> list[dict[str, str]]:
    """One single-turn conversation as the pool stores it."""
    return [{"role": "user", "content": user}, {"role": "assistant", "content": answer}]


def small_chat_pool() -> pd.DataFrame:
    """Four single-turn rows ``a``-``d`` (English and Chinese), a fresh frame on every call.

    Row ``d``'s conversation is a numpy object array of dicts, the shape DuckDB hands out, so every scorer
    is also exercised on the input it gets in the pipeline.
    """
    return pd.DataFrame({
        "id": ["a", "b", "c", "d"],
        "conversations": [
            conv("Give three tips for staying healthy.", "Eat a balanced diet, exercise and sleep well."),
            conv("What are the three primary colors?", "Red, blue, and yellow."),
            conv("三原色是什么？", "三原色是红色、蓝色和黄色。"),
            np.array(conv("Write a short poem about the sea.", "The waves roll in, the gulls cry out."), dtype=object),
        ],
    })
