"""Rewards vs quality and preferences: sequence reward R against a per-sample metric (Spearman), the
correlation per checkpoint and against lam, and pairwise accuracy and margins on preference data."""

import streamlit as st

from analysis import schema as S
from app import charts, data, tables, widgets

root, runs, results = widgets.context()
st.header("Rewards vs quality")
rewards = results[results["kind"] == "rewards"]
with_seqs = rewards[rewards["files"].map(lambda f: data.SEQUENCES_FILE in f)]
with_pairs = rewards[rewards["files"].map(lambda f: S.PAIRS_FILE in f)]
if with_seqs.empty and with_pairs.empty:
    st.info("No reward tables yet. Run `python -m analysis rewards --checkpoint <run>/checkpoint-<step> --data ...`.")
    st.stop()

seqs = None
if not with_seqs.empty:
    top = st.columns(4)
    names = sorted(with_seqs["name"].unique())
    data_name = top[0].selectbox("Data", names, index=names.index("validation") if "validation" in names else 0)
    seqs = data.gather(root, results, "rewards", data_name, data.SEQUENCES_FILE, runs)
    metrics = [c for c in seqs.columns if c in S.HIGHER_IS_BETTER]
    if not metrics:
        st.info(f"The sequences of `{data_name}` carry no per-sample metric to correlate with.")
if seqs is not None and metrics:
    metric = top[1].selectbox("Metric", metrics)
    r_col = top[2].selectbox("Reward", [S.R, S.R_CENTERED], help="R_centered: R minus the mean R of the prompt.")
    ckpts = sorted(seqs[S.CHECKPOINT].unique(), key=lambda c: (int(c.rsplit("@", 1)[1]), c))
    ckpt = top[3].selectbox("Checkpoint", ckpts, index=len(ckpts) - 1)
    one = seqs[seqs[S.CHECKPOINT] == ckpt].dropna(subset=[metric])
    corr = tables.correlations(seqs, metric, r_col).merge(
        seqs.drop_duplicates(S.RUN)[[S.RUN, S.METHOD, "lam"]], on=S.RUN
    )  # fmt: skip
    left, right = st.columns(2)
    with left:
        rho = tables.spearman(one[r_col], one[metric])
        widgets.chart(charts.reward_quality_figure(one, r_col, metric, rho), one, f"reward-vs-{metric}-{ckpt}")
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
acc = tables.pairwise_accuracy(pairs)
acc[S.CHECKPOINT] = [data.checkpoint_label(r, s) for r, s in zip(acc[S.RUN], acc[S.STEP])]
ckpts = list(acc[S.CHECKPOINT])
shown = st.multiselect("Margins of", ckpts, default=ckpts[-2:])
left, right = st.columns(2)
with left:
    widgets.chart(charts.accuracy_figure(acc), acc, f"pairwise-accuracy-{pref}")
with right:
    margins = pairs[pairs[S.CHECKPOINT].isin(shown)]
    widgets.chart(charts.margin_figure(margins), margins, f"margins-{pref}")
