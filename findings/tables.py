"""The grid's runs gathered into the tidy tables the findings are decided on, plotted from and shown by the app
(findings/layout.py names them). Reads only what the grid wrote, through analysis/results.py: each run's
config.yaml and metrics.jsonl, its last checkpoint's sweep aggregate and reward summaries. Torch-free (pandas,
numpy, scipy).

    tables = gather(grid)            # {layout name: DataFrame}
"""

from pathlib import Path

import numpy as np
import pandas as pd

from analysis import schema as S
from analysis.agreement import correlation_vs_lam
from analysis.results import read_metrics, read_parquet, run_attributes
from analysis.stats import aggregate_seeds
from common.io import FileError, read_json
from findings import layout as L
from irl import runs
from irl.runs import read_config

CORRELATED_SCORES = (S.R, S.LOGP_SUM)  # the reward beside its likelihood baseline (METHOD.md section 4)


def quality_metric(config: dict) -> str:
    """The per-sample quality metric the findings use: the task's first (exact_match on math)."""
    return S.TASK_METRICS[S.task_of(config)][0]


def _metrics(run_dir) -> pd.DataFrame:
    return read_metrics(Path(run_dir) / runs.METRICS)


def run_row(name: str, run_dir: Path, quality: str | None = None) -> dict:
    """One run's row of the runs table: its place in the grid, its attributes (analysis.results.run_attributes:
    family, lam, beta, ...), and its validation NLL: at the last evaluation, the lowest, and their difference
    (how far it rose)."""
    config = read_config(run_dir)
    metrics = _metrics(run_dir)
    nll = metrics.dropna(subset=["eval/nll"])["eval/nll"] if "eval/nll" in metrics else pd.Series(dtype=float)
    first = metrics[metrics[S.STEP] == 0].iloc[0] if (metrics[S.STEP] == 0).any() else {}
    last = runs.last_checkpoint(run_dir)
    return {
        L.NAME: name,
        L.GROUP: name.rsplit("/seed", 1)[0] if "/seed" in name else name,
        L.TASK: S.task_of(config),
        S.RUN: str(run_dir),
        S.METHOD: runs.method_label(config),
        **run_attributes(config),
        S.SEED: int(config["seed"]),
        L.TRAIN_SIZE: np.nan if config.get("train_size") is None else float(config["train_size"]),
        L.TRAIN_EXAMPLES: float(first.get("data/train/examples", np.nan)) if len(first) else np.nan,
        S.STEP: runs.step_of(last) if last is not None else np.nan,
        "quality_metric": quality or quality_metric(config),
        L.FINAL_NLL: float(nll.iloc[-1]) if len(nll) else np.nan,
        L.MIN_NLL: float(nll.min()) if len(nll) else np.nan,
        L.MIN_STEP: float(metrics.loc[nll.idxmin(), S.STEP]) if len(nll) else np.nan,
        L.OVERFIT: float(nll.iloc[-1] - nll.min()) if len(nll) else np.nan,
    }


RUN_KEYS = (L.NAME, L.GROUP, L.TASK, L.FAMILY, S.LAM, "beta", L.TRAIN_SIZE, L.TRAIN_EXAMPLES, "quality_metric")
GROUP_KEYS = (L.GROUP, L.TASK, S.METHOD, L.FAMILY, S.LAM, "beta", L.TRAIN_SIZE, "quality_metric")


def _sweep_aggregate(run: dict, split: str) -> pd.DataFrame | None:
    last = runs.last_checkpoint(run[S.RUN])
    path = runs.sweep_dir(last, split) / runs.AGGREGATE if last is not None else None
    if path is None or not path.is_file():
        return None
    return S.with_grid_columns(read_parquet(path)).assign(**{k: run[k] for k in RUN_KEYS})


def _rewards(run: dict, split: str) -> tuple[pd.DataFrame | None, dict | None]:
    """(sequences of the sweep cell's rewards, summary of the preference set) of a run's last checkpoint, each
    None when not extracted: the sweep cell's directory is named by irl.runs.sweep_rewards_name, the preference
    set's is the other one with pairs.parquet."""
    last = runs.last_checkpoint(run[S.RUN])
    found = sorted((last / runs.REWARDS).glob("*/" + runs.SUMMARY_FILE)) if last is not None else []
    sequences = preferences = None
    for summary in found:
        cell = runs.parse_sweep_rewards_name(summary.parent.name)
        if (summary.parent / runs.PAIRS_FILE).is_file():
            preferences = read_json(summary)
        elif cell is not None and cell[0] == split and (summary.parent / runs.SEQUENCES_FILE).is_file():
            sequences = read_parquet(summary.parent / runs.SEQUENCES_FILE)
    return sequences, preferences


def _seed_stats(table: pd.DataFrame, columns) -> pd.DataFrame:
    """Per group (GROUP_KEYS), each column's mean over seeds, its seed SE and n_seeds (aggregate_seeds)."""
    return aggregate_seeds(table, by=[k for k in GROUP_KEYS if k in table], metrics=list(columns))


def run_quality(cells: pd.DataFrame) -> str:
    """The aggregate column of the quality metric of one run's cells (its task's, or the grid's)."""
    return S.mean_col(cells["quality_metric"].iloc[0])


def beam_gains(aggregate: pd.DataFrame) -> pd.DataFrame:
    """Per run with a greedy cell and beam cells: greedy quality, the mean quality over beam widths, and their
    difference (the beam gain), each in the run's own quality metric."""
    rows = []
    for name, cells in aggregate.groupby(L.NAME, sort=True):
        quality = run_quality(cells)
        greedy = cells.loc[cells[S.KIND] == "greedy", quality]
        beams = cells.loc[cells[S.KIND] == "beam", quality]
        if len(greedy) and len(beams):
            first = cells.iloc[0]
            row = {k: first[k] for k in (*GROUP_KEYS, L.NAME, S.SEED)}
            rows.append(row | {"greedy": float(greedy.iloc[0]), "beam": float(beams.mean()),
                               L.BEAM_GAIN_COL: float(beams.mean() - greedy.iloc[0])})  # fmt: skip
    return pd.DataFrame(rows)


def progress(grid) -> dict[str, list[str]]:
    """The grid's planned runs by state, in plan order: "finished" (its last checkpoint is at its max_steps),
    "incomplete" (started, not finished) and "missing" (not started). Only finished runs enter the tables."""
    found = {"finished": [], "incomplete": [], "missing": []}
    for point in grid.points:
        run_dir = grid.run_dir(point)
        if not (run_dir / runs.CONFIG).is_file():
            found["missing"].append(point.name)
            continue
        last = runs.last_checkpoint(run_dir)
        done = last is not None and runs.step_of(last) == int(read_config(run_dir)["max_steps"])
        found["finished" if done else "incomplete"].append(point.name)
    return found


def gather(grid, split: str | None = None, n_boot: int = 1000, state: dict | None = None) -> dict[str, pd.DataFrame]:
    """The findings tables of a grid's finished runs (layout names; see findings/layout.py), from what is on
    disk. `split`: the swept split (default the grid's sweep split, else "test" when the runs swept one, else the
    one they swept). Quality is the grid's `findings.quality` metric, else each run's task's first; the tables
    that compare runs on one quality column (seed aggregates, correlations) use the first finished run's. `state`:
    the grid's runs by state (`progress`), when the caller states them too, so both read one look at the disk."""
    quality = grid.findings.get("quality")
    finished = set((state or progress(grid))["finished"])
    run_rows = [run_row(p.name, grid.run_dir(p), quality) for p in grid.points if p.name in finished]
    if not run_rows:
        raise FileError(grid.output_dir, "no run of the grid has finished yet; run `python -m findings grid "
                        "--config <this grid file>` first")  # fmt: skip
    table = pd.DataFrame(run_rows)
    split = split or grid.sweep.get("split") or _swept_split(table)
    metrics = [*map(S.mean_col, table["quality_metric"].unique()), S.SELF_BLEU, S.DISTINCT_1, S.DISTINCT_2, S.ENTROPY]

    sweeps = [a for a in (_sweep_aggregate(r, split) for r in run_rows) if a is not None]
    aggregate = pd.concat(sweeps, ignore_index=True) if sweeps else pd.DataFrame()
    out = {L.RUNS: table, L.AGGREGATE: aggregate}
    if len(aggregate):
        by = [*GROUP_KEYS, S.STEP, S.DECODING, S.KIND, S.TEMPERATURE, S.TOP_P, S.MIN_P, S.BEAMS]
        out[L.SEED_AGGREGATE] = aggregate_seeds(aggregate, by=by, metrics=[m for m in metrics if m in aggregate])
        gains = beam_gains(aggregate)
        out[L.BEAM_GAIN] = _seed_stats(gains, ["greedy", "beam", L.BEAM_GAIN_COL]) if len(gains) else pd.DataFrame()
        greedy = {name: float(cells[run_quality(cells)].iloc[0])
                  for name, cells in aggregate[aggregate[S.KIND] == "greedy"].groupby(L.NAME)}  # fmt: skip
        table = table.assign(greedy=table[L.NAME].map(greedy))
        out[L.RUNS] = table
    out[L.SMALL_DATA] = _seed_stats(table, [L.FINAL_NLL, L.MIN_NLL, L.OVERFIT, L.MIN_STEP, L.TRAIN_EXAMPLES]
                                    + (["greedy"] if "greedy" in table else []))  # fmt: skip
    out[L.CURVES] = validation_curves(table)

    correlations, preferences = [], []
    for run in run_rows:
        sequences, summary = _rewards(run, split)
        metric = run["quality_metric"]
        if sequences is not None and run[L.FAMILY] in ("mle", "iqlearn") and metric in sequences:
            scored = sequences.assign(**{S.RUN: run[L.NAME], S.LAM: run[S.LAM]})
            for score in CORRELATED_SCORES:
                found = correlation_vs_lam(scored, metric, score, group=S.PROMPT_ID, n_boot=n_boot)
                correlations.append(found.assign(**{L.SCORE: score, L.NAME: run[L.NAME]}))
        if summary is not None:
            for score, acc in summary["preferences"].items():
                keep = ("accuracy", "low", "high", "n", "auc")
                preferences.append({L.NAME: run[L.NAME], L.SCORE: score, **{k: acc.get(k) for k in keep}})
    keys = table[[L.NAME, *GROUP_KEYS, S.SEED]]
    corr = pd.concat(correlations, ignore_index=True).drop(columns=[S.RUN, S.LAM]) if correlations else None
    out[L.CORRELATIONS] = keys.merge(corr, on=L.NAME) if corr is not None else pd.DataFrame()
    out[L.PREFERENCES] = keys.merge(pd.DataFrame(preferences), on=L.NAME) if preferences else pd.DataFrame()
    if len(out[L.CORRELATIONS]):
        by = [L.GROUP, L.TASK, S.METHOD, L.FAMILY, S.LAM, L.TRAIN_SIZE]
        by_lam = [aggregate_seeds(part, by=by, metrics=["spearman"]).assign(**{L.SCORE: score})
                  for score, part in out[L.CORRELATIONS].groupby(L.SCORE, sort=False)]  # fmt: skip
        out[L.CORRELATION_BY_LAM] = pd.concat(by_lam, ignore_index=True)
    else:
        out[L.CORRELATION_BY_LAM] = pd.DataFrame()
    return out


def validation_curves(table: pd.DataFrame) -> pd.DataFrame:
    """Per group and evaluation step: validation NLL, mean over seeds, seed SE and n_seeds."""
    rows = []
    for run in table.itertuples():
        metrics = _metrics(getattr(run, S.RUN))
        if "eval/nll" not in metrics:
            continue
        evals = metrics.dropna(subset=["eval/nll"])
        rows.append(pd.DataFrame({k: getattr(run, k) for k in (*GROUP_KEYS, S.SEED)} | {
            S.STEP: evals[S.STEP].to_numpy(), "eval_nll": evals["eval/nll"].to_numpy()}))  # fmt: skip
    if not rows:
        return pd.DataFrame()
    curves = pd.concat(rows, ignore_index=True)
    return aggregate_seeds(curves, by=[*GROUP_KEYS, S.STEP], metrics=["eval_nll"])


def _swept_split(table: pd.DataFrame) -> str:
    for run in table[S.RUN]:
        last = runs.last_checkpoint(run)
        found = sorted(p.name for p in (last / runs.SWEEP).glob("*")) if last is not None else []
        if found:
            return "test" if "test" in found else found[0]
    return "test"


def write(tables: dict[str, pd.DataFrame], out_dir) -> None:
    """Each table as <out_dir>/<name>.parquet, atomically."""
    from common.io import write_parquet

    for name, table in tables.items():
        write_parquet(Path(out_dir) / f"{name}.parquet", table)
