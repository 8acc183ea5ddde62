"""Data: prompt/completion examples from the built-in task, JSONL files or Hugging Face datasets, tokenised
into completion-masked sequences and collated into padded batches.

Sources (`TrainConfig.data`):
- `math`: the built-in task (irl/math_task.py), splits train/validation/test.
- `summarize`, `translate`: the built-in real-text tasks (irl/text_tasks.py), data/<task>/<split>.jsonl.
- `file.jsonl`: one JSON object per line with the prompt and completion fields (TRL's `prompt`/`completion`
  by default); it is the train split, and `eval_size` examples are held out as validation.
- a directory of `<split>.jsonl` files (train.jsonl, validation.jsonl, test.jsonl).
- a directory written by `datasets.save_to_disk`, or anything `datasets.load_dataset` accepts (a hub name when
  online, a local directory of data files), with `prompt_field`/`completion_field` as the column mapping.

Bad input fails with the file and line (malformed JSON, missing or non-string field). Examples dropped or cut
by `encode` are counted and logged (see its docstring).
"""

import json
import random
from pathlib import Path

import torch

from irl import math_task, text_tasks


class DataError(ValueError):
    """Bad training data; the message names the file, line or field."""


def iter_jsonl(path):
    """(object, "file:line") for each non-blank line of a JSONL file; a malformed line fails naming both."""
    with open(path, encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                raise DataError(f"{path}:{lineno}: malformed JSON ({e.msg} at column {e.colno})") from None
            if not isinstance(obj, dict):
                raise DataError(f"{path}:{lineno}: expected a JSON object, got {type(obj).__name__}")
            yield obj, f"{path}:{lineno}"


def read_jsonl(path, prompt_field="prompt", completion_field="completion", extra_fields=()) -> list[dict]:
    """Rows of a JSONL file as {"id", "prompt", "completion", ...}; errors name the file and line."""
    rows = []
    for obj, where in iter_jsonl(path):
        rows.append(_example(obj, where, prompt_field, completion_field, extra_fields, len(rows)))
    return rows


def _example(obj, where, prompt_field, completion_field, extra_fields, index) -> dict:
    example = {"id": str(obj.get("id", index))}
    for name, key in (("prompt", prompt_field), ("completion", completion_field), *((f, f) for f in extra_fields)):
        if key not in obj:
            raise DataError(f"{where}: missing field '{key}'")
        if not isinstance(obj[key], str):
            raise DataError(f"{where}: field '{key}' must be a string, got {type(obj[key]).__name__}")
        example[name] = obj[key]
    return example


def _hf_splits(source: str, prompt_field: str, completion_field: str) -> dict[str, list[dict]]:
    import datasets

    path = Path(source)
    if (path / "dataset_dict.json").exists() or (path / "dataset_info.json").exists():
        loaded = datasets.load_from_disk(source)
    else:
        loaded = datasets.load_dataset(source)
    if isinstance(loaded, datasets.Dataset):
        loaded = datasets.DatasetDict({"train": loaded})
    aliases = {"valid": "validation", "dev": "validation"}
    return {
        aliases.get(split, split): [
            _example(row, f"{source}[{split}][{i}]", prompt_field, completion_field, (), i)
            for i, row in enumerate(ds)
        ]
        for split, ds in loaded.items()
    }


def load_splits(cfg) -> dict[str, list[dict]]:
    """All splits of the configured data source as lists of {"id", "prompt", "completion", ...}."""
    source = cfg.data
    if source == "math":
        return math_task.generate_splits(cfg.math_sizes, cfg.math_templates, cfg.data_seed)
    if source in text_tasks.TASKS:  # built-in real-text tasks: the committed data/<task>/<split>.jsonl
        files = {split: text_tasks.task_dir(source) / f"{split}.jsonl" for split in text_tasks.TASK_SPLITS}
        if missing := [str(f) for f in files.values() if not f.is_file()]:
            raise DataError(f"data={source!r}: missing {', '.join(missing)} (rebuild: python -m irl tasks --out data)")
        return {split: read_jsonl(f) for split, f in files.items()}
    path = Path(source)
    if path.suffix == ".jsonl":
        if not path.is_file():
            raise DataError(f"data={source!r}: no such file")
        splits = {"train": read_jsonl(path, cfg.prompt_field, cfg.completion_field)}
    elif path.is_dir() and list(path.glob("*.jsonl")):
        splits = {
            f.stem: read_jsonl(f, cfg.prompt_field, cfg.completion_field) for f in sorted(path.glob("*.jsonl"))
        }
    else:
        splits = _hf_splits(source, cfg.prompt_field, cfg.completion_field)
    if "train" not in splits:
        raise DataError(f"data={source!r}: no train split (found {sorted(splits)})")
    if "validation" not in splits and cfg.eval_size > 0:
        train = list(splits["train"])
        random.Random(cfg.data_seed).shuffle(train)
        if len(train) <= cfg.eval_size:
            raise DataError(f"data={source!r}: {len(train)} examples, too few to hold out eval_size={cfg.eval_size}")
        splits["validation"], splits["train"] = train[: cfg.eval_size], train[cfg.eval_size :]
    return splits


def encode(examples, tokenizer, max_length: int, overlong: str = "truncate"):
    """Tokenise examples into {"input_ids", "completion_mask"} and count what was dropped or cut.

    A sequence is prompt tokens (with the tokenizer's special prefix, e.g. BOS), completion tokens and EOS;
    completion_mask is 1 on the completion tokens and the EOS. Treatment of bad examples:
    - empty (whitespace-only) completion: dropped, counted as `empty_completion`;
    - prompt that tokenises to nothing: dropped (`empty_prompt`), no state to act from;
    - longer than max_length: with overlong='truncate' the completion is cut and gets no EOS (the episode did
      not end, so its last token leaves the TD term, METHOD.md §1), counted as `truncated`; with 'drop' it is
      skipped (`dropped_overlong`). A prompt that leaves no room for one completion token is always dropped.
    """
    counts = {"examples": len(examples), "empty_completion": 0, "empty_prompt": 0, "truncated": 0, "dropped_overlong": 0}
    features = []
    for ex in examples:
        if not ex["completion"].strip():
            counts["empty_completion"] += 1
            continue
        prompt_ids = tokenizer(ex["prompt"])["input_ids"]
        completion_ids = tokenizer(ex["completion"], add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
        if not prompt_ids:
            counts["empty_prompt"] += 1
            continue
        room = max_length - len(prompt_ids)
        if len(completion_ids) > room:
            if overlong == "drop" or room < 1:
                counts["dropped_overlong"] += 1
                continue
            counts["truncated"] += 1
            completion_ids = completion_ids[:room]
        features.append(
            {
                "input_ids": prompt_ids + completion_ids,
                "completion_mask": [0] * len(prompt_ids) + [1] * len(completion_ids),
            }
        )
    counts["kept"] = len(features)
    return features, counts


class Collator:
    """Right-pads {"input_ids", "completion_mask"} features into (B, T) tensors plus attention_mask.

    With `prompts=True` (variants that sample completions during training) it adds the prompts alone, left-padded
    for `generate`: prompt_input_ids and prompt_attention_mask, (B, P) with P the longest prompt.
    """

    def __init__(self, pad_token_id: int, prompts: bool = False):
        self.pad_token_id = pad_token_id
        self.prompts = prompts

    def __call__(self, features):
        width = max(len(f["input_ids"]) for f in features)

        def pad(key, value):
            return torch.tensor([f[key] + [value] * (width - len(f[key])) for f in features])

        lengths = torch.tensor([len(f["input_ids"]) for f in features])
        batch = {
            "input_ids": pad("input_ids", self.pad_token_id),
            "attention_mask": (torch.arange(width)[None, :] < lengths[:, None]).long(),
            "completion_mask": pad("completion_mask", 0),
        }
        if self.prompts:
            prompts = [f["input_ids"][: f["completion_mask"].index(1)] for f in features]
            p = max(map(len, prompts))
            batch["prompt_input_ids"] = torch.tensor([[self.pad_token_id] * (p - len(x)) + x for x in prompts])
            batch["prompt_attention_mask"] = torch.tensor([[0] * (p - len(x)) + [1] * len(x) for x in prompts])
        return batch


def export_builtin(argv=None) -> None:
    """`python -m irl data --out DIR`: write the built-in task's splits as DIR/<split>.jsonl."""
    import argparse

    from irl.config import TrainConfig
    from irl.io import write_jsonl

    defaults = TrainConfig()
    parser = argparse.ArgumentParser(prog="python -m irl data", description=export_builtin.__doc__)
    parser.add_argument("--out", required=True)
    parser.add_argument("--sizes", default=",".join(map(str, defaults.math_sizes)), help="train,validation,test")
    parser.add_argument("--templates", default=",".join(map(str, defaults.math_templates)))
    parser.add_argument("--seed", type=int, default=defaults.data_seed)
    args = parser.parse_args(argv)
    splits = math_task.generate_splits(
        [int(x) for x in args.sizes.split(",")], [int(x) for x in args.templates.split(",")], args.seed
    )
    for split, rows in splits.items():
        write_jsonl(Path(args.out) / f"{split}.jsonl", rows)
        print(f"{args.out}/{split}.jsonl: {len(rows)} examples")
