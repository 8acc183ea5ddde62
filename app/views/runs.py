"""Runs: every run under the runs root, and the training curves of the selected ones (band over seeds)."""

import pandas as pd
import streamlit as st

from analysis import schema as S
from app import charts, data, tables, widgets


@st.cache_data(max_entries=32, show_spinner=False)
def curves_chart(long: pd.DataFrame):
    """The seed bands of the selected runs' metrics (tables.seed_band) and their figure: selecting the same runs
    again reuses them."""
    bands = tables.seed_band(long)
    return bands, charts.curves_figure(bands, tables.CURVES)


root, runs, results = widgets.context()
st.header("Runs")
# blank, not "nan", where a setting does not apply (gamma and alpha of MLE; analysis.results.run_attributes)
shown = runs.assign(**{c: runs[c].map(lambda v: "" if pd.isna(v) else f"{v:g}") for c in (S.LAM, "gamma", "alpha")})
# the selected rows live in the URL as their runs' paths (`run=mle/seed0&run=...`), so a link selects them again
linked = st.query_params.get_all("run")
unknown = sorted(set(linked) - set(runs[S.RUN]))
if unknown:
    st.warning(f"The link's run={', '.join(map(repr, unknown))} is not here; selected without it.")
rows = [i for i, run in enumerate(runs[S.RUN]) if run in linked]
event = st.dataframe(
    shown, hide_index=True, on_select="rerun", selection_mode="multi-row", key="runs-table",
    selection_default={"selection": {"rows": rows}} if rows else None,
)  # fmt: skip
picked = runs.iloc[event.selection.rows] if event.selection.rows else runs
st.query_params["run"] = list(runs[S.RUN].iloc[event.selection.rows])
st.caption(
    f"Curves of {'the selected' if event.selection.rows else 'all'} {len(picked)} run(s) (select rows to "
    "narrow): the line is the mean over the runs of a method (its seeds), the band their min to max."
)
long = pd.concat(
    [tables.long_metrics(data.metrics(root, run)).assign(**{S.METHOD: method, S.SEED: seed})
     for run, method, seed in picked[[S.RUN, S.METHOD, S.SEED]].itertuples(index=False)]
)  # fmt: skip
if long.empty:
    st.info("The selected runs have logged no training metrics yet.")
else:
    bands, figure = curves_chart(long)
    widgets.chart(figure, bands, "training-curves")
