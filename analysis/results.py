"""The one reader of what runs wrote (irl/runs.py's layout): a run's config and metrics, the attributes a run is
described by, parquet tables (sweep cells, aggregates, reward tables), summary.json and manifest.json, the
manifest check and the digest of a checkpoint's weight files. The app, the findings report, the rewards command and
the demo read results through it, so a run reads the same everywhere. Torch-free (yaml, json, pandas, pyarrow).

A damaged or unreadable file raises `FileError` with a one-line message naming it; no reader guesses a value.
"""

import hashlib
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from common.io import FileError, read_json, sha256_file
from irl import runs

# ---------------------------------------------------------------------------------------------------------------
# Runs


def read_jsonl(path) -> list[dict]:
    """The lines of an append-only JSONL log (metrics.jsonl, timings.jsonl), none when the file is missing. A last
    line without its newline is one a writer is appending, or a killed one left half-written: it is left out.
    Any other line that is not JSON raises FileError."""
    path = Path(path)
    if not path.is_file():
        return []
    text = path.read_text()
    lines = text.split("\n")
    if not text.endswith("\n"):
        lines = lines[:-1]  # the line being written
    rows = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            raise FileError(path, f"line {number} is not JSON (a damaged log)") from None
    return rows


def read_metrics(path) -> pd.DataFrame:
    """metrics.jsonl (`read_jsonl`), wide: one row per logged line, NaN where a line lacks a key; no rows (a
    `step` column only) when the file is missing or empty."""
    rows = read_jsonl(path)
    return pd.DataFrame(rows) if rows else pd.DataFrame(columns=["step"])


# The attributes a run is described by, the same in the app's runs table and the findings tables.
ATTRIBUTES = ("objective", "family", "lam", "gamma", "alpha", "beta", "online", "base")


def run_attributes(config: dict) -> dict:
    """What a run's config says it trained, each attribute defined once (METHOD.md section 3):

    - objective: the config's ("mle", "iqlearn", "gail");
    - family: "mle", "mle+entropy" (beta > 0), "iqlearn" (offline, alpha = 0), "iqlearn-online" (alpha > 0),
      "gail";
    - lam: the weight of the TD regulariser lam * mean r_t^2 in the loss: the config's lam for IQLearn, 0 for
      MLE with or without the entropy bonus (MLE is IQLearn at lam = 0; the entropy bonus adds no TD term), NaN
      for GAIL, whose loss is no point on that axis. An MLE config's own lam is an unused default;
    - gamma: the discount of the TD term, IQLearn only (NaN otherwise: at lam = 0 and in GAIL it plays no part);
    - alpha: online IQLearn's share of policy states in the value term (0 offline), NaN for MLE and GAIL;
    - beta: the entropy bonus (0 for IQLearn, which refuses one);
    - online: whether training sampled completions from the current model (online IQLearn, GAIL);
    - base: the model trained from (a preset, a hub name or a path; for `init` runs the checkpoint).
    """
    objective = config["objective"]
    alpha = float(config.get("alpha") or 0.0)
    beta = float(config.get("beta") or 0.0)
    if objective == "mle":
        family = "mle+entropy" if beta else "mle"
    elif objective == "iqlearn":
        family = "iqlearn-online" if alpha else "iqlearn"
    else:
        family = objective
    iq = objective == "iqlearn"
    return {
        "objective": objective,
        "family": family,
        "lam": float(config["lam"]) if iq else 0.0 if objective == "mle" else np.nan,
        "gamma": float(config["gamma"]) if iq else np.nan,
        "alpha": alpha if iq else np.nan,
        "beta": beta,
        "online": objective == "gail" or alpha > 0,
        "base": str(config["model"]),
    }


# ---------------------------------------------------------------------------------------------------------------
# Result files


RERUN = "delete it and rerun the command that wrote it"


def read_table(path, columns=None, filters=None, remedy: str = RERUN) -> pa.Table:
    """A parquet file as an arrow table (only `columns`; only rows passing pyarrow `filters`); a damaged one is a
    FileError naming it and saying what to do (`remedy`)."""
    try:
        if filters is not None:
            return pq.read_table(path, columns=columns, filters=filters)
        # ParquetFile.read costs ~0.3 ms for a small file, read_table's dataset machinery ~3 ms
        return pq.ParquetFile(path).read(columns=columns)
    except (OSError, pa.ArrowException) as e:
        raise FileError(path, f"damaged parquet file ({str(e).splitlines()[0]}): {remedy}") from None


def read_parquet(path, columns=None, remedy: str = RERUN) -> pd.DataFrame:
    """A parquet file as a DataFrame (`read_table`'s errors)."""
    return read_table(path, columns, remedy=remedy).to_pandas()


def read_schema(path) -> list[str]:
    """The column names of a parquet file, from its footer (no rows are read)."""
    try:
        return pq.read_schema(path).names
    except (OSError, pa.ArrowException) as e:
        raise FileError(path, f"damaged parquet file ({str(e).splitlines()[0]})") from None


def manifest_changes(out_dir, manifest: dict, ignore=()) -> str | None:
    """How the settings of `manifest` differ from the manifest.json of a sweep or rewards directory ("key: old
    there, new now", ...), None when they agree or the directory has none yet. `ignore`: keys that may differ."""
    path = Path(out_dir) / runs.MANIFEST
    if not path.is_file():
        return None
    old, new = read_json(path), json.loads(json.dumps(manifest))  # tuples as lists, as read back
    changed = sorted(k for k in old.keys() | new.keys() if k not in ignore and old.get(k) != new.get(k))
    return ", ".join(f"{k}: {old.get(k)!r} there, {new.get(k)!r} now" for k in changed) or None


def checkpoint_sha256(checkpoint) -> str | None:
    """sha256 of a checkpoint's weight files (its *.safetensors, in name order; None without them): what a
    rewards directory's manifest.json records as weights_sha256. Not irl.train.weights_sha256, the digest of a
    model's tensors in memory that training logs (init/weights_sha256), computed before any file exists."""
    files = sorted(Path(checkpoint).glob("*.safetensors"))
    if not files:
        return None
    return hashlib.sha256("".join(sha256_file(f) for f in files).encode()).hexdigest()
