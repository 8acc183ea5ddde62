"""Pure pandas transforms behind the pages: run rows, training-curve bands over seeds, Pareto points, the
figures of summary.json as tables, and token reward differences. No streamlit, no I/O.

The app computes no statistic of its own: correlations, pairwise accuracy, intervals and best-of-N are read
from summary.json (analysis/rewards.py, computed by analysis/agreement.py), sweep means and standard errors
from aggregate.parquet (analysis/sweep.py), means over seeds and their standard errors by analysis/stats.py.
The one exception is `box_statistics`: what Plotly would compute from the points of a box plot, computed here
when the points are too many to send to the browser.
"""

import posixpath
from collections import defaultdict

import numpy as np
import pandas as pd

from analysis import pareto, stats
from analysis import schema as S
from analysis.results import ATTRIBUTES, run_attributes
from irl.runs import method_label

FINISHED, INCOMPLETE = "finished", "running/incomplete"
# Logged keys drawn on the Runs page, with their titles (irl/objectives.py token_stats, irl/trainer.py).
CURVES = {
    "train/loss": "loss",
    "iq/nll": "NLL",
    "iq/td": "TD term (mean r²)",
    "iq/reward_mean": "mean reward",
    "iq/v_mean": "mean V",
    "iq/entropy": "entropy",
    "eval/nll": "validation NLL",
}
RUN_COLUMNS = (S.RUN, S.METHOD, *ATTRIBUTES, S.SEED, "data", "max_steps", "last_checkpoint", "status")


def run_row(run: str, config: dict, steps: list[int]) -> dict:
    """One row of the runs table: the run's attributes as analysis.results.run_attributes defines them (lam,
    gamma and alpha NaN where they do not apply). Finished: the last checkpoint is max_steps."""
    last = steps[-1] if steps else None
    return {
        S.RUN: run,
        S.METHOD: method_label(config),
        **run_attributes(config),
        S.SEED: config["seed"],
        "data": config["data"],
        "max_steps": config["max_steps"],
        "last_checkpoint": last,
        "status": FINISHED if last == config["max_steps"] else INCOMPLETE,
    }


# Config fields that differ between runs of one experiment repeated over seeds.
PER_SEED_FIELDS = ("seed", "output_dir", "resume")


def seed_groups(configs: dict[str, dict]) -> dict[str, str]:
    """Per run, the label of its group: the runs whose configs differ only in PER_SEED_FIELDS, averaged over
    seeds on every page. The label is the method label, followed, where groups share it, by the settings that
    tell them apart (e.g. "mle model=tiny" and "mle model=small"), or by the group's common path if more
    than two settings differ; in a group where a seed repeats (the same experiment run twice) each run is
    labelled by its own path instead."""

    def shared(config):
        return tuple(sorted((k, repr(v)) for k, v in config.items() if k not in PER_SEED_FIELDS))

    groups = defaultdict(list)  # shared settings -> runs
    for run, config in configs.items():
        groups[shared(config)].append(run)
    firsts = {key: configs[members[0]] for key, members in groups.items()}
    labels = {}
    for key, members in groups.items():
        label = method_label(firsts[key])
        rivals = [c for c in firsts.values() if method_label(c) == label]
        fields = set().union(*rivals) - set(PER_SEED_FIELDS)
        varying = sorted(f for f in fields if len({repr(c.get(f)) for c in rivals}) > 1)
        settings = [f"{f}={str(firsts[key].get(f))[:30]}" for f in varying] if len(varying) <= 2 else []
        seeds = [configs[run]["seed"] for run in members]
        for run in members:
            if len(set(seeds)) < len(seeds):
                tag = [f"[{run}]"]
            else:
                tag = [f"({posixpath.commonpath(members)})"] if len(varying) > 2 else []
            labels[run] = " ".join([label, *settings, *tag])
    return labels


def runs_table(configs: dict[str, dict], steps: dict[str, list[int]]) -> pd.DataFrame:
    """The runs table (RUN_COLUMNS), one row per run, method being its seed group's label (seed_groups)."""
    groups = seed_groups(configs)
    rows = [run_row(run, configs[run], steps[run]) | {S.METHOD: groups[run]} for run in configs]
    return pd.DataFrame(rows, columns=RUN_COLUMNS)


def long_metrics(metrics: pd.DataFrame, keys=tuple(CURVES)) -> pd.DataFrame:
    """Wide metrics rows (step + one column per logged key, NaN where a row lacks it) to long rows
    (step, key, value) for the `keys` present."""
    present = [k for k in keys if k in metrics.columns]
    long = metrics.melt(id_vars=S.STEP, value_vars=present, var_name="key", value_name="value")
    return long.dropna(subset=["value"])


def seed_band(curves: pd.DataFrame) -> pd.DataFrame:
    """Per (key, method, step): the mean over runs (seeds) of `value`, its min and max, and the number of
    seeds. `curves` has key, method, seed, step, value (long_metrics rows of several runs)."""
    g = curves.groupby(["key", S.METHOD, S.STEP], sort=True)["value"]
    return g.agg(mean="mean", lo="min", hi="max", n_seeds="count").reset_index()


def pareto_points(agg: pd.DataFrame, quality: str, diversity: str) -> pd.DataFrame:
    """Seed-averaged (checkpoint, decoding) points with `quality` and `diversity` (aggregate column names),
    their SEs over seeds, and "on_front" (higher quality; lower diversity for Self-BLEU and the
    compression ratio, schema.HIGHER_IS_BETTER). One front per method and checkpoint step, so the fronts of several
    steps show the front moving over training."""
    cols = list(dict.fromkeys([quality, diversity]))
    agg = agg.dropna(subset=cols)
    points = stats.aggregate_seeds(agg, metrics=cols)
    lower = not S.HIGHER_IS_BETTER[diversity]
    return pareto.pareto_by(points, quality, [S.METHOD, S.STEP], diversity, lower_diversity_is_better=lower)


# Columns of the figures analysis/rewards.py writes to summary.json (analysis/agreement.py computes them with
# analysis/stats.py). "reward" names the score: a reward (R, R_mean, R_centered) or a likelihood baseline
# (logp_sum, logp_mean, length), schema.SCORES.
CORRELATION_COLUMNS = ("reward", "metric", "n", "spearman", "spearman_low", "spearman_high", "kendall",
                       "kendall_low", "kendall_high")  # fmt: skip
PREFERENCE_COLUMNS = ("score", "accuracy", "low", "high", "n", "wins", "ties", "losses", "auc")
BEST_OF_N_COLUMNS = ("decoding", "metric", "prompts", "n", *S.SCORES, "random", "oracle", "gain")
LOCALISATION_COLUMNS = ("ranking", "n", "hit@1", "hit@3", "mrr")
_TEXT = {S.RUN, "reward", "score", "metric", "decoding", "ranking", S.PAIR_SOURCE}


def _frame(rows: list[dict], columns) -> pd.DataFrame:
    """Rows read from JSON as a frame keyed by run and step, null as NaN in the numeric columns."""
    table = pd.DataFrame(rows, columns=[S.RUN, S.STEP, *columns])
    return table.astype({c: float for c in table.columns if c not in _TEXT | {S.STEP}})


def summary_correlations(summaries: dict) -> pd.DataFrame:
    """The rank correlations of a reward data set as analysis/rewards.py wrote them, one row per (checkpoint,
    score, metric): run, step and CORRELATION_COLUMNS. `summaries`: (run, step) -> summary.json. The metrics are
    the analysis' choice (schema.quality_columns(same_text=True): exact_match_calc scores another text)."""
    rows = [
        {S.RUN: run, S.STEP: step, **row} for (run, step), s in summaries.items() for row in s.get("correlations", [])
    ]
    return _frame(rows, CORRELATION_COLUMNS)


def _preference_rows(run, step, by_score: dict, **keys) -> list[dict]:
    return [
        {S.RUN: run, S.STEP: step, **keys, "score": score, **{k: v for k, v in found.items() if k != "margin"}}
        for score, found in by_score.items()
    ]


def summary_preferences(summaries: dict) -> pd.DataFrame:
    """Pairwise accuracy as analysis/rewards.py wrote it, one row per (checkpoint, score): each reward and each
    likelihood baseline, ties counting half a win, the 95% Wilson interval low-high, and ROC AUC."""
    rows = [
        r
        for (run, step), s in summaries.items()
        if "preferences" in s
        for r in _preference_rows(run, step, s["preferences"])
    ]
    return _frame(rows, PREFERENCE_COLUMNS)


def summary_preferences_by_source(summaries: dict) -> pd.DataFrame:
    """The same per pair source (built-in math preferences: carried, operation, dropped, sample)."""
    rows = [
        r
        for (run, step), s in summaries.items()
        for source, by_score in s.get("preferences_by_source", {}).items()
        for r in _preference_rows(run, step, by_score, **{S.PAIR_SOURCE: source})
    ]
    return _frame(rows, (S.PAIR_SOURCE, *PREFERENCE_COLUMNS))


def summary_best_of_n(summaries: dict) -> pd.DataFrame:
    """Best-of-N as analysis/rewards.py wrote it: per checkpoint, decoding cell and metric, the quality reached
    by the sample of highest score, for every score, against a random and the best sample (BEST_OF_N_COLUMNS)."""
    rows = [
        {S.RUN: run, S.STEP: step, "decoding": key.split("/", 1)[0], "metric": key.split("/", 1)[1], **found}
        for (run, step), s in summaries.items()
        for key, found in s.get("best_of_n", {}).items()
    ]
    return _frame(rows, BEST_OF_N_COLUMNS)


def summary_error_localisation(summaries: dict) -> pd.DataFrame:
    """Error localisation as analysis/rewards.py wrote it: per checkpoint and token ranking (reward, log pi,
    entropy, random; schema.TOKEN_RANKINGS), Hit@1, Hit@3 and the mean reciprocal rank of the known first wrong
    token of the corrupted completions, over n of them."""
    rows = [
        {S.RUN: run, S.STEP: step, "ranking": ranking, "n": s["error_localisation"]["n"], **found}
        for (run, step), s in summaries.items()
        if "error_localisation" in s
        for ranking, found in s["error_localisation"].items()
        if ranking != "n"
    ]
    return _frame(rows, LOCALISATION_COLUMNS)


# The token reward definitions of schema.DEFINITIONS in words (analysis/definitions.py has the equations).
DEFINITIONS_TEXT = (
    "r_t = Q − γV(s_t+1) at the run's γ; r_t at γ = 1: Q − V(s_t+1); implicit: β·(log π − log π_ref) against the "
    "reference summary.json names (default: the run's initial model); log π = Q − V(s_t) alone; baseline: r_t "
    "minus the prompt's mean per-token r_t. A completion's score under each is the sum over its tokens."
)
DEFINITION_COLUMNS = ("definition", "score", "metric", "n", "spearman", "spearman_low", "spearman_high",
                      "best_of_4_accuracy", "best_of_4_low", "best_of_4_high", "best_of_4_n", "best_of_4_random",
                      "pairwise_accuracy", "pairwise_low", "pairwise_high", "pairwise_n", "pairwise_ties")  # fmt: skip


def summary_definitions(summaries: dict, metric: str | None = None) -> pd.DataFrame:
    """The agreement of every token reward definition as analysis/rewards.py wrote it ("definitions" of
    summary.json, analysis/definitions.py), one row per (checkpoint, definition[, metric]): Spearman with the
    metric, best-of-4 and pairwise accuracy, each with its interval, where they apply; only `metric`'s rows when
    given. The columns that apply to none of the rows (pairwise on samples, Spearman on pairs) are left out."""
    rows = [
        {S.RUN: run, S.STEP: step, **row}
        for (run, step), s in summaries.items()
        for row in s.get("definitions", [])
        if metric is None or row.get("metric") == metric
    ]
    table = pd.DataFrame(rows, columns=[S.RUN, S.STEP, *DEFINITION_COLUMNS])
    table = table.astype({c: float for c in table.columns if c not in {S.RUN, S.STEP, "definition", "score", "metric"}})
    return table.dropna(axis="columns", how="all")


def best_definitions(table: pd.DataFrame, measure: str) -> pd.DataFrame:
    """Per checkpoint, the definition with the highest `measure` (spearman, best_of_4_accuracy or
    pairwise_accuracy) and the runner-up's, with whether their intervals overlap (the lead then is not
    resolved): checkpoint, best, its value, runner-up, its value, separated."""
    out = []
    for ckpt, g in table.dropna(subset=[measure]).groupby(S.CHECKPOINT, sort=False):
        g = g.sort_values(measure, ascending=False, kind="stable")
        first, second = g.iloc[0], g.iloc[1] if len(g) > 1 else None
        low = measure.replace("accuracy", "low") if "accuracy" in measure else f"{measure}_low"
        high = measure.replace("accuracy", "high") if "accuracy" in measure else f"{measure}_high"
        out.append({
            S.CHECKPOINT: ckpt, "best": first["definition"], measure: first[measure],
            "runner-up": None if second is None else second["definition"],
            f"runner-up {measure}": np.nan if second is None else second[measure],
            "separated": bool(second is not None and first[low] > second[high]),
        })  # fmt: skip
    return pd.DataFrame(out)


def reward_rule(summaries: dict) -> str:
    """How the rewards of these summaries were read off the logits, for table headers and chart titles: the
    discount(s) gamma and the terminal rule, as summary.json states them."""
    gammas = sorted({s["gamma"] for s in summaries.values()})
    gamma = " or ".join(f"{g:g}" for g in gammas) + (" (per checkpoint)" if len(gammas) > 1 else "")
    terminal = "; ".join(sorted({s["terminal"] for s in summaries.values()}))
    return f"r_t = Q − γV(s_t+1), γ = {gamma}; {terminal}"


# The per-token quantities two checkpoints are compared by on the same completions (the token table's columns).
DIFFERENCES = (S.REWARD, S.LOGP)


def delta(quantity: str) -> str:
    """Column of the change in `quantity` between two checkpoints: d_reward = Δr_t, d_logp = Δlog π."""
    return f"d_{quantity}"


def token_differences(a: pd.DataFrame, b: pd.DataFrame) -> pd.DataFrame:
    """Per token of the completions both checkpoints scored identically (the same token ids at every position
    under an example id), the reward and log π under each (suffixes _a, _b) and their changes b - a
    (delta(reward), delta(logp)): one row per token, in (example, position) order. Another completion under the
    same example id (a sweep redone between the two) is left out, never compared token by token."""
    m = a.merge(b, on=[S.EXAMPLE_ID, S.POSITION], suffixes=("_a", "_b"))
    same_ids = (m[S.TOKEN_ID + "_a"] == m[S.TOKEN_ID + "_b"]).groupby(m[S.EXAMPLE_ID]).all()
    length_a, length_b = a.groupby(S.EXAMPLE_ID).size(), b.groupby(S.EXAMPLE_ID).size()
    comparable = same_ids & (length_a.reindex(same_ids.index) == length_b.reindex(same_ids.index))
    m = m[m[S.EXAMPLE_ID].map(comparable).to_numpy(bool)].rename(columns={S.TOKEN + "_a": S.TOKEN})
    m = m.assign(**{delta(q): m[q + "_b"] - m[q + "_a"] for q in DIFFERENCES})
    columns = [S.EXAMPLE_ID, S.POSITION, S.TOKEN, *(f"{q}_{side}" for q in DIFFERENCES for side in "ab"),
               *map(delta, DIFFERENCES)]  # fmt: skip
    return m.sort_values([S.EXAMPLE_ID, S.POSITION], kind="stable")[columns].reset_index(drop=True)


def largest_changes(diff: pd.DataFrame, quantity: str, top: int | None = 20) -> pd.DataFrame:
    """The `top` rows of token_differences with the largest |change in `quantity`| (all with None), largest
    first; ties keep (example, position) order. A NaN change (the last token of a cut completion has no reward)
    comes last."""
    order = diff[delta(quantity)].abs().sort_values(ascending=False, kind="stable", na_position="last").index
    return diff.loc[order[:top]].reset_index(drop=True)


def token_moves(diff: pd.DataFrame, quantity: str, min_count: int = 2, top: int = 20) -> pd.DataFrame:
    """Across every compared completion, per token text seen at least `min_count` times: its count, the mean
    change in `quantity` and the mean of its absolute value; the `top` tokens with the largest |mean change|
    first. A token whose reward moves one way wherever it occurs is what a change of objective did to it."""
    d = diff.dropna(subset=[delta(quantity)])
    changes = pd.DataFrame({S.TOKEN: d[S.TOKEN], "change": d[delta(quantity)], "size": d[delta(quantity)].abs()})
    moves = changes.groupby(S.TOKEN, sort=True).agg(n=("change", "size"), mean=("change", "mean"),
                                                     mean_abs=("size", "mean"))  # fmt: skip
    moves = moves[moves["n"] >= min_count].reset_index()
    order = moves["mean"].abs().sort_values(ascending=False, kind="stable").index
    names = {"mean": f"mean {delta(quantity)}", "mean_abs": f"mean |{delta(quantity)}|"}
    return moves.loc[order[:top]].rename(columns=names).reset_index(drop=True)


BOX_STATISTICS = ("n", "q1", "median", "q3", "lowerfence", "upperfence")


def box_statistics(frame: pd.DataFrame, by: str, value: str) -> pd.DataFrame:
    """Per value of `by` (sorted), the box Plotly's box trace draws over the non-NaN `value`s with its defaults
    (quartilemethod "linear"): n, q1, median, q3 and the fences. Plotly's "linear" quantile interpolates
    between the sorted values at position p·n − ½ (0-based, clipped to the ends): numpy's method "hazen"
    (Hyndman & Fan's type 5). Its fences are the most extreme values within 1.5 IQR of the box (the box's own
    edge where none is)."""
    rows = []
    for key, values in frame.dropna(subset=[value]).groupby(by, sort=True)[value]:
        v = np.sort(values.to_numpy(float))
        q1, median, q3 = np.quantile(v, [0.25, 0.5, 0.75], method="hazen")
        reach = 1.5 * (q3 - q1)
        low, high = v[v >= q1 - reach], v[v <= q3 + reach]
        rows.append({by: key, "n": len(v), "q1": q1, "median": median, "q3": q3,
                     "lowerfence": min(q1, low[0]), "upperfence": max(q3, high[-1])})  # fmt: skip
    return pd.DataFrame(rows, columns=[by, *BOX_STATISTICS])


# Prompts a picker lists at most; the others are found by the picker's filter. A reward table of 10M tokens holds
# ~40k prompts, and each option listed costs the browser ~1 ms to draw (1,000 took a second more than 100)
PROMPT_CHOICES = 100


def prompt_choices(prompt_ids, texts: dict, query: str, limit: int) -> tuple[list, int]:
    """The prompts a picker lists of `prompt_ids` (in their order): those whose id or text (`texts`, by id)
    holds `query` (case-insensitive, as typed; every prompt for ""), the first `limit` of them; and how many
    match."""
    ids = pd.Series(list(prompt_ids), dtype=object)
    if query:
        held = lambda s: s.str.contains(query, case=False, regex=False)  # noqa: E731
        ids = ids[held(ids.astype(str)) | held(ids.map(texts).fillna("").astype(str))]
    return ids.iloc[:limit].tolist(), len(ids)
