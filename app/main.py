"""The workbench app: runs, token rewards, quality vs diversity, rewards vs quality, samples, findings.

    streamlit run app/main.py -- --runs-dir runs/demo      # or: make app
    streamlit run app/main.py -- --runs-dir DIR --reports-dir DIR2

The Findings page opens the findings reports of the grids under --runs-dir and, read-only, the reports shipped
under --reports-dir (default: this repository's docs/findings, <name>/findings/ each); it is the one page that
opens while the runs directory holds no runs.

This file only routes: it names the pages (app/views/), offers the link to the view shown (each page keeps its
selections in the URL, app/widgets.py) and the format charts are saved in, shows what to run while the runs
directory is empty, lists the entries of the runs directory it skipped (app/data.py `index`), and shows a damaged
result file's name and what to do instead of a page (analysis/results.py `FileError`). The app reads nothing outside
--runs-dir and --reports-dir (app/safety.py). The pages are not in a folder named pages/: Streamlit would serve a
first request for a page's URL from such a folder directly, bypassing this file.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # `streamlit run` puts only app/ on the path

import streamlit as st  # noqa: E402

from app import data, widgets  # noqa: E402
from common.io import FileError

EMPTY = """No runs in `{root}` yet. Fill it with the demo, or train and analyse your own:

```
make demo                                               # trains runs/demo/mle and runs/demo/iqlearn
python -m irl train --config configs/demo_mle.yaml --output_dir {root}/mle
python -m analysis sweep --run {root}/mle               # decoding sweep: samples and aggregates
python -m analysis rewards --checkpoint {root}/mle/checkpoint-300 --data test              # the sweep's samples
python -m analysis rewards --checkpoint {root}/mle/checkpoint-300 --data math-preferences  # preference pairs
```
then press **Reload** (or start the app with `-- --runs-dir DIR` to browse another directory). The **Findings** page
opens the findings reports shipped in `docs/findings` meanwhile."""

st.set_page_config(page_title="IRL workbench", layout="wide")
FINDINGS = st.Page("views/findings.py", title="Findings", icon=":material/fact_check:")
PAGES = [
    st.Page("views/runs.py", title="Runs", icon=":material/table_chart:", default=True),
    st.Page("views/token_rewards.py", title="Token rewards", icon=":material/format_color_text:"),
    st.Page("views/quality_diversity.py", title="Quality vs diversity", icon=":material/scatter_plot:"),
    st.Page("views/rewards_quality.py", title="Rewards vs quality", icon=":material/insights:"),
    st.Page("views/samples.py", title="Samples", icon=":material/notes:"),
    FINDINGS,
]
page = st.navigation(PAGES)
root = data.runs_root()
runs, _, skipped = data.index(root)
with st.sidebar:
    st.caption(f"Runs directory: `{root}`")
    if st.button("Reload", icon=":material/refresh:"):
        data.clear()
        st.rerun()
    st.segmented_control(
        "Save charts as", widgets.IMAGE_FORMATS, default=widgets.IMAGE_FORMATS[0], required=True,
        format_func=str.upper, key=widgets.IMAGE_FORMAT, persist_state="session",
        help="The format the camera button of each chart's mode bar saves in; tables download as CSV.",
    )  # fmt: skip
    share = st.empty()  # filled once the page has written its selections to the URL
if skipped:  # named by their paths under the root, shown verbatim (a file name is not markup)
    st.warning(f"Skipped {len(skipped)} entr{'y' if len(skipped) == 1 else 'ies'} of the runs directory, not read:")
    widgets.text_block("\n".join(skipped))
if runs.empty and page.url_path != FINDINGS.url_path:  # the Findings page also opens the shipped reports
    st.info(EMPTY.format(root=root))
else:
    # the URL holds the selections of the page shown: another page's are dropped when the user moves on (a link
    # opened in a new session keeps its own)
    if st.session_state.setdefault("params_of", page.url_path) != page.url_path:
        st.query_params.clear()
        st.session_state["params_of"] = page.url_path
    try:
        page.run()
    except FileError as e:  # a damaged result file: named, and nothing computed from it is shown
        st.error(f"{e}")
    with share.popover("Copy link", icon=":material/link:", help="This view: the page and its selections"):
        st.caption("The address of this page with its selections (the copy button is at the right):")
        st.code(widgets.link(page.url_path), language=None, wrap_lines=True)
