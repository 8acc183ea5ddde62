"""Rewards vs quality and preferences, each reward (R, R_mean, R_centered) beside the likelihood baselines
(log π(y|x) summed and per token, length): a score against a per-sample metric, the rank correlation per
checkpoint and against lam, best-of-N, pairwise accuracy and margins on preference data, and how well each
token score finds the known first wrong token of a corrupted completion.

Every figure is the one analysis/rewards.py wrote to summary.json (computed by analysis/agreement.py); the
page draws the points and distributions behind them from sequences.parquet and pairs.parquet.
"""

import pandas as pd
import streamlit as st

from analysis import schema as S
from app import charts, data, tables, widgets
from irl import runs as R

root, runs, results = widgets.context()
st.header("Rewards vs quality")
rewards = results[results["kind"] == R.REWARDS]
with_seqs = rewards[rewards["files"].map(lambda f: {R.SEQUENCES_FILE, R.SUMMARY_FILE} <= f)]
with_pairs = rewards[rewards["files"].map(lambda f: {R.PAIRS_FILE, R.SUMMARY_FILE} <= f)]
if with_seqs.empty and with_pairs.empty:
    st.info("No reward tables yet. Run `python -m analysis rewards --checkpoint <run>/checkpoint-<step> --data ...`.")
    st.stop()


def correlations(name: str):
    """The correlations summary.json holds for a data set, with the runs' method and lam, and its summaries."""
    found = data.summaries(root, results, name)
    return data.with_runs(tables.summary_correlations(found), runs), found


def definitions_table(summaries: dict, name: str, metric: str | None = None) -> None:
    """Every token reward definition's agreement, with its interval, per checkpoint, and per checkpoint the one
    that tracks quality (or preferences) best, as analysis/definitions.py computed them."""
    every = tables.summary_definitions(summaries, metric)
    if every.empty:
        st.info("These rewards were scored before the reward definitions were stored: score them again (with "
                "`--name` for a new directory) to compare definitions.")  # fmt: skip
        return
    every = data.with_runs(every, runs).sort_values([S.STEP, S.RUN], kind="stable")
    pairwise = "pairwise_accuracy" in every
    measure = "pairwise_accuracy" if pairwise else "spearman"
    st.markdown(f"**Every reward definition** against {'the preferences' if pairwise else metric}: "
                + ("pairwise accuracy (ties ½) with its 95% Wilson interval" if pairwise else
                   "Spearman ρ with its 95% prompt-clustered bootstrap interval, and best-of-4 accuracy (the "
                   "sample scored highest of 4 must beat the other three; a random pick is right 0.25 of the time) "
                   "with its 95% Wilson interval over prompts, the 4 drawn from a prompt's samples of one decoding "
                   "setting")
                + ".")  # fmt: skip
    st.caption(tables.DEFINITIONS_TEXT)
    shown = [c for c in (S.CHECKPOINT, "definition", *tables.DEFINITION_COLUMNS[3:]) if c in every]
    widgets.table(every[shown], f"definitions-{name}")
    st.markdown(f"**Which definition tracks {'the preferences' if pairwise else metric} best**, per checkpoint "
                "(separated: its interval lies above the runner-up's)")  # fmt: skip
    if measure not in every:  # undefined for every definition: a side is constant (or no pair is scorable)
        st.info(f"{measure} is undefined for every definition here (the quality or every score is constant), so "
                "no definition leads.")  # fmt: skip
        return
    widgets.table(tables.best_definitions(every, measure), f"best-definition-{name}")


# data sets whose summary holds correlations (sweep samples; preference pairs have none), the first default
# whose correlation is defined somewhere (a data set's own references are all correct)
names = [n for n in sorted(with_seqs["name"].unique()) if not correlations(n)[0].empty]
if names:
    top = st.columns(3)
    defined = [i for i, n in enumerate(names) if correlations(n)[0]["spearman"].notna().any()]
    data_name = widgets.select(top[0], "Data", names, key="data", index=defined[0] if defined else 0)
    every, summaries = correlations(data_name)
    rule = tables.reward_rule(summaries)
    metrics = list(dict.fromkeys(every["metric"]))
    defined = every.loc[every["spearman"].notna(), "metric"].tolist()  # default: one R varies with somewhere
    metric = widgets.select(
        top[1], "Metric", metrics, key="metric", index=metrics.index(defined[0]) if defined else 0,
        help="The metrics the analysis correlated the scores with (exact_match_calc scores another text, the "
        "calculator's).",
    )  # fmt: skip
    scores = list(dict.fromkeys(every["reward"]))
    score = widgets.select(
        top[2], "Score", scores, key="score", index=scores.index(S.R) if S.R in scores else 0,
        help="R, R_mean (per token), R_centered (minus the prompt's mean R): the rewards; logp_sum = log π(y|x), "
        "logp_mean, length: the likelihood baselines a reward must beat to say something beyond likelihood.",
    )  # fmt: skip
    of_metric = every[every["metric"] == metric]
    corr = of_metric[of_metric["reward"] == score]

    @st.fragment  # switching checkpoint reruns only the scatter
    def score_scatter() -> None:
        """The score against the metric for one checkpoint, with the Spearman rho summary.json holds for it."""
        ckpts = corr.sort_values([S.STEP, S.RUN])[S.CHECKPOINT].tolist()
        ckpt = widgets.select(st, "Checkpoint", ckpts, key="checkpoint", index=len(ckpts) - 1)
        row = corr[corr[S.CHECKPOINT] == ckpt].iloc[0]
        # that checkpoint's sequences only: a reward table of 10M tokens holds ~200k of them
        of_ckpt = with_seqs[(with_seqs[S.RUN] == row[S.RUN]) & (with_seqs[S.STEP] == row[S.STEP])]
        of_ckpt = of_ckpt[of_ckpt["name"] == data_name]
        if of_ckpt.empty:
            st.info(f"{ckpt} has no {R.SEQUENCES_FILE} for `{data_name}` beside its summary.json.")
            return
        # the points and what names them (their CSV): at ~200k completions, their texts would take a second to
        # read and cache
        named = {S.EXAMPLE_ID, S.PROMPT_ID, S.SIDE, S.PAIR_ID, S.DECODING, S.SAMPLE, score, metric}
        columns = [c for c in data.sequence_columns(root, row[S.RUN], row[S.STEP], data_name) if c in named]
        one = data.gather(root, of_ckpt, R.REWARDS, data_name, R.SEQUENCES_FILE, runs, columns)
        one = one.dropna(subset=[metric])
        fig = charts.reward_quality_figure(one, score, metric, row, rule)
        widgets.chart(fig, one, f"{score}-vs-{metric}-{ckpt}")
        if caption := charts.points_caption(one, metric):
            st.caption(caption)

    left, right = widgets.side_by_side("correlations")
    with right:  # first: the browser then draws the scatter at its half width once, not at the full width first
        fig = charts.correlation_lam_figure(corr, rule)
        widgets.chart(fig, corr, f"spearman-vs-lam-{data_name}-{score}-{metric}")
    with left:
        score_scatter()
    by_score = of_metric.sort_values([S.STEP, S.RUN], kind="stable")
    widgets.chart(charts.score_correlations_figure(by_score, metric, rule), by_score, f"spearman-{data_name}-{metric}")
    definitions_table(summaries, f"{data_name}-{metric}", metric)
    best = data.with_runs(tables.summary_best_of_n(summaries), runs)
    best = best[best["metric"] == metric]
    if not best.empty:
        cells = list(dict.fromkeys(best["decoding"]))
        cell = widgets.select(
            st, "Best of N among the samples of", cells, key="cell", help="Decoding cells with N > 1 per prompt."
        )
        best = best[best["decoding"] == cell].sort_values([S.STEP, S.RUN])
        widgets.chart(charts.best_of_n_figure(best, metric, rule), best, f"best-of-n-{data_name}-{cell}-{metric}")
elif not with_seqs.empty:
    st.info("No reward data set with a per-sample quality metric yet: score a sweep's samples "
            "(`python -m analysis rewards --checkpoint <ckpt> --data test`).")  # fmt: skip

st.subheader("Preferences")
if with_pairs.empty:
    st.info(f"No preference pairs yet: score a data set of (prompt, chosen, rejected) to get `{R.PAIRS_FILE}`.")
    st.stop()
pref = widgets.select(st, "Preference data", sorted(with_pairs["name"].unique()), key="pairs")
summaries = data.summaries(root, results, pref)
rule = tables.reward_rule(summaries)
acc = data.with_runs(tables.summary_preferences(summaries), runs).sort_values([S.STEP, S.RUN], kind="stable")
# default: the last checkpoint of one run of each method
ckpts = acc.drop_duplicates(S.CHECKPOINT)
last = ckpts[ckpts[S.STEP] == ckpts[S.STEP].max()].drop_duplicates(S.METHOD)
shown = widgets.multiselect(
    st, "Margins of", list(ckpts[S.CHECKPOINT]), key="margins", default=list(last[S.CHECKPOINT])
)  # fmt: skip
left, right = widgets.side_by_side("preferences")
with left:
    widgets.chart(charts.accuracy_figure(acc, rule), acc, f"pairwise-accuracy-{pref}")
with right:
    # the pairs of the checkpoints shown only: a file per checkpoint, each read costing more than its rows
    picked = ckpts.loc[ckpts[S.CHECKPOINT].isin(shown), [S.RUN, S.STEP]]
    margins = data.gather(root, results.merge(picked, on=[S.RUN, S.STEP]), R.REWARDS, pref, R.PAIRS_FILE, runs)
    margins = margins if not margins.empty else pd.DataFrame(columns=[S.CHECKPOINT, S.MARGIN])  # none picked
    widgets.chart(charts.margin_figure(margins, rule), margins, f"margins-{pref}")
by_source = tables.summary_preferences_by_source(summaries)
if not by_source.empty:
    with st.expander(f"Pairwise accuracy per pair source ({rule})"):
        st.dataframe(data.with_runs(by_source, runs), hide_index=True)
definitions_table(summaries, pref)
found = data.with_runs(tables.summary_error_localisation(summaries), runs).sort_values([S.STEP, S.RUN], kind="stable")
if not found.empty:
    measure = widgets.segmented(
        st, "Finding the known error", ["hit@1", "hit@3", "mrr"], key="measure", default="mrr",
        help="Each corrupted completion's tokens ranked by reward (lowest first), log π (lowest first), entropy "
        "(highest first) or at random: how often the first wrong token comes first (hit@1), in the first three "
        "(hit@3), and the mean reciprocal rank of it (mrr).",
    )  # fmt: skip
    widgets.chart(charts.localisation_figure(found, measure, rule), found, f"error-localisation-{pref}")
