"""Quality vs diversity: the Pareto scatter of (checkpoint, decoding) points averaged over seeds, with each
method's front, quality against sampling temperature with beam search apart, the hypervolume of each method's
front per checkpoint step (analysis/pareto.py, reference point stated), and each run's means and standard
errors as analysis/sweep.py wrote them (the seed means and their SEs over seeds are analysis/stats.py's)."""

import streamlit as st

from analysis import pareto, stats
from analysis import schema as S
from app import charts, data, tables, widgets
from irl import runs as R


@st.cache_data(max_entries=32, show_spinner=False)
def temperature_chart(agg, quality: str, baselines):
    """Quality against temperature (the seed means of `agg`) and its table: the same whichever diversity axis is
    picked, so switching that axis reuses it."""
    by_temperature = stats.aggregate_seeds(agg.dropna(subset=[quality]), metrics=[quality])
    figure = charts.temperature_figure(by_temperature, quality, baselines if not baselines.empty else None)
    return figure, by_temperature


@st.cache_data(max_entries=32, show_spinner=False)
def pareto_chart(agg, quality: str, diversity: str):
    """The (checkpoint, decoding) points of `agg` averaged over seeds with their fronts, and their figure (None
    when no setting has both measures): switching an axis back reuses them."""
    points = tables.pareto_points(agg, quality, diversity)
    return points, None if points.empty else charts.pareto_figure(points, quality, diversity)


@st.cache_data(max_entries=32, show_spinner=False)
def hypervolume_chart(every_step, quality: str, diversity: str):
    """Each method's front's hypervolume per step, over every step's seed means, and its figure (None when there
    is none to draw)."""
    over_seeds = stats.aggregate_seeds(every_step.dropna(subset=[quality, diversity]), metrics=[quality, diversity])
    volumes = pareto.hypervolume_by(over_seeds, quality, diversity)
    drawn = diversity in pareto.HYPERVOLUME_REFERENCE and not volumes.empty
    return volumes, charts.hypervolume_figure(volumes, quality, diversity) if drawn else None


root, runs, results = widgets.context()
st.header("Quality vs diversity")
swept = results[(results["kind"] == R.SWEEP) & results["files"].map(lambda f: R.AGGREGATE in f)]
if swept.empty:
    st.info("No decoding sweeps yet. Run `python -m analysis sweep --run <run>`.")
    st.stop()

top = st.columns([1, 1, 1, 3])
split = widgets.select(top[0], "Split", sorted(swept["name"].unique()), key="split")
agg = S.with_grid_columns(data.gather(root, results, R.SWEEP, split, R.AGGREGATE, runs))
# the metrics of the newest checkpoints first (the default): runs of several tasks share a runs directory
newest = agg[agg[S.STEP] == agg[S.STEP].max()]
metrics = [m for m in S.quality_columns(S.HIGHER_IS_BETTER) if S.mean_col(m) in agg]
metrics.sort(key=lambda m: bool(newest[S.mean_col(m)].isna().all()))  # stable: the schema's order otherwise
metric = widgets.select(top[1], "Quality", metrics, key="quality")
quality = S.mean_col(metric)
diversity = widgets.select(
    top[2], "Diversity", [d for d in S.DIVERSITY_COLUMNS if d != S.ENTROPY and d in agg.columns], key="diversity"
)
steps = sorted(agg[S.STEP].unique())
picked = widgets.multiselect(
    top[3], "Checkpoint steps", steps, key="steps", default=steps[-1:], help="None picked: all."
)  # fmt: skip
picked = picked or steps
every_step, agg = agg, agg[agg[S.STEP].isin(picked)]

left, right = widgets.side_by_side("charts")
with left:
    points, figure = pareto_chart(agg, quality, diversity)
    if figure is None:
        st.info(f"No setting has both {quality} and {diversity} (greedy decoding has no Self-BLEU of one sample).")
    else:
        widgets.chart(figure, points, f"pareto-{split}-{quality}-{diversity}", slot="pareto")
        st.caption("Error bars: standard error over seeds. Lines: each method's Pareto front at each step picked (one "
                   "dash per step: pick several steps to see the front move over training). "
                   "Marker: ● greedy, ◆ sampling, ■ beam search.")  # fmt: skip
baselines = data.gather(root, results, R.SWEEP, split, R.BASELINES, runs)
if not baselines.empty:  # the same prompts give the same baselines in every run of a task
    baselines = baselines.drop_duplicates([S.BASELINE, S.BASELINE_SETTING, S.N])
with right:
    figure, by_temperature = temperature_chart(agg, quality, baselines)
    widgets.chart(figure, by_temperature, f"temperature-{split}-{quality}")
    st.caption("Lines: greedy (at 0) and sampling temperatures; open squares: beam search widths; dashed: the "
               "task's trivial baselines on the same prompts.")  # fmt: skip

# each method's front per step, over every step: how far it reaches, one number per checkpoint
volumes, figure = hypervolume_chart(every_step, quality, diversity)
if diversity not in pareto.HYPERVOLUME_REFERENCE:
    st.caption(f"No hypervolume against {diversity}: it has no worst value to bound the area with.")
elif not volumes.empty:
    st.markdown(f"**Hypervolume of each method's front** ({quality} against {diversity}, seed means): the area its "
                f"points dominate, bounded by the reference point {volumes['reference'].iloc[0]} (each axis' worst "
                "value); larger is a front reaching further")  # fmt: skip
    left, right = widgets.side_by_side("hypervolume")
    with left:
        name = f"hypervolume-{split}-{quality}-{diversity}"
        widgets.chart(figure, volumes, name, slot="hypervolume")
    with right:
        widgets.table(volumes, f"{name}-table")

written = [S.CHECKPOINT, S.METHOD, S.DECODING, quality, S.se_col(metric), S.N, diversity]
written = agg.sort_values([S.STEP, S.RUN, *S.GRID_ORDER], key=S.grid_sort_key)[written]
st.markdown(f"**{metric} per run, as the sweep wrote it** (`{R.AGGREGATE}`): the mean over samples and its standard "
            "error, clustered by prompt (a prompt's K samples are one cluster)")  # fmt: skip
widgets.table(written, f"aggregate-{split}-{metric}")
if not baselines.empty and quality in baselines:
    st.markdown(f"**Trivial baselines** (`{R.BASELINES}`): the input's first k words and the best constant string, "
                "settings chosen on train and validation, scored by the sweep's metric code on the same prompts")
    widgets.table(baselines[[S.BASELINE, S.BASELINE_SETTING, quality, S.se_col(metric), S.N]], f"baselines-{split}")
