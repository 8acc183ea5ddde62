"""The shipped grids whose premises must be able to hold (configs/findings/small_data.yaml and its kin), at toy
size: the small-data grid's settings give an MLE run that overfits, so its premise check can pass; and a grid
stopped midway reports what it has (naming the runs it lacks), then, continued by the same command, ends with the
report of a grid that was never stopped."""

import json
from pathlib import Path

import pandas as pd
import pytest
import yaml

from findings import layout as L
from findings import rules as R
from findings import tables as T
from findings.grid import load_grid, train_all
from findings.report import run_fields, write_report
from tests.test_train import CrashAt, one_thread

REPO = Path(__file__).resolve().parents[1]
GRIDS = REPO / "configs" / "findings"


@pytest.mark.parametrize("name", ["small_data", "beams_text", "lam_text"])
def test_each_grid_file_states_its_premise_and_plans_three_seeds(name):
    """Every grid file loads (each run's config through the training command's checks) and says, before its
    runs, what it expects; every group has three seeds."""
    path = GRIDS / f"{name}.yaml"
    grid = load_grid(path)
    header = "".join(line for line in path.read_text().splitlines(keepends=True) if line.startswith("#"))
    assert "Premise" in header and "Stated before the runs" in header
    groups = {}
    for point in grid.points:
        groups.setdefault(point.name.rsplit("/seed", 1)[0], set()).add(point.values["seed"])
    assert groups and all(seeds == {0, 1, 2} for seeds in groups.values())
    tasks = {"small_data": "data in {math, summarize}", "beams_text": "data in {summarize, translate}",
             "lam_text": "data=summarize"}  # fmt: skip
    assert tasks[name] in run_fields(grid)  # the report's settings name every task of the grid


def toy_small_data(tmp_path: Path, methods=("mle",), seeds=(0, 1, 2), passes: int = 60):
    """configs/findings/small_data.yaml at toy size: the tiny preset from scratch on 4 math examples for 60
    passes (60 steps of 4), evaluated every 5 steps on 16 validation examples, checkpoints every 30 steps (every
    10 with fewer passes). From random weights the tiny preset needs a larger step than the base's fine-tuning
    (1e-2 against 1e-3) to memorise its examples within those passes."""
    spec = yaml.safe_load((GRIDS / "small_data.yaml").read_text())
    spec["output_dir"] = str(tmp_path / "small")
    spec["base"] |= dict(model="tiny", vocab_size=400, math_sizes=[64, 16, 16], max_length=160, validation_size=16,
                         per_device_train_batch_size=4, learning_rate=1e-2, warmup_steps=0, logging_steps=5,
                         eval_steps=5, save_steps=30 if passes == 60 else 10)  # fmt: skip
    first = spec["grid"][0]
    first["axes"] |= dict(data=["math"], method=list(methods), train_size=[4], max_steps=[passes], seed=list(seeds))
    spec["grid"] = [first]
    spec["sweep"] |= dict(limit=2, max_new_tokens=4)
    tmp_path.mkdir(parents=True, exist_ok=True)
    path = tmp_path / "small_data.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return load_grid(path)


def test_the_small_data_grid_at_toy_size_gives_an_overfitting_mle_run(tmp_path):
    grid = toy_small_data(tmp_path)
    with one_thread():
        train_all(grid)
    tables = T.gather(grid)
    runs = tables[L.RUNS]
    assert len(runs) == 3 and runs[L.TRAIN_EXAMPLES].eq(4).all() and runs[L.TASK].eq("math").all()
    rows = [json.loads(line) for line in (grid.run_dir(grid.points[0]) / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if "eval/nll" in r] == list(range(5, 61, 5))
    assert rows[0]["data/validation/examples"] == 16  # validation_size
    # the premise check of findings 4 and 5 passes: MLE's validation NLL rose significantly above its lowest
    (small,) = tables[L.SMALL_DATA].itertuples()
    assert small.overfit > 0 and small.min_nll_step < 60
    (evidence,) = R.td_mitigates_overfitting(tables[L.SMALL_DATA]).evidence
    assert evidence.startswith("4 examples: MLE's validation NLL rose") and "(MLE overfits)" in evidence


def comparable(out: Path) -> tuple[list, dict]:
    """A written report's verdicts and evidence, and its tables without the columns that name where the runs
    live (two copies of one grid differ only there)."""
    summary = json.loads((out / L.SUMMARY).read_text())
    tables = {}
    for name in L.TABLES:
        path = out / f"{name}.parquet"
        if path.is_file():
            table = pd.read_parquet(path)
            tables[name] = table.drop(columns="run", errors="ignore")
    return summary["findings"], tables


def test_a_grid_stopped_midway_reports_what_it_has_then_resumes_to_the_uninterrupted_report(tmp_path):
    """MLE and IQLearn (lam 0.3), one seed each, on the toy small-data grid cut to 20 passes. Stopped during the
    second run: the report is written from the first alone, says it is partial and names the unfinished run; the
    same command then resumes it, and the report equals the report of the grid trained straight through."""
    runs = dict(methods=("mle", "iqlearn-lam0.3"), seeds=(0,), passes=20)
    straight, stopped = toy_small_data(tmp_path / "straight", **runs), toy_small_data(tmp_path / "stopped", **runs)
    names = [p.name for p in stopped.points]
    with one_thread():
        train_all(straight)
        write_report(straight)
        train_all(toy_small_data(tmp_path / "stopped", **runs | {"methods": ("mle",)}))  # the first run, finished
        with pytest.raises(KeyboardInterrupt):  # the second run is killed at step 13, checkpoint-10 on disk
            train_all(stopped, callbacks=[CrashAt(13)])
        partial = write_report(stopped)
        summary = json.loads((partial.parent / L.SUMMARY).read_text())
        assert summary["incomplete_runs"] == [names[1]] and summary["missing_runs"] == []
        text = partial.read_text()
        assert "**Partial report:** 1 of the 2 planned runs have not finished" in text
        assert f"- Left out, started, not finished (1): `{names[1]}`." in text
        assert "- Run fields: data=math, model=tiny, max_steps=20, math_sizes=[64, 16, 16], eval_steps=5." in text
        assert T.progress(stopped) == {"finished": [names[0]], "incomplete": [names[1]], "missing": []}
        assert train_all(stopped) == {names[0]: "kept", names[1]: "resumed"}
        write_report(stopped)
    found, tables = comparable(stopped.output_dir / L.FINDINGS_DIR)
    want_found, want_tables = comparable(straight.output_dir / L.FINDINGS_DIR)
    assert found == want_found and tables.keys() == want_tables.keys()
    for name, table in tables.items():
        pd.testing.assert_frame_equal(table, want_tables[name], check_exact=True, obj=name)  # resumed bit for bit
    assert "Partial report" not in (stopped.output_dir / L.FINDINGS_DIR / L.REPORT).read_text()
