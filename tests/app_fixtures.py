"""Synthetic runs directories with the on-disk shape of real runs (irl/runs.py, analysis/schema.py), for the app's
tests and its latency benchmark. No model is trained: every table is drawn from a seeded generator.

    build_runs(root)                                  # small: 2 methods x 2 seeds x 2 checkpoints
    build_runs(root, n_prompts=140, steps=range(100, 600, 100), ...)   # benchmark scale

Layout written, for each run <root>/<method>/seed<seed>/:
    config.yaml, metrics.jsonl (a step-0 data/init row, train/iq rows, eval/nll rows)
    checkpoint-<step>/trainer_state.json
    checkpoint-<step>/sweep/validation/samples-<decoding>.parquet and aggregate.parquet
    checkpoint-<step>/rewards/validation/tokens.parquet, sequences.parquet   (reference + K samples per prompt)
    checkpoint-<step>/rewards/prefs/sequences.parquet, pairs.parquet          (preference pairs)

Example 0 of every checkpoint's validation rewards holds the hostile tokens in `HOSTILE_TOKENS`, and so does the
first greedy sample of prompt "p0", so the pages must show them as text.
"""

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from analysis import schema as S
from irl.config import TrainConfig

HOSTILE_TOKENS = ("<script>alert(1)</script>", "<img src=x onerror=alert(1)>")
METHODS = (("mle", 0.0), ("iqlearn", 0.1))  # (objective, lam)
SPLIT = "validation"
PREFS = "prefs"
_PIECE = re.compile(r"\s*\S+|\n")


def decoding_grid(temperatures=(0.5, 1.0), beams=(4,)) -> list[dict]:
    """Decoding settings as the sweep labels them: greedy, t=<T> sampling, beam=<B>."""
    grid = [{S.DECODING: "greedy", S.KIND: "greedy", S.TEMPERATURE: 0.0, S.BEAMS: 1}]
    grid += [{S.DECODING: f"t={t:g}", S.KIND: "sample", S.TEMPERATURE: float(t), S.BEAMS: 1} for t in temperatures]
    grid += [{S.DECODING: f"beam={b}", S.KIND: "beam", S.TEMPERATURE: 0.0, S.BEAMS: int(b)} for b in beams]
    return grid


def _problem(rng) -> tuple[str, str, int]:
    """A GSM8K-style problem: (prompt, reference completion ending "#### <answer>", answer)."""
    amounts = rng.integers(2, 40, int(rng.integers(2, 9)))
    prompt = f"Question: Ava has {amounts[0]} apples. " + " ".join(f"She picks {a} more." for a in amounts[1:])
    prompt += " How many apples does she have?\nAnswer:"
    lines, total = [f" Ava starts with {amounts[0]} apples."], int(amounts[0])
    for a in amounts[1:]:
        lines.append(f"Then she has {total} + {a} = {total + a} apples.")
        total += int(a)
    return prompt, "\n".join(lines) + f"\n#### {total}", total


def build_runs(
    root,
    *,
    methods=METHODS,
    seeds=(0, 1),
    steps=(50, 100),
    n_prompts: int = 6,
    k: int = 3,
    temperatures=(0.5, 1.0),
    beams=(4,),
    n_pairs: int = 12,
    seed: int = 0,
) -> Path:
    """Write a runs directory under `root` (one run per method x seed, one checkpoint per step, the last step
    being max_steps, so every run is finished) and return `root`."""
    root = Path(root)
    rng = np.random.default_rng(seed)
    problems = [_problem(rng) for _ in range(n_prompts)]
    vocab: dict[str, int] = {}
    for objective, lam in methods:
        for run_seed in seeds:
            run = root / objective / f"seed{run_seed}"
            cfg = TrainConfig(
                output_dir=str(run), objective=objective, lam=lam or 0.1, seed=run_seed, model="small",
                max_steps=max(steps), eval_steps=max(steps) // 2,
            )  # fmt: skip
            _write_run(run, cfg, steps, problems, k, decoding_grid(temperatures, beams), n_pairs, vocab, rng)
    return root


def _write_run(run: Path, cfg: TrainConfig, steps, problems, k, grid, n_pairs, vocab, rng) -> None:
    run.mkdir(parents=True, exist_ok=True)
    (run / "config.yaml").write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False))
    iq = cfg.objective == "iqlearn"
    rows = [{"step": 0, "data/train/examples": 20000, "data/train/kept": 20000, "init/parameters": 1234567}]
    for step in range(10, cfg.max_steps + 1, 10):
        nll = 3.0 * np.exp(-step / 40) + 0.3 + 0.05 * rng.standard_normal()
        td = (8.0 if iq else 30.0) * np.exp(-step / 60) + 1.0
        rows.append({
            "step": step, "train/loss": nll + (cfg.lam * td if iq else 0.0), "train/lr": 2e-3 * (1 - step / cfg.max_steps),
            "train/grad_norm": 1.0, "train/tokens_per_s": 6000.0, "iq/nll": nll, "iq/td": td,
            "iq/reward_mean": -0.5 + step / cfg.max_steps, "iq/v_mean": (2.0 if iq else 12.0) + 0.1 * rng.standard_normal(),
            "iq/entropy": 0.3 + 2.0 * np.exp(-step / 50), "epoch": step / 600,
        })  # fmt: skip
        if step % cfg.eval_steps == 0:
            rows.append({"step": step, "eval/nll": nll + 0.05, "eval/tokens": 8000, "epoch": step / 600})
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    for step in steps:
        ckpt = run / f"checkpoint-{step}"
        ckpt.mkdir(exist_ok=True)
        (ckpt / "trainer_state.json").write_text(json.dumps({"global_step": step}))
        progress = step / cfg.max_steps
        keys = {S.RUN: str(run), S.METHOD: _method(cfg), S.SEED: cfg.seed, S.STEP: step}
        samples = _write_sweep(ckpt / "sweep" / SPLIT, keys, problems, k, grid, iq, progress, rng)
        _write_rewards(ckpt / "rewards" / SPLIT, samples, problems, cfg.gamma, iq, vocab, rng)
        _write_pairs(ckpt / "rewards" / PREFS, n_pairs, iq, rng)


def _method(cfg: TrainConfig) -> str:
    from irl.runs import method_label

    return method_label(cfg.to_dict())


def _write_sweep(out: Path, keys, problems, k, grid, iq, progress, rng) -> pd.DataFrame:
    """One samples-<decoding>.parquet per setting and aggregate.parquet; returns the t=max samples."""
    out.mkdir(parents=True, exist_ok=True)
    agg_rows, last = [], None
    for setting in grid:
        n = 1 if setting[S.KIND] == "greedy" else k
        t = setting[S.TEMPERATURE]
        p_correct = min(0.95, 0.2 + 0.5 * progress + (0.1 if iq else 0.0) - 0.3 * t)
        rows = []
        for pid, (prompt, reference, answer) in enumerate(problems):
            for sample in range(n):
                correct = rng.random() < p_correct
                value = answer if correct else answer + int(rng.integers(1, 9))
                completion = reference.rsplit("####", 1)[0] + f"#### {value}"
                if pid == 0 and sample == 0 and setting[S.KIND] == "greedy":
                    completion = f" {HOSTILE_TOKENS[0]} {HOSTILE_TOKENS[1]}\n#### {value}"
                rows.append({
                    **keys, **setting, S.PROMPT_ID: f"p{pid}", S.SAMPLE: sample, S.PROMPT: prompt,
                    S.COMPLETION: completion, S.REFERENCE: reference, S.N_TOKENS: len(_PIECE.findall(completion)),
                    S.ENTROPY: 0.2 + t * rng.random(), S.COMPLETION_CALC: completion,
                    S.EXACT_MATCH: float(correct), S.EXACT_MATCH_CALC: float(correct or rng.random() < 0.3),
                    "rouge1": float(np.clip(0.5 + 0.4 * correct - 0.2 * t + 0.1 * rng.standard_normal(), 0, 1)),
                })  # fmt: skip
        samples = pd.DataFrame(rows)
        samples.to_parquet(out / f"samples-{setting[S.DECODING]}.parquet", index=False)
        agg = {**keys, **setting}
        for m in (S.EXACT_MATCH, S.EXACT_MATCH_CALC, "rouge1"):
            agg[S.mean_col(m)] = samples[m].mean()
            agg[S.se_col(m)] = samples[m].std(ddof=1) / np.sqrt(len(samples))
        diverse = t + (0.3 if iq else 0.0) * (t > 0)
        agg |= {
            S.SELF_BLEU: float(np.clip(95 - 60 * diverse + 5 * rng.standard_normal(), 0, 100)),
            S.DISTINCT_1: float(np.clip(0.2 + 0.4 * diverse, 0, 1)), S.DISTINCT_2: float(np.clip(0.3 + 0.5 * diverse, 0, 1)),
            S.ENTROPY: samples[S.ENTROPY].mean(), S.N: len(samples),
        }  # fmt: skip
        agg_rows.append(agg)
        last = samples if setting[S.KIND] == "sample" else last
    pd.DataFrame(agg_rows).to_parquet(out / "aggregate.parquet", index=False)
    return last


def _write_rewards(out: Path, samples: pd.DataFrame, problems, gamma, iq, vocab, rng) -> None:
    """Per-token and per-sequence rewards of each prompt's reference and its K samples (one decoding)."""
    out.mkdir(parents=True, exist_ok=True)
    refs = pd.DataFrame({
        S.PROMPT_ID: [f"p{i}" for i in range(len(problems))], S.DECODING: "reference", S.SAMPLE: 0,
        S.COMPLETION: [c for _, c, _ in problems], S.EXACT_MATCH: 1.0,
    })  # fmt: skip
    seqs = pd.concat([refs, samples[refs.columns]], ignore_index=True)
    seqs.insert(0, S.EXAMPLE_ID, np.arange(len(seqs)))
    pieces = [_PIECE.findall(text) for text in seqs[S.COMPLETION]]
    pieces[0] = [" Ava", " wrote", " " + HOSTILE_TOKENS[0], " and", " " + HOSTILE_TOKENS[1], "\n", "####", " 5"]
    lengths = np.array([len(p) for p in pieces])
    tokens = np.concatenate(pieces)
    example = np.repeat(seqs[S.EXAMPLE_ID].to_numpy(), lengths)
    start = np.repeat(np.cumsum(lengths) - lengths, lengths)
    position = np.arange(len(tokens)) - start
    last = position == np.repeat(lengths, lengths) - 1
    # IQLearn's rewards track correctness; MLE's offset V is unconstrained noise (METHOD.md, section 4).
    signal = np.repeat(seqs[S.EXACT_MATCH].to_numpy(), lengths) * (0.6 if iq else 0.0)
    v = (2.0 if iq else 12.0) + rng.normal(0, 1.0 if iq else 3.0, len(tokens))
    logp = -np.abs(rng.normal(0, 1.2, len(tokens))) * (1.0 - 0.5 * signal)
    q = logp + v
    v_next = np.where(last, 0.0, np.roll(v, -1))  # V after EOS is 0
    reward = q - gamma * v_next
    ids = np.array([vocab.setdefault(t, len(vocab)) for t in tokens])
    table = pd.DataFrame({
        S.EXAMPLE_ID: example, S.POSITION: position, S.TOKEN_ID: ids, S.TOKEN: tokens,
        S.Q: q, S.V: v, S.V_NEXT: v_next, S.LOGP: logp, S.REWARD: reward,
    })  # fmt: skip
    table.to_parquet(out / "tokens.parquet", index=False, row_group_size=20_000)
    sums = table.groupby(S.EXAMPLE_ID).agg(R=(S.REWARD, "sum"), logp_sum=(S.LOGP, "sum"), v0=(S.V, "first"))
    seqs[S.R] = sums["R"].to_numpy()
    seqs[S.R_CENTERED] = seqs[S.R] - seqs.groupby(S.PROMPT_ID)[S.R].transform("mean")
    seqs[S.LOGP_SUM] = sums["logp_sum"].to_numpy()
    seqs[S.V0] = sums["v0"].to_numpy()
    seqs[S.LENGTH] = lengths
    seqs.drop(columns=S.COMPLETION).to_parquet(out / "sequences.parquet", index=False)


def _write_pairs(out: Path, n_pairs: int, iq, rng) -> None:
    """A preference set: per pair, the sequence reward of the chosen and the rejected completion."""
    out.mkdir(parents=True, exist_ok=True)
    chosen = rng.normal(1.0 if iq else 0.0, 1.0, n_pairs)
    rejected = rng.normal(0.0, 1.0, n_pairs)
    pd.DataFrame({
        S.PROMPT_ID: [f"q{i}" for i in range(n_pairs)], S.CHOSEN_R: chosen, S.REJECTED_R: rejected,
        S.MARGIN: chosen - rejected,
    }).to_parquet(out / S.PAIRS_FILE, index=False)  # fmt: skip
