"""Metric modules against direct rouge_score / sacrebleu calls and hand-computed values."""

import math
import random

import pytest
import sacrebleu
from rouge_score import rouge_scorer

from analysis import metrics as M
from analysis.schema import HIGHER_IS_BETTER

PREDICTIONS = [
    "The central bank raised interest rates by half a point on Tuesday, citing persistent inflation.",
    "Heavy rain flooded several roads in the city centre, and the police advised drivers to stay home.",
    "The team won the final after a late goal.\nFans celebrated in the streets until midnight.",
    "Researchers found that the new vaccine was effective in older patients.",
]
REFERENCES = [
    "On Tuesday the central bank increased interest rates by 0.5 points because inflation remains high.",
    "Police told drivers to avoid the city centre after heavy rains flooded roads.",
    "A late goal gave the team victory in the final.\nSupporters partied in the streets all night.",
    "A study showed the new vaccine works well for elderly patients.",
]


def test_rouge_equals_rouge_score():
    """Scored twice (the second time from the tokens remembered, every prediction also scored as a reference):
    the scores of a fresh rouge_score scorer with stemming."""
    scorer = rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeLsum"], use_stemmer=True)
    predictions, references = PREDICTIONS + REFERENCES, REFERENCES + PREDICTIONS
    direct = [scorer.score(r, p) for p, r in zip(predictions, references)]
    for _ in range(2):
        out = M.Rouge().compute(predictions=predictions, references=references)
        for t in ("rouge1", "rouge2", "rougeLsum"):
            expected = [s[t].fmeasure for s in direct]
            assert out[f"{t}_per_sample"] == pytest.approx(expected, abs=1e-12)
            assert out[t] == pytest.approx(sum(expected) / len(expected), abs=1e-12)


def test_per_sample_scores_are_the_modules_per_sample_values():
    math = (["so #### 3", "#### 5", "#### 10.0", "no answer"], ["#### 3", "#### 4", "#### 10", "#### 2"])
    for name in ("exact_match", "rouge1", "rouge2", "rougeLsum", "bleu", "chrf"):
        predictions, refs = math if name == "exact_match" else (PREDICTIONS, REFERENCES)
        module = M.metric_module(name).compute(predictions=predictions, references=refs)
        assert M.per_sample_scores(name, predictions, refs) == pytest.approx(module[f"{name}_per_sample"], abs=0)
    assert M.per_sample_scores("exact_match", *math) == [1.0, 0.0, 1.0, 0.0]
    with pytest.raises(ValueError, match="not a built-in"):
        M.per_sample_scores("meteor", PREDICTIONS, REFERENCES)


def test_rouge_lsum_uses_lines_as_sentences():
    # per reference line, the union LCS with all prediction lines: "roads flooded" -> 2, "rain fell" -> 2,
    # so P = R = 4/4. On one line "rain fell roads flooded" vs "roads flooded rain fell" the LCS is 2: F = 0.5.
    assert M.rouge_scores(["rain fell\nroads flooded"], ["roads flooded\nrain fell"])["rougeLsum"] == [1.0]
    assert M.rouge_scores(["rain fell roads flooded"], ["roads flooded rain fell"])["rougeLsum"] == [0.5]


def test_bleu_and_chrf_equal_sacrebleu():
    bleu = M.Bleu().compute(predictions=PREDICTIONS, references=REFERENCES)
    assert bleu["bleu"] == pytest.approx(sacrebleu.corpus_bleu(PREDICTIONS, [REFERENCES]).score, abs=1e-9)
    assert bleu["bleu_per_sample"] == pytest.approx(
        [sacrebleu.sentence_bleu(p, [r]).score for p, r in zip(PREDICTIONS, REFERENCES)], abs=1e-9
    )
    chrf = M.Chrf().compute(predictions=PREDICTIONS, references=REFERENCES)
    assert chrf["chrf"] == pytest.approx(sacrebleu.corpus_chrf(PREDICTIONS, [REFERENCES]).score, abs=1e-9)
    assert chrf["chrf_per_sample"] == pytest.approx(
        [sacrebleu.sentence_chrf(p, [r]).score for p, r in zip(PREDICTIONS, REFERENCES)], abs=1e-9
    )
    assert 0 < bleu["bleu"] < 100 and 0 < chrf["chrf"] < 100


def test_self_bleu_identical_and_disjoint():
    # rel 1e-6, approx's default: float64 arithmetic on both sides
    assert M.self_bleu(["the cat sat on the mat"] * 5) == pytest.approx(100.0)
    assert M.self_bleu(["red apples fall", "blue sky above", "quiet night music"]) == 0.0
    with pytest.raises(ValueError, match="at least 2"):
        M.self_bleu(["only one sample"])


def test_self_bleu_three_samples_by_hand():
    samples = ["the cat sat", "the cat ran", "the dog"]
    # sacrebleu sentence BLEU, effective order, 'exp' smoothing: an order with 0 matches gets precision
    # 1 / (2^k * total) where k counts the zero orders so far; BLEU = BP * geometric mean of used orders.
    # "the cat sat" vs {"the cat ran", "the dog"}: 1-grams the,cat hit of 3 -> 2/3; 2-grams "the cat" of 2
    #   -> 1/2; 3-grams 0 of 1 -> 1/(2*1) = 1/2; no 4-grams so 3 orders. Closest ref len 3 -> BP 1.
    #   BLEU = 100 * (2/3 * 1/2 * 1/2)^(1/3) = 100 * (1/6)^(1/3) = 55.0321
    # "the cat ran" vs {"the cat sat", "the dog"}: the same counts -> 55.0321
    # "the dog" vs {"the cat sat", "the cat ran"}: 1-grams "the" of 2 -> 1/2; 2-grams 0 of 1 -> 1/2;
    #   2 orders. hyp len 2 < ref len 3 -> BP = exp(1 - 3/2) = 0.60653.
    #   BLEU = 100 * 0.60653 * (1/2 * 1/2)^(1/2) = 30.3265
    # Self-BLEU = (55.0321 + 55.0321 + 30.3265) / 3 = 46.7969
    expected = (2 * 100 * (1 / 6) ** (1 / 3) + 100 * math.exp(-0.5) * 0.5) / 3
    assert expected == pytest.approx(46.7969, abs=1e-4)
    assert M.self_bleu(samples) == pytest.approx(expected, abs=1e-9)
    direct = [sacrebleu.sentence_bleu(samples[i], samples[:i] + samples[i + 1 :]).score for i in range(3)]
    assert M.self_bleu(samples) == pytest.approx(sum(direct) / 3, abs=1e-9)


def test_self_bleu_equals_sacrebleu_sentence_scores_of_each_sample_against_the_others():
    """Self-BLEU counts each sample's n-grams once; sacrebleu's sentence_score, called per sample with the others as
    references, is the definition. Groups with repeated words (clipping), punctuation (the 13a tokeniser), empty
    samples, and references as close below as above (the shorter one is taken)."""
    rng = random.Random(0)
    words = ["the", "cat", "sat", "on", "mat", "dog", "ran", ",", ".", "it's", "(x)"]
    groups = [["a b c d", "a b c d e f", "a b"], ["", "the cat", "the cat sat"], ["", ""]]
    groups += [[" ".join(rng.choices(words, k=rng.randint(0, 12))) for _ in range(rng.randint(2, 6))]
               for _ in range(60)]  # fmt: skip
    for group in groups:
        direct = [sacrebleu.sentence_bleu(group[i], group[:i] + group[i + 1 :]).score for i in range(len(group))]
        assert M.self_bleu(group) == pytest.approx(sum(direct) / len(group), abs=1e-9), group


def test_self_bleu_of_groups_by_hand():
    groups = [["a b c d"] * 3, ["x y", "z w"], ["the cat sat", "the cat ran", "the dog"]]
    assert [M.self_bleu(g) for g in groups] == pytest.approx([100.0, 0.0, 46.79692487], abs=1e-6)


def test_distinct_n_by_hand():
    group = ["the cat sat on the mat", "the cat sat"]
    # 1-grams: 6 + 3 = 9, unique {the, cat, sat, on, mat} = 5
    # rel 1e-6, approx's default: float64 arithmetic on both sides
    assert M.distinct_n(group, 1) == pytest.approx(5 / 9)
    # 2-grams: the cat, cat sat, sat on, on the, the mat + the cat, cat sat = 7, unique 5 ("mat the" is not one)
    # rel 1e-6, approx's default: float64 arithmetic on both sides
    assert M.distinct_n(group, 2) == pytest.approx(5 / 7)
    assert M.distinct_n(["hello", "world"], 2) == 0.0


@pytest.mark.parametrize(
    "prediction, reference, match",
    [
        ("so 1000 + 200 = 1200\n#### 1,200", "#### 1200", True),
        ("#### 5.0", "#### 5", True),
        ("#### 5.", "#### 5", True),
        ("#### $18", "Janet makes 9 * 2 = 18 dollars.\n#### 18", True),
        ("#### -3", "#### -3", True),
        ("#### 3", "#### -3", False),
        ("#### 0.5", "#### 0.50", True),
        ("#### 12 apples", "#### 12", True),
        ("the answer is 72", "#### 72", False),
        ("####", "#### 72", False),
        ("#### 72\nQuestion: next one\n#### 5", "#### 72", True),
        ("#### seventy", "#### seventy", True),
    ],
)
def test_answers_match(prediction, reference, match):
    assert M.answers_match(prediction, reference) is match


def test_extract_answer_and_exact_match_metric():
    assert M.extract_answer("blah\n#### $1,234.") == "1234"
    assert M.extract_answer("no answer here") is None
    with pytest.raises(ValueError, match="reference"):
        M.answers_match("#### 1", "1")
    out = M.ExactMatch().compute(
        predictions=["#### 1,200", "#### 5.0", "no hashes 7", "#### -4"],
        references=["#### 1200", "#### 5", "#### 7", "#### 4"],
    )
    assert out["exact_match_per_sample"] == [1.0, 1.0, 0.0, 0.0]
    assert out["exact_match"] == 0.5


def test_every_metric_has_a_direction():
    computed = {"exact_match", "rouge1", "rouge2", "rougeLsum", "bleu", "chrf", "self_bleu", "distinct_1", "distinct_2"}
    assert computed <= HIGHER_IS_BETTER.keys()
    assert HIGHER_IS_BETTER["self_bleu"] is False


def test_compression_ratio_and_ngram_diversity_by_hand():
    import gzip

    from analysis.metrics import compression_ratio, ngram_diversity

    samples = ["a b a b", "a b c"]
    raw = b"a b a b\na b c"
    assert compression_ratio(samples) == len(raw) / len(gzip.compress(raw, compresslevel=9, mtime=0))
    assert compression_ratio(["x y z w"] * 20) > 5 * compression_ratio(["x y z w", "q r s t"])  # repeats compress
    # n-grams never cross samples: 1-grams a b a b a b c (3 distinct of 7), 2-grams ab ba ab ab bc (3 of 5),
    # 3-grams aba bab abc (3 of 3), 4-grams abab (1 of 1)
    # rel 1e-6, approx's default: float64 arithmetic on both sides
    assert ngram_diversity(samples) == pytest.approx(3 / 7 + 3 / 5 + 1 + 1)
