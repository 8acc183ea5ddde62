"""Quality-diversity Pareto fronts and averaging over seeds (METHOD.md, section 5).

Each (checkpoint, decoding setting) is one point (quality mean, Self-BLEU mean); the front is the set of
points that no other point beats on both axes (higher quality, lower Self-BLEU).
"""

from collections.abc import Sequence

import numpy as np
import pandas as pd

from analysis import schema as S


def on_front_mask(
    points: pd.DataFrame, quality: str, diversity: str = S.SELF_BLEU, lower_diversity_is_better: bool = True
) -> pd.Series:
    """Boolean Series aligned to `points.index`: True where no other point is at least as good on both
    axes and strictly better on one (higher `quality`; lower `diversity` unless told otherwise).
    Exact duplicates do not dominate each other, so both stay on the front."""
    q = points[quality].to_numpy(dtype=float)
    d = points[diversity].to_numpy(dtype=float)
    if np.isnan(q).any() or np.isnan(d).any():
        raise ValueError(f"NaN in {quality!r} or {diversity!r}; drop those points before computing the front")
    if lower_diversity_is_better:
        d = -d  # both axes now higher-is-better
    # (n, n): [j, i] compares point j against point i
    geq = (q[:, None] >= q[None, :]) & (d[:, None] >= d[None, :])
    gt = (q[:, None] > q[None, :]) | (d[:, None] > d[None, :])
    dominated = (geq & gt).any(axis=0)
    return pd.Series(~dominated, index=points.index, name="on_front")


def pareto_front(
    points: pd.DataFrame, quality: str, diversity: str = S.SELF_BLEU, lower_diversity_is_better: bool = True
) -> pd.DataFrame:
    """The non-dominated rows of `points` (see `on_front_mask`), sorted by `diversity` ascending."""
    front = points[on_front_mask(points, quality, diversity, lower_diversity_is_better)]
    return front.sort_values(diversity, kind="stable")


def pareto_by(
    points: pd.DataFrame,
    quality: str,
    by: str | Sequence[str] = S.METHOD,
    diversity: str = S.SELF_BLEU,
    lower_diversity_is_better: bool = True,
) -> pd.DataFrame:
    """A copy of `points` with a boolean column "on_front": whether the row is on the front of its group
    (rows sharing the `by` values), e.g. one front per method."""
    masks = [
        on_front_mask(group, quality, diversity, lower_diversity_is_better)
        for _, group in points.groupby(by, sort=False, dropna=False)
    ]
    return points.assign(on_front=pd.concat(masks))


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
