"""The options of the analysis commands, in a module that imports nothing heavy: `--help` answers at once, and
`python -m analysis` parses its arguments before torch is imported. One flag style, underscores, as
`python -m irl train` and transformers use.
"""

import argparse
import numbers
import operator

TEMPERATURES = (0.0, 0.25, 0.5, 0.75, 1.0)
BEAMS = (1, 2, 4, 8)
TOP_P, MIN_P = (1.0,), (0.0,)  # sampling filters of the grid: none by default
# Prompts per batch of the sweep: rows leave a batch as they finish, so a larger one holds no idle rows, and each
# decoding step's fixed cost is shared by more rows (benchmarks/sweep_throughput.py)
SWEEP_BATCH_SIZE = 32
# Padded tokens per forward pass of reward extraction (rows x the longest row): bounds the activations, and the
# logits kept (completion positions only) to at most BATCH_TOKENS x V floats: 512 MiB at V = 32k.
BATCH_TOKENS = 4096
BUILTIN_PREFERENCES = "math-preferences"


class SweepError(ValueError):
    """A sweep cannot run as asked; the message says why."""


EVERY = "every:"  # --checkpoints every:N, a stride over the saved checkpoints


def checkpoint_steps(which) -> list[int] | str | tuple[str, int]:
    """"last", "all", ("every", N) for "every:N", or the steps of a list of ints or a string "100,300"; SweepError
    for anything else."""
    if which in ("last", "all"):
        return which
    if isinstance(which, str) and which.startswith(EVERY):
        stride = which[len(EVERY) :]
        if not (stride.isdecimal() and int(stride) >= 1):
            raise SweepError(f"--checkpoints {which!r}: every:N takes a whole number N >= 1 (every:2 keeps every "
                             f"second checkpoint)")  # fmt: skip
        return ("every", int(stride))
    parts = which.split(",") if isinstance(which, str) else list(which)
    try:
        steps = [int(s) if isinstance(s, str) else operator.index(s) for s in parts]  # 2.5 is no step
    except (TypeError, ValueError):
        steps = []
    if not steps or min(steps) < 0:
        raise SweepError(f"--checkpoints {which!r}: give last, all, every:N, or steps such as 100,300")
    return steps


def check_asked(checkpoints, samples, limit, max_new_tokens, batch_size) -> None:
    """SweepError for a sweep argument out of range, before any work (and before a manifest records it): --limit -3
    would be Python's [:-3] (all but the last 3 prompts), --samples 0 a sweep of no samples."""
    checkpoint_steps(checkpoints)
    counts = {"--samples": samples, "--batch_size": batch_size, "--limit": limit, "--max_new_tokens": max_new_tokens}
    for flag, value in counts.items():
        whole = isinstance(value, numbers.Integral) and not isinstance(value, bool)
        if value is not None and not (whole and value >= 1):
            raise SweepError(f"{flag} {value}: must be a whole number >= 1")



def _bool(text: str) -> bool:
    """A boolean option's value as `python -m irl train` reads one (HfArgumentParser): true/false, yes/no, 1/0."""
    if text.lower() in ("true", "yes", "1"):
        return True
    if text.lower() in ("false", "no", "0"):
        return False
    raise argparse.ArgumentTypeError(f"{text!r}: true or false")


# --bf16, as training spells it: the model's forward under bfloat16 autocast, its weights kept in float32
BF16_HELP = ("true: run the model's forward under bfloat16 autocast (weights stay float32, as training's --bf16). "
             "Recorded in manifest.json (autocast: bfloat16): bf16 and float32 results never share a directory.")


def _floats(text: str) -> list[float]:
    return [float(x) for x in text.split(",") if x]


def sweep_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m analysis sweep",
        description="Decode checkpoints under a grid of decoding settings; score quality and diversity.",
    )
    add = parser.add_argument
    add("--run", action="append", required=True, help="Run directory, directory of runs, or glob; repeatable.")
    add("--checkpoints", default="last", help="last, all, every:N (every N-th saved checkpoint, the "
        "last included), or steps such as 100,300.")  # fmt: skip
    add("--all_checkpoints", action="store_const", dest="checkpoints", const="all", help="Every saved checkpoint "
        "(--checkpoints all): the fronts over training.")  # fmt: skip
    add("--temperatures", type=_floats, default=TEMPERATURES, help="Comma-separated; 0 is greedy.")
    add("--beams", type=lambda t: [int(x) for x in t.split(",") if x], default=BEAMS, help="Beam widths; 1 is greedy.")
    add("--top_p", type=_floats, default=TOP_P, help="Comma-separated nucleus values in (0, 1] for the sampled "
        "cells (transformers' top_p); 1 keeps every token.")  # fmt: skip
    add("--min_p", type=_floats, default=MIN_P, help="Comma-separated min-p values in [0, 1) for the sampled "
        "cells (transformers' min_p); 0 keeps every token.")  # fmt: skip
    add("--quality_threshold", type=float, default=None, help="Effective diversity: Self-BLEU and distinct-n among "
        "the samples whose main quality metric is >= this (e.g. 1 for exact match), as extra aggregate columns. "
        "Default: not computed.")  # fmt: skip
    add("--samples", type=int, default=5, help="K: samples (or top beams) per prompt.")
    add("--split", default=None, help="Split of the run's data to decode. Default: its held-out split, 'test' "
        "when the data has one (the built-in tasks, a directory with test.jsonl), else 'validation' (a single "
        "JSONL file, whose held-out prompts are its eval_size validation examples).")  # fmt: skip
    add("--limit", type=int, default=None, help="Only the first N prompts of the split.")
    add("--max_new_tokens", type=int, default=None, help="Default: 1.5 x the longest reference completion.")
    add("--metrics", type=lambda t: t.split(","), default=None,
        help="Per-sample quality metrics: built in exact_match, rouge1, rouge2, rougeLsum, bleu, chrf, or any "
        "evaluate module (local path, or hub name when online). Default: the task's.")  # fmt: skip
    add("--calculator", action=argparse.BooleanOptionalAction, default=None, help="Default: on for math.")
    add("--seed", type=int, default=0)
    add("--batch_size", type=int, default=SWEEP_BATCH_SIZE, help="Prompts decoded together, K samples each "
        "(changes the sampled rows).")  # fmt: skip
    add("--bf16", type=_bool, nargs="?", const=True, default=False, metavar="true|false", help=BF16_HELP)
    add("--dry_run", action="store_true", help="Print the predicted peak memory of decoding and stop.")
    add("--check_fast_paths", type=_bool, default=True, metavar="true|false", help="Compare the compact decoder "
        "with transformers' generate on two prompts the first time it runs for a device type, dtype and model type, "
        "and decode through generate if they differ; false: skip the check. The samples tables record the path "
        "that ran (decode_path).")  # fmt: skip
    return parser


INITIAL_REFERENCE = "initial"  # --reference: the model the checkpoint's run started from (analysis/rewards.py)


def rewards_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m analysis rewards",
        description="Per-token rewards r_t = Q(s_t,a_t) - gamma V(s_t+1) of a checkpoint on any completions.",
    )
    add = parser.add_argument
    add("--checkpoint", required=True, help="Checkpoint directory (model, tokenizer, train_config.yaml).")
    add("--data", required=True, help=f"{BUILTIN_PREFERENCES}, a sweep split name, a sweep directory or "
        "samples-*.parquet file, a JSONL file, a saved dataset directory or a dataset name.")  # fmt: skip
    add("--gamma", type=float, default=None, help="Discount. Default: the checkpoint's training gamma; required "
        "when the checkpoint carries no training config.")  # fmt: skip
    add("--name", default=None, help="Name of the output directory under <checkpoint>/rewards/ (default: from "
        "--data). Results made with other settings are never overwritten: choose another name.")  # fmt: skip
    add("--split", default="train", help="Dataset split (datasets only).")
    add("--prompt_field", default="prompt")
    add("--completion_field", default="completion")
    add("--chosen_field", default="chosen")
    add("--rejected_field", default="rejected")
    add("--metrics", default=None, help="Comma-separated per-sample quality columns to correlate the scores with "
        "(default: the table's quality metrics scored on the completion itself).")  # fmt: skip
    add("--batch_tokens", type=int, default=BATCH_TOKENS, help="Padded tokens per forward pass.")
    add("--n_boot", type=int, default=1000, help="Bootstrap replicates of correlation intervals.")
    add("--seed", type=int, default=0, help="Seed of the bootstrap.")
    add("--dry_run", action="store_true", help="Print the predicted peak memory of scoring and stop.")
    add("--reference", default=INITIAL_REFERENCE, help="π_ref of the implicit reward β(log π - log π_ref): a "
        "checkpoint sharing the tokenizer, or `initial` (default): the model the run started from.")  # fmt: skip
    add("--beta", type=float, default=1.0, help="β of the implicit reward.")
    add("--bf16", type=_bool, nargs="?", const=True, default=False, metavar="true|false", help=BF16_HELP + " Give "
        "bf16 rewards their own --name to keep both.")  # fmt: skip
    add("--chunked", type=_bool, default=True, metavar="true|false", help="Decoder-only models with a linear head: "
        "project the final hidden states a chunk of rows at a time, never holding a batch's (batch, length, vocab) "
        "logits (analysis/scoring.py); false: the full logits. summary.json records the route that ran.")  # fmt: skip
    add("--check_fast_paths", type=_bool, default=True, metavar="true|false", help="Compare the chunked route with "
        "the full logits on two episodes the first time it runs for a device type, dtype and model type, and score "
        "on the full logits if they differ; false: skip the check.")  # fmt: skip
    return parser
