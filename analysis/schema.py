"""Column names of every result table, the direction of every metric, which columns are a task's quality
metrics, and the order of the decoding grid. Torch-free: the app imports it. The run-directory layout is in
irl/runs.py and the statistics in analysis/stats.py; nothing else defines either.

Tables (all tidy, written as parquet):

- samples: one row per (run, step, decoding, prompt, sample) with `SAMPLE_COLUMNS` plus one column per
  per-sample quality metric, named after the metric (`exact_match`, `rouge1`, `bleu`, ...).
- aggregate: one row per (run, step, decoding) with `AGG_KEYS`, then `<m>_mean` / `<m>_se` for each
  quality metric `m` (SE of the per-sample mean), and the diversity columns `DIVERSITY_COLUMNS` and `N`.
- seed aggregate (`analysis.stats.aggregate_seeds`): runs that differ only in seed averaged; each metric
  column keeps its name for the mean over seeds, `seed_se_col(col)` holds its SE over seeds.
- rewards: per-token `TOKEN_COLUMNS` and per-sequence `SEQUENCE_COLUMNS` (see METHOD.md, section 4).

Scales: exact match and ROUGE in [0, 1]; BLEU, chrF and Self-BLEU in [0, 100] (sacrebleu's);
distinct-n in [0, 1]; entropy in nats per token.
"""

from tasks.text import METRICS as TEXT_TASK_METRICS

# Run metadata and decoding keys.
RUN = "run"
METHOD = "method"  # label such as "mle" or "iqlearn lam=0.1"
SEED = "seed"
STEP = "step"
DECODING = "decoding"  # label such as "greedy", "t=0.5", "t=1,top_p=0.9", "t=1,min_p=0.05", "beam=4"
KIND = "kind"  # "greedy" | "sample" | "beam"
TEMPERATURE = "temperature"  # float; 0 for greedy and beam
BEAMS = "beams"  # int; 1 unless beam search
TOP_P = "top_p"  # float; nucleus of sampling, 1 (off) for greedy and beam
MIN_P = "min_p"  # float; min-p of sampling, 0 (off) for greedy and beam

# Per-sample columns.
PROMPT_ID = "prompt_id"  # str
SAMPLE = "sample"  # int index within the prompt's K samples
PROMPT = "prompt"
COMPLETION = "completion"
REFERENCE = "reference"
N_TOKENS = "n_tokens"  # generated tokens, EOS included when the sample ended
ENTROPY = "entropy"  # mean per-token policy entropy along the sample, nats
# Token-level record of a sample (the sweep stores what was generated, the rewards score exactly that).
PROMPT_IDS = "prompt_ids"  # list<int>: the prompt's token ids as the model read them (no padding)
COMPLETION_IDS = "completion_ids"  # list<int>: the generated ids up to and including the first EOS
ENDED = "ended"  # bool: the sample ended with EOS; False: cut at max_new_tokens (its last token has no next state)
COMPLETION_CALC_IDS = "completion_calc_ids"  # list<int>: ids generated with the calculator
ENDED_CALC = "ended_calc"  # bool: as ENDED, for the calculator's completion
CALC_FORCED = "calc_forced"  # list<int>: positions of COMPLETION_CALC_IDS the calculator forced
DECODE_PATH = "decode_path"  # str: irl/generation.py Decoded.path, "compact" or "generate" (after a failed check)

AGG_KEYS = (RUN, METHOD, SEED, STEP, DECODING, KIND, TEMPERATURE, TOP_P, MIN_P, BEAMS)
# Tables written before top-p and min-p were axes of the grid lack their columns: those cells sampled with neither
# (top_p 1, min_p 0), which `with_grid_columns` states.
GRID_DEFAULTS = {TOP_P: 1.0, MIN_P: 0.0}
SAMPLE_COLUMNS = AGG_KEYS + (
    PROMPT_ID, SAMPLE, PROMPT, COMPLETION, REFERENCE, N_TOKENS, ENTROPY, PROMPT_IDS, COMPLETION_IDS, ENDED
)

# Aggregate diversity columns (per prompt over its K samples, then averaged over prompts) and sample count.
SELF_BLEU = "self_bleu"
DISTINCT_1 = "distinct_1"
DISTINCT_2 = "distinct_2"
COMPRESSION_RATIO = "compression_ratio"  # bytes of a prompt's samples joined / bytes gzipped; lower = more diverse
NGRAM_DIVERSITY = "ngram_diversity"  # sum over n = 1..4 of distinct-n: 4 = no n-gram repeated
# Effective diversity (--quality_threshold): the same measures among only the samples of a prompt whose main quality
# metric is >= the threshold, averaged over the prompts with two or more such samples (EFFECTIVE_PROMPTS of them),
# so nonsense adds no diversity. Columns present only in an aggregate made with a threshold, stated in its
# QUALITY_THRESHOLD column.
EFFECTIVE_SELF_BLEU = "effective_self_bleu"
EFFECTIVE_DISTINCT_1 = "effective_distinct_1"
EFFECTIVE_DISTINCT_2 = "effective_distinct_2"
EFFECTIVE_PROMPTS = "effective_prompts"  # int: prompts with >= 2 samples at or above the threshold
QUALITY_THRESHOLD = "quality_threshold"  # float: the threshold on the cell's main quality metric
EFFECTIVE_COLUMNS = (EFFECTIVE_SELF_BLEU, EFFECTIVE_DISTINCT_1, EFFECTIVE_DISTINCT_2)
DIVERSITY_COLUMNS = (SELF_BLEU, DISTINCT_1, DISTINCT_2, COMPRESSION_RATIO, NGRAM_DIVERSITY, ENTROPY,
                     *EFFECTIVE_COLUMNS)  # fmt: skip
N = "n"

# Trivial baselines of a text task (sweep/<split>/baselines.parquet): name, setting (JSON), then <m>_mean/_se, n.
BASELINE = "baseline"  # "first_k_words", "best_constant", "copy_input"
BASELINE_SETTING = "setting"

# Seed aggregate: runs differing only in seed are grouped by these keys.
SEED_GROUP_KEYS = (METHOD, STEP, DECODING, KIND, TEMPERATURE, TOP_P, MIN_P, BEAMS)
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
TOKEN_ENTROPY = "entropy"  # entropy of the policy in the state the token was chosen in, nats
TOKEN_COLUMNS = (EXAMPLE_ID, POSITION, TOKEN_ID, TOKEN, Q, V, V_NEXT, LOGP, REWARD, TOKEN_ENTROPY)

R = "R"  # sum of the rewards of the completion's tokens that have a next state
R_MEAN = "R_mean"  # R / the number of those tokens
R_CENTERED = "R_centered"  # R minus the mean R of the rows with the same prompt_id
LOGP_SUM = "logp_sum"  # log pi(y|x)
LOGP_MEAN = "logp_mean"  # log pi(y|x) / length
V0 = "v0"
LENGTH = "length"  # completion tokens scored, EOS included
SEQUENCE_COLUMNS = (EXAMPLE_ID, PROMPT_ID, R, R_MEAN, R_CENTERED, LOGP_SUM, LOGP_MEAN, V0, LENGTH)
# The sequence scores every reward figure is reported with: the rewards, then the likelihood baselines they must
# beat to say something beyond likelihood (METHOD.md section 4: with gamma near 1, R ranks one prompt's samples
# almost as log pi(y|x) does). Each is read "higher ranks higher".
REWARD_SCORES = (R, R_MEAN, R_CENTERED)
LIKELIHOOD_SCORES = (LOGP_SUM, LOGP_MEAN, LENGTH)
SCORES = REWARD_SCORES + LIKELIHOOD_SCORES
# Token reward definitions side by side (analysis/definitions.py has their equations): per token, a column of
# tokens.parquet beside `reward`; per completion, the sum of it over the tokens that have a value, a column of
# sequences.parquet. log π's are the existing logp and logp_sum.
LOGP_REF = "logp_ref"  # log pi_ref(a_t|s_t) under the reference model of the implicit reward
REWARD_GAMMA1 = "reward_gamma1"  # Q(s_t,a_t) - V(s_t+1): r_t at gamma = 1
REWARD_IMPLICIT = "reward_implicit"  # beta * (log pi(a_t|s_t) - log pi_ref(a_t|s_t))
REWARD_BASELINE = "reward_baseline"  # r_t - b(x): b(x) the mean over the prompt's completions of their R_mean
R_GAMMA1, R_IMPLICIT, R_BASELINE = "R_gamma1", "R_implicit", "R_baseline"
DEFINITION_TOKEN_COLUMNS = (LOGP_REF, REWARD_GAMMA1, REWARD_IMPLICIT, REWARD_BASELINE)  # after TOKEN_COLUMNS
DEFINITIONS = {  # name shown -> (token column, sequence column)
    "r_t": (REWARD, R),
    "r_t at γ=1": (REWARD_GAMMA1, R_GAMMA1),
    "implicit β·log(π/π_ref)": (REWARD_IMPLICIT, R_IMPLICIT),
    "log π": (LOGP, LOGP_SUM),
    "r_t − prompt baseline": (REWARD_BASELINE, R_BASELINE),
}
# How each score ranks the tokens of one completion in error localisation (lowest first, except entropy).
TOKEN_RANKINGS = {REWARD: "lowest first", LOGP: "lowest first", TOKEN_ENTROPY: "highest first", "random": "uniform"}

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
    COMPRESSION_RATIO: False,
    NGRAM_DIVERSITY: True,
    ENTROPY: True,
    EFFECTIVE_SELF_BLEU: False,
    EFFECTIVE_DISTINCT_1: True,
    EFFECTIVE_DISTINCT_2: True,
}


# Per-sample quality metrics of each built-in task; any other data is scored as "text".
# The first of each is the task's main metric (the headline of tables; trivial baselines are chosen by it).
TASK_METRICS = {"math": ("exact_match",), **TEXT_TASK_METRICS, "text": ("rougeLsum", "rouge1", "rouge2")}
# Metrics scored on another text than the sample's completion (the calculator's): never correlated with R.
OTHER_TEXT_METRICS = ("exact_match_calc",)


def task_of(config: dict) -> str:
    """The task a run's config trains on: a built-in task's name, else "text"."""
    return config["data"] if config["data"] in TASK_METRICS else "text"


def quality_columns(columns, same_text: bool = False) -> list[str]:
    """The per-sample quality metric columns among `columns`, in their order; with `same_text`, only those
    scored on the sample's own completion (the ones a sequence reward can be compared with)."""
    skip = set(DIVERSITY_COLUMNS) | (set(OTHER_TEXT_METRICS) if same_text else set())
    return [c for c in columns if c in HIGHER_IS_BETTER and c not in skip]


# Decoding grid: kinds in this order, then temperature, top-p (largest, i.e. no filter, first), min-p, beam width.
KIND_ORDER = {"greedy": 0, "sample": 1, "beam": 2}
GRID_ORDER = (KIND, TEMPERATURE, TOP_P, MIN_P, BEAMS)


def with_grid_columns(table):
    """A samples or aggregate table with the top_p and min_p columns, added with GRID_DEFAULTS where a table
    written before those axes existed lacks them; a table that has them is returned as it is."""
    missing = {k: v for k, v in GRID_DEFAULTS.items() if k not in table.columns}
    return table.assign(**missing) if missing and KIND in table.columns else table


def grid_sort_key(column):
    """`key=` for DataFrame.sort_values over GRID_ORDER columns (and any others): kinds in KIND_ORDER."""
    if column.name == TOP_P:
        return -column  # top_p 1 (no filter) before 0.9
    return column.map(KIND_ORDER) if column.name == KIND else column


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
ERROR_POSITION = "error_position"  # int: position of the first wrong token of a corrupted rejected completion
PAIR_ID = "pair_id"  # int index of a preference pair
SIDE = "side"  # "chosen" | "rejected": which completion of its pair a sequence is
PAIR_SOURCE = "source"  # built-in math preferences: how a pair was made (carried, operation, dropped, sample)
CHOSEN_LOGP_SUM = "chosen_logp_sum"  # log pi(chosen | prompt)
REJECTED_LOGP_SUM = "rejected_logp_sum"  # log pi(rejected | prompt)
# (pairs.parquet holds chosen_<score> and rejected_<score> for every score of SCORES)
LAM = "lam"  # TD weight of the run (config field), for correlation against lam
