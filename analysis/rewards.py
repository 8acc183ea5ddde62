"""Reward extraction (METHOD.md sections 2 and 4): per completion token r_t = Q(s_t, a_t) - gamma * V(s_{t+1}), per
sequence R = sum_t r_t, for any checkpoint (MLE or IRL) and any completions, and how the rewards agree with
task quality and preferences, beside the likelihood baselines.

    python -m analysis rewards --checkpoint runs/demo/iqlearn/checkpoint-300 --data math-preferences
    python -m analysis rewards --checkpoint <ckpt> --data test                  # the checkpoint's sweep of split "test"
    python -m analysis rewards --checkpoint <ckpt> --data <ckpt>/sweep/test/samples-t=1.parquet
    python -m analysis rewards --checkpoint <ckpt> --data pairs.jsonl --gamma 1 --name pairs-gamma1
    python -m analysis rewards --checkpoint <ckpt> --data test --reference <run>/checkpoint-100 --name test-ref100
    python -m analysis rewards --checkpoint <ckpt> --data data.jsonl            # prompt / completion (+ any columns)
    python -m analysis rewards --checkpoint <ckpt> --data test --bf16 true --name test-bf16   # bfloat16 autocast
    python -m analysis rewards --checkpoint <ckpt> --data <datasets dir | hub name> --split test \\
        --prompt_field question --chosen_field good --rejected_field bad

What is scored (analysis/reward_data.py says what each --data is): a sweep's samples as the token ids that were
generated (a sample cut at max_new_tokens has no EOS: its last token has no next state, so its v_next and
reward are NaN and R sums the others, as in training); texts through training's encoding rule
(irl.data.encode_example): an empty or whitespace-only completion is scored as the tokens it is (the empty one
is the episode of a single EOS action), an EOS written inside a completion ends
the episode there (the tokens after it are counted, not scored), one longer than the model's context is cut and
loses its EOS. gamma is the checkpoint's training gamma (its train_config.yaml), or --gamma; with neither, the
command refuses. Each distinct episode is scored once.

Written to irl.runs.rewards_dir(checkpoint, name), each file atomically:
    tokens.parquet     one row per completion token, schema.TOKEN_COLUMNS; position 0 is the first completion
                       token; token is the text tokenizer.decode([id]) gives; then log π_ref and the other
                       token reward definitions (schema.DEFINITION_TOKEN_COLUMNS, analysis/definitions.py)
    sequences.parquet  one row per example: schema.SEQUENCE_COLUMNS, truncated, error_position (where known),
                       the data's columns, each definition's sequence score (schema.DEFINITIONS)
    pairs.parquet      preference data: one row per pair: chosen_/rejected_<score> for every score, margin, ...
    summary.json       gamma, the terminal rule, counts, and the analyses of analysis/agreement.py that apply, each
                       for R, R_mean and R_centered beside log pi(y|x) summed and per token and length; the
                       reference and beta of the implicit reward, and "definitions": one row per definition
                       (analysis/definitions.py agreement: pairwise, or Spearman and best-of-4, with intervals)
    manifest.json      checkpoint (path, and the sha256 of its weight files: analysis.results.checkpoint_sha256),
                       data (name and sha256 of its rows), gamma and the settings; a rerun with other settings
                       refuses rather than overwrite (use --name)

--bf16 runs the forward of the checkpoint and of the reference under bfloat16 autocast (weights kept in float32, as
training's --bf16): the same tokens are scored, and each term differs from float32's by the roundings of bf16
products. The manifest and summary.json record it (autocast: bfloat16), so a directory of float32 rewards refuses
bf16 ones (and the other way round): give them another --name.
"""

import hashlib
import json
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from analysis import agreement, cli, definitions, scoring
from analysis import reward_data as D
from analysis import schema as S
from analysis.results import checkpoint_sha256, manifest_changes
from analysis.scoring import BF16, autocast
from common.io import FileError, atomic_write_text, check_checkpoint_weights, write_parquet
from irl import runs
from irl.data import OK, TRUNCATED, DataError
from irl.memory import dry_run_rewards
from irl.model import PRESETS, ModelError, build_preset, context_length, load_model, load_tokenizer
from irl.runs import checkpoint_config

TOKEN_ROW_GROUP = 20_000
TERMINAL_RULE = "EOS terminal (V=0 after it); a cut completion's last token has no next state"


class RewardError(ValueError):
    """Reward extraction cannot run as asked; the message names the file, directory or setting."""


@dataclass
class Rewards:
    """The reward tables of one data set and the counts of what was scored, cut or left out."""

    tokens: pd.DataFrame  # schema.TOKEN_COLUMNS
    sequences: pd.DataFrame  # schema.SEQUENCE_COLUMNS, truncated, error_position, the data's columns
    counts: dict
    route: dict = field(default_factory=dict)  # analysis.scoring.score's record: the route that ran, its check


# ---------------------------------------------------------------------------------------------------------------
# Checkpoint


def load_checkpoint(checkpoint):
    """(model in eval mode, tokenizer) of a checkpoint directory; RewardError naming it when either is missing."""
    checkpoint = str(checkpoint)
    if not (Path(checkpoint) / "config.json").is_file():
        inside = [c.name for c in runs.checkpoints(checkpoint)]
        hint = f"; its checkpoints are {inside}" if inside else ""
        raise RewardError(f"--checkpoint {checkpoint}: not a checkpoint directory (no config.json){hint}")
    try:
        check_checkpoint_weights(checkpoint)
    except FileError as e:
        raise RewardError(str(e)) from None
    try:
        tokenizer = load_tokenizer(checkpoint)
    except ModelError as e:
        raise RewardError(f"checkpoint {checkpoint} has no usable tokenizer ({e})") from None
    try:
        model = load_model(checkpoint)
    except ModelError as e:
        raise RewardError(f"checkpoint {checkpoint}: {e}") from None
    device = "cuda" if torch.cuda.is_available() else "cpu"
    return model.to(device).eval(), tokenizer


def checkpoint_gamma(checkpoint, gamma: float | None = None) -> float:
    """`gamma` when given, else the gamma the checkpoint was trained with; RewardError when neither is known."""
    if gamma is not None:
        if not 0 < gamma <= 1:
            raise RewardError(f"--gamma {gamma}: must be in (0, 1]")
        return float(gamma)
    config = checkpoint_config(checkpoint)
    if config is None:
        raise RewardError(f"{checkpoint} carries no training config ({runs.CHECKPOINT_CONFIG}), so its gamma is "
                          f"unknown: pass --gamma")  # fmt: skip
    return float(config["gamma"])


INITIAL = cli.INITIAL_REFERENCE  # --reference default: the model the checkpoint's run started from


def reference_model(checkpoint, reference: str, tokenizer):
    """(model in eval mode, what it is) of the implicit reward's reference π_ref: a checkpoint directory, or
    INITIAL, the model the checkpoint's run started from (its config's `model`: a preset is built again from
    the run's seed, the weights it started with; a name or path, init's included, is loaded). RewardError when
    it is unknown or does not share the checkpoint's tokenizer."""
    if reference != INITIAL:
        model, ref_tokenizer = load_checkpoint(reference)
        if ref_tokenizer.get_vocab() != tokenizer.get_vocab():
            raise RewardError(f"--reference {reference}: its tokenizer is not the checkpoint's, so the two do not "
                              "score the same tokens")  # fmt: skip
        return model, str(reference)
    config = checkpoint_config(checkpoint)
    if config is None:
        raise RewardError(f"{checkpoint} carries no training config ({runs.CHECKPOINT_CONFIG}), so the model it "
                          "started from is unknown: pass --reference <checkpoint>")  # fmt: skip
    device = "cuda" if torch.cuda.is_available() else "cpu"
    if config["model"] in PRESETS:  # LoRA's saved base_model is these same weights
        model = build_preset(config["model"], tokenizer, config["max_length"], config["seed"])
        return model.to(device).eval(), f"{INITIAL}: preset {config['model']} at seed {config['seed']}"
    try:
        return load_model(config["model"]).to(device).eval(), f"{INITIAL}: {config['model']}"
    except ModelError as e:
        raise RewardError(f"the initial model of {checkpoint} ({config['model']}) cannot be loaded ({e}): pass "
                          "--reference <checkpoint>") from None  # fmt: skip


# ---------------------------------------------------------------------------------------------------------------
# Scoring rows


def encode_rows(tokenizer, rows: pd.DataFrame, context: int | None) -> tuple[list, list[str]]:
    """(Encoded or None, status) per row: generated rows (with completion_ids) by their ids, the others by
    training's text rule."""
    encoded, status = [None] * len(rows), [""] * len(rows)
    generated = rows[S.COMPLETION_IDS].notna().to_numpy() if S.COMPLETION_IDS in rows else np.zeros(len(rows), bool)
    for mask, encode in ((generated, "ids"), (~generated, "text")):
        at = np.flatnonzero(mask)
        if not len(at):
            continue
        part = rows.iloc[at]
        if encode == "ids":
            found = scoring.from_ids(part[S.PROMPT_IDS], part[S.COMPLETION_IDS], part[S.ENDED], context)
        else:
            found = scoring.from_texts(tokenizer, part[S.PROMPT], part[S.COMPLETION], context)
        for i, e, s in zip(at, *found):
            encoded[i], status[i] = e, s
    return encoded, status


def _key(e) -> tuple | None:
    return None if e is None else (tuple(e.prompt_ids), tuple(e.completion_ids), e.ended)


def extract(model, tokenizer, rows: pd.DataFrame, gamma: float, batch_tokens: int = cli.BATCH_TOKENS,
            reference=None, beta: float = 1.0, *, chunked: bool = True, check: bool = True) -> Rewards:
    """Token and sequence rewards of `rows` (example_id, prompt_id, prompt, completion, optionally the token
    record prompt_ids/completion_ids/ended and rejected_error_char-style `error_char`, any others). Rows left
    out are counted by status; R_centered is R minus the mean R of the scored rows with the same prompt_id.
    Beside r_t, every definition of analysis/definitions.py; the implicit one against `reference` (a model
    sharing the tokenizer, scored on the same episodes; None: no implicit reward, NaN). `chunked`, `check`: the
    route of analysis.scoring.score and its self-check; Rewards.route records the route that ran."""
    rows = rows.reset_index(drop=True)
    encoded, status = encode_rows(tokenizer, rows, context_length(model.config))
    keys = [_key(e) for e in encoded]
    distinct = list(dict.fromkeys(k for k in keys if k is not None))
    first = {k: i for i, k in reversed(list(enumerate(keys))) if k is not None}
    episodes = [encoded[first[k]] for k in distinct]
    per, tokens, route = scoring.score(model, tokenizer, episodes, gamma, batch_tokens, chunked=chunked, check=check)
    tokens[S.LOGP_REF] = np.nan
    if reference is not None:  # log pi_ref of the same actions, matched by (episode, position)
        _, ref, _ = scoring.score(reference, tokenizer, episodes, gamma, batch_tokens, chunked=chunked, check=check)
        at = ref.set_index(["episode", S.POSITION])[S.LOGP]
        tokens[S.LOGP_REF] = at.reindex(pd.MultiIndex.from_frame(tokens[["episode", S.POSITION]])).to_numpy()
    which = {k: j for j, k in enumerate(distinct)}
    episode = np.array([which.get(k, -1) for k in keys])
    keep = episode >= 0
    counts = {"examples": len(rows), "scored": int(keep.sum()), "distinct": len(distinct)}
    counts |= {s: int(sum(1 for x in status if x == s)) for s in sorted(set(status) - {OK, TRUNCATED})}
    counts["truncated"] = int(sum(e is not None and not e.ended for e in encoded))
    counts["eos_in_text"] = int(sum(e is not None and e.after_eos > 0 for e in encoded))
    counts["after_eos_tokens"] = int(sum(e.after_eos for e in encoded if e is not None))

    computed = [*S.SEQUENCE_COLUMNS[2:], S.TRUNCATED]
    seqs = rows[keep].drop(columns=[c for c in computed if c in rows], errors="ignore").reset_index(drop=True)
    scored = per.iloc[episode[keep]].reset_index(drop=True)
    seqs = pd.concat([seqs, scored[[c for c in computed if c in scored]]], axis=1)
    seqs[S.LENGTH] = seqs[S.LENGTH].astype(int)
    seqs[S.R_CENTERED] = seqs[S.R] - seqs.groupby(S.PROMPT_ID)[S.R].transform("mean")
    if "error_char" in seqs:  # the token holding the first wrong character of a corrupted completion
        kept = [e for e in encoded if e is not None]
        seqs[S.ERROR_POSITION] = [
            scoring.error_position(tokenizer, e.completion_ids, int(c)) if pd.notna(c) else np.nan
            for e, c in zip(kept, seqs["error_char"])
        ]
    first_cols = [*S.SEQUENCE_COLUMNS, S.TRUNCATED]
    seqs = seqs[first_cols + [c for c in seqs.columns if c not in first_cols]]
    link = pd.DataFrame({S.EXAMPLE_ID: seqs[S.EXAMPLE_ID], "episode": episode[keep]})
    token_rows = link.merge(tokens, on="episode", how="inner", sort=False)[[*S.TOKEN_COLUMNS, S.LOGP_REF]]
    counts["tokens"] = len(token_rows)
    token_rows, seqs = definitions.add_definitions(token_rows, seqs, beta)
    return Rewards(token_rows, seqs, counts, route)


# ---------------------------------------------------------------------------------------------------------------
# Analyses and output


def analyse(rewards: Rewards, pairs: pd.DataFrame | None, metrics=None, n_boot: int = 1000, seed: int = 0) -> dict:
    """The agreement analyses that apply, as a dict: for pairs, preference metrics overall and per pair source,
    and error localisation where error positions are known; otherwise the correlations of every score with each
    quality column (`metrics`, default the table's quality metrics scored on the completion itself), and
    best-of-N for each decoding (or for the whole table) with N > 1 per prompt."""
    sequences = rewards.sequences
    if pairs is not None:
        out = {"preferences": agreement.preference_metrics(pairs)}
        out["definitions"] = definitions.agreement(sequences, pairs, ())
        if S.PAIR_SOURCE in pairs:
            by_source = pairs.groupby(S.PAIR_SOURCE, sort=True)
            out["preferences_by_source"] = {str(k): agreement.preference_metrics(g) for k, g in by_source}
        if S.ERROR_POSITION in sequences:
            out["error_localisation"] = agreement.error_localisation(rewards.tokens, sequences)
        return out
    metrics = S.quality_columns(sequences.columns, same_text=True) if metrics is None else list(metrics)
    table = agreement.correlation_table(sequences, metrics, n_boot=n_boot, seed=seed)
    cells = sequences.groupby(S.DECODING, sort=False) if S.DECODING in sequences else [("all", sequences)]
    best = {
        f"{cell}/{metric}": agreement.best_of_n(group, metric)
        for cell, group in cells
        if group.groupby(S.PROMPT_ID).size().max() > 1
        for metric in metrics
    }
    every = definitions.agreement(sequences, None, metrics, n_boot, seed)
    return {"correlations": table.to_dict("records"), "best_of_n": best, "definitions": every}


def _json_safe(obj):
    """`obj` with numpy scalars as Python numbers and NaN as null."""
    if isinstance(obj, dict):
        return {k: _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_json_safe(v) for v in obj]
    if isinstance(obj, (float, np.floating)):
        return None if np.isnan(obj) else float(obj)
    return obj.item() if isinstance(obj, np.generic) else obj


def rows_sha256(rows: pd.DataFrame) -> str:
    """A fingerprint of the rows to score (prompts, completions and token ids)."""
    cols = [c for c in (S.PROMPT, S.COMPLETION, S.COMPLETION_IDS, "error_char") if c in rows]
    text = rows[cols].to_json(orient="values", default_handler=str)
    return hashlib.sha256(text.encode()).hexdigest()


def write(out_dir, rewards: Rewards, pairs: pd.DataFrame | None, summary: dict, manifest: dict) -> None:
    """The tables, summary.json and manifest.json in `out_dir`, each written atomically."""
    out_dir = Path(out_dir)
    # row groups of TOKEN_ROW_GROUP rows in example order, so a reader filtering one example reads one or two
    write_parquet(out_dir / runs.TOKENS_FILE, rewards.tokens, row_group_size=TOKEN_ROW_GROUP)
    write_parquet(out_dir / runs.SEQUENCES_FILE, rewards.sequences)
    if pairs is not None:
        write_parquet(out_dir / runs.PAIRS_FILE, pairs)
    atomic_write_text(out_dir / runs.SUMMARY_FILE, json.dumps(_json_safe(summary), indent=1) + "\n")
    atomic_write_text(out_dir / runs.MANIFEST, json.dumps(manifest, indent=1) + "\n")


@dataclass(frozen=True)
class Settings:
    """What a rewards directory is made with, besides the checkpoint and the data (manifest.json)."""

    gamma: float
    metrics: tuple[str, ...] | None = None
    n_boot: int = 1000
    seed: int = 0
    reference: str = INITIAL  # π_ref of the implicit reward (reference_model)
    beta: float = 1.0  # the implicit reward's scale
    # the forward's autocast dtype (--bf16: "bfloat16"), None: the weights' own (float32); None is also what a
    # manifest written before this field reads as, so those stay float32 rewards
    autocast: str | None = None


@dataclass
class Data:
    """One data set to score: the name of its rewards directory (irl.runs.rewards_name), its rows, the pair table
    of preference data (None otherwise), what manifest.json calls the data (default: the name), and the quality
    columns its rewards are correlated with (None: the table's own)."""

    name: str
    rows: pd.DataFrame
    pairs: pd.DataFrame | None = None
    source: str | None = None
    metrics: tuple[str, ...] | None = None


FIELDS = {S.PROMPT: S.PROMPT, S.COMPLETION: S.COMPLETION, D.CHOSEN: D.CHOSEN, D.REJECTED: D.REJECTED}


def load(data: str, checkpoint, fields: dict[str, str] = FIELDS, split: str = "train", name: str | None = None,
         metrics: tuple[str, ...] | None = None) -> Data:
    """A --data argument as Data (analysis/reward_data.py says what each is), named `name` or after the data;
    RewardError when a `metrics` column is missing."""
    found, rows, pairs = D.load_data(data, checkpoint, checkpoint_config(checkpoint), fields, split)
    missing = sorted(set(metrics or ()) - set(rows.columns))
    if missing:
        raise RewardError(f"--metrics: no column {missing} in {data} (columns: {sorted(rows.columns)})")
    return Data(name or found, rows, pairs, data, metrics)


def score_checkpoint(checkpoint, data: list[Data], gamma: float | None = None, *, n_boot: int = 1000, seed: int = 0,
                     batch_tokens: int = cli.BATCH_TOKENS, scorer=None, reference: str = INITIAL,
                     beta: float = 1.0, bf16: bool = False, chunked: bool = True,
                     check: bool = True) -> dict[str, dict]:
    """Rewards of a checkpoint on each data set, written to irl.runs.rewards_dir(checkpoint, name) with the
    analyses that apply (module docstring); returns {name: summary}. Every path that extracts rewards calls this:
    the command, analysis.report, the findings grid and the demo. gamma: `checkpoint_gamma`. Each directory's
    manifest is checked before anything is scored: one made with other settings is refused (RewardError).
    `scorer`: (model, tokenizer) already loaded (default: the checkpoint's own, loaded once for all data).
    `reference`, `beta`: π_ref and β of the implicit reward (reference_model). `bf16`: both models' forward under
    bfloat16 autocast (analysis.scoring.autocast), recorded in the manifest and summary. `chunked`, `check`: the
    scoring route and its self-check (analysis.scoring.score); the route that ran is in the summary ("route")."""
    model, tokenizer = scorer or load_checkpoint(checkpoint)
    precision = BF16 if bf16 else None
    gamma = checkpoint_gamma(checkpoint, gamma)
    ref_model, ref_what = reference_model(checkpoint, reference, tokenizer)
    weights = checkpoint_sha256(checkpoint)
    manifests = []
    for d in data:
        manifest = {
            "checkpoint": str(checkpoint), "weights_sha256": weights, "data": d.source or d.name,
            "data_sha256": rows_sha256(d.rows),
            **asdict(Settings(gamma, d.metrics, n_boot, seed, str(reference), beta, precision)),
        }  # fmt: skip
        out_dir = runs.rewards_dir(checkpoint, d.name)
        changes = manifest_changes(out_dir, manifest, ignore=("checkpoint",))  # a moved run keeps its rewards
        if changes:
            raise RewardError(f"{out_dir} holds rewards made with other settings ({changes}); pass --name to write "
                              f"them elsewhere, or delete that directory")  # fmt: skip
        manifests.append(json.loads(json.dumps(manifest)))  # tuples as lists, as read back
    summaries = {}
    for d, manifest in zip(data, manifests):
        with autocast(precision, model.device.type):
            rewards = extract(model, tokenizer, d.rows, gamma, batch_tokens, ref_model, beta, chunked=chunked,
                              check=check)  # fmt: skip
        pairs = None
        if d.pairs is not None:
            pairs, rewards.counts["dropped_pairs"] = D.pairs_table(rewards.sequences, d.pairs)
            rewards.counts["pairs"] = len(pairs)
        summary = {"checkpoint": str(checkpoint), "data": d.name, "gamma": gamma, "terminal": TERMINAL_RULE,
                   "autocast": precision, "route": rewards.route}  # fmt: skip
        summary |= {"scores": list(S.SCORES), "counts": rewards.counts, "reference": ref_what, "beta": beta}
        summary |= analyse(rewards, pairs, d.metrics, n_boot, seed)
        write(runs.rewards_dir(checkpoint, d.name), rewards, pairs, summary, manifest)
        summaries[d.name] = summary
    return summaries


def main(argv=None) -> None:
    args = cli.rewards_parser().parse_args(argv)
    if args.dry_run:  # irl/memory.py: weights, a batch's forward and its logits
        dry_run_rewards(args.checkpoint, args.batch_tokens, autocast=args.bf16, chunked=args.chunked)
        return
    try:
        fields = {S.PROMPT: args.prompt_field, S.COMPLETION: args.completion_field}
        fields |= {D.CHOSEN: args.chosen_field, D.REJECTED: args.rejected_field}
        metrics = tuple(args.metrics.split(",")) if args.metrics else None
        scorer = load_checkpoint(args.checkpoint)
        gamma = checkpoint_gamma(args.checkpoint, args.gamma)
        data = load(args.data, args.checkpoint, fields, args.split, args.name, metrics)
        summary = score_checkpoint(args.checkpoint, [data], gamma, n_boot=args.n_boot, seed=args.seed,
                                   batch_tokens=args.batch_tokens, scorer=scorer, reference=args.reference,
                                   beta=args.beta, bf16=args.bf16, chunked=args.chunked,
                                   check=args.check_fast_paths)[data.name]  # fmt: skip
    except (RewardError, DataError, ModelError, FileError) as e:
        sys.exit(f"error: {e}")
    print(json.dumps(_json_safe(summary), indent=1))
    print(f"wrote {runs.rewards_dir(args.checkpoint, data.name)}")
