"""A text task's trivial baselines beside the sweep's aggregates: the sweep's table equals the baselines module's
report on the same prompts, and the app's temperature chart draws each as a line at its value."""

import json

import pytest

from analysis import baselines as B
from analysis import schema as S
from analysis.sweep import baseline_table, format_baselines
from app import charts
from tasks.text import task_splits

TASK, N = "summarize", 40  # choosing the baselines' settings scores every candidate on validation: once here


@pytest.fixture(scope="module")
def table():
    return baseline_table(TASK, task_splits(TASK), "test", N)


def test_sweep_baselines_equal_the_baselines_recomputed_from_their_settings(table):
    """Each row equals the baselines module's predictions for the chosen setting, scored by its own scorer."""
    examples = task_splits(TASK)["test"][:N]
    refs = B.references(examples)
    predictions = {
        "first_k_words": lambda setting: B.first_k_words(TASK, examples, setting["k"]),
        "best_constant": lambda setting: [setting["constant"]] * len(examples),
    }
    assert set(table[S.BASELINE]) == set(predictions) and (table[S.N] == N).all()
    for row in table.itertuples():
        setting = json.loads(getattr(row, S.BASELINE_SETTING))
        scores = B.score(TASK, predictions[getattr(row, S.BASELINE)](setting), refs)
        for m in S.TASK_METRICS[TASK]:
            mean, se = B.mean_se(scores[m])
            assert getattr(row, S.mean_col(m)) == pytest.approx(mean, abs=1e-9)
            assert getattr(row, S.se_col(m)) == pytest.approx(se, abs=1e-9)
    assert all(name in format_baselines(table) for name in predictions)


def test_temperature_chart_draws_the_baselines(table):
    quality = S.mean_col("rougeLsum")
    import pandas as pd

    points = pd.DataFrame({S.METHOD: ["mle"], S.STEP: [1], S.KIND: ["greedy"], S.TEMPERATURE: [0.0],
                           S.DECODING: ["greedy"], quality: [0.3], S.seed_se_col(quality): [0.01]})  # fmt: skip
    figure = charts.temperature_figure(points, quality, table)
    lines = [shape for shape in figure.layout.shapes if shape.type == "line"]
    # rel 1e-6, approx's default: float64 arithmetic on both sides
    assert sorted(line.y0 for line in lines) == pytest.approx(sorted(table[quality]))
