"""End-to-end training on the tiny preset: every objective steps, checkpoints reload, resume is exact,
lam=0 reproduces MLE, bad input fails clearly, and `accelerate launch` runs two processes."""

import json
import os
import subprocess
import sys
from contextlib import contextmanager

import pytest
import torch
from safetensors.torch import load_file
from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast, TrainerCallback

from irl import trainer as trainer_module
from irl.__main__ import main as irl_main
from irl.config import ConfigError, TrainConfig
from irl.model import ModelError, build_preset, load_model, load_tokenizer, train_tokenizer
from irl.train import train
from irl.runs import checkpoints, last_checkpoint
from irl.trainer import NonFiniteLossError

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@contextmanager
def one_thread():
    """torch on one thread: faster on a shared 2-core machine, and the same GEMM kernels for every run compared
    bit for bit (the thread count decides how a matrix product splits its sums, hence its float32 rounding)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def tiny(tmp_path, name="run", **overrides) -> TrainConfig:
    values = dict(
        output_dir=str(tmp_path / name),
        model="tiny",
        vocab_size=400,
        math_sizes=[64, 16, 16],
        max_length=160,
        per_device_train_batch_size=4,
        max_steps=3,
        learning_rate=3e-3,
        warmup_steps=0,
        logging_steps=1,
        eval_steps=0,
        save_steps=3,
    )
    return TrainConfig(**{**values, **overrides})


class CrashAt(TrainerCallback):
    """Interrupts training at the end of a step, as a killed process would (after the checkpoints before it)."""

    def __init__(self, step: int):
        self.step = step

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == self.step:
            raise KeyboardInterrupt("simulated interruption")


def final_weights(run_dir):
    return load_file(str(last_checkpoint(run_dir) / "model.safetensors"))


@pytest.mark.parametrize(
    "objective", [dict(objective="mle"), dict(objective="mle", beta=0.1), dict(objective="iqlearn", lam=0.1)]
)
def test_each_objective_steps_saves_and_reloads(tmp_path, objective):
    cfg = tiny(tmp_path, **objective)
    trainer = train(cfg)
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    logged = [r for r in rows if "train/loss" in r]
    assert len(logged) == 3 and all(torch.isfinite(torch.tensor(r["train/loss"])) for r in logged)
    for key in ("iq/nll", "iq/td", "iq/reward_mean", "iq/v_mean", "iq/entropy", "train/lr", "train/tokens_per_s"):
        assert key in logged[-1]
    assert any("eval/nll" in r for r in rows)
    # every trainable parameter moved away from the (same-seed) initial weights
    tokenizer = load_tokenizer(str(tmp_path / "run" / "tokenizer"))
    initial = build_preset("tiny", tokenizer, 160, cfg.seed).state_dict()
    for name, p in trainer.model.named_parameters():
        assert not torch.equal(p.detach(), initial[name]), f"{name} did not change"
    # the checkpoint is HF format with safetensors and the tokenizer, and reloads to identical logits
    ckpt = last_checkpoint(cfg.output_dir)
    assert ckpt.name == "checkpoint-3"
    assert (ckpt / "model.safetensors").is_file() and (ckpt / "tokenizer.json").is_file()
    reloaded = load_model(str(ckpt)).eval()
    ids = torch.tensor([tokenizer("Question: A kid has 3 books.\nAnswer: 1 + 2 = 3")["input_ids"]])
    trainer.model.eval()
    with torch.no_grad():
        assert torch.equal(reloaded(ids).logits, trainer.model(ids).logits)


def test_resume_after_interruption_matches_uninterrupted(tmp_path):
    overrides = dict(max_steps=6, save_steps=2, logging_steps=2, objective="iqlearn", lam=0.2)
    train(tiny(tmp_path, "straight", **overrides))

    with pytest.raises(KeyboardInterrupt):
        train(tiny(tmp_path, "resumed", **overrides), callbacks=[CrashAt(5)])
    assert [p.name for p in checkpoints(tmp_path / "resumed")] == ["checkpoint-2", "checkpoint-4"]
    train(tiny(tmp_path, "resumed", resume=True, **overrides))
    a, b = final_weights(tmp_path / "straight"), final_weights(tmp_path / "resumed")
    # both runs in this process, on the same thread count, so the same kernels: bit for bit
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    steps = [json.loads(line)["step"] for line in (tmp_path / "resumed" / "metrics.jsonl").read_text().splitlines()]
    assert steps == sorted(steps)  # lines after checkpoint-4 were dropped before being written again


def test_same_seed_mle_and_iqlearn_lam0_end_identical(tmp_path):
    train(tiny(tmp_path, "mle", objective="mle"))
    train(tiny(tmp_path, "iq", objective="iqlearn", lam=0.0))
    a, b = final_weights(tmp_path / "mle"), final_weights(tmp_path / "iq")
    assert all(torch.equal(a[k], b[k]) for k in a)
    head = [json.loads(open(tmp_path / r / "metrics.jsonl").readline()) for r in ("mle", "iq")]
    assert head[0]["init/weights_sha256"] == head[1]["init/weights_sha256"]


def test_seed_orders_the_same_data_differently_from_one_start(tmp_path, monkeypatch):
    """Fine-tuning one checkpoint with data_seed fixed: seed changes the order of the batches, not the data, so
    runs that differ only in seed differ (a seed study from a fixed base is not degenerate), and repeat exactly."""
    start = str(last_checkpoint(train(tiny(tmp_path, "start", max_steps=1, save_steps=1)).args.output_dir))
    seen = {}
    compute_loss = trainer_module.IRLTrainer.compute_loss

    def record(self, model, inputs, *args, **kwargs):
        if model.training:
            rows = zip(inputs["input_ids"], inputs["attention_mask"].bool())
            seen.setdefault(self.args.output_dir, []).append([ids[keep].tolist() for ids, keep in rows])
        return compute_loss(self, model, inputs, *args, **kwargs)

    monkeypatch.setattr(trainer_module.IRLTrainer, "compute_loss", record)
    runs = {name: str(tmp_path / name) for name in ("seed0", "seed1", "seed1-again")}
    for name, seed in (("seed0", 0), ("seed1", 1), ("seed1-again", 1)):
        train(tiny(tmp_path, name, init=start, seed=seed, max_steps=16, save_steps=16))  # one epoch of 64
    order = {name: [row for batch in seen[out] for row in batch] for name, out in runs.items()}
    assert sorted(order["seed0"]) == sorted(order["seed1"])  # the same 64 examples, once each
    assert order["seed0"] != order["seed1"] and order["seed1"] == order["seed1-again"]
    a, b, c = (final_weights(tmp_path / name) for name in runs)
    assert any(not torch.equal(a[k], b[k]) for k in a) and all(torch.equal(b[k], c[k]) for k in b)


def test_run_directory_is_never_overwritten(tmp_path):
    train(tiny(tmp_path, max_steps=1, save_steps=1))
    with pytest.raises(ConfigError, match="a run exists there"):
        train(tiny(tmp_path, max_steps=1, save_steps=1))
    with pytest.raises(ConfigError, match=r"fields \['learning_rate'\] differ"):
        train(tiny(tmp_path, max_steps=1, save_steps=1, learning_rate=1.0, resume=True))


def test_nan_loss_stops_with_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setattr(trainer_module, "objective_fn", lambda cfg: lambda terms: (terms.q.sum() * float("nan"), {}))
    with pytest.raises(NonFiniteLossError, match="non-finite loss nan at step 0"):
        train(tiny(tmp_path))
    assert last_checkpoint(tmp_path / "run") is None


def fails(capsys, entry, argv, status=1) -> str:
    """Run a command's main, which must exit with `status`; its one-line message (no traceback anywhere)."""
    with pytest.raises(SystemExit) as exit_:
        entry(argv)
    err = capsys.readouterr().err
    assert "Traceback" not in err
    code = exit_.value.code
    if isinstance(code, str):  # sys.exit("error: ..."): Python prints it to stderr and exits 1
        assert status == 1 and code.startswith("error: ") and "\n" not in code, code
        return code
    assert code == status, err
    lines = [line for line in err.splitlines() if "error:" in line]
    assert len(lines) == 1, err
    return lines[0]


def test_wrong_model_paths_fail_clearly(tmp_path, capsys):
    with pytest.raises(ModelError, match="not a model directory"):
        load_model(str(tmp_path / "missing"))
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ModelError, match="not a tokenizer directory"):
        load_tokenizer(str(empty))
    argv = ["train", "--model", str(tmp_path / "nowhere"), "--output_dir", str(tmp_path / "r")]
    message = fails(capsys, irl_main, argv)
    assert "not a model directory" in message and not (tmp_path / "r").exists()


def test_any_causal_lm_by_local_path(tmp_path):
    """A GPT-2 model and a tokenizer without a pad token, loaded through AutoModelForCausalLM from disk."""
    base = train_tokenizer(["Question: 1 + 2?\nAnswer: 3\n#### 3"] * 10, vocab_size=300)
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=base.backend_tokenizer, eos_token="<|endoftext|>")
    model = GPT2LMHeadModel(GPT2Config(vocab_size=len(tokenizer), n_positions=160, n_embd=32, n_layer=1, n_head=2))
    model.save_pretrained(tmp_path / "gpt2")
    tokenizer.save_pretrained(tmp_path / "gpt2")
    trainer = train(tiny(tmp_path, model=str(tmp_path / "gpt2"), objective="iqlearn", max_steps=2, save_steps=2))
    assert trainer.processing_class.pad_token == "<|endoftext|>"
    assert (last_checkpoint(tmp_path / "run") / "model.safetensors").is_file()


# --multi_gpu with ACCELERATE_USE_CPU starts two CPU processes (gloo); `--cpu` alone would start only one.
TWO_CPU_PROCESSES = ["--multi_gpu", "--num_processes", "2", "--num_machines", "1", "--mixed_precision", "no",
                     "--dynamo_backend", "no"]  # fmt: skip


def launch_on_two_cpu_processes(*module_args, timeout: int = 300) -> subprocess.CompletedProcess:
    """`accelerate launch` two CPU processes of `python -m <module_args>` in the repository; its finished process
    (stdout and stderr captured), after checking that it succeeded."""
    cmd = [sys.executable, "-m", "accelerate.commands.launch", *TWO_CPU_PROCESSES, "-m", *module_args]
    env = {**os.environ, "ACCELERATE_USE_CPU": "1"}
    out = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, timeout=timeout, env=env)
    assert out.returncode == 0, out.stderr[-3000:]
    return out


def two_process_rows(run_dir) -> list[dict]:
    """The metrics rows of a run of `python -m irl train` on two CPU processes (the `two_processes` fixture)."""
    ckpt = last_checkpoint(run_dir)
    # two processes ran: each saved its RNG state (a single one writes rng_state.pth)
    assert {p.name for p in ckpt.glob("rng_state*.pth")} == {"rng_state_0.pth", "rng_state_1.pth"}
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def test_accelerate_launch_two_processes(two_processes):
    """Offline IQLearn, 4 steps of configs/tiny.yaml on two processes."""
    rows = two_process_rows(two_processes.root / "train")
    assert sum("train/loss" in r for r in rows) == 2  # logged once, by the main process
    assert any("eval/nll" in r for r in rows)
    ckpt = two_processes.root / "train" / "checkpoint-4"
    assert json.loads((ckpt / "trainer_state.json").read_text())["global_step"] == 4
    assert load_model(str(ckpt)) is not None
