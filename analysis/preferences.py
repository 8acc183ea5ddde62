"""The built-in preference set of the math task: (prompt, chosen, rejected) pairs labelled by the task's own
checker (analysis.metrics.answers_match), to measure whether extracted rewards prefer right solutions.

Two kinds of pairs, each carrying its `source`; a corrupted rejected side records `rejected_error_char`, the
character where it first departs from the reference, for token-level error localisation:

- Reference against a corruption of it. A solution is a few lines "... <expression> = <result> ...", ending
  "#### <answer>". Every corruption keeps the solution's wording and its format, and is kept only when the
  checker marks it wrong (its answer differs from the reference's):
  - "carried": one intermediate result is changed by a small amount (-2..+3, staying >= 0) and the
    error is carried forward: every later expression that used the old value uses the new one and is
    re-evaluated (analysis.calculator.evaluate_expression), down to the final answer. One arithmetic slip.
  - "operation": the first operator of one expression is swapped (+ -> -, - -> +, * -> +, / -> *) and its
    result recomputed correctly and carried forward. Correct arithmetic, wrong reasoning.
  - "dropped": the last step is dropped and the result of the step before it is given as the answer
    (stopping one step short).
  Which result or expression is corrupted is drawn from a seeded generator per prompt.
- "sample": a correct against an incorrect model sample for the same prompt, from a decoding sweep (one
  pair per prompt where both exist, drawn with the seeded generator; identical texts are never paired).
"""

import os
import random
import re

import pandas as pd

from analysis import schema as S
from analysis.calculator import evaluate_expression
from analysis.metrics import answers_match

CORRUPTIONS = ("carried", "operation", "dropped")
# A written result after "=": "= 8", "=40", "= $12".
_RESULT = re.compile(r"=\s*\$?(?P<num>-?\d+(?:\.\d+)?)")
# A number that is not part of a longer number.
_NUMBER = re.compile(r"(?<![\d.])\d+(?:\.\d+)?(?![\d.]|\.\d)")
# An arithmetic operator between operands ("10 - 2", "6*2", "30-6-12").
_OPERATOR = re.compile(r"(?<=[\d)])\s*([-+*/×÷])\s*(?=[\d($])")
_SWAP = {"+": "-", "-": "+", "*": "+", "×": "+", "/": "*", "÷": "×"}
_ANSWER = re.compile(r"(####\s*\$?)(-?[\d,]+(?:\.\d+)?)")


def _equations(lines: list[str]) -> list[tuple[int, re.Match]]:
    """(line index, result match) of every line holding "<expression> = <number>" (its first "=")."""
    found = []
    for i, line in enumerate(lines):
        m = _RESULT.search(line)
        if m and not line.startswith("####") and evaluate_expression(line[: m.start()]) is not None:
            found.append((i, m))
    return found


def _carry_forward(lines: list[str], start: int, changed: dict[str, str]) -> list[str] | None:
    """Lines from `start` on rewritten with each operand in `changed` (old value -> new value) replaced and
    each result re-evaluated, new results joining `changed`; None if the final answer did not change."""
    lines = list(lines)
    answer_changed = False
    for i in range(start, len(lines)):
        line = lines[i]
        if line.startswith("####"):
            m = _ANSWER.match(line)
            new = changed.get(m.group(2).replace(",", "")) if m else None
            if new is not None:
                lines[i] = line[: m.start(2)] + new + line[m.end(2) :]
                answer_changed = True
            continue
        m = _RESULT.search(line)
        if m is None:
            continue
        lhs = _NUMBER.sub(lambda n: changed.get(n.group(), n.group()), line[: m.start()])
        value = evaluate_expression(lhs)
        old = m.group("num")
        new = changed.get(old, old) if value is None else value
        if new != old:
            changed[old] = new
        lines[i] = lhs + line[m.start() : m.start("num")] + new + line[m.end("num") :]
    return lines if answer_changed else None


def corrupt(completion: str, kind: str, rng: random.Random) -> str | None:
    """`completion` with one error of `kind` (see the module docstring), or None when this solution offers no
    such error that changes the final answer."""
    lines = completion.split("\n")
    equations = _equations(lines)
    if not equations or not lines[-1].startswith("####"):
        return None
    if kind == "dropped":
        if len(equations) < 2:
            return None
        (_, m_prev), (last, _) = equations[-2], equations[-1]
        kept = [line for i, line in enumerate(lines) if i != last]
        answer = _ANSWER.match(kept[-1])
        if answer is None:
            return None
        kept[-1] = kept[-1][: answer.start(2)] + m_prev.group("num") + kept[-1][answer.end(2) :]
        return "\n".join(kept)
    # intermediate results first ("carried"), any expression otherwise; tried in a seeded order
    candidates = equations[:-1] if kind == "carried" and len(equations) > 1 else equations
    for i, m in rng.sample(candidates, len(candidates)):
        line, old = lines[i], m.group("num")
        if kind == "carried":
            if not old.isdigit():
                continue
            new = str(int(old) + rng.choice([d for d in (-2, -1, 1, 2, 3) if int(old) + d >= 0]))
            line = line[: m.start("num")] + new + line[m.end("num") :]
        elif kind == "operation":
            op = _OPERATOR.search(line, 0, m.start())
            if op is None:
                continue
            lhs = line[: op.start(1)] + _SWAP[op.group(1)] + line[op.end(1) : m.start()]
            new = evaluate_expression(lhs)
            if new is None or new == old:
                continue
            line = lhs + line[m.start() : m.start("num")] + new + line[m.end("num") :]
        else:
            raise ValueError(f"unknown corruption {kind!r}; choose one of {CORRUPTIONS}")
        out = _carry_forward(lines[:i] + [line] + lines[i + 1 :], i + 1, {old: new})
        if out is not None:
            return "\n".join(out)
    return None


def corruption_pairs(examples: list[dict], kinds=CORRUPTIONS, seed: int = 0) -> list[dict]:
    """Pairs (reference, corrupted reference) for each example {"id", "prompt", "completion"} and each kind,
    keeping only corruptions the checker marks wrong. Keys: prompt_id, prompt, chosen, rejected, source."""
    pairs = []
    for ex in examples:
        rng = random.Random(f"{seed}/{ex['id']}")
        for kind in kinds:
            bad = corrupt(ex["completion"], kind, rng)
            if bad is not None and not answers_match(bad, ex["completion"]):
                pair = {S.PROMPT_ID: ex["id"], S.PROMPT: ex["prompt"], "chosen": ex["completion"], "rejected": bad}
                error_char = len(os.path.commonprefix([ex["completion"], bad]))  # where the rejected one goes wrong
                pairs.append(pair | {S.PAIR_SOURCE: kind, "rejected_error_char": error_char})
    return pairs


def sample_pairs(samples: pd.DataFrame, seed: int = 0) -> list[dict]:
    """One (correct, incorrect) pair of model samples per prompt of a sweep samples table (columns prompt_id,
    prompt, completion, reference and the token record), correctness by `answers_match` against the reference.
    Each side keeps its generated token ids (chosen_/rejected_ prompt_ids, completion_ids, ended), so it is
    scored as it was sampled."""
    pairs = []
    for prompt_id, group in samples.groupby(S.PROMPT_ID, sort=True):
        reference = group[S.REFERENCE].iloc[0]
        distinct = group.drop_duplicates(S.COMPLETION)
        right = [row for _, row in distinct.iterrows() if answers_match(row[S.COMPLETION], reference)]
        wrong = [row for _, row in distinct.iterrows() if not answers_match(row[S.COMPLETION], reference)]
        if right and wrong:
            rng = random.Random(f"{seed}/{prompt_id}")
            chosen, rejected = rng.choice(right), rng.choice(wrong)
            pair = {S.PROMPT_ID: prompt_id, S.PROMPT: group[S.PROMPT].iloc[0], S.PAIR_SOURCE: "sample"}
            for side, row in (("chosen", chosen), ("rejected", rejected)):
                pair[side] = row[S.COMPLETION]
                pair |= {f"{side}_{c}": row[c] for c in (S.PROMPT_IDS, S.COMPLETION_IDS, S.ENDED) if c in row}
            pairs.append(pair)
    return pairs


def math_preferences(examples: list[dict], samples: pd.DataFrame | None = None, seed: int = 0) -> list[dict]:
    """The built-in preference set: corruption pairs of the examples' references, then sample pairs from
    `samples` (a sweep samples table of the same prompts) when given."""
    pairs = corruption_pairs(examples, seed=seed)
    if samples is not None:
        pairs += sample_pairs(samples, seed)
    return pairs
