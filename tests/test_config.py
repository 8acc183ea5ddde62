"""The config is transformers' TrainingArguments: every Trainer option is reachable from YAML and from the
command line and reaches the Trainer; unknown fields, bad values and old field names fail before any work,
naming the field; the saved config reads back; TensorBoard logging works offline."""

import pytest
import torch
import yaml

from irl import runs
from irl.__main__ import main as irl_main
from irl.config import ConfigError, TrainConfig, load_config, read_config, save_config
from irl.train import train
from tests.test_train import fails, tiny


def write_yaml(path, values: dict):
    path.write_text(yaml.safe_dump(values))
    return str(path)


def test_trainer_options_from_yaml_and_flags_reach_the_trainer(tmp_path):
    # activation_checkpointing and optim are Trainer's, not the project's fields; one from YAML, one from a flag
    config = write_yaml(tmp_path / "c.yaml", {**{k: v for k, v in vars(tiny(tmp_path)).items() if k in (
        "model", "vocab_size", "math_sizes", "max_length", "warmup_steps", "logging_steps", "eval_steps")},
        "activation_checkpointing": True, "max_steps": 2, "save_steps": 2, "per_device_train_batch_size": 4})
    cfg = load_config(["--config", config, "--optim", "sgd", "--output_dir", str(tmp_path / "run")])
    assert cfg.activation_checkpointing is True and cfg.optim == "sgd"
    trainer = train(cfg)
    assert trainer.model.is_activation_checkpointing
    assert isinstance(trainer.optimizer.optimizer, torch.optim.SGD)
    # and the other way round
    config = write_yaml(tmp_path / "d.yaml", {"optim": "adafactor", "learning_rate": "3e-4"})
    cfg = load_config(["--config", config, "--activation_checkpointing", "true", "--lam", "0.3"])
    assert (cfg.optim, cfg.activation_checkpointing, cfg.learning_rate, cfg.lam) == ("adafactor", True, 3e-4, 0.3)


@pytest.mark.parametrize(
    "yaml_values, flags, message",
    [
        ({"lamda": 0.3}, [], r"unknown field\(s\) \['lamda'\]"),
        ({}, ["--lamda", "0.3"], r"unknown option\(s\) \['--lamda', '0.3'\]"),
        ({"optim": "adamw_foo"}, [], r"optim='adamw_foo': choose one of \['adamw_torch'"),
        ({}, ["--optim", "adamw_foo"], r"argument --optim: invalid choice: 'adamw_foo'"),
        ({"activation_checkpointing": 3}, [], r"activation_checkpointing=3: expected bool"),
        ({"lam": [1]}, [], r"lam=\[1\]: expected float"),
        ({"max_steps": "ten"}, [], r"argument --max_steps/--max-steps: invalid int value: 'ten'"),
        ({"learning_rate": 0}, [], r"learning_rate=0.0: must be > 0"),
        ({"lr": 0.1}, [], r"field 'lr' is now 'learning_rate'"),
        ({"batch_size": 4}, [], r"field 'batch_size' is now 'per_device_train_batch_size'"),
        ({}, ["--grad_accum", "2"], r"--grad_accum is now --gradient_accumulation_steps"),
        ({}, ["--lr_scheduler=linear"], r"--lr_scheduler is now --lr_scheduler_type"),
        ({"logging_steps": 2.5}, [], r"Trainer option: --logging_steps must be an integer if bigger than 1: 2.5"),
    ],
)
def test_bad_config_fails_naming_the_field(tmp_path, yaml_values, flags, message):
    with pytest.raises(ConfigError, match=message):
        load_config(["--config", write_yaml(tmp_path / "c.yaml", yaml_values), *flags])


def test_command_fails_before_any_work_and_help_lists_every_option(tmp_path, capsys):
    argv = ["train", "--config", "configs/tiny.yaml", "--lr", "0.1", "--output_dir", str(tmp_path / "run")]
    assert fails(capsys, irl_main, argv) == "error: --lr is now --learning_rate (transformers' name)"
    assert not (tmp_path / "run").exists()
    with pytest.raises(SystemExit) as exit_:
        irl_main(["train", "--help"])
    assert exit_.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    for flag in ("--lam", "--use_peft", "--dataset_config", "--activation_checkpointing", "--report_to", "--deepspeed",
                 "--fsdp", "--push_to_hub", "--torch_compile", "--optim", "--config"):  # fmt: skip
        assert flag in text, flag
    assert "IQLearn: weight of the TD regulariser lam * mean r_t^2" in text


def test_saved_config_reads_back_with_the_project_fields(tmp_path):
    cfg = TrainConfig(objective="iqlearn", lam=0.3, alpha=0.1, data_seed=3, math_templates=[10, 16],
                      activation_checkpointing=True, report_to="tensorboard",
                      output_dir=str(tmp_path / "r"))  # fmt: skip
    save_config(cfg, tmp_path / "config.yaml")
    saved = runs.read_config(tmp_path)  # a plain dict, as the app and the analysis read it
    for key, value in dict(objective="iqlearn", lam=0.3, gamma=0.99, alpha=0.1, beta=0.0, seed=0, data="math",
                           model="tiny", max_steps=500, math_sizes=[20000, 200, 200], math_templates=[10, 16],
                           data_seed=3, per_device_train_batch_size=32, learning_rate=1e-3).items():  # fmt: skip
        assert saved[key] == value, key
    assert read_config(tmp_path / "config.yaml").to_dict() == cfg.to_dict()
    # a run written before the renaming reads under the new names
    old = {k: v for k, v in saved.items() if k not in ("per_device_train_batch_size", "learning_rate")}
    write_yaml(tmp_path / "old.yaml", {**old, "batch_size": 8, "lr": 0.01})
    again = read_config(tmp_path / "old.yaml")
    assert (again.per_device_train_batch_size, again.learning_rate) == (8, 0.01)


def test_tensorboard_event_file_holds_the_logged_keys(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    train(tiny(tmp_path, objective="iqlearn", max_steps=2, save_steps=2, eval_steps=2, report_to="tensorboard"))
    (event_file,) = (tmp_path / "run" / "runs").rglob("events.out.tfevents.*")
    events = EventAccumulator(str(event_file)).Reload()
    # Trainer's TensorBoard callback puts every key of a log line under "train/" (eval_* keys under "eval/")
    tags = set(events.Tags()["scalars"])
    assert {"train/iq/td", "train/iq/nll", "train/train/loss", "train/eval/nll"} <= tags
    assert [e.step for e in events.Scalars("train/iq/td")] == [1, 2]
