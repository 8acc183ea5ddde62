"""The layout of a run directory, in one place. Imports nothing heavy, so the app can use it.

    <run>/config.yaml                          resolved TrainConfig
    <run>/metrics.jsonl                        one JSON object per log line: step, train/*, iq/*, eval/*, data/*
    <run>/tokenizer/                           the trained tokenizer (presets)
    <run>/samples.jsonl                        completions sampled during training (online IQLearn, GAIL)
    <run>/checkpoint-<step>/                   Hugging Face format: model.safetensors, tokenizer, trainer state,
                                               and train_config.yaml (the run's config)
    <run>/checkpoint-<step>/sweep/<split>/     decoding sweep: samples-<decoding>.parquet per cell, aggregate.parquet,
                                               manifest.json, baselines.parquet (built-in text tasks)
    <run>/checkpoint-<step>/rewards/<name>/    reward extraction: tokens.parquet, sequences.parquet, pairs.parquet,
                                               summary.json, manifest.json. <name> is the data's (`rewards_name`):
                                               <split>-<decoding>[-<limit>] for a sweep cell's samples,
                                               math-preferences[-<limit>], <folder>-<stem> for a JSONL of pairs

A runs root holds run directories at any depth (a run is a directory with config.yaml). analysis/results.py reads
what is here.
"""

import re
from pathlib import Path

from common.io import read_yaml

CONFIG = "config.yaml"
METRICS = "metrics.jsonl"
SAMPLES = "samples.jsonl"
TOKENIZER = "tokenizer"
CHECKPOINT_PREFIX = "checkpoint-"
CHECKPOINT_CONFIG = "train_config.yaml"  # the run's config, copied into every checkpoint
TRAINER_STATE = "trainer_state.json"  # Trainer writes it last: a checkpoint with it is complete
# Results next to a checkpoint.
SWEEP, REWARDS = "sweep", "rewards"
SAMPLES_PREFIX = "samples-"  # a sweep cell: samples-<decoding>.parquet
AGGREGATE = "aggregate.parquet"
BASELINES = "baselines.parquet"  # a text task's trivial baselines on the sweep's prompts
MANIFEST = "manifest.json"  # the settings a sweep or rewards directory was made with
TOKENS_FILE = "tokens.parquet"
SEQUENCES_FILE = "sequences.parquet"
PAIRS_FILE = "pairs.parquet"
SUMMARY_FILE = "summary.json"


def is_checkpoint_name(name: str) -> bool:
    """Whether a directory name is a checkpoint's (checkpoint-<step>)."""
    return name.startswith(CHECKPOINT_PREFIX) and name[len(CHECKPOINT_PREFIX) :].isdigit()


def step_of(checkpoint) -> int:
    return int(Path(checkpoint).name[len(CHECKPOINT_PREFIX) :])


def checkpoints(run_dir) -> list[Path]:
    """Complete checkpoints of a run, oldest first (Trainer writes trainer_state.json last)."""
    done = [p for p in Path(run_dir).glob(f"{CHECKPOINT_PREFIX}*")
            if is_checkpoint_name(p.name) and (p / TRAINER_STATE).is_file()]  # fmt: skip
    return sorted(done, key=step_of)


def last_checkpoint(run_dir) -> Path | None:
    """The newest complete checkpoint of a run, or None."""
    done = checkpoints(run_dir)
    return done[-1] if done else None


def find_runs(root) -> list[Path]:
    """Run directories under root, sorted."""
    return sorted(p.parent for p in Path(root).rglob(CONFIG))


# Fields every run's config.yaml has held, in the order written: its first (Trainer's) and the last ones of ours
# that runs of every version wrote; a file without one of them was cut short.
WRITTEN = ("output_dir", "objective", "data", "model", "vocab_size")


def read_config(run_dir) -> dict:
    """A run's config.yaml as a dict; common.io.FileError, naming it, when it is missing or damaged."""
    return read_yaml(Path(run_dir) / CONFIG, required=WRITTEN)


def method_label(config: dict) -> str:
    """A short name of what a run optimises, the same for runs that differ only in seed."""
    objective = config["objective"]
    if objective == "mle":
        return f"mle beta={config['beta']:g}" if config.get("beta") else "mle"
    if objective == "gail":
        return f"gail kl={config['kl_coef']:g} mle_weight={config['mle_weight']:g}"
    label = f"iqlearn lam={config['lam']:g}"
    if config.get("alpha"):
        label += f" alpha={config['alpha']:g}"
    return label + (f" gamma={config['gamma']:g}" if config["gamma"] != 0.99 else "")


def checkpoint_config(checkpoint) -> dict | None:
    """The training config of a checkpoint: its own train_config.yaml, else its run's config.yaml (checkpoints
    written before configs were copied into them), else None."""
    for path in (Path(checkpoint) / CHECKPOINT_CONFIG, Path(checkpoint).parent / CONFIG):
        if path.is_file():
            return read_yaml(path, required=WRITTEN)
    return None


def sweep_dir(checkpoint, split: str) -> Path:
    return Path(checkpoint) / SWEEP / split


def cell_file(decoding_label: str) -> str:
    """File name of one decoding cell of a sweep."""
    return f"{SAMPLES_PREFIX}{decoding_label}.parquet"


def cell_label(path) -> str:
    """The decoding label of a sweep cell file (inverse of `cell_file`)."""
    return Path(path).name[len(SAMPLES_PREFIX) : -len(".parquet")]


def rewards_dir(checkpoint, name: str) -> Path:
    return Path(checkpoint) / REWARDS / name


def rewards_name(data: str, limit: int | None = None) -> str:
    """Name of the rewards directory of data `data` scored on its first `limit` prompts (None: all)."""
    return data if limit is None else f"{data}-{limit}"


def sweep_rewards_name(split: str, decoding: str, limit: int | None = None) -> str:
    """Name of the rewards directory of one sweep cell's samples: <split>-<decoding>[-<limit>]."""
    return rewards_name(f"{split}-{decoding}", limit)


def pairs_rewards_name(path) -> str:
    """Name of the rewards directory of a JSONL file of preference pairs: <folder>-<stem> (data/summarize/
    preferences.jsonl: summarize-preferences)."""
    return f"{Path(path).parent.name}-{Path(path).stem}"


_SWEEP_REWARDS = re.compile(r"^(?P<split>[^-/]+)-(?P<decoding>greedy|t=[^-/]+|beam=\d+)(?:-(?P<limit>\d+))?$")


def parse_sweep_rewards_name(name: str) -> tuple[str, str, int | None] | None:
    """(split, decoding, limit) of a `sweep_rewards_name`, None for the name of other data."""
    found = _SWEEP_REWARDS.match(name)
    if found is None:
        return None
    limit = found["limit"]
    return found["split"], found["decoding"], None if limit is None else int(limit)
