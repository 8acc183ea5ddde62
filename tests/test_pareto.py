"""Pareto fronts and seed aggregation on literal points."""

import math

import numpy as np
import pandas as pd
import pytest

from analysis import schema as S
from analysis.pareto import on_front_mask, pareto_by, pareto_front
from analysis.stats import aggregate_seeds

# quality up, self-BLEU down
POINTS = pd.DataFrame(
    {
        "rouge1_mean": [0.50, 0.40, 0.30, 0.20, 0.50, 0.10, 0.20],
        "self_bleu": [60.0, 40.0, 45.0, 20.0, 70.0, 20.0, 20.0],
    },
    index=list("abcdefg"),
)
# c: beaten by b (better on both); e: ties a on quality, worse self-BLEU; f: ties d on self-BLEU, worse
# quality; g: exact duplicate of d, so neither dominates the other.


def test_front_on_literal_points():
    mask = on_front_mask(POINTS, "rouge1_mean")
    assert mask.index.equals(POINTS.index)
    assert mask.to_dict() == {"a": True, "b": True, "c": False, "d": True, "e": False, "f": False, "g": True}
    front = pareto_front(POINTS, "rouge1_mean")
    assert list(front.index) == ["d", "g", "b", "a"]  # by self-BLEU ascending
    assert list(front["self_bleu"]) == [20.0, 20.0, 40.0, 60.0]


def test_front_with_higher_diversity_better():
    points = pd.DataFrame({"exact_match_mean": [0.6, 0.5, 0.4, 0.6], "distinct_2": [0.3, 0.5, 0.4, 0.3]})
    # 2 is beaten by 1 (0.5 > 0.4, 0.5 > 0.4); 0 and 3 are duplicates
    mask = on_front_mask(points, "exact_match_mean", "distinct_2", lower_diversity_is_better=False)
    assert list(mask) == [True, True, False, True]
    assert list(pareto_front(points, "exact_match_mean", "distinct_2", False).index) == [0, 3, 1]


def test_single_point_and_nan():
    assert list(on_front_mask(POINTS.iloc[[2]], "rouge1_mean")) == [True]
    with pytest.raises(ValueError, match="NaN"):
        on_front_mask(POINTS.assign(self_bleu=[np.nan] + [1.0] * 6), "rouge1_mean")


def test_fronts_per_group():
    points = pd.DataFrame(
        {
            "method": ["mle", "mle", "mle", "iq", "iq", "iq"],
            "rouge1_mean": [0.30, 0.25, 0.20, 0.35, 0.40, 0.30],
            "self_bleu": [50.0, 55.0, 30.0, 40.0, 45.0, 45.0],
        },
        index=[10, 11, 12, 20, 21, 22],
    )
    out = pareto_by(points, "rouge1_mean", by="method")
    # mle: 11 beaten by 10; iq: 22 beaten by 20 (and 21). Every mle point is beaten by some iq point,
    # but fronts are computed within each method.
    assert out["on_front"].to_dict() == {10: True, 11: False, 12: True, 20: True, 21: True, 22: False}
    assert list(out.columns) == ["method", "rouge1_mean", "self_bleu", "on_front"]
    assert "on_front" not in points.columns
    assert list(on_front_mask(points, "rouge1_mean")) == [False, False, True, True, True, False]


def _agg_table():
    rows = [
        # method, seed, step, rouge1_mean, self_bleu, n
        ("mle", 0, 100, 0.30, 50.0, 40),
        ("mle", 1, 100, 0.33, 60.0, 40),
        ("mle", 2, 100, 0.36, 70.0, 40),
        ("iq", 0, 100, 0.40, 30.0, 40),
    ]
    df = pd.DataFrame(rows, columns=[S.METHOD, S.SEED, S.STEP, "rouge1_mean", S.SELF_BLEU, S.N])
    return df.assign(
        **{S.RUN: [f"{m}-s{s}" for m, s in zip(df[S.METHOD], df[S.SEED])], S.DECODING: "greedy", S.KIND: "greedy",
           S.TEMPERATURE: 0.0, S.BEAMS: 1}
    )


def test_aggregate_seeds_by_hand():
    out = aggregate_seeds(_agg_table(), metrics=["rouge1_mean", S.SELF_BLEU]).set_index(S.METHOD)
    assert list(out.columns) == [
        S.STEP, S.DECODING, S.KIND, S.TEMPERATURE, S.TOP_P, S.MIN_P, S.BEAMS,
        "rouge1_mean", "rouge1_mean_seed_se", "self_bleu", "self_bleu_seed_se", "n_seeds",
    ]  # fmt: skip
    mle = out.loc["mle"]
    # rouge1: mean (0.30 + 0.33 + 0.36) / 3 = 0.33; deviations -0.03, 0, 0.03 -> std = sqrt(0.0018 / 2) = 0.03
    # SE = 0.03 / sqrt(3) = 0.0173205
    assert mle["rouge1_mean"] == pytest.approx(0.33)  # rel 1e-6, approx's default: float64 arithmetic on both sides
    assert mle["rouge1_mean_seed_se"] == pytest.approx(0.0173205, abs=1e-7)
    # self-BLEU: mean 60, std sqrt((100 + 0 + 100) / 2) = 10, SE = 10 / sqrt(3) = 5.7735
    assert mle["self_bleu"] == pytest.approx(60.0)  # rel 1e-6, approx's default: float64 arithmetic on both sides
    assert mle["self_bleu_seed_se"] == pytest.approx(5.7735027, abs=1e-7)
    assert mle["n_seeds"] == 3
    iq = out.loc["iq"]  # a single seed: mean is its value, SE unknown
    assert iq["rouge1_mean"] == 0.40 and iq["n_seeds"] == 1 and math.isnan(iq["rouge1_mean_seed_se"])


def test_aggregate_seeds_a_metric_missing_on_one_seed_is_missing_for_the_group():
    # mle's self-BLEU undefined on seed 1: over seeds 0 and 2 alone it would read 60.0 +- 7.07 "over 3 seeds"
    table = _agg_table()
    table.loc[1, S.SELF_BLEU] = np.nan
    mle = aggregate_seeds(table, metrics=["rouge1_mean", S.SELF_BLEU]).set_index(S.METHOD).loc["mle"]
    assert math.isnan(mle["self_bleu"]) and math.isnan(mle["self_bleu_seed_se"])
    # rel 1e-6, approx's default: float64 arithmetic on both sides
    assert mle["rouge1_mean"] == pytest.approx(0.33) and mle["n_seeds"] == 3


def test_aggregate_seeds_default_metrics_and_repeated_seed():
    out = aggregate_seeds(_agg_table())
    # numeric non-key columns, minus run, seed and n
    assert [c for c in out.columns if c.endswith("_seed_se")] == ["rouge1_mean_seed_se", "self_bleu_seed_se"]
    with pytest.raises(ValueError, match="seed repeats"):
        aggregate_seeds(_agg_table().assign(**{S.SEED: 0}))


def test_hypervolume_by_hand_and_against_a_grid_count():
    from analysis.pareto import hypervolume

    # Self-BLEU (lower is better) against reference (0, 100): as (q, 100 - b) the points are (0.5, 80), (0.8, 40),
    # (0.2, 90) and (0.1, 10), the last dominated: 0.8 * 40 + 0.5 * (80 - 40) + 0.2 * (90 - 80) = 54
    # rel 1e-6, approx's default: float64 arithmetic on both sides
    assert hypervolume([0.5, 0.8, 0.2, 0.1], [20, 60, 10, 90], True, (0.0, 100.0)) == pytest.approx(54.0)
    assert hypervolume([0.5, -1.0], [120, 20], True, (0.0, 100.0)) == 0.0  # nothing better than the reference
    # the obvious thing: the share of a fine grid's cells whose centre some point dominates
    rng = np.random.default_rng(0)
    q, d = rng.random(7), rng.random(7)
    edges = (np.arange(400) + 0.5) / 400
    cq, cd = np.meshgrid(edges, edges, indexing="ij")
    covered = ((cq[..., None] <= q) & (cd[..., None] <= d)).any(-1).mean()
    assert hypervolume(q, d, False, (0.0, 0.0)) == pytest.approx(covered, abs=2 * 7 / 400)  # a cell per edge


def test_hypervolume_by_states_its_reference_point():
    from analysis.pareto import hypervolume_by

    points = pd.DataFrame({S.METHOD: ["a", "a", "a", "b"], S.STEP: [1, 1, 2, 1], "q": [0.5, 0.8, 0.3, np.nan],
                           S.SELF_BLEU: [20.0, 60.0, 50.0, 10.0]})  # fmt: skip
    table = hypervolume_by(points, "q", S.SELF_BLEU)
    assert table[[S.METHOD, S.STEP, "hypervolume", "points"]].values.tolist() == [["a", 1, 52.0, 2], ["a", 2, 15.0, 1]]
    assert set(table["reference"]) == {"q = 0, self_bleu = 100"}


def test_fronts_of_no_points_are_empty():
    """No point has both axes (a quality metric of another task): no front, not an error."""
    empty = pd.DataFrame({S.METHOD: [], S.STEP: [], "q": [], S.SELF_BLEU: []})
    assert pareto_by(empty, "q", [S.METHOD, S.STEP]).empty
    assert "on_front" in pareto_by(empty, "q", [S.METHOD, S.STEP])
