"""The real-size shapes (models/shapes/): the published parameter counts, built on the meta device through the
loader every stage uses (so no memory is spent on weights); their tokenizers at the published vocabulary with the
special tokens at their published ids, written by irl/shapes.py byte for byte; a directory without weights that is
not a shape still fails to load."""

import json
import shutil
from pathlib import Path

import pytest
import torch
from transformers import AutoConfig

from irl import shapes
from irl.model import ModelError, count_parameters, kind_of, load_model, load_tokenizer

# Parameter counts of the published models (embeddings tied, counted once), from their model cards and from
# the formula: Qwen2.5-0.5B 151,936 x 896 embedding + 24 layers of 14,912,384 + the final norm's 896.
PUBLISHED = {
    "qwen2.5-0.5b": (494_032_768, "causal", 151_936),
    "llama-128k": (1_235_814_400, "causal", 128_256),  # Llama-3.2-1B
    "t5-base": (222_903_552, "seq2seq", 32_128),
    "t5-large": (737_668_096, "seq2seq", 32_128),
}


@pytest.mark.parametrize("name", PUBLISHED)
def test_shape_has_the_published_parameter_count(name):
    path = str(shapes.SHAPES_DIR / name)
    parameters, kind, vocab = PUBLISHED[name]
    with torch.device("meta"):
        model = load_model(path)
    assert count_parameters(model) == parameters
    assert model.get_output_embeddings().weight is model.get_input_embeddings().weight  # tied, as published
    assert kind_of(path) == kind and AutoConfig.from_pretrained(path).vocab_size == vocab


def test_shape_tokenizers_have_the_published_layout():
    qwen = load_tokenizer(str(shapes.SHAPES_DIR / "qwen2.5-0.5b"))
    assert len(qwen) == 151_665 and qwen.eos_token_id == qwen.pad_token_id == 151_643
    assert qwen.convert_tokens_to_ids("<|im_end|>") == 151_645
    llama = load_tokenizer(str(shapes.SHAPES_DIR / "llama-128k"))
    assert len(llama) == 128_256 and (llama.bos_token_id, llama.eos_token_id) == (128_000, 128_001)
    assert llama.convert_tokens_to_ids("<|eot_id|>") == 128_009
    t5 = load_tokenizer(str(shapes.SHAPES_DIR / "t5-base"))
    assert len(t5) == 32_100 and (t5.pad_token_id, t5.eos_token_id, t5.unk_token_id) == (0, 1, 2)
    assert t5.convert_tokens_to_ids("<extra_id_0>") == 32_099 and t5.convert_tokens_to_ids("<extra_id_99>") == 32_000
    text = "Résumé: 3 + 4 = 7\n"
    ids = qwen(text, add_special_tokens=True)["input_ids"]
    assert ids == list(text.encode()) and qwen.decode(ids) == text  # a token per byte, nothing added around it
    assert t5(text)["input_ids"] == [3 + b for b in text.encode()]
    assert qwen.decode([151_642]) and t5.decode([31_999])  # the last filler tokens decode to bytes


def test_shape_tokenizers_are_what_the_writer_writes(tmp_path):
    for name, layout in shapes.SHAPES.items():
        shapes.write_tokenizer(tmp_path, layout)
        for file in ("tokenizer.json", "tokenizer_config.json"):
            assert (tmp_path / file).read_bytes() == (shapes.SHAPES_DIR / name / file).read_bytes(), (name, file)


def test_a_directory_without_weights_that_is_not_a_shape_fails(tmp_path):
    shutil.copy(shapes.SHAPES_DIR / "t5-base" / "config.json", tmp_path / "config.json")
    with pytest.raises(ModelError, match="cannot load a model"):
        load_model(str(tmp_path))


def small_qwen_shape(directory: Path) -> Path:
    """A shape directory of Qwen2.5-0.5B's published config (its tokenizer, no weights), made one small layer wide."""
    directory.mkdir()
    config = json.loads((shapes.SHAPES_DIR / "qwen2.5-0.5b" / "config.json").read_text())
    config.update(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                  num_key_value_heads=1, max_window_layers=1)  # fmt: skip
    (directory / "config.json").write_text(json.dumps(config))
    shapes.write_tokenizer(directory, shapes.SHAPES["qwen2.5-0.5b"])
    (directory / shapes.SHAPE_FILE).write_text("{}")
    return directory


def test_a_shape_without_a_padding_token_takes_the_tokenizers_before_the_trainer_would(tmp_path, monkeypatch):
    """Qwen2.5's published config names no padding token; the run gives the model the tokenizer's (config and
    generation config), so transformers' Trainer finds nothing to align and warns of nothing."""
    from transformers import trainer_utils

    from irl.config import TrainConfig
    from irl.train import load_tokenizer_and_model

    assert json.loads((shapes.SHAPES_DIR / "qwen2.5-0.5b" / "config.json").read_text()).get("pad_token_id") is None
    cfg = TrainConfig(output_dir=str(tmp_path / "run"), model=str(small_qwen_shape(tmp_path / "shape")))
    tokenizer, model = load_tokenizer_and_model(cfg, [], tmp_path / "run", fresh=True)
    assert tokenizer.pad_token_id == 151_643 == model.config.pad_token_id == model.generation_config.pad_token_id
    warned = []
    monkeypatch.setattr(trainer_utils.logger, "warning", lambda *args, **kwargs: warned.append(args))
    trainer_utils.align_special_tokens(model, tokenizer)
    assert warned == []
