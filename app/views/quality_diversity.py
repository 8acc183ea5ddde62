"""Quality vs diversity: the Pareto scatter of (checkpoint, decoding) points averaged over seeds, with each
method's front, and quality against sampling temperature with beam search apart."""

import streamlit as st

from analysis import pareto
from analysis import schema as S
from app import charts, data, tables, widgets

root, runs, results = widgets.context()
st.header("Quality vs diversity")
swept = results[(results["kind"] == "sweep") & results["files"].map(lambda f: data.AGGREGATE_FILE in f)]
if swept.empty:
    st.info("No decoding sweeps yet. Run `python -m analysis sweep --run <run>`.")
    st.stop()

top = st.columns([1, 1, 1, 3])
split = top[0].selectbox("Split", sorted(swept["name"].unique()))
agg = data.gather(root, results, "sweep", split, data.AGGREGATE_FILE, runs)
qualities = [m for m in S.HIGHER_IS_BETTER if m not in S.DIVERSITY_COLUMNS and S.mean_col(m) in agg.columns]
quality = S.mean_col(top[1].selectbox("Quality", qualities))
diversity = top[2].selectbox("Diversity", [d for d in (S.SELF_BLEU, S.DISTINCT_1, S.DISTINCT_2) if d in agg.columns])
steps = sorted(agg[S.STEP].unique())
picked = top[3].multiselect("Checkpoint steps", steps, default=steps[-1:], help="None picked: all.") or steps
agg = agg[agg[S.STEP].isin(picked)]

left, right = st.columns(2)
with left:
    points = tables.pareto_points(agg, quality, diversity)
    if points.empty:
        st.info(f"No setting has both {quality} and {diversity} (greedy decoding has no Self-BLEU of one sample).")
    else:
        widgets.chart(charts.pareto_figure(points, quality, diversity), points, f"pareto-{split}-{quality}-{diversity}")
        st.caption("Error bars: standard error over seeds. Dotted: each method's Pareto front. "
                   "Marker: ● greedy, ◆ sampling, ■ beam search.")  # fmt: skip
with right:
    by_temperature = pareto.aggregate_seeds(agg.dropna(subset=[quality]), metrics=[quality])
    widgets.chart(charts.temperature_figure(by_temperature, quality), by_temperature, f"temperature-{split}-{quality}")
    st.caption("Lines: greedy (at 0) and sampling temperatures; open squares: beam search widths.")

quality_name = quality.removesuffix("_mean")
written = [S.CHECKPOINT, S.METHOD, S.DECODING, quality, S.se_col(quality_name), S.N, diversity]
written = agg.sort_values([S.STEP, S.RUN, S.KIND, S.TEMPERATURE, S.BEAMS])[written]
st.markdown(f"**{quality_name} per run, as the sweep wrote it** (`{data.AGGREGATE_FILE}`: mean over samples, "
            "standard error of that mean)")  # fmt: skip
widgets.table(written, f"aggregate-{split}-{quality_name}")
