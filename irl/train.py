"""Train a language model by MLE, IQLearn (offline or online) or GAIL into a run directory.

    python -m irl train --config configs/demo_mle.yaml [--field value ...]
    python -m irl train --config configs/demo_online.yaml                        # online IQLearn (alpha > 0)
    python -m irl train --config configs/demo_gail.yaml                          # GAIL, from an MLE checkpoint
    accelerate launch --num_processes 2 -m irl train --config configs/tiny.yaml   # several processes (GPUs)
    ACCELERATE_USE_CPU=1 accelerate launch --multi_gpu --num_processes 2 -m irl train --config configs/tiny.yaml
                                             # two CPU processes (`--cpu` alone starts one unless given MPI hosts)

A run directory holds config.yaml (the resolved config), metrics.jsonl (train/*, iq/*, gail/*, time/*,
eval/nll, data/* counts), samples.jsonl (a few completions sampled at each logging step, for the variants that
sample), tokenizer/ (for presets) and checkpoint-<step>/ directories in Hugging Face format (safetensors
weights, tokenizer, optimizer and scheduler state; GAIL adds discriminator/). `--resume` continues from the
last complete checkpoint and ends with the same weights as an uninterrupted run.

The config is the Trainer's arguments (irl/config.py): every Trainer option applies as transformers documents
it. With `use_peft`, the model gets LoRA adapters (irl/model.py `add_lora`) and checkpoints hold the adapter; the
random initial weights of a preset or a shape directory (irl/shapes.py), the adapter's base, are saved once in
<run>/base_model/.
"""

import dataclasses
import hashlib
import json
import tempfile
from pathlib import Path

import datasets
import torch
from transformers import set_seed

from common.io import FileError, append_jsonl, check_checkpoint_weights, write_jsonl
from irl import model as models
from irl.config import RESUME_MAY_CHANGE, ConfigError, TrainConfig, config_dict, read_config, save_config
from irl.data import Collator, encode, example_text, load_splits
from irl.gail import GAILTrainer
from irl.runs import last_checkpoint, step_of
from irl.shapes import is_shape
from irl.trainer import IRLTrainer


def weights_sha256(model) -> str:
    """A fingerprint of a model's weights, to show that two runs start from the same ones."""
    h = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def _check_writable(run_dir: Path) -> None:
    """ConfigError unless `run_dir` is a directory this process can write in, or can be made one (checked by
    making a file in it, or in its nearest existing parent: permission bits alone say nothing under root or on a
    read-only mount)."""
    existing = next(p for p in [run_dir, *run_dir.parents] if p.exists())
    if not existing.is_dir():
        where = "is a file" if existing == run_dir else f"lies under {existing}, a file"
        raise ConfigError(f"output_dir={str(run_dir)!r} {where}, not a directory; choose another output_dir")
    try:
        tempfile.TemporaryFile(dir=existing).close()
    except OSError as e:
        raise ConfigError(f"output_dir={str(run_dir)!r}: cannot write in {existing} ({e.strerror}); choose another "
                          f"output_dir")  # fmt: skip


def _check_run_dir(cfg: TrainConfig, run_dir: Path):
    """Refuse to overwrite a run; on resume, refuse a config that differs from the run's, and a last checkpoint
    whose weights are damaged."""
    _check_writable(run_dir)
    saved = run_dir / "config.yaml"
    if not saved.exists():
        if cfg.resume:
            raise ConfigError(f"resume=True: {run_dir} holds no run to resume")
        return None
    if not cfg.resume:
        raise ConfigError(f"output_dir={str(run_dir)!r}: a run exists there; pass --resume or choose another directory")
    old = config_dict(read_config(saved, type(cfg)))
    changed = sorted(k for k, v in config_dict(cfg).items() if k not in RESUME_MAY_CHANGE and old.get(k) != v)
    if changed:
        raise ConfigError(f"resume: fields {changed} differ from {saved}; a resumed run keeps its config")
    resume_from = last_checkpoint(run_dir)
    if resume_from is not None:
        check_checkpoint_weights(resume_from)  # FileError naming a cut-short weights file
    return resume_from


def _truncate_log(path: Path, step: int):
    """Drop log lines written after the checkpoint a run resumes from (they will be written again). A last line
    cut short (the process was killed while appending it) is one of them: a line is appended before the
    checkpoint of its step is saved. A damaged line before the last is an error naming it."""
    if not path.exists():
        return
    lines = [line for line in path.read_text().splitlines() if line.strip()]
    rows = []
    for i, line in enumerate(lines):
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            if i < len(lines) - 1:
                raise FileError(path, f"line {i + 1} is not JSON; a run appends whole lines, so this file was "
                                f"edited or damaged: restore it") from None  # fmt: skip
    write_jsonl(path, [r for r in rows if r["step"] <= step])


def load_tokenizer_and_model(cfg: TrainConfig, train_examples, run_dir: Path, fresh: bool):
    """The tokenizer and the model to train: a preset (its tokenizer trained by the main process) or a model by
    name or path, with fresh LoRA adapters when `use_peft`. `fresh`: the run starts from step 0, so the main
    process trains the tokenizer (and saves a LoRA base) again over whatever a run that failed before its first
    checkpoint left there; a resumed run reads the ones its checkpoints were trained with. The base of a LoRA run
    on random weights that no file holds (a preset, a shape directory) is saved in the run directory, so that its
    checkpoints load on the weights they were trained on."""
    main = cfg.process_index == 0
    if cfg.model in models.PRESETS:
        tok_dir = run_dir / "tokenizer"
        if cfg.tokenizer:
            tokenizer = models.load_tokenizer(cfg.tokenizer, cfg.trust_remote_code)
        else:
            # trained by the main process; the others wait and load what it saved
            with cfg.main_process_first(local=False, desc="tokenizer"):
                if main and (fresh or not (tok_dir / "tokenizer_config.json").is_file()):
                    texts = map(example_text, train_examples)
                    models.train_tokenizer(texts, cfg.vocab_size).save_pretrained(tok_dir)
                tokenizer = models.load_tokenizer(str(tok_dir))
        model = models.build_preset(cfg.model, tokenizer, cfg.max_length, cfg.seed)
    else:
        model = models.load_model(cfg.model, cfg.trust_remote_code)
        tokenizer = models.load_tokenizer(cfg.tokenizer or cfg.model, cfg.trust_remote_code)
        align_pad(model, tokenizer)
    if not cfg.use_peft:
        return tokenizer, model
    if cfg.model in models.PRESETS or is_shape(cfg.model):
        base = f"../{models.BASE_MODEL}"  # the adapter's base, relative to a checkpoint of this run
        with cfg.main_process_first(local=False, desc="base model"):
            if main and (fresh or not (run_dir / models.BASE_MODEL / "config.json").is_file()):
                model.save_pretrained(run_dir / models.BASE_MODEL)
    else:
        base = str(Path(cfg.model).resolve()) if Path(cfg.model).expanduser().is_dir() else cfg.model
    return tokenizer, models.add_lora(model, cfg, base)


def align_pad(model, tokenizer) -> None:
    """A model whose config names no padding token (Qwen2.5's, Llama's) takes the tokenizer's, which the collator pads
    with, in its config and generation config: what transformers' Trainer would do at the start of training, with a
    warning every run, for a token the loss never sees."""
    pad = tokenizer.pad_token_id
    for config in (model.config, getattr(model, "generation_config", None)):
        if config is not None and config.pad_token_id is None and pad is not None:
            config.pad_token_id = pad


def describe_start(counts: dict, record: dict) -> str:
    """The start of a run in two lines: examples kept per split and why others were not, and the model's size."""
    parts = []
    for split, c in counts.items():
        lost = [f"{c[k]:,} {k.replace('_', ' ')}" for k in ("dropped_overlong", "truncated", "empty_completion",
                                                             "empty_prompt", "eos_in_text") if c.get(k)]  # fmt: skip
        parts.append(f"{split} {c['kept']:,} of {c['examples']:,}" + (f" ({', '.join(lost)})" if lost else ""))
    return (
        f"data: {'; '.join(parts)}\nmodel: {record['init/parameters']:,} parameters "
        f"({record['init/trainable_parameters']:,} trainable), initial weights {record['init/weights_sha256']}"
    )


def train(cfg: TrainConfig, callbacks=None) -> IRLTrainer:
    """Train per `cfg`; returns the finished Trainer (its model holds the final weights)."""
    run_dir = Path(cfg.output_dir)
    if cfg.init is not None and not (Path(cfg.init) / "config.json").is_file():
        raise ConfigError(f"init={cfg.init!r}: not a checkpoint directory (no config.json)")
    kind = models.kind_of(cfg.model, cfg.trust_remote_code)  # derived here, once: "causal" or "seq2seq"
    if cfg.model_kind not in (None, kind):
        raise ConfigError(f"model_kind={cfg.model_kind!r}: model {cfg.model!r} is {kind!r} (derived; leave it out)")
    cfg.model_kind = kind
    seq2seq = kind == models.SEQ2SEQ
    resume_from = _check_run_dir(cfg, run_dir)
    set_seed(cfg.seed)
    splits = load_splits(cfg)
    tokenizer, model = load_tokenizer_and_model(cfg, splits["train"], run_dir, fresh=resume_from is None)
    encoded, counts = {}, {}
    start = model.config.decoder_start_token_id if seq2seq else None  # encoder-decoder: the decoder's first input
    for split in ("train", "validation"):
        encoded[split], counts[split] = encode(splits.get(split, []), tokenizer, cfg.max_length, cfg.overlong, start)
    if not encoded["train"]:
        raise ConfigError(f"data={cfg.data!r}: no training example left after encoding ({counts['train']})")
    # the Trainer's arguments are the config, with validation off when there is nothing to validate on
    args = cfg if encoded["validation"] else dataclasses.replace(cfg, eval_strategy="no")

    trainer_class = GAILTrainer if cfg.objective == "gail" else IRLTrainer
    trainer = trainer_class(
        model=model,
        args=args,
        cfg=cfg,
        train_dataset=datasets.Dataset.from_list(encoded["train"]),
        eval_dataset=datasets.Dataset.from_list(encoded["validation"]) if encoded["validation"] else None,
        data_collator=Collator(tokenizer.pad_token_id, prompts=cfg.samples_policy, seq2seq=seq2seq),
        processing_class=tokenizer,
        callbacks=callbacks,
    )
    if trainer.is_world_process_zero():
        if resume_from is None:  # a new run, or one interrupted before its first checkpoint: start afresh
            run_dir.mkdir(parents=True, exist_ok=True)
            trainer.metrics_path.unlink(missing_ok=True)
            trainer.samples_path.unlink(missing_ok=True)
            save_config(cfg, run_dir / "config.yaml")
            record = {f"data/{split}/{k}": v for split, c in counts.items() for k, v in c.items()}
            record["init/weights_sha256"] = weights_sha256(model)
            record["init/parameters"] = models.count_parameters(model)
            record["init/trainable_parameters"] = sum(p.numel() for p in model.parameters() if p.requires_grad)
            append_jsonl(trainer.metrics_path, {"step": 0, **record})
            print(describe_start(counts, record), flush=True)
        else:
            for path in (trainer.metrics_path, trainer.samples_path):
                _truncate_log(path, step_of(resume_from))
    trainer.train(resume_from_checkpoint=str(resume_from) if resume_from else None)
    return trainer


def main(argv=None):
    from irl.config import load_config

    run(load_config(argv))


def run(cfg: TrainConfig) -> None:
    """Train per `cfg`, then leave the process group (the command's entry point)."""
    try:
        train(cfg)
    finally:
        # Leave the process group before the interpreter tears down gloo's threads (under accelerate launch).
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()
