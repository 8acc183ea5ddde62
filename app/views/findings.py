"""Findings: for a grid under the runs directory (`python -m findings run`) or a report shipped under the reports
root (docs/findings/<name>/findings/ by default, `--reports-dir`), whether each of the paper's findings holds
there, with its rule, the numbers behind the verdict and its figure, the runs the report lacks and the wall
times of the commands behind it. Everything shown was computed once by the findings code (findings.json and the
parquet tables of <grid>/findings/); the figures are drawn from those tables by the same builders
(findings/figures.py) that drew the report's PNGs. Each root is read only inside itself (app/safety.py)."""

import matplotlib.pyplot as plt
import streamlit as st

from app import data, widgets
from app.safety import OutsideRunsDir, inside, scandir
from findings import figures, layout as L
from irl import runs as R

SUMMARY = f"{L.FINDINGS_DIR}/{L.SUMMARY}"
FIGURE_TABLES = {  # the table each figure is drawn from, offered as CSV beside it
    L.FIG_QUALITY_DIVERSITY: L.SEED_AGGREGATE, L.FIG_BEAM_SEARCH: L.SEED_AGGREGATE, L.FIG_SMALL_DATA: L.SMALL_DATA,
    L.FIG_REWARD_CORRELATION: L.CORRELATION_BY_LAM,
}  # fmt: skip


def grids(root, depth: int = 3) -> list[str]:
    """Paths under the root (at most `depth` levels down, "" for the root itself) of grid directories holding a
    findings summary. A directory is listed only once `inside` has accepted it (app/safety.py); symlinks are not
    followed, and run directories (with config.yaml) are not searched."""
    found, todo = [], [("", 0)]
    while todo:
        relative, level = todo.pop()
        try:
            if inside(root, f"{relative}/{SUMMARY}" if relative else SUMMARY).is_file():
                found.append(relative)
            entries = scandir(root, relative or ".") if level < depth else []
        except (OutsideRunsDir, OSError):
            continue
        if any(e.name == R.CONFIG for e in entries):
            continue
        todo += [(f"{relative}/{e.name}" if relative else e.name, level + 1)
                 for e in entries if e.is_dir(follow_symlinks=False) and e.name != L.FINDINGS_DIR]  # fmt: skip
    return sorted(found)


# A grid is named in the URL by its root and its path under that root, so a link survives either root growing.
RUNS_SOURCE, REPORTS_SOURCE = "runs", "reports"
reports = data.reports_root()
roots = {RUNS_SOURCE: data.runs_root(), REPORTS_SOURCE: reports}
labels = {RUNS_SOURCE: "runs", REPORTS_SOURCE: "docs/findings" if reports == data.DEFAULT_REPORTS_DIR else reports.name}
NAMELESS = {RUNS_SOURCE: "(the runs directory itself)", REPORTS_SOURCE: "(the reports directory itself)"}


def label(option: str) -> str:
    source, relative = option.split(":", 1)
    return f"{labels[source]}: {relative or NAMELESS[source]}"


st.header("Findings")
found = [f"{source}:{g}" for source in (RUNS_SOURCE, REPORTS_SOURCE) for g in grids(roots[source])]
if not found:
    st.info(f"No findings under this runs directory yet, nor shipped under `{reports}`. Run "
            "`python -m findings run --config configs/findings/quick.yaml` (or `make findings-quick`), then open "
            "the app on its runs directory.")  # fmt: skip
    st.stop()
# the first runs grid if there is one (options list them first), else the first shipped report
source, grid = widgets.select(st, "Grid", found, key="grid", format_func=label).split(":", 1)
root = roots[source]
base = f"{grid}/{L.FINDINGS_DIR}" if grid else L.FINDINGS_DIR
summary = data.json_file(root, f"{base}/{L.SUMMARY}")
tables = {name: data.read_parquet(root, f"{base}/{name}.parquet") for name in L.TABLES
          if inside(root, f"{base}/{name}.parquet").is_file()}  # fmt: skip
st.caption(f"Report, tables and figures in `{root / base}` ({L.REPORT}, {L.TIMINGS}).")

# optional keys: a report written before they existed says nothing about runs it lacks
lacking = [f"{name}: not started" for name in summary.get("missing_runs", [])]
lacking += [f"{name}: started, not at max_steps" for name in summary.get("incomplete_runs", [])]
if lacking:
    st.warning(f"This report lacks {len(lacking)} of its grid's planned runs: its findings were computed without them.")
    widgets.text_block("\n".join(lacking))  # run names shown verbatim, not as Markdown
for t in summary.get("timings", []):  # one line per `grid`/`run` invocation behind the report
    st.caption(f"Wall time of {L.timing_text(t)}.")

st.caption("Each rule was fixed in code before the runs (findings/rules.py); numbers are means over seeds ± their "
           "standard error, intervals 95%. A finding that is not shown does not hold here.")  # fmt: skip
st.dataframe(
    [{"finding (paper)": f"{f['claim']} ({f['paper_figure']})", "verdict here": f["verdict_text"],
      "comparisons": len(f["comparisons"])} for f in summary["findings"]],
    hide_index=True,
)  # fmt: skip
drawn = figures.draw(tables, summary["quality"])
for n, f in enumerate(summary["findings"], 1):
    st.subheader(f"{n}. {f['title']}")
    st.markdown(f"**Paper ({f['paper_figure']}).** {f['claim']}  \n**Verdict: {f['verdict_text']}.**")
    with st.expander("Rule"):
        st.text(f["rule"])
    if f["note"]:
        st.info(f"Not tested: {f['note']}.")
    st.text("\n".join(f"- {line}" for line in f["evidence"]))
    fig = drawn.get(f["figure"])
    if fig is not None:
        st.pyplot(fig, clear_figure=False)
        widgets.figure_downloads(fig, f["figure"].removesuffix(".png"), tables.get(FIGURE_TABLES[f["figure"]]), f"-{n}")
for fig in drawn.values():
    if fig is not None:
        plt.close(fig)
if L.RUNS in tables:
    with st.expander(f"Runs ({len(tables[L.RUNS])})"):
        st.dataframe(tables[L.RUNS], hide_index=True)
