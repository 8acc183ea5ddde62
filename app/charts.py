"""Pure builders from DataFrames to Plotly figures (and the token HTML). No streamlit, no I/O: each takes the
table the page shows next to it, so a figure and its CSV always agree.

Colours: one per method, assigned in sorted method order. Text from the data is escaped before it enters
hover labels or HTML (app/safety.py).
"""

import textwrap

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.colors import qualitative
from plotly.subplots import make_subplots

from analysis import schema as S
from app.safety import escape
from app import tables
from app.tables import DIFFERENCES, delta

SYMBOLS = {"greedy": "circle", "sample": "diamond", "beam": "square"}
TOKEN_QUANTITIES = {S.REWARD: "reward", S.LOGP: "log π", S.V: "V", S.Q: "Q", S.TOKEN_ENTROPY: "entropy"}
RUNNING_R = "running_R"  # cumulative sum of reward along the completion


def method_colors(methods) -> dict[str, str]:
    """A colour per method, in sorted order of the method labels."""
    palette = qualitative.Plotly
    return {m: palette[i % len(palette)] for i, m in enumerate(sorted(set(methods)))}


# Characters per line of a chart's title (17 px) and subtitle (13 px): a line fits the 400 px of the narrowest
# chart the pages draw side by side (app/widgets.py side_by_side), so no text leaves the figure.
TITLE_CHARS, SUBTITLE_CHARS = 40, 54
DEFAULT_HEIGHT = 450  # Plotly's, in px
LEGEND_ROW_PX = 20  # a legend entry's row


def _layout(fig: go.Figure, title: str, x: str, y: str, rule: str = "") -> go.Figure:
    """Title, axis titles, tight margins, the legend in rows under the axes (at the right it would take half of
    a narrow column's width from the plot), and as a subtitle how the rewards were read (tables.reward_rule:
    "r_t = ..., γ = ...; <terminal rule>"), escaped, on two lines."""
    title = textwrap.wrap(title, TITLE_CHARS)
    subtitle = [line for part in escape(rule).split("; ", 1) for line in textwrap.wrap(part, SUBTITLE_CHARS)]
    fig.update_layout(
        # from the figure's top down: the title, its subtitle, then the plot (the top margin holds both)
        title=dict(text="<br>".join(title), subtitle=dict(text="<br>".join(subtitle)), yref="container", y=1,
                   yanchor="top", pad=dict(t=18)),
        xaxis_title=x, yaxis_title=y,
        legend=dict(title_text="", orientation="h", yref="container", y=0, yanchor="bottom", x=0, xanchor="left"),
        margin=dict(l=10, r=10, t=38 + 24 * len(title) + 18 * len(subtitle), b=10),
    )  # fmt: skip
    # a long legend (a line per method, step and sampling filter) gets the height it needs: Plotly gives a legend
    # under the plot at most half the figure's height and scrolls the rest out of sight, one entry per row in a
    # narrow column
    entries = sum(1 for trace in fig.data if trace.showlegend is not False and trace.name)
    if fig.layout.height is None and 2 * LEGEND_ROW_PX * entries > DEFAULT_HEIGHT:
        fig.update_layout(height=2 * LEGEND_ROW_PX * entries + 2 * LEGEND_ROW_PX)
    return fig


def _rgba(hex_color: str, alpha: float) -> str:
    r, g, b = (int(hex_color[i : i + 2], 16) for i in (1, 3, 5))
    return f"rgba({r},{g},{b},{alpha})"


def curves_figure(bands: pd.DataFrame, titles: dict[str, str]) -> go.Figure:
    """Training curves, one panel per logged key in `titles` order (two columns): per method, the mean over
    seeds as a line and the min-max over seeds as a band. `bands` has key, method, step, mean, lo, hi,
    n_seeds (tables.seed_band per key)."""
    keys = [k for k in titles if (bands["key"] == k).any()]
    rows = (len(keys) + 1) // 2
    fig = make_subplots(rows=rows, cols=2, subplot_titles=[titles[k] for k in keys], vertical_spacing=0.3 / rows)
    colors = method_colors(bands[S.METHOD])
    for i, key in enumerate(keys):
        at = dict(row=i // 2 + 1, col=i % 2 + 1)
        for method, g in bands[bands["key"] == key].groupby(S.METHOD, sort=True):
            c = colors[method]
            fig.add_trace(go.Scatter(
                x=np.r_[g[S.STEP], g[S.STEP][::-1]], y=np.r_[g["hi"], g["lo"][::-1]], fill="toself", mode="lines",
                fillcolor=_rgba(c, 0.2), line=dict(width=0), hoverinfo="skip", showlegend=False, legendgroup=method,
                name=f"{method} seeds",
            ), **at)  # fmt: skip
            fig.add_trace(go.Scatter(
                x=g[S.STEP], y=g["mean"], mode="lines", name=method, line=dict(color=c), legendgroup=method,
                showlegend=i == 0, customdata=g[["n_seeds"]],
                hovertemplate=f"{escape(titles[key])}<br>step %{{x}}: %{{y:.4g}}<br>%{{customdata[0]}} seed(s)",
            ), **at)  # fmt: skip
    fig.update_xaxes(title_text="step", row=rows)
    fig.update_layout(height=260 * rows + 60, margin=dict(l=10, r=10, t=40, b=10), legend_title_text="")
    return fig


def pareto_figure(points: pd.DataFrame, quality: str, diversity: str) -> go.Figure:
    """Quality (y) against diversity (x): one marker per (method, step, decoding) with error bars over seeds,
    colour by method, symbol by decoding kind, and the Pareto front of each method at each step (rows with
    on_front) as a line, one dash per step: the front moving over training.
    `points` is tables.pareto_points' output."""
    fig = go.Figure()
    colors = method_colors(points[S.METHOD])
    hover = (
        "%{customdata[0]}<br>step %{customdata[1]}, %{customdata[2]}<br>"
        f"{escape(quality)} %{{y:.4g}}<br>{escape(diversity)} %{{x:.4g}}<br>%{{customdata[3]}} seed(s)<extra></extra>"
    )
    for (method, kind), g in points.groupby([S.METHOD, S.KIND], sort=True):
        fig.add_trace(go.Scatter(
            x=g[diversity], y=g[quality], mode="markers", name=f"{method} · {kind}", legendgroup=method,
            marker=dict(color=colors[method], symbol=SYMBOLS.get(kind, "circle"), size=10),
            error_x=dict(type="data", array=g[S.seed_se_col(diversity)], visible=True, thickness=1),
            error_y=dict(type="data", array=g[S.seed_se_col(quality)], visible=True, thickness=1),
            customdata=np.c_[g[S.METHOD].map(escape), g[S.STEP], g[S.DECODING].map(escape), g[S.N_SEEDS]],
            hovertemplate=hover,
        ))  # fmt: skip
    steps = sorted(points[S.STEP].unique())
    dashes = ("dot", "dash", "dashdot", "longdash", "longdashdot", "solid")  # a step's fronts share a dash
    for (method, step), g in points[points[S.ON_FRONT]].groupby([S.METHOD, S.STEP], sort=True):
        g = g.sort_values(diversity, kind="stable")
        fig.add_trace(go.Scatter(
            x=g[diversity], y=g[quality], mode="lines", legendgroup=method,
            name=f"{method} front" if len(steps) == 1 else f"{method} @ {step} front",
            line=dict(color=colors[method], dash=dashes[steps.index(step) % len(dashes)]), hoverinfo="skip",
        ))  # fmt: skip
    x_title = diversity if S.HIGHER_IS_BETTER[diversity] else f"{diversity} (lower = more diverse)"
    return _layout(fig, f"{quality} vs {diversity}", x_title, quality)


def temperature_figure(points: pd.DataFrame, quality: str, baselines: pd.DataFrame | None = None) -> go.Figure:
    """Quality against sampling temperature: a line per (method, step) through greedy (temperature 0) and the sampling
    settings (one more, dotted, per top-p/min-p filter swept), with error bars over seeds; beam search, if swept, in
    a panel of its own on the left, one square per (method, width) beside each other at each width (the widths are
    the axis' ticks, so no label of a point can cover another); a text task's trivial baselines (`baselines`, the
    sweep's baselines.parquet rows) as dashed horizontal lines across both, named at the right, alternately above
    and below the line."""
    points = S.with_grid_columns(points)
    beams = points[points[S.KIND] == "beam"]
    panels = 2 if len(beams) else 1
    fig = make_subplots(rows=1, cols=panels, shared_yaxes=True, column_widths=[0.3, 0.7][-panels:],
                        horizontal_spacing=0.12)  # fmt: skip
    temperature = dict(row=1, col=panels)
    found = baselines if baselines is not None and quality in baselines else pd.DataFrame(columns=[quality])
    for i, row in enumerate(found.sort_values(quality).itertuples()):
        for col in range(1, panels + 1):
            named = dict(annotation_text=escape(f"baseline: {getattr(row, S.BASELINE)}"),
                         annotation_position="top right" if i % 2 else "bottom right") if col == panels else {}
            fig.add_hline(y=getattr(row, quality), line=dict(color="grey", dash="dash", width=1), row=1, col=col,
                          exclude_empty_subplots=False, **named)  # drawn before the traces that fill the panels
    colors = method_colors(points[S.METHOD])
    several_steps = points[S.STEP].nunique() > 1
    err = S.seed_se_col(quality)
    lines = points[points[S.KIND].isin(["greedy", "sample"])]
    groups = lines.groupby([S.METHOD, S.STEP, S.TOP_P, S.MIN_P])
    for (method, step, top_p, min_p), g in sorted(groups, key=lambda kv: (*kv[0][:2], -kv[0][2], kv[0][3])):
        g = g.sort_values(S.TEMPERATURE)
        # a filtered sampler's line (greedy is on the unfiltered one): its filters in its name, dotted
        filters = [f"top_p={top_p:g}"] * (top_p != 1.0) + [f"min_p={min_p:g}"] * (min_p != 0.0)
        name = " · ".join([f"{method} @ {step}" if several_steps else method, *filters])
        fig.add_trace(go.Scatter(
            x=g[S.TEMPERATURE], y=g[quality], mode="lines+markers", legendgroup=method, name=name,
            line=dict(color=colors[method], dash="dot" if filters else "solid"),
            error_y=dict(type="data", array=g[err], visible=True, thickness=1),
            customdata=g[[S.DECODING]].map(escape), hovertemplate="%{customdata[0]}: %{y:.4g}<extra></extra>",
        ), **temperature)  # fmt: skip
    for method, g in beams.groupby(S.METHOD, sort=True):
        g = g.sort_values([S.BEAMS, S.STEP])
        fig.add_trace(go.Scatter(
            x=g[S.DECODING].map(escape), y=g[quality], mode="markers", name=f"{method} · beam", legendgroup=method,
            marker=dict(color=colors[method], symbol="square-open", size=11),
            error_y=dict(type="data", array=g[err], visible=True, thickness=1),
            customdata=np.c_[g[S.DECODING].map(escape), g[S.STEP]],
            hovertemplate="%{customdata[0]} @ %{customdata[1]}: %{y:.4g}<extra></extra>",
        ), row=1, col=1)  # fmt: skip
    if len(beams):
        order = [escape(d) for d in beams.sort_values(S.BEAMS)[S.DECODING].unique()]
        fig.update_xaxes(title_text="beam", type="category", categoryorder="array", categoryarray=order,
                         row=1, col=1)  # fmt: skip
        fig.update_layout(scattermode="group")  # the methods' squares beside each other at each width
    top = max(lines[S.TEMPERATURE].max(), 1.0) if len(lines) else 1.0
    fig.update_xaxes(title_text="temperature", range=[-0.08 * top, 1.08 * top], **temperature)  # greedy at 0
    fig.update_yaxes(title_text=quality, row=1, col=1)
    return _layout(fig, f"{quality} vs temperature", fig.layout.xaxis.title.text, quality)


def with_running_reward(tokens: pd.DataFrame) -> pd.DataFrame:
    """`tokens` of one completion, sorted by position, with RUNNING_R = cumulative sum of reward. A NaN
    reward (the last token of a truncated completion, which has no next state) adds nothing, as in R."""
    tokens = tokens.sort_values(S.POSITION)
    return tokens.assign(**{RUNNING_R: tokens[S.REWARD].fillna(0.0).cumsum()})


def tokens_html(tokens: pd.DataFrame, quantity: str, error_position=None) -> str:
    """The completion as HTML spans, one per token, background coloured by `quantity` on a diverging scale
    centred at zero (blue above, red below, opacity |value| / max |value|, none for NaN), title (hover)
    listing q, v, v_next, logp, reward, entropy (where scored) and the running sum. The token at
    `error_position` (the known first wrong token of a corrupted completion; None: unknown) is outlined and
    has the class "known-error". Token text is escaped; a newline shows as ↵."""
    tokens = with_running_reward(tokens)
    titles, marked = [], []
    for row in tokens.to_dict("records"):
        error = error_position is not None and row[S.POSITION] == error_position
        marked.append(error)
        titles.append(
            ("known first wrong token\n" if error else "")
            + f"{row[S.TOKEN]!r}  position {row[S.POSITION]}\n"
            + f"q={row[S.Q]:.3f}  v={row[S.V]:.3f}  v_next={row[S.V_NEXT]:.3f}\n"
            + f"logp={row[S.LOGP]:.3f}  reward={row[S.REWARD]:.3f}  running R={row[RUNNING_R]:.3f}"
            + (f"\nentropy={row[S.TOKEN_ENTROPY]:.3f}" if S.TOKEN_ENTROPY in row else "")
        )
    return _coloured_tokens("token-rewards", tokens[S.TOKEN], tokens[quantity], titles, marked)


def _coloured_tokens(css_class: str, texts, values, titles, marked) -> str:
    """Tokens as HTML spans in a <div class=css_class>, background on a diverging scale centred at zero (blue
    above, red below, opacity |value| / max |value|, none for NaN), hover `titles`, the `marked` ones outlined
    with the class "known-error". Texts and titles are escaped; a newline shows as ↵."""
    values = np.nan_to_num(np.asarray(values, dtype=float), nan=0.0)
    scale = np.abs(values).max() if len(values) and np.abs(values).max() > 0 else 1.0
    spans = []
    for text, value, title, error in zip(texts, values, titles, marked):
        rgb = "33,102,172" if value >= 0 else "178,24,43"
        mark = ' class="known-error"' if error else ""
        outline = "outline:2px solid #111;" if error else ""
        spans.append(
            f'<span{mark} title="{escape(title)}" style="background:rgba({rgb},{0.85 * abs(value) / scale:.3f});'
            f'{outline}border-radius:3px">{escape(text.replace(chr(10), "↵" + chr(10)))}</span>'
        )
    return (
        f'<div class="{css_class}" style="font-family:monospace;white-space:pre-wrap;line-height:1.8">'
        + "".join(spans)
        + "</div>"
    )


def _cell_colour(value: float, scale: float) -> str:
    if np.isnan(value):
        return "transparent"
    rgb = "33,102,172" if value >= 0 else "178,24,43"
    return f"rgba({rgb},{0.85 * abs(value) / scale:.3f})"


def definitions_html(tokens: pd.DataFrame, first: str, second: str, names: dict[str, str]) -> str:
    """One completion's tokens as the columns of a table whose rows are two token reward definitions (columns
    `first`, `second` of the token table) and their difference first - second, aligned token by token; each row
    coloured on its own diverging scale (definitions differ in scale), values to 2 decimals, blank where a token
    has none (the last token of a cut completion has no r_t). Scrolls sideways in its own box; text escaped."""
    tokens = tokens.sort_values(S.POSITION)
    rows = {names[first]: tokens[first].to_numpy(float), names[second]: tokens[second].to_numpy(float)}
    rows["difference"] = rows[names[first]] - rows[names[second]]
    head = "".join(f"<th>{escape(t.replace(chr(10), '↵'))}</th>" for t in tokens[S.TOKEN])
    body = []
    for name, values in rows.items():
        finite = np.abs(values[~np.isnan(values)])
        scale = finite.max() if len(finite) and finite.max() > 0 else 1.0
        cells = "".join(f'<td style="background:{_cell_colour(v, scale)}">{"" if np.isnan(v) else f"{v:.2f}"}</td>'
                        for v in values)  # fmt: skip
        body.append(f'<tr><th style="text-align:left">{escape(name)}</th>{cells}</tr>')
    return (
        '<div class="token-definitions" style="overflow-x:auto;max-width:100%">'
        '<table style="font-family:monospace;font-size:0.8em;border-collapse:collapse;white-space:pre">'
        f"<tr><th></th>{head}</tr>{''.join(body)}</table></div>"
    )


def difference_html(diff: pd.DataFrame, quantity: str, label_a: str, label_b: str) -> str:
    """One completion's tokens (tables.token_differences rows of one example) coloured by the change in
    `quantity` from checkpoint a to b (blue: up under b, red: down), the hover giving each quantity under a and
    b and its change."""
    diff = diff.sort_values(S.POSITION)
    titles = [
        f"{row[S.TOKEN]!r}  position {row[S.POSITION]}\n"
        + "\n".join(f"{q}: {row[q + '_a']:.3f} ({label_a}) → {row[q + '_b']:.3f} ({label_b}), "
                    f"Δ = {row[delta(q)]:+.3f}" for q in DIFFERENCES)
        for row in diff.to_dict("records")
    ]  # fmt: skip
    return _coloured_tokens("token-differences", diff[S.TOKEN], diff[delta(quantity)], titles, [False] * len(diff))


def token_figure(tokens: pd.DataFrame, quantity: str, title: str = "", error_position=None) -> go.Figure:
    """Per-token lines along the completion: `quantity` and the running reward shown, the other terms (q, v,
    v_next, logp, reward, entropy where scored) one legend click away; hover names the token; the known first
    wrong token, if any, marked by a vertical line."""
    tokens = with_running_reward(tokens)
    fig = go.Figure()
    labels = tokens[S.TOKEN].map(lambda t: escape(repr(t)))
    terms = [c for c in (S.Q, S.V, S.V_NEXT, S.LOGP, S.REWARD, S.TOKEN_ENTROPY) if c in tokens and c != quantity]
    for col in (quantity, RUNNING_R, *terms):
        fig.add_trace(go.Scatter(
            x=tokens[S.POSITION], y=tokens[col], mode="lines+markers", name=col, customdata=labels,
            visible=True if col in (quantity, RUNNING_R) else "legendonly",
            hovertemplate="%{customdata}<br>" + col + " %{y:.3f}<extra></extra>",
        ))  # fmt: skip
    if error_position is not None:
        fig.add_vline(x=error_position, line_dash="dot", line_color="#111", annotation_text="known error")
    return _layout(fig, title, "token position", "value")


# Points a reward-quality chart draws at most (as SVG); of more, a random subset of this many. A reward table of
# 10M tokens holds ~200k completions: all of them would make the figure ~10 MB to send, and WebGL, which draws
# many points fast, takes a second to start in a browser without a GPU (a page of one such chart, headless
# chromium on 2 busy cores: 0.6 s with 2,000 SVG points, 1.2 s with 10,000, 1.9 s with 10,000 by WebGL)
SHOWN_POINTS = 2_000
POINTS_SEED = 0  # the subset is the same at every rerun
BOX_WIDTH = 0.5  # of the 0/1 boxes, in x units, when drawn from their statistics beside a subset of points


def shown_points(n: int) -> np.ndarray:
    """The positions of the points drawn of `n`: all up to SHOWN_POINTS, else SHOWN_POINTS of them drawn at
    random (seed POINTS_SEED), in their order."""
    if n <= SHOWN_POINTS:
        return np.arange(n)
    return np.sort(np.random.default_rng(POINTS_SEED).choice(n, SHOWN_POINTS, replace=False))


def _is_binary(values: pd.Series) -> bool:
    return set(values.dropna().unique()) <= {0.0, 1.0}


def points_caption(seqs: pd.DataFrame, metric: str) -> str:
    """What reward_quality_figure of `seqs` against `metric` leaves out: nothing (""), or how many points it
    draws of how many."""
    if len(seqs) <= SHOWN_POINTS:
        return ""
    over_all = "boxes over all" if _is_binary(seqs[metric]) else "ρ over all"
    return f"{SHOWN_POINTS:,} of {len(seqs):,} points shown (a random subset); {over_all}; the CSV holds every point."


def reward_quality_figure(seqs: pd.DataFrame, r: str, metric: str, corr: dict, rule: str = "") -> go.Figure:
    """Sequence reward `r` against a per-sample metric. A 0/1 metric (exact match) gets a box with its points
    per value; a continuous one a scatter. Above SHOWN_POINTS points, a random SHOWN_POINTS of them are drawn
    (`shown_points`) and each box is given as its statistics over all points (tables.box_statistics: Plotly's
    own boxes, sent without the points). The title carries Spearman's rho, its bootstrap interval and n as
    analysis/rewards.py wrote them (`corr`: a row of tables.summary_correlations), the subtitle `rule`."""
    rho = "n/a (a side is constant)" if np.isnan(corr["spearman"]) else (
        f"{corr['spearman']:.3f} [{corr['spearman_low']:.3f}, {corr['spearman_high']:.3f}]"
    )  # fmt: skip
    title = f"{escape(r)} vs {escape(metric)}: Spearman ρ = {rho} (n = {int(corr['n'])})"
    if not _is_binary(seqs[metric]):
        shown = seqs.iloc[shown_points(len(seqs))]
        fig = go.Figure(go.Scatter(x=shown[metric], y=shown[r], mode="markers", marker=dict(size=5, opacity=0.6)))
    elif len(seqs) <= SHOWN_POINTS:
        fig = go.Figure(go.Box(
            x=seqs[metric], y=seqs[r], boxpoints="all", jitter=0.4, pointpos=0, name=r,
            marker=dict(size=4, opacity=0.6),
        ))  # fmt: skip
    else:
        boxes = tables.box_statistics(seqs, metric, r)
        fig = go.Figure(go.Box(
            x=boxes[metric], q1=boxes["q1"], median=boxes["median"], q3=boxes["q3"],
            lowerfence=boxes["lowerfence"], upperfence=boxes["upperfence"], name=r, width=BOX_WIDTH,
        ))  # fmt: skip
        # the points drawn, jittered across the middle 40% of a box as Plotly jitters a box's own points
        shown = seqs.iloc[shown_points(len(seqs))]
        jitter = np.random.default_rng(POINTS_SEED).uniform(-0.2 * BOX_WIDTH, 0.2 * BOX_WIDTH, len(shown))
        fig.add_trace(go.Scatter(x=shown[metric] + jitter, y=shown[r], mode="markers", name=r, showlegend=False,
                                 marker=dict(size=4, opacity=0.6)))  # fmt: skip
    if _is_binary(seqs[metric]):
        fig.update_xaxes(tickvals=[0, 1])
    return _layout(fig, title, metric, r, rule)


# Scores of schema.SCORES: the rewards in blues, the likelihood baselines they must beat in greys.
SCORE_COLORS = dict(zip(S.SCORES, ("#1f4e9c", "#4a86d8", "#8fb8ee", "#4d4d4d", "#8c8c8c", "#c4c4c4")))


def accuracy_figure(acc: pd.DataFrame, rule: str = "") -> go.Figure:
    """Pairwise accuracy per checkpoint (column "checkpoint") and score (column "score": each reward beside each
    likelihood baseline): grouped bars with their 95% Wilson interval (low, high), ties counting half as
    analysis/stats.py counts them; chance (0.5) as a dashed line."""
    fig = go.Figure()
    for score, g in acc.groupby("score", sort=False):
        fig.add_trace(go.Bar(
            x=g[S.CHECKPOINT], y=g["accuracy"], name=score, marker_color=SCORE_COLORS.get(score),
            error_y=dict(type="data", array=g["high"] - g["accuracy"], arrayminus=g["accuracy"] - g["low"]),
            customdata=g[["n", "ties"]],
            hovertemplate=f"%{{x}}<br>{escape(score)}: accuracy %{{y:.3f}}<br>n = %{{customdata[0]:g}}, "
            "ties %{customdata[1]:g}<extra></extra>",
        ))  # fmt: skip
    fig.add_hline(y=0.5, line_dash="dash", line_color="grey")
    fig.update_yaxes(range=[0, 1])
    fig.update_layout(barmode="group")
    title = "P(score(chosen) > score(rejected)), ties ½, 95% Wilson"
    return _layout(fig, title, "checkpoint", "pairwise accuracy", rule)


def score_correlations_figure(corr: pd.DataFrame, metric: str, rule: str = "") -> go.Figure:
    """Spearman rho of every score with `metric` per checkpoint, grouped bars with their bootstrap intervals:
    the rewards beside the likelihood baselines (rows of tables.summary_correlations for one metric)."""
    fig = go.Figure()
    for score, g in corr.groupby("reward", sort=False):
        fig.add_trace(go.Bar(
            x=g[S.CHECKPOINT], y=g["spearman"], name=score, marker_color=SCORE_COLORS.get(score),
            error_y=dict(type="data", array=g["spearman_high"] - g["spearman"],
                         arrayminus=g["spearman"] - g["spearman_low"]),
            hovertemplate=f"%{{x}}<br>{escape(score)}: ρ %{{y:.3f}}<extra></extra>",
        ))  # fmt: skip
    fig.add_hline(y=0, line_color="grey", line_width=1)
    fig.update_layout(barmode="group")
    return _layout(fig, f"Spearman ρ(score, {escape(metric)}), 95% interval", "checkpoint", "Spearman ρ", rule)


def margin_figure(pairs: pd.DataFrame, rule: str = "") -> go.Figure:
    """Overlaid histograms of the margin R(chosen) - R(rejected), one per checkpoint; 0 marked."""
    fig = go.Figure()
    for ckpt, g in pairs.groupby(S.CHECKPOINT, sort=True):
        fig.add_trace(go.Histogram(x=g[S.MARGIN], name=ckpt, opacity=0.6))
    fig.add_vline(x=0, line_dash="dash", line_color="grey")
    fig.update_layout(barmode="overlay")
    return _layout(fig, "margin distribution", "R(chosen) - R(rejected)", "pairs", rule)


def correlation_lam_figure(corr: pd.DataFrame, rule: str = "") -> go.Figure:
    """Spearman(R, metric) against lam (0 for MLE): every checkpoint as a marker coloured by method with its
    bootstrap interval (spearman_low, spearman_high, as written in summary.json), and a line per step through
    the mean over checkpoints at each lam."""
    fig = go.Figure()
    colors = method_colors(corr[S.METHOD])
    for step, g in corr.groupby(S.STEP, sort=True):
        mean = g.groupby(S.LAM, sort=True)["spearman"].mean()
        fig.add_trace(go.Scatter(
            x=mean.index, y=mean.to_numpy(), mode="lines", name=f"step {step}: mean", line=dict(dash="dot", width=1),
        ))  # fmt: skip
    for method, g in corr.groupby(S.METHOD, sort=True):
        fig.add_trace(go.Scatter(
            x=g[S.LAM], y=g["spearman"], mode="markers", name=method, marker=dict(color=colors[method], size=9),
            error_y=dict(type="data", array=g["spearman_high"] - g["spearman"],
                         arrayminus=g["spearman"] - g["spearman_low"], thickness=1),
            customdata=np.c_[g[S.RUN].map(escape), g[S.STEP], g["n"]],
            hovertemplate="%{customdata[0]} @ %{customdata[1]}<br>lam %{x}<br>ρ %{y:.3f}, n = %{customdata[2]}"
            "<extra></extra>",
        ))  # fmt: skip
    fig.add_hline(y=0, line_color="grey", line_width=1)
    title = "Spearman ρ(R, metric) vs lam, 95% interval"
    return _layout(fig, title, "lam (0 = MLE)", "Spearman ρ", rule)


def best_of_n_figure(best: pd.DataFrame, metric: str, rule: str = "") -> go.Figure:
    """Best-of-N per checkpoint (column "checkpoint"): grouped bars of the `metric` reached by picking each
    prompt's sample of highest score, for each reward and likelihood baseline, against a random and the best
    sample (tables.summary_best_of_n rows)."""
    fig = go.Figure()
    picks = {**{s: f"highest {s}" for s in S.SCORES}, "random": "random", "oracle": "best"}
    colors = {**SCORE_COLORS, "random": "#e45756", "oracle": "#f2b701"}
    for pick, label in picks.items():
        fig.add_trace(go.Bar(
            x=best[S.CHECKPOINT], y=best[pick], name=label, marker_color=colors[pick],
            customdata=best[["n", "prompts"]],
            hovertemplate=f"%{{x}}<br>{escape(label)}: %{{y:.3f}}<br>N = %{{customdata[0]:g}}, "
            "%{customdata[1]:g} prompts<extra></extra>",
        ))  # fmt: skip
    fig.update_layout(barmode="group")
    return _layout(fig, f"best of N: {escape(metric)} of the sample picked", "checkpoint", escape(metric), rule)


def localisation_figure(loc: pd.DataFrame, measure: str, rule: str = "") -> go.Figure:
    """Error localisation per checkpoint: grouped bars of `measure` (hit@1, hit@3 or mrr) of the known first wrong
    token when a corrupted completion's tokens are ranked by reward, log π, entropy or at random
    (tables.summary_error_localisation rows)."""
    fig = go.Figure()
    colors = {S.REWARD: SCORE_COLORS[S.R], S.LOGP: SCORE_COLORS[S.LOGP_SUM], S.TOKEN_ENTROPY: "#54a24b",
              "random": "#e45756"}  # fmt: skip
    for ranking, g in loc.groupby("ranking", sort=False):
        order = S.TOKEN_RANKINGS.get(ranking, "")
        fig.add_trace(go.Bar(
            x=g[S.CHECKPOINT], y=g[measure], name=f"{ranking} ({order})", marker_color=colors.get(ranking),
            customdata=g[["n"]],
            hovertemplate=f"%{{x}}<br>{escape(ranking)}: {measure} %{{y:.3f}}<br>%{{customdata[0]:g}} completions"
            "<extra></extra>",
        ))  # fmt: skip
    fig.update_yaxes(range=[0, 1])
    fig.update_layout(barmode="group")
    return _layout(fig, f"finding the known error: {measure}", "checkpoint", measure, rule)


def hypervolume_figure(table: pd.DataFrame, quality: str, diversity: str) -> go.Figure:
    """The hypervolume of each method's front against the training step, a line per method (the rows of
    analysis.pareto.hypervolume_by on seed-averaged points); the reference point in the subtitle."""
    fig = go.Figure()
    colors = method_colors(table[S.METHOD])
    for method, g in table.groupby(S.METHOD, sort=True):
        fig.add_trace(go.Scatter(
            x=g[S.STEP], y=g["hypervolume"], mode="lines+markers", name=method, line=dict(color=colors[method]),
            customdata=g[["points"]], hovertemplate="step %{x}: %{y:.4g}<br>%{customdata[0]} points<extra></extra>",
        ))  # fmt: skip
    reference = "; ".join(sorted(set(table["reference"])))
    return _layout(fig, "hypervolume of the front over training", "step", "hypervolume",
                   f"reference point: {reference}")  # fmt: skip
