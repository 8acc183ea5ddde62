"""How well extracted rewards agree with task quality and with preferences (METHOD.md §4). Pure pandas, numpy
and scipy: these functions read the tables analysis/rewards.py writes and never touch a model.

- Rank correlation of the sequence reward R (raw or centred per prompt) with a per-sample quality metric:
  Spearman's rho and Kendall's tau-b (ties averaged, as scipy does), with percentile bootstrap intervals that
  resample whole prompts (the K samples of one prompt are not independent), seeded.
- The same correlation per run, as a function of `lam` (the paper's reward-correlation analysis).
- Preferences: pairwise accuracy P(R(chosen) > R(rejected)) with ties counted as half a win, its Wilson
  interval (taken at the tie-adjusted proportion), ROC AUC of chosen against rejected rewards (Mann-Whitney,
  ties half), and the margins R(chosen) - R(rejected).
- Best-of-N: per prompt, the quality reached by picking the sample of highest R, of highest likelihood, a
  uniformly random sample (its expectation: the prompt's mean quality) and the best sample (oracle).
"""

import warnings

import numpy as np
import pandas as pd
from scipy import stats

from analysis import schema as S

LEVEL = 0.95


def rank_correlations(reward, metric) -> dict[str, float]:
    """Spearman's rho and Kendall's tau-b of two equally long sequences; NaN where one is constant."""
    x, y = np.asarray(reward, float), np.asarray(metric, float)
    if len(x) < 2 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return {"spearman": np.nan, "kendall": np.nan}
    return {"spearman": float(stats.spearmanr(x, y).statistic), "kendall": float(stats.kendalltau(x, y).statistic)}


def bootstrap_correlations(
    reward, metric, groups=None, n_boot: int = 1000, seed: int = 0, level: float = LEVEL
) -> dict[str, float]:
    """`rank_correlations` with percentile bootstrap intervals: {"n", "spearman", "spearman_low",
    "spearman_high", "kendall", "kendall_low", "kendall_high"}.

    Each replicate draws as many groups as there are (with replacement) and keeps all rows of each drawn group,
    so samples of one prompt stay together; `groups=None` resamples rows. Replicates where a side is constant
    (NaN) are left out of the percentiles. Deterministic for a given seed.
    """
    x, y = np.asarray(reward, float), np.asarray(metric, float)
    codes = np.arange(len(x)) if groups is None else pd.factorize(np.asarray(groups))[0]
    members = np.split(np.argsort(codes, kind="stable"), np.cumsum(np.bincount(codes))[:-1])
    rng = np.random.default_rng(seed)
    draws = []
    for _ in range(n_boot):
        rows = np.concatenate([members[g] for g in rng.integers(len(members), size=len(members))])
        draws.append(rank_correlations(x[rows], y[rows]))
    out = {"n": len(x)}
    tails = 100 * np.array([(1 - level) / 2, (1 + level) / 2])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN replicates: an interval of NaN
        for name, point in rank_correlations(x, y).items():
            values = np.array([d[name] for d in draws])
            out[name] = point
            out[f"{name}_low"], out[f"{name}_high"] = np.nanpercentile(values, tails) if n_boot else (np.nan, np.nan)
    return {k: float(v) if k != "n" else v for k, v in out.items()}


def correlation_table(
    sequences: pd.DataFrame,
    metrics,
    rewards=(S.R, S.R_CENTERED),
    group: str | None = S.PROMPT_ID,
    n_boot: int = 1000,
    seed: int = 0,
) -> pd.DataFrame:
    """One row per (reward column, metric): `bootstrap_correlations` over the rows where the metric is known,
    resampling `group` (None: rows). Columns: reward, metric, n, spearman[_low/_high], kendall[_low/_high]."""
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


def wilson_interval(p: float, n: int, level: float = LEVEL) -> tuple[float, float]:
    """Wilson score interval of a proportion p observed over n trials."""
    if n == 0:
        return np.nan, np.nan
    z = stats.norm.ppf((1 + level) / 2)
    centre = (p + z**2 / (2 * n)) / (1 + z**2 / n)
    half = z / (1 + z**2 / n) * np.sqrt(p * (1 - p) / n + z**2 / (4 * n**2))
    return float(centre - half), float(centre + half)


def pairwise_accuracy(chosen, rejected, level: float = LEVEL) -> dict[str, float]:
    """P(R(chosen) > R(rejected)) over pairs, a tie counting as half a win, with the Wilson interval at that
    proportion: {"accuracy", "low", "high", "n", "wins", "ties", "losses"}."""
    margin = np.asarray(chosen, float) - np.asarray(rejected, float)
    wins, ties, n = int((margin > 0).sum()), int((margin == 0).sum()), len(margin)
    accuracy = (wins + 0.5 * ties) / n if n else np.nan
    low, high = wilson_interval(accuracy, n, level)
    losses = n - wins - ties
    return {"accuracy": accuracy, "low": low, "high": high, "n": n, "wins": wins, "ties": ties, "losses": losses}


def roc_auc(positive, negative) -> float:
    """Area under the ROC curve of scores of positives against negatives: the probability that a random
    positive scores above a random negative, ties counting half (Mann-Whitney U / (n_pos * n_neg))."""
    pos, neg = np.asarray(positive, float), np.asarray(negative, float)
    ranks = stats.rankdata(np.concatenate([pos, neg]))  # average ranks: ties count half
    u = ranks[: len(pos)].sum() - len(pos) * (len(pos) + 1) / 2
    return float(u / (len(pos) * len(neg)))


def margin_summary(margins) -> dict[str, float]:
    """Distribution of margins R(chosen) - R(rejected): mean, std, and the 5/25/50/75/95th percentiles."""
    m = np.asarray(margins, float)
    q = np.percentile(m, [5, 25, 50, 75, 95])
    return {"mean": float(m.mean()), "std": float(m.std(ddof=1)) if len(m) > 1 else np.nan} | {
        f"q{p}": float(v) for p, v in zip((5, 25, 50, 75, 95), q)
    }


def preference_metrics(pairs: pd.DataFrame, level: float = LEVEL) -> dict:
    """Metrics of a pairs table (columns chosen_R, rejected_R, margin, and chosen_/rejected_logp_sum):
    pairwise accuracy with its interval, ROC AUC, the margin distribution, and as a baseline the accuracy of
    the sequence log-likelihood log pi(y|x) on the same pairs."""
    likelihood = pairwise_accuracy(pairs[S.CHOSEN_LOGP_SUM], pairs[S.REJECTED_LOGP_SUM], level)
    return {
        **pairwise_accuracy(pairs[S.CHOSEN_R], pairs[S.REJECTED_R], level),
        "auc": roc_auc(pairs[S.CHOSEN_R], pairs[S.REJECTED_R]),
        "margin": margin_summary(pairs[S.MARGIN]),
        "likelihood_accuracy": likelihood["accuracy"],
    }


def _expected_at_max(score: pd.Series, quality: pd.Series, keys) -> pd.Series:
    """Per group, the mean quality over the rows of highest score (a random tie-break, in expectation)."""
    top = score == score.groupby(keys).transform("max")
    return quality[top].groupby([k[top] for k in keys]).mean()


def best_of_n(
    sequences: pd.DataFrame, metric: str, group=(S.PROMPT_ID,), reward: str = S.R, likelihood: str = S.LOGP_SUM
) -> dict[str, float]:
    """Quality reached per group (a prompt's N samples) by each way of picking one sample, averaged over
    groups: "reward" (highest R), "likelihood" (highest log pi(y|x)), "random" (expected: the group's mean
    quality), "oracle" (the best sample); "gain" = reward - random; "n" = mean samples per group. Ties for
    the highest score count as a random pick among the tied samples."""
    table = sequences.dropna(subset=[metric])
    keys = [table[g] for g in group]
    quality = table[metric].astype(float)
    by = quality.groupby(keys)
    out = {
        "prompts": int(by.ngroups),
        "n": float(by.size().mean()),
        "reward": float(_expected_at_max(table[reward], quality, keys).mean()),
        "likelihood": float(_expected_at_max(table[likelihood], quality, keys).mean()),
        "random": float(by.mean().mean()),
        "oracle": float(by.max().mean()),
    }
    return out | {"gain": out["reward"] - out["random"]}
