"""Streamlit pieces shared by the pages: the page context; selection widgets whose value lives in the URL, so a
link opens the same view; the link itself; a chart shown with its image and CSV exports, a table with its CSV.

A selection is written to the URL as the option's own name (`url`, `str` by default: a run path, a step, a
prompt id), never as the label shown, so a link survives a change of wording or of the scores in a label.
"""

import io
import re
from urllib.parse import urlencode, urlsplit

import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from app import data

# The format the mode bar's camera button saves a Plotly chart in, chosen in the sidebar (app/main.py).
IMAGE_FORMATS = ("png", "svg")
IMAGE_FORMAT = "image"  # its key in the URL and the session


def context():
    """(runs root, runs table, results table) of the directory the app was started on."""
    root = data.runs_root()
    runs, results, _ = data.index(root)
    return root, runs, results


def _linked(key: str, options, url, many: bool) -> list | None:
    """The options the link's query parameter `key` names, or None when it names none. A value naming no option
    here (a run since deleted, a mistyped link) is reported on the page and the default shown instead."""
    if key not in st.query_params:
        return None
    wanted = st.query_params.get_all(key)
    if many and wanted == [""]:  # an empty multiselect, written as `key=`
        return []
    named = {url(o): o for o in options}
    unknown = [w for w in wanted if w not in named]
    if unknown:
        st.warning(f"The link's {key}={', '.join(map(repr, unknown))} is not here; showing the default instead.")
        return None
    return [named[w] for w in (wanted if many else wanted[:1])]


def select(where, label: str, options, key: str, index: int = 0, url=str, **kwargs):
    """`where.selectbox` (where: st or a column) starting on the option the URL names, else on `index`; its value
    is written back to the URL under `key`."""
    options = list(options)
    linked = _linked(key, options, url, many=False)
    if linked:
        index = options.index(linked[0])
    value = where.selectbox(label, options, index=index, key=key, **kwargs)
    st.query_params[key] = url(value)
    return value


def search(where, label: str, key: str, **kwargs) -> str:
    """`where.text_input` starting on the text the URL names under `key`, else empty; written back to the URL
    (left out of it when empty)."""
    value = where.text_input(label, value=st.query_params.get(key, ""), key=key, **kwargs)
    if value:
        st.query_params[key] = value
    else:
        st.query_params.pop(key, None)
    return value


def segmented(where, label: str, options, key: str, default, url=str, **kwargs):
    """`where.segmented_control` with one required choice, its options wrapping in a narrow column, starting
    on the option the URL names, else on `default`; written back to the URL under `key`."""
    options = list(options)
    linked = _linked(key, options, url, many=False)
    value = where.segmented_control(
        label, options, default=linked[0] if linked else default, required=True, key=key, wrap=True, **kwargs
    )  # wrapped onto more rows where the column is narrow, not scrolled out of sight
    st.query_params[key] = url(value)
    return value


def multiselect(where, label: str, options, key: str, default, url=str, **kwargs) -> list:
    """`where.multiselect` starting on the options the URL names (none: `key=`), else on `default`; written back
    to the URL under `key`, one value per option."""
    options = list(options)
    linked = _linked(key, options, url, many=True)
    value = where.multiselect(label, options, default=default if linked is None else linked, key=key, **kwargs)
    st.query_params[key] = [url(v) for v in value] or ""
    return value


SIDE_BY_SIDE_MIN_PX = 400  # narrower than this, a chart's labels crowd: the charts go one under the other


def side_by_side(key: str, n: int = 2) -> list:
    """`n` containers side by side while each can be SIDE_BY_SIDE_MIN_PX wide, one under the other in a
    narrower page (a browser at 800 px with the sidebar open): a wrapping row whose children may not shrink
    below that width (st.columns would squeeze them instead)."""
    st.html(f"<style>.st-key-{key} > div {{ flex: 1 1 {SIDE_BY_SIDE_MIN_PX}px !important; "
            f"min-width: min({SIDE_BY_SIDE_MIN_PX}px, 100%) !important; }}</style>")  # fmt: skip
    row = st.container(horizontal=True, wrap=True, key=key)
    return [row.container(width="stretch", key=f"{key}-{i}") for i in range(n)]


def link(page_path: str) -> str:
    """The address of the view shown now: the app's own origin and base path (from the browser's URL,
    st.context.url; empty under AppTest), the page's path and every selection written to the URL."""
    here = urlsplit(st.context.url or "")
    base = st.get_option("server.baseUrlPath").strip("/")
    origin = f"{here.scheme}://{here.netloc}/" if here.netloc else "/"
    path = "/".join(p for p in (base, page_path) if p)
    query = urlencode([(k, v) for k in st.query_params for v in st.query_params.get_all(k)])
    return f"{origin}{path}" + (f"?{query}" if query else "")


def image_config(name: str) -> dict:
    """Plotly's configuration: the camera button saves `name` in the format picked in the sidebar."""
    fmt = st.session_state.get(IMAGE_FORMAT, IMAGE_FORMATS[0])
    return {"displaylogo": False, "toImageButtonOptions": {"format": fmt, "filename": name, "scale": 2}}


def _file_name(name: str) -> str:
    return re.sub(r"[^\w.=-]+", "_", name)  # a file name, and a widget key


def chart(fig: go.Figure, table: pd.DataFrame, name: str, slot: str | None = None) -> None:
    """A Plotly chart whose mode bar saves `name`.png or `name`.svg (the sidebar's choice), and a button
    downloading its table as `name`.csv. `slot`: the chart's place on its page, which keys it (default: `name`):
    a chart whose name follows a widget keeps its slot when the widget changes, so the browser redraws it in
    place instead of building a new one."""
    name = _file_name(name)
    slot = name if slot is None else slot
    st.plotly_chart(fig, config=image_config(name), key=f"chart-{slot}")
    st.download_button(
        "Download CSV", data=lambda: table.to_csv(index=False), file_name=f"{name}.csv", mime="text/csv",
        key=f"csv-{slot}", icon=":material/download:",
    )  # fmt: skip


def figure_downloads(fig, name: str, table: pd.DataFrame | None = None, key: str = "") -> None:
    """Buttons saving a matplotlib figure as `name`.png and `name`.svg, and its table as `name`.csv if given;
    `key` tells apart the buttons of one figure shown twice on a page."""
    name = _file_name(name)

    def saved(fmt: str) -> bytes:  # on the button's click only (a figure closed by pyplot still saves)
        out = io.BytesIO()
        fig.savefig(out, format=fmt, bbox_inches="tight")
        return out.getvalue()

    row = st.container(horizontal=True)
    for fmt, mime in zip(IMAGE_FORMATS, ("image/png", "image/svg+xml")):
        row.download_button(fmt.upper(), data=lambda fmt=fmt: saved(fmt), file_name=f"{name}.{fmt}", mime=mime,
                            key=f"{fmt}-{name}{key}", icon=":material/download:")  # fmt: skip
    if table is not None:
        row.download_button("CSV", data=lambda: table.to_csv(index=False), file_name=f"{name}.csv", mime="text/csv",
                            key=f"csv-{name}{key}", icon=":material/download:")  # fmt: skip


def text_block(text: str) -> None:
    """Model or data text shown verbatim (no Markdown, no HTML), wrapped."""
    st.code(text, language=None, wrap_lines=True)


def table(frame: pd.DataFrame, name: str) -> None:
    """A table and a button downloading it as `name`.csv."""
    name = _file_name(name)
    st.dataframe(frame, hide_index=True, key=f"table-{name}")
    st.download_button(
        "Download CSV", data=lambda: frame.to_csv(index=False), file_name=f"{name}.csv", mime="text/csv",
        key=f"csv-{name}", icon=":material/download:",
    )  # fmt: skip
