"""configs/paper/: each decoder-only recipe trains a few steps offline on a stand-in of the same shape (a Qwen2
model of tiny size with a locally trained tokenizer that has Qwen's chat template, and a local dataset laid out
as openai/gsm8k: configs main and socratic, question/answer columns, train and test splits); hub datasets with a
configuration name load from such a directory. The T5 recipes train on a T5 stand-in on XSUM-shaped data."""

import json
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml
from transformers import Qwen2Config, Qwen2ForCausalLM

from irl.config import ConfigError, TrainConfig, load_config
from irl.data import DataError, load_splits
from irl.model import train_tokenizer
from irl.runs import last_checkpoint
from irl.train import train
from tasks.math import generate_splits

PAPER = Path(__file__).resolve().parent.parent / "configs" / "paper"
DECODER_RECIPES = ["gsm8k_mle", "gsm8k_mle_entropy", "gsm8k_iqlearn", "gsm8k_online_iqlearn", "gsm8k_gail"]
CHATML = (  # Qwen2.5's turn format (its template also adds a default system turn; this one does not)
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
GSM8K_CARD = """---
configs:
- config_name: main
  data_files:
  - split: train
    path: main/train-*
  - split: test
    path: main/test-*
- config_name: socratic
  data_files:
  - split: train
    path: socratic/train-*
  - split: test
    path: socratic/test-*
---
"""


@pytest.fixture(scope="module")
def gsm8k(tmp_path_factory) -> Path:
    """A directory laid out as openai/gsm8k: README.md declaring the configs, parquet files per config and split."""
    root = tmp_path_factory.mktemp("gsm8k")
    (root / "README.md").write_text(GSM8K_CARD)
    splits = generate_splits([48, 1, 8], [10, 16, 31, 43, 72], seed=0)
    for config in ("main", "socratic"):
        for split in ("train", "test"):
            rows = [{"question": ex["prompt"].removeprefix("Question: ").removesuffix("\nAnswer:"),
                     "answer": ex["completion"].strip()} for ex in splits[split]]  # fmt: skip
            (root / config).mkdir(exist_ok=True)
            pd.DataFrame(rows).to_parquet(root / config / f"{split}-00000-of-00001.parquet")
    return root


@pytest.fixture(scope="module")
def qwen_standin(tmp_path_factory, gsm8k) -> Path:
    """A Qwen2ForCausalLM at tiny size with a byte-level BPE tokenizer trained here, Qwen's special tokens and
    chat template (EOS is <|im_end|>, as Qwen2.5-Instruct's)."""
    path = tmp_path_factory.mktemp("qwen")
    texts = pd.read_parquet(gsm8k / "main" / "train-00000-of-00001.parquet").to_numpy().ravel().tolist()
    tokenizer = train_tokenizer(texts * 2 + ["user assistant system"], vocab_size=400)
    tokenizer.add_special_tokens({"additional_special_tokens": ["<|im_start|>", "<|im_end|>"]})
    tokenizer.eos_token = "<|im_end|>"
    tokenizer.chat_template = CHATML
    config = Qwen2Config(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                         tie_word_embeddings=True, eos_token_id=tokenizer.eos_token_id,
                         pad_token_id=tokenizer.pad_token_id)  # fmt: skip
    torch.manual_seed(0)
    Qwen2ForCausalLM(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def test_hub_dataset_with_a_config_name(gsm8k):
    cfg = TrainConfig(data=str(gsm8k), dataset_config="main", prompt_field="question", completion_field="answer",
                      eval_size=8)  # fmt: skip
    splits = load_splits(cfg)
    assert [len(splits[s]) for s in ("train", "validation", "test")] == [40, 8, 8]
    assert splits["test"][0]["completion"].split("#### ")[-1].strip().isdigit()
    with pytest.raises(DataError, match=r"dataset_config=None: Config name is missing.*\['main', 'socratic'\]"):
        load_splits(TrainConfig(data=str(gsm8k), prompt_field="question", completion_field="answer"))
    # split names: the "test" split read as validation, say
    renamed = load_splits(TrainConfig(data=str(gsm8k), dataset_config="main", prompt_field="question",
                                      completion_field="answer", validation_split="test", test_split="none"))
    assert len(renamed["validation"]) == 8 and "test" not in renamed


@pytest.fixture(scope="module")
def recipe_runs(tmp_path_factory, gsm8k, qwen_standin):
    """Each decoder-only recipe, with model, data and size overridden: 2 steps each (GAIL from the MLE run)."""
    tmp = tmp_path_factory.mktemp("recipes")
    small = ["--model", str(qwen_standin), "--data", str(gsm8k), "--eval_size", "8", "--max_steps", "2",
             "--save_steps", "2", "--eval_steps", "2", "--logging_steps", "1", "--per_device_train_batch_size", "4",
             "--gradient_accumulation_steps", "1", "--warmup_steps", "0", "--bf16", "false", "--report_to", "none",
             "--sample_max_new_tokens", "8", "--learning_rate", "1e-3"]  # fmt: skip
    trainers = {}
    for name in DECODER_RECIPES:
        flags = ["--config", str(PAPER / f"{name}.yaml"), *small, "--output_dir", str(tmp / name)]
        if name == "gsm8k_gail":  # GAIL starts from the MLE recipe's checkpoint; model is that checkpoint
            flags = [f for f in flags if f != str(qwen_standin)]
            flags.remove("--model")
            flags += ["--init", str(last_checkpoint(tmp / "gsm8k_mle"))]
        trainers[name] = train(load_config(flags))
    return tmp, trainers


@pytest.mark.parametrize("name", DECODER_RECIPES)
def test_decoder_only_recipe_runs_on_its_standin(recipe_runs, name):
    tmp, trainers = recipe_runs
    recipe = yaml.safe_load((PAPER / f"{name}.yaml").read_text())
    config = yaml.safe_load((tmp / name / "config.yaml").read_text())
    for key in ("objective", "lam", "alpha", "beta", "kl_coef", "dataset_config", "apply_chat_template",
                "prompt_field"):
        if key in recipe:
            assert config[key] == recipe[key], key
    rows = [json.loads(line) for line in (tmp / name / "metrics.jsonl").read_text().splitlines()]
    logged = [r for r in rows if "train/loss" in r]
    assert len(logged) == 2 and all(torch.isfinite(torch.tensor(r["train/loss"])) for r in logged)
    assert rows[0]["data/train/kept"] == 40 and rows[0]["data/validation/kept"] == 8
    assert last_checkpoint(tmp / name).name == "checkpoint-2"
    model = trainers[name].model
    assert type(model).__name__ == "Qwen2ForCausalLM" and model.is_activation_checkpointing  # the recipe's setting
    if name in ("gsm8k_online_iqlearn", "gsm8k_gail"):
        assert any("sample/length" in r for r in rows)


def test_chat_recipe_trains_on_the_assistant_turn_only(recipe_runs):
    """The MLE recipe's batches: every prompt ends with the generation prompt, every action is the solution."""
    _, trainers = recipe_runs
    trainer = trainers["gsm8k_mle"]
    tokenizer = trainer.processing_class
    example = trainer.train_dataset[0]
    mask = example["completion_mask"]
    prompt = tokenizer.decode(example["input_ids"][: mask.index(1)])
    actions = tokenizer.decode(example["input_ids"][mask.index(1) :])
    assert prompt.startswith("<|im_start|>user\n") and prompt.endswith("<|im_end|>\n<|im_start|>assistant\n")
    assert "####" in actions and actions.endswith("<|im_end|>") and "<|im_start|>" not in actions


@pytest.mark.parametrize("path", sorted(PAPER.glob("t5_*.yaml")), ids=lambda p: p.stem)
def test_t5_recipes_parse(path):
    """The T5 recipes are valid configs."""
    cfg = load_config(["--config", str(path), "--bf16", "false"])
    assert cfg.model.startswith("google-t5/t5-") and cfg.objective in ("mle", "iqlearn")


def _t5_task_data(root: Path, task: str) -> Path:
    """A local dataset of the task's shape: XSUM's document/summary, TL;DR's prompt/completion, or WMT's
    translation column {de, en} under a 'de-en' configuration."""
    words = [f"the cat sat on mat number {i} today" for i in range(24)]
    if task == "xsum":
        rows = [{"document": w, "summary": w.split(" today")[0]} for w in words]
    elif task == "tldr":
        rows = [{"prompt": f"POST: {w}\nTL;DR:", "completion": " " + w.split(" on")[0]} for w in words]
    else:
        rows = [{"translation": {"en": w, "de": w.replace("the cat", "die Katze")}} for w in words]
    data = root / task
    sub = data / "de-en" if task == "wmt22" else data
    sub.mkdir(parents=True)
    for split, part in (("train", rows[:16]), ("validation", rows[16:20]), ("test", rows[20:])):
        pd.DataFrame(part).to_parquet(sub / f"{split}-00000-of-00001.parquet")
    if task == "wmt22":
        (data / "README.md").write_text("---\nconfigs:\n- config_name: de-en\n  data_files:\n" + "".join(
            f"  - split: {s}\n    path: de-en/{s}-*\n" for s in ("train", "validation", "test")) + "---\n")
    return data


@pytest.mark.parametrize("task, objective", [("xsum", "mle"), ("tldr", "iqlearn"), ("wmt22", "mle")])
def test_t5_recipe_runs_on_its_standin(tmp_path, task, objective):
    """A T5 stand-in (T5Config at tiny size, a locally trained tokenizer) on local data of the task's shape."""
    from transformers import T5Config, T5ForConditionalGeneration

    data = _t5_task_data(tmp_path, task)
    tokenizer = train_tokenizer(["the cat sat on mat number 0 today die Katze POST: TL;DR:"] * 4, vocab_size=300)
    config = T5Config(vocab_size=len(tokenizer), d_model=32, d_ff=64, num_layers=2, num_heads=4, d_kv=8,
                      eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
                      decoder_start_token_id=tokenizer.pad_token_id)  # fmt: skip
    T5ForConditionalGeneration(config).save_pretrained(tmp_path / "t5")
    tokenizer.save_pretrained(tmp_path / "t5")
    flags = ["--config", str(PAPER / f"t5_base_{task}_{objective}.yaml"), "--model", str(tmp_path / "t5"),
             "--data", str(data), "--max_steps", "2", "--save_steps", "2", "--eval_steps", "2", "--bf16", "false",
             "--logging_steps", "1", "--per_device_train_batch_size", "4", "--report_to", "none",
             "--output_dir", str(tmp_path / "run")]  # fmt: skip
    trainer = train(load_config(flags))
    assert trainer.model.config.is_encoder_decoder and last_checkpoint(tmp_path / "run").name == "checkpoint-2"
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert rows[0]["data/train/kept"] == 16 and rows[0]["data/validation/kept"] == 4
    assert sum("train/loss" in r for r in rows) == 2


def test_gail_recipe_refuses_a_model_beside_init(tmp_path):
    with pytest.raises(ConfigError, match="with init set"):
        load_config(["--config", str(PAPER / "gsm8k_gail.yaml"), "--model", "x", "--bf16", "false"])


# benchmarks/paper_recipes.py at toy size: its machinery on the stand-in (the recipes' own batch and length are for
# the full-size run, `make bench-recipes`)
sys.path.insert(0, str(PAPER.parent.parent / "benchmarks"))
import paper_recipes as bench  # noqa: E402

TOY = "--eval_size 4 --per_device_train_batch_size 2 --max_length 96 --sample_max_new_tokens 8"
MEASURED = {"recipe", "shape", "commit", "machine", "predicted_peak_bytes", "fits", "budget", "budget_bytes",
            "peak_bytes", "process_max_rss_bytes", "seconds_per_step", "tokens_per_step", "sequences_per_step",
            "overrides", "route", "activations_bytes", "weights_bytes"}  # fmt: skip


def test_bench_trains_fitting_recipes_two_steps_and_resumes(tmp_path, qwen_standin):
    out, work = tmp_path / "recipes.jsonl", tmp_path / "work"
    argv = ["--recipes", "gsm8k_gail,gsm8k_mle", "--out", str(out), "--workdir", str(work), "--shapes",
            f"gsm8k_={qwen_standin}", "--flags", TOY]  # fmt: skip
    rows = bench.main(argv)
    assert [r["recipe"] for r in rows] == ["gsm8k_mle", "gsm8k_gail"]  # GAIL after the run it starts from
    for r in rows:
        assert MEASURED <= set(r) and r["fits"] and r["peak_bytes"] > 0 and r["shape"] == str(qwen_standin)
        assert len(r["seconds_per_step"]) == 2 and all(s > 0 for s in r["seconds_per_step"])
        # the recipe's gradient accumulation (2) kept: 2 x 2 sequences of at most 96 tokens per optimizer step
        assert r["sequences_per_step"] == 4 and all(0 < t <= 4 * 96 for t in r["tokens_per_step"])
        assert "--max_steps 2" in r["overrides"] and "--eval_strategy no" in r["overrides"]
    mle, gail = rows
    assert "--model" in mle["overrides"] and "--model" not in gail["overrides"]
    assert gail["init"].startswith(str(work / "runs" / "gsm8k_mle" / "checkpoint-2"))
    assert (work / "runs" / "gsm8k_mle").is_dir() and not (work / "runs" / "gsm8k_gail").exists()
    # GAIL's reference (a copy of the weights) and discriminator (body, gradients, AdamW) are predicted
    assert gail["weights_bytes"] < gail["resident_bytes"] <= 5 * gail["weights_bytes"]
    # every row taken at max_length (96) bounds a run whose sampled rows stop after 8 tokens: an upper bound here
    assert gail["peak_bytes"] <= gail["predicted_peak_bytes"] <= 1.5 * gail["peak_bytes"]
    config = yaml.safe_load((work / "runs" / "gsm8k_mle" / "config.yaml").read_text())
    assert (config["bf16"], config["activation_checkpointing"], config["gradient_accumulation_steps"]) == (
        True, True, 2)  # fmt: skip  the recipe's settings
    lines = out.read_text()
    bench.main(argv)  # resumes: both recipes are there for this commit
    assert out.read_text() == lines


def test_bench_says_why_a_recipe_does_not_fit_without_training(tmp_path, qwen_standin):
    out, work = tmp_path / "recipes.jsonl", tmp_path / "work"
    [row] = bench.main(["--recipes", "gsm8k_iqlearn", "--out", str(out), "--workdir", str(work), "--memory_gib",
                        "0.0008", "--shapes", f"gsm8k_={qwen_standin}", "--flags", TOY])  # fmt: skip
    assert not row["fits"] and "peak_bytes" not in row and not (work / "runs").exists()
    terms = {f"{k}_bytes": row[f"{k}_bytes"] for k in bench.TERMS}
    assert row["largest_term"] == max(terms, key=terms.get) and row["largest_term"] in row["reason"]
    # bf16 and checkpointing are on already: the one change left halves the batch, the accumulation doubled
    [remedy] = row["remedies"]
    assert remedy["flags"] == "--per_device_train_batch_size 1 --gradient_accumulation_steps 4"
    assert remedy["predicted_peak_bytes"] < row["predicted_peak_bytes"] and not remedy["fits"]
    assert row["smallest_gpu_gib"] == 16 and "GPU of 16 GB" in row["reason"]


def test_qwen_shape_renders_chat_as_qwen_instruct():
    """The shape's chat template is Qwen2.5-Instruct's: its default system turn, <|im_start|> and <|im_end|> at
    their published ids; the completion is the assistant's text and <|im_end|>, then the shape's EOS."""
    from irl.data import encode_example
    from irl.model import load_tokenizer
    from irl.shapes import SHAPES_DIR

    tokenizer = load_tokenizer(str(SHAPES_DIR / "qwen2.5-0.5b"))
    encoded, _ = encode_example(tokenizer, [{"role": "user", "content": "What is 3 + 4?"}],
                                [{"role": "assistant", "content": "3 + 4 = 7\n#### 7"}], 512)  # fmt: skip
    assert tokenizer.decode(encoded.prompt_ids) == (
        "<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\n"
        "<|im_start|>user\nWhat is 3 + 4?<|im_end|>\n<|im_start|>assistant\n"
    )
    assert encoded.prompt_ids[0] == 151_644 and encoded.prompt_ids[-11:] == [151_644, *b"assistant\n"]
    assert encoded.completion_ids == [*b"3 + 4 = 7\n#### 7", 151_645, 151_643]


def test_bench_takes_an_unprofiled_recipe_its_steps_without_the_peak(tmp_path, qwen_standin):
    out, work = tmp_path / "recipes.jsonl", tmp_path / "work"
    [row] = bench.main(["--recipes", "gsm8k_mle", "--unprofiled", "gsm8k_mle", "--out", str(out), "--workdir",
                        str(work), "--shapes", f"gsm8k_={qwen_standin}", "--flags", TOY])  # fmt: skip
    assert row["fits"] and row["peak_bytes"] is None and row["process_max_rss_bytes"] > 0
    assert len(row["seconds_per_step"]) == 2 and row["sequences_per_step"] == 4
