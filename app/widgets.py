"""Streamlit pieces shared by the pages: the page context, and a chart shown with its PNG and CSV exports."""

import re

import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from app import data


def context():
    """(runs root, runs table, results table) of the directory the app was started on."""
    root = data.runs_root()
    runs, results, _ = data.index(root)
    return root, runs, results


def chart(fig: go.Figure, table: pd.DataFrame, name: str) -> None:
    """A Plotly chart whose mode bar saves `name`.png, and a button downloading its table as `name`.csv."""
    name = re.sub(r"[^\w.=-]+", "_", name)  # a file name, and a widget key
    config = {"displaylogo": False, "toImageButtonOptions": {"format": "png", "filename": name, "scale": 2}}
    st.plotly_chart(fig, config=config, key=f"chart-{name}")
    st.download_button(
        "Download CSV", data=lambda: table.to_csv(index=False), file_name=f"{name}.csv", mime="text/csv",
        key=f"csv-{name}", icon=":material/download:",
    )  # fmt: skip


def text_block(text: str) -> None:
    """Model or data text shown verbatim (no Markdown, no HTML), wrapped."""
    st.code(text, language=None, wrap_lines=True)


def table(frame: pd.DataFrame, name: str) -> None:
    """A table and a button downloading it as `name`.csv."""
    name = re.sub(r"[^\w.=-]+", "_", name)
    st.dataframe(frame, hide_index=True, key=f"table-{name}")
    st.download_button(
        "Download CSV", data=lambda: frame.to_csv(index=False), file_name=f"{name}.csv", mime="text/csv",
        key=f"csv-{name}", icon=":material/download:",
    )  # fmt: skip
