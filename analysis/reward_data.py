"""What `python -m analysis rewards` scores: every kind of --data as one table of rows to score, and preference
pairs as two rows each. Torch-free; files are read by irl/data.py's readers, with its errors.

A row has example_id, prompt_id, prompt, completion and the data's other columns. A row from a decoding sweep
also has prompt_ids, completion_ids and ended: the tokens as generated, which are scored as they are (never
re-encoded); other rows are texts, encoded by the training rule (irl.data.encode_example).

--data is one of:
- `math-preferences`: the built-in preference set of the math task (analysis/preferences.py), from the
  checkpoint's test split and, when the checkpoint has a test sweep, pairs of its samples;
- a split name with a sweep at irl.runs.sweep_dir(checkpoint, split), a sweep directory, or one
  samples-*.parquet file: every sample, with its quality columns;
- a JSONL file of prompt/completion or of prompt/chosen/rejected rows (TRL's conventions; other fields kept);
- a directory saved by `datasets`, or a dataset name, with the --*_field column mapping and --split.
A row's prompt_id is the data's own where it has one, else one per distinct prompt text (also for the rows of a
table where only some rows carry one).
"""

import os
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from analysis import schema as S
from analysis.cli import BUILTIN_PREFERENCES
from analysis.results import read_parquet
from irl import runs
from irl.data import DataError, iter_jsonl, load_hf

CHOSEN, REJECTED = "chosen", "rejected"
ID_COLUMNS = (S.PROMPT_IDS, S.COMPLETION_IDS, S.ENDED)  # the token record of a generated sample


def _records(data: str, split: str) -> tuple[list[dict], list[str], str]:
    """(records, where each is, name) of a JSONL file or a dataset split."""
    path = Path(data)
    if path.suffix == ".jsonl":
        if not path.is_file():
            raise DataError(f"--data {data}: no such file")
        found = list(iter_jsonl(path))
        return [obj for obj, _ in found], [where for _, where in found], path.stem
    records = load_hf(data, split).to_list()
    return records, [f"{data}[{split}][{i}]" for i in range(len(records))], path.name


def fill_prompt_ids(table: pd.DataFrame) -> pd.DataFrame:
    """`table` with a string prompt_id on every row: the row's own, else one per distinct prompt text
    ("prompt:<n>", numbered in order of first appearance)."""
    by_text = pd.Series([f"prompt:{i}" for i in pd.factorize(table[S.PROMPT])[0]], index=table.index)
    own = table[S.PROMPT_ID] if S.PROMPT_ID in table else pd.Series(np.nan, index=table.index, dtype=object)
    ids = own.where(own.notna(), by_text).astype(str)
    return table.drop(columns=[S.PROMPT_ID], errors="ignore").assign(**{S.PROMPT_ID: ids})


def _table(records: list[dict], where: list[str], fields: dict[str, str], source: str) -> pd.DataFrame:
    """Records with their mapped fields checked to be strings and renamed to the standard names (prompt,
    completion or chosen/rejected), and a prompt_id on every row."""
    if not records:
        raise DataError(f"{source}: no rows")
    for rec, at in zip(records, where):
        for key in fields.values():
            if key not in rec:
                raise DataError(f"{at}: missing field '{key}'")
            if not isinstance(rec[key], str):
                raise DataError(f"{at}: field '{key}' must be a string, got {type(rec[key]).__name__}")
    table = pd.DataFrame(records).rename(columns={v: k for k, v in fields.items()})
    return fill_prompt_ids(table)


def pair_rows(pairs: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Preference pairs (prompt_id, prompt, chosen, rejected, other fields) as (rows, pair table): two rows per
    pair, chosen then rejected, with pair_id and side; the pair table holds pair_id and the pairs' other fields
    (a field named like a computed column gets the prefix "data_"). Per-side fields `chosen_<c>` and
    `rejected_<c>` (the token record of generated samples, `rejected_error_char`) become column <c> of their
    side's row; a pair's `error_char` (where a corrupted rejected completion first departs from the chosen one)
    is the rejected side's."""
    pairs = pairs.reset_index(drop=True)
    if "error_char" in pairs and f"{REJECTED}_error_char" not in pairs:
        pairs = pairs.rename(columns={"error_char": f"{REJECTED}_error_char"})
    per_side = {c.split("_", 1)[1] for c in pairs.columns if c.startswith((f"{CHOSEN}_", f"{REJECTED}_"))}
    sides = []
    for side in (CHOSEN, REJECTED):
        part = pd.DataFrame({S.PAIR_ID: pairs.index, S.PROMPT_ID: pairs[S.PROMPT_ID], S.PROMPT: pairs[S.PROMPT]})
        extra = {c: pairs[f"{side}_{c}"].to_numpy() for c in per_side if f"{side}_{c}" in pairs}
        sides.append(part.assign(**{S.SIDE: side, S.COMPLETION: pairs[side].to_numpy()}, **extra))
    rows = pd.concat(sides).sort_values([S.PAIR_ID, S.SIDE], kind="stable", ignore_index=True)  # chosen < rejected
    rows.insert(0, S.EXAMPLE_ID, np.arange(len(rows)))
    computed = {f"{side}_{score}" for side in (CHOSEN, REJECTED) for score in S.SCORES} | {S.MARGIN, S.PAIR_ID}
    meta = pairs.drop(columns=[S.PROMPT, CHOSEN, REJECTED, *(f"{s}_{c}" for s in (CHOSEN, REJECTED) for c in per_side)],
                      errors="ignore")  # fmt: skip
    meta = meta.rename(columns=lambda c: f"data_{c}" if c in computed else c)
    return rows, meta.assign(**{S.PAIR_ID: pairs.index})


def pairs_table(sequences: pd.DataFrame, meta: pd.DataFrame) -> tuple[pd.DataFrame, int]:
    """One row per pair with both sides scored: chosen_<score> and rejected_<score> for every score of
    schema.SCORES, margin = chosen_R - rejected_R, and each side's example_id; and the number of pairs left out
    because a side was not scored."""
    side = {
        name: sequences.loc[sequences[S.SIDE] == name, [S.PAIR_ID, S.EXAMPLE_ID, *S.SCORES]]
        .set_index(S.PAIR_ID)
        .add_prefix(f"{name}_")
        for name in (CHOSEN, REJECTED)
    }
    both = side[CHOSEN].join(side[REJECTED], how="inner")
    both[S.MARGIN] = both[S.CHOSEN_R] - both[S.REJECTED_R]
    table = meta.merge(both.reset_index(), on=S.PAIR_ID, how="inner")
    first = [S.PAIR_ID, S.PROMPT_ID, S.CHOSEN_R, S.REJECTED_R, S.MARGIN, S.CHOSEN_LOGP_SUM, S.REJECTED_LOGP_SUM]
    return table[first + [c for c in table.columns if c not in first]], len(meta) - len(table)


def read_sweep(path) -> pd.DataFrame:
    """Samples of a sweep: one samples-*.parquet file, or every one in a sweep directory, in name order."""
    path = Path(path)
    files = [path] if path.is_file() else sorted(path.glob(runs.cell_file("*")))
    if not files:
        raise DataError(f"{path}: no {runs.cell_file('*')} files of a sweep here")
    again = "run `python -m analysis sweep` on its run again, which decodes a damaged cell again"
    return pd.concat([read_parquet(f, remedy=again) for f in files], ignore_index=True)


def default_decoding(samples: pd.DataFrame) -> str:
    """The sweep cell the built-in preferences and the report use: sampling at the highest temperature (most
    varied samples per prompt, unfiltered: top_p 1, min_p 0 where those were swept), else the widest beam, else
    greedy."""
    cells = S.with_grid_columns(samples.drop_duplicates(S.DECODING))
    cells = cells.assign(_sample=cells[S.KIND] == "sample", _min_p=-cells[S.MIN_P])
    best = cells.sort_values(["_sample", S.TEMPERATURE, S.TOP_P, "_min_p", S.BEAMS], kind="stable").iloc[-1]
    return str(best[S.DECODING])


def sweep_rows(samples: pd.DataFrame) -> pd.DataFrame:
    """A sweep's samples as rows to score, by their generated token ids."""
    rows = samples.reset_index(drop=True)
    rows.insert(0, S.EXAMPLE_ID, np.arange(len(rows)))
    return rows


def math_test_split(config: dict | None, checkpoint) -> list[dict]:
    """The test split of the math task a checkpoint was trained on."""
    from tasks.math import generate_splits

    if config is None or config.get("data") != "math":
        found = "carries no training config" if config is None else f"was trained on data={config.get('data')!r}"
        raise DataError(f"{BUILTIN_PREFERENCES} needs a checkpoint of the built-in math task; {checkpoint} {found}")
    # the test split is the first problems of the run's stream (tasks/math.py): the same without train
    n_test = config["math_sizes"][2]
    return generate_splits([0, 0, n_test], config["math_templates"], config["data_seed"])["test"]


def builtin_rows(examples: list[dict], samples: pd.DataFrame | None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Rows and pair table of the built-in math preference set (analysis/preferences.py): corruptions of the
    examples' references and, when a sweep's `samples` are given, pairs of the samples of its default cell for
    the same prompts. The checker labelled every pair: the chosen side is right, the rejected one wrong."""
    from analysis.preferences import math_preferences

    if samples is not None:
        samples = samples[samples[S.DECODING] == default_decoding(samples)]
        samples = samples[samples[S.PROMPT_ID].isin([ex["id"] for ex in examples])]
    rows, meta = pair_rows(pd.DataFrame(math_preferences(examples, samples)))
    rows[S.EXACT_MATCH] = (rows[S.SIDE] == CHOSEN).astype(float)
    return rows, meta


def load_data(data: str, checkpoint, config: dict | None, fields: dict[str, str], split: str = "train"):
    """(name, rows, pair table or None) of a --data argument (see the module docstring)."""
    path = Path(data)
    if data == BUILTIN_PREFERENCES:
        sweep = runs.sweep_dir(checkpoint, "test")
        samples = read_sweep(sweep) if sweep.is_dir() else None
        rows, meta = builtin_rows(math_test_split(config, checkpoint), samples)
        return BUILTIN_PREFERENCES, rows, meta
    if path.suffix == ".parquet" or (path.is_dir() and any(path.glob(runs.cell_file("*")))):
        name = path.name if path.is_dir() else runs.sweep_rewards_name(path.parent.name, runs.cell_label(path))
        return name, sweep_rows(read_sweep(path)), None
    if not path.exists() and os.sep not in data and runs.sweep_dir(checkpoint, data).is_dir():
        return data, sweep_rows(read_sweep(runs.sweep_dir(checkpoint, data))), None
    if not path.exists() and os.sep not in data and data in ("test", "validation", "train"):
        raise DataError(f"--data {data}: {checkpoint} has no sweep of split {data!r}; run `python -m analysis sweep "
                        f"--run {Path(checkpoint).parent} --split {data}` first")  # fmt: skip
    records, where, name = _records(data, split)
    has = {k: bool(records) and fields[k] in records[0] for k in (S.COMPLETION, CHOSEN, REJECTED)}
    # pairs when the first row has both sides, or one side and no completion (then the other side is missing)
    is_pairs = has[CHOSEN] and has[REJECTED] or (has[CHOSEN] or has[REJECTED]) and not has[S.COMPLETION]
    wanted = (S.PROMPT, CHOSEN, REJECTED) if is_pairs else (S.PROMPT, S.COMPLETION)
    table = _table(records, where, {k: fields[k] for k in wanted}, data)
    if is_pairs:
        if (table[CHOSEN] == table[REJECTED]).all():
            print(f"warning: {data}: every pair's chosen and rejected texts are the same, so every margin is 0 and "
                  f"preference accuracy is 0.5 by construction", file=sys.stderr, flush=True)  # fmt: skip
        rows, meta = pair_rows(table)
        return name, rows, meta
    table.insert(0, S.EXAMPLE_ID, np.arange(len(table)))
    return name, table, None
