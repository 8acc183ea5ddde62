"""Pure pandas transforms behind the pages: run rows, training-curve bands over seeds, Pareto points,
correlations, pairwise accuracy and token reward differences. No streamlit, no I/O.
"""

import posixpath
from collections import defaultdict

import numpy as np
import pandas as pd

from analysis import pareto
from analysis import schema as S
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
RUN_COLUMNS = (S.RUN, S.METHOD, "objective", S.LAM, "gamma", "alpha", "beta", S.SEED, "model", "data",
               "max_steps", "last_checkpoint", "status")  # fmt: skip


def run_row(run: str, config: dict, steps: list[int]) -> dict:
    """One row of the runs table. lam and gamma are blank except for IQLearn (other configs still hold the
    unused defaults); alpha is blank where the config has none. Finished: the last checkpoint is max_steps."""
    iq = config["objective"] == "iqlearn"
    last = steps[-1] if steps else None
    return {
        S.RUN: run,
        S.METHOD: method_label(config),
        "objective": config["objective"],
        S.LAM: config["lam"] if iq else np.nan,
        "gamma": config["gamma"] if iq else np.nan,
        "alpha": config.get("alpha", np.nan),
        "beta": config.get("beta", 0.0),
        S.SEED: config["seed"],
        "model": config["model"],
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


def effective_lam(runs: pd.DataFrame) -> pd.Series:
    """The TD weight each run trained with: lam for IQLearn, 0 for MLE (IQLearn at lam=0 is MLE), else NaN."""
    return runs[S.LAM].where(runs["objective"] != "mle", 0.0)


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
    their SEs over seeds, and "on_front" per method (higher quality; lower diversity only for Self-BLEU)."""
    cols = list(dict.fromkeys([quality, diversity]))
    agg = agg.dropna(subset=cols)
    points = pareto.aggregate_seeds(agg, metrics=cols)
    return pareto.pareto_by(points, quality, S.METHOD, diversity, lower_diversity_is_better=diversity == S.SELF_BLEU)


def spearman(x: pd.Series, y: pd.Series) -> float:
    """Spearman's rank correlation (average ranks for ties), NaN if either side is constant."""
    return float(pd.Series(np.asarray(x, float)).rank().corr(pd.Series(np.asarray(y, float)).rank()))


def correlations(seqs: pd.DataFrame, metric: str, r: str = S.R) -> pd.DataFrame:
    """Per checkpoint (run, step): Spearman between sequence reward `r` and the per-sample `metric`, and n."""
    rows = [
        {S.RUN: run, S.STEP: step, "spearman": spearman(g[r], g[metric]), "n": len(g)}
        for (run, step), g in seqs.dropna(subset=[metric]).groupby([S.RUN, S.STEP], sort=True)
    ]
    return pd.DataFrame(rows, columns=[S.RUN, S.STEP, "spearman", "n"])


def wilson_interval(k, n, z: float = 1.96) -> tuple[np.ndarray, np.ndarray]:
    """Wilson score interval of a binomial proportion k/n (95% for z=1.96): (lower, upper)."""
    k, n = np.asarray(k, float), np.asarray(n, float)
    p = k / n
    centre = (p + z**2 / (2 * n)) / (1 + z**2 / n)
    half = z / (1 + z**2 / n) * np.sqrt(p * (1 - p) / n + z**2 / (4 * n**2))
    return centre - half, centre + half


def pairwise_accuracy(pairs: pd.DataFrame) -> pd.DataFrame:
    """Per checkpoint (run, step): the fraction of pairs with R(chosen) > R(rejected), its 95% Wilson
    interval (lo, hi) and the number of pairs n."""
    g = (pairs[S.MARGIN] > 0).groupby([pairs[S.RUN], pairs[S.STEP]], sort=True)
    out = g.agg(wins="sum", n="count").reset_index()
    out["accuracy"] = out["wins"] / out["n"]
    out["lo"], out["hi"] = wilson_interval(out["wins"], out["n"])
    return out.drop(columns="wins")


def reward_differences(a: pd.DataFrame, b: pd.DataFrame, top: int = 20) -> pd.DataFrame:
    """The `top` tokens whose reward differs most between two checkpoints' token tables, by |reward_b -
    reward_a|. Only examples both scored with the same token ids at every position are compared."""
    m = a.merge(b, on=[S.EXAMPLE_ID, S.POSITION], suffixes=("_a", "_b"))
    same_ids = (m[S.TOKEN_ID + "_a"] == m[S.TOKEN_ID + "_b"]).groupby(m[S.EXAMPLE_ID]).all()
    length_a, length_b = a.groupby(S.EXAMPLE_ID).size(), b.groupby(S.EXAMPLE_ID).size()
    comparable = same_ids & (length_a.reindex(same_ids.index) == length_b.reindex(same_ids.index))
    m = m[m[S.EXAMPLE_ID].map(comparable).to_numpy(bool)]
    m = m.assign(diff=m[S.REWARD + "_b"] - m[S.REWARD + "_a"])
    m = m.loc[m["diff"].abs().sort_values(ascending=False, kind="stable").index[:top]]
    out = m[[S.EXAMPLE_ID, S.POSITION, S.TOKEN + "_a", S.REWARD + "_a", S.REWARD + "_b", "diff"]]
    return out.rename(columns={S.TOKEN + "_a": S.TOKEN}).reset_index(drop=True)
