"""Pretrain a base language model on a plain-text corpus, on the fine-tuning loop, and ship it.

    python -m tasks corpus --out build/base/corpus                              # the corpus (tasks/corpus.py)
    python -m irl pretrain --config configs/base.yaml [--field value ...]     # train a base model on it
    python -m irl export --run build/base/run --out models/base               # ship its last checkpoint
    make base                                                                 # the three, from scratch

Pretraining is the `mle` objective of irl/objectives.py on IRLTrainer, as fine-tuning is, with every token of
a document an action (no prompt part). The corpus directory holds `train.jsonl` and `validation.jsonl`, one
`{"text": ...}` document per line (`text_field` names the field). Each split becomes one token stream

    EOS d_1 EOS d_2 EOS ... d_n EOS          (d_i: the tokens of document i, in file order)

cut into blocks of `max_length` tokens that overlap by one token: block k is stream[k(L-1) : k(L-1) + L]. The
first token of a block is only context (it has no state before it), so with the one-token overlap every token
of the stream but the leading EOS is a target exactly once: each document's tokens and the EOS that ends it.
The leading EOS gives a document's first token the same context in every document (EOS, as after the
previous document). Documents are packed without attention masks between them, as in GPT-2: a block may
hold the end of one document and the start of the next, and the model learns that EOS starts afresh. The
completion_mask is 1 on every token of a block, so the objective's mean runs over all targets; the Trainer
shuffles blocks (seeded), the last block of a split may be shorter and is padded by the collator.

The run directory is a normal one (irl/train.py): config.yaml (this PretrainConfig), metrics.jsonl (step 0:
data/<split>/{documents,empty,tokens,bytes,blocks}, init/*; then train/*, iq/*, eval/nll), tokenizer/ (a
byte-level BPE trained on the train split, digits one per token, irl/model.py) and checkpoint-<step>/. At the
end it logs the validation perplexity exp(eval/nll) and bits per byte (the same NLL summed and divided by
ln 2 times the split's UTF-8 bytes, comparable across tokenizers).

`export` writes a checkpoint's model and tokenizer (no optimizer or trainer state) to a directory with
recipe/: the run's config.yaml and metrics.jsonl, the corpus's manifest.json, and SHA256SUMS over every
shipped file (`cd models/base && sha256sum -c recipe/SHA256SUMS`). The corpus is byte-identical from the
same pinned packages (its manifest lists their checksums and the output files'), and training is seeded, but
the weights of a rebuild on another CPU, thread count or torch build may differ in the last bits (floating
point sums in another order): the shipped files and their SHA256SUMS are the reference.
"""

import json
import math
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from transformers import set_seed

from common.io import append_jsonl, sha256_file
from irl import model as models
from irl.config import ConfigError, TrainConfig, _f, load_config, read_config, save_config
from irl.data import Collator, DataError, iter_jsonl
from irl.runs import CONFIG, METRICS, last_checkpoint, step_of
from irl.train import _check_run_dir, _truncate_log, load_tokenizer_and_model, weights_sha256
from irl.trainer import IRLTrainer

SPLITS = ("train", "validation")
RECIPE = "recipe"
SUMS = "SHA256SUMS"
MANIFEST = "manifest.json"


@dataclass
class PretrainConfig(TrainConfig):
    """Pretraining: TrainConfig's run, model and optimisation fields, with `data` a corpus directory of
    train.jsonl and validation.jsonl documents. The objective is `mle` on every token; the fields that only
    fine-tuning reads (prompt/completion fields, overlong, the IQLearn, GAIL and sampling fields, math_*) are
    ignored."""

    output_dir: str = _f("build/base/run", "Run directory: resolved config, metrics.jsonl and checkpoint-<step>/.")
    data: str = _f(
        "build/base/corpus",
        "Corpus directory with train.jsonl and validation.jsonl, one JSON document per line "
        "(python -m tasks corpus --out DIR writes one).",
    )
    model: str = _f("base", f"A preset built from a config {tuple(models.PRESETS)}, or a model name or local path.")
    vocab_size: int = _f(4096, "Presets: size of the BPE tokenizer trained on the corpus's train split.")
    text_field: str = _f("text", "Field of each corpus document holding its text.")

    def __post_init__(self):
        super().__post_init__()
        if self.objective != "mle":
            raise ConfigError(f"objective={self.objective!r}: pretraining is 'mle' on every token of a document")
        if not self.text_field:
            raise ConfigError(f"text_field={self.text_field!r}: must name a field of the documents")


def read_documents(path: Path, text_field: str) -> tuple[list[str], int]:
    """The texts of a JSONL corpus split, and how many were empty (whitespace only: dropped)."""
    texts, empty = [], 0
    for obj, where in iter_jsonl(path):
        text = obj.get(text_field)
        if not isinstance(text, str):
            why = "missing" if text_field not in obj else f"must be a string, got {type(text).__name__}"
            raise DataError(f"{where}: field '{text_field}' {why}")
        if text.strip():
            texts.append(text)
        else:
            empty += 1
    return texts, empty


def load_corpus(cfg: PretrainConfig) -> tuple[dict[str, list[str]], dict[str, int]]:
    """The texts of each split ({"train": [...], "validation": [...]}) and the count of empty documents
    dropped from each; read before any other work, so a missing file or field fails first."""
    root = Path(cfg.data)
    missing = [f"{split}.jsonl" for split in SPLITS if not (root / f"{split}.jsonl").is_file()]
    if missing:
        raise DataError(f"data={cfg.data!r}: not a corpus directory (no {', '.join(missing)}); "
                        "write one with `python -m tasks corpus --out DIR`")
    texts, empty = {}, {}
    for split in SPLITS:
        texts[split], empty[split] = read_documents(root / f"{split}.jsonl", cfg.text_field)
        if not texts[split]:
            raise DataError(f"data={cfg.data!r}: {split}.jsonl holds no non-empty document")
    return texts, empty


def token_stream(texts: list[str], tokenizer, batch: int = 512) -> np.ndarray:
    """EOS d_1 EOS d_2 EOS ... d_n EOS as one int32 array (tokenised in batches; no special prefix)."""
    eos = tokenizer.eos_token_id
    pieces = [np.array([eos], dtype=np.int32)]
    for start in range(0, len(texts), batch):
        for ids in tokenizer(texts[start : start + batch], add_special_tokens=False)["input_ids"]:
            pieces.append(np.array(ids + [eos], dtype=np.int32))
    return np.concatenate(pieces)


class PackedBlocks(torch.utils.data.Dataset):
    """Blocks of `length` tokens of a token stream, overlapping by one token, as training features.

    Block k is stream[k(length-1) : k(length-1) + length], so every token but the stream's first is the target
    of exactly one block (a block's first token is context only). The last block may be shorter.
    completion_mask is 1 on every token: all of them are actions. Blocks are views, made when indexed.
    """

    def __init__(self, stream: np.ndarray, length: int):
        self.stream, self.length, self.stride = stream, length, length - 1
        self.count = max(1, math.ceil((len(stream) - 1) / self.stride))

    def __len__(self) -> int:
        return self.count

    def __getitem__(self, k: int) -> dict:
        ids = self.stream[k * self.stride : k * self.stride + self.length].tolist()
        return {"input_ids": ids, "completion_mask": [1] * len(ids)}


def pretrain(cfg: PretrainConfig, callbacks=None) -> IRLTrainer:
    """Pretrain per `cfg`; returns the finished Trainer. Writes a run directory (see the module docstring)."""
    run_dir = Path(cfg.output_dir)
    resume_from = _check_run_dir(cfg, run_dir)
    if cfg.init is not None and not (Path(cfg.init) / "config.json").is_file():
        raise ConfigError(f"init={cfg.init!r}: not a checkpoint directory (no config.json)")
    texts, empty = load_corpus(cfg)
    set_seed(cfg.seed)
    # A document is an example whose completion is all of it: the tokenizer is trained on the texts.
    documents = [{"prompt": "", "completion": text} for text in texts["train"]]
    tokenizer, model = load_tokenizer_and_model(cfg, documents, run_dir, fresh=resume_from is None)
    streams, counts = {}, {}
    for split in SPLITS:
        streams[split] = token_stream(texts[split], tokenizer)
        counts[split] = {
            "documents": len(texts[split]),
            "empty": empty[split],
            "tokens": len(streams[split]) - 1,  # targets: the documents' tokens and their EOS
            "bytes": sum(len(text.encode("utf-8")) for text in texts[split]),
        }
    datasets = {split: PackedBlocks(streams[split], cfg.max_length) for split in SPLITS}
    for split in SPLITS:
        counts[split]["blocks"] = len(datasets[split])

    trainer = IRLTrainer(
        model=model,
        args=cfg,  # the config is the Trainer's arguments
        cfg=cfg,
        train_dataset=datasets["train"],
        eval_dataset=datasets["validation"],
        data_collator=Collator(tokenizer.pad_token_id),
        processing_class=tokenizer,
        callbacks=callbacks,
    )
    if trainer.is_world_process_zero() and resume_from is None:
        run_dir.mkdir(parents=True, exist_ok=True)
        trainer.metrics_path.unlink(missing_ok=True)
        save_config(cfg, run_dir / CONFIG)
        record = {f"data/{split}/{k}": v for split, c in counts.items() for k, v in c.items()}
        record["init/weights_sha256"] = weights_sha256(model)
        record["init/parameters"] = models.count_parameters(model)
        append_jsonl(trainer.metrics_path, {"step": 0, **record})
        print(json.dumps(record), flush=True)
    elif trainer.is_world_process_zero():
        _truncate_log(trainer.metrics_path, step_of(resume_from))
    trainer.train(resume_from_checkpoint=str(resume_from) if resume_from else None)

    nll = trainer.evaluate()["eval/nll"]  # the final step's validation pass (already run by the Trainer)
    trainer.log({
        "eval/perplexity": math.exp(nll),
        # the summed NLL (documents' tokens and EOS) in bits per UTF-8 byte of the documents
        "eval/bits_per_byte": nll * counts["validation"]["tokens"] / (math.log(2) * counts["validation"]["bytes"]),
    })
    return trainer


def write_sums(root: Path) -> None:
    """recipe/SHA256SUMS over every other file under root, in `sha256sum -c` format, paths relative to root."""
    files = sorted(p for p in root.rglob("*") if p.is_file() and p != root / RECIPE / SUMS)
    lines = [f"{sha256_file(p)}  {p.relative_to(root).as_posix()}\n" for p in files]
    (root / RECIPE / SUMS).write_text("".join(lines))


def check_sums(root) -> list[str]:
    """Problems with a shipped directory against its recipe/SHA256SUMS: changed, missing or unlisted files."""
    root = Path(root)
    listed = {}
    for line in (root / RECIPE / SUMS).read_text().splitlines():
        digest, name = line.split("  ", 1)
        listed[name] = digest
    present = {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()} - {f"{RECIPE}/{SUMS}"}
    problems = [f"{name}: missing" for name in sorted(set(listed) - present)]
    problems += [f"{name}: not listed in {RECIPE}/{SUMS}" for name in sorted(present - set(listed))]
    problems += [f"{name}: checksum differs" for name in sorted(set(listed) & present)
                 if sha256_file(root / name) != listed[name]]
    return problems


def export(run_dir, out_dir, checkpoint=None) -> Path:
    """Ship a pretraining run's checkpoint (default: its last) as a model directory with its recipe.

    out_dir/ gets the model (config.json, generation_config.json, model.safetensors) and tokenizer files as
    `save_pretrained` writes them, and out_dir/recipe/ the run's config.yaml and metrics.jsonl, the corpus's
    manifest.json (from the run's `data` directory) and SHA256SUMS over every file. out_dir is replaced as a
    whole (written beside it, then renamed), so it never mixes files of two runs.
    """
    run_dir, out_dir = Path(run_dir), Path(out_dir)
    cfg = read_config(run_dir / CONFIG, PretrainConfig)
    checkpoint = Path(checkpoint) if checkpoint else last_checkpoint(run_dir)
    if checkpoint is None:
        raise ConfigError(f"run={str(run_dir)!r}: no complete checkpoint to export")
    manifest = Path(cfg.data) / MANIFEST
    if not manifest.is_file():
        raise DataError(f"data={cfg.data!r}: no {MANIFEST} to ship with the model")
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out_dir.parent, prefix=f".{out_dir.name}."))
    tmp.chmod(0o755)  # mkdtemp's is 0o700
    try:
        models.load_model(str(checkpoint)).save_pretrained(tmp)
        models.load_tokenizer(str(checkpoint)).save_pretrained(tmp)
        (tmp / RECIPE).mkdir()
        for source in (run_dir / CONFIG, run_dir / METRICS, manifest):
            shutil.copyfile(source, tmp / RECIPE / source.name)
        write_sums(tmp)
        if out_dir.exists():
            shutil.rmtree(out_dir)
        tmp.rename(out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    size = sum(p.stat().st_size for p in out_dir.rglob("*") if p.is_file())
    print(f"{out_dir}: {checkpoint} with its recipe ({size / 1e6:.1f} MB)")
    return out_dir


def main(argv=None):
    try:
        pretrain(load_config(argv, PretrainConfig, prog="python -m irl pretrain"))
    finally:
        # Leave the process group before the interpreter tears down gloo's threads (under accelerate launch).
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()


def export_main(argv=None):
    import argparse

    parser = argparse.ArgumentParser(prog="python -m irl export", description=export.__doc__)
    parser.add_argument("--run", required=True, help="Pretraining run directory.")
    parser.add_argument("--out", required=True, help="Directory to write (replaced), e.g. models/base.")
    parser.add_argument("--checkpoint", default=None, help="Checkpoint directory (default: the run's last).")
    args = parser.parse_args(argv)
    export(args.run, args.out, args.checkpoint)
