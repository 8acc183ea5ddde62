"""The training configuration: a `transformers.TrainingArguments` subclass (as TRL's configs are), read from YAML
and overridden from the command line by transformers' `HfArgumentParser`.

    python -m irl train --config configs/demo_iqlearn.yaml --lam 0.3 --gradient_checkpointing true
    python -m irl train --help          # the project's fields first, then every Trainer option, with help texts

Precedence: field defaults < YAML file < `--field value` flags. Every Trainer option (gradient_checkpointing,
optim, report_to, torch_compile, deepspeed, fsdp, push_to_hub, ...) is a field, under Trainer's name; the
project's own fields (objective, lam, gamma, data, model, LoRA, ...) come first. `__post_init__` validates
once, before any work, and every error names the field; an old field name (batch_size, grad_accum, lr,
lr_scheduler) fails naming the new one. Importing this module imports torch (transformers' training_args
does), so `--help` costs the torch import.
"""

import argparse
import dataclasses
import sys
import types
import typing
from dataclasses import dataclass, field
from enum import Enum

import yaml
import torch
from transformers import HfArgumentParser, TrainingArguments
from transformers.trainer_utils import IntervalStrategy, SchedulerType

from common.io import FileError, atomic_write_text, read_yaml
from irl.runs import WRITTEN
from tasks import math as math_task

# models built from a config (irl/model.py; the t5-* ones are encoder-decoder); anything else is a name or a path
PRESETS = ("tiny", "small", "t5-tiny", "t5-small")
MODEL_KINDS = ("causal", "seq2seq")  # irl/model.py model_kind
OBJECTIVES = ("mle", "iqlearn", "gail")
OVERLONG = ("truncate", "drop")
# Fields renamed to Trainer's name for the same thing: the old name fails naming the new one.
RENAMED = {
    "batch_size": "per_device_train_batch_size",
    "grad_accum": "gradient_accumulation_steps",
    "lr": "learning_rate",
    "lr_scheduler": "lr_scheduler_type",
}
# Fields a resumed run may change: where and how results are reported or data is moved, never the weights.
RESUME_MAY_CHANGE = (
    "output_dir",  # a run directory copied or moved is resumed where it is now
    "resume", "report_to", "run_name", "disable_tqdm", "logging_first_step", "dataloader_num_workers",
    "dataloader_pin_memory", "push_to_hub", "hub_model_id", "hub_strategy", "hub_token", "hub_private_repo",
    "hub_always_push", "hub_revision",
)  # fmt: skip


class ConfigError(ValueError):
    """A configuration value is invalid; the message names the field."""


def _f(default, help, **kw):
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: type(default)(default), metadata={"help": help}, **kw)
    return field(default=default, metadata={"help": help}, **kw)


@dataclass
class TrainConfig(TrainingArguments):
    # run
    output_dir: str = _f("runs/default", "Run directory: resolved config, metrics.jsonl and checkpoint-<step>/.")
    seed: int = _f(0, "Seed of model initialisation, of the order of training batches and of sampling (same seed and "
                    "data_seed: same start and batches).")
    resume: bool = _f(False, "Resume from the last complete checkpoint in output_dir.")
    # objective
    objective: str = _f("mle", f"Training objective, one of {OBJECTIVES}.")
    beta: float = _f(0.0, "Entropy bonus of the MLE objective (the paper's 'entropy cost'); >= 0.")
    lam: float = _f(0.1, "IQLearn: weight of the TD regulariser lam * mean r_t^2; >= 0 (0 is MLE).")
    gamma: float = _f(0.99, "IQLearn: discount in r_t = Q(s_t,a_t) - gamma V(s_t+1); in (0, 1].")
    stop_grad_next: bool = _f(False, "IQLearn ablation: stop the gradient through V(s_t+1).")
    chunked_loss: bool = _f(
        True,
        "Compute Q, V, V(s') and the entropy from the final hidden states, a chunk of rows at a time, never holding "
        "the (batch, length, vocab) logits (irl/objectives.py head_token_terms). Models whose logits are more than "
        "lm_head(hidden) (soft-capping, scaling: irl/trainer.py HEAD_IS_LINEAR) and FSDP/DeepSpeed runs use the "
        "full logits whatever this says; false: always the full logits.",
    )
    check_fast_paths: bool = _f(
        True,
        "The first time the chunked loss runs in a process for a device type, dtype and model type (and a head "
        "trained or frozen), compare its loss and gradients on two rows of the batch (128 positions around their "
        "first completion tokens) with materialised logits' and train on the logits if they differ "
        "(irl/trainer.py check_chunked); false: skip the check.",
    )
    alpha: float = _f(
        0.0,
        "Online IQLearn: share of the value term taken on states of completions sampled from the current model for "
        "the batch's prompts; in [0, 1] (0: offline IQLearn, nothing sampled).",
    )
    reg_policy: bool = _f(True, "Online IQLearn: the TD regulariser sees policy states too (false: expert only).")
    kl_coef: float = _f(0.05, "GAIL: weight of the per-token KL to the initial policy, taken off the reward; >= 0.")
    mle_weight: float = _f(1.0, "GAIL: weight of the MLE loss on the data added to the policy loss; >= 0.")
    disc_lr: float | None = _f(None, "GAIL: learning rate of the discriminator (AdamW, constant; None: learning_rate).")
    # sampling (online IQLearn, GAIL)
    num_samples: int | None = _f(
        None, "Completions sampled per prompt (default: 2 for gail, whose baseline is their mean; 1 otherwise)."
    )
    sample_temperature: float = _f(1.0, "Temperature of the completions sampled during training; > 0.")
    sample_max_new_tokens: int = _f(128, "Maximum tokens of a sampled completion (never past max_length); > 0.")
    # data
    data: str = _f(
        "math",
        "'math' (built-in task), a .jsonl file, a directory of <split>.jsonl files, a directory saved by "
        "datasets, or a Hugging Face dataset name or local dataset directory (see dataset_config).",
    )
    dataset_config: str | None = _f(
        None, "Configuration name of a hub dataset (e.g. 'main' for openai/gsm8k), passed to datasets.load_dataset."
    )
    train_split: str = _f("train", "Name of the data's training split.")
    validation_split: str = _f(
        "validation", "Name of the data's validation split ('valid' and 'dev' are found too); absent: held out."
    )
    test_split: str = _f("test", "Name of the data's test split (the sweep's default split when present).")
    prompt_field: str = _f(
        "prompt",
        "Column holding the prompt (e.g. 'question'; 'translation.en' reads a key of a dict column): a string, or "
        "a list of chat messages.",
    )
    completion_field: str = _f(
        "completion", "Column holding the completion (e.g. 'answer'): a string, or a list of chat messages."
    )
    messages_field: str = _f(
        "messages",
        "Column holding a whole conversation (TRL's 'messages': a list of {role, content}); used when the data has "
        "it. The final assistant turn is the completion, everything before it the prompt.",
    )
    prompt_template: str = _f(
        "{prompt}", "Text of a string prompt, '{prompt}' standing for the prompt column (e.g. 'summarize: {prompt}')."
    )
    apply_chat_template: bool = _f(
        False,
        "Render string prompt/completion pairs as a user turn and an assistant turn through the tokenizer's chat "
        "template (conversational data always is).",
    )
    eval_size: int = _f(200, "Validation examples held out of the training data when it has no validation split.")
    max_length: int = _f(256, "Maximum tokens of prompt + completion + EOS.")
    overlong: str = _f(
        "truncate",
        f"Examples longer than max_length, one of {OVERLONG}: 'truncate' cuts the completion (its last token "
        "then leaves the TD term), 'drop' skips the example. Prompts that leave no room are always dropped.",
    )
    math_sizes: list[int] = _f(list(math_task.SIZES), "Built-in task: sizes of the train, validation and test splits.")
    math_templates: list[int] = _f(list(math_task.TEMPLATES), "Built-in task: gsm_symbolic generator indices to use.")
    data_seed: int = _f(
        0,
        "Seed of the data: the built-in task's generation, held-out validation splits and train_size subsets "
        "(unlike Trainer's data_seed, not the batch order, which follows seed).",
    )
    train_size: int | None = _f(
        None,
        "Train on the first N training examples after a shuffle seeded by data_seed (None: all); smaller sizes "
        "are subsets of larger ones.",
    )
    validation_size: int | None = _f(
        None,
        "Evaluate on the first N validation examples, the same N for every run (None: all); for frequent "
        "evaluations of small-data runs.",
    )
    # model
    model: str = _f("tiny", f"A preset built from a config {PRESETS}, or a model name or local path.")
    init: str | None = _f(
        None,
        "Checkpoint to start from (required by gail: an MLE checkpoint). The policy, GAIL's KL reference and its "
        "discriminator's body are loaded from it; `model` is set to it (leave model out, or give the same path).",
    )
    tokenizer: str | None = _f(None, "Tokenizer name or path (default: the model's, or trained).")
    vocab_size: int = _f(1024, "Presets: size of the BPE tokenizer trained on the training split.")
    trust_remote_code: bool = _f(False, "Allow model code from the hub (off: only transformers' own code runs).")
    model_kind: str | None = _f(
        None,
        f"Derived, not to be set: one of {MODEL_KINDS}, read from the model's config (is_encoder_decoder) when the "
        "run starts and recorded in config.yaml and every checkpoint's train_config.yaml.",
    )
    # LoRA (TRL's flag names)
    use_peft: bool = _f(
        False,
        "Train LoRA adapters (peft) instead of every weight; checkpoints hold the adapter, which later stages "
        "load on its base model.",
    )
    lora_r: int = _f(16, "LoRA rank; > 0.")
    lora_alpha: int = _f(32, "LoRA scaling numerator (the update is scaled by lora_alpha / lora_r); > 0.")
    lora_dropout: float = _f(0.05, "Dropout on the LoRA input; in [0, 1).")
    lora_target_modules: list[str] | None = _f(
        None,
        "Module names given LoRA adapters (e.g. q_proj v_proj, or all-linear); None: peft's default for the "
        "architecture.",
    )
    # optimisation: Trainer's fields, with this project's defaults
    max_steps: int = _f(500, "Optimizer steps; > 0.")
    per_device_train_batch_size: int = _f(32, "Examples per device per step (before gradient accumulation).")
    per_device_eval_batch_size: int | None = _f(None, "Validation examples per device (None: the training batch size).")
    learning_rate: float = _f(1e-3, "Peak learning rate (AdamW); > 0.")
    lr_scheduler_type: SchedulerType | str = _f("cosine", "transformers scheduler name: constant, linear, cosine, ...")
    warmup_steps: float = _f(20, "Linear warm-up steps (a value below 1 is a fraction of max_steps).")
    max_grad_norm: float = _f(1.0, "Gradient clipping norm; > 0.")
    logging_steps: float = _f(10, "Log train/* and iq/* every this many steps.")
    eval_strategy: IntervalStrategy | str = _f(
        "steps", "Validation 'steps' (every eval_steps) or 'no'; off when the data has none."
    )
    eval_steps: float | None = _f(100, "Validation NLL every this many steps (0: only at the end).")
    save_steps: float = _f(100, "Checkpoint every this many steps (the last step is always saved).")
    report_to: None | str | list[str] = _f(
        "none",
        "Loggers besides metrics.jsonl: tensorboard (under output_dir/runs/), wandb (WANDB_MODE=offline works "
        "without network), ... ('none': none).",
    )
    disable_tqdm: bool | None = _f(
        False, "Disable the progress bar (it shows the latest train/loss and eval/nll; metrics.jsonl has every log)."
    )
    remove_unused_columns: bool = _f(False, "Keep the collated columns (completion masks, prompts): leave false.")
    dataloader_pin_memory: bool = _f(False, "Pin host memory of batches (token batches are small: off).")
    logging_nan_inf_filter: bool = _f(
        False, "Trainer's filter of non-finite losses from the logs: off, since a non-finite loss stops training "
        "(IRLTrainer) and the filter would read the loss from the device at every step.",
    )

    def __post_init__(self):
        def check(ok, name, why):
            if not ok:
                raise ConfigError(f"{name}={getattr(self, name)!r}: {why}")

        hints = _own_hints(type(self))
        for name, t in hints.items():
            value = getattr(self, name)
            if value is None and t.optional:
                continue
            if float in t.scalars and type(value) is int:
                setattr(self, name, float(value))
            elif t.item is not None:
                ok = isinstance(value, list) and all(isinstance(x, t.item) and type(x) is not bool for x in value)
                check(ok, name, f"expected a list of {t.item.__name__}")
            else:
                ok = isinstance(value, t.scalars) and (bool in t.scalars or type(value) is not bool)
                check(ok, name, f"expected {' or '.join(s.__name__ for s in t.scalars)}")

        check(self.objective in OBJECTIVES, "objective", f"unknown objective; choose one of {OBJECTIVES}")
        check(self.beta >= 0, "beta", "must be >= 0")
        check(self.lam >= 0, "lam", "must be >= 0")
        check(0 < self.gamma <= 1, "gamma", "must be in (0, 1]")
        check(self.overlong in OVERLONG, "overlong", f"choose one of {OVERLONG}")
        check(self.max_length >= 2, "max_length", "must be >= 2")
        check(len(self.math_sizes) == 3 and all(n > 0 for n in self.math_sizes), "math_sizes", "three sizes > 0")
        check(len(self.math_templates) > 0, "math_templates", "must not be empty")
        check(self.train_size is None or self.train_size > 0, "train_size", "must be > 0 (or None: all)")
        check(self.validation_size is None or self.validation_size > 0, "validation_size", "must be > 0 (or None: all)")
        check("{prompt}" in self.prompt_template, "prompt_template", "must contain '{prompt}'")
        for name in ("max_steps", "per_device_train_batch_size", "gradient_accumulation_steps", "vocab_size",
                     "logging_steps", "save_steps", "lora_r", "lora_alpha"):  # fmt: skip
            check(getattr(self, name) > 0, name, "must be > 0")
        for name in ("eval_steps", "warmup_steps", "eval_size", "weight_decay"):
            check(getattr(self, name) is None or getattr(self, name) >= 0, name, "must be >= 0")
        check(0 <= self.lora_dropout < 1, "lora_dropout", "must be in [0, 1)")
        check(self.learning_rate > 0, "learning_rate", "must be > 0")
        check(self.max_grad_norm > 0, "max_grad_norm", "must be > 0")
        check(self.objective != "iqlearn" or self.beta == 0, "beta", "the entropy bonus belongs to 'mle' and 'gail'")
        check(0 <= self.alpha <= 1, "alpha", "must be in [0, 1]")
        check(self.alpha == 0 or self.objective == "iqlearn", "alpha", "the policy mix-in belongs to 'iqlearn'")
        check(self.kl_coef >= 0, "kl_coef", "must be >= 0")
        check(self.mle_weight >= 0, "mle_weight", "must be >= 0")
        check(self.sample_temperature > 0, "sample_temperature", "must be > 0")
        check(self.sample_max_new_tokens > 0, "sample_max_new_tokens", "must be > 0")
        check(self.objective != "gail" or self.init, "init", "'gail' starts from an MLE checkpoint: set init")
        if self.init is not None:  # the policy starts from init: `model` is that path
            default_model = next(f.default for f in dataclasses.fields(self) if f.name == "model")
            check(self.model in (self.init, default_model), "model", "with init set, leave it out or give init's path")
            self.model = self.init
        if self.num_samples is None:
            self.num_samples = 2 if self.objective == "gail" else 1
        check(self.num_samples >= 1, "num_samples", "must be >= 1")
        check(self.objective != "gail" or self.num_samples >= 2, "num_samples", "gail's per-prompt baseline needs >= 2")
        check(self.disc_lr is None or self.disc_lr > 0, "disc_lr", "must be > 0")
        check(self.model_kind in (None, *MODEL_KINDS), "model_kind", f"one of {MODEL_KINDS}, derived from the model")
        # derived values
        if self.per_device_eval_batch_size is None:
            self.per_device_eval_batch_size = self.per_device_train_batch_size
        if self.eval_steps == 0:
            self.eval_steps = self.max_steps
        if self.bf16 and not torch.accelerator.is_available():
            self.use_cpu = True  # bf16 autocast on the CPU; TrainingArguments asks for it by name on a CPU-only host
        try:
            super().__post_init__()
        except ConfigError:
            raise
        except ValueError as e:  # Trainer's own checks; their messages name the option (--name)
            raise ConfigError(f"Trainer option: {e}") from None

    @property
    def samples_policy(self) -> bool:
        """Whether training samples completions from the current model (online IQLearn, GAIL)."""
        return self.objective == "gail" or self.alpha > 0


# ---- field types, for validation of YAML values and of the project's fields ----


class _Type(typing.NamedTuple):
    scalars: tuple  # accepted scalar types (empty: not checked here)
    optional: bool
    item: type | None = None  # element type of a list field
    choices: tuple = ()  # the values of an Enum field (Trainer's optim, lr_scheduler_type, ...)


def _describe(annotation) -> _Type:
    """The accepted types of a field's annotation: scalars (int, float, bool, str, an Enum's values as str),
    Optional of them, or a list of a scalar; anything else (dicts, Literal, unions of lists) is left to Trainer."""
    args = typing.get_args(annotation) if typing.get_origin(annotation) in (typing.Union, types.UnionType) else ()
    members = [a for a in args if a is not type(None)] if args else [annotation]
    optional = bool(args) and len(members) < len(args)
    scalars, choices = [], ()
    for a in members:
        if typing.get_origin(a) is list and len(members) == 1 and typing.get_args(a)[0] in (int, float, str):
            return _Type((), optional, typing.get_args(a)[0])
        if isinstance(a, type) and issubclass(a, Enum):
            a, choices = str, tuple(x.value for x in a)
        if a not in (int, float, bool, str):
            return _Type((), optional)
        scalars.append(a)
    if float in scalars and int not in scalars:
        scalars.append(int)
    return _Type(tuple(dict.fromkeys(scalars)), optional, None, choices)


_HINTS = {}


def _hints(cls) -> dict:
    """Every field's accepted types in config class `cls`. HfArgumentParser rewrites `field.type` in place, so
    types are read from the class annotations (typing.get_type_hints), once per class."""
    if cls not in _HINTS:
        init = {f.name for f in dataclasses.fields(cls) if f.init}
        _HINTS[cls] = {k: _describe(t) for k, t in typing.get_type_hints(cls).items() if k in init}
    return _HINTS[cls]


def _own_hints(cls) -> dict:
    """Types of the fields the project's config classes declare (TrainConfig's, the Trainer defaults it changes,
    and a subclass's own)."""
    own = {k for c in cls.__mro__ if issubclass(c, TrainConfig) for k in c.__dict__.get("__annotations__", {})}
    return {k: t for k, t in _hints(cls).items() if k in own and (t.scalars or t.item)}


def check_values(values: dict, where: str, cls=None) -> None:
    """YAML values: no unknown or renamed field, and scalars of the field's type (checked before parsing, as the
    command line's are by argparse)."""
    hints = _hints(cls or TrainConfig)
    for key, value in values.items():
        if key in RENAMED:
            raise ConfigError(f"{where}: field '{key}' is now '{RENAMED[key]}' (transformers' name); rename it")
        if key not in hints:
            raise ConfigError(f"{where}: unknown field(s) {sorted(set(values) - set(hints))}")
        t = hints[key]
        if value is None and t.optional or not (t.scalars or t.item):
            continue
        if t.choices and value not in t.choices:
            raise ConfigError(f"{key}={value!r}: choose one of {list(t.choices)}")
        if isinstance(value, str) and t.scalars and str not in t.scalars:
            continue  # parsed by argparse as if given on the command line (YAML reads 1e-3 as a string)
        ok = (
            isinstance(value, list) and all(isinstance(x, t.item) and type(x) is not bool for x in value)
            if t.item
            else isinstance(value, t.scalars) and (bool in t.scalars or type(value) is not bool)
        )
        if not ok:
            expected = f"a list of {t.item.__name__}" if t.item else " or ".join(s.__name__ for s in t.scalars)
            raise ConfigError(f"{key}={value!r}: expected {expected}")


class ConfigParser(HfArgumentParser):
    """HfArgumentParser over TrainConfig (or a subclass, `cls`) plus `--config FILE.yaml`; a bad option raises
    ConfigError."""

    def __init__(self, prog="python -m irl train", cls=None):
        cls = cls or TrainConfig
        what = "Train a language model by MLE, IQLearn or GAIL." if cls is TrainConfig else cls.__doc__.split("\n")[0]
        super().__init__(
            cls, prog=prog, allow_abbrev=False,
            description=f"{what} The project's fields come first, then every option of transformers' "
                        "TrainingArguments.",
        )  # fmt: skip
        self.add_argument("--config", help="YAML file whose keys are the fields below (flags override it).")

    def error(self, message):
        raise ConfigError(message)


def _refuse_renamed(argv) -> None:
    for arg in argv:
        name = arg[2:].split("=", 1)[0].replace("-", "_") if arg.startswith("--") else None
        if name in RENAMED:
            raise ConfigError(f"--{name} is now --{RENAMED[name]} (transformers' name)")


def load_config(argv=None, cls=None, prog="python -m irl train") -> TrainConfig:
    """Parse `--config file.yaml --field value ...` into a validated TrainConfig (or `cls`, a subclass)."""
    cls = cls or TrainConfig
    argv = list(sys.argv[1:] if argv is None else argv)
    _refuse_renamed(argv)
    pre = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    pre.add_argument("--config")
    known, _ = pre.parse_known_args(argv)
    parser = ConfigParser(prog, cls)
    if known.config:
        try:
            values = read_yaml(known.config)
        except FileError as e:
            raise ConfigError(f"--config {e}") from None
        check_values(values, known.config, cls)
        parser.set_defaults(**values)
    cfg, _, remaining = parser.parse_args_into_dataclasses(
        argv, return_remaining_strings=True, look_for_args_file=False
    )
    if remaining:
        raise ConfigError(f"unknown option(s) {remaining}")
    return cfg


def config_dict(cfg: TrainConfig) -> dict:
    """The resolved config as plain values (Trainer's to_dict), with secrets (hub_token, ...) left out."""
    return {k: None if k.endswith("_token") else v for k, v in cfg.to_dict().items()}


def save_config(cfg: TrainConfig, path) -> None:
    atomic_write_text(path, yaml.safe_dump(config_dict(cfg), sort_keys=False))


def read_config(path, cls=None) -> TrainConfig:
    """The TrainConfig (or `cls`) saved in a run's config.yaml or a checkpoint's train_config.yaml. Runs saved
    before fields took Trainer's names (batch_size, lr, ...) are read under the new names."""
    values = read_yaml(path, required=WRITTEN)  # FileError naming the file when it is missing or damaged
    return (cls or TrainConfig)(**{RENAMED.get(k, k): v for k, v in values.items()})
