"""Data sources, bad input, encoding and collation on literal inputs."""

import json

import datasets
import pytest
import torch

from irl.config import ConfigError, TrainConfig, load_config
from irl.data import Collator, DataError, encode, load_splits, read_jsonl
from irl.model import train_tokenizer
from tasks.math import generate_splits


@pytest.fixture(scope="module")
def tokenizer():
    texts = ["Question: what is 1 + 2?\nAnswer: 1 + 2 = 3\n#### 3"] * 20
    return train_tokenizer(texts, vocab_size=300)


def write(path, lines):
    path.write_text("".join(line + "\n" for line in lines))
    return path


def test_malformed_line_names_file_and_line(tmp_path):
    f = write(tmp_path / "d.jsonl", ['{"prompt": "a", "completion": "b"}', "", '{"prompt": "a", "completion": }'])
    with pytest.raises(DataError, match=r"d\.jsonl:3: malformed JSON"):
        read_jsonl(f)


def test_missing_and_mistyped_fields_are_named(tmp_path):
    f = write(tmp_path / "d.jsonl", ['{"prompt": "a", "completion": "b"}', '{"prompt": "a"}'])
    with pytest.raises(DataError, match=r"d\.jsonl:2: missing field 'completion'"):
        read_jsonl(f)
    f = write(tmp_path / "e.jsonl", ['{"question": "a", "answer": 3}'])
    with pytest.raises(DataError, match=r"e\.jsonl:1: field 'answer' must be a string"):
        read_jsonl(f, "question", "answer")
    f = write(tmp_path / "f.jsonl", ["[1, 2]"])
    with pytest.raises(DataError, match=r"f\.jsonl:1: expected a JSON object"):
        read_jsonl(f)


def test_column_mapping_and_sources(tmp_path):
    rows = [{"question": f"q{i}", "answer": f"a{i}"} for i in range(10)]
    # a single JSONL file: train, with a held-out validation split
    f = write(tmp_path / "qa.jsonl", [json.dumps(r) for r in rows])
    cfg = TrainConfig(data=str(f), prompt_field="question", completion_field="answer", eval_size=3)
    splits = load_splits(cfg)
    assert len(splits["train"]) == 7 and len(splits["validation"]) == 3
    assert {e["prompt"] for e in splits["train"] + splits["validation"]} == {f"q{i}" for i in range(10)}
    assert splits == load_splits(cfg)  # deterministic
    # a directory of <split>.jsonl
    d = tmp_path / "dir"
    d.mkdir()
    write(d / "train.jsonl", [json.dumps(r) for r in rows[:6]])
    write(d / "validation.jsonl", [json.dumps(r) for r in rows[6:8]])
    write(d / "test.jsonl", [json.dumps(r) for r in rows[8:]])
    splits = load_splits(TrainConfig(data=str(d), prompt_field="question", completion_field="answer"))
    assert [len(splits[s]) for s in ("train", "validation", "test")] == [6, 2, 2]
    assert splits["test"][0]["prompt"] == "q8" and splits["test"][0]["completion"] == "a8"
    # a datasets directory (save_to_disk)
    saved = tmp_path / "saved"
    datasets.DatasetDict(
        {"train": datasets.Dataset.from_list(rows[:8]), "test": datasets.Dataset.from_list(rows[8:])}
    ).save_to_disk(str(saved))
    splits = load_splits(TrainConfig(data=str(saved), prompt_field="question", completion_field="answer", eval_size=2))
    assert [len(splits[s]) for s in ("train", "validation", "test")] == [6, 2, 2]
    with pytest.raises(DataError, match="missing field 'prompt'"):
        load_splits(TrainConfig(data=str(saved), eval_size=2))


def test_encode_counts_and_treats_bad_examples(tokenizer):
    examples = [
        {"prompt": "Question: 1 + 2?\nAnswer:", "completion": " 1 + 2 = 3"},
        {"prompt": "Question: 1?\nAnswer:", "completion": "   "},  # empty completion
        {"prompt": "", "completion": " 3"},  # empty prompt
        {"prompt": "Question: 1 + 2 + 1 + 2 + 1 + 2?\nAnswer:", "completion": " 1 + 2 = 3 and 3 + 3 = 6"},
    ]
    prompt_len = len(tokenizer(examples[3]["prompt"])["input_ids"])
    features, counts = encode(examples, tokenizer, max_length=prompt_len + 3, overlong="truncate")
    assert counts == {
        "examples": 4, "empty_completion": 1, "empty_prompt": 1, "truncated": 1, "dropped_overlong": 0, "kept": 2,
        "eos_in_text": 0, "after_eos_tokens": 0,
    }
    cut = features[1]
    assert len(cut["input_ids"]) == prompt_len + 3 and cut["input_ids"][-1] != tokenizer.eos_token_id
    assert cut["completion_mask"] == [0] * prompt_len + [1, 1, 1]
    full = features[0]
    assert full["input_ids"][-1] == tokenizer.eos_token_id and full["completion_mask"][-1] == 1
    _, counts = encode(examples, tokenizer, max_length=prompt_len + 3, overlong="drop")
    assert counts["dropped_overlong"] == 1 and counts["kept"] == 1
    # a prompt with no room for a completion token is dropped even when truncating
    _, counts = encode(examples[3:], tokenizer, max_length=prompt_len, overlong="truncate")
    assert counts["dropped_overlong"] == 1 and counts["kept"] == 0


def test_collator_literal_tensors():
    batch = Collator(pad_token_id=0)(
        [{"input_ids": [5, 6, 7], "completion_mask": [0, 1, 1]}, {"input_ids": [8, 9], "completion_mask": [0, 1]}]
    )
    assert torch.equal(batch["input_ids"], torch.tensor([[5, 6, 7], [8, 9, 0]]))
    assert torch.equal(batch["attention_mask"], torch.tensor([[1, 1, 1], [1, 1, 0]]))
    assert torch.equal(batch["completion_mask"], torch.tensor([[0, 1, 1], [0, 1, 0]]))


def test_math_splits_deterministic_and_disjoint():
    a = generate_splits([300, 50, 50], [10, 16, 31, 43, 72], seed=7)
    assert a == generate_splits([300, 50, 50], [10, 16, 31, 43, 72], seed=7)
    assert a != generate_splits([300, 50, 50], [10, 16, 31, 43, 72], seed=8)
    prompts = {s: {e["prompt"] for e in rows} for s, rows in a.items()}
    assert [len(a[s]) for s in ("train", "validation", "test")] == [300, 50, 50]
    assert not prompts["test"] & prompts["train"] and not prompts["validation"] & prompts["train"]
    assert not prompts["test"] & prompts["validation"]
    ex = a["test"][0]
    assert ex["prompt"].startswith("Question: ") and ex["prompt"].endswith("\nAnswer:")
    assert ex["completion"].rstrip().endswith(f"#### {ex['answer']}")


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--lam", "-0.1"], "lam=-0.1: must be >= 0"),
        (["--gamma", "0"], "gamma=0.0: must be in"),
        (["--gamma", "1.5"], "gamma=1.5: must be in"),
        (["--objective", "ppo"], "objective='ppo': unknown objective"),
        (["--max_steps", "ten"], "argument --max_steps/--max-steps: invalid int value: 'ten'"),
        (["--overlong", "wrap"], "overlong='wrap'"),
        (["--objective", "iqlearn", "--beta", "0.1"], "beta=0.1: the entropy bonus belongs"),
    ],
)
def test_invalid_config_names_the_field(flags, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        load_config(flags)


def test_config_yaml_then_flags(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("objective: iqlearn\nlam: 0.3\nmath_templates: [10, 16]\n")
    cfg = load_config(["--config", str(f), "--lam", "0.05", "--resume"])
    read = (cfg.objective, cfg.lam, cfg.math_templates, cfg.resume, cfg.gamma)
    assert read == ("iqlearn", 0.05, [10, 16], True, 0.99)
    f.write_text("lamda: 0.3\n")
    with pytest.raises(ConfigError, match=r"unknown field\(s\) \['lamda'\]"):
        load_config(["--config", str(f)])
    f.write_text("lam: [1]\n")
    with pytest.raises(ConfigError, match="lam=\\[1\\]: expected float"):
        load_config(["--config", str(f)])
