"""The workbench app: runs, token rewards, quality vs diversity, rewards vs quality, samples.

    streamlit run app/main.py -- --runs-dir runs/demo      # or: make app

This file only routes: it names the pages (app/pages/), and shows what to run while the runs directory is
empty. The app reads nothing outside --runs-dir (app/safety.py).
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # `streamlit run` puts only app/ on the path

import streamlit as st  # noqa: E402

from app import data  # noqa: E402

EMPTY = """No runs in `{root}` yet. Fill it with the demo, or train and analyse your own:

```
make demo                                                   # trains runs/demo/mle and runs/demo/iqlearn
python -m irl train --config configs/demo_mle.yaml --output_dir {root}/mle
python -m analysis sweep --run {root}/mle                   # decoding sweep: samples and aggregates
python -m analysis rewards --checkpoint {root}/mle/checkpoint-300 --data validation
```
then press **Reload** (or start the app with `-- --runs-dir DIR` to browse another directory)."""

st.set_page_config(page_title="IRL workbench", layout="wide")
PAGES = [
    st.Page("pages/runs.py", title="Runs", icon=":material/table_chart:", default=True),
    st.Page("pages/token_rewards.py", title="Token rewards", icon=":material/format_color_text:"),
    st.Page("pages/quality_diversity.py", title="Quality vs diversity", icon=":material/scatter_plot:"),
    st.Page("pages/rewards_quality.py", title="Rewards vs quality", icon=":material/insights:"),
    st.Page("pages/samples.py", title="Samples", icon=":material/notes:"),
]
page = st.navigation(PAGES)
root = data.runs_root()
runs, _, refused = data.index(root)
with st.sidebar:
    st.caption(f"Runs directory: `{root}`")
    if st.button("Reload", icon=":material/refresh:"):
        data.clear()
        st.rerun()
for message in refused:
    st.warning(f"Skipped: {message}")
if runs.empty:
    st.info(EMPTY.format(root=root))
else:
    page.run()
