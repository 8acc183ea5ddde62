"""How well extracted rewards agree with task quality and with preferences (METHOD.md section 4), always beside
the likelihood baselines (schema.SCORES: R, R_mean, R_centered against log pi(y|x) summed and per token, and
length), since with gamma near 1 R ranks one prompt's samples almost as log pi(y|x) does. Pure pandas, numpy and
scipy over the tables analysis/rewards.py writes; the statistics are analysis/stats.py's.

- Rank correlation of each score with a per-sample quality metric, with prompt-clustered bootstrap intervals;
  per run as a function of `lam` (the paper's reward-correlation analysis).
- Preferences: pairwise accuracy of each score (ties half, Wilson interval), ROC AUC, and R's margins.
- Best-of-N: per prompt, the quality reached by picking the sample of highest score, a uniformly random sample
  (its expectation: the prompt's mean quality) and the best sample (oracle).
- Error localisation: on rejected completions whose first wrong token is known, the rank of that token when
  the completion's tokens are ranked by reward (lowest first), against log pi (lowest first), the policy's
  entropy (highest first) and a random ranking: Hit@1, Hit@3 and mean reciprocal rank.
"""

import numpy as np
import pandas as pd

from analysis import schema as S
from analysis.stats import LEVEL, bootstrap_correlations, margin_summary, pairwise_accuracy, roc_auc


def correlation_table(
    sequences: pd.DataFrame,
    metrics,
    rewards=S.SCORES,
    group: str | None = S.PROMPT_ID,
    n_boot: int = 1000,
    seed: int = 0,
) -> pd.DataFrame:
    """One row per (score column, metric): `bootstrap_correlations` over the rows where the metric is known,
    resampling `group` (None: rows). Columns: reward (the score), metric, n, spearman[_low/_high],
    kendall[_low/_high]."""
    rows = []
    for metric in metrics:
        known = sequences.dropna(subset=[metric])
        for reward in rewards:
            groups = None if group is None else known[group]
            stats_ = bootstrap_correlations(known[reward], known[metric], groups, n_boot, seed)
            rows.append({"reward": reward, "metric": metric, **stats_})
    return pd.DataFrame(rows)


def correlation_vs_lam(
    table: pd.DataFrame, metric: str, reward: str = S.R, group: str | None = None, n_boot: int = 1000, seed: int = 0
) -> pd.DataFrame:
    """Correlation of `reward` with `metric` per run, sorted by lam: the paper's reward/metric correlation as a
    function of the TD weight, for runs that differ only in lam.

    `table` has one row per scored sample with columns run, lam, `reward`, `metric` (and `group`, e.g.
    prompt_id, to resample prompts). Returns run, lam and the columns of `bootstrap_correlations`.
    """
    rows = []
    for run, part in table.groupby(S.RUN, sort=False):
        lams = part[S.LAM].unique()
        if len(lams) != 1:
            raise ValueError(f"run {run!r} has several lam values {sorted(lams)}; expected one per run")
        known = part.dropna(subset=[metric])
        groups = None if group is None else known[group]
        found = bootstrap_correlations(known[reward], known[metric], groups, n_boot, seed)
        rows.append({S.RUN: run, S.LAM: float(lams[0]), **found})
    return pd.DataFrame(rows).sort_values([S.LAM, S.RUN], kind="stable", ignore_index=True)


def preference_metrics(pairs: pd.DataFrame, scores=S.SCORES, level: float = LEVEL) -> dict:
    """Per score of `scores` (pairs columns chosen_<score>, rejected_<score>): pairwise accuracy with its
    Wilson interval (ties half) and ROC AUC of chosen against rejected; under "R" also the margin distribution
    R(chosen) - R(rejected)."""
    out = {}
    for score in scores:
        chosen, rejected = pairs[f"chosen_{score}"], pairs[f"rejected_{score}"]
        out[score] = pairwise_accuracy(chosen, rejected, level) | {"auc": roc_auc(chosen, rejected)}
    out[S.R]["margin"] = margin_summary(pairs[S.MARGIN])
    return out


def _expected_at_max(score: pd.Series, quality: pd.Series, keys) -> pd.Series:
    """Per group, the mean quality over the rows of highest score (a random tie-break, in expectation)."""
    top = score == score.groupby(keys).transform("max")
    return quality[top].groupby([k[top] for k in keys]).mean()


def best_of_n(sequences: pd.DataFrame, metric: str, group=(S.PROMPT_ID,), scores=S.SCORES) -> dict[str, float]:
    """Quality reached per group (a prompt's N samples) by each way of picking one sample, averaged over groups:
    the sample of highest score for each score of `scores` (R, R_mean, ... logp_sum, ...), "random" (expected:
    the group's mean quality), "oracle" (the best sample); "gain" = R's pick - random; "prompts"; "n" = mean
    samples per group. Ties for the highest score count as a random pick among the tied samples."""
    table = sequences.dropna(subset=[metric])
    keys = [table[g] for g in group]
    quality = table[metric].astype(float)
    by = quality.groupby(keys)
    out = {"prompts": int(by.ngroups), "n": float(by.size().mean())}
    out |= {score: float(_expected_at_max(table[score], quality, keys).mean()) for score in scores}
    out |= {"random": float(by.mean().mean()), "oracle": float(by.max().mean())}
    return out | {"gain": out[S.R] - out["random"]}


def expected_rank_hits(scores, target: int, ks=(1, 3)) -> dict[str, float]:
    """Where token `target` lands when the tokens are ranked by `scores`, best first (ties broken uniformly at
    random, in expectation): {"hit@k": P(rank <= k) for k in ks, "rr": E[1 / rank]}.

    With r0 = 1 + (tokens scoring strictly better) and m = tokens tied with it (itself included), its rank is
    uniform over r0 .. r0 + m - 1. A random ranking is the case where all n tokens tie."""
    x = np.asarray(scores, float)
    r0 = 1 + int((x > x[target]).sum())
    m = int((x == x[target]).sum())
    ranks = np.arange(r0, r0 + m)
    return {f"hit@{k}": float((ranks <= k).mean()) for k in ks} | {"rr": float((1.0 / ranks).mean())}


def error_localisation(tokens: pd.DataFrame, sequences: pd.DataFrame, ks=(1, 3)) -> dict:
    """Per ranking of schema.TOKEN_RANKINGS (reward and log pi lowest first, entropy highest first, random), the
    mean over the sequences with a known `error_position` of Hit@k and the reciprocal rank of that position
    among the sequence's tokens; "n" sequences. Tokens without a reward (a cut last token) take no part."""
    known = sequences.dropna(subset=[S.ERROR_POSITION])
    tokens = tokens[tokens[S.EXAMPLE_ID].isin(known[S.EXAMPLE_ID])].dropna(subset=[S.REWARD])
    target = dict(zip(known[S.EXAMPLE_ID], known[S.ERROR_POSITION].astype(int)))
    rows = {name: [] for name in S.TOKEN_RANKINGS}
    for example_id, toks in tokens.groupby(S.EXAMPLE_ID, sort=True):
        at = np.flatnonzero(toks[S.POSITION].to_numpy() == target[example_id])
        if not len(at):
            continue
        for name in S.TOKEN_RANKINGS:
            if name == "random":
                score = np.zeros(len(toks))
            else:
                score = toks[name].to_numpy(float) * (1 if name == S.TOKEN_ENTROPY else -1)  # best = most suspect
            rows[name].append(expected_rank_hits(score, int(at[0]), ks))
    n = len(rows[S.REWARD])
    out = {"n": n}
    for name, found in rows.items():
        keys = (*[f"hit@{k}" for k in ks], "rr")
        out[name] = {k: float(np.mean([f[k] for f in found])) if found else np.nan for k in keys}
        out[name]["mrr"] = out[name].pop("rr")
    return out
