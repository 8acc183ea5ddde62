"""The findings' figures, drawn with matplotlib from the findings tables (findings/tables.py) and nothing else:
the report saves them as PNG and the app's Findings page shows the same figures from the same tables. Each
builder returns a matplotlib Figure, or None when its table has nothing to draw. Error bars: standard error
over seeds. Torch-free.
"""

import matplotlib

matplotlib.use("Agg")  # files only, no display

import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.ticker import NullLocator  # noqa: E402

from analysis import schema as S  # noqa: E402
from findings import layout as L  # noqa: E402

FAMILY_ORDER = {"mle": 0, "mle+entropy": 1, "iqlearn": 2}


def _se(table: pd.DataFrame, col: str):
    se = S.seed_se_col(col)
    return table[se].fillna(0).to_numpy() if se in table else None


def _methods(table: pd.DataFrame) -> list[str]:
    """Method labels ordered by family (MLE, MLE + entropy, IQLearn), then by label."""
    pairs = table[[L.FAMILY, S.METHOD]].drop_duplicates()
    return [m for _, m in sorted(zip(pairs[L.FAMILY].map(FAMILY_ORDER).fillna(9), pairs[S.METHOD]))]


def colours(methods) -> dict[str, tuple]:
    cmap = plt.get_cmap("tab10")
    return {m: cmap(i % 10) for i, m in enumerate(methods)}


def _full(table: pd.DataFrame) -> pd.DataFrame:
    known = table[table[L.FAMILY].isin(list(FAMILY_ORDER))]
    return known[known[L.TRAIN_SIZE].isna()]


def quality_diversity(seed_aggregate: pd.DataFrame, quality: str) -> Figure | None:
    """Fig. 2: quality against Self-BLEU of every sampling cell of the full-data runs, one colour per method,
    each method's Pareto front dashed (higher quality, lower Self-BLEU), temperatures written beside points."""
    from analysis.pareto import on_front_mask

    if not len(seed_aggregate):
        return None
    points = _full(seed_aggregate)
    points = points[points[S.KIND] == "sample"].dropna(subset=[quality, S.SELF_BLEU])
    if not len(points):
        return None
    fig, ax = plt.subplots(figsize=(7, 5), layout="constrained")
    methods = _methods(points)
    for method, colour in colours(methods).items():
        g = points[points[S.METHOD] == method].sort_values(S.SELF_BLEU)
        ax.errorbar(g[S.SELF_BLEU], g[quality], xerr=_se(g, S.SELF_BLEU), yerr=_se(g, quality), fmt="o",
                    color=colour, label=method, capsize=2, markersize=5)  # fmt: skip
        front = g[on_front_mask(g, quality)].sort_values(S.SELF_BLEU)
        ax.plot(front[S.SELF_BLEU], front[quality], "--", color=colour, linewidth=1)
        for _, row in g.iterrows():
            ax.annotate(f"{row[S.TEMPERATURE]:g}", (row[S.SELF_BLEU], row[quality]), fontsize=7,
                        xytext=(3, 3), textcoords="offset points", color=colour)  # fmt: skip
    ax.set_xlabel("Self-BLEU (lower: more diverse)")
    ax.set_ylabel(f"{quality} (higher: better)")
    ax.set_title("Quality against diversity (sampling; temperature beside each point)")
    ax.legend(fontsize=8)
    return fig


def beam_search(seed_aggregate: pd.DataFrame, quality: str) -> Figure | None:
    """Fig. 4: quality at each decoding (greedy, sampling temperatures, beam widths) per full-data method."""
    if not len(seed_aggregate):
        return None
    cells = _full(seed_aggregate).dropna(subset=[quality])
    if not (cells[S.KIND] == "beam").any():
        return None
    order = cells.drop_duplicates(S.DECODING).sort_values(list(S.GRID_ORDER), key=S.grid_sort_key)[S.DECODING]
    x = {d: i for i, d in enumerate(order)}
    fig, ax = plt.subplots(figsize=(7, 4.5), layout="constrained")
    methods = _methods(cells)
    for k, (method, colour) in enumerate(colours(methods).items()):
        g = cells[cells[S.METHOD] == method].sort_values(S.DECODING, key=lambda d: d.map(x))
        offset = (k - (len(methods) - 1) / 2) * 0.06
        ax.errorbar(g[S.DECODING].map(x) + offset, g[quality], yerr=_se(g, quality), fmt="o-", color=colour,
                    label=method, capsize=2, markersize=4)  # fmt: skip
    beams = [i for d, i in x.items() if d.startswith("beam")]
    ax.axvspan(min(beams) - 0.5, max(beams) + 0.5, color="0.92", zorder=0)
    ax.set_xticks(list(x.values()), list(x.keys()), rotation=30)
    ax.set_ylabel(f"{quality} (higher: better)")
    ax.set_title("Quality by decoding (shaded: beam search)")
    ax.legend(fontsize=8)
    return fig


def small_data(small: pd.DataFrame, curves: pd.DataFrame, quality: str = "quality") -> Figure | None:
    """Fig. 7, one row per task: validation NLL during training on each subset size (a panel per size), then
    overfitting (final minus lowest validation NLL) and greedy quality (the task's metric) against the number of
    training examples, per method that was run on subsets."""
    if not len(small) or not small[L.TRAIN_SIZE].notna().any():
        return None
    on_subsets = set(small.loc[small[L.TRAIN_SIZE].notna(), S.METHOD])
    table = small[small[L.FAMILY].isin(list(FAMILY_ORDER)) & small[S.METHOD].isin(on_subsets)]
    methods = _methods(table)
    palette = colours(methods)
    tasks = sorted(table[L.TASK].unique()) if L.TASK in table else [None]
    sizes = sorted(table[L.TRAIN_SIZE].dropna().unique())
    panels = len(sizes) + (2 if "greedy" in table else 1)
    fig, grid = plt.subplots(len(tasks), panels, figsize=(3.8 * panels, 3.6 * len(tasks)), layout="constrained",
                             squeeze=False)  # fmt: skip
    for task, axes in zip(tasks, grid):
        rows = table if task is None else table[table[L.TASK] == task]
        at_task = curves if task is None or not len(curves) else curves[curves[L.TASK] == task]
        name = f"{task}, " if task is not None and len(tasks) > 1 else ""
        for ax, size in zip(axes, sizes):
            at = at_task[at_task[L.TRAIN_SIZE] == size] if len(at_task) else at_task
            for method in methods:
                g = at[at[S.METHOD] == method].sort_values(S.STEP) if len(at) else at
                if not len(g):
                    continue
                se = _se(g, "eval_nll")
                ax.plot(g[S.STEP], g["eval_nll"], color=palette[method], label=method)
                ax.fill_between(g[S.STEP], g["eval_nll"] - se, g["eval_nll"] + se, color=palette[method], alpha=0.2)
            ax.set(xlabel="step", ylabel="validation NLL", title=f"{name}{int(size)} training examples")
        metric = rows["quality_metric"].iloc[0] if "quality_metric" in rows and len(rows) else quality
        by_size = ((axes[len(sizes)], L.OVERFIT, "final - lowest validation NLL"),
                   (axes[-1], "greedy", f"{metric}, greedy"))  # fmt: skip
        for ax, col, label in by_size[: panels - len(sizes)]:
            for method in methods:
                g = rows[rows[S.METHOD] == method].sort_values(L.TRAIN_EXAMPLES)
                ax.errorbar(g[L.TRAIN_EXAMPLES], g[col], yerr=_se(g, col), fmt="o-", color=palette[method],
                            label=method, capsize=2, markersize=4)  # fmt: skip
            ax.set_xscale("log")
            ticks = sorted(rows[L.TRAIN_EXAMPLES].dropna().unique())
            ax.set_xticks(ticks, [f"{int(n)}" for n in ticks], minor=False)  # the sizes run, not log-scale minor ticks
            ax.xaxis.set_minor_locator(NullLocator())
            ax.set(xlabel="training examples", ylabel=label)
        axes[len(sizes)].set_title(f"{name}overfitting")
        axes[0].legend(fontsize=7)
    return fig


def reward_correlation(correlation_by_lam: pd.DataFrame) -> Figure | None:
    """Fig. 8: Spearman's rho of the reward R and of log pi(y|x) with quality, against lam (MLE at lam = 0)."""
    if not len(correlation_by_lam):
        return None
    table = correlation_by_lam[correlation_by_lam[L.TRAIN_SIZE].isna()]
    lams = sorted(table[S.LAM].dropna().unique())
    x = {lam: i for i, lam in enumerate(lams)}
    fig, ax = plt.subplots(figsize=(6, 4), layout="constrained")
    for (score, marker), colour in zip(((S.R, "o-"), (S.LOGP_SUM, "s--")), ("C0", "C7")):
        g = table[table[L.SCORE] == score].sort_values(S.LAM)
        ax.errorbar(g[S.LAM].map(x), g["spearman"], yerr=_se(g, "spearman"), fmt=marker, color=colour,
                    label=f"{score} (likelihood baseline)" if score == S.LOGP_SUM else score, capsize=2)  # fmt: skip
    ax.axhline(0, color="0.6", linewidth=0.8)
    ax.set_xticks(list(x.values()), [f"{lam:g}" + (" (MLE)" if lam == 0 else "") for lam in lams])
    ax.set(xlabel="lam", ylabel="Spearman with quality", title="Reward-quality correlation against lam")
    ax.legend(fontsize=8)
    return fig


def draw(tables: dict[str, pd.DataFrame], quality: str) -> dict[str, Figure | None]:
    """Every figure, by its PNG file name."""
    empty = pd.DataFrame()
    return {
        L.FIG_QUALITY_DIVERSITY: quality_diversity(tables.get(L.SEED_AGGREGATE, empty), quality),
        L.FIG_BEAM_SEARCH: beam_search(tables.get(L.SEED_AGGREGATE, empty), quality),
        L.FIG_SMALL_DATA: small_data(tables.get(L.SMALL_DATA, empty), tables.get(L.CURVES, empty), quality),
        L.FIG_REWARD_CORRELATION: reward_correlation(tables.get(L.CORRELATION_BY_LAM, empty)),
    }
