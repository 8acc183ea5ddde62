"""The findings: each rule decides literal seed tables as its docstring says (holds, opposite, premise fails), the
interval from seed SEs equals scipy's Welch test on the raw values, and the quick findings run end to end at toy
scale, writing every table, figure and section of the report."""

import inspect
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from scipy import stats

from analysis import schema as S
from analysis.stats import aggregate_seeds, difference_interval, mean_interval
from findings import layout as L
from findings import rules as R
from findings.tables import GROUP_KEYS

REPO = Path(__file__).resolve().parents[1]
QUALITY = S.mean_col(S.EXACT_MATCH)
FAMILY_OF = {
    "mle": ("mle", 0.0, 0.0),
    "mle beta=0.1": ("mle+entropy", 0.0, 0.1),
    "iqlearn lam=0.3": ("iqlearn", 0.3, 0.0),
}


def test_difference_interval_is_welchs_t_test_on_the_raw_values():
    a, b = np.array([1.0, 2.0, 3.5]), np.array([2.0, 3.0, 4.0, 5.0])
    se = lambda x: x.std(ddof=1) / np.sqrt(len(x))  # noqa: E731
    found = difference_interval(a.mean(), se(a), len(a), b.mean(), se(b), len(b))
    welch = stats.ttest_ind(a, b, equal_var=False)
    ci = welch.confidence_interval(0.95)
    # rel 1e-6, approx's default: float64 arithmetic on both sides
    assert found["diff"] == pytest.approx(a.mean() - b.mean())
    # rel 1e-6, approx's default: float64 arithmetic on both sides
    assert (found["low"], found["high"], found["df"]) == pytest.approx((ci.low, ci.high, welch.df))
    low, high = mean_interval(a.mean(), se(a), len(a))
    # rel 1e-6, approx's default: float64 arithmetic on both sides
    assert (low, high) == pytest.approx(tuple(stats.ttest_1samp(a, 0).confidence_interval(0.95)))
    # identical replicates (SE 0 on both sides) and single seeds give no interval: untestable, never significant
    assert np.isnan(difference_interval(1.0, 0.0, 3, 0.0, 0.0, 3)["low"])
    assert np.isnan(difference_interval(1.0, 0.1, 1, 0.0, 0.1, 3)["low"])


@pytest.mark.parametrize(
    "outcomes, expected",
    [
        ([R.FAVOURS, R.FAVOURS, R.NOT_SIGNIFICANT], R.HOLDS),
        ([R.FAVOURS, R.NOT_SIGNIFICANT, R.NOT_SIGNIFICANT], R.NOT_SHOWN),  # not more than half
        ([R.FAVOURS, R.FAVOURS, R.AGAINST], R.NOT_SHOWN),  # mixed
        ([R.AGAINST, R.AGAINST, R.UNTESTABLE], R.OPPOSITE),
        ([R.PREMISE, R.PREMISE], R.NOT_SHOWN),
        ([], R.NOT_TESTED),
    ],
)
def test_verdict(outcomes, expected):
    assert R.verdict(outcomes) == expected


def seed_table(rows, task: str = "math") -> pd.DataFrame:
    """Per-seed rows (method, decoding or None, train_size or NaN, {column: [value per seed]}) of one task as one
    row per seed with the group columns the findings tables carry."""
    out = []
    for method, decoding, size, values in rows:
        family, lam, beta = FAMILY_OF[method]
        n = len(next(iter(values.values())))
        for seed in range(n):
            row = {L.GROUP: f"{method}-{task}-{size}", L.TASK: task, S.METHOD: method, L.FAMILY: family, S.LAM: lam,
                   "beta": beta, L.TRAIN_SIZE: size, S.SEED: seed,
                   "quality_metric": S.TASK_METRICS[task][0]} | {k: v[seed] for k, v in values.items()}  # fmt: skip
            if decoding is not None:
                kind = "greedy" if decoding == "greedy" else decoding.split("=")[0].replace("t", "sample")
                row |= {S.DECODING: decoding, S.KIND: kind, S.TEMPERATURE: 0.0, S.BEAMS: 1}
            out.append(row)
    return pd.DataFrame(out)


def group(table: pd.DataFrame, columns, cells: bool = False) -> pd.DataFrame:
    by = [*GROUP_KEYS, *([S.DECODING, S.KIND, S.TEMPERATURE, S.BEAMS] if cells else [])]
    return aggregate_seeds(table, by=by, metrics=list(columns))


def quality_diversity(iq_self_bleu_shift: float) -> pd.DataFrame:
    nan = np.nan
    rows = [
        ("mle", "t=0.5", nan, {QUALITY: [0.50, 0.52, 0.48], S.SELF_BLEU: [60.0, 61.0, 59.0]}),
        ("mle", "t=1", nan, {QUALITY: [0.30, 0.31, 0.29], S.SELF_BLEU: [40.0, 41.0, 39.0]}),
        ("iqlearn lam=0.3", "t=0.5", nan, {QUALITY: [0.51, 0.50, 0.52], S.SELF_BLEU: [50.0, 51.0, 49.0]}),
        ("iqlearn lam=0.3", "t=1", nan, {QUALITY: [0.35, 0.36, 0.34], S.SELF_BLEU: [30.0, 31.0, 29.0]}),
    ]
    table = seed_table(rows)
    table.loc[table[L.FAMILY] == "iqlearn", S.SELF_BLEU] += iq_self_bleu_shift
    return group(table, [QUALITY, S.SELF_BLEU], cells=True)


def test_diversity_rule_on_literal_fronts():
    # Both MLE points are on its front. At MLE t=0.5 (quality 0.50) only IQLearn t=0.5 (0.51) is not
    # significantly worse: Self-BLEU 50 against 60. At MLE t=1 (0.30) both IQLearn points qualify; the most
    # diverse is t=1 (Self-BLEU 30 against 40). Both differences are -10 with a tight interval: holds.
    found = R.diversity_at_matched_quality(quality_diversity(0.0), QUALITY)
    assert [c["outcome"] for c in found.comparisons] == [R.FAVOURS, R.FAVOURS]
    assert [c["label"] for c in found.comparisons] == ["iqlearn lam=0.3 t=1 vs mle t=1",
                                                       "iqlearn lam=0.3 t=0.5 vs mle t=0.5"]  # fmt: skip
    # rel 1e-6, approx's default: float64 arithmetic on both sides
    assert [c["diff"] for c in found.comparisons] == pytest.approx([-10.0, -10.0])
    assert R.verdict([c["outcome"] for c in found.comparisons]) == R.HOLDS
    # IQLearn 20 Self-BLEU points less diverse: its best candidates are 10 above MLE's: the opposite
    found = R.diversity_at_matched_quality(quality_diversity(20.0), QUALITY)
    # rel 1e-6, approx's default: float64 arithmetic on both sides
    assert [c["diff"] for c in found.comparisons] == pytest.approx([10.0, 10.0])
    assert R.verdict([c["outcome"] for c in found.comparisons]) == R.OPPOSITE


def test_entropy_quality_rule():
    nan = np.nan
    rows = [("mle", "greedy", nan, {QUALITY: [0.50, 0.52, 0.48]}),
            ("mle beta=0.1", "greedy", nan, {QUALITY: [0.30, 0.32, 0.28]})]  # fmt: skip
    found = R.entropy_costs_quality(group(seed_table(rows), [QUALITY], cells=True), QUALITY)
    assert len(found.comparisons) == 1 and found.comparisons[0]["outcome"] == R.FAVOURS
    # rel 1e-6, approx's default: float64 arithmetic on both sides
    assert found.comparisons[0]["diff"] == pytest.approx(-0.2)


def test_beam_rule_needs_mle_to_gain_from_beams():
    nan = np.nan
    gain = L.BEAM_GAIN_COL

    def rule(mle_gain, iq_gain):
        rows = [("mle", None, nan, {gain: mle_gain, "greedy": [0.3] * 3, "beam": [0.4] * 3}),
                ("iqlearn lam=0.3", None, nan, {gain: iq_gain, "greedy": [0.3] * 3, "beam": [0.4] * 3})]  # fmt: skip
        return R.beam_dependence(group(seed_table(rows), [gain, "greedy", "beam"]))

    assert rule([0.10, 0.11, 0.09], [0.01, 0.02, 0.00]).comparisons[0]["outcome"] == R.FAVOURS
    assert rule([0.10, 0.11, 0.09], [0.20, 0.21, 0.19]).comparisons[0]["outcome"] == R.AGAINST
    # MLE gains nothing from beam search: nothing to reduce, whatever IQLearn does
    assert rule([0.00, 0.01, -0.01], [-0.2, -0.21, -0.19]).comparisons[0]["outcome"] == R.PREMISE


def small_data_table(mle, iq, ent, task: str = "math") -> pd.DataFrame:
    """The small_data table of one task: MLE, IQLearn (lam 0.3) and MLE + entropy on 100 examples with the given
    overfitting per seed, and a full-data MLE group."""
    steps = {L.FINAL_NLL: [1.0] * 3, L.MIN_STEP: [40.0] * 3}
    rows = [("mle", None, 100.0, {L.OVERFIT: mle, **steps}), ("iqlearn lam=0.3", None, 100.0, {L.OVERFIT: iq, **steps}),
            ("mle beta=0.1", None, 100.0, {L.OVERFIT: ent, **steps}),
            ("mle", None, np.nan, {L.OVERFIT: [0.0, 0.01, 0.0], **steps})]  # fmt: skip
    return group(seed_table(rows, task), [L.OVERFIT, L.FINAL_NLL, L.MIN_STEP])


def test_overfitting_rules():
    small = small_data_table

    table = small([0.50, 0.55, 0.45], [0.10, 0.12, 0.08], [0.48, 0.50, 0.46])
    td, ent = R.td_mitigates_overfitting(table), R.entropy_cannot_mitigate(table)
    assert [c["outcome"] for c in td.comparisons] == [R.FAVOURS]  # full-data runs take no part
    assert [c["outcome"] for c in ent.comparisons] == [R.FAVOURS]
    # rel 1e-6, approx's default: float64 arithmetic on both sides
    assert ent.comparisons[0]["diff"] == pytest.approx(0.48 - 0.10)
    # entropy mitigates as much as TD does: not significant; MLE does not overfit: premise fails
    table = small([0.50, 0.55, 0.45], [0.10, 0.12, 0.08], [0.10, 0.13, 0.07])
    assert [c["outcome"] for c in R.entropy_cannot_mitigate(table).comparisons] == [R.NOT_SIGNIFICANT]
    table = small([0.0, 0.0, 0.0], [0.10, 0.12, 0.08], [0.48, 0.50, 0.46])
    assert [c["outcome"] for c in R.td_mitigates_overfitting(table).comparisons] == [R.PREMISE]


def test_overfitting_rules_judge_each_task_against_its_own_mle():
    """A grid of two tasks at one subset size: MLE overfits on summarize and not on math, so math's comparison is
    "premise fails" and summarize's is decided; neither task's MLE stands in for the other's."""
    table = pd.concat([small_data_table([0.0, 0.0, 0.0], [0.10, 0.12, 0.08], [0.48, 0.50, 0.46], "math"),
                       small_data_table([0.50, 0.55, 0.45], [0.10, 0.12, 0.08], [0.48, 0.50, 0.46], "summarize")],
                      ignore_index=True)  # fmt: skip
    td = R.td_mitigates_overfitting(table)
    assert [(c["label"], c["outcome"]) for c in td.comparisons] == [
        ("math, 100 examples: iqlearn lam=0.3 vs mle", R.PREMISE),
        ("summarize, 100 examples: iqlearn lam=0.3 vs mle", R.FAVOURS),
    ]
    assert any(line.startswith("summarize, 100 examples: MLE's validation NLL rose") for line in td.evidence)
    assert R.verdict([c["outcome"] for c in td.comparisons]) == R.NOT_SHOWN  # one of two favours: not a majority


def correlation_tables(per_method) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(correlation_by_lam, correlations) as findings.tables writes them, from {method: (Spearman of R per seed,
    Spearman of logp_sum per seed)} on full data."""
    rows = []
    for method, (r, logp) in per_method.items():
        for score, values in ((S.R, r), (S.LOGP_SUM, logp)):
            table = seed_table([(method, None, np.nan, {"spearman": values})])
            rows.append(table.assign(**{L.SCORE: score, L.NAME: table[L.GROUP] + "/seed" + table[S.SEED].astype(str)}))
    correlations = pd.concat(rows, ignore_index=True)
    by_lam = pd.concat([group(part, ["spearman"]).assign(**{L.SCORE: score})
                        for score, part in correlations.groupby(L.SCORE)])  # fmt: skip
    return by_lam, correlations


def test_reward_rules():
    by_lam, correlations = correlation_tables({"mle": ([0.0, 0.05, -0.05], [0.3, 0.32, 0.28]),
                                               "iqlearn lam=0.3": ([0.5, 0.52, 0.48], [0.3, 0.31, 0.29])})  # fmt: skip
    grows = R.reward_correlation_grows_with_lam(by_lam, correlations)
    assert [c["outcome"] for c in grows.comparisons] == [R.FAVOURS]
    # rel 1e-6, approx's default: float64 arithmetic on both sides
    assert grows.comparisons[0]["diff"] == pytest.approx(0.5)
    beyond = R.reward_beyond_likelihood(correlations)
    assert [c["outcome"] for c in beyond.comparisons] == [R.FAVOURS]  # 0.5 - 0.3 per seed, paired
    # rel 1e-6, approx's default: float64 arithmetic on both sides
    assert beyond.comparisons[0]["diff"] == pytest.approx(0.2)
    assert "MLE, for reference" in " ".join(beyond.evidence)


def test_reward_rules_with_an_undefined_correlation():
    """A run whose samples all scored the same has no Spearman rho: its group is untestable, the run is named,
    the trend is taken over the other runs, and the paired rule uses the seeds that have both rhos."""
    nan = np.nan
    by_lam, correlations = correlation_tables({"mle": ([0.0, 0.05, -0.05], [0.3, 0.32, 0.28]),
                                               "iqlearn lam=0.3": ([0.5, nan, 0.48], [0.3, nan, 0.29])})  # fmt: skip
    grows = R.reward_correlation_grows_with_lam(by_lam, correlations)
    assert [c["outcome"] for c in grows.comparisons] == [R.UNTESTABLE]
    evidence = " ".join(grows.evidence)
    assert "Spearman undefined for iqlearn lam=0.3-math-nan/seed1" in evidence
    assert "Trend over 5 runs" in evidence
    beyond = R.reward_beyond_likelihood(correlations)
    # seeds 0 and 2: 0.5 - 0.3 = 0.2 and 0.48 - 0.29 = 0.19, mean 0.195
    # rel 1e-6, approx's default: float64 arithmetic on both sides
    assert beyond.comparisons[0]["diff"] == pytest.approx(0.195) and "over 2 seed(s)" in " ".join(beyond.evidence)


def toy_quick_grid(tmp_path) -> str:
    """configs/findings/quick.yaml at toy scale: the tiny preset, 4 steps, one seed, 4 prompts."""
    spec = yaml.safe_load((REPO / "configs" / "findings" / "quick.yaml").read_text())
    spec["output_dir"] = str(tmp_path / "quick")
    spec["base"] |= dict(model="tiny", vocab_size=400, math_sizes=[64, 16, 16], max_length=160, max_steps=4,
                         per_device_train_batch_size=4, warmup_steps=0, logging_steps=2, eval_steps=2,
                         save_steps=4)  # fmt: skip
    for sub in spec["grid"]:
        sub["axes"]["seed"] = [0]
        if "train_size" in sub["axes"]:
            sub["axes"]["train_size"] = [16]
    spec["sweep"] |= dict(limit=4, samples=2, max_new_tokens=8)
    spec["rewards"] |= dict(limit=4, n_boot=20)
    path = tmp_path / "quick.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return str(path)


def test_quick_findings_end_to_end_at_toy_scale(quick_findings):
    grid, lines = quick_findings
    out = grid / L.FINDINGS_DIR
    assert lines[-1] == str(out / L.REPORT)  # the report's path is the last line
    assert sum(line.endswith(")") and ": trained (" in line for line in lines) == 6
    report = (out / L.REPORT).read_text()
    summary = json.loads((out / L.SUMMARY).read_text())
    assert len(summary["findings"]) == len(R.RULES)
    for n, (finding, rule) in enumerate(zip(summary["findings"], R.RULES), 1):
        assert finding["rule"] == inspect.getdoc(rule)  # the rule reported is the code's
        assert f"## {n}. {finding['title']}" in report and finding["verdict"] in R.VERDICT_TEXT
    for section in ("Summary", "Settings", "Preference accuracy", "Grid file"):
        assert f"## {section}" in report
    assert report.count("**Rule.**") == report.count("**Verdict: ") == len(R.RULES)
    for name in L.TABLES:
        assert (out / f"{name}.parquet").is_file(), name
    for figure in (L.FIG_QUALITY_DIVERSITY, L.FIG_BEAM_SEARCH, L.FIG_SMALL_DATA, L.FIG_REWARD_CORRELATION):
        assert (out / figure).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", figure
        assert f"]({figure})" in report
    runs = pd.read_parquet(out / f"{L.RUNS}.parquet")
    assert sorted(runs[L.NAME]) == sorted(
        ["mle/seed0", "mle-beta0.1/seed0", "iqlearn-lam0.3/seed0", "mle-train_size16/seed0",
         "mle-beta0.1-train_size16/seed0", "iqlearn-lam0.3-train_size16/seed0"]  # fmt: skip
    )
    assert set(runs.loc[runs[L.TRAIN_SIZE] == 16, L.TRAIN_EXAMPLES]) == {16.0}
    # the rules saw the tables written: every comparison of findings.json is a row of comparisons.parquet
    comparisons = pd.read_parquet(out / f"{L.COMPARISONS}.parquet")
    assert len(comparisons) == sum(len(f["comparisons"]) for f in summary["findings"])
    # the run's wall times, kept in timings.jsonl: a report written again later still quotes them
    (timing,) = summary["timings"]
    assert timing["command"] == "run" and set(timing["seconds"]) == {"train", "sweep", "rewards", "total"}
    assert timing["config"] == str(grid.parent / "quick.yaml") and timing["commit"]  # the tests run in a checkout
    line = next(x for x in report.splitlines() if x.startswith("- Wall time of `python -m findings run --config "))
    assert f"at commit {timing['commit']} (ended {timing['ended']})" in line
    assert summary["planned_runs"] == 6 and summary["missing_runs"] == summary["incomplete_runs"] == []
    assert "Partial report" not in report
    import contextlib
    import io

    from findings.__main__ import main

    with contextlib.redirect_stdout(io.StringIO()):
        main(["report", "--config", str(grid.parent / "quick.yaml")])
    assert line in (out / L.REPORT).read_text().splitlines()


def test_quick_findings_under_accelerate_launch_on_two_processes(two_processes):
    """`accelerate launch` with two CPU processes runs the same plan: every run trained once (its batches split
    between the processes), swept, scored, and the report written by the main process, its path last."""
    grid = two_processes.root / "quick"
    main, other = two_processes.stdout["findings"]
    lines = main.strip().splitlines()
    assert lines[-1] == str(grid / L.FINDINGS_DIR / L.REPORT)
    assert sum(": trained (" in line for line in lines) == 6 and other == ""  # printed by the main process alone
    runs = pd.read_parquet(grid / L.FINDINGS_DIR / f"{L.RUNS}.parquet")
    assert len(runs) == 6 and runs[S.STEP].eq(4).all()
    # 4 steps of 4 examples on each of 2 processes: 32 of the 64 training examples, half an epoch (a quarter
    # on one process)
    last = json.loads((grid / "mle" / "seed0" / "metrics.jsonl").read_text().splitlines()[-1])
    assert last["epoch"] == 0.5
    summary = json.loads((grid / L.FINDINGS_DIR / L.SUMMARY).read_text())
    assert len(summary["findings"]) == len(R.RULES)
