"""The one reader of results (analysis/results.py): the app's runs table and the findings tables describe runs made
by the real writers alike, and a damaged file is a one-line message naming it, never a traceback or a number.

    .venv/bin/python -m pytest -q tests/test_results.py
"""

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import streamlit as st
import yaml
from streamlit.testing.v1 import AppTest

from analysis import results
from analysis import schema as S
from findings import layout as L
from findings import tables as T

REPO = Path(__file__).resolve().parents[1]
MAIN = str(REPO / "app" / "main.py")
TRAIN = dict(
    model="tiny", vocab_size=400, math_sizes=[16, 4, 4], max_length=128, per_device_train_batch_size=2, max_steps=2,
    learning_rate=3e-3, warmup_steps=0, logging_steps=1, eval_steps=2, save_steps=2, sample_max_new_tokens=8,
)  # fmt: skip
METHODS = [
    {"name": "mle", "objective": "mle"},
    {"name": "mle-entropy", "objective": "mle", "beta": 0.1},
    {"name": "iqlearn", "objective": "iqlearn", "lam": 0.3},
    {"name": "iqlearn-online", "objective": "iqlearn", "lam": 0.3, "alpha": 0.5},
]
# What the runs are, by hand (analysis.results.run_attributes); the MLE configs hold the default lam 0.1
EXPECTED = {
    "mle": dict(family="mle", lam=0.0, gamma=np.nan, alpha=np.nan, beta=0.0, online=False),
    "mle-entropy": dict(family="mle+entropy", lam=0.0, gamma=np.nan, alpha=np.nan, beta=0.1, online=False),
    "iqlearn": dict(family="iqlearn", lam=0.3, gamma=0.99, alpha=0.0, beta=0.0, online=False),
    "iqlearn-online": dict(family="iqlearn-online", lam=0.3, gamma=0.99, alpha=0.5, beta=0.0, online=True),
}
SHARED = (*results.ATTRIBUTES, S.SEED)  # the columns both tables hold


def grid_file(directory: Path, output_dir: Path) -> str:
    path = directory / "grid.yaml"
    spec = {"output_dir": str(output_dir), "base": TRAIN, "methods": METHODS,
            "grid": [{"axes": {"method": [m["name"] for m in METHODS]}}], "rewards": False}  # fmt: skip
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return str(path)


@pytest.fixture(scope="module")
def four_runs(tmp_path_factory) -> Path:
    """MLE, MLE + entropy, offline and online IQLearn trained by the grid's own training step (irl.train.train),
    2 steps of the tiny preset each; returns the grid file."""
    import torch

    from findings.grid import load_grid, train_point

    tmp = tmp_path_factory.mktemp("four")
    path = grid_file(tmp, tmp / "grid")
    grid = load_grid(path)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for point in grid.points:
            assert train_point(grid, point) == "trained"
    finally:
        torch.set_num_threads(threads)
    return Path(path)


def app_runs(root: Path) -> pd.DataFrame:
    from app import data

    st.cache_data.clear()
    runs, _, skipped = data.index(root)
    assert skipped == []
    return runs


def test_app_and_findings_give_each_run_the_same_attributes(four_runs):
    from findings.grid import load_grid

    grid = load_grid(four_runs)
    app = app_runs(grid.output_dir).set_index(S.RUN)
    findings = T.gather(grid)[L.RUNS].set_index(L.NAME)
    assert sorted(app.index) == sorted(findings.index) == sorted(EXPECTED)
    for run, expected in EXPECTED.items():
        a, f = app.loc[run, list(SHARED)].to_dict(), findings.loc[run, list(SHARED)].to_dict()
        assert a.keys() == f.keys()
        for key in SHARED:  # NaN in one and a number in the other fails
            assert (pd.isna(a[key]) and pd.isna(f[key])) or a[key] == f[key], (run, key, a[key], f[key])
        for key, value in expected.items():
            assert (pd.isna(value) and pd.isna(a[key])) or a[key] == value, (run, key, a[key], value)
        objective = next(m["objective"] for m in METHODS if m["name"] == run)
        assert (a["objective"], a["base"], a[S.SEED]) == (objective, "tiny", 0)


def test_app_labels_rows_with_their_runs_as_a_merge_would():
    """app.data.with_runs (each run's and checkpoint's values looked up once and taken per row) against the
    obvious merge on run, then on (run, step): rows in their order on a fresh index, a run the runs table lacks
    left empty, a table's own method and checkpoint columns replaced."""
    from app import data

    runs = pd.DataFrame({S.RUN: ["a/seed0", "b/seed0"], S.METHOD: ["mle", "iqlearn"], S.LAM: [0.0, 0.1],
                         "objective": ["mle", "iqlearn"], S.SEED: [0, 0]})  # fmt: skip
    rng = np.random.default_rng(0)
    table = pd.DataFrame({S.RUN: rng.choice(["b/seed0", "a/seed0", "gone/seed1"], 500),
                          S.STEP: rng.choice([4, 8, 100], 500), "x": np.arange(500), S.METHOD: "stale",
                          S.CHECKPOINT: "stale"}, index=rng.permutation(500))  # fmt: skip
    meta = runs[[S.RUN, S.METHOD, S.LAM, "objective"]]
    merged = table.drop(columns=[S.METHOD, S.CHECKPOINT]).merge(meta, on=S.RUN, how="left")
    merged[S.CHECKPOINT] = [f"{r}@{s}" for r, s in zip(merged[S.RUN], merged[S.STEP])]
    pd.testing.assert_frame_equal(data.with_runs(table, runs), merged)
    assert data.with_runs(table, runs)[S.METHOD].isna().sum() == (table[S.RUN] == "gone/seed1").sum() > 0
    pd.testing.assert_frame_equal(data.with_runs(table.iloc[:0], runs), merged.iloc[:0])


def test_readers_import_no_torch():
    code = ("import sys; import analysis.results, app.data, app.tables, findings.tables, findings.report; "
            "assert 'torch' not in sys.modules, 'torch imported'")  # fmt: skip
    subprocess.run([sys.executable, "-c", code], cwd=REPO, check=True)


def copied_grid(four_runs: Path, tmp_path: Path) -> str:
    shutil.copytree(four_runs.parent / "grid", tmp_path / "grid")
    return grid_file(tmp_path, tmp_path / "grid")


def test_a_half_written_last_metrics_line_is_left_out_everywhere(four_runs, tmp_path, capsys):
    """As a killed trainer leaves it: the app, the findings tables and `findings report` read the whole lines."""
    from findings.__main__ import main

    path = copied_grid(four_runs, tmp_path)
    metrics = tmp_path / "grid" / "mle" / "metrics.jsonl"
    whole = results.read_metrics(metrics)
    with open(metrics, "a") as fh:
        fh.write('{"step": 3, "train/lo')
    pd.testing.assert_frame_equal(results.read_metrics(metrics), whole)
    main(["report", "--config", path])
    assert capsys.readouterr().out.strip().splitlines()[-1].endswith(L.REPORT)
    report = pd.read_parquet(tmp_path / "grid" / L.FINDINGS_DIR / f"{L.RUNS}.parquet").set_index(L.NAME)
    assert report.loc["mle", L.FINAL_NLL] == whole["eval/nll"].dropna().iloc[-1]


def test_a_damaged_metrics_line_is_named(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"step": 1, "train/loss": 2.0}\n{"step": 2, "tra\n{"step": 3, "train/loss": 1.0}\n')
    with pytest.raises(results.FileError, match=rf"^{path}: line 2 is not JSON"):
        results.read_metrics(path)


def test_findings_report_before_any_grid_run_is_one_line(tmp_path):
    from findings.__main__ import main

    with pytest.raises(SystemExit) as exit_:
        main(["report", "--config", grid_file(tmp_path, tmp_path / "never-run")])
    message = str(exit_.value.code)
    assert message.startswith(f"error: {tmp_path / 'never-run'}: no run of the grid has finished yet")
    assert "\n" not in message and "python -m findings grid" in message


@pytest.mark.parametrize("page, damaged", [("samples", "samples-t=1.parquet"),
                                           ("quality_diversity", "aggregate.parquet")])  # fmt: skip
def test_a_truncated_parquet_file_is_named_on_its_page(monkeypatch, real_runs, tmp_path, page, damaged):
    root = tmp_path / "runs"
    shutil.copytree(real_runs.root, root)
    path = root / "mle" / "seed0" / "checkpoint-4" / "sweep" / real_runs.sweep_split / damaged
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    st.cache_data.clear()
    monkeypatch.setattr(sys, "argv", [MAIN, "--runs-dir", str(root)])
    at = AppTest.from_file(MAIN, default_timeout=60).run()
    at.switch_page(f"views/{page}.py").run()
    assert not at.exception, [e.message for e in at.exception]
    assert [e.value for e in at.error] == [e.value for e in at.error if str(path.resolve()) in e.value]
    assert len(at.error) == 1 and "damaged" in at.error[0].value


def test_rewards_directory_names_parse_back():
    from irl import runs

    for split, decoding, limit in (("test", "t=1", None), ("test", "t=0.5", 50), ("validation", "beam=4", 3),
                                   ("test", "greedy", None)):  # fmt: skip
        name = runs.sweep_rewards_name(split, decoding, limit)
        assert runs.parse_sweep_rewards_name(name) == (split, decoding, limit)
    for other in ("math-preferences", runs.rewards_name("math-preferences", 50), "summarize-preferences", "test"):
        assert runs.parse_sweep_rewards_name(other) is None
    assert runs.pairs_rewards_name("data/summarize/preferences.jsonl") == "summarize-preferences"


def test_a_half_written_timings_line_is_left_out(tmp_path):
    """findings/report.py's timings.jsonl, appended once per command as metrics.jsonl is, read by the same rule."""
    path = tmp_path / "timings.jsonl"
    path.write_text('{"command": "grid", "seconds": {"train": 1.0}}\n{"command": "ru')
    assert results.read_jsonl(path) == [{"command": "grid", "seconds": {"train": 1.0}}]
