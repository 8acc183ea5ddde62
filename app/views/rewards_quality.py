"""Rewards vs quality and preferences: sequence reward R against a per-sample metric (Spearman), the
correlation per checkpoint and against lam, and pairwise accuracy and margins on preference data."""

import streamlit as st

from analysis import schema as S
from app import charts, data, tables, widgets

root, runs, results = widgets.context()
st.header("Rewards vs quality")
rewards = results[results["kind"] == "rewards"]
with_seqs = rewards[rewards["files"].map(lambda f: S.SEQUENCES_FILE in f)]
with_pairs = rewards[rewards["files"].map(lambda f: S.PAIRS_FILE in f)]
if with_seqs.empty and with_pairs.empty:
    st.info("No reward tables yet. Run `python -m analysis rewards --checkpoint <run>/checkpoint-<step> --data ...`.")
    st.stop()


def sequences(name: str):
    """Every checkpoint's sequences of a reward data set, and the quality metrics among their columns."""
    seqs = data.gather(root, results, "rewards", name, S.SEQUENCES_FILE, runs)
    return seqs, [m for m in S.HIGHER_IS_BETTER if m in seqs.columns and m not in S.DIVERSITY_COLUMNS]


def varies(name: str) -> bool:
    seqs, metrics = sequences(name)
    return any(seqs[m].nunique() > 1 for m in metrics)


seqs, metrics = None, []
if not with_seqs.empty:
    top = st.columns(3)
    names = sorted(with_seqs["name"].unique())
    # default: the first data set with a metric to correlate with (a data set's own references are all correct)
    data_name = top[0].selectbox("Data", names, index=next((i for i, n in enumerate(names) if varies(n)), 0))
    seqs, metrics = sequences(data_name)
    if not metrics:
        st.info(f"The sequences of `{data_name}` carry no per-sample metric to correlate with.")


@st.fragment  # switching checkpoint reruns only the scatter
def reward_scatter(seqs, metric: str, r_col: str) -> None:
    """R against the metric for one checkpoint, with Spearman's rho in the title."""
    ckpts = seqs.drop_duplicates(S.CHECKPOINT).sort_values([S.STEP, S.RUN])[S.CHECKPOINT].tolist()
    ckpt = st.selectbox("Checkpoint", ckpts, index=len(ckpts) - 1)
    one = seqs[seqs[S.CHECKPOINT] == ckpt].dropna(subset=[metric])
    rho = tables.spearman(one[r_col], one[metric])
    widgets.chart(charts.reward_quality_figure(one, r_col, metric, rho), one, f"reward-vs-{metric}-{ckpt}")


if metrics:
    metric = top[1].selectbox("Metric", metrics)
    r_col = top[2].selectbox("Reward", [S.R, S.R_CENTERED], help="R_centered: R minus the mean R of the prompt.")
    corr = tables.correlations(seqs, metric, r_col).merge(
        seqs.drop_duplicates(S.RUN)[[S.RUN, S.METHOD, S.LAM]], on=S.RUN
    )  # fmt: skip
    left, right = st.columns(2)
    with left:
        reward_scatter(seqs, metric, r_col)
    with right:
        widgets.chart(charts.correlation_lam_figure(corr), corr, f"spearman-vs-lam-{data_name}-{metric}")
    with st.expander("Spearman per checkpoint"):
        st.dataframe(corr, hide_index=True)

st.subheader("Preferences")
if with_pairs.empty:
    st.info(f"No preference pairs yet: score a data set of (prompt, chosen, rejected) to get `{S.PAIRS_FILE}`.")
    st.stop()
names = sorted(with_pairs["name"].unique())
pref = st.selectbox("Preference data", names)
pairs = data.gather(root, results, "rewards", pref, S.PAIRS_FILE, runs)
acc = tables.pairwise_accuracy(pairs).merge(runs[[S.RUN, S.METHOD]], on=S.RUN)
acc[S.CHECKPOINT] = [data.checkpoint_label(r, s) for r, s in zip(acc[S.RUN], acc[S.STEP])]
# default: the last checkpoint of one run of each method
last = acc[acc[S.STEP] == acc[S.STEP].max()].drop_duplicates(S.METHOD)
shown = st.multiselect("Margins of", list(acc[S.CHECKPOINT]), default=list(last[S.CHECKPOINT]))
left, right = st.columns(2)
with left:
    widgets.chart(charts.accuracy_figure(acc), acc, f"pairwise-accuracy-{pref}")
with right:
    margins = pairs[pairs[S.CHECKPOINT].isin(shown)]
    widgets.chart(charts.margin_figure(margins), margins, f"margins-{pref}")
