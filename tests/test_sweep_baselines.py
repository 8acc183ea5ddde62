"""A text task's trivial baselines beside the sweep's aggregates: the sweep's table equals the baselines module's
report on the same prompts, and the app's temperature chart draws each as a line at its value."""

import json

import pytest

from analysis import baselines as B
from analysis import schema as S
from analysis.sweep import baseline_table, format_baselines
from app import charts
from irl.text_tasks import task_splits


@pytest.mark.parametrize("task", ["summarize", "translate"])
def test_sweep_baselines_equal_the_baselines_report(task):
    splits = task_splits(task)
    n = 40
    table = baseline_table(task, splits, "test", n)
    head = {k: v[:n] for k, v in splits.items()} | {"train": splits["train"], "validation": splits["validation"]}
    report = {row["baseline"]: row for row in B.report(task, head, "test")}
    assert set(table[S.BASELINE]) == set(report) and (table[S.N] == n).all()
    for row in table.itertuples():
        expected = report[getattr(row, S.BASELINE)]
        assert json.loads(getattr(row, S.BASELINE_SETTING)) == expected["setting"]
        for m in S.TASK_METRICS[task]:
            assert getattr(row, S.mean_col(m)) == pytest.approx(expected[m], abs=1e-9)
            assert getattr(row, S.se_col(m)) == pytest.approx(expected[f"{m}_se"], abs=1e-9)
    assert all(name in format_baselines(table) for name in report)


def test_temperature_chart_draws_the_baselines():
    table = baseline_table("summarize", task_splits("summarize"), "test", 20)
    quality = S.mean_col("rougeLsum")
    import pandas as pd

    points = pd.DataFrame({S.METHOD: ["mle"], S.STEP: [1], S.KIND: ["greedy"], S.TEMPERATURE: [0.0],
                           S.DECODING: ["greedy"], quality: [0.3], S.seed_se_col(quality): [0.01]})  # fmt: skip
    figure = charts.temperature_figure(points, quality, table)
    lines = [shape for shape in figure.layout.shapes if shape.type == "line"]
    assert sorted(line.y0 for line in lines) == pytest.approx(sorted(table[quality]))
