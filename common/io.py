"""Atomic file writes: a reader or an interrupted run never sees a half-written file."""

import hashlib
import json
import os
import tempfile
from pathlib import Path


def atomic_write(path, write) -> None:
    """Call `write(tmp_path)` on a temporary file beside `path`, then rename it over `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def atomic_write_text(path, text: str) -> None:
    atomic_write(path, lambda tmp: Path(tmp).write_text(text))


def write_parquet(path, table, **kwargs) -> None:
    """A pandas DataFrame as parquet, atomically (kwargs go to DataFrame.to_parquet)."""
    atomic_write(path, lambda tmp: table.to_parquet(tmp, index=False, **kwargs))


def write_jsonl(path, rows) -> None:
    atomic_write_text(path, "".join(json.dumps(row) + "\n" for row in rows))


def append_jsonl(path, row: dict) -> None:
    """Append one line; a line is written with a single write call so a crash leaves whole lines."""
    with open(path, "a") as fh:
        fh.write(json.dumps(row) + "\n")


def sha256_file(path) -> str:
    """The SHA-256 hex digest of a file's bytes, read in 1 MiB blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()
