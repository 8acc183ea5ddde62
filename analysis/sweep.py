"""Decoding sweep (METHOD.md §5): sample every checkpoint under a grid of decoding settings, score quality and
diversity, and print the quality/diversity table with each method's Pareto front.

    python -m analysis sweep --run runs/demo/mle --run runs/demo/iqlearn --limit 100
    python -m analysis sweep --run 'runs/demo/*' --checkpoints all --temperatures 0,0.5,1 --beams 4 --samples 5
    python -m analysis sweep --run runs/demo/iqlearn --bf16 true                 # forward under bfloat16 autocast
    accelerate launch --num_processes 2 -m analysis sweep --run runs/demo/mle     # prompts split between processes
    ACCELERATE_USE_CPU=1 accelerate launch --multi_gpu --num_processes 2 -m analysis sweep ...   # two CPU processes

Grid: greedy once (temperature 0 or beam width 1), ancestral sampling at each temperature > 0 and each top_p and
min_p asked for (default top_p 1, min_p 0, no top-k: the policy's own distribution, tempered; the filters are
transformers' TopPLogitsWarper and MinPLogitsWarper, after temperature as in generate) and beam search at each
width > 1. A sampled cell is labelled "t=1", with its filters when they filter: "t=1,top_p=0.9,min_p=0.05".
K samples per prompt: K independent samples, the top min(K, width) beams, and ONE greedy completion (K greedy
copies would be identical, so greedy has no Self-BLEU or distinct-n: those columns are NaN for it). Self-BLEU and
distinct-n depend on the number of samples per prompt, so compare cells with the same number (beam=2 has 2). On the
math task every cell is decoded a second time with the calculator (analysis/calculator.py), with the same seed.

Written next to each checkpoint (irl.runs.sweep_dir(checkpoint, split)):
    samples-<decoding>.parquet   one row per sample: schema.SAMPLE_COLUMNS (the token record: prompt_ids,
                                 completion_ids up to and including EOS, ended), the calculator's record
                                 (completion_calc_ids, ended_calc, calc_forced, completion_calc), per-sample metrics
    aggregate.parquet            one row per decoding, rebuilt from the samples files (analysis.metrics.aggregate),
                                 with effective diversity when a --quality_threshold is given
    manifest.json                the settings (`Settings`) every cell there was made with
Lengths: max_new_tokens defaults to 1.5 x the split's longest reference (tokens + EOS), at most half the context
of a decoder-only model; a prompt that would leave the completion less room keeps its last context -
max_new_tokens tokens, as lm-evaluation-harness truncates contexts (prompt_ids record what was read; the sweep
prints how many prompts were cut). Encoder-decoder models read whole prompts.

Each file is written atomically. A rerun keeps the cells already written whole (a readable file with the rows the
settings give) and decodes the others again, so an interrupted sweep finishes where it stopped and a file cut
short by a full disk is made again; asking for other settings in the same directory is an error. Arguments out
of range (a negative temperature, a beam width or --samples, --limit, --batch_size of 0) fail before any work.

Speed: greedy and sampled cells decode step by step with finished rows leaving the batch
(irl.generation.decode_compact: a decoder-only model reads each prompt once for its K samples and keeps its keys
and values once for all K (irl.kv_cache), and the KV cache is allocated once for the whole decode), prompts are
batched by length, `BATCH_SIZE` prompts (K samples each) to a batch by default, and the calculator's
vocabulary-wide tables are built once per tokenizer.

Precision: --bf16 runs the model's forward under bfloat16 autocast, its weights kept in float32 (as training's
--bf16); the manifest records it (autocast: bfloat16), so a bf16 sweep and a float32 one of the same checkpoint and
split are different settings and never share a directory. Greedy tokens can differ from float32's where two logits
are within bf16 rounding of each other; the compact decoder's self-check compares it with generate under the same
autocast, at the bfloat16 tolerance (irl.generation.CHECK_TOLERANCE).

Reproducibility: the prompts, ordered by length, are cut into fixed batches of `batch_size` prompts, and each
batch is decoded with torch seeded from (seed, decoding, batch index). Processes share out whole batches, so a
prompt's samples do not depend on the number of processes (nor on which cells were done before). Tables keep
the split's order.
"""

import glob
import json
import math
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import torch
from accelerate import PartialState
from accelerate.utils import gather_object
from tqdm.auto import tqdm
from transformers import AutoConfig, LogitsProcessorList

from analysis import cli
from analysis.cli import EVERY, SweepError, check_asked, checkpoint_steps  # noqa: F401 (the sweep's API)
from analysis import metrics as M
from analysis import schema as S
from analysis.calculator import CalculatorLogitsProcessor
from analysis.pareto import pareto_by
from analysis.results import manifest_changes
from analysis.scoring import BF16, autocast
from analysis.stats import mean_se
from common.io import FileError, atomic_write_text, check_checkpoint_weights, read_json, write_parquet
from irl import config as irl_config
from irl import runs
from irl.data import DataError, held_out_split, load_splits
from irl.generation import Decoding, batch_seed, decode, left_padded
from irl.memory import dry_run_decoding
from irl.model import ModelError, context_length, load_model, load_tokenizer
from irl.runs import read_config

TEMPERATURES, BEAMS, BATCH_SIZE = cli.TEMPERATURES, cli.BEAMS, cli.SWEEP_BATCH_SIZE
TOP_P, MIN_P = cli.TOP_P, cli.MIN_P


def decoding_grid(temperatures=TEMPERATURES, beams=BEAMS, top_p=TOP_P, min_p=MIN_P) -> list[Decoding]:
    """Greedy (if temperature 0 or width 1 is asked for), sampling at each (temperature > 0, top_p, min_p), beam
    search at each width > 1, in that order (schema.GRID_ORDER). Greedy and beam search take no top-p or min-p."""
    bad = [t for t in temperatures if not (math.isfinite(t) and t >= 0)]
    if bad:
        raise SweepError(f"--temperatures {bad}: a temperature is a finite number >= 0 (0 is greedy)")
    bad = [p for p in top_p if not (0 < p <= 1)]  # NaN fails both
    if bad or not top_p:
        raise SweepError(f"--top_p {bad or list(top_p)}: a nucleus is a number in (0, 1] (1 keeps every token)")
    bad = [p for p in min_p if not (0 <= p < 1)]
    if bad or not min_p:
        raise SweepError(f"--min_p {bad or list(min_p)}: min-p is a number in [0, 1) (0 keeps every token)")
    bad = [w for w in beams if isinstance(w, bool) or not isinstance(w, (int, np.integer)) or w < 1]
    if bad:
        raise SweepError(f"--beams {bad}: a beam width is a whole number >= 1 (1 is greedy)")
    grid = [Decoding("greedy")] if 0 in temperatures or 1 in beams else []
    grid += [
        Decoding("sample", temperature=float(t), top_p=float(p), min_p=float(m))
        for t in sorted(set(temperatures)) if t > 0
        for p in sorted(set(top_p), reverse=True)
        for m in sorted(set(min_p))
    ]
    grid += [Decoding("beam", beams=int(w)) for w in sorted(set(beams)) if w > 1]
    if not grid:
        raise SweepError("empty decoding grid: give a temperature >= 0 or a beam width >= 1")
    return grid


@dataclass(frozen=True)
class Settings:
    """What every cell of one sweep directory is made with; stored as manifest.json."""

    samples: int  # K
    limit: int | None  # first `limit` prompts of the split (None: all)
    max_new_tokens: int
    max_prompt_tokens: int | None  # a longer prompt keeps its last tokens (decoder-only models; None: no limit)
    seed: int
    batch_size: int  # prompts per generate call; part of the sampling seed, so it changes sampled rows
    calculator: bool
    metrics: tuple[str, ...]
    # the forward's autocast dtype (--bf16: "bfloat16"), None: the weights' own (float32). None is also what a
    # manifest written before this field reads as, so those sweeps stay float32 sweeps; a bf16 sweep is another
    # setting, refused in a float32 sweep's directory and the other way round
    autocast: str | None = None


# ---------------------------------------------------------------------------------------------------------------
# Decoding one batch of prompts


def _texts(tokenizer, ids: list[list[int]]) -> list[str]:
    """The text of generated ids, EOS and other special tokens left out (for metrics and display only)."""
    return tokenizer.batch_decode(ids, skip_special_tokens=True)


def generate_batch(model, tokenizer, prompts: list[str], decoding: Decoding, k: int, max_new_tokens: int, seed: int,
                   calculator: CalculatorLogitsProcessor | None, max_prompt_tokens: int | None = None,
                   check: bool = True) -> dict[str, list]:  # fmt: skip
    """Decode a batch of prompts: the token record of every sample (schema: prompt_ids, completion_ids, ended,
    n_tokens, entropy, and the completion's text), each a list of len(prompts) * decoding.samples_per_prompt(k)
    values, prompt-major (row i * n + j: sample j of prompt i). With a `calculator`, the batch is decoded a second
    time with it, from the same seed: completion_calc_ids, ended_calc, calc_forced and completion_calc. `check`: the
    compact decoder's self-check (irl.generation.decode)."""
    batch = left_padded(tokenizer, prompts, model.device, max_prompt_tokens)
    ids = dict(eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    out = decode(model, batch, decoding, k, max_new_tokens=max_new_tokens, seed=seed, entropy=True, check=check, **ids)
    columns = {
        S.PROMPT_IDS: out.prompt_ids,
        S.COMPLETION_IDS: out.completion_ids,
        S.ENDED: out.ended,
        S.COMPLETION: _texts(tokenizer, out.completion_ids),
        S.N_TOKENS: [len(c) for c in out.completion_ids],
        S.ENTROPY: out.entropy,
        S.DECODE_PATH: [out.path] * len(out.completion_ids),
    }
    if calculator is not None:
        # the column where generation starts in the ids the processor sees: after the left-padded prompt, or after
        # the decoder start token of an encoder-decoder model
        calculator.prompt_length = 1 if model.config.is_encoder_decoder else batch["input_ids"].shape[1]
        calc = decode(model, batch, decoding, k, max_new_tokens=max_new_tokens, seed=seed, check=check,
                      logits_processor=LogitsProcessorList([calculator]), **ids)  # fmt: skip
        columns[S.COMPLETION_CALC_IDS] = calc.completion_ids
        columns[S.ENDED_CALC] = calc.ended
        columns[S.CALC_FORCED] = [calculator.forced_positions(c) for c in calc.completion_ids]
        columns[S.COMPLETION_CALC] = _texts(tokenizer, calc.completion_ids)
    return columns


# ---------------------------------------------------------------------------------------------------------------
# Runs, checkpoints and the files of a sweep


def resolve_runs(patterns) -> list[Path]:
    """Run directories named by `patterns`: run directories, directories of runs, or globs of either."""
    found = []
    for pattern in [patterns] if isinstance(patterns, (str, Path)) else patterns:
        paths = sorted(glob.glob(str(pattern))) or [str(pattern)]
        for path in map(Path, paths):
            matched = [path] if (path / runs.CONFIG).is_file() else runs.find_runs(path) if path.is_dir() else []
            if not matched:
                raise SweepError(f"--run {pattern}: {path} is not a run directory (no {runs.CONFIG}) and holds none")
            found += [p for p in matched if p not in found]
    return found


def select_checkpoints(run_dir: Path, which) -> list[Path]:
    """Checkpoints of a run: "last", "all", "every:N" (every N-th saved checkpoint from the first, and the last
    always, so the front at the end of training is there), or a list of steps (ints, or a string "100,300")."""
    done = runs.checkpoints(run_dir)
    if not done:
        raise SweepError(f"{run_dir}: no complete checkpoint")
    steps = checkpoint_steps(which)
    if steps == "last":
        return done[-1:]
    if steps == "all":
        return done
    if isinstance(steps, tuple):
        picked = done[:: steps[1]]
        return picked if picked[-1] == done[-1] else [*picked, done[-1]]
    by_step = {runs.step_of(c): c for c in done}
    missing = [s for s in steps if s not in by_step]
    if missing:
        raise SweepError(f"{run_dir}: no checkpoint at step(s) {missing}; there are {sorted(by_step)}")
    return [by_step[s] for s in steps]


def default_max_new_tokens(tokenizer, examples: list[dict], context: int | None) -> int:
    """1.5 x the longest reference completion (tokens + EOS), at most half the model's context
    (irl.model.context_length; None: no cap, encoder-decoder models)."""
    longest = max(len(tokenizer(ex["completion"], add_special_tokens=False)["input_ids"]) + 1 for ex in examples)
    budget = math.ceil(1.5 * longest)
    return budget if context is None else max(1, min(budget, context // 2))


def max_prompt_tokens(max_new_tokens: int, context: int | None) -> int | None:
    """How many tokens of a prompt a decoder-only model reads so that the completion fits its context: a longer
    prompt keeps its last ones (irl.generation.left_padded). None for encoder-decoder models (no limit)."""
    if context is None:
        return None
    if max_new_tokens >= context:
        raise SweepError(f"max_new_tokens={max_new_tokens}: the model's context is {context} tokens, prompt included")
    return context - max_new_tokens


def cell_path(out_dir: Path, decoding: Decoding) -> Path:
    return out_dir / runs.cell_file(decoding.label)


def check_manifest(out_dir: Path, settings: Settings) -> None:
    """Refuse a sweep directory whose cells were made with other settings."""
    diffs = manifest_changes(out_dir, asdict(settings))
    if diffs:
        raise SweepError(f"{out_dir} holds a sweep made with other settings ({diffs}); ask for the same settings "
                         f"or delete that directory")


BASELINE_TASKS = ("summarize", "translate")  # built-in text tasks with trivial baselines (analysis/baselines.py)


def baseline_table(task: str, splits: dict, split: str, n: int) -> pd.DataFrame:
    """The trivial baselines of a built-in text task on the first `n` prompts of `split` (the prompts a sweep
    decodes), scored by the sweep's metric code: one row per baseline with baseline, setting (JSON), the task's
    metrics' `<m>_mean` / `<m>_se`, and n. Their settings are chosen on train and validation."""
    from analysis.baselines import baselines

    examples = splits[split][:n]
    references = [ex["completion"] for ex in examples]
    metrics = S.TASK_METRICS[task]
    rows = []
    for b in baselines(task, splits, split):
        scores = M.quality_scores(metrics, b.predictions[:n], references)
        row = {S.BASELINE: b.name, S.BASELINE_SETTING: json.dumps(b.setting, ensure_ascii=False), S.N: n}
        for m in metrics:
            row[S.mean_col(m)], row[S.se_col(m)] = mean_se(scores[m])
        rows.append(row)
    return pd.DataFrame(rows)


def cell_rows(path: Path, n_rows: int) -> str | None:
    """Why the samples file of a cell cannot be kept (missing; damaged, as a file cut short by a kill or a full
    disk is: its parquet footer is gone; or not the `n_rows` rows the manifest's settings give), None when whole."""
    if not path.is_file():
        return "missing"
    try:
        found = pq.read_metadata(path).num_rows
    except (pa.ArrowException, OSError) as e:
        return f"damaged ({e})"
    return None if found == n_rows else f"{found} rows, not {n_rows}"


def rebuild_aggregate(out_dir: Path, force: bool = False, quality_threshold: float | None = None) -> pd.DataFrame:
    """aggregate.parquet of a sweep directory, recomputed when the samples files there are not all in it, when it
    is damaged, when it was made before top_p and min_p were columns or with another `quality_threshold` (the
    effective diversity's; None: none), or when `force` (a cell was written again)."""
    cells = sorted(out_dir.glob(runs.cell_file("*")))
    path = out_dir / runs.AGGREGATE
    labels = {runs.cell_label(p) for p in cells}
    if path.is_file() and not force:
        try:
            table = pd.read_parquet(path)
        except (pa.ArrowException, OSError):
            table = None  # damaged: recomputed from the cells below
        if table is not None and set(table[S.DECODING]) == labels and S.TOP_P in table:
            made_with = table[S.QUALITY_THRESHOLD].iloc[0] if S.QUALITY_THRESHOLD in table else None
            if made_with == quality_threshold:
                return table
    manifest = read_json(out_dir / runs.MANIFEST)
    metrics = [*manifest["metrics"], *([S.EXACT_MATCH_CALC] if manifest["calculator"] else [])]
    table = pd.concat([M.aggregate(pd.read_parquet(p), metrics, quality_threshold) for p in cells],
                      ignore_index=True)  # fmt: skip
    table = table.sort_values(list(S.GRID_ORDER), key=S.grid_sort_key, kind="stable", ignore_index=True)
    write_parquet(path, table)
    return table


# ---------------------------------------------------------------------------------------------------------------
# The sweep


@dataclass
class _Job:
    """One checkpoint's cells still to decode, and this process's share of their batches."""

    run_dir: Path
    config: dict
    checkpoint: Path
    tokenizer: object
    out_dir: Path
    examples: list[dict]  # sorted by prompt length, each with "_order", its place in the split
    settings: Settings
    todo: list[Decoding]
    batches: list[int]  # indices of batches of settings.batch_size prompts
    calculator: CalculatorLogitsProcessor | None  # built once per tokenizer when settings.calculator
    baselines: pd.DataFrame | None  # a built-in text task's trivial baselines on the same prompts


def _plan(state: PartialState, run_dirs, checkpoints, grid: list[Decoding], split: str, asked: dict) -> list[_Job]:
    """One job per checkpoint of each run: the Settings fields `asked` with their defaults resolved (checked
    against the manifest there), the cells still missing, and this process's batches."""
    jobs = []
    for run_dir in resolve_runs(run_dirs):
        config = read_config(run_dir)
        splits = load_splits(irl_config.TrainConfig(**config))
        this_split = split or held_out_split(splits)
        if this_split not in splits:
            raise SweepError(
                f"{run_dir}: data {config['data']!r} has no split {this_split!r} (it has {sorted(splits)})"
            )
        examples = splits[this_split][: asked["limit"]]
        task = S.task_of(config)
        trivial = baseline_table(task, splits, this_split, len(examples)) if task in BASELINE_TASKS else None
        is_math = config["data"] == "math"
        if asked["calculator"] and not is_math:
            raise SweepError(f"{run_dir}: the calculator is for the math task, not data {config['data']!r}")
        for checkpoint in select_checkpoints(run_dir, checkpoints):
            tokenizer = load_tokenizer(str(checkpoint))
            context = context_length(AutoConfig.from_pretrained(checkpoint))
            max_new = asked["max_new_tokens"] or default_max_new_tokens(tokenizer, examples, context)
            resolved = dict(
                max_new_tokens=max_new,
                max_prompt_tokens=max_prompt_tokens(max_new, context),
                calculator=is_math if asked["calculator"] is None else asked["calculator"],
                metrics=tuple(asked["metrics"] or S.TASK_METRICS[S.task_of(config)]),
            )
            settings = Settings(**{**asked, **resolved})
            out_dir = runs.sweep_dir(checkpoint, this_split)
            check_manifest(out_dir, settings)
            check_checkpoint_weights(checkpoint)  # a cut-short weights file fails here, before any decoding
            todo = []
            for d in grid:
                why = cell_rows(cell_path(out_dir, d), len(examples) * d.samples_per_prompt(settings.samples))
                if why not in (None, "missing") and state.is_main_process:
                    print(f"{cell_path(out_dir, d)}: {why}; decoding it again", flush=True)
                todo += [d] if why else []
            n_batches = math.ceil(len(examples) / settings.batch_size)
            # batches of prompts of similar length (less padding); the cell tables keep the split's order
            lengths = [len(ids) for ids in tokenizer([ex["prompt"] for ex in examples])["input_ids"]]
            cut = sum(n > settings.max_prompt_tokens for n in lengths) if settings.max_prompt_tokens else 0
            if cut and state.is_main_process:
                print(f"{checkpoint}: {cut} of {len(examples)} prompts keep their last {settings.max_prompt_tokens} "
                      f"tokens (context {context}, max_new_tokens {settings.max_new_tokens})", flush=True)
            by_length = [dict(ex, _order=i) for i, ex in sorted(enumerate(examples), key=lambda e: lengths[e[0]])]
            calculator = CalculatorLogitsProcessor(tokenizer, prompt_length=0) if settings.calculator else None
            with state.split_between_processes(list(range(n_batches))) as batches:
                jobs.append(
                    _Job(run_dir, config, checkpoint, tokenizer, out_dir, by_length, settings, todo, batches,
                         calculator, trivial)  # fmt: skip
                )
    return jobs


def _decode_cell(model, job: _Job, decoding: Decoding, progress, check: bool = True) -> list:
    """(batch index, columns) for each of this process's batches of one cell, per-sample metrics included."""
    s, out = job.settings, []
    for b in job.batches:
        chunk = job.examples[b * s.batch_size : (b + 1) * s.batch_size]
        with autocast(s.autocast, model.device.type):
            columns = generate_batch(
                model, job.tokenizer, [ex["prompt"] for ex in chunk], decoding, s.samples, s.max_new_tokens,
                batch_seed(s.seed, decoding.label, b), job.calculator, s.max_prompt_tokens, check,
            )  # fmt: skip
        n = decoding.samples_per_prompt(s.samples)
        columns[S.PROMPT_ID] = [ex["id"] for ex in chunk for _ in range(n)]
        columns["_order"] = [ex["_order"] for ex in chunk for _ in range(n)]
        columns[S.SAMPLE] = list(range(n)) * len(chunk)
        columns[S.PROMPT] = [ex["prompt"] for ex in chunk for _ in range(n)]
        columns[S.REFERENCE] = [ex["completion"] for ex in chunk for _ in range(n)]
        columns |= M.quality_scores(s.metrics, columns[S.COMPLETION], columns[S.REFERENCE])
        if s.calculator:
            columns[S.EXACT_MATCH_CALC] = M.quality_scores([S.EXACT_MATCH], columns[S.COMPLETION_CALC],
                                                           columns[S.REFERENCE])[S.EXACT_MATCH]  # fmt: skip
        out.append((b, columns))
        progress.update()
    return out


def _cell_table(job: _Job, decoding: Decoding, parts: list) -> pd.DataFrame:
    """The samples table of one cell from the (batch index, columns) parts of every process."""
    table = pd.concat([pd.DataFrame(columns) for _, columns in sorted(parts, key=lambda p: p[0])], ignore_index=True)
    table = table.sort_values(["_order", S.SAMPLE], kind="stable", ignore_index=True).drop(columns="_order")
    keys = {
        S.RUN: str(job.run_dir),
        S.METHOD: runs.method_label(job.config),
        S.SEED: job.config["seed"],
        S.STEP: runs.step_of(job.checkpoint),
        S.DECODING: decoding.label,
        S.KIND: decoding.kind,
        S.TEMPERATURE: decoding.temperature,
        S.TOP_P: decoding.top_p,
        S.MIN_P: decoding.min_p,
        S.BEAMS: decoding.beams,
    }
    extra = [c for c in table.columns if c not in S.SAMPLE_COLUMNS]
    return table.assign(**keys)[list(S.SAMPLE_COLUMNS) + extra]


def sweep(
    run_dirs,
    checkpoints="last",
    temperatures=TEMPERATURES,
    beams=BEAMS,
    samples: int = 5,
    split: str | None = None,
    limit: int | None = None,
    max_new_tokens: int | None = None,
    metrics=None,
    calculator: bool | None = None,
    seed: int = 0,
    batch_size: int = BATCH_SIZE,
    dry_run: bool = False,
    top_p=TOP_P,
    min_p=MIN_P,
    quality_threshold: float | None = None,
    bf16: bool = False,
    check_fast_paths: bool = True,
) -> pd.DataFrame:
    """Run the decoding sweep (see the module docstring) and return the aggregate rows of the asked-for cells.

    run_dirs: a run directory, a directory of runs, a glob, or a list of these. checkpoints: "last", "all" or
    steps (or "every:N"). top_p, min_p: the sampling filters, each sampled cell one (temperature, top_p, min_p).
    quality_threshold: effective diversity among the samples whose main quality metric reaches it (the aggregate's
    effective columns; None: not computed); it changes no sample, so the aggregate is rebuilt when it changes.
    split: default each run's held-out split (irl.data.held_out_split). metrics: per-sample quality
    metrics, names of analysis.metrics.metric_module (default: the task's, schema.TASK_METRICS). calculator: decode the
    math task a second time with the calculator (default: on for math). max_new_tokens: default
    `default_max_new_tokens`; longer prompts keep their last `max_prompt_tokens` tokens. Under `accelerate launch`
    each process decodes its share of the batches and the main process writes; every process returns the same
    table. bf16: the model's forward under bfloat16 autocast (analysis.scoring.autocast), recorded in the manifest.
    check_fast_paths: the compact decoder's self-check (irl.generation.check_compact); the path that ran is in each
    samples table (decode_path).
    """
    try:
        for name in metrics or ():
            M.metric_module(name)  # an unknown name fails here, before any decoding
    except M.MetricError as e:
        raise SweepError(str(e)) from None
    check_asked(checkpoints, samples, limit, max_new_tokens, batch_size)
    if quality_threshold is not None and not math.isfinite(quality_threshold):
        raise SweepError(f"--quality_threshold {quality_threshold}: a finite number on the main quality metric's "
                         f"scale (exact match 1, ROUGE in [0, 1], BLEU and chrF in [0, 100])")  # fmt: skip
    grid = decoding_grid(temperatures, beams, top_p, min_p)
    state = _process_state()
    asked = dict(samples=samples, limit=limit, max_new_tokens=max_new_tokens, seed=seed, batch_size=batch_size,
                 calculator=calculator, metrics=metrics, autocast=BF16 if bf16 else None)  # fmt: skip
    jobs = _plan(state, run_dirs, checkpoints, grid, split, asked)
    if dry_run:  # irl/memory.py: the longest prompts of the split, a full batch of them
        return pd.DataFrame([dry_run_decoding(
            job.checkpoint, min(len(job.examples), job.settings.batch_size),
            min(filter(None, (len(job.tokenizer(job.examples[-1]["prompt"])["input_ids"]),
                              job.settings.max_prompt_tokens))),
            job.settings.max_new_tokens, grid, job.settings.samples, autocast=bf16) for job in jobs])  # fmt: skip
    state.wait_for_everyone()  # every process has listed the missing cells before the main one writes any
    total = sum(len(job.todo) * len(job.batches) for job in jobs)
    progress = tqdm(total=total, desc="sweep", unit="batch", disable=not state.is_main_process)
    for job in jobs:
        if job.todo:
            model = load_model(str(job.checkpoint)).to(state.device).eval()
            if state.is_main_process and not (job.out_dir / runs.MANIFEST).is_file():
                atomic_write_text(job.out_dir / runs.MANIFEST, json.dumps(asdict(job.settings), indent=1) + "\n")
        for decoding in job.todo:
            progress.set_postfix_str(f"{job.run_dir.name} step {runs.step_of(job.checkpoint)} {decoding.label}")
            parts = gather_object(_decode_cell(model, job, decoding, progress, check_fast_paths))
            if state.is_main_process:
                write_parquet(cell_path(job.out_dir, decoding), _cell_table(job, decoding, parts))
        if state.is_main_process:
            rebuild_aggregate(job.out_dir, force=bool(job.todo), quality_threshold=quality_threshold)
            if job.baselines is not None and not (job.out_dir / runs.BASELINES).is_file():
                write_parquet(job.out_dir / runs.BASELINES, job.baselines)
    progress.close()
    state.wait_for_everyone()
    labels = {d.label for d in grid}
    # the run as it is named now: a run directory copied or moved keeps the path it was swept at in its tables
    tables = [pd.read_parquet(job.out_dir / runs.AGGREGATE).assign(**{S.RUN: str(job.run_dir)}) for job in jobs]
    table = pd.concat(tables, ignore_index=True)
    return table[table[S.DECODING].isin(labels)].reset_index(drop=True)


def format_table(aggregate_table: pd.DataFrame, quality: str | None = None) -> str:
    """The quality/diversity table, one line per (run, step, decoding), quality as "mean ± SE".

    Column "front": "*" for the points on their method's Pareto front of (`quality`, Self-BLEU) (default
    quality: the first metric of schema.HIGHER_IS_BETTER present, exact_match on math), "" for the others,
    "-" for points without a Self-BLEU (greedy) or quality value, which take no part.
    """
    agg = S.with_grid_columns(aggregate_table.reset_index(drop=True))
    metrics = [m for m in S.HIGHER_IS_BETTER if S.mean_col(m) in agg and m not in S.DIVERSITY_COLUMNS]
    quality = quality or S.mean_col(metrics[0])
    placed = agg.dropna(subset=[quality, S.SELF_BLEU])
    on_front = pareto_by(placed, quality)[S.ON_FRONT] if len(placed) else pd.Series(dtype=bool)
    front = pd.Series("-", index=agg.index)
    front[on_front.index] = np.where(on_front, "*", "")
    table = pd.DataFrame({S.RUN: agg[S.RUN], S.STEP: agg[S.STEP], S.DECODING: agg[S.DECODING]})
    for m in metrics:
        table[m] = [f"{mean:.3f} ± {se:.3f}" for mean, se in zip(agg[S.mean_col(m)], agg[S.se_col(m)])]
    table[S.SELF_BLEU] = agg[S.SELF_BLEU].map("{:.1f}".format)
    for col in (S.DISTINCT_1, S.DISTINCT_2, S.ENTROPY):
        table[col] = agg[col].map("{:.3f}".format)
    table[S.N] = agg[S.N]
    table["front"] = front
    order = agg.sort_values([S.RUN, S.STEP, *S.GRID_ORDER], key=S.grid_sort_key, kind="stable").index
    return table.loc[order].to_string(index=False)


def format_baselines(baselines: pd.DataFrame) -> str:
    """A text task's trivial baselines (`baseline_table`), quality as "mean ± SE", one line each."""
    table = pd.DataFrame({S.BASELINE: baselines[S.BASELINE], S.BASELINE_SETTING: baselines[S.BASELINE_SETTING]})
    for m in [m for m in S.HIGHER_IS_BETTER if S.mean_col(m) in baselines]:
        table[m] = [f"{mean:.3f} ± {se:.3f}" for mean, se in zip(baselines[S.mean_col(m)], baselines[S.se_col(m)])]
    table[S.N] = baselines[S.N]
    return table.to_string(index=False)


def _process_state() -> PartialState:
    """This process's place among those `accelerate launch` started; without CUDA they are CPU processes, which
    PartialState only joins into one group when told (otherwise each would run the whole sweep alone)."""
    return PartialState(cpu=not torch.cuda.is_available())


def main(argv=None) -> None:
    args = cli.sweep_parser().parse_args(argv)
    try:
        table = sweep(
            args.run, args.checkpoints, args.temperatures, args.beams, args.samples, args.split, args.limit,
            args.max_new_tokens, args.metrics, args.calculator, args.seed, args.batch_size, args.dry_run,
            top_p=args.top_p, min_p=args.min_p, quality_threshold=args.quality_threshold, bf16=args.bf16,
            check_fast_paths=args.check_fast_paths,
        )  # fmt: skip
    except (SweepError, ModelError, DataError, irl_config.ConfigError, FileError) as e:
        sys.exit(f"error: {e}")
    if args.dry_run:  # one JSON object last: the largest prediction over the checkpoints
        worst = table.loc[table["predicted_peak_bytes"].idxmax()].to_dict()
        print(json.dumps({**worst, "fits": bool(table["fits"].all())}, default=int))
        return
    state = _process_state()
    if state.is_main_process:
        print(f"{len(table)} cells, decoded by {state.num_processes} process(es)")
        print(format_table(table))
        checkpoints = {Path(run) / f"{runs.CHECKPOINT_PREFIX}{step}" for run, step in zip(table[S.RUN], table[S.STEP])}
        pattern = f"{args.split or '*'}/{runs.BASELINES}"
        for path in sorted(p for c in checkpoints for p in (c / runs.SWEEP).glob(pattern)):
            print(f"\nTrivial baselines on the same prompts ({path.parent}):")
            print(format_baselines(pd.read_parquet(path)))
