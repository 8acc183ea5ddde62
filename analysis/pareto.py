"""Quality-diversity Pareto fronts (METHOD.md, section 5); points averaged over seeds by
analysis.stats.aggregate_seeds.

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
