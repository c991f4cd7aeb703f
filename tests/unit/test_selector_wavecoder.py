"""WaveCoder selector: keep the rows the discriminator passes; a seeded sample when more pass than the budget."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from instsel_assets import registry
from instsel_assets.selection.wavecoder_pass import select_wavecoder


def frame(flags: dict[str, object]) -> pd.DataFrame:
    return pd.DataFrame({"id": list(flags), "wavecoder_pass": pd.Series(list(flags.values()), dtype=object)})


FLAGS = {"p1": True, "f1": False, "p2": np.bool_(True), "none": None, "nan": np.nan, "p3": True, "f2": False}


def test_keeps_passing_rows_in_candidate_order():
    assert select_wavecoder(frame(FLAGS), 10) == ["p1", "p2", "p3"]
    assert select_wavecoder(frame(FLAGS), 3) == ["p1", "p2", "p3"]


def test_seeded_sample_when_more_pass_than_the_budget():
    flags = {f"r{i:02d}": True for i in range(30)}
    first = select_wavecoder(frame(flags), 5, seed=1)
    assert len(first) == 5 and len(set(first)) == 5 and set(first) <= set(flags)
    assert select_wavecoder(frame(flags), 5, seed=1) == first
    assert select_wavecoder(frame(flags), 5, seed=2) != first


def test_bool_column_and_empty_cases():
    flags = pd.DataFrame({"id": ["a", "b"], "wavecoder_pass": [True, False]})
    assert select_wavecoder(flags, 5) == ["a"]
    assert select_wavecoder(frame({"x": False}), 5) == []
    assert select_wavecoder(frame(FLAGS), 0) == []


def test_errors_name_the_row_and_field():
    with pytest.raises(ValueError, match=r"row 'odd', field 'wavecoder_pass' = 'yes' is not a bool"):
        select_wavecoder(frame({"ok": True, "odd": "yes"}), 3)
    with pytest.raises(ValueError, match=r"needs column\(s\) \['wavecoder_pass'\]"):
        select_wavecoder(pd.DataFrame({"id": ["a"]}), 3)


def test_registered():
    info = registry.SELECTORS["wavecoder"]
    assert info.family == "powerful-llm" and info.fills_budget is False
    assert info.columns == ("id", "wavecoder_pass") and info.fn is select_wavecoder
