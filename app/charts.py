"""Pure builders from DataFrames to Plotly figures (and the token HTML). No streamlit, no I/O: each takes the
table the page shows next to it, so a figure and its CSV always agree.

Colours: one per method, assigned in sorted method order. Text from the data is escaped before it enters
hover labels or HTML (app/safety.py).
"""

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.colors import qualitative
from plotly.subplots import make_subplots

from analysis import schema as S
from app.safety import escape

SYMBOLS = {"greedy": "circle", "sample": "diamond", "beam": "square"}
TOKEN_QUANTITIES = {S.REWARD: "reward", S.LOGP: "log π", S.V: "V", S.Q: "Q"}
RUNNING_R = "running_R"  # cumulative sum of reward along the completion


def method_colors(methods) -> dict[str, str]:
    """A colour per method, in sorted order of the method labels."""
    palette = qualitative.Plotly
    return {m: palette[i % len(palette)] for i, m in enumerate(sorted(set(methods)))}


def _layout(fig: go.Figure, title: str, x: str, y: str, subtitle: str = "") -> go.Figure:
    """Title (and a subtitle, e.g. how rewards were read: tables.reward_rule), axis titles, tight margins."""
    fig.update_layout(
        title=dict(text=title, subtitle=dict(text=subtitle)), xaxis_title=x, yaxis_title=y, legend_title_text="",
        margin=dict(l=10, r=10, t=70 if subtitle else 40, b=10),
    )  # fmt: skip
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
    colour by method, symbol by decoding kind, and each method's Pareto front (rows with on_front) as a line.
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
    for method, g in points[points[S.ON_FRONT]].groupby(S.METHOD, sort=True):
        g = g.sort_values(diversity, kind="stable")
        fig.add_trace(go.Scatter(
            x=g[diversity], y=g[quality], mode="lines", name=f"{method} front", legendgroup=method,
            line=dict(color=colors[method], dash="dot"), hoverinfo="skip",
        ))  # fmt: skip
    x_title = f"{diversity} (lower = more diverse)" if diversity == S.SELF_BLEU else diversity
    return _layout(fig, f"{quality} vs {diversity}", x_title, quality)


def temperature_figure(points: pd.DataFrame, quality: str) -> go.Figure:
    """Quality against sampling temperature: a line per (method, step) through greedy (temperature 0) and the
    sampling settings, with error bars over seeds; beam-search settings as separate square markers at 0."""
    fig = go.Figure()
    colors = method_colors(points[S.METHOD])
    several_steps = points[S.STEP].nunique() > 1
    err = S.seed_se_col(quality)
    lines = points[points[S.KIND].isin(["greedy", "sample"])]
    for (method, step), g in lines.groupby([S.METHOD, S.STEP], sort=True):
        g = g.sort_values(S.TEMPERATURE)
        fig.add_trace(go.Scatter(
            x=g[S.TEMPERATURE], y=g[quality], mode="lines+markers", legendgroup=method,
            name=f"{method} @ {step}" if several_steps else method, line=dict(color=colors[method]),
            error_y=dict(type="data", array=g[err], visible=True, thickness=1),
            customdata=g[[S.DECODING]].map(escape), hovertemplate="%{customdata[0]}: %{y:.4g}<extra></extra>",
        ))  # fmt: skip
    beams = points[points[S.KIND] == "beam"]
    for method, g in beams.groupby(S.METHOD, sort=True):
        fig.add_trace(go.Scatter(
            x=g[S.TEMPERATURE], y=g[quality], mode="markers+text", name=f"{method} · beam", legendgroup=method,
            marker=dict(color=colors[method], symbol="square-open", size=11), text=g[S.DECODING].map(escape),
            textposition="middle right", error_y=dict(type="data", array=g[err], visible=True, thickness=1),
            customdata=np.c_[g[S.DECODING].map(escape), g[S.STEP]],
            hovertemplate="%{customdata[0]} @ %{customdata[1]}: %{y:.4g}<extra></extra>",
        ))  # fmt: skip
    return _layout(fig, f"{quality} vs temperature", "temperature (greedy and beam at 0)", quality)


def with_running_reward(tokens: pd.DataFrame) -> pd.DataFrame:
    """`tokens` of one completion, sorted by position, with RUNNING_R = cumulative sum of reward. A NaN
    reward (the last token of a truncated completion, which has no next state) adds nothing, as in R."""
    tokens = tokens.sort_values(S.POSITION)
    return tokens.assign(**{RUNNING_R: tokens[S.REWARD].fillna(0.0).cumsum()})


def tokens_html(tokens: pd.DataFrame, quantity: str) -> str:
    """The completion as HTML spans, one per token, background coloured by `quantity` on a diverging scale
    centred at zero (blue above, red below, opacity |value| / max |value|, none for NaN), title (hover)
    listing q, v, v_next, logp, reward and the running sum. Token text is escaped; a newline shows as ↵."""
    tokens = with_running_reward(tokens)
    values = np.nan_to_num(tokens[quantity].to_numpy(float), nan=0.0)
    scale = np.abs(values).max() if len(values) and np.abs(values).max() > 0 else 1.0
    spans = []
    for row, value in zip(tokens.itertuples(index=False), values):
        rgb = "33,102,172" if value >= 0 else "178,24,43"
        title = (
            f"{getattr(row, S.TOKEN)!r}  position {getattr(row, S.POSITION)}\n"
            f"q={row.q:.3f}  v={row.v:.3f}  v_next={row.v_next:.3f}\n"
            f"logp={row.logp:.3f}  reward={row.reward:.3f}  running R={getattr(row, RUNNING_R):.3f}"
        )
        text = getattr(row, S.TOKEN).replace("\n", "↵\n")
        spans.append(
            f'<span title="{escape(title)}" style="background:rgba({rgb},{0.85 * abs(value) / scale:.3f});'
            f'border-radius:3px">{escape(text)}</span>'
        )
    return (
        '<div class="token-rewards" style="font-family:monospace;white-space:pre-wrap;line-height:1.8">'
        + "".join(spans)
        + "</div>"
    )


def token_figure(tokens: pd.DataFrame, quantity: str, title: str = "") -> go.Figure:
    """Per-token lines along the completion: `quantity` and the running reward shown, the other terms (q, v,
    v_next, logp, reward) one legend click away; hover names the token."""
    tokens = with_running_reward(tokens)
    fig = go.Figure()
    labels = tokens[S.TOKEN].map(lambda t: escape(repr(t)))
    for col in (quantity, RUNNING_R, *[c for c in (S.Q, S.V, S.V_NEXT, S.LOGP, S.REWARD) if c != quantity]):
        fig.add_trace(go.Scatter(
            x=tokens[S.POSITION], y=tokens[col], mode="lines+markers", name=col, customdata=labels,
            visible=True if col in (quantity, RUNNING_R) else "legendonly",
            hovertemplate="%{customdata}<br>" + col + " %{y:.3f}<extra></extra>",
        ))  # fmt: skip
    return _layout(fig, title, "token position", "value")


def reward_quality_figure(seqs: pd.DataFrame, r: str, metric: str, corr: dict, rule: str = "") -> go.Figure:
    """Sequence reward `r` against a per-sample metric. A 0/1 metric (exact match) gets a box with every point
    per value; a continuous one a scatter. The title carries Spearman's rho, its bootstrap interval and n as
    analysis/rewards.py wrote them (`corr`: a row of tables.summary_correlations), the subtitle `rule`."""
    rho = "n/a (a side is constant)" if np.isnan(corr["spearman"]) else (
        f"{corr['spearman']:.3f} [{corr['spearman_low']:.3f}, {corr['spearman_high']:.3f}]"
    )  # fmt: skip
    title = f"{escape(r)} vs {escape(metric)}: Spearman ρ = {rho} (n = {int(corr['n'])})"
    values = seqs[metric].dropna().unique()
    if set(values) <= {0.0, 1.0}:
        fig = go.Figure(go.Box(
            x=seqs[metric], y=seqs[r], boxpoints="all", jitter=0.4, pointpos=0, name=r,
            marker=dict(size=4, opacity=0.6),
        ))  # fmt: skip
        fig.update_xaxes(tickvals=[0, 1])
    else:
        fig = go.Figure(go.Scatter(x=seqs[metric], y=seqs[r], mode="markers", marker=dict(size=5, opacity=0.6)))
    return _layout(fig, title, metric, r, rule)


def accuracy_figure(acc: pd.DataFrame, rule: str = "") -> go.Figure:
    """Pairwise accuracy of R per checkpoint (column "checkpoint"; ties count half, as analysis/agreement.py
    counts them) as bars with their 95% Wilson interval (low, high), the accuracy of the log-likelihood
    log π(y|x) on the same pairs beside them as markers, and chance (0.5) as a dashed line."""
    fig = go.Figure(go.Bar(
        x=acc[S.CHECKPOINT], y=acc["accuracy"], name="R", customdata=acc[["n", "ties"]],
        error_y=dict(type="data", array=acc["high"] - acc["accuracy"], arrayminus=acc["accuracy"] - acc["low"]),
        hovertemplate="%{x}<br>accuracy of R %{y:.3f}<br>n = %{customdata[0]}, ties %{customdata[1]}<extra></extra>",
    ))  # fmt: skip
    fig.add_trace(go.Scatter(
        x=acc[S.CHECKPOINT], y=acc["likelihood_accuracy"], name="log π(y|x)", mode="markers",
        marker=dict(symbol="line-ew-open", size=28, line=dict(width=3, color="black")),
        hovertemplate="%{x}<br>accuracy of log π(y|x) %{y:.3f}<extra></extra>",
    ))  # fmt: skip
    fig.add_hline(y=0.5, line_dash="dash", line_color="grey")
    fig.update_yaxes(range=[0, 1])
    title = "P(R(chosen) > R(rejected)), ties ½, 95% Wilson"
    return _layout(fig, title, "checkpoint", "pairwise accuracy", rule)


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


BEST_OF_N_PICKS = {"reward": "highest R", "likelihood": "highest log π(y|x)", "random": "random", "oracle": "best"}


def best_of_n_figure(best: pd.DataFrame, metric: str, rule: str = "") -> go.Figure:
    """Best-of-N per checkpoint (column "checkpoint"): grouped bars of the `metric` reached by picking each
    prompt's sample of highest R, of highest likelihood, a random one and the best one (summary.json)."""
    fig = go.Figure()
    for pick, label in BEST_OF_N_PICKS.items():
        fig.add_trace(go.Bar(
            x=best[S.CHECKPOINT], y=best[pick], name=label, customdata=best[["n", "prompts"]],
            hovertemplate=f"%{{x}}<br>{label}: %{{y:.3f}}<br>N = %{{customdata[0]:g}}, %{{customdata[1]:g}} prompts"
            "<extra></extra>",
        ))  # fmt: skip
    fig.update_layout(barmode="group")
    return _layout(fig, f"best of N: {escape(metric)} of the sample picked", "checkpoint", escape(metric), rule)
