import numpy as np
import pandas as pd
import pytest

from instsel_assets.registry import SELECTORS
from instsel_assets.selection.prompt_uncertainty_top import select_prompt_uncertainty


@pytest.fixture()
def candidates():
    # tasks: t1 = {a, b, c} (mean 0.2), t2 = {d, e} (mean 0.35), f alone (its own value 0.3), g unscored
    return pd.DataFrame(
        {
            "id": ["a", "b", "c", "d", "e", "f", "g"],
            "prompt_uncertainty": [0.1, 0.4, 0.1, 0.3, 0.4, 0.3, np.nan],
            "task_prompt_uncertainty": [0.2, 0.2, 0.2, 0.35, 0.35, 0.3, 0.2],
        }
    )


def test_registered():
    info = SELECTORS["prompt_uncertainty"]
    assert info.fn is select_prompt_uncertainty and info.family == "trainable-llm"
    assert info.columns == ("id", "prompt_uncertainty", "task_prompt_uncertainty")
    assert "Active Instruction Tuning" in info.paper


def test_example_level_highest_first_ties_by_id(candidates):
    assert select_prompt_uncertainty(candidates, 100) == ["b", "e", "d", "f", "a", "c"]
    assert select_prompt_uncertainty(candidates, 3, level="example") == ["b", "e", "d"]


def test_task_level_whole_tasks_first_then_row_uncertainty(candidates):
    assert select_prompt_uncertainty(candidates, 100, level="task") == ["e", "d", "f", "b", "a", "c"]
    # a budget ending inside a task takes its most uncertain rows
    assert select_prompt_uncertainty(candidates, 4, level="task") == ["e", "d", "f", "b"]


def test_unscored_rows_are_never_selected(candidates):
    for level in ("example", "task"):
        assert "g" not in select_prompt_uncertainty(candidates, 100, level=level)
    no_task = candidates.assign(task_prompt_uncertainty=[0.2, np.nan, 0.2, 0.35, 0.35, 0.3, 0.2])
    assert "b" not in select_prompt_uncertainty(no_task, 100, level="task")


def test_example_level_reads_no_task_column_and_is_order_independent(candidates):
    rows = candidates.drop(columns=["task_prompt_uncertainty"])
    assert select_prompt_uncertainty(rows, 3) == ["b", "e", "d"]
    rng = np.random.default_rng(0)
    frame = pd.DataFrame({"id": [f"r{i}" for i in range(300)], "prompt_uncertainty": rng.uniform(0, 0.3, 300),
                          "task_prompt_uncertainty": rng.choice([0.1, 0.2, 0.15], 300)})
    for level in ("example", "task"):
        picked = select_prompt_uncertainty(frame, 40, level=level, seed=1)
        assert picked == select_prompt_uncertainty(frame.sample(frac=1.0, random_state=2), 40, level=level)
    picked = frame.set_index("id").loc[select_prompt_uncertainty(frame, 120, level="task")]
    assert (np.diff(picked["task_prompt_uncertainty"].to_numpy()) <= 0).all()
    assert set(picked["task_prompt_uncertainty"]) == {0.2, 0.15}


def test_errors(candidates):
    with pytest.raises(ValueError, match="level"):
        select_prompt_uncertainty(candidates, 2, level="tasks")
    with pytest.raises(ValueError, match="'task_prompt_uncertainty'"):
        select_prompt_uncertainty(candidates.drop(columns=["task_prompt_uncertainty"]), 2, level="task")
    with pytest.raises(ValueError, match="'prompt_uncertainty'"):
        select_prompt_uncertainty(candidates.drop(columns=["prompt_uncertainty"]), 2)
    with pytest.raises(ValueError, match="budget"):
        select_prompt_uncertainty(candidates, 1.5)
    assert select_prompt_uncertainty(candidates, 0) == []
    assert select_prompt_uncertainty(candidates.iloc[:0], 3, level="task") == []
