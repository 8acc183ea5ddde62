"""Cached loaders: everything the pages read from the runs directory comes through here.

Each file is read once per (path, modification time) with st.cache_data, so a run still training shows its
new metrics on the next rerun and an unchanged file costs nothing. A checkpoint's sequences table, ~200k rows at 10M
scored tokens, is kept with st.cache_resource instead (`sequences`): one frame shared by every rerun and session,
read-only to its callers, where st.cache_data would pickle it on a miss and unpickle it on every rerun (0.1 s).
Token tables are read per example with a pyarrow filter, never whole for display; whole only to compare two
checkpoints, kept as the small tables shown.
Imports neither torch nor transformers nor evaluate (nor scipy).

Confinement: `index` walks the runs root and checks every path it is about to list or read with
app/safety.py before it does (runs, checkpoints, metrics.jsonl, config.yaml, sweep/ and rewards/ folders and
their files); what resolves outside is left out and named, by its path under the root, in the skipped list
the app shows. The pages read only files the index listed, each again through safety.inside. The Findings page
reads a second root, the shipped findings reports (`reports_root`), with the same loaders and the same checks,
that root in place of the runs root.
"""

import argparse
import re
import sys
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import streamlit as st

from analysis import schema as S
from analysis.results import read_metrics, read_schema, read_table
from app import tables
from app.safety import OutsideRunsDir, inside, scandir
from common.io import FileError, read_json, read_yaml
from irl import runs as R

DEFAULT_RUNS_DIR = "runs/demo"
# the findings reports the repository ships (docs/findings/<name>/findings/), found from this file, not the cwd
DEFAULT_REPORTS_DIR = Path(__file__).resolve().parents[1] / "docs" / "findings"


def _arguments(argv=None) -> argparse.Namespace:
    """The arguments after `--` in `streamlit run app/main.py -- --runs-dir DIR [--reports-dir DIR2]`."""
    parser = argparse.ArgumentParser(prog="streamlit run app/main.py --")
    parser.add_argument("--runs-dir", default=DEFAULT_RUNS_DIR, help="runs root to browse (default %(default)s)")
    parser.add_argument("--reports-dir", default=str(DEFAULT_REPORTS_DIR),
                        help="read-only root of shipped findings reports, <name>/findings/ each, that the Findings "
                             "page opens beside the runs directory's grids (default: the repository's "
                             "docs/findings)")  # fmt: skip
    return parser.parse_args(sys.argv[1:] if argv is None else argv)


def runs_root(argv=None) -> Path:
    """The runs directory named by `--runs-dir` (default runs/demo)."""
    return Path(_arguments(argv).runs_dir).resolve()


def reports_root(argv=None) -> Path:
    """The root of shipped findings reports named by `--reports-dir` (default: docs/findings of this repository,
    whatever the cwd). Only the Findings page reads it, and only through app/safety.py with it as the root; a
    directory that does not exist holds no reports."""
    return Path(_arguments(argv).reports_dir).resolve()


def checkpoint_label(run: str, step: int) -> str:
    return f"{run}@{step}"


RESULT_KINDS = (R.SWEEP, R.REWARDS)
RESULT_FILE = re.compile(rf"\.parquet$|^{re.escape(R.SUMMARY_FILE)}$")
# config.yaml keys the runs table reads (tables.run_row)
RUN_KEYS = ("objective", "lam", "gamma", "seed", "model", "data", "max_steps")


def _join(*parts: str) -> str:
    return "/".join(p for p in parts if p)


def _entries(root: Path, relative: str, skipped: list[str], wanted=lambda name: True) -> dict[str, Path]:
    """name -> resolved path of the entries of directory `relative` whose name `wanted` accepts and that
    resolve inside the root; each accepted entry that does not is added to `skipped` instead. The directory
    is listed only after it is checked (safety.scandir); nothing is listed for a file or an unreadable one."""
    try:
        listed = scandir(root, relative)
    except NotADirectoryError:
        return {}
    except OSError as e:
        skipped.append(f"{relative}: unreadable ({e.strerror})")
        return {}
    found = {}
    for entry in listed:
        if wanted(entry.name):
            try:
                found[entry.name] = inside(root, _join(relative, entry.name))
            except OutsideRunsDir as e:
                skipped.append(str(e))
    return found


def find_runs(root: Path, skipped: list[str]) -> list[str]:
    """Paths under root of the run directories (holding config.yaml) at any depth, sorted; "." for the root
    itself. A run's own tree is not searched for runs. A symlink is not followed: one that points outside is
    added to `skipped`, one that stays inside leads to a directory the walk reaches anyway."""
    found = []

    def walk(relative: str) -> None:
        try:
            listed = scandir(root, relative)
        except OSError as e:
            skipped.append(f"{relative}: unreadable ({e.strerror})")
            return
        if any(e.name == R.CONFIG for e in listed):
            found.append(relative or ".")
            return
        for entry in listed:
            path = _join(relative, entry.name)
            if entry.is_symlink():
                try:
                    inside(root, path)
                except OutsideRunsDir as e:
                    skipped.append(f"{e}, not followed")
            elif entry.is_dir():
                walk(path)

    walk("")
    return sorted(found)


def _read_run(root: Path, run: str, skipped: list[str]) -> tuple[dict, list[int], list[dict]] | None:
    """(config, steps of its complete checkpoints, result rows) of one run, every path checked before it is
    listed or read; None when its config.yaml is outside the root or is not a run's config."""
    found = _entries(root, run, skipped, lambda name: name in (R.CONFIG, R.METRICS) or R.is_checkpoint_name(name))
    if R.CONFIG not in found:
        return None
    try:
        config = read_yaml(found[R.CONFIG], required=R.WRITTEN)
    except FileError as e:
        skipped.append(f"{run}/{R.CONFIG}: {e.reason}")  # named by its path under the root
        return None
    missing = [k for k in RUN_KEYS if k not in config]
    if missing:
        skipped.append(f"{run}/{R.CONFIG}: not a run config (no {', '.join(missing)})")
        return None
    steps, rows = [], []
    for name in sorted((n for n in found if R.is_checkpoint_name(n)), key=R.step_of):
        ckpt = f"{run}/{name}"
        parts = _entries(root, ckpt, skipped, lambda n: n in (R.TRAINER_STATE, *RESULT_KINDS))
        if R.TRAINER_STATE not in parts or not parts[R.TRAINER_STATE].is_file():
            continue  # incomplete: Trainer is still writing it
        steps.append(R.step_of(name))
        for kind in (k for k in RESULT_KINDS if k in parts):
            for result in _entries(root, f"{ckpt}/{kind}", skipped):
                files = _entries(root, f"{ckpt}/{kind}/{result}", skipped, RESULT_FILE.search)
                if files:
                    rows.append({S.RUN: run, S.STEP: R.step_of(name), "kind": kind, "name": result,
                                 "files": frozenset(files)})  # fmt: skip
    return config, steps, rows


@st.cache_data(ttl=10, show_spinner=False)
def index(root: Path) -> tuple[pd.DataFrame, pd.DataFrame, list[str]]:
    """(runs, results, skipped): the runs table (tables.RUN_COLUMNS, run = path under root); one row per
    result directory (run, step, kind "sweep"|"rewards", name = split or data name, files = names of its
    parquet files and summary.json); and one message per entry left out, naming it by its path under the
    root: a symlink resolving outside the root (run, checkpoint, metrics.jsonl, result directory or file,
    ...), an unreadable directory or config. Every path is resolved and checked before it is listed or read.
    Refreshed every 10 s so new runs and results appear."""
    configs, steps, result_rows, skipped = {}, {}, [], []
    for run in find_runs(root, skipped):
        read = _read_run(root, run, skipped)
        if read is not None:
            configs[run], steps[run], rows = read
            result_rows += rows
    runs = tables.runs_table(configs, steps)
    results = pd.DataFrame(result_rows, columns=[S.RUN, S.STEP, "kind", "name", "files"])
    return runs, results, skipped


def clear() -> None:
    """Forget every cached table (the Reload button)."""
    st.cache_data.clear()
    _shared.clear()


def _stamp(root: Path, relative) -> tuple[str, float]:
    path = inside(root, relative)
    return str(path), path.stat().st_mtime


def result_path(run: str, step: int, kind: str, name: str, file: str) -> str:
    """Path under the runs root of a result file of a checkpoint."""
    return f"{run}/{R.CHECKPOINT_PREFIX}{step}/{kind}/{name}/{file}"


def _concat(stamped: tuple, columns: tuple | None, where: tuple | None, keys: tuple | None) -> pd.DataFrame:
    """Parquet files concatenated. `stamped`: (path, mtime) per file, the mtime only keys the cache; `where`:
    (column, value) rows to keep; `keys`: per file, (column, value) pairs to add."""
    parts = []
    for (path, _), key in zip(stamped, keys or [()] * len(stamped)):
        # sweeps are hundreds of small files: concatenated in arrow, converted to pandas once
        table = read_table(path, list(columns) if columns else None)
        if where is not None:
            table = table.filter(pc.equal(table[where[0]], where[1]))
        for name, value in key:  # replaces a column of that name (a sweep's own run path, say)
            i, column = table.schema.get_field_index(name), pa.repeat(value, len(table))
            table = table.set_column(i, name, column) if i >= 0 else table.append_column(name, column)
        parts.append(table)
    return pa.concat_tables(parts, promote_options="permissive").to_pandas()


_read = st.cache_data(_concat, max_entries=128, show_spinner=False)


@st.cache_data(max_entries=16, show_spinner=False)
def _prompts(stamped: tuple) -> pd.DataFrame:
    # deduplicated before caching: a cache hit unpickles the value, and every sample repeats its prompt
    return _concat(stamped, (S.PROMPT_ID, S.PROMPT), None, None).drop_duplicates(S.PROMPT_ID).reset_index(drop=True)


def read_parquet(root: Path, relative: str, columns=None) -> pd.DataFrame:
    """A parquet file under `root` (the runs root or the reports root), optionally only some columns."""
    return read_many(root, [relative], columns)


def read_many(root: Path, relatives, columns=None, where=None, keys=None) -> pd.DataFrame:
    """Parquet files under the runs root concatenated, one cache entry for all: optionally only some
    columns, only rows where column `where[0]` equals `where[1]`, and per file a dict `keys` of columns to add
    (e.g. run and step)."""
    return _read(
        tuple(_stamp(root, r) for r in relatives), tuple(columns) if columns else None,
        tuple(where) if where else None, tuple(tuple(k.items()) for k in keys) if keys else None,
    )  # fmt: skip


@st.cache_data(max_entries=256, show_spinner=False)
def _example_tokens(path: str, mtime: float, example_id: int) -> pd.DataFrame:
    # filters skip the row groups whose example_id statistics exclude it: token tables are large and sorted
    return read_table(path, filters=[(S.EXAMPLE_ID, "==", example_id)]).to_pandas().sort_values(S.POSITION)


@st.cache_data(max_entries=64, show_spinner=False)
def _metrics(path: str, mtime: float) -> pd.DataFrame:
    return read_metrics(path)


def metrics(root: Path, run: str) -> pd.DataFrame:
    """metrics.jsonl of a run as analysis.results.read_metrics reads it (no rows before the run has logged
    anything; FileError for a damaged file)."""
    try:
        path = inside(root, f"{run}/{R.METRICS}")
    except OutsideRunsDir:  # index() lists it among the skipped entries; the run has no curves
        return pd.DataFrame(columns=[S.STEP])
    return _metrics(str(path), path.stat().st_mtime) if path.is_file() else pd.DataFrame(columns=[S.STEP])


@st.cache_data(max_entries=256, show_spinner=False)
def _json(path: str, mtime: float) -> dict:
    return read_json(path)


def json_file(root: Path, relative: str) -> dict:
    """A JSON file under `root` (summary.json under the runs root, findings.json under either root)."""
    return _json(*_stamp(root, relative))


def summaries(root: Path, results: pd.DataFrame, name: str) -> dict[tuple[str, int], dict]:
    """(run, step) -> summary.json of every checkpoint's rewards/<name>/ that has one: the figures
    analysis/rewards.py computed (gamma, counts, correlations, best_of_n, preferences), shown as written."""
    has = results[(results["kind"] == R.REWARDS) & (results["name"] == name)]
    has = has[has["files"].map(lambda f: R.SUMMARY_FILE in f)]
    return {
        (r.run, r.step): json_file(root, result_path(r.run, r.step, R.REWARDS, name, R.SUMMARY_FILE))
        for r in has.itertuples()
    }


def gather(root: Path, results: pd.DataFrame, kind: str, name: str, file: str, runs: pd.DataFrame,
           columns=None) -> pd.DataFrame:
    """One table from every checkpoint with `<kind>/<name>/<file>` (optionally only some columns), with run
    (path under root), step, checkpoint label, method, lam and objective columns set by the app."""
    has = results[(results["kind"] == kind) & (results["name"] == name) & results["files"].map(lambda f: file in f)]
    if has.empty:
        return pd.DataFrame()
    paths = [result_path(r.run, r.step, kind, name, file) for r in has.itertuples()]
    keys = [{S.RUN: r.run, S.STEP: r.step} for r in has.itertuples()]
    return with_runs(read_many(root, paths, columns, keys=keys), runs)


# A sample's token record (lists of ids and positions), which the reward pages leave out: the token table holds
# the same ids one per row, and at 200k completions (10M tokens) these lists are most of a sequences table (~360
# MB of ~510 MB to cache: seconds to pickle on every cache miss, and to unpickle on every hit).
TOKEN_RECORD = {S.PROMPT_IDS, S.COMPLETION_IDS, S.COMPLETION_CALC_IDS, S.CALC_FORCED}


def _sequences_file(root: Path, run: str, step: int, data: str) -> tuple[str, float]:
    """(path, modification time) of a checkpoint's sequences table, inside the runs root."""
    return _stamp(root, result_path(run, step, R.REWARDS, data, R.SEQUENCES_FILE))


def _columns(path: str) -> list[str]:
    return [c for c in read_schema(path) if c not in TOKEN_RECORD]


def sequence_columns(root: Path, run: str, step: int, data: str) -> list[str]:
    """The columns of a checkpoint's sequences table but the samples' token record (TOKEN_RECORD), from the
    parquet footer."""
    return _columns(_sequences_file(root, run, step, data)[0])


@st.cache_resource(max_entries=8, show_spinner=False)
def _shared(path: str, mtime: float, columns: tuple) -> pd.DataFrame:
    return read_table(path, list(columns)).to_pandas()


def sequences(root: Path, run: str, step: int, data: str, only=None) -> pd.DataFrame:
    """A checkpoint's sequences table without the samples' token record (TOKEN_RECORD); with `only`, just those
    of its columns (a table of ~200k completions is ~150 MB with its texts, a second to read and to cache). The
    frame is the cached one itself (module docstring): read it, never change it in place."""
    path, mtime = _sequences_file(root, run, step, data)
    columns = _columns(path)
    return _shared(path, mtime, tuple(columns if only is None else [c for c in columns if c in set(only)]))


# A sample's texts: at 200k completions, two thirds of a sequences table's bytes to cache (~100 MB: a third of a
# second to pickle on a cache miss, and to unpickle on every hit), where a page needs the prompts' texts once each
# and the others for the rows it lists.
TEXTS = (S.PROMPT, S.COMPLETION, S.REFERENCE, S.COMPLETION_CALC)


def sequence_prompts(root: Path, run: str, step: int, data: str) -> pd.DataFrame:
    """prompt_id and prompt text of each prompt of a checkpoint's sequences table, once each, first-seen order."""
    return _prompts((_sequences_file(root, run, step, data),))


def _texts(path: str, mtime: float, columns: tuple, example_ids: tuple) -> pd.DataFrame:
    table = read_table(path, [S.EXAMPLE_ID, *columns])
    wanted = pa.array(example_ids, table.schema.field(S.EXAMPLE_ID).type)
    return table.filter(pc.is_in(table[S.EXAMPLE_ID], wanted)).to_pandas()  # the rows asked for, converted


_listed_texts = st.cache_data(_texts, max_entries=32, show_spinner=False)


def with_texts(root: Path, run: str, step: int, data: str, rows: pd.DataFrame, cache: bool = True) -> pd.DataFrame:
    """`rows` of a checkpoint's sequences table (read without TEXTS) with their texts, in their order, the
    table's columns in the table's order. `cache`: keep the texts read (for a page's listing, not for a download
    of every row)."""
    path, mtime = _sequences_file(root, run, step, data)
    columns = _columns(path)
    texts = tuple(c for c in TEXTS if c in columns and c not in rows)
    if not texts:
        return rows
    found = (_listed_texts if cache else _texts)(path, mtime, texts, tuple(rows[S.EXAMPLE_ID].tolist()))
    joined = rows.join(found.set_index(S.EXAMPLE_ID), on=S.EXAMPLE_ID)
    return joined[[c for c in columns if c in joined] + [c for c in joined if c not in columns]]


def with_runs(table: pd.DataFrame, runs: pd.DataFrame) -> pd.DataFrame:
    """`table` (with run and step columns) with the method, lam (analysis.results.run_attributes), objective
    and checkpoint label of each row's run."""
    table = table.drop(columns=[S.METHOD, S.LAM, "objective", S.CHECKPOINT], errors="ignore").reset_index(drop=True)
    # each value looked up once per run or checkpoint and taken for every row (a table of a checkpoint's completions
    # has ~200k rows at 10M tokens: a merge would hash and copy every column, 4 times slower)
    run_codes, run_names = pd.factorize(table[S.RUN])
    step_codes, steps = pd.factorize(table[S.STEP])
    per_run = max(len(steps), 1)
    codes, checkpoints = pd.factorize(run_codes * per_run + step_codes)
    of_run = runs.drop_duplicates(S.RUN).set_index(S.RUN)[[S.METHOD, S.LAM, "objective"]].reindex(run_names)
    labels = pd.array([checkpoint_label(run_names[c // per_run], steps[c % per_run]) for c in checkpoints], dtype="str")
    return table.assign(**{c: of_run[c].array.take(run_codes) for c in of_run}, **{S.CHECKPOINT: labels.take(codes)})


def tokens(root: Path, run: str, step: int, data: str, example_id: int) -> pd.DataFrame:
    """Token rows of one example of a checkpoint's reward table, read with a pyarrow filter."""
    return _example_tokens(*_stamp(root, result_path(run, step, R.REWARDS, data, R.TOKENS_FILE)), int(example_id))


def token_columns(root: Path, run: str, step: int, data: str) -> list[str]:
    """The columns of a checkpoint's token table (from the parquet footer: no rows are read)."""
    return read_schema(_stamp(root, result_path(run, step, R.REWARDS, data, R.TOKENS_FILE))[0])


def token_rows(root: Path, run: str, step: int, data: str) -> int:
    """The number of rows of a checkpoint's token table (from the parquet footer: no rows are read)."""
    path = _stamp(root, result_path(run, step, R.REWARDS, data, R.TOKENS_FILE))[0]
    try:
        return pq.read_metadata(path).num_rows
    except (OSError, pa.ArrowException) as e:
        raise FileError(path, f"damaged parquet file ({str(e).splitlines()[0]})") from None


@st.cache_data(max_entries=16, show_spinner=False)
def _token_changes(a: tuple[str, float], b: tuple[str, float]) -> tuple[int, dict]:
    # kept as the small tables the page shows: two token tables of 10M rows each would cost seconds to
    # unpickle on every rerun, and their comparison seconds to compute again
    columns = [S.EXAMPLE_ID, S.POSITION, S.TOKEN_ID, S.TOKEN, *tables.DIFFERENCES]
    diff = tables.token_differences(*(read_table(path, columns).to_pandas() for path, _ in (a, b)))
    changes = {q: (tables.largest_changes(diff, q), tables.token_moves(diff, q)) for q in tables.DIFFERENCES}
    return diff[S.EXAMPLE_ID].nunique(), changes


def token_changes(root: Path, a: tuple[str, int], b: tuple[str, int], data: str) -> tuple[int, dict]:
    """Across the completions of `data` that checkpoints a and b ((run, step) each) both scored identically
    (tables.token_differences): how many they are, and per quantity of tables.DIFFERENCES the tokens that changed
    most (tables.largest_changes) and the token texts that moved most (tables.token_moves)."""
    return _token_changes(*(_stamp(root, result_path(*ckpt, R.REWARDS, data, R.TOKENS_FILE)) for ckpt in (a, b)))


def sample_files(results: pd.DataFrame, split: str) -> list[tuple[str, int, str]]:
    """(run, step, path under root) of every samples-<decoding>.parquet of a split."""
    rows = results[(results["kind"] == R.SWEEP) & (results["name"] == split)]
    return [
        (r.run, r.step, result_path(r.run, r.step, R.SWEEP, split, f))
        for r in rows.itertuples()
        for f in sorted(r.files)
        if f.startswith(R.SAMPLES_PREFIX)
    ]


def prompts(root: Path, results: pd.DataFrame, split: str) -> pd.DataFrame:
    """prompt_id and prompt text of every prompt in a split's sweeps (those in `results`), first-seen order."""
    files = sample_files(results, split)
    if not files:
        return pd.DataFrame(columns=[S.PROMPT_ID, S.PROMPT])
    return _prompts(tuple(_stamp(root, path) for _, _, path in files))


def samples_of_prompt(root: Path, runs: pd.DataFrame, results: pd.DataFrame, split: str, prompt_id: str):
    """Every sample of one prompt across the split's checkpoints and decodings, with run (path under root),
    method (its seed group, as in `runs`) and checkpoint label."""
    files = sample_files(results, split)
    method = dict(zip(runs[S.RUN], runs[S.METHOD]))
    keys = [
        {S.RUN: run, S.METHOD: method[run], S.STEP: step, S.CHECKPOINT: checkpoint_label(run, step)}
        for run, step, _ in files
    ]
    return read_many(root, [path for _, _, path in files], where=(S.PROMPT_ID, prompt_id), keys=keys)
