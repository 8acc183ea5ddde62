"""Rewards vs quality and preferences: sequence reward R against a per-sample metric, the rank correlation per
checkpoint and against lam, best-of-N, and pairwise accuracy and margins on preference data.

Every figure is the one analysis/rewards.py wrote to summary.json (computed by analysis/agreement.py); the
page draws the points and distributions behind them from sequences.parquet and pairs.parquet.
"""

import streamlit as st

from analysis import schema as S
from app import charts, data, tables, widgets

root, runs, results = widgets.context()
st.header("Rewards vs quality")
rewards = results[results["kind"] == "rewards"]
with_seqs = rewards[rewards["files"].map(lambda f: {S.SEQUENCES_FILE, S.SUMMARY_FILE} <= f)]
with_pairs = rewards[rewards["files"].map(lambda f: {S.PAIRS_FILE, S.SUMMARY_FILE} <= f)]
if with_seqs.empty and with_pairs.empty:
    st.info("No reward tables yet. Run `python -m analysis rewards --checkpoint <run>/checkpoint-<step> --data ...`.")
    st.stop()


def correlations(name: str):
    """The correlations summary.json holds for a data set, with the runs' method and lam, and its summaries."""
    found = data.summaries(root, results, name)
    return data.with_runs(tables.summary_correlations(found), runs), found


# data sets whose summary holds correlations (sweep samples; preference pairs have none), the first default
# whose correlation is defined somewhere (a data set's own references are all correct)
names = [n for n in sorted(with_seqs["name"].unique()) if not correlations(n)[0].empty]
if names:
    top = st.columns(3)
    defined = [i for i, n in enumerate(names) if correlations(n)[0]["spearman"].notna().any()]
    data_name = top[0].selectbox("Data", names, index=defined[0] if defined else 0)
    corr, summaries = correlations(data_name)
    rule = tables.reward_rule(summaries)
    metrics = list(dict.fromkeys(corr["metric"]))
    defined = corr.loc[corr["spearman"].notna(), "metric"].tolist()  # default: one R varies with somewhere
    metric = top[1].selectbox(
        "Metric", metrics, index=metrics.index(defined[0]) if defined else 0,
        help="The metrics the analysis correlated R with (exact_match_calc scores another text, the calculator's).",
    )  # fmt: skip
    r_col = top[2].selectbox("Reward", [S.R, S.R_CENTERED], help="R_centered: R minus the mean R of the prompt.")
    corr = corr[(corr["reward"] == r_col) & (corr["metric"] == metric)]
    seqs = data.gather(root, results, "rewards", data_name, S.SEQUENCES_FILE, runs)

    @st.fragment  # switching checkpoint reruns only the scatter
    def reward_scatter() -> None:
        """R against the metric for one checkpoint, with the Spearman rho summary.json holds for it."""
        ckpts = corr.sort_values([S.STEP, S.RUN])[S.CHECKPOINT].tolist()
        ckpt = st.selectbox("Checkpoint", ckpts, index=len(ckpts) - 1)
        one = seqs[seqs[S.CHECKPOINT] == ckpt].dropna(subset=[metric])
        row = corr[corr[S.CHECKPOINT] == ckpt].iloc[0]
        fig = charts.reward_quality_figure(one, r_col, metric, row, rule)
        widgets.chart(fig, one, f"reward-vs-{metric}-{ckpt}")

    left, right = st.columns(2)
    with left:
        reward_scatter()
    with right:
        widgets.chart(charts.correlation_lam_figure(corr, rule), corr, f"spearman-vs-lam-{data_name}-{metric}")
    with st.expander(f"Rank correlations per checkpoint ({rule})"):
        st.dataframe(corr, hide_index=True)
    best = data.with_runs(tables.summary_best_of_n(summaries), runs)
    best = best[best["metric"] == metric]
    if not best.empty:
        cells = list(dict.fromkeys(best["decoding"]))
        cell = st.selectbox("Best of N among the samples of", cells, help="Decoding cells with N > 1 per prompt.")
        best = best[best["decoding"] == cell].sort_values([S.STEP, S.RUN])
        widgets.chart(charts.best_of_n_figure(best, metric, rule), best, f"best-of-n-{data_name}-{cell}-{metric}")
elif not with_seqs.empty:
    st.info("No reward data set with a per-sample quality metric yet: score a sweep's samples "
            "(`python -m analysis rewards --checkpoint <ckpt> --data test`).")  # fmt: skip

st.subheader("Preferences")
if with_pairs.empty:
    st.info(f"No preference pairs yet: score a data set of (prompt, chosen, rejected) to get `{S.PAIRS_FILE}`.")
    st.stop()
pref = st.selectbox("Preference data", sorted(with_pairs["name"].unique()))
summaries = data.summaries(root, results, pref)
rule = tables.reward_rule(summaries)
acc = data.with_runs(tables.summary_preferences(summaries), runs).sort_values([S.STEP, S.RUN])
pairs = data.gather(root, results, "rewards", pref, S.PAIRS_FILE, runs)
# default: the last checkpoint of one run of each method
last = acc[acc[S.STEP] == acc[S.STEP].max()].drop_duplicates(S.METHOD)
shown = st.multiselect("Margins of", list(acc[S.CHECKPOINT]), default=list(last[S.CHECKPOINT]))
left, right = st.columns(2)
with left:
    widgets.chart(charts.accuracy_figure(acc, rule), acc, f"pairwise-accuracy-{pref}")
with right:
    margins = pairs[pairs[S.CHECKPOINT].isin(shown)]
    widgets.chart(charts.margin_figure(margins, rule), margins, f"margins-{pref}")
by_source = tables.summary_preferences_by_source(summaries)
if not by_source.empty:
    with st.expander(f"Pairwise accuracy per pair source ({rule})"):
        st.dataframe(data.with_runs(by_source, runs), hide_index=True)
