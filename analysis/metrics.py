"""Quality and diversity metrics (METHOD.md, section 5) as `evaluate.Metric` modules.

Each quality metric is a plain function and an `evaluate.Metric` subclass wrapping it, and the pipeline computes
every per-sample quality score through that interface (`metric_module`, `quality_scores`): a built-in name gets the
project's module, built once, in memory, never downloaded; any other name goes to `evaluate.load` (a local
module path, or a hub name when online), so `--metrics` takes any evaluate module. `aggregate` turns a sweep
cell's per-sample scores into its row of means, clustered standard errors and diversity.

Quality, per sample:  exact match after "####" (GSM8K), ROUGE-1/2/Lsum F-measure (rouge_score, stemming),
BLEU and chrF (sacrebleu, 0-100). Diversity, per group of K samples of one prompt, plain functions that
`aggregate` calls: Self-BLEU (0-100, each sample against the other K-1) and distinct-n.
"""

import functools
import gzip

import datasets
import evaluate
import numpy as np
import pandas as pd
from rouge_score import rouge_scorer, tokenizers
from sacrebleu.metrics import BLEU, CHRF
from sacrebleu.metrics.helpers import extract_all_word_ngrams

from analysis import schema as S
from analysis.stats import mean_se

ROUGE_TYPES = ("rouge1", "rouge2", "rougeLsum")


class _RememberingTokenizer(tokenizers.Tokenizer):
    """rouge_score's own tokenizer with Porter stemming, remembering the tokens of the texts it has seen: a
    reference scored against many predictions (trivial baselines' settings, K samples) is stemmed once."""

    def __init__(self):
        self._tokenizer = tokenizers.DefaultTokenizer(use_stemmer=True)
        self._tokens = functools.lru_cache(maxsize=1 << 16)(lambda text: tuple(self._tokenizer.tokenize(text)))

    def tokenize(self, text):
        return list(self._tokens(text))


# One scorer serves every call: a text's tokens depend on the text alone, so remembering them changes no score.
_ROUGE_SCORER = rouge_scorer.RougeScorer(list(ROUGE_TYPES), tokenizer=_RememberingTokenizer())

_PAIR_FEATURES = datasets.Features({"predictions": datasets.Value("string"), "references": datasets.Value("string")})


# ---------------------------------------------------------------------------------------------------------------
# Plain functions


def extract_answer(text: str) -> str | None:
    """The final answer after the first "####" (GSM8K convention), normalised, or None if there is none.

    Normalisation drops "," and "$", keeps the first whitespace-separated token of the rest of the line and
    strips a trailing ".": "#### $1,200." -> "1200", "#### -3 apples" -> "-3".
    """
    if "####" not in text:
        return None
    line = text.split("####", 1)[1].split("\n", 1)[0].replace(",", "").replace("$", "").split()
    return line[0].rstrip(".") if line else None


def answers_match(prediction: str, reference: str) -> bool:
    """Whether the "####" answers of prediction and reference agree: numerically when both are numbers
    ("5.0" == "5"), as strings otherwise. A prediction without an answer never matches."""
    ref = extract_answer(reference)
    if ref is None:
        raise ValueError(f"reference has no '#### answer': {reference!r}")
    pred = extract_answer(prediction)
    if pred is None:
        return False
    try:
        return float(pred) == float(ref)
    except ValueError:
        return pred == ref


def exact_match_scores(predictions: list[str], references: list[str]) -> list[float]:
    """Per-sample exact match (1.0 or 0.0) of the "####" answers."""
    return [float(answers_match(p, r)) for p, r in zip(predictions, references, strict=True)]


def rouge_scores(predictions: list[str], references: list[str]) -> dict[str, list[float]]:
    """Per-sample ROUGE-1, ROUGE-2 and ROUGE-Lsum F-measures (rouge_score, Porter stemming), in [0, 1].

    ROUGE-Lsum treats each line of a text as one sentence, as rouge_score does. We pass texts unchanged: no
    sentence splitter is applied (nltk's punkt needs a download), so a one-line summary is one sentence and
    its ROUGE-Lsum equals its ROUGE-L. Put sentences on separate lines beforehand for summary-level LCS.
    """
    out = {t: [] for t in ROUGE_TYPES}
    for p, r in zip(predictions, references, strict=True):
        scores = _ROUGE_SCORER.score(target=r, prediction=p)
        for t in ROUGE_TYPES:
            out[t].append(scores[t].fmeasure)
    return out


def bleu_scores(predictions: list[str], references: list[str]) -> tuple[float, list[float]]:
    """Corpus BLEU and per-sample sentence BLEU (effective order), sacrebleu defaults, one reference each."""
    _check_pairs(predictions, references)
    corpus = BLEU().corpus_score(predictions, [references]).score
    sentence = BLEU(effective_order=True)
    return corpus, [sentence.sentence_score(p, [r]).score for p, r in zip(predictions, references)]


def chrf_scores(predictions: list[str], references: list[str]) -> tuple[float, list[float]]:
    """Corpus chrF and per-sample sentence chrF, sacrebleu defaults (chrF2, char 6-grams), one reference each."""
    _check_pairs(predictions, references)
    chrf = CHRF()
    corpus = chrf.corpus_score(predictions, [references]).score
    return corpus, [chrf.sentence_score(p, [r]).score for p, r in zip(predictions, references)]


def self_bleu(samples: list[str]) -> float:
    """Self-BLEU of one prompt's K samples: mean over samples of sentence BLEU (sacrebleu, effective order)
    against the OTHER K-1 samples as references. 100 for K identical samples; lower is more diverse.

    The values of `BLEU(effective_order=True).sentence_score(samples[i], others)`, with each sample tokenised and
    its n-grams counted once (sacrebleu's own tokeniser, n-gram counter and score), not once more for every
    sample it is a reference of."""
    k = len(samples)
    if k < 2:
        raise ValueError(f"Self-BLEU needs at least 2 samples per group, got {k}")
    bleu = BLEU(effective_order=True)
    order = bleu.max_ngram_order
    # sacrebleu's segment preprocessing (lowercase off): its tokenizer on the right-stripped text
    counted = [extract_all_word_ngrams(bleu.tokenizer(s.rstrip()), 1, order) for s in samples]
    total_score = 0.0
    for i, (ngrams, length) in enumerate(counted):
        others = counted[:i] + counted[i + 1 :]
        closest = min((abs(length - n), n) for _, n in others)[1]  # the shortest of the closest reference lengths
        correct, total = [0] * order, [0] * order
        for ngram, count in ngrams.items():  # clipped by the n-gram's largest count in one reference
            total[len(ngram) - 1] += count
            correct[len(ngram) - 1] += min(count, max(o.get(ngram, 0) for o, _ in others))
        total_score += BLEU.compute_bleu(correct, total, length, closest, smooth_method=bleu.smooth_method,
                                         smooth_value=bleu.smooth_value, effective_order=True,
                                         max_ngram_order=order).score  # fmt: skip
    return total_score / k


def compression_ratio(samples: list[str]) -> float:
    """The samples joined by newlines, their UTF-8 bytes over the bytes gzip compresses them to (level 9, no
    timestamp): near 1 for varied text, growing as the samples repeat each other (K identical samples approach
    K times one's ratio). The compression-ratio diversity of Shaib et al. 2024, "Standardizing the measurement
    of text diversity"; lower is more diverse."""
    raw = "\n".join(samples).encode()
    return len(raw) / len(gzip.compress(raw, compresslevel=9, mtime=0)) if raw else np.nan


def ngram_diversity(samples: list[str], max_n: int = 4) -> float:
    """N-gram diversity of one group: the sum over n = 1..max_n of distinct-n (Shaib et al. 2024; Meister et
    al. 2023): max_n when no n-gram repeats, lower as the samples share words and phrases."""
    return float(sum(distinct_n(samples, n) for n in range(1, max_n + 1)))


def distinct_n(samples: list[str], n: int) -> float:
    """Distinct-n of one group: unique n-grams / total n-grams over all its samples (whitespace tokens,
    n-grams never cross samples). 0.0 when the samples hold no n-gram at all."""
    ngrams = []
    for s in samples:
        tokens = s.split()
        ngrams += [tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1)]
    return len(set(ngrams)) / len(ngrams) if ngrams else 0.0


def _check_pairs(predictions: list[str], references: list[str]) -> None:
    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predictions but {len(references)} references")


# ---------------------------------------------------------------------------------------------------------------
# evaluate.Metric modules


class ExactMatch(evaluate.Metric):
    """Exact match of the final "####" answer; returns {"exact_match": mean, "exact_match_per_sample": [...]}."""

    def _info(self):
        return evaluate.MetricInfo(
            description="Exact match of the final answer after '####' (GSM8K), numbers compared numerically "
            "after dropping ',', '$' and a trailing '.'; a prediction without '####' scores 0.",
            citation="@article{cobbe2021gsm8k, title={Training Verifiers to Solve Math Word Problems}, "
            "author={Cobbe, Karl and others}, journal={arXiv:2110.14168}, year={2021}}",
            inputs_description="predictions: list of generated solutions; references: list of reference "
            "solutions, each containing '#### <answer>'.",
            features=_PAIR_FEATURES,
        )

    @staticmethod
    def per_sample(predictions, references) -> dict[str, list[float]]:
        return {"exact_match": exact_match_scores(predictions, references)}

    def _compute(self, predictions, references):
        scores = self.per_sample(predictions, references)["exact_match"]
        return {"exact_match": float(np.mean(scores)), "exact_match_per_sample": scores}


class Rouge(evaluate.Metric):
    """ROUGE-1/2/Lsum F-measure with stemming; returns each mean and `<type>_per_sample` lists."""

    def _info(self):
        return evaluate.MetricInfo(
            description="ROUGE-1, ROUGE-2 and ROUGE-Lsum F-measures from rouge_score with the Porter stemmer. "
            "Lines of a text are its sentences for ROUGE-Lsum; no sentence splitter is applied.",
            citation="@inproceedings{lin-2004-rouge, title={ROUGE: A Package for Automatic Evaluation of "
            "Summaries}, author={Lin, Chin-Yew}, booktitle={Text Summarization Branches Out}, year={2004}}",
            inputs_description="predictions: list of generated summaries; references: list of reference "
            "summaries, one per prediction.",
            features=_PAIR_FEATURES,
        )

    @staticmethod
    def per_sample(predictions, references) -> dict[str, list[float]]:
        return rouge_scores(predictions, references)

    def _compute(self, predictions, references):
        per_sample = self.per_sample(predictions, references)
        out = {t: float(np.mean(s)) for t, s in per_sample.items()}
        return out | {f"{t}_per_sample": s for t, s in per_sample.items()}


class Bleu(evaluate.Metric):
    """sacrebleu BLEU; returns {"bleu": corpus score, "bleu_per_sample": sentence scores}."""

    def _info(self):
        return evaluate.MetricInfo(
            description="Corpus BLEU (sacrebleu defaults, 13a tokenisation) and sentence BLEU with effective "
            "order per sample, on a 0-100 scale.",
            citation="@inproceedings{post-2018-call, title={A Call for Clarity in Reporting {BLEU} Scores}, "
            "author={Post, Matt}, booktitle={WMT}, year={2018}}",
            inputs_description="predictions: list of translations; references: list of reference "
            "translations, one per prediction.",
            features=_PAIR_FEATURES,
        )

    @staticmethod
    def per_sample(predictions, references) -> dict[str, list[float]]:
        return {"bleu": bleu_scores(predictions, references)[1]}

    def _compute(self, predictions, references):
        corpus, per_sample = bleu_scores(predictions, references)
        return {"bleu": corpus, "bleu_per_sample": per_sample}


class Chrf(evaluate.Metric):
    """sacrebleu chrF; returns {"chrf": corpus score, "chrf_per_sample": sentence scores}."""

    def _info(self):
        return evaluate.MetricInfo(
            description="Corpus chrF (sacrebleu defaults: character 6-grams, beta 2) and sentence chrF per "
            "sample, on a 0-100 scale.",
            citation="@inproceedings{popovic-2015-chrf, title={chr{F}: character n-gram {F}-score for automatic "
            "{MT} evaluation}, author={Popovi{\\'c}, Maja}, booktitle={WMT}, year={2015}}",
            inputs_description="predictions: list of translations; references: list of reference "
            "translations, one per prediction.",
            features=_PAIR_FEATURES,
        )

    @staticmethod
    def per_sample(predictions, references) -> dict[str, list[float]]:
        return {"chrf": chrf_scores(predictions, references)[1]}

    def _compute(self, predictions, references):
        corpus, per_sample = chrf_scores(predictions, references)
        return {"chrf": corpus, "chrf_per_sample": per_sample}


# ---------------------------------------------------------------------------------------------------------------
# The pipeline's interface

# Built-in metric names and the module that computes each (ROUGE's module computes all three).
MODULES = {"exact_match": ExactMatch, "rouge1": Rouge, "rouge2": Rouge, "rougeLsum": Rouge, "bleu": Bleu, "chrf": Chrf}


class MetricError(ValueError):
    """A metric name that names no built-in metric and no loadable evaluate module."""


@functools.cache
def metric_module(name: str) -> evaluate.EvaluationModule:
    """The evaluate module computing metric `name`: the project's (built once, kept in memory), else
    `evaluate.load(name)`: a local module path, or a hub name when online."""
    if name in MODULES:
        return MODULES[name](keep_in_memory=True)
    try:
        return evaluate.load(name, keep_in_memory=True)
    except Exception as e:  # evaluate raises FileNotFoundError, ConnectionError, ValueError... for a bad name
        raise MetricError(f"metric {name!r}: not built in ({', '.join(MODULES)}) and not loadable: {e}") from None


def per_sample_scores(name: str, predictions: list[str], references: list[str]) -> list[float]:
    """Per-sample scores of the built-in quality metric `name`: its module's `<name>_per_sample` values, from the
    module's `per_sample`, which its `_compute` returns; without `compute`'s bookkeeping (writing and reading the
    inputs as Arrow), which costs more than the metric itself when settings are compared by the hundred
    (analysis/baselines.py)."""
    if name not in MODULES:
        raise ValueError(f"{name!r} is not a built-in quality metric")
    return MODULES[name].per_sample(predictions, references)[name]


def quality_scores(metrics, predictions: list[str], references: list[str]) -> dict[str, list[float]]:
    """{metric: per-sample scores} for each name in `metrics`, each computed by its `metric_module`.

    A module returning `<name>_per_sample` (the built-in ones) is called once for the batch; another module is
    called once per sample and its `<name>` value taken as that sample's score."""
    _check_pairs(predictions, references)
    results = {}
    for name in metrics:
        module = metric_module(name)
        if id(module) not in results:
            results[id(module)] = module.compute(predictions=predictions, references=references)
        result = results[id(module)]
        if f"{name}_per_sample" in result:
            scores = result[f"{name}_per_sample"]
        else:
            scores = [module.compute(predictions=[p], references=[r])[name] for p, r in zip(predictions, references)]
        results[name] = [float(x) for x in scores]
    return {name: results[name] for name in metrics}


def effective_diversity(cell: pd.DataFrame, quality: str, threshold: float) -> dict:
    """Self-BLEU and distinct-1/2 among each prompt's samples with `quality` >= `threshold`, averaged over the
    prompts that keep two or more (the aggregate's effective columns)."""
    good = cell[cell[quality] >= threshold]
    groups = [g[S.COMPLETION].tolist() for _, g in good.groupby(S.PROMPT_ID, sort=False) if len(g) > 1]
    measures = {S.EFFECTIVE_SELF_BLEU: self_bleu, S.EFFECTIVE_DISTINCT_1: lambda g: distinct_n(g, 1),
                S.EFFECTIVE_DISTINCT_2: lambda g: distinct_n(g, 2)}  # fmt: skip
    row = {col: np.mean([measure(g) for g in groups]) if groups else np.nan for col, measure in measures.items()}
    return row | {S.EFFECTIVE_PROMPTS: len(groups), S.QUALITY_THRESHOLD: float(threshold)}


def aggregate(samples: pd.DataFrame, metrics=None, quality_threshold: float | None = None) -> pd.DataFrame:
    """One row per (run, step, decoding) of a samples table, keyed by schema.AGG_KEYS:

    - `<m>_mean`, `<m>_se` for each quality metric m (default: the table's schema.quality_columns): the mean
      over samples and its standard error clustered by prompt (analysis.stats.mean_se: the K samples of one
      prompt are one cluster);
    - Self-BLEU, distinct-1, distinct-2, compression ratio and n-gram diversity of each prompt's samples,
      averaged over prompts (NaN when prompts have a single sample, as under greedy);
    - entropy: mean over samples of their mean per-token entropy; n: number of samples;
    - with a `quality_threshold`: effective diversity (schema.EFFECTIVE_COLUMNS), Self-BLEU and distinct-1/2 of
      each prompt's samples whose first metric of `metrics` (the task's main one) is >= the threshold, averaged
      over the prompts with two or more of them (effective_prompts; NaN when none), and the threshold itself.
    """
    metrics = S.quality_columns(samples.columns) if metrics is None else list(metrics)
    samples = S.with_grid_columns(samples)
    rows = []
    for keys, cell in samples.groupby(list(S.AGG_KEYS), sort=False):
        row = dict(zip(S.AGG_KEYS, keys))
        for m in metrics:
            row[S.mean_col(m)], row[S.se_col(m)] = mean_se(cell[m], cell[S.PROMPT_ID])
        groups = [group[S.COMPLETION].tolist() for _, group in cell.groupby(S.PROMPT_ID, sort=False)]
        several = min(len(g) for g in groups) > 1
        row[S.SELF_BLEU] = np.mean([self_bleu(g) for g in groups]) if several else np.nan
        row[S.DISTINCT_1] = np.mean([distinct_n(g, 1) for g in groups]) if several else np.nan
        row[S.DISTINCT_2] = np.mean([distinct_n(g, 2) for g in groups]) if several else np.nan
        row[S.COMPRESSION_RATIO] = np.mean([compression_ratio(g) for g in groups]) if several else np.nan
        row[S.NGRAM_DIVERSITY] = np.mean([ngram_diversity(g) for g in groups]) if several else np.nan
        row[S.ENTROPY] = cell[S.ENTROPY].mean()
        row[S.N] = len(cell)
        if quality_threshold is not None:
            row |= effective_diversity(cell, metrics[0], quality_threshold)
        rows.append(row)
    return pd.DataFrame(rows)
