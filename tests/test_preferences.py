"""The built-in math preference set: every corruption is wrong by the task's checker, every reference right;
literal corruptions of one solution; sample pairs from a sweep table."""

import random

import pandas as pd
import pytest

from analysis import schema as S
from analysis.metrics import answers_match
from analysis.preferences import CORRUPTIONS, corrupt, corruption_pairs, math_preferences, sample_pairs
from tasks.math import TEMPLATES as MATH_TEMPLATES
from tasks.math import generate_splits

SOLUTION = " His friend has 10 - 2 = 8 stickers.\nTogether, they have 10 + 8 = 18 stickers.\n#### 18"
THREE_STEPS = (
    " Her cousin ate 3 + 5 = 8 slices.\nHer brother ate 8 + 3 = 11 slices.\n"
    "They ate a total of 3 + 8 + 11 = 22 slices.\n#### 22"
)


@pytest.fixture(scope="module")
def problems():
    return generate_splits([0, 0, 100], MATH_TEMPLATES, seed=0)["test"]


def test_every_corruption_is_wrong_and_every_reference_right(problems):
    pairs = corruption_pairs(problems)
    for pair in pairs:
        assert answers_match(pair["chosen"], pair["chosen"])
        assert not answers_match(pair["rejected"], pair["chosen"]), pair
        assert pair["rejected"].rsplit("\n", 1)[1].startswith("#### ")  # the format is kept
    made = {kind: sum(p[S.PAIR_SOURCE] == kind for p in pairs) for kind in CORRUPTIONS}
    # a corruption is skipped only where it cannot change the answer (e.g. "dropped" when the step before the
    # last already equals the answer); on these templates that is rare
    assert all(n >= 95 for n in made.values()), made
    assert corruption_pairs(problems) == pairs  # seeded per prompt


def test_literal_corruptions():
    # carried: 8 becomes 10, so the next step reads 10 + 10 = 20 and the answer follows
    assert corrupt(SOLUTION, "carried", random.Random(0)) == (
        " His friend has 10 - 2 = 10 stickers.\nTogether, they have 10 + 10 = 20 stickers.\n#### 20"
    )
    # operation: this seed draws the last step, whose + becomes -: 10 - 8 = 2
    assert corrupt(SOLUTION, "operation", random.Random(0)) == (
        " His friend has 10 - 2 = 8 stickers.\nTogether, they have 10 - 8 = 2 stickers.\n#### 2"
    )
    assert corrupt(SOLUTION, "dropped", random.Random(0)) == " His friend has 10 - 2 = 8 stickers.\n#### 8"
    # a changed result propagates through every later step that uses it, 8 -> 9 and then 11 -> 12
    carried = corrupt(THREE_STEPS, "carried", random.Random(3))
    assert carried == (
        " Her cousin ate 3 + 5 = 9 slices.\nHer brother ate 9 + 3 = 12 slices.\n"
        "They ate a total of 3 + 9 + 12 = 24 slices.\n#### 24"
    )


def test_no_corruption_without_steps():
    assert corrupt("The answer is 5.\n#### 5", "carried", random.Random(0)) is None
    assert corrupt(" 2 + 3 = 5\n#### 5", "dropped", random.Random(0)) is None  # one step: none to drop
    with pytest.raises(ValueError, match="unknown corruption"):
        corrupt(SOLUTION, "typo", random.Random(0))


def test_sample_pairs_take_a_right_and_a_wrong_sample_per_prompt():
    ref = SOLUTION
    samples = pd.DataFrame(
        {
            S.PROMPT_ID: ["a", "a", "a", "b", "b"],
            S.PROMPT: ["Qa", "Qa", "Qa", "Qb", "Qb"],
            S.REFERENCE: [ref] * 5,
            S.COMPLETION: [" 10 + 8 = 18\n#### 18", " no idea\n#### 17", " no idea\n#### 17", "#### 18", " #### 18"],
        }
    )
    pairs = sample_pairs(samples)
    assert pairs == [
        {S.PROMPT_ID: "a", S.PROMPT: "Qa", "chosen": " 10 + 8 = 18\n#### 18", "rejected": " no idea\n#### 17",
         S.PAIR_SOURCE: "sample"}
    ]  # fmt: skip  (prompt b has no wrong sample)
    examples = [{"id": "a", "prompt": "Qa", "completion": SOLUTION}]
    assert [p[S.PAIR_SOURCE] for p in math_preferences(examples, samples)] == [*CORRUPTIONS, "sample"]
