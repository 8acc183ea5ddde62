"""Decoding sweep (METHOD.md §5): sample every checkpoint under a grid of decoding settings, score quality and
diversity, and print the quality/diversity table with each method's Pareto front.

    python -m analysis sweep --run runs/demo/mle --run runs/demo/iqlearn --limit 100
    python -m analysis sweep --run 'runs/demo/*' --checkpoints all --temperatures 0,0.5,1 --beams 4 --samples 5
    accelerate launch --num_processes 2 -m analysis sweep --run runs/demo/mle     # prompts split between processes
    ACCELERATE_USE_CPU=1 accelerate launch --multi_gpu --num_processes 2 -m analysis sweep ...   # two CPU processes

Grid: greedy once (temperature 0 or beam width 1), ancestral sampling at each temperature > 0 (top_k=0,
top_p=1: the policy's own distribution, tempered) and beam search at each width > 1. K samples per prompt:
K independent samples, the top min(K, width) beams, and ONE greedy completion (K greedy copies would be
identical, so greedy has no Self-BLEU or distinct-n: those columns are NaN for it). Self-BLEU and distinct-n
depend on the number of samples per prompt, so compare cells with the same number (beam=2 has 2). On the math task every
cell is decoded a second time with the calculator (analysis/calculator.py), with the same seed.

Written next to each checkpoint (irl.runs.sweep_dir(checkpoint, split)):
    samples-<decoding>.parquet   one row per sample: schema.SAMPLE_COLUMNS, completion_calc, per-sample metrics
    aggregate.parquet            one row per decoding, rebuilt from the samples files (see `aggregate`)
    manifest.json                the settings (`Settings`) every cell there was made with
Each file is written atomically. A rerun skips the cells already written, so an interrupted sweep finishes
where it stopped; asking for other settings in the same directory is an error.

Reproducibility: the prompts are cut into fixed batches of `batch_size` prompts, and each batch is decoded with
torch seeded from (seed, decoding, batch index). Processes share out whole batches, so a prompt's samples do
not depend on the number of processes (nor on which cells were done before).
"""

import argparse
import glob
import hashlib
import json
import math
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from accelerate import PartialState
from accelerate.utils import gather_object
from tqdm.auto import tqdm
from transformers import AutoConfig, LogitsProcessorList

from analysis import metrics as M
from analysis import schema as S
from analysis.calculator import CalculatorLogitsProcessor
from analysis.generation import left_padded
from analysis.pareto import pareto_by
from irl import config as irl_config
from irl import runs
from irl.data import DataError, load_splits
from irl.io import atomic_write_text, write_parquet
from irl.model import ModelError, load_model, load_tokenizer

TEMPERATURES = (0.0, 0.25, 0.5, 0.75, 1.0)
BEAMS = (1, 2, 4, 8)
QUALITY_METRICS = (S.EXACT_MATCH, *S.ROUGE_METRICS, "bleu", "chrf")  # what --metrics accepts
AGGREGATE = "aggregate.parquet"
MANIFEST = "manifest.json"


class SweepError(ValueError):
    """A sweep cannot run as asked; the message says why."""


@dataclass(frozen=True)
class Decoding:
    """One decoding setting of the grid."""

    kind: str  # "greedy" | "sample" | "beam"
    temperature: float = 0.0
    beams: int = 1

    @property
    def label(self) -> str:
        return {"greedy": "greedy", "sample": f"t={self.temperature:g}", "beam": f"beam={self.beams}"}[self.kind]

    def samples_per_prompt(self, k: int) -> int:
        return {"greedy": 1, "sample": k, "beam": min(k, self.beams)}[self.kind]

    def generate_kwargs(self, k: int) -> dict:
        n = self.samples_per_prompt(k)
        if self.kind == "sample":
            return dict(do_sample=True, temperature=self.temperature, top_k=0, top_p=1.0, num_return_sequences=n)
        return dict(do_sample=False, num_beams=self.beams, num_return_sequences=n)


def decoding_grid(temperatures=TEMPERATURES, beams=BEAMS) -> list[Decoding]:
    """Greedy (if temperature 0 or width 1 is asked for), sampling at each temperature > 0, beam search at
    each width > 1, in that order."""
    grid = [Decoding("greedy")] if 0 in temperatures or 1 in beams else []
    grid += [Decoding("sample", temperature=float(t)) for t in sorted(set(temperatures)) if t > 0]
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
    seed: int
    batch_size: int  # prompts per generate call; part of the sampling seed, so it changes sampled rows
    calculator: bool
    metrics: tuple[str, ...]


# ---------------------------------------------------------------------------------------------------------------
# Decoding one batch of prompts


def completion_lengths(generated: torch.Tensor, eos_token_id: int) -> torch.Tensor:
    """Generated tokens per row of `generated` (N, G), up to and including the first EOS (G when none)."""
    is_eos = generated == eos_token_id
    return torch.where(is_eos.any(1), is_eos.int().argmax(1) + 1, generated.shape[1])


def _entropy(logits: torch.Tensor) -> torch.Tensor:
    """Entropy of softmax over the last dimension, in nats, computed in float32."""
    logp = torch.log_softmax(logits.float(), dim=-1)
    return -(logp.exp() * logp).sum(-1)


def completion_entropy(step_logits, lengths: torch.Tensor, beam_indices: torch.Tensor | None = None) -> torch.Tensor:
    """Mean entropy (nats) of the policy softmax(logits) over each returned sequence's generated tokens, EOS
    included: one value per sequence, (N,).

    `step_logits` is `generate(..., output_logits=True).logits`: at each step the raw logits (before
    temperature or any processor) of every running row, (R, V). Row n is sequence n, except under beam search,
    where rows are hypotheses and `beam_indices` (N, G) names the row each returned beam was in at each step.
    """
    entropy = torch.stack([_entropy(logits) for logits in step_logits], dim=1)  # (R, steps)
    width = int(lengths.max())
    steps = torch.arange(width, device=lengths.device)[None, :]
    if beam_indices is None:
        rows = torch.arange(len(lengths), device=lengths.device)[:, None]
    else:
        rows = beam_indices[:, :width].clamp(min=0)  # -1 marks the steps after a beam ended
    per_token = entropy[rows, steps]  # (N, width)
    return (per_token * (steps < lengths[:, None])).sum(1) / lengths


def _texts(tokenizer, generated: torch.Tensor, lengths: torch.Tensor) -> list[str]:
    return [tokenizer.decode(ids[:n], skip_special_tokens=True) for ids, n in zip(generated.tolist(), lengths.tolist())]


@torch.no_grad()
def generate_batch(
    model, tokenizer, prompts: list[str], decoding: Decoding, k: int, max_new_tokens: int, seed: int, calculator: bool
) -> dict[str, list]:
    """Decode a batch of prompts: {completion, n_tokens, entropy[, completion_calc]}, each a list of
    len(prompts) * decoding.samples_per_prompt(k) values, prompt-major (row i * n + j: sample j of prompt i).

    torch is seeded with `seed` before each `generate`, so the calculator pass draws the same random numbers
    as the plain one (its completions differ from the first forced token on).
    """
    batch = left_padded(tokenizer, prompts, model.device)
    width = batch["input_ids"].shape[1]

    def decode(**extra):
        torch.manual_seed(seed)
        out = model.generate(
            **batch,
            **decoding.generate_kwargs(k),
            max_new_tokens=max_new_tokens,
            pad_token_id=tokenizer.pad_token_id,
            eos_token_id=tokenizer.eos_token_id,
            return_dict_in_generate=True,
            **extra,
        )
        generated = out.sequences[:, width:]  # (len(prompts) * n, G)
        return out, generated, completion_lengths(generated, tokenizer.eos_token_id)

    out, generated, lengths = decode(output_logits=True)
    beam_indices = out.beam_indices if decoding.kind == "beam" else None
    columns = {
        S.COMPLETION: _texts(tokenizer, generated, lengths),
        S.N_TOKENS: lengths.tolist(),
        S.ENTROPY: completion_entropy(out.logits, lengths, beam_indices).tolist(),
    }
    if calculator:
        processor = CalculatorLogitsProcessor(tokenizer, prompt_length=width)
        _, calc, calc_lengths = decode(logits_processor=LogitsProcessorList([processor]))
        columns[S.COMPLETION_CALC] = _texts(tokenizer, calc, calc_lengths)
    return columns


# ---------------------------------------------------------------------------------------------------------------
# Metrics


def task_metrics(config: dict) -> tuple[str, ...]:
    """The per-sample quality metrics of a run's task: exact match on the built-in math task, ROUGE otherwise."""
    return S.TASK_METRICS["math" if config["data"] == "math" else "text"]


def quality_scores(metrics, predictions: list[str], references: list[str]) -> dict[str, list[float]]:
    """{metric: per-sample scores} for each name in `metrics` (one of QUALITY_METRICS)."""
    scores = {}
    if set(metrics) & set(S.ROUGE_METRICS):
        scores |= M.rouge_scores(predictions, references)
    if S.EXACT_MATCH in metrics:
        scores[S.EXACT_MATCH] = M.exact_match_scores(predictions, references)
    if "bleu" in metrics:
        scores["bleu"] = M.bleu_scores(predictions, references)[1]
    if "chrf" in metrics:
        scores["chrf"] = M.chrf_scores(predictions, references)[1]
    return {m: scores[m] for m in metrics}


def quality_columns(table: pd.DataFrame) -> list[str]:
    """The per-sample quality metric columns of a samples table, in table order."""
    return [c for c in table.columns if c in S.HIGHER_IS_BETTER and c not in S.DIVERSITY_COLUMNS]


def aggregate(samples: pd.DataFrame) -> pd.DataFrame:
    """One row per (run, step, decoding) of a samples table, keyed by schema.AGG_KEYS:

    - `<m>_mean`, `<m>_se` for each quality metric m: mean over samples and its standard error
      std(ddof=1) / sqrt(n);
    - Self-BLEU, distinct-1, distinct-2 of each prompt's samples, averaged over prompts (NaN when prompts have
      a single sample, as under greedy);
    - entropy: mean over samples of their mean per-token entropy; n: number of samples.
    """
    rows = []
    for keys, cell in samples.groupby(list(S.AGG_KEYS), sort=False):
        row = dict(zip(S.AGG_KEYS, keys))
        for m in quality_columns(cell):
            row[S.mean_col(m)] = cell[m].mean()
            row[S.se_col(m)] = cell[m].std(ddof=1) / math.sqrt(len(cell))
        groups = [group[S.COMPLETION].tolist() for _, group in cell.groupby(S.PROMPT_ID, sort=False)]
        several = min(len(g) for g in groups) > 1
        row[S.SELF_BLEU] = np.mean([M.self_bleu(g) for g in groups]) if several else np.nan
        row[S.DISTINCT_1] = np.mean([M.distinct_n(g, 1) for g in groups]) if several else np.nan
        row[S.DISTINCT_2] = np.mean([M.distinct_n(g, 2) for g in groups]) if several else np.nan
        row[S.ENTROPY] = cell[S.ENTROPY].mean()
        row[S.N] = len(cell)
        rows.append(row)
    return pd.DataFrame(rows)


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
    """Checkpoints of a run: "last", "all", or a list of steps (ints, or a string "100,300")."""
    done = runs.checkpoints(run_dir)
    if not done:
        raise SweepError(f"{run_dir}: no complete checkpoint")
    if which == "last":
        return done[-1:]
    if which == "all":
        return done
    steps = [int(s) for s in which.split(",")] if isinstance(which, str) else [int(s) for s in which]
    by_step = {runs.step_of(c): c for c in done}
    missing = [s for s in steps if s not in by_step]
    if missing:
        raise SweepError(f"{run_dir}: no checkpoint at step(s) {missing}; there are {sorted(by_step)}")
    return [by_step[s] for s in steps]


def default_max_new_tokens(tokenizer, examples: list[dict], context: int) -> int:
    """1.5 x the longest reference completion (tokens + EOS), capped so the longest prompt plus the
    completion fit in the model's context."""
    longest = max(len(tokenizer(ex["completion"], add_special_tokens=False)["input_ids"]) + 1 for ex in examples)
    longest_prompt = max(len(tokenizer(ex["prompt"])["input_ids"]) for ex in examples)
    return max(1, min(math.ceil(1.5 * longest), context - longest_prompt))


def cell_path(out_dir: Path, decoding: Decoding) -> Path:
    return out_dir / f"samples-{decoding.label}.parquet"


def check_manifest(out_dir: Path, settings: Settings) -> None:
    """Refuse a sweep directory whose cells were made with other settings."""
    path = out_dir / MANIFEST
    if not path.is_file():
        return
    old, new = json.loads(path.read_text()), json.loads(json.dumps(asdict(settings)))
    changed = sorted(k for k in old.keys() | new.keys() if old.get(k) != new.get(k))
    if changed:
        diffs = ", ".join(f"{k}: {old.get(k)!r} there, {new.get(k)!r} now" for k in changed)
        raise SweepError(f"{out_dir} holds a sweep made with other settings ({diffs}); ask for the same settings "
                         f"or delete that directory")


_KIND_ORDER = {"greedy": 0, "sample": 1, "beam": 2}


def _grid_order(column: pd.Series) -> pd.Series:
    """Sort key putting decoding kinds in grid order (greedy, sampling, beam search)."""
    return column.map(_KIND_ORDER) if column.name == S.KIND else column


def rebuild_aggregate(out_dir: Path) -> pd.DataFrame:
    """aggregate.parquet of a sweep directory, recomputed when the samples files there are not all in it."""
    cells = sorted(out_dir.glob("samples-*.parquet"))
    path = out_dir / AGGREGATE
    labels = {p.name[len("samples-") : -len(".parquet")] for p in cells}
    if path.is_file():
        table = pd.read_parquet(path)
        if set(table[S.DECODING]) == labels:
            return table
    table = pd.concat([aggregate(pd.read_parquet(p)) for p in cells], ignore_index=True)
    table = table.sort_values([S.KIND, S.TEMPERATURE, S.BEAMS], key=_grid_order, kind="stable", ignore_index=True)
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
    examples: list[dict]
    settings: Settings
    todo: list[Decoding]
    batches: list[int]  # indices of batches of settings.batch_size prompts


def batch_seed(seed: int, decoding: Decoding, batch: int) -> int:
    """The torch seed of one batch of one decoding: a hash, so nearby (seed, batch) pairs are unrelated."""
    digest = hashlib.sha256(f"{seed}/{decoding.label}/{batch}".encode()).digest()
    return int.from_bytes(digest[:8], "little") % 2**63


def _plan(state: PartialState, run_dirs, checkpoints, grid: list[Decoding], split: str, asked: dict) -> list[_Job]:
    """One job per checkpoint of each run: the Settings fields `asked` with their defaults resolved (checked
    against the manifest there), the cells still missing, and this process's batches."""
    jobs = []
    for run_dir in resolve_runs(run_dirs):
        config = runs.read_config(run_dir)
        splits = load_splits(irl_config.TrainConfig(**config))
        if split not in splits:
            raise SweepError(f"{run_dir}: data {config['data']!r} has no split {split!r} (it has {sorted(splits)})")
        examples = splits[split][: asked["limit"]]
        is_math = config["data"] == "math"
        if asked["calculator"] and not is_math:
            raise SweepError(f"{run_dir}: the calculator is for the math task, not data {config['data']!r}")
        for checkpoint in select_checkpoints(run_dir, checkpoints):
            tokenizer = load_tokenizer(str(checkpoint))
            context = AutoConfig.from_pretrained(checkpoint).max_position_embeddings
            resolved = dict(
                max_new_tokens=asked["max_new_tokens"] or default_max_new_tokens(tokenizer, examples, context),
                calculator=is_math if asked["calculator"] is None else asked["calculator"],
                metrics=tuple(asked["metrics"] or task_metrics(config)),
            )
            settings = Settings(**{**asked, **resolved})
            out_dir = runs.sweep_dir(checkpoint, split)
            check_manifest(out_dir, settings)
            todo = [d for d in grid if not cell_path(out_dir, d).exists()]
            n_batches = math.ceil(len(examples) / settings.batch_size)
            with state.split_between_processes(list(range(n_batches))) as batches:
                jobs.append(_Job(run_dir, config, checkpoint, tokenizer, out_dir, examples, settings, todo, batches))
    return jobs


def _decode_cell(model, job: _Job, decoding: Decoding, progress) -> list:
    """(batch index, columns) for each of this process's batches of one cell, per-sample metrics included."""
    s, out = job.settings, []
    for b in job.batches:
        chunk = job.examples[b * s.batch_size : (b + 1) * s.batch_size]
        columns = generate_batch(
            model, job.tokenizer, [ex["prompt"] for ex in chunk], decoding, s.samples, s.max_new_tokens,
            batch_seed(s.seed, decoding, b), s.calculator,
        )  # fmt: skip
        n = decoding.samples_per_prompt(s.samples)
        columns[S.PROMPT_ID] = [ex["id"] for ex in chunk for _ in range(n)]
        columns[S.SAMPLE] = list(range(n)) * len(chunk)
        columns[S.PROMPT] = [ex["prompt"] for ex in chunk for _ in range(n)]
        columns[S.REFERENCE] = [ex["completion"] for ex in chunk for _ in range(n)]
        columns |= quality_scores(s.metrics, columns[S.COMPLETION], columns[S.REFERENCE])
        if s.calculator:
            columns[S.EXACT_MATCH_CALC] = M.exact_match_scores(columns[S.COMPLETION_CALC], columns[S.REFERENCE])
        out.append((b, columns))
        progress.update()
    return out


def _cell_table(job: _Job, decoding: Decoding, parts: list) -> pd.DataFrame:
    """The samples table of one cell from the (batch index, columns) parts of every process."""
    table = pd.concat([pd.DataFrame(columns) for _, columns in sorted(parts, key=lambda p: p[0])], ignore_index=True)
    keys = {
        S.RUN: str(job.run_dir),
        S.METHOD: runs.method_label(job.config),
        S.SEED: job.config["seed"],
        S.STEP: runs.step_of(job.checkpoint),
        S.DECODING: decoding.label,
        S.KIND: decoding.kind,
        S.TEMPERATURE: decoding.temperature,
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
    split: str = "test",
    limit: int | None = None,
    max_new_tokens: int | None = None,
    metrics=None,
    calculator: bool | None = None,
    seed: int = 0,
    batch_size: int = 16,
) -> pd.DataFrame:
    """Run the decoding sweep (see the module docstring) and return the aggregate rows of the asked-for cells.

    run_dirs: a run directory, a directory of runs, a glob, or a list of these. checkpoints: "last", "all" or
    steps. metrics: per-sample quality metrics (default: the task's, `task_metrics`). calculator: decode the
    math task a second time with the calculator (default: on for math). max_new_tokens: default
    `default_max_new_tokens`. Under `accelerate launch` each process decodes its share of the batches and the
    main process writes; every process returns the same table.
    """
    unknown = sorted(set(metrics or ()) - set(QUALITY_METRICS))
    if unknown:
        raise SweepError(f"unknown metric(s) {unknown}; choose from {list(QUALITY_METRICS)}")
    state = _process_state()
    grid = decoding_grid(temperatures, beams)
    asked = dict(samples=samples, limit=limit, max_new_tokens=max_new_tokens, seed=seed, batch_size=batch_size,
                 calculator=calculator, metrics=metrics)  # fmt: skip
    jobs = _plan(state, run_dirs, checkpoints, grid, split, asked)
    state.wait_for_everyone()  # every process has listed the missing cells before the main one writes any
    total = sum(len(job.todo) * len(job.batches) for job in jobs)
    progress = tqdm(total=total, desc="sweep", unit="batch", disable=not state.is_main_process)
    for job in jobs:
        if job.todo:
            model = load_model(str(job.checkpoint)).to(state.device).eval()
            if state.is_main_process and not (job.out_dir / MANIFEST).is_file():
                atomic_write_text(job.out_dir / MANIFEST, json.dumps(asdict(job.settings), indent=1) + "\n")
        for decoding in job.todo:
            progress.set_postfix_str(f"{job.run_dir.name} step {runs.step_of(job.checkpoint)} {decoding.label}")
            parts = gather_object(_decode_cell(model, job, decoding, progress))
            if state.is_main_process:
                write_parquet(cell_path(job.out_dir, decoding), _cell_table(job, decoding, parts))
        if state.is_main_process:
            rebuild_aggregate(job.out_dir)
    progress.close()
    state.wait_for_everyone()
    labels = {d.label for d in grid}
    tables = [pd.read_parquet(job.out_dir / AGGREGATE) for job in jobs]
    table = pd.concat(tables, ignore_index=True)
    return table[table[S.DECODING].isin(labels)].reset_index(drop=True)


def format_table(aggregate_table: pd.DataFrame, quality: str | None = None) -> str:
    """The quality/diversity table, one line per (run, step, decoding), quality as "mean ± SE".

    Column "front": "*" for the points on their method's Pareto front of (`quality`, Self-BLEU) (default
    quality: the first metric of schema.HIGHER_IS_BETTER present, exact_match on math), "" for the others,
    "-" for points without a Self-BLEU (greedy) or quality value, which take no part.
    """
    agg = aggregate_table.reset_index(drop=True)
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
    order = agg.sort_values([S.RUN, S.STEP, S.KIND, S.TEMPERATURE, S.BEAMS], key=_grid_order, kind="stable").index
    return table.loc[order].to_string(index=False)


def _process_state() -> PartialState:
    """This process's place among those `accelerate launch` started; without CUDA they are CPU processes, which
    PartialState only joins into one group when told (otherwise each would run the whole sweep alone)."""
    return PartialState(cpu=not torch.cuda.is_available())


def _floats(text: str) -> list[float]:
    return [float(x) for x in text.split(",") if x]


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m analysis sweep", description=__doc__.split("\n\n")[0])
    add = parser.add_argument
    add("--run", action="append", required=True, help="Run directory, directory of runs, or glob; repeatable.")
    add("--checkpoints", default="last", help="last, all, or steps such as 100,300.")
    add("--temperatures", type=_floats, default=TEMPERATURES, help="Comma-separated; 0 is greedy.")
    add("--beams", type=lambda t: [int(x) for x in _floats(t)], default=BEAMS, help="Beam widths; 1 is greedy.")
    add("--samples", type=int, default=5, help="K: samples (or top beams) per prompt.")
    add("--split", default="test")
    add("--limit", type=int, default=None, help="Only the first N prompts of the split.")
    add("--max-new-tokens", type=int, default=None, help="Default: 1.5 x the longest reference completion.")
    add("--metrics", type=lambda t: t.split(","), default=None, help=f"Some of {','.join(QUALITY_METRICS)}.")
    add("--calculator", action=argparse.BooleanOptionalAction, default=None, help="Default: on for math.")
    add("--seed", type=int, default=0)
    add("--batch-size", type=int, default=16, help="Prompts per generate call (changes the sampled rows).")
    args = parser.parse_args(argv)
    try:
        table = sweep(
            args.run, args.checkpoints, args.temperatures, args.beams, args.samples, args.split, args.limit,
            args.max_new_tokens, args.metrics, args.calculator, args.seed, args.batch_size,
        )  # fmt: skip
    except (SweepError, ModelError, DataError) as e:
        sys.exit(f"error: {e}")
    state = _process_state()
    if state.is_main_process:
        print(f"{len(table)} cells, decoded by {state.num_processes} process(es)")
        print(format_table(table))
