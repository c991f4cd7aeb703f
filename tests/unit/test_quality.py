"""Great Expectations suites catch what they claim to catch."""

import pandas as pd
import pytest

from instsel_assets.quality.expectations import SUITES, validate_frame


def test_valid_subset_passes():
    result = validate_frame(pd.DataFrame({"id": ["a", "b"], "selection_rank": [0, 1]}), "selected_subsets")
    assert result.success and result.evaluated == len(SUITES["selected_subsets"])


def test_duplicate_ids_and_negative_rank_fail_with_examples():
    result = validate_frame(pd.DataFrame({"id": ["a", "b", "b"], "selection_rank": [0, 1, -1]}), "selected_subsets")
    assert not result.success
    failed = {(f["expectation"], f["column"]) for f in result.failures}
    assert ("expect_column_values_to_be_unique", "id") in failed
    assert ("expect_column_values_to_be_between", "selection_rank") in failed
    assert "b" in result.summary()


def test_missing_column_fails():
    result = validate_frame(pd.DataFrame({"other": [1]}), "selected_subsets")
    assert not result.success and {f["column"] for f in result.failures} == {"id", "selection_rank"}


@pytest.mark.parametrize("ifd, ok", [(0.8, True), (1.3, True), (0.0, False), (float("nan"), False)])
def test_ifd_suite_bounds(ifd, ok):
    frame = pd.DataFrame({"id": ["a"], "ifd": [ifd], "loss_answer": [2.0], "loss_answer_given_instruction": [1.5]})
    assert validate_frame(frame, "ifd_scores").success is ok
