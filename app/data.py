"""Cached loaders: everything the pages read from the runs directory comes through here.

Each file is read once per (path, modification time) with st.cache_data, so a run still training shows its
new metrics on the next rerun and an unchanged file costs nothing. Every path is confined to the runs root
(app/safety.py). Token tables are read per example with a pyarrow filter, never whole for display.
Imports neither torch nor transformers nor evaluate.
"""

import argparse
import json
import sys
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import streamlit as st

from analysis import schema as S
from app import tables
from app.safety import OutsideRunsDir, inside
from irl import runs as R

DEFAULT_RUNS_DIR = "runs/demo"
TOKENS_FILE, SEQUENCES_FILE, AGGREGATE_FILE = "tokens.parquet", "sequences.parquet", "aggregate.parquet"
SAMPLES_GLOB = "samples-*.parquet"


def runs_root(argv=None) -> Path:
    """The runs directory named by `--runs-dir` (default runs/demo), from the arguments after `--` in
    `streamlit run app/main.py -- --runs-dir DIR`."""
    parser = argparse.ArgumentParser(prog="streamlit run app/main.py --")
    parser.add_argument("--runs-dir", default=DEFAULT_RUNS_DIR, help="runs root to browse (default %(default)s)")
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    return Path(args.runs_dir).resolve()


def checkpoint_label(run: str, step: int) -> str:
    return f"{run}@{step}"


@st.cache_data(ttl=10, show_spinner=False)
def index(root: Path) -> tuple[pd.DataFrame, pd.DataFrame, list[str]]:
    """(runs, results, refused): the runs table (tables.RUN_COLUMNS, run = path under root); one row per
    result directory (run, step, kind "sweep"|"rewards", name = split or data name, files = parquet file
    names); and the messages of paths refused for resolving outside the root (they are left out).
    Refreshed every 10 s so new runs and results appear."""
    run_rows, result_rows, refused = [], [], []
    for found in R.find_runs(root):
        try:
            run = found.relative_to(root).as_posix()
            run_dir = inside(root, run)
            inside(root, f"{run}/{R.CONFIG}")
            config = R.read_config(run_dir)
            ckpts = R.checkpoints(run_dir)
            run_rows.append(tables.run_row(run, config, [R.step_of(c) for c in ckpts]))
            for ckpt, kind in ((c, k) for c in ckpts for k in ("sweep", "rewards")):
                for d in sorted((ckpt / kind).glob("*")):
                    d = inside(root, d.relative_to(root))
                    if d.is_dir():
                        files = frozenset(p.name for p in d.glob("*.parquet"))
                        result_rows.append({S.RUN: run, S.STEP: R.step_of(ckpt), "kind": kind, "name": d.name, "files": files})
        except OutsideRunsDir as e:
            refused.append(str(e))
    runs = pd.DataFrame(run_rows, columns=tables.RUN_COLUMNS)
    results = pd.DataFrame(result_rows, columns=[S.RUN, S.STEP, "kind", "name", "files"])
    return runs, results, refused


def clear() -> None:
    """Forget every cached table (the Reload button)."""
    st.cache_data.clear()


def _stamp(root: Path, relative) -> tuple[str, float]:
    path = inside(root, relative)
    return str(path), path.stat().st_mtime


def result_path(run: str, step: int, kind: str, name: str, file: str) -> str:
    """Path under the runs root of a result file of a checkpoint."""
    return f"{run}/{R.CHECKPOINT_PREFIX}{step}/{kind}/{name}/{file}"


@st.cache_data(max_entries=256, show_spinner=False)
def _parquet(path: str, mtime: float, columns: tuple | None = None, filters: tuple | None = None) -> pd.DataFrame:
    return pq.read_table(path, columns=list(columns) if columns else None, filters=list(filters) if filters else None).to_pandas()


def read_parquet(root: Path, relative: str, columns=None, filters=None) -> pd.DataFrame:
    """A parquet file under the runs root (optionally some columns, rows matching pyarrow `filters`)."""
    return _parquet(*_stamp(root, relative), tuple(columns) if columns else None, tuple(filters) if filters else None)


@st.cache_data(max_entries=64, show_spinner=False)
def _metrics(path: str, mtime: float) -> pd.DataFrame:
    rows = []
    with open(path) as fh:
        for line in fh:
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                break  # the trainer is appending this line right now
    return pd.DataFrame(rows)


def metrics(root: Path, run: str) -> pd.DataFrame:
    """metrics.jsonl of a run, wide: one row per logged line, NaN where a line lacks a key (no rows before
    the run has logged anything)."""
    path = inside(root, f"{run}/{R.METRICS}")
    return _metrics(str(path), path.stat().st_mtime) if path.is_file() else pd.DataFrame(columns=[S.STEP])


def gather(root: Path, results: pd.DataFrame, kind: str, name: str, file: str, runs: pd.DataFrame) -> pd.DataFrame:
    """One table from every checkpoint with `<kind>/<name>/<file>`, with run (path under root), step,
    checkpoint label, method, lam (0 for MLE) and objective columns set by the app."""
    has = (results["kind"] == kind) & (results["name"] == name) & results["files"].map(lambda f: file in f)
    parts = [
        read_parquet(root, result_path(r.run, r.step, kind, name, file)).assign(**{S.RUN: r.run, S.STEP: r.step})
        for r in results[has].itertuples()
    ]
    if not parts:
        return pd.DataFrame()
    meta = runs.assign(lam=tables.effective_lam(runs))[[S.RUN, S.METHOD, "lam", "objective"]]
    table = pd.concat(parts, ignore_index=True).drop(columns=[S.METHOD, "lam", "objective"], errors="ignore")
    table = table.merge(meta, on=S.RUN, how="left")
    table[S.CHECKPOINT] = [checkpoint_label(r, s) for r, s in zip(table[S.RUN], table[S.STEP])]
    return table


def tokens(root: Path, run: str, step: int, data: str, example_id: int) -> pd.DataFrame:
    """Token rows of one example of a checkpoint's reward table, read with a pyarrow filter."""
    path = result_path(run, step, "rewards", data, TOKENS_FILE)
    return read_parquet(root, path, filters=[(S.EXAMPLE_ID, "==", int(example_id))]).sort_values(S.POSITION)


def token_rewards(root: Path, run: str, step: int, data: str) -> pd.DataFrame:
    """A checkpoint's token table with only what reward comparisons need."""
    path = result_path(run, step, "rewards", data, TOKENS_FILE)
    return read_parquet(root, path, columns=[S.EXAMPLE_ID, S.POSITION, S.TOKEN_ID, S.TOKEN, S.REWARD])


def sample_files(results: pd.DataFrame, split: str) -> list[tuple[str, int, str]]:
    """(run, step, path under root) of every samples-<decoding>.parquet of a split."""
    rows = results[(results["kind"] == "sweep") & (results["name"] == split)]
    return [
        (r.run, r.step, result_path(r.run, r.step, "sweep", split, f))
        for r in rows.itertuples()
        for f in sorted(r.files)
        if f.startswith("samples-")
    ]


def prompts(root: Path, results: pd.DataFrame, split: str) -> pd.DataFrame:
    """prompt_id and prompt text of every prompt in a split's sweeps (those in `results`), first-seen order."""
    parts = [read_parquet(root, path, columns=[S.PROMPT_ID, S.PROMPT]) for _, _, path in sample_files(results, split)]
    if not parts:
        return pd.DataFrame(columns=[S.PROMPT_ID, S.PROMPT])
    return pd.concat(parts).drop_duplicates(S.PROMPT_ID).reset_index(drop=True)


def samples_of_prompt(root: Path, results: pd.DataFrame, split: str, prompt_id: str) -> pd.DataFrame:
    """Every sample of one prompt across the split's checkpoints and decodings (run = path under root)."""
    parts = [
        read_parquet(root, path, filters=[(S.PROMPT_ID, "==", prompt_id)]).assign(
            **{S.RUN: run, S.STEP: step, S.CHECKPOINT: checkpoint_label(run, step)}
        )
        for run, step, path in sample_files(results, split)
    ]
    return pd.concat(parts, ignore_index=True)
