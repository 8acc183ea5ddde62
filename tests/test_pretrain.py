"""Pretraining (irl/pretrain.py) and the shipped base model (models/base): packing against plain concatenation,
pretrain -> fine-tune through the command line at toy scale, the shipped files against their checksums,
fine-tuning from the base with the same start for MLE and IQLearn, and bad configs failing by field."""

import json
import math
import os
from pathlib import Path

import numpy as np
import pytest

from irl.__main__ import main as irl_main
from irl.config import ConfigError, TrainConfig, load_config, read_config
from irl.data import DataError
from irl.model import count_parameters, load_model, load_tokenizer, train_tokenizer
from irl.pretrain import PackedBlocks, PretrainConfig, check_sums, export, load_corpus, pretrain, token_stream
from irl.runs import last_checkpoint
from irl.train import train, weights_sha256
from tasks.text import task_splits
from tests.test_train import CrashAt, fails

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BASE = os.path.join(REPO, "models", "base")

# Words to make documents of: enough variety that a tokenizer and a tiny model have something to learn.
WORDS = ("the file is copied to the directory when the option is given and the output is written to standard "
         "output unless a name is set; list every entry of the archive, print the version and exit").split()


def documents(n: int, seed: int) -> list[str]:
    rng = np.random.default_rng(seed)
    return [" ".join(rng.choice(WORDS, size=int(rng.integers(5, 40)))) + "." for _ in range(n)]


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


@pytest.fixture
def corpus(tmp_path):
    """A corpus directory as `python -m tasks corpus` writes it: train/validation JSONL documents and a manifest."""
    root = tmp_path / "corpus"
    root.mkdir()
    write_jsonl(root / "train.jsonl", [{"text": t, "source": "fixture"} for t in documents(60, 0)])
    validation = [{"text": t, "source": "fixture"} for t in documents(8, 1)] + [{"text": " "}]
    write_jsonl(root / "validation.jsonl", validation)
    (root / "manifest.json").write_text(json.dumps({"fixture": True}))
    return root


def summaries(tmp_path):
    """Prompt/completion examples in the summarisation task's form (completions start with one space)."""
    rows = [{"prompt": f"Description: {' '.join(t.split()[:12])}\nSummary:",
             "completion": " " + " ".join(t.split()[:4])} for t in documents(24, 2)]
    return write_jsonl(tmp_path / "summaries.jsonl", rows)


def run_cli(*args) -> None:
    """`python -m irl <args>` in this process: the command's parsing and entry point (tests/test_bad_inputs.py runs
    the commands from a shell)."""
    irl_main([str(a) for a in args])


def rows_of(run_dir):
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def test_packed_blocks_target_every_token_once():
    texts = documents(30, 3)
    tokenizer = train_tokenizer(texts, vocab_size=300)
    eos = tokenizer.eos_token_id
    stream = token_stream(texts, tokenizer, batch=7)
    obvious = [eos]
    for text in texts:
        obvious += tokenizer(text)["input_ids"] + [eos]
    assert stream.tolist() == obvious
    for length in (2, 3, 16, 64, len(stream) + 5):
        blocks = [PackedBlocks(stream, length)[k] for k in range(len(PackedBlocks(stream, length)))]
        assert all(2 <= len(b["input_ids"]) <= length and b["completion_mask"] == [1] * len(b["input_ids"])
                   for b in blocks)
        targets = [t for b in blocks for t in b["input_ids"][1:]]  # a block's first token is context only
        assert targets == obvious[1:]


def test_pretrain_then_finetune_through_the_command_line(tmp_path, corpus):
    run = tmp_path / "pre"
    flags = ["--model", "tiny", "--vocab_size", 300, "--max_length", 32, "--max_steps", 4,
             "--per_device_train_batch_size", 4, "--logging_steps", 2, "--eval_steps", 2, "--save_steps", 4,
             "--warmup_steps", 0, "--learning_rate", 3e-3]
    run_cli("pretrain", "--config", "configs/base.yaml", "--data", corpus, "--output_dir", run, *flags)
    rows = rows_of(run)
    tokenizer = load_tokenizer(str(run / "tokenizer"))
    texts = [json.loads(line)["text"] for line in (corpus / "validation.jsonl").read_text().splitlines()][:-1]
    # every validation document's tokens and its EOS are counted and evaluated, the blank document dropped
    assert rows[0]["data/validation/tokens"] == sum(len(tokenizer(t)["input_ids"]) + 1 for t in texts)
    assert rows[0]["data/validation/empty"] == 1 and rows[0]["data/train/documents"] == 60
    evals = [r for r in rows if "eval/nll" in r]
    assert [r["step"] for r in evals] == [2, 4] and evals[-1]["eval/tokens"] == rows[0]["data/validation/tokens"]
    assert evals[0]["eval/nll"] > evals[-1]["eval/nll"]
    final = rows[-1]
    assert math.isclose(final["eval/perplexity"], math.exp(evals[-1]["eval/nll"]), rel_tol=1e-9)
    assert final["eval/bits_per_byte"] > 0
    ckpt = run / "checkpoint-4"
    assert (ckpt / "model.safetensors").is_file() and (ckpt / "tokenizer.json").is_file()

    # fine-tune from the pretrained checkpoint: its weights are the start, its tokenizer is used
    ft = tmp_path / "ft"
    run_cli("train", "--model", ckpt, "--data", summaries(tmp_path), "--eval_size", 4, "--output_dir", ft,
            "--max_steps", 2, "--per_device_train_batch_size", 4, "--max_length", 64, "--save_steps", 2,
            "--logging_steps", 1)
    head = rows_of(ft)[0]
    assert head["init/weights_sha256"] == weights_sha256(load_model(str(ckpt)))
    assert any("train/loss" in r for r in rows_of(ft)) and (ft / "checkpoint-2" / "model.safetensors").is_file()

    # ship the run: model, tokenizer and recipe, every file under SHA256SUMS
    shipped = export(run, tmp_path / "shipped")
    assert check_sums(shipped) == []
    assert sorted(p.name for p in (shipped / "recipe").iterdir()) == ["SHA256SUMS", "config.yaml", "manifest.json",
                                                                        "metrics.jsonl"]
    assert not list(shipped.glob("optimizer*")) and not list(shipped.glob("trainer_state*"))
    reloaded, original = load_model(str(shipped)), load_model(str(ckpt))
    assert weights_sha256(reloaded) == weights_sha256(original)
    (shipped / "config.json").write_text((shipped / "config.json").read_text() + " ")
    (shipped / "recipe" / "extra.txt").write_text("x")
    assert check_sums(shipped) == ["recipe/extra.txt: not listed in recipe/SHA256SUMS", "config.json: checksum differs"]


def test_resumed_pretraining_ends_as_an_uninterrupted_one(tmp_path, corpus):
    def cfg(name, **kw):
        return PretrainConfig(data=str(corpus), output_dir=str(tmp_path / name), model="tiny", vocab_size=300,
                              max_length=32, max_steps=4, per_device_train_batch_size=4, save_steps=2, eval_steps=0,
                              logging_steps=1, warmup_steps=0, learning_rate=3e-3, **kw)

    pretrain(cfg("straight"))
    with pytest.raises(KeyboardInterrupt):
        pretrain(cfg("resumed"), callbacks=[CrashAt(3)])
    pretrain(cfg("resumed", resume=True))
    a, b = (load_model(str(last_checkpoint(tmp_path / name))) for name in ("straight", "resumed"))
    assert weights_sha256(a) == weights_sha256(b)
    steps = [r["step"] for r in rows_of(tmp_path / "resumed")]
    assert steps == sorted(steps) and steps.count(3) == 1  # the lines after checkpoint-2 were written once


def test_bad_pretrain_config_fails_naming_the_field(tmp_path, corpus, capsys):
    argv = ["pretrain", "--config", "configs/base.yaml", "--objective", "iqlearn", "--output_dir", str(tmp_path / "r")]
    assert "objective='iqlearn'" in fails(capsys, irl_main, argv) and not (tmp_path / "r").exists()
    for field, value in (("max_length", 1), ("text_field", ""), ("learning_rate", 0.0), ("vocab_size", 0)):
        with pytest.raises(ConfigError, match=f"^{field}="):
            PretrainConfig(**{field: value})
    bad = tmp_path / "bad.yaml"
    bad.write_text("prompt: x\nmax_steps: 3\n")
    with pytest.raises(ConfigError, match=r"unknown field\(s\) \['prompt'\]"):
        load_config(["--config", str(bad)], PretrainConfig)
    with pytest.raises(DataError, match=r"data='.*nowhere': not a corpus directory \(no train.jsonl, validation.jsonl"):
        load_corpus(PretrainConfig(data=str(tmp_path / "nowhere")))
    write_jsonl(corpus / "validation.jsonl", [{"text": "fine"}, {"body": "no text"}])
    with pytest.raises(DataError, match=r"validation\.jsonl:2: field 'text' missing"):
        load_corpus(PretrainConfig(data=str(corpus)))
    with pytest.raises(DataError, match=r"train\.jsonl:1: field 'body' missing"):
        load_corpus(PretrainConfig(data=str(corpus), text_field="body"))


def shipped_files():
    return sorted(p for p in Path(BASE).rglob("*") if p.is_file())


SHIPPED = pytest.mark.skipif(
    not (Path(BASE) / "config.json").is_file(),
    reason="no base is shipped yet in models/base (`make base` builds one); these check a shipped base",
)


@SHIPPED
def test_shipped_base_matches_its_checksums_and_recipe():
    assert check_sums(BASE) == []
    assert sum(p.stat().st_size for p in shipped_files()) < 30e6
    model, tokenizer = load_model(BASE), load_tokenizer(BASE)
    recipe = Path(BASE) / "recipe"
    cfg = read_config(recipe / "config.yaml", PretrainConfig)  # the exact recipe, still a valid config
    rows = [json.loads(line) for line in (recipe / "metrics.jsonl").read_text().splitlines()]
    assert cfg.model == "base" and model.config.tie_word_embeddings and len(tokenizer) == cfg.vocab_size
    assert count_parameters(model) == rows[0]["init/parameters"]
    assert rows[-1]["step"] == cfg.max_steps and rows[-1]["eval/perplexity"] > 1
    assert json.loads((recipe / "manifest.json").read_text())


@SHIPPED
def test_finetuning_from_the_base_starts_from_its_weights_for_mle_and_iqlearn(tmp_path):
    data = summaries(tmp_path)
    common = dict(data=str(data), eval_size=4, max_steps=1, per_device_train_batch_size=2, max_length=64, save_steps=1,
                  eval_steps=0)
    train(TrainConfig(output_dir=str(tmp_path / "mle"), model=BASE, objective="mle", **common))
    train(TrainConfig(output_dir=str(tmp_path / "iq"), init=BASE, objective="iqlearn", lam=0.1, **common))
    heads = [rows_of(tmp_path / name)[0] for name in ("mle", "iq")]
    assert heads[0]["init/weights_sha256"] == heads[1]["init/weights_sha256"] == weights_sha256(load_model(BASE))


@SHIPPED
@pytest.mark.parametrize("task", ["summarize", "translate"])
def test_completion_tokens_are_those_of_the_joined_text(task):
    """The task's prompts end without whitespace and its completions start with one space, so with the base
    tokenizer (byte-level BPE, no prefix space) prompt ids + completion ids are the ids of prompt + completion:
    the completion's first token is " word" as in running text, and no merge crosses the border."""
    tokenizer = load_tokenizer(BASE)
    rows = [row for split in task_splits(task).values() for row in split]
    for row in rows:
        prompt_ids = tokenizer(row["prompt"])["input_ids"]
        completion_ids = tokenizer(row["completion"], add_special_tokens=False)["input_ids"]
        assert prompt_ids + completion_ids == tokenizer(row["prompt"] + row["completion"])["input_ids"], row["id"]
        assert tokenizer.convert_ids_to_tokens(completion_ids[0]).startswith("Ġ")  # the byte-level space
    # the convention matters: the space moved to the prompt's end gives a lone space token and another split
    prompt, completion = rows[0]["prompt"] + " ", rows[0]["completion"][1:]
    split_ids = tokenizer(prompt)["input_ids"] + tokenizer(completion, add_special_tokens=False)["input_ids"]
    assert split_ids != tokenizer(prompt + completion)["input_ids"]
