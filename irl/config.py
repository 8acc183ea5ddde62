"""The training configuration: one typed dataclass, read from YAML and overridden from the command line.

Precedence: dataclass defaults < YAML file < `--field value` flags. Every field carries a help text (shown by
`python -m irl train --help`); `__post_init__` validates once, so a bad value fails before any work.
"""

import argparse
import dataclasses
import types
import typing
from dataclasses import dataclass, field

import yaml

# models built from a config (irl/model.py; the t5-* ones are encoder-decoder); anything else is a name or a path
PRESETS = ("tiny", "small", "t5-tiny", "t5-small")
MODEL_KINDS = ("causal", "seq2seq")  # irl/model.py model_kind
OBJECTIVES = ("mle", "iqlearn", "gail")
OVERLONG = ("truncate", "drop")
# gsm_symbolic generators of the built-in task (irl/math_task.py says why these).
MATH_TEMPLATES = (10, 16, 31, 43, 72)


class ConfigError(ValueError):
    """A configuration value is invalid; the message names the field."""


def _f(default, help, **kw):
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: type(default)(default), metadata={"help": help}, **kw)
    return field(default=default, metadata={"help": help}, **kw)


@dataclass
class TrainConfig:
    # run
    output_dir: str = _f("runs/default", "Run directory: resolved config, metrics.jsonl and checkpoint-<step>/.")
    seed: int = _f(0, "Seed of model initialisation and batch order (same seed: same start, same batches).")
    resume: bool = _f(False, "Resume from the last complete checkpoint in output_dir.")
    # objective
    objective: str = _f("mle", f"Training objective, one of {OBJECTIVES}.")
    beta: float = _f(0.0, "Entropy bonus of the MLE objective (the paper's 'entropy cost'); >= 0.")
    lam: float = _f(0.1, "IQLearn: weight of the TD regulariser lam * mean r_t^2; >= 0 (0 is MLE).")
    gamma: float = _f(0.99, "IQLearn: discount in r_t = Q(s_t,a_t) - gamma V(s_t+1); in (0, 1].")
    stop_grad_next: bool = _f(False, "IQLearn ablation: stop the gradient through V(s_t+1).")
    alpha: float = _f(
        0.0,
        "Online IQLearn: share of the value term taken on states of completions sampled from the current model for "
        "the batch's prompts; in [0, 1] (0: offline IQLearn, nothing sampled).",
    )
    reg_policy: bool = _f(True, "Online IQLearn: the TD regulariser sees policy states too (false: expert only).")
    kl_coef: float = _f(0.05, "GAIL: weight of the per-token KL to the initial policy, taken off the reward; >= 0.")
    mle_weight: float = _f(1.0, "GAIL: weight of the MLE loss on the data added to the policy loss; >= 0.")
    disc_lr: typing.Optional[float] = _f(None, "GAIL: learning rate of the discriminator (AdamW, constant; None: lr).")
    # sampling (online IQLearn, GAIL)
    num_samples: typing.Optional[int] = _f(
        None, "Completions sampled per prompt (default: 2 for gail, whose baseline is their mean; 1 otherwise)."
    )
    sample_temperature: float = _f(1.0, "Temperature of the completions sampled during training; > 0.")
    sample_max_new_tokens: int = _f(128, "Maximum tokens of a sampled completion (never past max_length); > 0.")
    # data
    data: str = _f(
        "math",
        "'math' (built-in task), a .jsonl file, a directory of <split>.jsonl files, a directory saved by "
        "datasets, or a Hugging Face dataset name.",
    )
    prompt_field: str = _f("prompt", "Column holding the prompt (e.g. 'question').")
    completion_field: str = _f("completion", "Column holding the completion (e.g. 'answer').")
    eval_size: int = _f(200, "Validation examples held out of the training data when it has no validation split.")
    max_length: int = _f(256, "Maximum tokens of prompt + completion + EOS.")
    overlong: str = _f(
        "truncate",
        f"Examples longer than max_length, one of {OVERLONG}: 'truncate' cuts the completion (its last token "
        "then leaves the TD term), 'drop' skips the example. Prompts that leave no room are always dropped.",
    )
    math_sizes: list = _f([20000, 200, 200], "Built-in task: sizes of the train, validation and test splits.")
    math_templates: list = _f(list(MATH_TEMPLATES), "Built-in task: gsm_symbolic generator indices to use.")
    data_seed: int = _f(0, "Seed of the built-in task's generation and of held-out validation splits.")
    # model
    model: str = _f("tiny", f"A preset built from a config {PRESETS}, or a model name or local path.")
    init: typing.Optional[str] = _f(
        None,
        "Checkpoint to start from (required by gail: an MLE checkpoint). The policy, GAIL's KL reference and its "
        "discriminator's body are loaded from it; `model` is set to it (leave model out, or give the same path).",
    )
    tokenizer: typing.Optional[str] = _f(None, "Tokenizer name or path (default: the model's, or trained).")
    vocab_size: int = _f(1024, "Presets: size of the BPE tokenizer trained on the training split.")
    trust_remote_code: bool = _f(False, "Allow model code from the hub (off: only transformers' own code runs).")
    model_kind: typing.Optional[str] = _f(
        None,
        f"Derived, not to be set: one of {MODEL_KINDS}, read from the model's config (is_encoder_decoder) when the "
        "model is loaded and recorded in config.yaml and every checkpoint's train_config.yaml.",
    )
    # optimisation
    max_steps: int = _f(500, "Optimizer steps.")
    batch_size: int = _f(32, "Examples per device per step (before gradient accumulation).")
    grad_accum: int = _f(1, "Gradient accumulation steps.")
    lr: float = _f(1e-3, "Peak learning rate (AdamW).")
    lr_scheduler: str = _f("cosine", "transformers scheduler name: constant, linear, cosine, ...")
    warmup_steps: int = _f(20, "Linear warm-up steps.")
    weight_decay: float = _f(0.0, "AdamW weight decay.")
    max_grad_norm: float = _f(1.0, "Gradient clipping norm.")
    bf16: bool = _f(False, "bfloat16 mixed precision (GPU).")
    logging_steps: int = _f(10, "Log train/* and iq/* every this many steps.")
    eval_steps: int = _f(100, "Validation NLL every this many steps (0: only at the end).")
    save_steps: int = _f(100, "Checkpoint every this many steps (the last step is always saved).")
    save_total_limit: typing.Optional[int] = _f(None, "Keep at most this many checkpoints (None: all).")

    def __post_init__(self):
        def check(ok, name, why):
            if not ok:
                raise ConfigError(f"{name}={getattr(self, name)!r}: {why}")

        for f in dataclasses.fields(self):
            value, t = getattr(self, f.name), _field_type(f)
            if value is None and t is not f.type:  # Optional field left unset
                continue
            if t is float and type(value) is int:
                setattr(self, f.name, float(value))
            else:
                check(isinstance(value, t) and (t is bool or type(value) is not bool), f.name, f"expected {t.__name__}")

        check(self.objective in OBJECTIVES, "objective", f"unknown objective; choose one of {OBJECTIVES}")
        check(self.beta >= 0, "beta", "must be >= 0")
        check(self.lam >= 0, "lam", "must be >= 0")
        check(0 < self.gamma <= 1, "gamma", "must be in (0, 1]")
        check(self.overlong in OVERLONG, "overlong", f"choose one of {OVERLONG}")
        check(self.max_length >= 2, "max_length", "must be >= 2")
        check(len(self.math_sizes) == 3 and all(n > 0 for n in self.math_sizes), "math_sizes", "three sizes > 0")
        check(len(self.math_templates) > 0, "math_templates", "must not be empty")
        for name in ("max_steps", "batch_size", "grad_accum", "vocab_size", "logging_steps", "save_steps"):
            check(getattr(self, name) > 0, name, "must be > 0")
        for name in ("eval_steps", "warmup_steps", "eval_size", "weight_decay"):
            check(getattr(self, name) >= 0, name, "must be >= 0")
        check(self.lr > 0, "lr", "must be > 0")
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

    @property
    def samples_policy(self) -> bool:
        """Whether training samples completions from the current model (online IQLearn, GAIL)."""
        return self.objective == "gail" or self.alpha > 0

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def _field_type(f):
    """The scalar type of a field for argparse: Optional[X] -> X; list -> parsed from 'a,b,c'."""
    t = f.type
    if typing.get_origin(t) in (typing.Union, types.UnionType):
        t = next(a for a in typing.get_args(t) if a is not type(None))
    return t


def _parse_value(f, text: str):
    t = _field_type(f)
    if text.lower() in ("none", "null") and typing.get_origin(f.type) in (typing.Union, types.UnionType):
        return None
    if t is bool:
        if text.lower() not in ("true", "false", "1", "0"):
            raise ConfigError(f"{f.name}={text!r}: expected true or false")
        return text.lower() in ("true", "1")
    if t is list:
        return [yaml.safe_load(x) for x in text.split(",") if x]
    try:
        return t(text)
    except ValueError:
        raise ConfigError(f"{f.name}={text!r}: expected {t.__name__}") from None


def build_parser(prog="python -m irl train") -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog, description="Train a language model by MLE, IQLearn or GAIL.")
    parser.add_argument("--config", help="YAML file whose keys are the fields below.")
    for f in dataclasses.fields(TrainConfig):
        if _field_type(f) is bool:
            parser.add_argument(f"--{f.name}", nargs="?", const="true", default=None, help=f.metadata["help"])
        else:
            parser.add_argument(f"--{f.name}", default=None, metavar="VALUE", help=f.metadata["help"])
    return parser


def load_config(argv=None) -> TrainConfig:
    """Parse `--config file.yaml --field value ...` into a validated TrainConfig."""
    args = build_parser().parse_args(argv)
    values = {}
    if args.config:
        with open(args.config) as fh:
            values = yaml.safe_load(fh) or {}
        names = {f.name for f in dataclasses.fields(TrainConfig)}
        unknown = sorted(set(values) - names)
        if unknown:
            raise ConfigError(f"{args.config}: unknown field(s) {unknown}")
    for f in dataclasses.fields(TrainConfig):
        text = getattr(args, f.name)
        if text is not None:
            values[f.name] = _parse_value(f, text)
    return TrainConfig(**values)


def save_config(cfg: TrainConfig, path) -> None:
    from irl.io import atomic_write_text

    atomic_write_text(path, yaml.safe_dump(cfg.to_dict(), sort_keys=False))


def read_config(path) -> TrainConfig:
    with open(path) as fh:
        return TrainConfig(**yaml.safe_load(fh))
