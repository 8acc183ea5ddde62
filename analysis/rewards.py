"""Rewards read off a checkpoint's logits (METHOD.md §2 and §4): per completion token
r_t = Q(s_t, a_t) - gamma * V(s_{t+1}), per sequence R = sum_t r_t, for any checkpoint (MLE or IRL) and any
prompt/completion texts. One forward pass per batch of sequences, no generation.

    python -m analysis rewards --checkpoint runs/demo/iqlearn/checkpoint-300 --data math-preferences
    python -m analysis rewards --checkpoint <ckpt> --data test                  # the checkpoint's sweep of split "test"
    python -m analysis rewards --checkpoint <ckpt> --data <ckpt>/sweep/test/samples-t=1.parquet
    python -m analysis rewards --checkpoint <ckpt> --data pairs.jsonl --gamma 1  # prompt / chosen / rejected
    python -m analysis rewards --checkpoint <ckpt> --data data.jsonl            # prompt / completion (+ any columns)
    python -m analysis rewards --checkpoint <ckpt> --data <datasets dir | hub name> --split test \\
        --prompt_field question --chosen_field good --rejected_field bad

From Python: `reward_report(checkpoint)` scores the built-in preference set and the checkpoint's test sweep and
returns the demo's numbers; `extract(model, tokenizer, rows, gamma)` scores any table of prompt/completion rows.

--data is one of: `math-preferences` (the built-in preference set, analysis/preferences.py, from the run's test
split and, when the checkpoint has a test sweep, pairs of the samples of its `default_decoding` cell); a split
name with a sweep at irl.runs.sweep_dir(checkpoint, split); a sweep directory or one samples-*.parquet file of a
sweep (every sample is scored and keeps its quality columns); a JSONL file of prompt/completion or of
prompt/chosen/rejected rows (TRL's conventions; any other fields are kept); a directory saved by `datasets` or a
dataset name, with the --*_field column mapping. Rows with a `prompt_id` field are centred within it, others
within their prompt text.

Written to irl.runs.rewards_dir(checkpoint, <name>), each file atomically:
    tokens.parquet     one row per completion token, schema.TOKEN_COLUMNS; position 0 is the first completion
                       token, the last row of a sequence its EOS; token is the text tokenizer.decode([id]) gives
    sequences.parquet  one row per example: schema.SEQUENCE_COLUMNS, truncated, roundtrip, the data's columns
    pairs.parquet      preference data: one row per pair: pair_id, prompt_id, chosen_R, rejected_R, margin,
                       chosen_/rejected_logp_sum, chosen_/rejected_example_id and the pair's other fields
    summary.json       gamma, counts, and the analyses of analysis/agreement.py that apply: preference metrics
                       (pairs), or correlations of R and R_centered with each quality column pooled over the
                       table and best-of-N per decoding cell (sweeps, or --metrics columns)
gamma: --gamma, else the run's (config.yaml in the checkpoint's parent), else 0.99. R_centered is R minus the
mean R of the table's rows with the same prompt_id. Each distinct (prompt, completion) is scored once.

Every completion is scored as a finished episode (EOS appended), a sweep's sample that reached max_new_tokens
without EOS included. Bad input, each case counted in summary.json "counts":
- empty completion (""): scored as the single EOS action, the model's choice to stop at once (`empty_completion`).
- longer than the model's context (config.max_position_embeddings) with its EOS: the completion is cut to fit and
  gets no EOS; its last token has no next state, so its v_next and reward are NaN and R sums the others, as in
  training (METHOD.md §1) (`truncated`, column `truncated`).
- a prompt that fills the context alone or tokenises to nothing: not scored, left out of the tables
  (`dropped_no_room`, `dropped_empty_prompt`); a pair that loses a side is left out (`dropped_pairs`).
- decode(encode(completion)) != completion (text of a special token such as "<|endoftext|>" inside it, a
  normalising tokenizer): scored as tokenised and flagged (`not_roundtrip`, column `roundtrip` False); an EOS
  inside such a text ends the episode there (V = 0 after it).
- a checkpoint without its tokenizer: RewardError naming the directory.
"""

import argparse
import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from analysis import agreement
from analysis import schema as S
from irl import runs
from irl.data import DataError, iter_jsonl
from irl.io import atomic_write_text, write_parquet
from irl.model import ModelError, load_model, load_tokenizer
from irl.objectives import token_terms

BUILTIN = "math-preferences"
DEFAULT_GAMMA = 0.99
# Padded tokens per forward pass (rows x the longest row): bounds the activations, and the logits kept (completion
# positions only) to at most BATCH_TOKENS x V floats: 512 MiB at V = 32k, 16 MiB at the presets' 1k.
BATCH_TOKENS = 4096
CHOSEN, REJECTED = "chosen", "rejected"
TOKEN_ROW_GROUP = 20_000


class RewardError(ValueError):
    """Reward extraction cannot run as asked; the message names the file, directory or field."""


@dataclass
class Rewards:
    """The reward tables of one data set and the counts of what was scored, cut or left out."""

    tokens: pd.DataFrame  # schema.TOKEN_COLUMNS
    sequences: pd.DataFrame  # schema.SEQUENCE_COLUMNS, truncated, roundtrip, the data's columns
    counts: dict


# ---------------------------------------------------------------------------------------------------------------
# Checkpoint


def load_checkpoint(checkpoint):
    """(model in eval mode, tokenizer) of a checkpoint directory; RewardError naming it when either is missing."""
    checkpoint = str(checkpoint)
    try:
        tokenizer = load_tokenizer(checkpoint)
    except ModelError as e:
        raise RewardError(
            f"checkpoint {checkpoint} has no usable tokenizer ({e}); save one there with tokenizer.save_pretrained"
        ) from None
    try:
        model = load_model(checkpoint)
    except ModelError as e:
        raise RewardError(f"checkpoint {checkpoint}: {e}") from None
    device = "cuda" if torch.cuda.is_available() else "cpu"
    return model.to(device).eval(), tokenizer


def run_config(checkpoint) -> dict | None:
    """The config of the run a checkpoint belongs to (config.yaml in its parent), or None."""
    run_dir = Path(checkpoint).parent
    return runs.read_config(run_dir) if (run_dir / runs.CONFIG).is_file() else None


def run_gamma(checkpoint) -> float:
    """The run's gamma, or 0.99 when the checkpoint is not in a run directory."""
    config = run_config(checkpoint)
    return float(config["gamma"]) if config else DEFAULT_GAMMA


# ---------------------------------------------------------------------------------------------------------------
# Scoring


@dataclass
class Encoded:
    """The token ids of one (prompt, completion) as scored."""

    prompt_ids: list[int]
    completion_ids: list[int]  # EOS appended unless truncated


def _encode(tokenizer, texts: pd.DataFrame, context: int) -> tuple[list, pd.DataFrame]:
    """Token ids of each (prompt, completion) as in training (the prompt with the tokenizer's special tokens,
    the completion without, then EOS), the completion cut to fit `context`; None where nothing can be scored.
    Also returns the flags of the module docstring per text: status, truncated, roundtrip, empty_completion."""
    prompts = tokenizer(list(texts[S.PROMPT]))["input_ids"]
    completions = tokenizer(list(texts[S.COMPLETION]), add_special_tokens=False)["input_ids"]
    encoded, status = [], []
    for prompt_ids, completion_ids in zip(prompts, completions):
        room = context - len(prompt_ids)
        ok = bool(prompt_ids) and room >= 1
        encoded.append(Encoded(prompt_ids, (completion_ids + [tokenizer.eos_token_id])[:room]) if ok else None)
        status.append("ok" if ok else "dropped_no_room" if prompt_ids else "dropped_empty_prompt")
    decoded = tokenizer.batch_decode(completions, skip_special_tokens=True)
    flags = pd.DataFrame(
        {
            "status": status,
            S.TRUNCATED: [e is not None and e.completion_ids[-1] != tokenizer.eos_token_id for e in encoded],
            S.ROUNDTRIP: [d == c for d, c in zip(decoded, texts[S.COMPLETION])],
            "empty_completion": (texts[S.COMPLETION] == "").to_numpy(),
        },
        index=texts.index,
    )
    return encoded, flags


def _batches(encoded: list, batch_tokens: int) -> list[list[int]]:
    """Indices of the scorable sequences in batches of at most `batch_tokens` padded tokens, longest first."""
    lengths = {i: len(e.prompt_ids) + len(e.completion_ids) for i, e in enumerate(encoded) if e is not None}
    batches, current, width = [], [], 0
    for i in sorted(lengths, key=lambda i: -lengths[i]):
        width = width or lengths[i]  # sorted: the first sequence of a batch is its widest
        if current and (len(current) + 1) * width > batch_tokens:
            batches.append(current)
            current, width = [], lengths[i]
        current.append(i)
    return batches + [current] if current else batches


@torch.inference_mode()
def score_batch(model, batch: list[Encoded], pad_id: int, eos_id: int, gamma: float) -> dict[str, np.ndarray]:
    """Per completion action of a batch, row-major: q, v, v_next, logp, reward (v_next and reward NaN for an
    action without a next state). One forward pass of the left-padded batch, logits kept for the completion
    positions only (`logits_to_keep`), then irl.objectives.token_terms; an EOS inside a completion ends the
    episode there, as in training."""
    seqs = [e.prompt_ids + e.completion_ids for e in batch]
    width = max(map(len, seqs))
    keep = max(len(e.completion_ids) for e in batch) + 1  # logits of the completions and the last prompt token
    ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
    attention = torch.zeros_like(ids)
    completion = torch.zeros_like(ids)
    for row, (seq, e) in enumerate(zip(seqs, batch)):  # left padding: every sequence ends at the last column
        ids[row, width - len(seq) :] = torch.tensor(seq)
        attention[row, width - len(seq) :] = 1
        completion[row, width - len(e.completion_ids) :] = 1
    positions = (attention.cumsum(1) - 1).clamp(min=0)  # as if unpadded
    device = model.device
    ids, attention, positions = ids.to(device), attention.to(device), positions.to(device)
    logits = model(input_ids=ids, attention_mask=attention, position_ids=positions, logits_to_keep=keep).logits
    # logits (B, keep, V): column k holds the state in which the action ids[:, width - keep + k + 1] is taken
    terms = token_terms(logits, ids[:, -keep:], completion[:, -keep:].to(device), eos_id)
    mask, no_next = terms.mask, terms.mask & ~terms.td_mask  # (B, keep - 1)
    nan = torch.tensor(float("nan"), device=device)
    out = {
        S.Q: terms.q,
        S.V: terms.v,
        S.V_NEXT: torch.where(no_next, nan, terms.v_next),
        S.LOGP: terms.logp,
        S.REWARD: torch.where(no_next, nan, terms.reward(gamma)),
    }
    return {k: v[mask].float().cpu().numpy() for k, v in out.items()}


def score_texts(model, tokenizer, texts: pd.DataFrame, gamma: float, batch_tokens: int = BATCH_TOKENS):
    """Score each row of `texts` (columns prompt, completion): (per-text table, per-token table).

    Per text (indexed like `texts`): prompt, completion, status, truncated, roundtrip, empty_completion, R,
    logp_sum, v0, length (NaN when not scored). Per token: text (the index in `texts`), position, token_id,
    token, q, v, v_next, logp, reward. R sums the rewards of the tokens with a next state.
    """
    encoded, per_text = _encode(tokenizer, texts, model.config.max_position_embeddings)
    chunks, index = [], []
    for batch in _batches(encoded, batch_tokens):
        chunks.append(
            score_batch(model, [encoded[i] for i in batch], tokenizer.pad_token_id, tokenizer.eos_token_id, gamma)
        )
        index += batch
    lengths = np.array([len(encoded[i].completion_ids) for i in index], dtype=int)
    token_ids = np.concatenate([encoded[i].completion_ids for i in index]) if index else np.zeros(0, int)
    tokens = pd.DataFrame(
        {
            "text": np.repeat(texts.index.to_numpy()[index], lengths),
            S.POSITION: np.concatenate([np.arange(n) for n in lengths]) if index else np.zeros(0, int),
            S.TOKEN_ID: token_ids,
        }
    )
    vocab = {i: tokenizer.decode([i]) for i in np.unique(token_ids).tolist()}
    tokens[S.TOKEN] = tokens[S.TOKEN_ID].map(vocab)
    for key in (S.Q, S.V, S.V_NEXT, S.LOGP, S.REWARD):
        tokens[key] = np.concatenate([c[key] for c in chunks]) if chunks else np.zeros(0, np.float32)
    by_text = tokens.groupby("text", sort=False)
    sums = pd.DataFrame(
        {
            S.R: by_text[S.REWARD].sum().astype(float),  # skips NaN: a truncated last token has no reward
            S.LOGP_SUM: by_text[S.LOGP].sum().astype(float),
            S.V0: by_text[S.V].first().astype(float),
            S.LENGTH: by_text.size(),
        }
    )
    return texts.join(per_text).join(sums), tokens


def distinct_texts(*tables: pd.DataFrame) -> pd.DataFrame:
    """The distinct (prompt, completion) pairs of the tables, indexed 0..n-1."""
    return pd.concat([t[[S.PROMPT, S.COMPLETION]] for t in tables]).drop_duplicates(ignore_index=True)


def assemble(rows: pd.DataFrame, per_text: pd.DataFrame, tokens: pd.DataFrame) -> Rewards:
    """Rewards of `rows` (example_id, prompt_id, prompt, completion, any others) from the `score_texts` results
    of texts that include theirs: the sequences table (R_centered over the rows kept) and the token table."""
    scored = rows[[S.PROMPT, S.COMPLETION]].merge(
        per_text.rename_axis("text").reset_index(), on=[S.PROMPT, S.COMPLETION], how="left", validate="many_to_one"
    )
    status = scored["status"]
    counts = {
        "examples": len(rows),
        "distinct": int(scored["text"].nunique()),
        "empty_completion": int(scored["empty_completion"].sum()),
        "truncated": int(scored[S.TRUNCATED].sum()),
        "not_roundtrip": int((~scored[S.ROUNDTRIP]).sum()),
        "dropped_no_room": int((status == "dropped_no_room").sum()),
        "dropped_empty_prompt": int((status == "dropped_empty_prompt").sum()),
    }
    keep = (status == "ok").to_numpy()
    computed = [S.R, S.LOGP_SUM, S.V0, S.LENGTH, S.TRUNCATED, S.ROUNDTRIP]
    seqs = rows.drop(columns=computed, errors="ignore").reset_index(drop=True)
    seqs = seqs.assign(**{c: scored[c].to_numpy() for c in computed})[keep].reset_index(drop=True)
    seqs[S.LENGTH] = seqs[S.LENGTH].astype(int)
    seqs[S.R_CENTERED] = seqs[S.R] - seqs.groupby(S.PROMPT_ID)[S.R].transform("mean")
    first = list(S.SEQUENCE_COLUMNS) + [S.TRUNCATED, S.ROUNDTRIP]
    seqs = seqs[first + [c for c in seqs.columns if c not in first]]
    link = pd.DataFrame({S.EXAMPLE_ID: seqs[S.EXAMPLE_ID], "text": scored["text"].to_numpy()[keep]})
    token_rows = link.merge(tokens, on="text", how="inner", sort=False)[list(S.TOKEN_COLUMNS)]
    counts["scored"], counts["tokens"] = len(seqs), len(token_rows)
    return Rewards(token_rows, seqs, counts)


def extract(model, tokenizer, rows: pd.DataFrame, gamma: float, batch_tokens: int = BATCH_TOKENS) -> Rewards:
    """Token and sequence rewards of `rows` (columns example_id, prompt_id, prompt, completion, any others)."""
    per_text, tokens = score_texts(model, tokenizer, distinct_texts(rows), gamma, batch_tokens)
    return assemble(rows, per_text, tokens)


# ---------------------------------------------------------------------------------------------------------------
# Data


def pair_rows(pairs: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Preference pairs (prompt_id, prompt, chosen, rejected, other fields) as (sequence rows, pair table):
    two rows per pair, chosen then rejected, with pair_id and side; the pair table holds pair_id and the
    pairs' other fields (a field named like a computed column gets the prefix "data_")."""
    pairs = pairs.reset_index(drop=True)
    sides = []
    for side in (CHOSEN, REJECTED):
        part = pd.DataFrame({S.PAIR_ID: pairs.index, S.PROMPT_ID: pairs[S.PROMPT_ID], S.PROMPT: pairs[S.PROMPT]})
        sides.append(part.assign(**{S.SIDE: side, S.COMPLETION: pairs[side].to_numpy()}))
    rows = pd.concat(sides).sort_values([S.PAIR_ID, S.SIDE], kind="stable", ignore_index=True)  # chosen < rejected
    rows.insert(0, S.EXAMPLE_ID, np.arange(len(rows)))
    computed = {S.CHOSEN_R, S.REJECTED_R, S.MARGIN, S.CHOSEN_LOGP_SUM, S.REJECTED_LOGP_SUM, S.PAIR_ID}
    meta = pairs.drop(columns=[S.PROMPT, CHOSEN, REJECTED])
    meta = meta.rename(columns=lambda c: f"data_{c}" if c in computed else c)
    return rows, meta.assign(**{S.PAIR_ID: pairs.index})


def pairs_table(sequences: pd.DataFrame, meta: pd.DataFrame) -> tuple[pd.DataFrame, int]:
    """One row per pair with both sides scored: R, margin and log-likelihood of each side; and the number of
    pairs left out because a side was not scored."""
    side = {
        name: sequences.loc[sequences[S.SIDE] == name, [S.PAIR_ID, S.EXAMPLE_ID, S.R, S.LOGP_SUM]]
        .set_index(S.PAIR_ID)
        .add_prefix(f"{name}_")
        for name in (CHOSEN, REJECTED)
    }
    both = side[CHOSEN].join(side[REJECTED], how="inner")
    both[S.MARGIN] = both[S.CHOSEN_R] - both[S.REJECTED_R]
    table = meta.merge(both.reset_index(), on=S.PAIR_ID, how="inner")
    first = [S.PAIR_ID, S.PROMPT_ID, S.CHOSEN_R, S.REJECTED_R, S.MARGIN, S.CHOSEN_LOGP_SUM, S.REJECTED_LOGP_SUM]
    return table[first + [c for c in table.columns if c not in first]], len(meta) - len(table)


def _read_jsonl(path: Path) -> tuple[list[dict], list[str]]:
    """The JSON objects of a JSONL file and where each is ("file:line")."""
    found = list(iter_jsonl(path))
    return [obj for obj, _ in found], [where for _, where in found]


def _read_hf(source: str, split: str) -> tuple[list[dict], list[str]]:
    """The rows of one split of a dataset saved by `datasets` or named on the hub, and where each is."""
    import datasets

    path = Path(source)
    if (path / "dataset_dict.json").exists() or (path / "dataset_info.json").exists():
        loaded = datasets.load_from_disk(source)
        loaded = loaded[split] if isinstance(loaded, datasets.DatasetDict) else loaded
    else:
        loaded = datasets.load_dataset(source, split=split)
    records = loaded.to_list()
    return records, [f"{source}[{split}][{i}]" for i in range(len(records))]


def _table(records: list[dict], where: list[str], fields: dict[str, str], source: str) -> pd.DataFrame:
    """Records with their mapped fields checked to be strings and renamed to the standard names (prompt,
    completion or chosen/rejected), and a prompt_id: the record's, else one per distinct prompt text."""
    if not records:
        raise DataError(f"{source}: no rows")
    for rec, at in zip(records, where):
        for key in fields.values():
            if key not in rec:
                raise DataError(f"{at}: missing field '{key}'")
            if not isinstance(rec[key], str):
                raise DataError(f"{at}: field '{key}' must be a string, got {type(rec[key]).__name__}")
    table = pd.DataFrame(records).rename(columns={v: k for k, v in fields.items()})
    if S.PROMPT_ID in table:
        table[S.PROMPT_ID] = table[S.PROMPT_ID].astype(str)
    else:
        table.insert(0, S.PROMPT_ID, [f"p{i}" for i in pd.factorize(table[S.PROMPT])[0]])
    return table


def read_sweep(path) -> pd.DataFrame:
    """Samples of a sweep: one samples-*.parquet file, or every one in a sweep directory, in name order."""
    path = Path(path)
    files = [path] if path.is_file() else sorted(path.glob("samples-*.parquet"))
    if not files:
        raise DataError(f"{path}: no samples-*.parquet files of a sweep here")
    return pd.concat([pd.read_parquet(f) for f in files], ignore_index=True)


def default_decoding(samples: pd.DataFrame) -> str:
    """The sweep cell the built-in preferences and the report use: sampling at the highest temperature (most
    varied samples per prompt), else the widest beam, else greedy."""
    cells = samples.drop_duplicates(S.DECODING)
    best = cells.assign(_sample=cells[S.KIND] == "sample").sort_values(["_sample", S.TEMPERATURE, S.BEAMS]).iloc[-1]
    return str(best[S.DECODING])


def math_test_split(checkpoint) -> list[dict]:
    """The test split of the checkpoint's run, which must train on the built-in math task."""
    from irl.math_task import generate_splits

    config = run_config(checkpoint)
    if config is None or config.get("data") != "math":
        found = "has no config.yaml" if config is None else f"trains on data={config.get('data')!r}"
        raise RewardError(f"{BUILTIN} needs a run on the built-in math task; the run of {checkpoint} {found}")
    # the test split is the first problems of the run's stream (irl/math_task.py): the same without train
    n_test = config["math_sizes"][2]
    return generate_splits([0, 0, n_test], config["math_templates"], config["data_seed"])["test"]


def builtin_pairs(examples: list[dict], samples: pd.DataFrame | None) -> pd.DataFrame:
    """The built-in math preference set (analysis/preferences.py): corruptions of the examples' references and,
    when a sweep's `samples` are given, pairs of the samples of its default cell for the same prompts."""
    from analysis.preferences import math_preferences

    if samples is not None:
        samples = samples[samples[S.DECODING] == default_decoding(samples)]
        samples = samples[samples[S.PROMPT_ID].isin([ex["id"] for ex in examples])]
    return pd.DataFrame(math_preferences(examples, samples))


def _sweep_rows(samples: pd.DataFrame) -> pd.DataFrame:
    rows = samples.reset_index(drop=True)
    rows.insert(0, S.EXAMPLE_ID, np.arange(len(rows)))
    return rows


def _builtin_rows(pairs: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    rows, meta = pair_rows(pairs)
    # the checker labelled every pair: the chosen side is right, the rejected one wrong
    rows[S.EXACT_MATCH] = (rows[S.SIDE] == CHOSEN).astype(float)
    return rows, meta


def load_data(data: str, checkpoint, fields: dict[str, str], split: str = "train"):
    """(name, sequence rows, pair metadata or None) of a --data argument (see the module docstring)."""
    path = Path(data)
    if data == BUILTIN:
        sweep = runs.sweep_dir(checkpoint, "test")
        samples = read_sweep(sweep) if sweep.is_dir() else None
        rows, meta = _builtin_rows(builtin_pairs(math_test_split(checkpoint), samples))
        return BUILTIN, rows, meta
    if path.suffix == ".parquet" or (path.is_dir() and any(path.glob("samples-*.parquet"))):
        name = path.name if path.is_dir() else f"{path.parent.name}-{path.stem.removeprefix('samples-')}"
        return name, _sweep_rows(read_sweep(path)), None
    if not path.exists() and runs.sweep_dir(checkpoint, data).is_dir():
        return data, _sweep_rows(read_sweep(runs.sweep_dir(checkpoint, data))), None
    if path.suffix == ".jsonl":
        if not path.is_file():
            raise DataError(f"--data {data}: no such file")
        (records, where), name = _read_jsonl(path), path.stem
    else:
        (records, where), name = _read_hf(data, split), path.name
    is_pairs = bool(records) and fields[CHOSEN] in records[0] and fields[REJECTED] in records[0]
    wanted = (S.PROMPT, CHOSEN, REJECTED) if is_pairs else (S.PROMPT, S.COMPLETION)
    table = _table(records, where, {k: fields[k] for k in wanted}, data)
    if is_pairs:
        rows, meta = pair_rows(table)
        return name, rows, meta
    table.insert(0, S.EXAMPLE_ID, np.arange(len(table)))
    return name, table, None


# ---------------------------------------------------------------------------------------------------------------
# Analyses and output


def quality_metrics(sequences: pd.DataFrame) -> list[str]:
    """Per-sample quality columns of a table: schema.HIGHER_IS_BETTER, less the diversity columns and
    exact_match_calc (it scores completion_calc, another text than the completion R is read from)."""
    skip = set(S.DIVERSITY_COLUMNS) | {S.EXACT_MATCH_CALC}
    return [c for c in sequences.columns if c in S.HIGHER_IS_BETTER and c not in skip]


def analyse(sequences: pd.DataFrame, pairs: pd.DataFrame | None, metrics=None, n_boot: int = 1000, seed: int = 0):
    """The agreement analyses that apply, as a dict: for pairs, preference metrics overall and per pair source;
    otherwise the correlations of R and R_centered with each quality column (`metrics`, default
    `quality_metrics`), and best-of-N for each decoding (or for the whole table) with N > 1 per prompt."""
    if pairs is not None:
        out = {"preferences": agreement.preference_metrics(pairs)}
        if S.PAIR_SOURCE in pairs:
            by_source = pairs.groupby(S.PAIR_SOURCE, sort=True)
            out["preferences_by_source"] = {str(k): agreement.preference_metrics(g) for k, g in by_source}
        return out
    metrics = quality_metrics(sequences) if metrics is None else list(metrics)
    table = agreement.correlation_table(sequences, metrics, n_boot=n_boot, seed=seed)
    cells = sequences.groupby(S.DECODING, sort=False) if S.DECODING in sequences else [("all", sequences)]
    best = {
        f"{cell}/{metric}": agreement.best_of_n(group, metric)
        for cell, group in cells
        if group.groupby(S.PROMPT_ID).size().max() > 1
        for metric in metrics
    }
    return {"correlations": table.to_dict("records"), "best_of_n": best}


def _json_safe(obj):
    """`obj` with numpy scalars as Python numbers and NaN as null."""
    if isinstance(obj, dict):
        return {k: _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_json_safe(v) for v in obj]
    if isinstance(obj, (float, np.floating)):
        return None if np.isnan(obj) else float(obj)
    return obj.item() if isinstance(obj, np.generic) else obj


def write(out_dir, rewards: Rewards, pairs: pd.DataFrame | None, summary: dict) -> None:
    """The tables and summary.json in `out_dir`, each written atomically; a stale pairs.parquet is removed."""
    out_dir = Path(out_dir)
    # row groups of TOKEN_ROW_GROUP rows in example order, so a reader filtering one example reads one or two
    write_parquet(out_dir / S.TOKENS_FILE, rewards.tokens, row_group_size=TOKEN_ROW_GROUP)
    write_parquet(out_dir / S.SEQUENCES_FILE, rewards.sequences)
    if pairs is not None:
        write_parquet(out_dir / S.PAIRS_FILE, pairs)
    else:
        (out_dir / S.PAIRS_FILE).unlink(missing_ok=True)
    atomic_write_text(out_dir / S.SUMMARY_FILE, json.dumps(_json_safe(summary), indent=1) + "\n")


def finish(checkpoint, name: str, rewards: Rewards, meta, gamma: float, metrics=None, n_boot=1000, seed=0) -> dict:
    """The pairs table (when `meta` is given), the analyses and the summary of one scored data set, all written
    to rewards_dir(checkpoint, name); returns the summary."""
    pairs = None
    if meta is not None:
        pairs, rewards.counts["dropped_pairs"] = pairs_table(rewards.sequences, meta)
        rewards.counts["pairs"] = len(pairs)
    summary = {"checkpoint": str(checkpoint), "data": name, "gamma": gamma, "counts": rewards.counts}
    summary |= analyse(rewards.sequences, pairs, metrics, n_boot, seed)
    write(runs.rewards_dir(checkpoint, name), rewards, pairs, summary)
    return summary


def reward_report(checkpoint, sweep_split: str = "test", limit: int | None = None, n_boot: int = 1000, seed: int = 0):
    """Rewards of a math-task checkpoint on the built-in preference set and on its sweep, in one scoring pass.

    Scores the built-in preference set and, when irl.runs.sweep_dir(checkpoint, sweep_split) holds a sweep, the
    samples of its `default_decoding` cell (sampling at the highest temperature), each distinct text once, for
    the first `limit` test prompts (all: None; the time is about proportional); writes both
    (rewards/math-preferences and rewards/<split>-<decoding>, with "-<limit>" appended to both names when
    limited). Returns a dict:
        checkpoint, gamma, seconds (wall time of the whole call), counts (of the preference set),
        preferences: pairwise accuracy of R on the preference set ("accuracy", its 95% Wilson interval "low" and
            "high", "n", "wins", "ties", "losses"), "auc", "margin" (distribution of R(chosen) - R(rejected)),
            and "likelihood_accuracy" (the same pairs ranked by log pi(y|x)),
        preferences_by_source: the same per pair source (carried, operation, dropped, sample),
        decoding: the sweep cell scored, or None without a sweep; and, None without a sweep:
        correlation: Spearman and Kendall of R with exact_match over that cell's samples, with bootstrap 95%
            intervals over prompts ("n", "spearman", "spearman_low", "spearman_high", "kendall", ...),
        correlation_centered: the same for R_centered,
        best_of_n: exact match reached per prompt by the highest-R sample ("reward"), the highest-likelihood one,
            a random one and the best one ("oracle"), "gain" = reward - random, "n" samples per prompt.
    """
    start = time.perf_counter()
    model, tokenizer = load_checkpoint(checkpoint)
    gamma = run_gamma(checkpoint)
    examples = math_test_split(checkpoint)[:limit]
    suffix = "" if limit is None else f"-{limit}"
    sweep = runs.sweep_dir(checkpoint, sweep_split)
    cell = decoding = None
    if sweep.is_dir():
        samples = read_sweep(sweep)
        decoding = default_decoding(samples)
        prompts = samples[S.PROMPT_ID].isin([ex["id"] for ex in examples])
        cell = _sweep_rows(samples[(samples[S.DECODING] == decoding) & prompts])
    pref_rows, meta = _builtin_rows(builtin_pairs(examples, cell))
    texts = distinct_texts(pref_rows) if cell is None else distinct_texts(pref_rows, cell)
    per_text, tokens = score_texts(model, tokenizer, texts, gamma)
    summary = finish(checkpoint, BUILTIN + suffix, assemble(pref_rows, per_text, tokens), meta, gamma)
    report = {k: summary[k] for k in ("checkpoint", "gamma", "counts", "preferences", "preferences_by_source")}
    report |= {"decoding": decoding, "correlation": None, "correlation_centered": None, "best_of_n": None}
    if cell is not None:
        rewards = assemble(cell, per_text, tokens)
        name = f"{sweep_split}-{decoding}{suffix}"
        found = finish(checkpoint, name, rewards, None, gamma, [S.EXACT_MATCH], n_boot, seed)
        for row in found["correlations"]:
            report["correlation" if row["reward"] == S.R else "correlation_centered"] = row
        report["best_of_n"] = found["best_of_n"][f"{decoding}/{S.EXACT_MATCH}"]
    report["seconds"] = time.perf_counter() - start
    return report


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m analysis rewards", description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", required=True, help="checkpoint directory (model and tokenizer)")
    parser.add_argument("--data", required=True, help=f"{BUILTIN}, a sweep split, directory or samples file, a "
                        "JSONL file, a saved dataset directory or a dataset name")  # fmt: skip
    parser.add_argument("--gamma", type=float, default=None, help="discount (default: the run's, else 0.99)")
    parser.add_argument("--split", default="train", help="dataset split (datasets only)")
    parser.add_argument("--prompt_field", default=S.PROMPT)
    parser.add_argument("--completion_field", default=S.COMPLETION)
    parser.add_argument("--chosen_field", default=CHOSEN)
    parser.add_argument("--rejected_field", default=REJECTED)
    parser.add_argument("--metrics", default=None, help="comma-separated per-sample quality columns to correlate "
                        "R with (default: the known metrics of schema.HIGHER_IS_BETTER present)")  # fmt: skip
    parser.add_argument("--batch_tokens", type=int, default=BATCH_TOKENS, help="padded tokens per forward pass")
    parser.add_argument("--n_boot", type=int, default=1000, help="bootstrap replicates of correlation intervals")
    parser.add_argument("--seed", type=int, default=0, help="seed of the bootstrap")
    args = parser.parse_args(argv)
    if args.gamma is not None and not 0 < args.gamma <= 1:
        parser.error(f"--gamma {args.gamma}: must be in (0, 1]")
    model, tokenizer = load_checkpoint(args.checkpoint)
    gamma = run_gamma(args.checkpoint) if args.gamma is None else args.gamma
    fields = {S.PROMPT: args.prompt_field, S.COMPLETION: args.completion_field}
    fields |= {CHOSEN: args.chosen_field, REJECTED: args.rejected_field}
    name, rows, meta = load_data(args.data, args.checkpoint, fields, args.split)
    metrics = args.metrics.split(",") if args.metrics else None
    missing = sorted(set(metrics or ()) - set(rows.columns))
    if missing:
        parser.error(f"--metrics: no column {missing} in {args.data} (columns: {sorted(rows.columns)})")
    rewards = extract(model, tokenizer, rows, gamma, args.batch_tokens)
    summary = finish(args.checkpoint, name, rewards, meta, gamma, metrics, args.n_boot, args.seed)
    print(json.dumps(_json_safe(summary), indent=1))
    print(f"wrote {runs.rewards_dir(args.checkpoint, name)}")
