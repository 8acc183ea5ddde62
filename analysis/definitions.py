"""Token reward definitions side by side, on the same scored tokens, and how each agrees with quality and
preferences. Papers on dense rewards from IRL, on implicit process rewards and on endogenous rewards each read a
token reward off a language model differently; here every definition is computed from the terms
analysis/scoring.py already has (q, v, v_next, logp) and, for the implicit one, log π_ref of a reference model
on the same tokens:

    r_t        = Q(s_t, a_t) - γ V(s_{t+1})                at the run's γ (column `reward`)
    r_t^{γ=1}  = Q(s_t, a_t) - V(s_{t+1})                  the soft-Bellman form: with log π = Q - V(s_t), a
                                                           completion ended by EOS (V = 0 after it) sums to
                                                           log π(y|x) + V(s_0)
    r_t^{imp}  = β (log π(a_t|s_t) - log π_ref(a_t|s_t))   the implicit reward of implicit process reward models
                                                           (Yuan et al. 2024, "Free process rewards without
                                                           process labels"), π_ref the reference model
    log π      = log π(a_t|s_t)                            likelihood alone, the baseline every reward must beat
    r_t^{base} = r_t - b(x),  b(x) = mean over the prompt's scored completions of their mean r_t (R_mean)

A definition's sequence score is the sum of its token values over the tokens that have one: r_t, r_t^{γ=1} and
r_t^{base} have none on the last token of a cut completion (no next state), log π and r_t^{imp} have one on
every token. The columns are schema.DEFINITIONS.

Agreement, per definition, with what analysis/agreement.py and analysis/stats.py compute for every score:
Spearman with each quality metric (prompt-clustered bootstrap interval), pairwise preference accuracy (ties
half, Wilson interval), and best-of-K accuracy as reward-model benchmarks report it: among K = 4 samples of a
prompt under one decoding setting, the one the definition scores highest must be the one whose quality beats
all three others; a random pick is right 1/K of the time.
"""

from itertools import combinations

import numpy as np
import pandas as pd

from analysis import schema as S
from analysis.agreement import correlation_table
from analysis.stats import LEVEL, pairwise_accuracy, wilson_interval

K = 4  # samples per best-of-K draw, as in reward-model benchmarks (the chosen one beats three others)


def add_definitions(tokens: pd.DataFrame, sequences: pd.DataFrame, beta: float = 1.0):
    """(tokens, sequences) with every definition's token and sequence column (module docstring). `tokens` holds
    schema.TOKEN_COLUMNS and LOGP_REF (NaN without a reference model: the implicit reward is then NaN);
    `sequences` example_id, prompt_id, R_mean."""
    tokens = tokens.assign(**{
        S.REWARD_GAMMA1: tokens[S.Q] - tokens[S.V_NEXT],  # NaN where v_next is: no next state
        S.REWARD_IMPLICIT: beta * (tokens[S.LOGP] - tokens[S.LOGP_REF]),
    })  # fmt: skip
    baseline = sequences.groupby(S.PROMPT_ID)[S.R_MEAN].transform("mean")  # b(x), per example
    b = tokens[S.EXAMPLE_ID].map(dict(zip(sequences[S.EXAMPLE_ID], baseline)))
    tokens[S.REWARD_BASELINE] = tokens[S.REWARD] - b.to_numpy(float)
    by = tokens.groupby(S.EXAMPLE_ID, sort=False)
    sums = {seq: by[tok].sum(min_count=1) for tok, seq in S.DEFINITIONS.values() if seq not in sequences}
    sequences = sequences.assign(**{seq: sequences[S.EXAMPLE_ID].map(s).astype(float) for seq, s in sums.items()})
    return tokens, sequences


def best_of_k(sequences: pd.DataFrame, metric: str, score: str, k: int = K, level: float = LEVEL) -> dict:
    """Best-of-K accuracy of `score` against `metric`: over every K-subset of each prompt's samples of one
    decoding cell (of the prompt's rows, for data without cells; metric known) whose best sample is unique (its
    quality beats the K-1 others), the probability that the sample of highest score is that one (a tie for the
    highest score: a random pick among the tied); averaged per (cell, prompt), then over those that have such a
    subset. "n": those, the Wilson interval over them; "random": 1/k, the rate of a random pick; NaN where none
    has k samples with a unique best."""
    keys = [S.DECODING, S.PROMPT_ID] if S.DECODING in sequences else [S.PROMPT_ID]
    per_prompt = []
    for _, group in sequences.dropna(subset=[metric]).groupby(keys, sort=True):
        quality, scores = group[metric].to_numpy(float), group[score].to_numpy(float)
        hits = []
        for subset in combinations(range(len(group)), k):
            q, s = quality[list(subset)], scores[list(subset)]
            best = np.flatnonzero(q == q.max())
            if len(best) > 1 or np.isnan(s).any():
                continue
            top = np.flatnonzero(s == s.max())
            hits.append(float(best[0] in top) / len(top))
        if hits:
            per_prompt.append(np.mean(hits))
    n = len(per_prompt)
    accuracy = float(np.mean(per_prompt)) if n else np.nan
    low, high = wilson_interval(accuracy, n, level) if n else (np.nan, np.nan)
    return {"accuracy": accuracy, "low": low, "high": high, "n": n, "k": k, "random": 1 / k}


def agreement(sequences: pd.DataFrame, pairs: pd.DataFrame | None, metrics, n_boot: int = 1000, seed: int = 0,
              k: int = K) -> list[dict]:
    """One row per definition (and per metric, for samples with quality metrics): for preference pairs, pairwise
    accuracy (ties half) with its Wilson interval; otherwise Spearman with the metric and its prompt-clustered
    bootstrap interval, and best-of-K accuracy with its Wilson interval and the random-pick rate."""
    rows = []
    if pairs is not None:
        for name, (_, column) in S.DEFINITIONS.items():
            value = dict(zip(sequences[S.EXAMPLE_ID], sequences[column]))
            chosen = pairs[f"chosen_{S.EXAMPLE_ID}"].map(value)
            rejected = pairs[f"rejected_{S.EXAMPLE_ID}"].map(value)
            found = pairwise_accuracy(chosen, rejected)
            rows.append({"definition": name, "score": column, **{f"pairwise_{key}": v for key, v in found.items()}})
        return rows
    columns = {column: name for name, (_, column) in S.DEFINITIONS.items()}
    table = correlation_table(sequences, metrics, rewards=tuple(columns), n_boot=n_boot, seed=seed)
    for corr in table.to_dict("records"):
        best = best_of_k(sequences, corr["metric"], corr["reward"], k)
        rows.append({
            "definition": columns[corr["reward"]], "score": corr["reward"], "metric": corr["metric"], "n": corr["n"],
            "spearman": corr["spearman"], "spearman_low": corr["spearman_low"],
            "spearman_high": corr["spearman_high"],
            **{f"best_of_{k}_{key}": v for key, v in best.items() if key != "k"},
        })  # fmt: skip
    return rows
