"""LoRA (peft) on the tiny preset: only the adapters train, lam=0 is MLE bit for bit, the checkpoint holds the
adapter as peft saves it and every later stage (load_model, the sweep, reward extraction) reads it merged on its
base; GAIL's KL reference is the initial policy exactly; the chunked loss checks itself without the frozen head's
gradient."""

import json

import pytest
import torch
from safetensors.torch import load_file

from analysis.__main__ import main as analysis_main
from analysis.sweep import sweep
from irl import kernels, runs
from irl import trainer as trainer_module
from irl.model import ADAPTER_CONFIG, BASE_MODEL, load_model, load_tokenizer
from irl.train import train
from tests.test_shapes import small_qwen_shape
from tests.test_train import tiny

LORA = dict(use_peft=True, lora_r=4, lora_alpha=8, lora_dropout=0.0,
            lora_target_modules=["q_proj", "v_proj", "down_proj"])


@pytest.fixture(scope="module")
def lora_runs(tmp_path_factory):
    """IQLearn with lam=0 and MLE, both with LoRA, same seed: 3 steps each."""
    tmp = tmp_path_factory.mktemp("lora")
    trainers = {
        "iq": train(tiny(tmp, "iq", objective="iqlearn", lam=0.0, **LORA)),
        "mle": train(tiny(tmp, "mle", objective="mle", **LORA)),
    }
    return tmp, trainers


def test_only_adapter_parameters_change(lora_runs):
    tmp, trainers = lora_runs
    ckpt = runs.last_checkpoint(tmp / "iq")
    assert {p.name for p in ckpt.iterdir()} >= {"adapter_model.safetensors", ADAPTER_CONFIG, "config.json",
                                                "tokenizer.json", runs.CHECKPOINT_CONFIG}  # fmt: skip
    assert not (ckpt / "model.safetensors").exists()
    base = load_file(str(tmp / "iq" / BASE_MODEL / "model.safetensors"))  # the preset's initial weights
    peft_model = trainers["iq"].model
    changed = {name for name, p in peft_model.named_parameters() if "lora_" in name}
    assert changed and all(p.requires_grad == ("lora_" in name) for name, p in peft_model.named_parameters())
    for name, p in peft_model.get_base_model().named_parameters():
        if "lora_" not in name:
            key = name.replace(".base_layer", "")
            assert torch.equal(p.detach(), base[key]), f"base weight {name} changed"
    adapter = load_file(str(ckpt / "adapter_model.safetensors"))
    lora_b = [v for k, v in adapter.items() if "lora_B" in k]
    assert lora_b and all(v.abs().sum() > 0 for v in lora_b)  # B starts at zero: every adapter moved
    assert json.loads((ckpt / ADAPTER_CONFIG).read_text())["base_model_name_or_path"] == f"../{BASE_MODEL}"


def test_lam0_is_mle_bit_for_bit_under_lora(lora_runs):
    tmp, _ = lora_runs
    a, b = (load_file(str(runs.last_checkpoint(tmp / r) / "adapter_model.safetensors")) for r in ("iq", "mle"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_load_model_merges_the_adapter_on_its_base(lora_runs):
    tmp, trainers = lora_runs
    ckpt = runs.last_checkpoint(tmp / "iq")
    merged = load_model(str(ckpt)).eval()
    assert type(merged).__name__ == "LlamaForCausalLM" and not any("lora_" in n for n, _ in merged.named_parameters())
    ids = torch.tensor([load_tokenizer(str(ckpt))("Question: A kid has 3 books.\nAnswer: 1 + 2 = 3")["input_ids"]])
    # W + (alpha/r) B A against W x + (alpha/r) B A x, float32: one rounding of each merged weight and one more
    # addition per projection output (half an ulp of ~10, 5e-7), through 2 layers: ~1e-6 at the logits, 1e-5 = 10x
    with torch.no_grad():
        torch.testing.assert_close(merged(ids).logits, trainers["iq"].model.eval()(ids).logits, rtol=0, atol=1e-5)


def test_lora_checkpoint_is_swept_and_scored(lora_runs, tmp_path):
    tmp, _ = lora_runs
    run = tmp / "iq"
    sweep(run, temperatures=(0, 1.0), beams=(2,), samples=2, limit=4, max_new_tokens=10, batch_size=4)
    ckpt = runs.last_checkpoint(run)
    assert (runs.sweep_dir(ckpt, "test") / "aggregate.parquet").is_file()
    analysis_main(["rewards", "--checkpoint", str(ckpt), "--data", "test"])
    summary = json.loads((runs.rewards_dir(ckpt, "test") / runs.SUMMARY_FILE).read_text())
    assert summary


def test_gail_reference_under_lora_is_the_initial_policy(lora_runs, tmp_path):
    """GAIL from a LoRA MLE checkpoint: the policy is that checkpoint merged plus fresh adapters; with them
    disabled it is the checkpoint's policy, exactly, also after the adapters trained."""
    tmp, _ = lora_runs
    init = str(runs.last_checkpoint(tmp / "mle"))
    trainer = train(tiny(tmp_path, "gail", objective="gail", init=init, sample_max_new_tokens=8, max_steps=2,
                         save_steps=2, **LORA))  # fmt: skip
    assert trainer.ref_model is None
    tokenizer = load_tokenizer(init)
    ids = torch.tensor([tokenizer("Question: A kid has 3 books.\nAnswer: 1 + 2 = 3")["input_ids"]])
    completion = torch.zeros_like(ids)
    completion[0, -6:] = 1
    batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "completion_mask": completion}
    with torch.no_grad():
        reference = trainer._reference_logp(batch)
        assert torch.equal(reference, trainer.terms(load_model(init).eval(), batch).logp)
        assert not torch.equal(trainer.terms(trainer.model.eval(), batch).logp, reference)  # the policy moved
    ckpt = runs.last_checkpoint(tmp_path / "gail")
    assert (ckpt / "discriminator" / "model.safetensors").is_file()
    merged = load_model(str(ckpt))  # adapter on (adapter on its own base), merged twice
    assert type(merged).__name__ == "LlamaForCausalLM"


def test_a_lora_run_checks_its_chunked_loss_without_the_frozen_heads_gradient(tmp_path, monkeypatch):
    """The chunked loss's self-check compares what a LoRA run forms, the loss and dL/dh, and never the frozen
    output embedding's gradient (a (V, H) tensor: 1.3 GiB of the check's peak at the 0.5B shape); a run that trains
    the head is checked apart, its head's gradient included."""
    monkeypatch.setattr(trainer_module, "_checked", {})
    head_loss, weight_grads = kernels.head_loss, []

    def spy(objective, hidden, weight, *args, **kwargs):
        weight_grads.append(weight.requires_grad)
        return head_loss(objective, hidden, weight, *args, **kwargs)

    monkeypatch.setattr(kernels, "head_loss", spy)
    assert train(tiny(tmp_path, "lora", max_steps=1, save_steps=1, **LORA)).chunked
    assert weight_grads and not any(weight_grads)  # the check's route and the run's steps alike
    assert [key[-1] for key in trainer_module._checked] == [False]
    weight_grads.clear()
    assert train(tiny(tmp_path, "full", max_steps=1, save_steps=1)).chunked
    assert all(weight_grads) and [key[-1] for key in trainer_module._checked] == [False, True]


def test_a_lora_run_on_a_shape_saves_its_random_base(tmp_path):
    """A shape directory (irl/shapes.py) holds no weights: its model's random weights are saved as the adapter's
    base, as a preset's are, so the checkpoint loads on the weights it was trained on, whatever torch's generator
    holds when it is loaded."""
    shape = small_qwen_shape(tmp_path / "shape")
    trainer = train(tiny(tmp_path, "lora", model=str(shape), max_steps=2, save_steps=2, **LORA))
    ckpt = runs.last_checkpoint(tmp_path / "lora")
    assert json.loads((ckpt / ADAPTER_CONFIG).read_text())["base_model_name_or_path"] == f"../{BASE_MODEL}"
    assert (tmp_path / "lora" / BASE_MODEL / "model.safetensors").is_file()
    torch.manual_seed(1234)  # another generator state than the run's: a shape rebuilt now would differ
    merged = load_model(str(ckpt)).eval()
    ids = torch.tensor([load_tokenizer(str(ckpt))("Question: 3 + 4 = 7")["input_ids"]])
    with torch.no_grad():
        torch.testing.assert_close(merged(ids).logits, trainer.model.eval()(ids).logits, rtol=0, atol=1e-5)
