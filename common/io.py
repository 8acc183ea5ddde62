"""Atomic file writes: a reader or an interrupted run never sees a half-written file. And the checks that a file
made by an older version, copied by hand or cut short by a full disk is whole, which fail as `FileError`, one
line naming the file and what to do."""

import hashlib
import json
import os
import struct
import tempfile
from pathlib import Path

import yaml


class FileError(ValueError):
    """A file is missing, damaged (cut short, not parseable) or of the wrong shape: "<path>: <reason>", the
    reason saying what to do."""

    def __init__(self, path, reason: str):
        super().__init__(f"{path}: {reason}")
        self.path, self.reason = Path(path), reason


def _tmp_prefix(path: Path) -> str:
    return f".{path.name}."


def atomic_write(path, write) -> None:
    """Call `write(tmp_path)` on a temporary file beside `path`, then rename it over `path`. Temporary files of
    `path` left by a write that was killed (kill -9, power loss) are removed first: one writer per file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    for stale in path.parent.glob(f"{_tmp_prefix(path)}*.tmp"):
        stale.unlink(missing_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=_tmp_prefix(path), suffix=".tmp")
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


def read_yaml(path, required=()) -> dict:
    """A YAML file holding a mapping; FileError when it is missing, not valid YAML or not a mapping. With
    `required` (the fields its writer always writes: a file this code saved), also when one of them is missing or
    its last line is incomplete: a file cut short by a full disk or a killed copy often still parses, with the
    values of its last fields cut (160 read as 16) or gone."""
    path = Path(path)
    try:
        text = path.read_text()
        values = yaml.safe_load(text)
    except FileNotFoundError:
        raise FileError(path, "no such file") from None
    except IsADirectoryError:
        raise FileError(path, "a directory, not a YAML file") from None
    except yaml.YAMLError as e:
        where = getattr(e, "problem_mark", None)
        at = f" at line {where.line + 1}" if where is not None else ""
        raise FileError(path, f"not valid YAML{at} ({getattr(e, 'problem', None) or e}); fix or restore it") from None
    if not isinstance(values, dict):
        got = "an empty file" if values is None else type(values).__name__
        raise FileError(path, f"expected a mapping of field: value, got {got}")
    missing = [k for k in required if k not in values]
    if required and (missing or not text.endswith("\n")):
        why = f"no field {missing}" if missing else "its last line is incomplete"
        raise FileError(path, f"damaged, cut short ({why}); restore it from a copy")
    return values


def read_json(path) -> dict:
    """A JSON file holding an object (a manifest); FileError when it is missing or damaged."""
    path = Path(path)
    try:
        values = json.loads(path.read_text())
    except FileNotFoundError:
        raise FileError(path, "no such file") from None
    except json.JSONDecodeError as e:
        raise FileError(path, f"damaged, not JSON ({e}); delete it and what it describes, and run again") from None
    if not isinstance(values, dict):
        raise FileError(path, f"damaged, expected a JSON object, got {type(values).__name__}")
    return values


def check_safetensors(path) -> None:
    """FileError unless `path` is a whole safetensors file: an 8-byte little-endian header length, a JSON header,
    then exactly the bytes its tensors' data_offsets end at (a file cut short by a full disk or a killed copy
    fails here, before a loader reads garbage or raises from deep inside)."""
    path = Path(path)
    size = path.stat().st_size
    damaged = "damaged safetensors file"
    with open(path, "rb") as fh:
        head = fh.read(8)
        if len(head) < 8:
            raise FileError(path, f"{damaged} ({size} bytes, no header); restore it or delete its checkpoint")
        (n,) = struct.unpack("<Q", head)
        if 8 + n > size:
            raise FileError(path, f"{damaged} (cut short: {size} bytes, its header alone needs {8 + n}); restore it or "
                            f"delete its checkpoint")  # fmt: skip
        try:
            header = json.loads(fh.read(n))
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise FileError(path, f"{damaged} (its header is not JSON); restore it or delete its checkpoint") from None
    end = max((t["data_offsets"][1] for k, t in header.items() if k != "__metadata__"), default=0)
    if size != 8 + n + end:
        raise FileError(path, f"{damaged} (cut short: {size} bytes of {8 + n + end}); restore it or delete its "
                              f"checkpoint")  # fmt: skip


def check_checkpoint_weights(checkpoint) -> None:
    """`check_safetensors` on every safetensors file of a checkpoint directory (weights or adapter)."""
    for path in sorted(Path(checkpoint).glob("*.safetensors")):
        check_safetensors(path)
