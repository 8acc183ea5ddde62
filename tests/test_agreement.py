"""Agreement statistics against hand-computed values: rank correlations (with ties), bootstrap intervals,
pairwise accuracy with a tie and its Wilson interval, ROC AUC, margins, best-of-N, correlation against lam."""

import numpy as np
import pandas as pd
import pytest

from analysis import agreement as A
from analysis import schema as S
from analysis import stats


def test_rank_correlations_by_hand():
    # ranks differ by d = (-1, 1, -1, 1, 0): rho = 1 - 6 * 4 / (5 * 24) = 0.8; 8 concordant and 2 discordant
    # of 10 pairs: tau = (8 - 2) / 10 = 0.6
    out = stats.rank_correlations([1, 2, 3, 4, 5], [2, 1, 4, 3, 5])
    assert out["spearman"] == pytest.approx(0.8)  # rel 1e-6, approx's default: float64 arithmetic on both sides
    assert out["kendall"] == pytest.approx(0.6)  # rel 1e-6, approx's default: float64 arithmetic on both sides
    # a binary metric: average ranks (1.5, 1.5, 3.5, 3.5); rho = 4 / sqrt(5 * 4); tau-b = 4 / sqrt(6 * 4)
    out = stats.rank_correlations([1, 2, 3, 4], [0, 0, 1, 1])
    # rel 1e-6, approx's default: float64 arithmetic on both sides
    assert out["spearman"] == pytest.approx(4 / np.sqrt(20))
    # rel 1e-6, approx's default: float64 arithmetic on both sides
    assert out["kendall"] == pytest.approx(4 / np.sqrt(24))
    assert np.isnan(stats.rank_correlations([1, 2, 3], [1, 1, 1])["spearman"])  # a constant metric has no rank


def test_bootstrap_is_seeded_and_resamples_whole_prompts():
    rng = np.random.default_rng(0)
    reward = rng.normal(size=60)
    metric = reward + rng.normal(size=60)
    groups = np.repeat(np.arange(20), 3)
    a = stats.bootstrap_correlations(reward, metric, groups, n_boot=200, seed=1)
    b = stats.bootstrap_correlations(reward, metric, groups, n_boot=200, seed=1)
    assert a == b and a["n"] == 60
    assert a["spearman_low"] < a["spearman"] < a["spearman_high"]
    assert a["kendall_low"] < a["kendall"] < a["kendall_high"]
    # a perfectly monotone relation stays perfect in every replicate
    perfect = stats.bootstrap_correlations([1, 2, 3, 4, 5, 6], [1, 2, 3, 4, 5, 7], [0, 0, 1, 1, 2, 2], n_boot=50)
    # rel 1e-6, approx's default: float64 arithmetic on both sides
    assert perfect["spearman_low"] == pytest.approx(1.0) and perfect["spearman_high"] == pytest.approx(1.0)


def test_pairwise_accuracy_counts_a_tie_as_half():
    # margins 2, 1, 0, -1: two wins, one tie, one loss -> (2 + 0.5) / 4
    out = stats.pairwise_accuracy([3, 2, 1, 0], [1, 1, 1, 1])
    assert out["accuracy"] == 0.625
    assert (out["wins"], out["ties"], out["losses"], out["n"]) == (2, 1, 1, 4)
    # Wilson at p = 0.625, n = 4, z = 1.96: centre (p + z^2/8) / (1 + z^2/4), half-width z/(1 + z^2/4) *
    # sqrt(p (1 - p) / 4 + z^2 / 64)
    assert out["low"] == pytest.approx(0.2194265, abs=1e-6)
    assert out["high"] == pytest.approx(0.9081008, abs=1e-6)
    assert stats.wilson_interval(0.75, 8) == pytest.approx((0.4092754, 0.9285208), abs=1e-6)


def test_pairs_without_a_score_are_left_out_and_counted():
    # the third pair's rejected completion has no scored token (NaN): not a loss, not a tie, left out
    out = stats.pairwise_accuracy([3, 2, 5, 0], [1, 2, float("nan"), 1])
    assert (out["wins"], out["ties"], out["losses"], out["n"], out["unscored"]) == (1, 1, 1, 3, 1)
    assert out["accuracy"] == pytest.approx(1.5 / 3)  # rel 1e-6, approx's default: float64 arithmetic on both sides
    assert stats.roc_auc([3, float("nan")], [2, 0]) == 1.0


def test_roc_auc_by_hand():
    # pairs (chosen, rejected): 3>2, 3>0, 2=2 (half), 2>0, 1<2, 1>0 -> 4.5 / 6
    assert stats.roc_auc([3, 2, 1], [2, 0]) == 0.75
    assert stats.roc_auc([5, 6], [1, 2, 3]) == 1.0
    assert stats.roc_auc([1], [1]) == 0.5


def test_margin_summary_and_preference_metrics():
    pairs = pd.DataFrame(
        {S.CHOSEN_R: [3.0, 2.0, 1.0, 0.0], S.REJECTED_R: [1.0, 1.0, 1.0, 1.0],
         S.CHOSEN_LOGP_SUM: [-1.0, -2.0, -3.0, -4.0], S.REJECTED_LOGP_SUM: [-2.0, -3.0, -2.0, -1.0]}
    )  # fmt: skip
    pairs[S.MARGIN] = pairs[S.CHOSEN_R] - pairs[S.REJECTED_R]
    out = A.preference_metrics(pairs, scores=(S.R, S.LOGP_SUM))
    assert out[S.R]["accuracy"] == 0.625 and out[S.LOGP_SUM]["accuracy"] == 0.5
    assert out[S.R]["auc"] == (4 + 4 + 0.5 * 4 + 0) / 16  # 3 and 2 beat every 1, 1 ties them, 0 loses to them
    # margins 2, 1, 0, -1: mean 0.5, sample std sqrt(5/3), median 0.5
    assert out[S.R]["margin"]["mean"] == 0.5
    # rel 1e-6, approx's default: float64 arithmetic on both sides
    assert out[S.R]["margin"]["std"] == pytest.approx(np.sqrt(5 / 3))
    assert out[S.R]["margin"]["q50"] == 0.5


def test_best_of_n_by_hand():
    table = pd.DataFrame(
        {
            S.PROMPT_ID: ["a"] * 3 + ["b"] * 3,
            S.R: [1.0, 3.0, 2.0, 0.0, 0.0, -1.0],
            S.LOGP_SUM: [-5.0, -6.0, -1.0, -2.0, -3.0, -4.0],
            "exact_match": [0.0, 1.0, 0.0, 1.0, 0.0, 0.0],
        }
    )
    out = A.best_of_n(table, "exact_match", scores=(S.R, S.LOGP_SUM))
    # a: highest R is sample 2 (right), highest likelihood sample 3 (wrong); b: R ties samples 1 and 2 (0.5 in
    # expectation), highest likelihood sample 1 (right); random = 1/3 for both
    assert out[S.R] == 0.75
    assert out[S.LOGP_SUM] == 0.5
    assert out["random"] == pytest.approx(1 / 3)  # rel 1e-6, approx's default: float64 arithmetic on both sides
    assert out["oracle"] == 1.0
    assert out["gain"] == pytest.approx(0.75 - 1 / 3)  # rel 1e-6, approx's default: float64 arithmetic on both sides
    assert (out["prompts"], out["n"]) == (2, 3.0)


def test_correlation_vs_lam_one_row_per_run_sorted_by_lam():
    table = pd.DataFrame(
        {
            S.RUN: ["iq0.3"] * 4 + ["mle"] * 4,
            S.LAM: [0.3] * 4 + [0.0] * 4,
            S.R: [1, 2, 3, 4, 1, 2, 3, 4],
            "exact_match": [0, 0, 1, 1, 1, 1, 0, 0],
        }
    )
    out = A.correlation_vs_lam(table, "exact_match", n_boot=20)
    assert list(out[S.RUN]) == ["mle", "iq0.3"] and list(out[S.LAM]) == [0.0, 0.3]
    # rel 1e-6, approx's default: float64 arithmetic on both sides
    assert out["spearman"].to_numpy() == pytest.approx([-4 / np.sqrt(20), 4 / np.sqrt(20)])
    with pytest.raises(ValueError, match="several lam"):
        A.correlation_vs_lam(table.assign(**{S.RUN: "one"}), "exact_match")


def test_correlation_table_rows():
    seqs = pd.DataFrame(
        {S.PROMPT_ID: ["a", "a", "b", "b"], S.R: [1.0, 2.0, 3.0, 4.0], S.R_CENTERED: [-0.5, 0.5, -0.5, 0.5],
         "exact_match": [0.0, 1.0, 0.0, 1.0]}
    )  # fmt: skip
    out = A.correlation_table(seqs, ["exact_match"], rewards=(S.R, S.R_CENTERED), n_boot=10).set_index("reward")
    assert out.loc[S.R_CENTERED, "spearman"] == pytest.approx(1.0)  # centring removes the prompt offset
    # ranks of R (1, 2, 3, 4) against average ranks (1.5, 3.5, 1.5, 3.5): rho = 2 / sqrt(5 * 4)
    # rel 1e-6, approx's default: float64 arithmetic on both sides
    assert out.loc[S.R, "spearman"] == pytest.approx(2 / np.sqrt(20))
