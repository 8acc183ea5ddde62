"""Cost at scale on this machine: a ladder of model sizes from the presets to the 0.5B shape, through training,
decoding and reward extraction, measured and predicted, in float32 and in bfloat16 autocast.

    python benchmarks/scale.py                                   # the whole ladder, both dtypes (make bench-scale)
    python benchmarks/scale.py --points tiny,small --contexts 256 --dtypes float32   # some points
    python benchmarks/scale.py --report                          # the ladder as it stands, markdown; no measuring

Points (LADDER): the `tiny`, `small` and `t5-small` presets, Llama and Qwen2 shapes between them and the
published ones (random weights, byte-level tokenizers of irl/shapes.py), T5-base and Qwen2.5-0.5B (models/shapes/).
Each point at each context length (256, 1,024 and 2,048 by default; the training stage of a point in TRAIN_CONTEXTS
only at those), B = max(1, 2048 / context) sequences per batch (--tokens_per_batch). Each training run, and each
point's decoding and scoring, runs in a process of its own, forked from a server that imported the ladder once
(`alone`):

- train: two optimizer steps of `python -m irl train` (irl.train.train) on batches padded to at most `context`
  tokens (write_data: rows of 8 lengths from `context` down, under a byte-level tokenizer), MLE and offline
  IQLearn (lam 0.1), on the chunked route and on materialised logits (encoder-decoder models have only the
  latter); IQLearn in float32 also with activation checkpointing at the CHECKPOINTED points, and as LoRA
  with checkpointing on LORA_TOKENS_PER_BATCH tokens at the LORA points; seconds per token is the second step's
  (metrics.jsonl train/tokens_per_s), peak the whole run's (the model built, the steps, the save);
- decode: irl.generation.decode of DECODE_PROMPTS prompts of context - N tokens for N = min(DECODE_NEW,
  context / 2) new tokens (the cache reaches `context`): greedy, t = 1 with K = 5 and beam 4; seconds per generated
  token, the prompts' forward included (a sweep's cost per token at completions of this length), after the compact
  decoder's self-check (once per process, as a sweep's first batch runs it) untimed on the prompts' last 16 tokens;
- rewards: analysis.rewards.extract on batches of at most 4,096 tokens of sequences of `context` tokens, then its
  tables written by analysis.rewards.write, on the chunked route (analysis/scoring.py) and on materialised logits,
  each after an untimed extraction of one 16-token completion (the chunked route's self-check, once per process,
  and the first call's set-up); seconds per scored token (scoring and writing), bytes written per scored token.
  Decoder-only models: the ladder's shapes have no trained tokenizer to make seq2seq episodes of.

dtype float32 runs everything in float32; bfloat16 runs training with `--bf16 true` and decoding and scoring
under torch.autocast(bfloat16), float32 weights in every case (as training keeps them).

Peak: bytes of torch tensors on the CPU at their highest (irl/memory.py measured_peak, the weights of the decode and
rewards stages added), beside irl/memory.py's prediction for the same run. Each point is one JSON line appended to
`--out` (benchmarks/results/scale.jsonl) with the commit of the code it measured, the machine and the point's wall
time (point_seconds: its units, their processes' starts included); a point already there for that commit is skipped,
so an interrupted ladder resumes, and a point one of whose processes is killed (for memory) or raises is named at
the end while the others go on (its traceback printed when it raised). At the end: the ladder's wall time, a table
(`newest`: each stage of a point as the last commit that measured it left it), the exponent of each cost in
parameters (least squares in log-log at each context and dtype) and in context (at each model and dtype), and
the curves (scale.png beside --out).
"""

import argparse
import json
import multiprocessing
import os
import platform
import random
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path

import pandas as pd
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from analysis import rewards  # noqa: E402
from analysis import schema as S  # noqa: E402
from irl import memory, shapes  # noqa: E402
from irl.config import TrainConfig  # noqa: E402
from irl.generation import Decoding, check_compact, decode  # noqa: E402
from irl.model import count_parameters, load_model, load_tokenizer  # noqa: E402
from irl.train import train  # noqa: E402

OUT = REPO / "benchmarks" / "results" / "scale.jsonl"
CONTEXTS = (256, 1024, 2048)
TOKENS_PER_BATCH = 2048  # sequences per batch: max(1, this / context)
DECODINGS = {"greedy": (Decoding("greedy"), 1), "t=1,K=5": (Decoding("sample", 1.0), 5), "beam=4": (
    Decoding("beam", beams=4), 4)}  # fmt: skip
# training rows have this many lengths, from the context down: a batch of more than one row is padded (write_data)
PADDED_LENGTHS = 8
DECODE_PROMPTS = 2
DECODE_NEW = 32
DTYPES = ("float32", "bfloat16")
# the training stage of these points only at these contexts (each batch holds the same tokens at every context): at
# 2,048 the profiler that measures the peak holds its events beside the tensors, and the process of the 0.5B shape's
# materialised run, or of T5-base's, passes this machine's 24 GB
TRAIN_CONTEXTS = {"qwen2.5-0.5b": (256,), "t5-base": (256,)}
# points whose IQLearn training also runs with activation checkpointing (as configs/paper/ sets it), both routes,
# in float32 (in bf16 the prediction of the materialised route with checkpointing is 25% high: docs/scale.md)
CHECKPOINTED = ("llama-32k-43m", "qwen2.5-0.5b")
# points whose IQLearn training also runs as LoRA (irl/config.py's defaults: r 16 on peft's default modules) with
# activation checkpointing, both routes, in float32, on LORA_TOKENS_PER_BATCH tokens per batch: with the weights
# frozen (no gradients, no AdamW moments), the batch's activations and the head are what a run's memory grows with
LORA = ("qwen2.5-0.5b",)
LORA_TOKENS_PER_BATCH = 4096
REWARD_BATCH_TOKENS = 4096
TOLERANCE = 0.15  # the prediction's aim: within 15% of the measured peak at every point of the ladder
# what the ladder's units import, loaded once by the server that `alone` forks them from
PRELOAD = ("analysis.rewards", "irl.generation", "irl.memory", "irl.model", "irl.train", "pandas", "torch")
PRESETS = ("tiny", "small", "t5-small")
_QWEN = json.loads((shapes.SHAPES_DIR / "qwen2.5-0.5b" / "config.json").read_text())
_LLAMA = json.loads((shapes.SHAPES_DIR / "llama-128k" / "config.json").read_text())
# name -> a preset, a directory of models/shapes/, or (config.json of a shape written for the ladder, its layout)
LADDER = {
    "tiny": "tiny",
    "small": "small",
    "t5-small": "t5-small",
    "llama-32k-43m": ({**_LLAMA, "hidden_size": 512, "intermediate_size": 1536, "num_hidden_layers": 8,
                       "num_attention_heads": 8, "num_key_value_heads": 8, "head_dim": 64, "vocab_size": 32_000,
                       "bos_token_id": None, "eos_token_id": 1},
                      shapes.TokenizerLayout(32_000, {0: "<pad>", 1: "</s>"}, "</s>", "<pad>", None, 131_072)),
    "qwen-152k-105m": ({**_QWEN, "hidden_size": 512, "intermediate_size": 2048, "num_hidden_layers": 8,
                        "num_attention_heads": 8, "num_key_value_heads": 2, "max_window_layers": 8},
                       shapes.SHAPES["qwen2.5-0.5b"]),
    "t5-base": "models/shapes/t5-base",
    "qwen2.5-0.5b": "models/shapes/qwen2.5-0.5b",
}  # fmt: skip


def model_path(name: str, workdir: Path) -> str:
    """A preset's name, a shape directory, or a shape directory written under `workdir` for a ladder point."""
    source = LADDER[name]
    if isinstance(source, str):
        return source if source in PRESETS else str(REPO / source)
    config, layout = source
    directory = workdir / name
    if not (directory / shapes.SHAPE_FILE).is_file():
        directory.mkdir(parents=True, exist_ok=True)
        (directory / "config.json").write_text(json.dumps(config, indent=2))
        shapes.write_tokenizer(directory, layout)
        (directory / shapes.SHAPE_FILE).write_text(json.dumps({"source": "benchmarks/scale.py LADDER"}))
    return str(directory)


def machine() -> str:
    """The CPU (its model and which bf16 instructions it has, on Linux), its cores and torch: what the times depend on
    (the same ladder's float32 training steps take about twice as long on a 2-core AMD EPYC as on a 2-core Xeon)."""
    cpu, flags = platform.processor() or platform.machine(), set()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        first = cpuinfo.read_text().split("\n\n")[0]  # the first processor's block: every core's is the same
        fields = {k.strip(): v.strip() for k, v in (line.split(":", 1) for line in first.splitlines() if ":" in line)}
        cpu, flags = fields.get("model name", cpu), set(fields.get("flags", "").split())
    bf16 = "/".join(f for f in ("amx_bf16", "avx512_bf16") if f in flags)
    return (f"{platform.machine()} {cpu}{f' ({bf16})' if bf16 else ''}, {os.cpu_count()} cores, "
            f"torch {torch.__version__} ({torch.get_num_threads()} threads)")  # fmt: skip


def commit() -> str:
    """The last commit that changed the code measured (irl/, analysis/, this script): a ladder resumes across
    commits that change nothing it measures."""
    done = subprocess.run(["git", "log", "-1", "--format=%h", "--", "irl", "analysis", "benchmarks/scale.py"],
                          cwd=REPO, capture_output=True, text=True)  # fmt: skip
    return done.stdout.strip()


def write_data(path: Path, rows: int, context: int) -> None:
    """Training examples of PADDED_LENGTHS lengths, from `context` tokens down (row i: context - i % PADDED_LENGTHS),
    under a byte-level tokenizer without merges (a token a byte): the prompt "Q:", words cut to the length, EOS. A
    batch of B > 1 rows is then padded (its rows' lengths differ) to at most `context` tokens, as the dry run's
    prediction counts it: batches of real data are (irl/memory.py activation_bytes)."""
    rng = random.Random(0)
    words = [f"w{i}" for i in range(500)] + ["the", "of", "and", "a", "to", "in"]
    text = " " + " ".join(rng.choice(words) for _ in range(context))
    prompt = "Q:"
    lines = []
    for i in range(rows):
        completion = text[: context - i % PADDED_LENGTHS - len(prompt) - 1]  # with EOS: context - i % PADDED tokens
        lines.append(json.dumps({"prompt": prompt, "completion": completion}) + "\n")
    path.write_text("".join(lines))


def train_points(name, path, context, workdir, objectives, dtype, tokens_per_batch=TOKENS_PER_BATCH) -> list[dict]:
    batch = max(1, tokens_per_batch // context)
    lora_batch = max(1, LORA_TOKENS_PER_BATCH // context)
    data = workdir / f"data-{context}.jsonl"
    if not data.is_file():
        write_data(data, 4 * max(batch, lora_batch) + 8, context)
    # encoder-decoder models have no chunked route: their materialised runs are the only ones
    chunkable = memory.can_chunk(memory.model_config(TrainConfig(output_dir=str(workdir / "runs"), model=path,
                                                                 data=str(data), vocab_size=1024)))  # fmt: skip
    tokenizer = _preset_tokenizer(workdir) if name in PRESETS else None  # a shape's own, from its directory
    out = []
    for objective in objectives:
        routes = [(True, False, False), (False, False, False)]
        if name in CHECKPOINTED and objective == "iqlearn" and dtype == "float32":
            routes += [(True, True, False), (False, True, False)]
        if name in LORA and objective == "iqlearn" and dtype == "float32":
            routes += [(True, True, True), (False, True, True)]
        for chunked, checkpointed, lora in [route for route in routes if chunkable or not route[0]]:
            run_dir = workdir / "runs" / f"{name}-{context}-{objective}-{chunked}-{checkpointed}-{lora}-{dtype}"
            values = dict(output_dir=str(run_dir), model=path, data=str(data), max_length=context,
                          per_device_train_batch_size=lora_batch if lora else batch, max_steps=2, learning_rate=1e-4,
                          warmup_steps=0, logging_steps=1, eval_strategy="no", save_steps=100, eval_size=4,
                          objective=objective, lam=0.1, chunked_loss=chunked, vocab_size=1024,
                          bf16=dtype == "bfloat16", activation_checkpointing=checkpointed, use_peft=lora,
                          tokenizer=tokenizer)  # fmt: skip
            # a process per run: what a run leaves behind (the profiler's buffers, the allocator's cache) adds up,
            # and the 0.5B shape's fourth run in one process passed this machine's 24 GB
            out.append(dict(stage=f"train/{objective}", **alone(train_run, values)))
    return out


def alone(fn, *args):
    """fn(*args) in a process of its own, forked from a server process that imported what the units run once (the
    forkserver start method, PRELOAD preloaded): a unit starts in a fraction of a second instead of the seconds its
    imports take, and nothing it allocates outlives it. The server runs no torch operation, so no thread pool is
    forked. A unit the kernel kills raises BrokenProcessPool."""
    context = multiprocessing.get_context("forkserver")
    # by name: Python 3.11's forkserver never receives the main script's path, so preloading "__main__" does nothing
    context.set_forkserver_preload([*PRELOAD, fn.__module__])
    with ProcessPoolExecutor(1, mp_context=context) as pool:
        return pool.submit(fn, *args).result()


def train_run(values: dict) -> dict:
    """One training run of the ladder, TrainConfig(**values), measured: its route, peak, prediction and speed."""
    shutil.rmtree(values["output_dir"], ignore_errors=True)
    cfg = TrainConfig(**values)
    peak, trainer = memory.measured_peak(lambda: train(cfg))
    predicted = memory.predict_train(cfg, trainer.model.config).peak  # a preset: its trained vocabulary
    logs = [json.loads(line) for line in (Path(cfg.output_dir) / "metrics.jsonl").read_text().splitlines()]
    speed = [r["train/tokens_per_s"] for r in logs if "train/tokens_per_s" in r][-1]
    route = ("chunked" if trainer.chunked else "materialised") + (
        "+checkpointing" if cfg.activation_checkpointing else "") + ("+lora" if cfg.use_peft else "")
    shutil.rmtree(cfg.output_dir, ignore_errors=True)
    return dict(route=route, peak_bytes=peak, predicted_peak_bytes=predicted, seconds_per_token=1 / speed,
                parameters=count_parameters(trainer.model), vocab=trainer.model.config.vocab_size)


def decode_points(model, context, dtype) -> list[dict]:
    new = min(DECODE_NEW, context // 2)
    prompt = context - new
    parameters, vocab = count_parameters(model), model.config.vocab_size
    weights = parameters * 4
    autocast = dtype == "bfloat16"
    ids = torch.randint(2, vocab, (DECODE_PROMPTS, prompt), generator=torch.Generator().manual_seed(0))
    batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        # untimed, on the prompts' last 16 tokens: the compact decoder's self-check, once per process (a sweep's
        # first batch runs it, not each batch)
        check_compact(model, {k: v[:, -16:] for k, v in batch.items()}, eos_token_id=vocab + 1, pad_token_id=0)
    out = []
    for label, (decoding, k) in DECODINGS.items():
        rows = decoding.beams if decoding.kind == "beam" else decoding.samples_per_prompt(k)
        shared = decoding.kind == "sample" and rows > 1 and not model.config.is_encoder_decoder
        predicted = memory.predict_decoding(model.config, parameters, DECODE_PROMPTS, prompt, new, rows,
                                            decoding.kind == "beam", shared, autocast=autocast)["peak"]  # fmt: skip
        start = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            peak, decoded = memory.measured_peak(lambda: decode(
                model, batch, decoding, k, max_new_tokens=new, seed=0, eos_token_id=vocab + 1, pad_token_id=0))
        seconds = time.perf_counter() - start
        generated = sum(len(c) for c in decoded.completion_ids)
        out.append(dict(stage="decode", route=label, peak_bytes=weights + peak, predicted_peak_bytes=predicted,
                        seconds_per_token=seconds / generated, parameters=parameters, vocab=vocab))  # fmt: skip
    return out


def reward_points(model, tokenizer, context, dtype, workdir) -> list[dict]:
    if model.config.is_encoder_decoder:
        return []  # no trained tokenizer to make the prompt/completion split of a seq2seq episode (docstring)
    parameters, vocab = count_parameters(model), model.config.vocab_size
    rows, prompt = max(1, REWARD_BATCH_TOKENS // context), context // 8
    g = torch.Generator().manual_seed(0)
    ids = [(torch.randint(2, vocab, (prompt,), generator=g).tolist(),
            torch.randint(2, vocab, (context - prompt - 1,), generator=g).tolist() + [tokenizer.eos_token_id])
           for _ in range(rows)]  # fmt: skip
    table = pd.DataFrame({S.EXAMPLE_ID: [f"x{i}" for i in range(rows)], S.PROMPT_ID: [f"p{i}" for i in range(rows)],
                          S.PROMPT: [tokenizer.decode(p) for p, _ in ids],
                          S.COMPLETION: [tokenizer.decode(c) for _, c in ids],
                          S.PROMPT_IDS: [p for p, _ in ids], S.COMPLETION_IDS: [c for _, c in ids],
                          S.ENDED: True})  # fmt: skip
    completion = ids[0][1][:15] + [tokenizer.eos_token_id]
    warm = table.head(1).assign(**{S.COMPLETION: [tokenizer.decode(completion)], S.COMPLETION_IDS: [completion]})
    autocast = dtype == "bfloat16"
    out_dir, out = workdir / "rewards", []
    for chunked in (True, False) if memory.can_chunk(model.config) else (False,):
        predicted = memory.predict_scoring(model.config, parameters, REWARD_BATCH_TOKENS, autocast=autocast,
                                           chunked=chunked)["peak"]  # fmt: skip
        shutil.rmtree(out_dir, ignore_errors=True)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            # untimed, on a short sequence: the route's self-check (once per process) and the first call's set-up
            rewards.extract(model, tokenizer, warm, 0.99, REWARD_BATCH_TOKENS, chunked=chunked)
            start = time.perf_counter()
            peak, found = memory.measured_peak(lambda: rewards.extract(model, tokenizer, table, 0.99,
                                                                       REWARD_BATCH_TOKENS, chunked=chunked))
        rewards.write(out_dir, found, None, {}, {})
        seconds = time.perf_counter() - start
        scored = found.counts["tokens"]
        written = sum(f.stat().st_size for f in out_dir.iterdir())
        out.append(dict(stage="rewards", route=found.route["route"], peak_bytes=parameters * 4 + peak,
                        predicted_peak_bytes=predicted, seconds_per_token=seconds / scored,
                        bytes_written_per_token=written / scored, parameters=parameters, vocab=vocab))  # fmt: skip
    return out


def newest(out: Path) -> list[dict]:
    """The rows of `out` as the ladder stands: for each model, context, dtype and stage, the rows of the last commit
    that measured it (a stage measured again after a change to the code it runs replaces its earlier rows; the
    others keep theirs, each row naming its commit)."""
    rows = [json.loads(line) for line in out.read_text().splitlines() if line.strip()]
    point = lambda r: (r["model"], r["context"], r["dtype"], r["stage"])  # noqa: E731
    last = {point(r): r["commit"] for r in rows}
    return [r for r in rows if r["commit"] == last[point(r)]]


def done_keys(out: Path, head: str) -> set:
    if not out.is_file():
        return set()
    rows = [json.loads(line) for line in out.read_text().splitlines() if line.strip()]
    return {(r["model"], r["context"], r["dtype"], r["stage"]) for r in rows if r["commit"] == head}


def exponents(rows: list[dict]) -> list[str]:
    """Least-squares slopes of log(seconds per token) and log(peak bytes) against log(parameters) at each context
    and route, and against log(context) at each model and route, where three or more points exist."""
    import numpy as np

    lines = []
    for x_key, group_key in (("parameters", "context"), ("context", "model")):
        groups = {}
        for r in rows:
            groups.setdefault((r["stage"], r["route"], r["dtype"], r[group_key]), []).append(r)
        for (stage, route, dtype, at), group in sorted(groups.items(), key=str):
            if len({r[x_key] for r in group}) < 3:
                continue
            x = np.log([r[x_key] for r in group])
            time_slope = np.polyfit(x, np.log([r["seconds_per_token"] for r in group]), 1)[0]
            memory_slope = np.polyfit(x, np.log([r["peak_bytes"] for r in group]), 1)[0]
            lines.append(f"{stage:<14} {route:<13} {dtype:<8} {group_key} {at}: time ~ {x_key}^{time_slope:.2f}, "
                         f"peak ~ {x_key}^{memory_slope:.2f}")  # fmt: skip
    return lines


def _mib(n: float) -> str:
    return f"{n / 2**20:,.0f}"


def _pairs(rows: list[dict], stage_prefix: str) -> dict:
    """{(model, context, dtype, stage, what both routes add): {"chunked": row, "materialised": row}}."""
    pairs = {}
    for r in rows:
        if not r["stage"].startswith(stage_prefix):
            continue
        head, _, extra = r["route"].partition("+")
        pairs.setdefault((r["model"], r["context"], r["dtype"], r["stage"], extra), {})[head] = r
    return {k: v for k, v in pairs.items() if len(v) == 2}


def report(rows: list[dict]) -> str:
    """The ladder as docs/scale.md gives it, in markdown: predicted against measured peak, the chunked head against
    materialised logits in training and in scoring (memory ratio = chunked peak / materialised, time ratio = seconds
    per token chunked / materialised), and every row (`newest`'s)."""
    order = {name: i for i, name in enumerate(LADDER)}
    rows = sorted(rows, key=lambda r: (DTYPES.index(r["dtype"]), order.get(r["model"], len(order)), r["context"],
                                       r["stage"], r["route"]))  # fmt: skip
    ratio = lambda r: r["predicted_peak_bytes"] / r["peak_bytes"]  # noqa: E731
    outside = [r for r in rows if abs(ratio(r) - 1) > TOLERANCE]
    lines = [f"Predicted over measured peak: {len(rows) - len(outside)} of {len(rows)} rows within "
             f"{TOLERANCE:.0%} (from {min(map(ratio, rows)):.2f} to {max(map(ratio, rows)):.2f}).",
             *(f"- {r['model']} at {r['context']} in {r['dtype']}, {r['stage']} {r['route']}: {ratio(r):.2f} "
               f"({_mib(r['peak_bytes'])} MiB measured, {_mib(r['predicted_peak_bytes'])} predicted)"
               for r in outside), ""]  # fmt: skip
    lines += ["| point | T | dtype | objective | route | chunked peak MiB | materialised peak MiB | memory ratio "
              "| time ratio | commit |", "|---|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for (model, context, dtype, stage, extra), pair in _pairs(rows, "train/").items():
        c, m = pair["chunked"], pair["materialised"]
        lines.append(f"| {model} | {context} | {dtype} | {stage.split('/')[1]} | {extra or '-'} | "
                     f"{_mib(c['peak_bytes'])} | {_mib(m['peak_bytes'])} | {c['peak_bytes'] / m['peak_bytes']:.2f} | "
                     f"{c['seconds_per_token'] / m['seconds_per_token']:.2f} | {c['commit']} |")  # fmt: skip
    lines += ["", "| point | T | dtype | chunked peak MiB | materialised peak MiB | memory ratio | time ratio | "
              "predicted chunked / materialised MiB | commit |", "|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for (model, context, dtype, _, _), pair in _pairs(rows, "rewards").items():
        c, m = pair["chunked"], pair["materialised"]
        lines.append(f"| {model} | {context} | {dtype} | {_mib(c['peak_bytes'])} | {_mib(m['peak_bytes'])} | "
                     f"{c['peak_bytes'] / m['peak_bytes']:.2f} | "
                     f"{c['seconds_per_token'] / m['seconds_per_token']:.2f} | "
                     f"{_mib(c['predicted_peak_bytes'])} / {_mib(m['predicted_peak_bytes'])} | {c['commit']} |")
    lines += ["", "| point | parameters | vocab | T | dtype | stage | route | s/token | peak MiB | predicted MiB | "
              "pred/meas | commit |", "|---|---|---|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for r in rows:
        lines.append(f"| {r['model']} | {r['parameters']:,} | {r['vocab']:,} | {r['context']} | {r['dtype']} | "
                     f"{r['stage']} | {r['route']} | {r['seconds_per_token']:.2e} | {_mib(r['peak_bytes'])} | "
                     f"{_mib(r['predicted_peak_bytes'])} | {ratio(r):.2f} | {r['commit']} |")  # fmt: skip
    return "\n".join(lines)


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_time, ax_peak) = plt.subplots(1, 2, figsize=(12, 5))
    series = {}
    for r in rows:
        series.setdefault((r["stage"], r["route"], r["context"]), []).append(r)
    for (stage, route, context), group in sorted(series.items(), key=str):
        group = sorted(group, key=lambda r: r["parameters"])
        x = [r["parameters"] for r in group]
        label = f"{stage} {route} T={context}"
        ax_time.plot(x, [r["seconds_per_token"] for r in group], marker="o", label=label)
        ax_peak.plot(x, [r["peak_bytes"] / 2**30 for r in group], marker="o", label=label)
    for ax, title in ((ax_time, "seconds per token"), (ax_peak, "peak GiB (torch tensors)")):
        ax.set(xscale="log", yscale="log", xlabel="parameters", title=title)
    ax_peak.legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv=None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--points", default=",".join(LADDER), help=f"Comma-separated, of {list(LADDER)}.")
    parser.add_argument("--contexts", default=",".join(map(str, CONTEXTS)))
    parser.add_argument("--stages", default="train,decode,rewards")
    parser.add_argument("--objectives", default="mle,iqlearn", help="Objectives of the train stage.")
    parser.add_argument("--out", default=str(OUT))
    parser.add_argument("--dtypes", default=",".join(DTYPES), help=f"Comma-separated, of {list(DTYPES)}.")
    parser.add_argument("--tokens_per_batch", type=int, default=TOKENS_PER_BATCH,
                        help="Training tokens per batch: max(1, this / context) sequences.")
    parser.add_argument("--report", action="store_true",
                        help="Print the ladder as it stands in --out as markdown (docs/scale.md's tables); measure "
                             "nothing.")  # fmt: skip
    args = parser.parse_args(argv)
    out, head = Path(args.out), commit()
    if args.report:
        rows = newest(out) if out.is_file() else []
        if not rows:
            parser.error(f"--report: no ladder rows in {out}")
        print(report(rows))
        return rows
    out.parent.mkdir(parents=True, exist_ok=True)
    done, failed, start = done_keys(out, head), [], time.perf_counter()
    for dtype in args.dtypes.split(","):
        for name in args.points.split(","):
            for context in map(int, args.contexts.split(",")):
                todo = [s for s in args.stages.split(",") if not any(
                    k[:3] == (name, context, dtype) and k[3].startswith(s) for k in done)]  # fmt: skip
                if context not in TRAIN_CONTEXTS.get(name, (context,)):
                    todo = [s for s in todo if s != "train"]
                if not todo:
                    continue
                try:
                    measure_point(name, context, dtype, todo, args, out, head)
                except BrokenProcessPool:  # killed for memory, say: the ladder goes on, and says so at the end
                    failed.append(f"{name} at {context} in {dtype}: a process of it was killed")
                except Exception as error:  # an error in a unit (its traceback printed now): the same
                    traceback.print_exc()
                    failed.append(f"{name} at {context} in {dtype}: {type(error).__name__}: {error}")
    print(f"ladder: {time.perf_counter() - start:.0f} s")
    rows = newest(out)
    print(f"\n{'model':<15} {'T':>5} {'dtype':<8} {'stage':<13} {'route':<24} {'s/token':>10} {'peak GiB':>9} "
          f"{'predicted':>9} commit")  # fmt: skip
    for r in rows:
        print(f"{r['model']:<15} {r['context']:>5} {r['dtype']:<8} {r['stage']:<13} {r['route']:<24} "
              f"{r['seconds_per_token']:>10.2e} {r['peak_bytes'] / 2**30:>9.3f} "
              f"{r['predicted_peak_bytes'] / 2**30:>9.3f} {r['commit']}")  # fmt: skip
    print("\n".join(exponents(rows)))
    plot(rows, out.with_suffix(".png"))
    if failed:
        print("points that failed (rerun the command to retry them):", *failed, sep="\n  ")
    return rows


def measure_point(name, context, dtype, stages, args, out: Path, head: str) -> list[dict]:
    """Measure the points of `stages` of one model at one context and dtype, and append them to `out`."""
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        found = measure(name, model_path(name, Path(tmp)), context, dtype, stages, Path(tmp), args)
    wall = round(time.perf_counter() - start, 1)  # the whole point: its model built, every stage and route
    described = machine()
    rows = [dict(commit=head, machine=described, model=name, context=context, dtype=dtype, point_seconds=wall,
                 **point) for point in found]  # fmt: skip
    with out.open("a") as f:
        for row in rows:
            f.write(json.dumps(row) + "\n")
            print(json.dumps(row), flush=True)
    return rows


def measure(name, path, context, dtype, stages, workdir, args) -> list[dict]:
    """The points of `stages` of one model at one context and dtype: each training run in a process of its own, then
    decoding and scoring in one."""
    found = []
    if "train" in stages:
        found += train_points(name, path, context, workdir, args.objectives.split(","), dtype, args.tokens_per_batch)
    if {"decode", "rewards"} & set(stages):
        found += alone(inference_points, name, path, context, dtype, stages, workdir)
    return found


def inference_points(name, path, context, dtype, stages, workdir) -> list[dict]:
    """The decode and rewards points of `stages`, on one model built once."""
    torch.manual_seed(0)
    preset = name in PRESETS
    model = (_preset(name, context) if preset else load_model(path)).eval()
    found = decode_points(model, context, dtype) if "decode" in stages else []
    if "rewards" in stages:
        tokenizer = load_tokenizer(_preset_tokenizer(workdir) if preset else path)
        found += reward_points(model, tokenizer, context, dtype, workdir)
    return found


def _preset_tokenizer(workdir: Path) -> str:
    """A byte-level tokenizer of the presets' vocabulary (1,024; pad 0, EOS 1), for training them on write_data's
    rows and scoring their episodes."""
    directory = workdir / "preset-tokenizer"
    if not directory.is_dir():
        directory.mkdir()
        shapes.write_tokenizer(directory, shapes.TokenizerLayout(1024, {0: "<pad>", 1: "</s>"}, "</s>", "<pad>", None,
                                                                 4096))  # fmt: skip
    return str(directory)


def _preset(name: str, context: int):
    """A preset at the vocabulary its tokenizer is trained to by default (TrainConfig.vocab_size 1024)."""
    from irl.model import build_preset

    return build_preset(name, memory._Sized(1024), context, seed=0)


if __name__ == "__main__":
    main()
