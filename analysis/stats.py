"""The statistics every result is reported with, in one place: the sweep, rewards, the demo and the app import
these and compute nothing of the kind themselves. Pure numpy, pandas and scipy (no torch; scipy imported on
first use).

- `mean_se`: a mean with its standard error, clustered by prompt: the K samples of one prompt are not
  independent draws, so they count as one cluster (Liang-Zeger sandwich with the G/(G-1) small-sample factor;
  with one row per cluster it is the ordinary std(ddof=1)/sqrt(n)).
- `rank_correlations`, `bootstrap_correlations`: Spearman's rho and Kendall's tau-b with percentile bootstrap
  intervals that resample whole prompts.
- `wilson_interval`, `pairwise_accuracy`: P(score(chosen) > score(rejected)) with ties counted as half a win,
  and the Wilson interval at that proportion.
- `roc_auc`: Mann-Whitney AUC, ties half. `margin_summary`: the distribution of margins.
- `seed_mean_se`, `aggregate_seeds`: the mean over seeds and its standard error std(ddof=1)/sqrt(n_seeds), of
  one value per seed and per group of runs that differ only in seed.
- `mean_interval`, `difference_interval`: Student-t intervals of a mean over seeds and of the difference of two
  such means (Welch), from the means, their standard errors and the numbers of seeds.
"""

import warnings
from collections.abc import Sequence

import numpy as np
import pandas as pd
from analysis import schema as S

LEVEL = 0.95


def _scipy():
    """scipy.stats, imported on first use: the app imports this module for the seed statistics alone and starts
    without scipy."""
    from scipy import stats

    return stats


def mean_se(values, clusters=None) -> tuple[float, float]:
    """(mean, standard error) of `values`, the SE clustered by `clusters` (one label per value; None: each value
    its own cluster). NaN values are left out with their labels.

        mean = sum_i x_i / n
        se^2 = G / (G - 1) * sum_g (sum_{i in g} (x_i - mean))^2 / n^2      (G clusters)

    SE is NaN with fewer than two clusters."""
    x = np.asarray(values, float)
    codes = np.arange(len(x)) if clusters is None else pd.factorize(np.asarray(clusters), use_na_sentinel=False)[0]
    known = ~np.isnan(x)
    x, codes = x[known], codes[known]
    if len(x) == 0:
        return np.nan, np.nan
    mean = float(x.mean())
    _, codes = np.unique(codes, return_inverse=True)
    g = codes.max() + 1
    if g < 2:
        return mean, np.nan
    sums = np.bincount(codes, weights=x - mean)  # (G,) residual sum per cluster
    return mean, float(np.sqrt(g / (g - 1) * (sums**2).sum()) / len(x))


def rank_correlations(score, metric) -> dict[str, float]:
    """Spearman's rho and Kendall's tau-b of two equally long sequences; NaN where one is constant."""
    x, y = np.asarray(score, float), np.asarray(metric, float)
    if len(x) < 2 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return {"spearman": np.nan, "kendall": np.nan}
    stats = _scipy()
    return {"spearman": float(stats.spearmanr(x, y).statistic), "kendall": float(stats.kendalltau(x, y).statistic)}


def bootstrap_correlations(
    score, metric, groups=None, n_boot: int = 1000, seed: int = 0, level: float = LEVEL
) -> dict[str, float]:
    """`rank_correlations` with percentile bootstrap intervals: {"n", "spearman", "spearman_low",
    "spearman_high", "kendall", "kendall_low", "kendall_high"}.

    Each replicate draws as many groups as there are (with replacement) and keeps all rows of each drawn group,
    so samples of one prompt stay together; `groups=None` resamples rows. Replicates where a side is constant
    (NaN) are left out of the percentiles. Deterministic for a given seed.
    """
    x, y = np.asarray(score, float), np.asarray(metric, float)
    codes = np.arange(len(x)) if groups is None else pd.factorize(np.asarray(groups))[0]
    members = np.split(np.argsort(codes, kind="stable"), np.cumsum(np.bincount(codes))[:-1]) if len(x) else []
    rng = np.random.default_rng(seed)
    draws = []
    for _ in range(n_boot if len(x) else 0):
        rows = np.concatenate([members[g] for g in rng.integers(len(members), size=len(members))])
        draws.append(rank_correlations(x[rows], y[rows]))
    out = {"n": len(x)}
    tails = 100 * np.array([(1 - level) / 2, (1 + level) / 2])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN replicates: an interval of NaN
        for name, point in rank_correlations(x, y).items():
            values = np.array([d[name] for d in draws])
            out[name] = point
            out[f"{name}_low"], out[f"{name}_high"] = np.nanpercentile(values, tails) if draws else (np.nan, np.nan)
    return {k: float(v) if k != "n" else v for k, v in out.items()}


def wilson_interval(p: float, n: int, level: float = LEVEL) -> tuple[float, float]:
    """Wilson score interval of a proportion p observed over n trials."""
    if n == 0:
        return np.nan, np.nan
    z = _scipy().norm.ppf((1 + level) / 2)
    centre = (p + z**2 / (2 * n)) / (1 + z**2 / n)
    half = z / (1 + z**2 / n) * np.sqrt(p * (1 - p) / n + z**2 / (4 * n**2))
    return float(centre - half), float(centre + half)


def pairwise_accuracy(chosen, rejected, level: float = LEVEL) -> dict[str, float]:
    """P(score(chosen) > score(rejected)) over pairs, a tie counting as half a win, with the Wilson interval at
    that proportion: {"accuracy", "low", "high", "n", "wins", "ties", "losses", "unscored"}. A pair with a NaN
    score on either side (a completion with no scored token) is left out of n and counted in "unscored"."""
    margin = np.asarray(chosen, float) - np.asarray(rejected, float)
    unscored = int(np.isnan(margin).sum())
    margin = margin[~np.isnan(margin)]
    wins, ties, n = int((margin > 0).sum()), int((margin == 0).sum()), len(margin)
    accuracy = (wins + 0.5 * ties) / n if n else np.nan
    low, high = wilson_interval(accuracy, n, level)
    losses = n - wins - ties
    return {"accuracy": accuracy, "low": low, "high": high, "n": n, "wins": wins, "ties": ties, "losses": losses,
            "unscored": unscored}


def roc_auc(positive, negative) -> float:
    """Area under the ROC curve of scores of positives against negatives: the probability that a random
    positive scores above a random negative, ties counting half (Mann-Whitney U / (n_pos * n_neg)). NaN scores
    are left out."""
    pos, neg = np.asarray(positive, float), np.asarray(negative, float)
    pos, neg = pos[~np.isnan(pos)], neg[~np.isnan(neg)]
    if not len(pos) or not len(neg):
        return np.nan
    ranks = _scipy().rankdata(np.concatenate([pos, neg]))  # average ranks: ties count half
    u = ranks[: len(pos)].sum() - len(pos) * (len(pos) + 1) / 2
    return float(u / (len(pos) * len(neg)))


def margin_summary(margins) -> dict[str, float]:
    """Distribution of margins score(chosen) - score(rejected): mean, std, and the 5/25/50/75/95th percentiles."""
    m = np.asarray(margins, float)
    if not len(m):
        return {"mean": np.nan, "std": np.nan} | {f"q{p}": np.nan for p in (5, 25, 50, 75, 95)}
    q = np.percentile(m, [5, 25, 50, 75, 95])
    return {"mean": float(m.mean()), "std": float(m.std(ddof=1)) if len(m) > 1 else np.nan} | {
        f"q{p}": float(v) for p, v in zip((5, 25, 50, 75, 95), q)
    }


def mean_interval(mean: float, se: float, n: int, level: float = LEVEL) -> tuple[float, float]:
    """Student-t interval of a mean of n values with standard error se: mean -+ t_{(1+level)/2, n-1} se. NaN with
    fewer than two values or a NaN SE."""
    if n < 2 or not np.isfinite(se):
        return np.nan, np.nan
    half = float(_scipy().t.ppf((1 + level) / 2, n - 1)) * se
    return float(mean - half), float(mean + half)


def difference_interval(mean_a, se_a, n_a, mean_b, se_b, n_b, level: float = LEVEL) -> dict[str, float]:
    """Welch's interval of the difference of two independent means (each over n_a, n_b seeds, with standard errors
    se_a, se_b): {"diff", "se", "df", "low", "high"}.

        diff = a - b,   se^2 = se_a^2 + se_b^2,   df = se^4 / (se_a^4 / (n_a - 1) + se_b^4 / (n_b - 1))
        interval: diff -+ t_{(1+level)/2, df} se

    NaN interval when a side has fewer than two values, or when both SEs are 0 (identical replicates give no
    estimate of their spread, so no test)."""
    diff = float(mean_a - mean_b)
    out = {"diff": diff, "se": np.nan, "df": np.nan, "low": np.nan, "high": np.nan}
    if min(n_a, n_b) < 2 or not (np.isfinite(se_a) and np.isfinite(se_b)) or se_a == se_b == 0:
        return out
    se2 = se_a**2 + se_b**2
    df = se2**2 / (se_a**4 / (n_a - 1) + se_b**4 / (n_b - 1))
    half = float(_scipy().t.ppf((1 + level) / 2, df)) * np.sqrt(se2)
    return out | {"se": float(np.sqrt(se2)), "df": float(df), "low": diff - half, "high": diff + half}


def seed_mean_se(values) -> tuple[float, float, int]:
    """(mean, standard error, n) of one value per seed: the SE is std(ddof=1) / sqrt(n), NaN for a single seed.
    NaN values are left out (a seed where the quantity is undefined), so n counts the others."""
    x = pd.Series(np.asarray(values, float)).dropna()
    n = len(x)
    return (float(x.mean()) if n else np.nan), (float(x.std(ddof=1) / np.sqrt(n)) if n > 1 else np.nan), n


def aggregate_seeds(
    agg: pd.DataFrame, by: Sequence[str] = S.SEED_GROUP_KEYS, metrics: Sequence[str] | None = None
) -> pd.DataFrame:
    """Average runs that differ only in seed: one row per `by` group with, for each metric column `m`, its
    mean over seeds (column `m`), its standard error over seeds `std(ddof=1) / sqrt(n_seeds)` (column
    `schema.seed_se_col(m)`, NaN for a single seed, where it is unknown) and `n_seeds`.

    `metrics` defaults to every numeric column of `agg` except `by`, run, seed and the sample count `n`.
    Each seed must appear at most once per group: a repeat means `by` misses a key that tells runs apart.
    A metric missing (NaN) on any seed of a group is NaN for the group, mean and SE: over the other seeds it
    would be a mean of fewer seeds than `n_seeds` says (a Spearman rho of a run whose quality was constant).
    """
    by = list(by)
    agg = S.with_grid_columns(agg)  # an aggregate written before top_p and min_p were columns
    if metrics is None:
        skip = set(by) | {S.RUN, S.SEED, S.N}
        metrics = [c for c in agg.select_dtypes("number").columns if c not in skip]
    if agg.duplicated(by + [S.SEED]).any():
        raise ValueError(f"a seed repeats within a group of {by}; add the key that separates those runs")
    groups = agg.groupby(by, sort=True, dropna=False)
    mean = groups[list(metrics)].mean(skipna=False)
    n_seeds = groups.size().rename(S.N_SEEDS)
    se = groups[list(metrics)].std(ddof=1, skipna=False).div(np.sqrt(n_seeds), axis=0)
    se.columns = [S.seed_se_col(m) for m in metrics]
    # mean / SE side by side per metric
    ordered = [col for m in metrics for col in (m, S.seed_se_col(m))]
    return pd.concat([mean, se], axis=1)[ordered].join(n_seeds).reset_index()
