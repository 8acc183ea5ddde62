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
    return points.assign(on_front=pd.concat(masks) if masks else pd.Series(dtype=bool))


# The reference point of the hypervolume, per diversity measure: its worst value (Self-BLEU 100: every sample
# the same; distinct-n and n-gram diversity 0: no n-gram; the compression ratio has no worst value, so no
# hypervolume); quality's is 0, the worst value of every quality metric here (exact match,
# ROUGE, BLEU, chrF are all >= 0).
HYPERVOLUME_REFERENCE = {S.SELF_BLEU: 100.0, S.DISTINCT_1: 0.0, S.DISTINCT_2: 0.0, S.NGRAM_DIVERSITY: 0.0,
                         S.EFFECTIVE_SELF_BLEU: 100.0, S.EFFECTIVE_DISTINCT_1: 0.0, S.EFFECTIVE_DISTINCT_2: 0.0}
QUALITY_REFERENCE = 0.0


def hypervolume(quality, diversity, lower_diversity_is_better: bool, reference: tuple[float, float]) -> float:
    """The area dominated by the points (quality, diversity) and bounded by `reference` = (quality, diversity)
    at its worst corner: the union of the rectangles between the reference and each point, larger for a front
    that reaches further on either axis. Points no better than the reference on an axis add nothing."""
    q = np.asarray(quality, float) - reference[0]
    d = np.asarray(diversity, float) - reference[1]
    d = -d if lower_diversity_is_better else d
    keep = (q > 0) & (d > 0)
    q, d = q[keep], d[keep]
    area, best_d = 0.0, 0.0
    for i in np.argsort(-q, kind="stable"):  # quality high to low: each point adds the strip its diversity exceeds
        if d[i] > best_d:
            area += q[i] * (d[i] - best_d)
            best_d = d[i]
    return float(area)


def hypervolume_by(points: pd.DataFrame, quality: str, diversity: str, by=(S.METHOD, S.STEP)) -> pd.DataFrame:
    """Per group of `points` (rows sharing the `by` values: a checkpoint step of a method), the hypervolume of its
    (quality, diversity) points against (QUALITY_REFERENCE, HYPERVOLUME_REFERENCE[diversity]), with the points
    counted and the reference point stated in the columns; no rows for a measure without a reference point."""
    if diversity not in HYPERVOLUME_REFERENCE:
        return pd.DataFrame(columns=[*by, "hypervolume", "points", "reference"])
    lower = not S.HIGHER_IS_BETTER[diversity]
    reference = (QUALITY_REFERENCE, HYPERVOLUME_REFERENCE[diversity])
    rows = [
        {**dict(zip(by, keys if isinstance(keys, tuple) else (keys,))), "hypervolume":
         hypervolume(g[quality], g[diversity], lower, reference), "points": len(g),
         "reference": f"{quality} = {reference[0]:g}, {diversity} = {reference[1]:g}"}
        for keys, g in points.dropna(subset=[quality, diversity]).groupby(list(by), sort=True)
    ]  # fmt: skip
    return pd.DataFrame(rows, columns=[*by, "hypervolume", "points", "reference"])
