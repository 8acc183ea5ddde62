"""Data: prompt/completion examples from the built-in task, JSONL files or Hugging Face datasets, tokenised
into completion-masked sequences and collated into padded batches.

Sources (`TrainConfig.data`):
- `math`: the built-in task (tasks/math.py), splits train/validation/test.
- `summarize`, `translate`: the built-in real-text tasks (tasks/text.py), data/<task>/<split>.jsonl.
- `file.jsonl`: one JSON object per line with the prompt and completion fields (TRL's `prompt`/`completion`
  by default); it is the train split, and `eval_size` examples are held out as validation.
- a directory of `<split>.jsonl` files (train.jsonl, validation.jsonl, test.jsonl).
- a directory written by `datasets.save_to_disk`, or anything `datasets.load_dataset` accepts (a hub name when
  online, a local directory of data files or laid out as a hub dataset, with `dataset_config` as its
  configuration name: `load_dataset(data, dataset_config)`), with `prompt_field`/`completion_field` as the column
  mapping ('translation.en' reads a key of a dict column) and `train_split`/`validation_split`/`test_split` as
  the split names.

Examples are {"id", "prompt", "completion"}. Prompt and completion are strings, or lists of chat messages
({role, content}, TRL's conversational form): a `messages` column (the final assistant turn is the completion,
everything before it the prompt, earlier assistant turns included), chat-form prompt/completion columns, or
strings turned into a user and an assistant turn with `apply_chat_template`. Chat examples are rendered by the
tokenizer's chat template when they are encoded (`encode_example`).

Bad input fails with the file and line (malformed JSON, missing or non-string field). Examples dropped or cut
by `encode` are counted and logged (see its docstring).
"""

import json
import random
from dataclasses import dataclass
from pathlib import Path

import torch

from tasks import text as text_tasks
from tasks.math import generate_splits


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


def load_hf(source: str, split: str | None = None, name: str | None = None):
    """A dataset saved by `datasets.save_to_disk` (a directory) or anything `datasets.load_dataset` accepts, with
    `name` its configuration (openai/gsm8k's 'main'), as a DatasetDict (a single Dataset becomes its "train"
    split), or one split of it when `split` is given."""
    import datasets

    check_source(source)
    path = Path(source)
    if (path / "dataset_dict.json").exists() or (path / "dataset_info.json").exists():
        loaded = datasets.load_from_disk(source)
    else:
        try:
            loaded = datasets.load_dataset(source, name)
        except ValueError as e:  # a missing or unknown configuration name: datasets lists the available ones
            raise DataError(f"data={source!r}, dataset_config={name!r}: {' '.join(str(e).split())}") from None
    if isinstance(loaded, datasets.Dataset):
        loaded = datasets.DatasetDict({"train": loaded})
    if split is None:
        return loaded
    if split not in loaded:
        raise DataError(f"{source}: no split {split!r} (it has {sorted(loaded)})")
    return loaded[split]


def split_name(split: str, cfg) -> str:
    """The name the pipeline uses for a split of the data: train, validation or test per the configured split
    names ('valid' and 'dev' are validation too), else its own."""
    names = {"valid": "validation", "dev": "validation"}
    names.update({cfg.train_split: "train", cfg.validation_split: "validation", cfg.test_split: "test"})
    return names.get(split, split)


def _value(row: dict, key: str, where: str):
    """row[key]; a dotted key reads into dict columns (translation.en)."""
    value = row
    for part in key.split(".") if key not in row else [key]:
        if not isinstance(value, dict) or part not in value:
            raise DataError(f"{where}: missing field '{key}'")
        value = value[part]
    return value


def _messages(value, where: str, key: str) -> list[dict]:
    """A list of chat messages ({role, content}, strings), checked."""
    ok = isinstance(value, list) and value and all(
        isinstance(m, dict) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str) for m in value
    )
    if not ok:
        raise DataError(f"{where}: field '{key}' must be a string or a non-empty list of {{role, content}} messages")
    return [{"role": m["role"], "content": m["content"]} for m in value]


def example_of(row: dict, where: str, index: int, cfg) -> dict:
    """{"id", "prompt", "completion"} of one data row per the config's column mapping (module docstring): strings,
    or lists of chat messages."""
    example = {"id": str(row.get("id", index))}
    if cfg.messages_field in row:
        messages = _messages(row[cfg.messages_field], where, cfg.messages_field)
        if messages[-1]["role"] != "assistant":
            raise DataError(f"{where}: the last message of '{cfg.messages_field}' must be the assistant's")
        example["prompt"], example["completion"] = messages[:-1], messages[-1:]
        return example
    prompt, completion = (_value(row, key, where) for key in (cfg.prompt_field, cfg.completion_field))
    for key, value in ((cfg.prompt_field, prompt), (cfg.completion_field, completion)):
        if not isinstance(value, (str, list)):
            raise DataError(f"{where}: field '{key}' must be a string, got {type(value).__name__}")
    if isinstance(prompt, str):
        prompt = cfg.prompt_template.replace("{prompt}", prompt)
    if cfg.apply_chat_template or isinstance(prompt, list) or isinstance(completion, list):
        prompt = _messages(prompt, where, cfg.prompt_field) if isinstance(prompt, list) else [
            {"role": "user", "content": prompt}
        ]
        completion = _messages(completion, where, cfg.completion_field) if isinstance(completion, list) else [
            {"role": "assistant", "content": completion}
        ]
    example["prompt"], example["completion"] = prompt, completion
    return example


def example_text(example: dict) -> str:
    """The text of an example (message contents for chat), e.g. to train a tokenizer on."""
    return "".join(x if isinstance(x, str) else "".join(m["content"] for m in x)
                   for x in (example["prompt"], example["completion"]))  # fmt: skip


def _hf_splits(source: str, cfg) -> dict[str, list[dict]]:
    return {
        split_name(split, cfg): [example_of(row, f"{source}[{split}][{i}]", i, cfg) for i, row in enumerate(ds)]
        for split, ds in load_hf(source, name=cfg.dataset_config).items()
    }


def _jsonl_examples(path, cfg) -> list[dict]:
    return [example_of(obj, where, i, cfg) for i, (obj, where) in enumerate(iter_jsonl(path))]


DATA_SUFFIXES = (".jsonl", ".json", ".csv", ".parquet", ".txt", ".arrow")


def check_source(source: str) -> None:
    """A data source that is not an existing path must look like a hub dataset name ("name" or "org/name" whose
    first part is not a local directory); anything else is a misspelt path and fails here, before any hub call."""
    path = Path(source).expanduser()
    if path.exists():
        return
    parts = Path(source).parts
    looks_local = (
        source.startswith((".", "/", "~"))
        or path.suffix in DATA_SUFFIXES
        or len(parts) > 2
        or (len(parts) == 2 and Path(parts[0]).is_dir())
    )
    if looks_local:
        raise DataError(f"data={source!r}: no such file or directory")


def load_splits(cfg) -> dict[str, list[dict]]:
    """All splits of the configured data source as lists of {"id", "prompt", "completion", ...}, the training
    split cut to `train_size` examples and the validation split to `validation_size` when set
    (`training_subset`)."""
    source = cfg.data
    if source == "math":
        return training_subset(generate_splits(cfg.math_sizes, cfg.math_templates, cfg.data_seed), cfg)
    if source in text_tasks.TASKS:  # built-in real-text tasks: the committed data/<task>/<split>.jsonl
        files = {split: text_tasks.task_dir(source) / f"{split}.jsonl" for split in text_tasks.TASK_SPLITS}
        if missing := [str(f) for f in files.values() if not f.is_file()]:
            raise DataError(f"data={source!r}: missing {', '.join(missing)} (rebuild: python -m tasks text --out data)")
        return training_subset({split: read_jsonl(f) for split, f in files.items()}, cfg)
    path = Path(source)
    if path.suffix == ".jsonl":
        check_source(source)
        splits = {"train": _jsonl_examples(path, cfg)}
    elif path.is_dir() and list(path.glob("*.jsonl")):
        splits = {split_name(f.stem, cfg): _jsonl_examples(f, cfg) for f in sorted(path.glob("*.jsonl"))}
    else:
        splits = _hf_splits(source, cfg)
    if "train" not in splits:
        raise DataError(f"data={source!r}: no train split (found {sorted(splits)})")
    if "validation" not in splits and cfg.eval_size > 0:
        train = list(splits["train"])
        random.Random(cfg.data_seed).shuffle(train)
        if len(train) <= cfg.eval_size:
            raise DataError(f"data={source!r}: {len(train)} examples, too few to hold out eval_size={cfg.eval_size}")
        splits["validation"], splits["train"] = train[: cfg.eval_size], train[cfg.eval_size :]
    return training_subset(splits, cfg)


def training_subset(splits: dict[str, list[dict]], cfg) -> dict[str, list[dict]]:
    """`splits` with the training split cut to its first `cfg.train_size` examples after a shuffle seeded by
    `cfg.data_seed` (unchanged when train_size is None), and the validation split to its first
    `cfg.validation_size` examples. For one data_seed a smaller subset is a prefix of a larger one: nested
    subsets, for curves over the training-set size."""
    if cfg.validation_size is not None and "validation" in splits:
        splits = {**splits, "validation": splits["validation"][: cfg.validation_size]}
    if cfg.train_size is None:
        return splits
    train = splits["train"]
    if cfg.train_size > len(train):
        raise DataError(f"data={cfg.data!r}: train_size={cfg.train_size}, but the training split has {len(train)} "
                        f"examples")  # fmt: skip
    order = list(range(len(train)))
    random.Random(cfg.data_seed).shuffle(order)
    return {**splits, "train": [train[i] for i in order[: cfg.train_size]]}


# What `encode_example` did with an example; every status but OK and TRUNCATED drops it.
OK, TRUNCATED = "ok", "truncated"
EMPTY_COMPLETION, EMPTY_PROMPT, DROPPED_OVERLONG = "empty_completion", "empty_prompt", "dropped_overlong"


@dataclass
class Encoded:
    """The token ids of one episode: the state's prompt and the completion's actions."""

    prompt_ids: list[int]
    completion_ids: list[int]  # up to and including EOS when `ended`
    ended: bool  # False: cut by the length limit, so the last action has no next state
    after_eos: int = 0  # tokens the completion text held after an EOS written inside it (not scored)


def held_out_split(splits) -> str:
    """The split a trained model is evaluated on: "test" when the data has one, else "validation" (a single
    JSONL file's held-out `eval_size` examples)."""
    return "test" if "test" in splits else "validation"


def render_chat(tokenizer, prompt: list[dict], completion: list[dict]) -> tuple[str, str]:
    """The texts of a chat example by the tokenizer's chat template: the prompt's messages with the generation
    prompt (the assistant turn's opening), and what the whole conversation adds after that (the assistant's
    content and its end-of-turn marker, trailing whitespace removed)."""
    if not tokenizer.chat_template:
        raise DataError("chat data needs a tokenizer with a chat template (set model or tokenizer to one)")
    prompt_text = tokenizer.apply_chat_template(prompt, tokenize=False, add_generation_prompt=True)
    full = tokenizer.apply_chat_template(prompt + completion, tokenize=False)
    if not full.startswith(prompt_text):
        raise DataError("the chat template renders the conversation with a different beginning than its prompt")
    return prompt_text, full[len(prompt_text) :].rstrip()


def encode_example(tokenizer, prompt, completion, max_length: int, overlong: str = "truncate", keep_empty=False):
    """(Encoded or None, status) of one prompt/completion: the one encoding rule of training and rewards.

    - Text: the prompt is tokenised with the tokenizer's special prefix (e.g. BOS), the completion without; the
      two are joined as token sequences, so a completion that starts with a space begins with the word token it
      would have in running text (the built-in text tasks write completions that way).
    - Chat (prompt and completion lists of {role, content} messages): rendered by the chat template
      (`render_chat`); the prompt is everything before the final assistant turn plus the generation prompt,
      the completion the assistant's content and end-of-turn marker, both tokenised without a special prefix
      (the template writes its own). Only the completion's tokens are actions: the TD and NLL terms see the
      assistant's tokens alone.
    - The episode ends at the first EOS: at one the completion text holds (the text of the EOS token written
      in it: the tokens after it are not actions of this episode and are counted in `after_eos`), else at an
      EOS appended after the completion.
    - Whitespace-only completion: dropped from training data (EMPTY_COMPLETION); with `keep_empty` (rewards,
      which score whatever they are given) it is the episode it is: "" is a single EOS action, " \n" its
      whitespace tokens then EOS. Prompt that tokenises to nothing: dropped (EMPTY_PROMPT), there is no state to
      act from.
    - Longer than max_length: with overlong='truncate' the completion is cut and gets no EOS (the episode did
      not end, so its last token leaves every term that needs V(s_{t+1}), METHOD.md section 1): TRUNCATED;
      with 'drop' it is skipped (DROPPED_OVERLONG). A prompt that leaves no room for one completion token is
      always dropped.
    """
    chat = not isinstance(prompt, str)
    if not keep_empty and not (completion if not chat else "".join(m["content"] for m in completion)).strip():
        return None, EMPTY_COMPLETION
    if chat:
        prompt, completion = render_chat(tokenizer, prompt, completion)
    prompt_ids = tokenizer(prompt, add_special_tokens=not chat)["input_ids"]
    if not prompt_ids:
        return None, EMPTY_PROMPT
    completion_ids = tokenizer(completion, add_special_tokens=False)["input_ids"]
    eos = tokenizer.eos_token_id
    end = completion_ids.index(eos) if eos in completion_ids else len(completion_ids)
    after_eos = len(completion_ids) - end - 1 if end < len(completion_ids) else 0
    completion_ids = completion_ids[:end] + [eos]
    room = max_length - len(prompt_ids)
    if len(completion_ids) <= room:
        return Encoded(prompt_ids, completion_ids, True, after_eos), OK
    if overlong == "drop" or room < 1:
        return None, DROPPED_OVERLONG
    return Encoded(prompt_ids, completion_ids[:room], False, after_eos), TRUNCATED


def encode(examples, tokenizer, max_length: int, overlong: str = "truncate", decoder_start_token_id: int | None = None):
    """Tokenise examples with `encode_example` into `episode_features` ({"input_ids", "completion_mask"}, plus
    "decoder_input_ids" for an encoder-decoder model, whose `decoder_start_token_id` is given; completion_mask 1
    on the completion's actions, EOS included) and count what happened: `examples`, `kept`, one count per
    status (`empty_completion`, `empty_prompt`, `truncated`, `dropped_overlong`), `eos_in_text` (examples whose
    completion text held an EOS) and `after_eos_tokens` (tokens after it, not trained on)."""
    counts = dict.fromkeys((EMPTY_COMPLETION, EMPTY_PROMPT, TRUNCATED, DROPPED_OVERLONG, "eos_in_text"), 0)
    counts = {"examples": len(examples), **counts, "after_eos_tokens": 0}
    features = []
    for ex in examples:
        encoded, status = encode_example(tokenizer, ex["prompt"], ex["completion"], max_length, overlong)
        if status != OK:
            counts[status] += 1
        if encoded is None:
            continue
        counts["eos_in_text"] += encoded.after_eos > 0  # an EOS with more text after it
        counts["after_eos_tokens"] += encoded.after_eos
        features.append(episode_features(encoded, decoder_start_token_id))
    counts["kept"] = len(features)
    return features, counts


def episode_features(encoded: Encoded, decoder_start_token_id: int | None = None) -> dict:
    """The training features of one episode, the layout `Collator` pads and irl.kernels.token_terms reads.

    Decoder-only model (`decoder_start_token_id` None): input_ids = prompt + completion, completion_mask 1 on the
    completion's actions. Encoder-decoder model: the state is (encoder input, decoder prefix), so input_ids = the
    prompt (the encoder's input) and decoder_input_ids = [decoder start] + completion, with completion_mask over
    decoder_input_ids: 0 on the start token, which is no action, 1 on the actions. In both, token k + 1 of the
    sequence completion_mask covers is the action taken in the state whose logits are at position k.
    """
    if decoder_start_token_id is None:
        return {
            "input_ids": encoded.prompt_ids + encoded.completion_ids,
            "completion_mask": [0] * len(encoded.prompt_ids) + [1] * len(encoded.completion_ids),
        }
    return {
        "input_ids": encoded.prompt_ids,
        "decoder_input_ids": [decoder_start_token_id] + encoded.completion_ids,
        "completion_mask": [0] + [1] * len(encoded.completion_ids),
    }


class Collator:
    """Right-pads `episode_features` into (B, T) tensors with their attention masks.

    Decoder-only: input_ids, attention_mask, completion_mask. Encoder-decoder (`seq2seq`): input_ids and
    attention_mask of the encoder (B, P), decoder_input_ids, decoder_attention_mask and completion_mask (B, T)
    of the decoder. With `prompts=True` (variants that sample completions during training) it adds the prompts
    alone, left-padded for `generate`: prompt_input_ids and prompt_attention_mask, (B, P) with P the longest prompt
    (for an encoder-decoder model, the encoder's input).
    """

    def __init__(self, pad_token_id: int, prompts: bool = False, seq2seq: bool = False):
        self.pad_token_id = pad_token_id
        self.prompts = prompts
        self.seq2seq = seq2seq

    def _right_pad(self, rows: list[list[int]], value: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(rows right-padded with `value`, attention mask), (B, longest row)."""
        width = max(map(len, rows))
        lengths = torch.tensor([len(r) for r in rows])
        padded = torch.tensor([r + [value] * (width - len(r)) for r in rows])
        return padded, (torch.arange(width)[None, :] < lengths[:, None]).long()

    def __call__(self, features):
        batch = {}
        ids = [f["input_ids"] for f in features]
        batch["input_ids"], batch["attention_mask"] = self._right_pad(ids, self.pad_token_id)
        if self.seq2seq:
            decoder = [f["decoder_input_ids"] for f in features]
            batch["decoder_input_ids"], batch["decoder_attention_mask"] = self._right_pad(decoder, self.pad_token_id)
        batch["completion_mask"] = self._right_pad([f["completion_mask"] for f in features], 0)[0]
        if self.prompts:
            if self.seq2seq:
                prompts = [f["input_ids"] for f in features]
            else:
                prompts = [f["input_ids"][: f["completion_mask"].index(1)] for f in features]
            p = max(map(len, prompts))
            batch["prompt_input_ids"] = torch.tensor([[self.pad_token_id] * (p - len(x)) + x for x in prompts])
            batch["prompt_attention_mask"] = torch.tensor([[0] * (p - len(x)) + [1] * len(x) for x in prompts])
        return batch


def batch_keys(seq2seq: bool) -> tuple[str, ...]:
    """The tensors of a batch in training layout (`Collator`, irl.generation.pack_samples)."""
    if seq2seq:
        return ("input_ids", "attention_mask", "decoder_input_ids", "decoder_attention_mask", "completion_mask")
    return ("input_ids", "attention_mask", "completion_mask")


def model_inputs(batch: dict, seq2seq: bool) -> dict:
    """The keyword arguments of the model's forward pass over a batch in training layout."""
    return {k: batch[k] for k in batch_keys(seq2seq) if k != "completion_mask"}


def action_ids(batch: dict, seq2seq: bool) -> torch.Tensor:
    """The ids that completion_mask covers and the logits predict: input_ids (decoder-only) or decoder_input_ids."""
    return batch["decoder_input_ids" if seq2seq else "input_ids"]
