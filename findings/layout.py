"""The layout of a grid directory and of its findings, in one place. Imports nothing heavy: the app reads it.

    <grid>/grid.yaml                      the grid's YAML as the last `grid` command read it (the report quotes
                                          it: the settings and rules were fixed before the runs)
    <grid>/<point>/[seed<k>/]             one run directory per point (irl/runs.py's layout), e.g.
                                          <grid>/iqlearn-lam0.1/seed1, <grid>/mle-train_size250/seed0
    <grid>/findings/report.md             the findings report (Markdown)
    <grid>/findings/timings.jsonl         one line per `grid`/`run` invocation: when it ended, each stage's wall time
    <grid>/findings/findings.json         per finding: claim, rule, verdict, evidence, comparisons, figure
    <grid>/findings/<table>.parquet       the tables the report and the app's Findings page read (TABLES)
    <grid>/findings/<figure>.png          the figures (FIGURES), drawn from those tables
"""

GRID_FILE = "grid.yaml"
FINDINGS_DIR = "findings"
REPORT = "report.md"
SUMMARY = "findings.json"
TIMINGS = "timings.jsonl"

# Tables of <grid>/findings/, each a parquet file named <key>.parquet. A "group" is the runs that differ only
# in seed; group tables hold each quantity's mean over seeds, its seed SE (<col>_seed_se) and n_seeds.
RUNS = "runs"  # one row per run: name, group, family, lam, beta, seed, train size, validation NLL, greedy quality
AGGREGATE = "aggregate"  # one row per (run, decoding): the sweep's aggregate row with the run's columns
SEED_AGGREGATE = "seed_aggregate"  # one row per (group, decoding): Fig. 2 and Fig. 4
BEAM_GAIN = "beam_gain"  # one row per group: greedy quality, mean quality over beam widths, their difference
SMALL_DATA = "small_data"  # one row per group: final and lowest validation NLL, their difference, greedy quality
CURVES = "val_curves"  # one row per (group, evaluation step): validation NLL (Fig. 7)
CORRELATIONS = "reward_correlations"  # one row per (run, score): Spearman of R or log pi with quality
CORRELATION_BY_LAM = "correlation_by_lam"  # one row per (family, lam, score): Fig. 8
PREFERENCES = "preference_accuracy"  # one row per (run, score): pairwise accuracy on the preference set
COMPARISONS = "comparisons"  # one row per comparison a rule made: finding, difference, interval, outcome
TABLES = (RUNS, AGGREGATE, SEED_AGGREGATE, BEAM_GAIN, SMALL_DATA, CURVES, CORRELATIONS, CORRELATION_BY_LAM,
          PREFERENCES, COMPARISONS)  # fmt: skip

# Figures of <grid>/findings/ (findings/figures.py draws them from the tables above).
FIG_QUALITY_DIVERSITY = "fig2_quality_diversity.png"
FIG_BEAM_SEARCH = "fig4_beam_search.png"
FIG_SMALL_DATA = "fig7_small_data.png"
FIG_REWARD_CORRELATION = "fig8_reward_correlation.png"

# Columns the findings tables add to the schema of analysis/schema.py.
NAME = "name"  # run name under the grid directory, e.g. "iqlearn-lam0.1/seed1"
GROUP = "group"  # the name without its seed part: runs that differ only in seed share it
FAMILY = "family"  # analysis.results.run_attributes: "mle", "mle+entropy", "iqlearn" (offline), ...
TASK = "task"  # the task a run trained on (analysis.schema.task_of): groups and rules never mix two tasks
TRAIN_SIZE = "train_size"  # the config's train_size (NaN: all the training data)
TRAIN_EXAMPLES = "train_examples"  # training examples the run was given (metrics.jsonl step 0)
FINAL_NLL = "final_nll"  # validation NLL at the last evaluation
MIN_NLL = "min_nll"  # lowest validation NLL over the run's evaluations
MIN_STEP = "min_nll_step"  # the step of that lowest validation NLL
OVERFIT = "overfit"  # final_nll - min_nll: how far validation NLL rose from its best
BEAM_GAIN_COL = "beam_gain"  # mean over beam widths of quality(beam=w) - quality(greedy)
SCORE = "score"  # a sequence score of schema.SCORES (R, logp_sum, ...)

FAMILIES = ("mle", "mle+entropy", "iqlearn")


def timing_text(timing: dict) -> str:
    """One line of timings.jsonl as the report and the app say it: the command with its grid file, the commit,
    when it ended and each stage's wall time."""
    config = f" --config {timing['config']}" if timing.get("config") else ""
    command = f"python -m findings {timing['command']}{config}"
    commit = f" at commit {timing['commit']}" if timing.get("commit") else ""
    times = ", ".join(f"{k} {v:.0f} s" for k, v in timing["seconds"].items())
    return f"`{command}`{commit} (ended {timing['ended']}): {times}"
