"""Whether each of the paper's findings (METHOD.md section 6) holds on a grid's runs: one rule per finding,
fixed here before any run, applied to the tables of findings/tables.py. The report prints each rule's docstring
as the rule, so what is written is what is computed.

Every rule is a set of comparisons between groups of runs that differ only in seed. A comparison is a difference
of two means over seeds with Welch's 95% interval (analysis.stats.difference_interval, from the seed SEs of
analysis.stats.aggregate_seeds), or a mean of per-run differences with its Student-t interval. Its outcome:
"favours" (the interval excludes 0 on the side the paper's finding predicts), "against" (it excludes 0 on the
other side), "not significant", "untestable" (fewer than two seeds, or seeds that gave identical numbers) or
"premise fails" (what the finding is about did not happen here, e.g. MLE did not overfit). The verdict:

    holds          more than half of the comparisons favour the finding and none is against it
    opposite       more than half are against it and none favours it
    not shown      anything else (too few significant comparisons, or mixed)
    not tested     the grid has no runs for it

No threshold depends on the results; a finding that is not shown is reported as not holding here.
"""

import inspect
from dataclasses import asdict, dataclass, field

import numpy as np
import pandas as pd

from analysis import schema as S
from analysis.pareto import on_front_mask
from analysis.stats import LEVEL, difference_interval, mean_interval, rank_correlations, seed_mean_se
from findings import layout as L

FAVOURS, AGAINST, NOT_SIGNIFICANT, UNTESTABLE, PREMISE = (
    "favours", "against", "not significant", "untestable", "premise fails"
)  # fmt: skip
HOLDS, OPPOSITE, NOT_SHOWN, NOT_TESTED = "holds", "opposite", "not shown", "not tested"
VERDICT_TEXT = {
    HOLDS: "holds here",
    OPPOSITE: "does not hold here: the opposite is significant",
    NOT_SHOWN: "does not hold here: not shown (too few significant comparisons, or mixed)",
    NOT_TESTED: "not tested: the grid has no runs for it",
}


@dataclass
class Finding:
    """One finding of the paper and what the grid's runs say about it."""

    key: str
    title: str
    claim: str  # the paper's finding, as METHOD.md section 6 words it
    paper_figure: str  # the paper's figure it corresponds to
    figure: str  # our PNG of it (findings/layout.py)
    rule: str = ""
    verdict: str = NOT_TESTED
    evidence: list[str] = field(default_factory=list)
    comparisons: list[dict] = field(default_factory=list)
    note: str = ""

    def to_dict(self) -> dict:
        return asdict(self) | {"verdict_text": VERDICT_TEXT[self.verdict]}


def outcome(low: float, high: float, want: str) -> str:
    """The outcome of an interval of a difference when the finding predicts it `want` ("lower" or "higher")
    than 0."""
    if not (np.isfinite(low) and np.isfinite(high)):
        return UNTESTABLE
    if high < 0:
        return FAVOURS if want == "lower" else AGAINST
    if low > 0:
        return FAVOURS if want == "higher" else AGAINST
    return NOT_SIGNIFICANT


def verdict(outcomes: list[str]) -> str:
    """The verdict of a finding from its comparisons' outcomes (module docstring)."""
    if not outcomes:
        return NOT_TESTED
    favours, against = outcomes.count(FAVOURS), outcomes.count(AGAINST)
    if favours > len(outcomes) / 2 and against == 0:
        return HOLDS
    if against > len(outcomes) / 2 and favours == 0:
        return OPPOSITE
    return NOT_SHOWN


def _fmt(x: float, digits: int = 3) -> str:
    return "nan" if not np.isfinite(x) else f"{x:.{digits}f}"


def _interval(c: dict, digits: int = 3) -> str:
    return f"{c['diff']:+.{digits}f} [{_fmt(c['low'], digits)}, {_fmt(c['high'], digits)}]"


def _mean_se(row, col: str, digits: int = 3) -> str:
    return f"{_fmt(row[col], digits)} ± {_fmt(row[S.seed_se_col(col)], digits)} ({int(row[S.N_SEEDS])} seeds)"


def compare(label: str, a, b, col: str, want: str, level: float = LEVEL, b_col: str | None = None) -> dict:
    """A comparison of column `col` between two group rows (mean, seed SE, n_seeds as aggregate_seeds writes
    them): a - b with Welch's interval, and its outcome."""
    b_col = b_col or col
    found = difference_interval(a[col], a[S.seed_se_col(col)], int(a[S.N_SEEDS]),
                                b[b_col], b[S.seed_se_col(b_col)], int(b[S.N_SEEDS]), level)  # fmt: skip
    return {"label": label, "quantity": col, "want": want, "mean_a": float(a[col]), "mean_b": float(b[b_col]),
            "n_a": int(a[S.N_SEEDS]), "n_b": int(b[S.N_SEEDS]), **found,
            "outcome": outcome(found["low"], found["high"], want)}  # fmt: skip


def _full_data(table: pd.DataFrame) -> pd.DataFrame:
    return table[table[L.TRAIN_SIZE].isna()] if len(table) else table


def _label(row) -> str:
    return f"{row[S.METHOD]} {row[S.DECODING]}" if S.DECODING in row else str(row[S.METHOD])


# ---------------------------------------------------------------------------------------------------------------
# The rules


def diversity_at_matched_quality(seed_aggregate: pd.DataFrame, quality: str, level: float = LEVEL) -> Finding:
    """Sampling cells (all temperatures, K samples per prompt) of the full-data runs, averaged over seeds. For
    each point on the MLE (beta = 0) Pareto front of (quality, Self-BLEU), take the IQLearn points (any lam, any
    temperature) whose quality is not significantly below it (Welch 95% interval of the quality difference
    reaching 0 or above), and among them the one of lowest Self-BLEU. The comparison is that point's Self-BLEU
    minus the MLE point's: it favours the finding when the interval is below 0 (IQLearn more diverse at equal or
    better quality) and is against it when above 0, or when no IQLearn point reaches the MLE point's quality.
    Picking the most diverse of several IQLearn points favours IQLearn slightly."""
    f = Finding("diversity", "Diversity at matched quality",
                "IRL keeps more diversity at equal or better task performance than MLE.",
                "Fig. 2", L.FIG_QUALITY_DIVERSITY)  # fmt: skip
    points = _full_data(seed_aggregate)
    points = points[(points[S.KIND] == "sample")].dropna(subset=[quality, S.SELF_BLEU]) if len(points) else points
    mle = points[points[L.FAMILY] == "mle"] if len(points) else points
    iq = points[points[L.FAMILY] == "iqlearn"] if len(points) else points
    if not len(mle) or not len(iq):
        f.note = "needs sampling cells of full-data MLE (beta = 0) and IQLearn runs"
        return f
    front = mle[on_front_mask(mle, quality)].sort_values(S.SELF_BLEU)
    for _, p in front.iterrows():
        candidates = []
        for _, i in iq.iterrows():
            q = difference_interval(i[quality], i[S.seed_se_col(quality)], int(i[S.N_SEEDS]),
                                    p[quality], p[S.seed_se_col(quality)], int(p[S.N_SEEDS]), level)  # fmt: skip
            reaches = q["high"] >= 0 if np.isfinite(q["high"]) else q["diff"] >= 0
            if reaches:
                candidates.append(i)
        head = f"MLE {p[S.DECODING]}: {quality} {_mean_se(p, quality)}, Self-BLEU {_mean_se(p, S.SELF_BLEU, 1)}"
        if not candidates:
            f.comparisons.append({"label": f"{_label(p)}: no IQLearn point reaches its quality", "quantity": quality,
                                  "want": "lower", "outcome": AGAINST})  # fmt: skip
            f.evidence.append(f"{head}; no IQLearn point reaches that quality: against.")
            continue
        best = min(candidates, key=lambda i: i[S.SELF_BLEU])
        c = compare(f"{_label(best)} vs {_label(p)}", best, p, S.SELF_BLEU, "lower", level)
        f.comparisons.append(c)
        f.evidence.append(
            f"{head}; most diverse IQLearn point at equal or better quality: {_label(best)}, {quality} "
            f"{_mean_se(best, quality)}, Self-BLEU {_mean_se(best, S.SELF_BLEU, 1)}; Self-BLEU difference "
            f"{_interval(c, 1)}: {c['outcome']}."
        )
    return f


def entropy_costs_quality(seed_aggregate: pd.DataFrame, quality: str, level: float = LEVEL) -> Finding:
    """Full-data runs, averaged over seeds. For each MLE run with an entropy bonus (beta > 0) and each decoding
    cell it shares with MLE (beta = 0) among greedy and sampling: quality with the bonus minus quality without,
    with Welch's 95% interval; it favours the finding when below 0 (the bonus costs quality) and is against it
    when above 0."""
    f = Finding("entropy", "An entropy bonus costs MLE quality",
                "MLE loses performance quickly when an entropy bonus is added.",
                "Fig. 2", L.FIG_QUALITY_DIVERSITY)  # fmt: skip
    points = _full_data(seed_aggregate)
    points = points[points[S.KIND].isin(["greedy", "sample"])].dropna(subset=[quality]) if len(points) else points
    mle = points[points[L.FAMILY] == "mle"] if len(points) else points
    ent = points[points[L.FAMILY] == "mle+entropy"] if len(points) else points
    if not len(mle) or not len(ent):
        f.note = "needs full-data MLE runs with beta = 0 and with beta > 0"
        return f
    base = mle.set_index(S.DECODING)
    for (beta, _), cells in ent.groupby(["beta", L.GROUP], sort=True):
        for _, e in cells.iterrows():
            if e[S.DECODING] not in base.index:
                continue
            m = base.loc[e[S.DECODING]]
            c = compare(f"beta={beta:g} vs beta=0, {e[S.DECODING]}", e, m, quality, "lower", level)
            f.comparisons.append(c)
            f.evidence.append(f"beta={beta:g}, {e[S.DECODING]}: {quality} {_mean_se(e, quality)} against "
                              f"{_mean_se(m, quality)} without the bonus; difference {_interval(c)}: {c['outcome']}.")
    return f


def _by_task(table: pd.DataFrame):
    """(prefix naming the task, or "" when the grid has one, rows of that task), per task in the table."""
    if not len(table) or L.TASK not in table or table[L.TASK].nunique() <= 1:
        yield "", table
        return
    for task, rows in table.groupby(L.TASK, sort=True):
        yield f"{task}, ", rows


def beam_dependence(beam_gain: pd.DataFrame, level: float = LEVEL) -> Finding:
    """Full-data runs, per task. A run's beam gain is its mean quality over the beam widths swept minus its greedy
    quality. Premise: MLE (beta = 0) gains from beam search (Student-t 95% interval of its mean gain over seeds
    above 0); if not, there is no dependence to reduce and every comparison is "premise fails". For each IQLearn
    lam: its mean gain minus MLE's, with Welch's 95% interval; it favours the finding when below 0 (IQLearn
    depends less on beam search) and is against it when above 0."""
    f = Finding("beam", "Less dependence on beam search", "IQLearn reduces the dependence on beam search at inference.",
                "Fig. 4", L.FIG_BEAM_SEARCH)  # fmt: skip
    for task, gains in _by_task(_full_data(beam_gain)):
        mle = gains[gains[L.FAMILY] == "mle"] if len(gains) else gains
        iq = gains[gains[L.FAMILY] == "iqlearn"] if len(gains) else gains
        if not len(mle) or not len(iq):
            continue
        m = mle.iloc[0]
        gain = L.BEAM_GAIN_COL
        low, high = mean_interval(m[gain], m[S.seed_se_col(gain)], int(m[S.N_SEEDS]), level)
        premise = np.isfinite(low) and low > 0
        f.evidence.append(f"{task}MLE beam gain {_mean_se(m, gain)}, 95% interval [{_fmt(low)}, {_fmt(high)}] "
                          f"(greedy {_mean_se(m, 'greedy')}, beam {_mean_se(m, 'beam')}): premise "
                          f"{'holds' if premise else 'fails'}.")  # fmt: skip
        for _, i in iq.sort_values(S.LAM).iterrows():
            c = compare(f"{task}{i[S.METHOD]} vs {m[S.METHOD]}", i, m, gain, "lower", level)
            if not premise:
                c["outcome"] = PREMISE
            f.comparisons.append(c)
            f.evidence.append(f"{task}{i[S.METHOD]}: beam gain {_mean_se(i, gain)}; minus MLE's {_interval(c)}: "
                              f"{c['outcome']}.")  # fmt: skip
    if not f.comparisons:
        f.note = "needs full-data MLE and IQLearn runs swept with greedy decoding and beam search"
    return f


def _by_size(small_data: pd.DataFrame):
    """(label of the task and subset size, MLE row, rows of that task and size) for each subset size of each task
    where an MLE (beta = 0) group was run."""
    subsets = small_data[small_data[L.TRAIN_SIZE].notna()] if len(small_data) else small_data
    for task, rows_of_task in _by_task(subsets):
        for size, rows in rows_of_task.groupby(L.TRAIN_SIZE, sort=True):
            mle = rows[rows[L.FAMILY] == "mle"]
            if len(mle):
                yield f"{task}{int(size)} examples", mle.iloc[0], rows


def _overfit_premise(m, level: float) -> tuple[bool, str]:
    low, high = mean_interval(m[L.OVERFIT], m[S.seed_se_col(L.OVERFIT)], int(m[S.N_SEEDS]), level)
    premise = bool(np.isfinite(low) and low > 0)
    return premise, (f"MLE's validation NLL rose {_mean_se(m, L.OVERFIT)} above its lowest, 95% interval "
                     f"[{_fmt(low)}, {_fmt(high)}] (MLE {'overfits' if premise else 'does not overfit significantly'})")


def td_mitigates_overfitting(small_data: pd.DataFrame, level: float = LEVEL) -> Finding:
    """Runs on training subsets (train_size set). Overfitting of a run: its validation NLL at the last evaluation
    minus the lowest over its evaluations (how far it rose from its best). At each subset size (of each task, in
    a grid of several): premise, MLE (beta = 0) overfits (Student-t 95% interval of its mean overfitting above 0),
    else the size's comparisons are "premise fails"; for each IQLearn lam, its overfitting minus MLE's with
    Welch's 95% interval: it favours the finding when below 0 (the TD term mitigates overfitting) and is against
    it when above 0."""
    f = Finding("overfitting", "The TD term mitigates overfitting on small data",
                "With small training sets, MLE overfits and the TD term mitigates it.",
                "Fig. 7", L.FIG_SMALL_DATA)  # fmt: skip
    for size, m, rows in _by_size(small_data):
        premise, text = _overfit_premise(m, level)
        f.evidence.append(f"{size}: {text}; lowest at step {_mean_se(m, L.MIN_STEP, 0)}.")
        for _, i in rows[rows[L.FAMILY] == "iqlearn"].sort_values(S.LAM).iterrows():
            c = compare(f"{size}: {i[S.METHOD]} vs {m[S.METHOD]}", i, m, L.OVERFIT, "lower", level)
            if not premise:
                c["outcome"] = PREMISE
            f.comparisons.append(c)
            f.evidence.append(f"{size}, {i[S.METHOD]}: overfitting {_mean_se(i, L.OVERFIT)}, lowest at step "
                              f"{_mean_se(i, L.MIN_STEP, 0)}, final "
                              f"validation NLL {_mean_se(i, L.FINAL_NLL)} (MLE {_mean_se(m, L.FINAL_NLL)}); "
                              f"overfitting minus MLE's {_interval(c)}: {c['outcome']}.")  # fmt: skip
    if not f.comparisons:
        f.note = "needs MLE and IQLearn runs on training subsets (train_size)"
    return f


def entropy_cannot_mitigate(small_data: pd.DataFrame, level: float = LEVEL) -> Finding:
    """Runs on training subsets, overfitting as in the TD rule (final minus lowest validation NLL). At each subset
    size (of each task) where MLE (beta = 0) overfits (else "premise fails"): for each MLE run with an entropy
    bonus (beta > 0) and each IQLearn lam, the entropy run's overfitting minus the IQLearn run's, with Welch's 95%
    interval: it favours the finding when above 0 (the entropy bonus leaves more overfitting than the TD term) and
    is against it when below 0. The entropy run against plain MLE is reported beside it."""
    f = Finding("entropy-overfitting", "An entropy bonus does not mitigate overfitting as the TD term does",
                "With small training sets an entropy bonus cannot mitigate overfitting (the TD term can).",
                "Fig. 7", L.FIG_SMALL_DATA)  # fmt: skip
    for size, m, rows in _by_size(small_data):
        premise, text = _overfit_premise(m, level)
        f.evidence.append(f"{size}: {text}; lowest at step {_mean_se(m, L.MIN_STEP, 0)}.")
        for _, e in rows[rows[L.FAMILY] == "mle+entropy"].sort_values("beta").iterrows():
            vs_mle = compare("", e, m, L.OVERFIT, "higher", level)
            f.evidence.append(f"{size}, {e[S.METHOD]}: overfitting {_mean_se(e, L.OVERFIT)}, lowest at step "
                              f"{_mean_se(e, L.MIN_STEP, 0)}; minus "
                              f"MLE's {_interval(vs_mle)}.")  # fmt: skip
            for _, i in rows[rows[L.FAMILY] == "iqlearn"].sort_values(S.LAM).iterrows():
                c = compare(f"{size}: {e[S.METHOD]} vs {i[S.METHOD]}", e, i, L.OVERFIT, "higher", level)
                if not premise:
                    c["outcome"] = PREMISE
                f.comparisons.append(c)
                f.evidence.append(f"{size}, {e[S.METHOD]} minus {i[S.METHOD]}: {_interval(c)}: "
                                  f"{c['outcome']}.")  # fmt: skip
    if not f.comparisons:
        f.note = "needs MLE, MLE + entropy and IQLearn runs on training subsets (train_size)"
    return f


def reward_correlation_grows_with_lam(correlation_by_lam: pd.DataFrame, correlations: pd.DataFrame,
                                      level: float = LEVEL) -> Finding:  # fmt: skip
    """Full-data runs. Per run, Spearman's rho between the extracted reward R and the per-sample quality over the
    sweep's samples (sampling at the highest temperature), pooled over prompts. For each IQLearn lam: its mean
    rho over seeds minus MLE's (lam = 0, beta = 0), with Welch's 95% interval; it favours the finding when above 0
    and is against it when below 0. The same for log pi(y|x) (logp_sum) is shown beside it, and the rank
    correlation between lam and the runs' rho describes the trend."""
    f = Finding("reward-correlation", "Reward-metric correlation grows with lam",
                "IQLearn rewards correlate with task metrics, more so as lam grows.",
                "Fig. 8", L.FIG_REWARD_CORRELATION)  # fmt: skip
    table = _full_data(correlation_by_lam) if L.TRAIN_SIZE in correlation_by_lam else correlation_by_lam
    if not len(table):
        f.note = "needs rewards extracted on the sweep samples of MLE and IQLearn runs"
        return f
    r = table[table[L.SCORE] == S.R]
    mle = r[r[L.FAMILY] == "mle"]
    if not len(mle) or not (r[L.FAMILY] == "iqlearn").any():
        f.note = "needs MLE (lam = 0) and IQLearn runs with rewards"
        return f
    m = mle.iloc[0]
    for score in (S.R, S.LOGP_SUM):
        part = table[table[L.SCORE] == score].sort_values(S.LAM)
        values = ", ".join(f"lam={row[S.LAM]:g}: {_mean_se(row, 'spearman')}" for _, row in part.iterrows())
        f.evidence.append(f"Spearman({score}, quality) by lam: {values}.")
    for _, i in r[r[L.FAMILY] == "iqlearn"].sort_values(S.LAM).iterrows():
        c = compare(f"R: lam={i[S.LAM]:g} vs MLE", i, m, "spearman", "higher", level)
        f.comparisons.append(c)
        f.evidence.append(f"lam={i[S.LAM]:g} minus MLE: {_interval(c)}: {c['outcome']}.")
    runs_r = correlations[(correlations[L.SCORE] == S.R) & correlations[L.FAMILY].isin(["mle", "iqlearn"])]
    if L.TRAIN_SIZE in runs_r:
        runs_r = runs_r[runs_r[L.TRAIN_SIZE].isna()]
    undefined = runs_r[runs_r["spearman"].isna()]
    if len(undefined):
        f.evidence.append(f"Spearman undefined for {', '.join(undefined[L.NAME])} (quality the same on every "
                          f"sample), so their group's mean is too: untestable.")  # fmt: skip
    runs_r = runs_r.dropna(subset=["spearman"])
    trend = rank_correlations(runs_r[S.LAM], runs_r["spearman"])
    f.evidence.append(f"Trend over {len(runs_r)} runs: Spearman(lam, rho) = {_fmt(trend['spearman'])} "
                      f"(descriptive).")  # fmt: skip
    return f


def reward_beyond_likelihood(correlations: pd.DataFrame, level: float = LEVEL) -> Finding:
    """Full-data IQLearn runs. Per run, Spearman's rho of R with quality minus that of log pi(y|x) (logp_sum) on
    the same samples; per lam, the mean of that difference over seeds with its Student-t 95% interval. It favours
    the finding when above 0 (the reward says more about quality than the likelihood baseline does) and is
    against it when below 0. With gamma near 1, R ranks one prompt's samples almost as log pi does (METHOD.md
    section 4), so this is the test that the correlation is the reward's own."""
    f = Finding("reward-vs-likelihood", "Rewards beyond the likelihood baseline",
                "IQLearn rewards correlate with task metrics (beyond what log pi(y|x) does).",
                "Fig. 8", L.FIG_REWARD_CORRELATION)  # fmt: skip
    table = correlations[correlations[L.TRAIN_SIZE].isna()] if len(correlations) else correlations
    if not len(table) or not (table[L.FAMILY] == "iqlearn").any():
        f.note = "needs rewards extracted on the sweep samples of IQLearn runs"
        return f
    wide = table.pivot(index=[L.NAME, L.FAMILY, S.LAM], columns=L.SCORE, values="spearman").reset_index()
    wide["diff"] = wide[S.R] - wide[S.LOGP_SUM]  # NaN where quality was constant (no correlation defined)
    for (fam, lam), runs_ in wide.groupby([L.FAMILY, S.LAM], sort=True):
        mean, se, n = seed_mean_se(runs_["diff"])  # NaN differences (no correlation defined) left out
        low, high = mean_interval(mean, se, n, level) if se != 0 else (np.nan, np.nan)
        label = f"{fam} lam={lam:g}: rho(R) - rho(logp_sum)"
        c = {"label": label, "quantity": "spearman", "want": "higher", "mean_a": float(runs_[S.R].mean()),
             "mean_b": float(runs_[S.LOGP_SUM].mean()), "n_a": n, "n_b": n, "diff": mean, "se": se,
             "df": n - 1, "low": low, "high": high, "outcome": outcome(low, high, "higher")}  # fmt: skip
        text = f"{label} = {_interval(c)} over {n} seed(s)"
        if fam == "iqlearn":
            f.comparisons.append(c)
            f.evidence.append(f"{text}: {c['outcome']}.")
        else:
            f.evidence.append(f"{text} (MLE, for reference; not a comparison of the rule).")
    return f


RULES = (
    diversity_at_matched_quality, entropy_costs_quality, beam_dependence, td_mitigates_overfitting,
    entropy_cannot_mitigate, reward_correlation_grows_with_lam, reward_beyond_likelihood,
)  # fmt: skip


def evaluate(tables: dict[str, pd.DataFrame], level: float = LEVEL) -> list[Finding]:
    """Every rule on the findings tables; each finding carries its rule's text and its verdict."""
    quality = S.mean_col(tables[L.RUNS]["quality_metric"].iloc[0])
    empty = pd.DataFrame()
    seed_aggregate = tables.get(L.SEED_AGGREGATE, empty)
    found = [
        diversity_at_matched_quality(seed_aggregate, quality, level),
        entropy_costs_quality(seed_aggregate, quality, level),
        beam_dependence(tables.get(L.BEAM_GAIN, empty), level),
        td_mitigates_overfitting(tables.get(L.SMALL_DATA, empty), level),
        entropy_cannot_mitigate(tables.get(L.SMALL_DATA, empty), level),
        reward_correlation_grows_with_lam(tables.get(L.CORRELATION_BY_LAM, empty), tables.get(L.CORRELATIONS, empty),
                                          level),  # fmt: skip
        reward_beyond_likelihood(tables.get(L.CORRELATIONS, empty), level),
    ]
    for finding, rule in zip(found, RULES):
        finding.rule = inspect.getdoc(rule)
        finding.verdict = verdict([c["outcome"] for c in finding.comparisons])
    return found


def comparisons_table(found: list[Finding]) -> pd.DataFrame:
    """Every comparison of every finding, one row each, with the finding's key."""
    rows = [{"finding": f.key, **c} for f in found for c in f.comparisons]
    return pd.DataFrame(rows)
