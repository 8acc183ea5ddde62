"""Column names of every result table, and the direction of every metric.

Tables (all tidy, written as parquet):

- samples: one row per (run, step, decoding, prompt, sample) with `SAMPLE_COLUMNS` plus one column per
  per-sample quality metric, named after the metric (`exact_match`, `rouge1`, `bleu`, ...).
- aggregate: one row per (run, step, decoding) with `AGG_KEYS`, then `<m>_mean` / `<m>_se` for each
  quality metric `m` (SE of the per-sample mean), and the diversity columns `DIVERSITY_COLUMNS` and `N`.
- seed aggregate (`analysis.pareto.aggregate_seeds`): runs that differ only in seed averaged; each metric
  column keeps its name for the mean over seeds, `seed_se_col(col)` holds its SE over seeds.
- rewards: per-token `TOKEN_COLUMNS` and per-sequence `SEQUENCE_COLUMNS` (see METHOD.md, section 4).

Scales: exact match and ROUGE in [0, 1]; BLEU, chrF and Self-BLEU in [0, 100] (sacrebleu's);
distinct-n in [0, 1]; entropy in nats per token.
"""

# Run metadata and decoding keys.
RUN = "run"
METHOD = "method"  # label such as "mle" or "iqlearn lam=0.1"
SEED = "seed"
STEP = "step"
DECODING = "decoding"  # label such as "greedy", "t=0.5", "beam=4"
KIND = "kind"  # "greedy" | "sample" | "beam"
TEMPERATURE = "temperature"  # float; 0 for greedy and beam
BEAMS = "beams"  # int; 1 unless beam search

# Per-sample columns.
PROMPT_ID = "prompt_id"  # str
SAMPLE = "sample"  # int index within the prompt's K samples
PROMPT = "prompt"
COMPLETION = "completion"
REFERENCE = "reference"
N_TOKENS = "n_tokens"  # generated tokens
ENTROPY = "entropy"  # mean per-token policy entropy along the sample, nats

AGG_KEYS = (RUN, METHOD, SEED, STEP, DECODING, KIND, TEMPERATURE, BEAMS)
SAMPLE_COLUMNS = AGG_KEYS + (PROMPT_ID, SAMPLE, PROMPT, COMPLETION, REFERENCE, N_TOKENS, ENTROPY)

# Aggregate diversity columns (per prompt over its K samples, then averaged over prompts) and sample count.
SELF_BLEU = "self_bleu"
DISTINCT_1 = "distinct_1"
DISTINCT_2 = "distinct_2"
DIVERSITY_COLUMNS = (SELF_BLEU, DISTINCT_1, DISTINCT_2, ENTROPY)
N = "n"

# Seed aggregate: runs differing only in seed are grouped by these keys.
SEED_GROUP_KEYS = (METHOD, STEP, DECODING, KIND, TEMPERATURE, BEAMS)
N_SEEDS = "n_seeds"

# Reward tables.
EXAMPLE_ID = "example_id"
POSITION = "position"
TOKEN_ID = "token_id"
TOKEN = "token"
Q = "q"
V = "v"
V_NEXT = "v_next"
LOGP = "logp"
REWARD = "reward"
TOKEN_COLUMNS = (EXAMPLE_ID, POSITION, TOKEN_ID, TOKEN, Q, V, V_NEXT, LOGP, REWARD)

R = "R"
R_CENTERED = "R_centered"
LOGP_SUM = "logp_sum"
V0 = "v0"
LENGTH = "length"
SEQUENCE_COLUMNS = (EXAMPLE_ID, PROMPT_ID, R, R_CENTERED, LOGP_SUM, V0, LENGTH)

# Every metric and whether higher is better.
HIGHER_IS_BETTER = {
    "exact_match": True,
    "exact_match_calc": True,  # exact match when decoding with the calculator
    "rouge1": True,
    "rouge2": True,
    "rougeLsum": True,
    "bleu": True,
    "chrf": True,
    SELF_BLEU: False,
    DISTINCT_1: True,
    DISTINCT_2: True,
    ENTROPY: True,
}


def mean_col(metric: str) -> str:
    """Aggregate column holding the mean of a per-sample metric."""
    return f"{metric}_mean"


def se_col(metric: str) -> str:
    """Aggregate column holding the standard error of the per-sample mean of a metric."""
    return f"{metric}_se"


def seed_se_col(column: str) -> str:
    """Seed-aggregate column holding the standard error over seeds of an aggregate column."""
    return f"{column}_seed_se"


# Decoding sweep (analysis/sweep.py).
COMPLETION_CALC = "completion_calc"  # math: the completion decoded with the calculator, same seed as COMPLETION
EXACT_MATCH = "exact_match"
EXACT_MATCH_CALC = "exact_match_calc"  # exact match of COMPLETION_CALC
ROUGE_METRICS = ("rouge1", "rouge2", "rougeLsum")
# Per-sample quality metrics of each kind of task: "math" for the built-in task, "text" for any other data.
TASK_METRICS = {"math": (EXACT_MATCH,), "text": ROUGE_METRICS}
ON_FRONT = "on_front"  # bool column added by analysis.pareto.pareto_by

# Preference pairs (analysis/rewards.py writes <checkpoint>/rewards/<data>/pairs.parquet): one row per pair.
PAIRS_FILE = "pairs.parquet"
CHOSEN_R = "chosen_R"  # sequence reward R of the chosen completion
REJECTED_R = "rejected_R"  # sequence reward R of the rejected completion
MARGIN = "margin"  # CHOSEN_R - REJECTED_R

# Column the app adds when it gathers tables from many run directories (app/data.py).
CHECKPOINT = "checkpoint"  # label "<run>@<step>", the run being its path under the runs root

# Reward extraction (analysis/rewards.py writes <checkpoint>/rewards/<data>/): files and the columns beyond
# TOKEN_COLUMNS, SEQUENCE_COLUMNS and the pairs columns above.
TOKENS_FILE = "tokens.parquet"
SEQUENCES_FILE = "sequences.parquet"
SUMMARY_FILE = "summary.json"
TRUNCATED = "truncated"  # bool: completion cut at the model's context; its last token has no next state
ROUNDTRIP = "roundtrip"  # bool: tokenizer.decode(tokenizer.encode(completion)) == completion
PAIR_ID = "pair_id"  # int index of a preference pair
SIDE = "side"  # "chosen" | "rejected": which completion of its pair a sequence is
PAIR_SOURCE = "source"  # built-in math preferences: how a pair was made (carried, operation, dropped, sample)
CHOSEN_LOGP_SUM = "chosen_logp_sum"  # log pi(chosen | prompt)
REJECTED_LOGP_SUM = "rejected_logp_sum"  # log pi(rejected | prompt)
LAM = "lam"  # TD weight of the run (config field), for correlation against lam
