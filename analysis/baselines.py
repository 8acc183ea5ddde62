"""Trivial baselines of the built-in text tasks (tasks/text.py), scored by the metrics of analysis/metrics.py.

    python -m analysis.baselines --task summarize     # choose settings, print test scores (mean ± SE)
    python -m analysis.baselines --task translate --json
    python -m analysis.baselines --task summarize --card data/summarize/README.md   # the card's baselines section

Each baseline is a pure function of the examples ({"prompt", "completion", ...} rows of a task split) that
returns its per-sample predictions (plain text, no leading space) and the setting it used, so the same metric
code scores every baseline and every model:

- `first_k_words`: the task input's first k words; k in K_RANGE chosen on the validation split by the task's
  main metric (TASKS[task]["main"]: ROUGE-Lsum for summarisation, chrF for translation), ties to the smaller k.
- `best_constant`: one string for every input, chosen on validation among candidates drawn from the train
  references: the CONSTANT_TOP most frequent whole references and, for n = 1..4, the CONSTANT_TOP word
  n-grams found in the most train references (lowercased, punctuation kept on the words), ties to the shorter
  and then alphabetically first string.
- `copy_input` (translation): the English input unchanged.

Scores are per-sample means with standard errors (analysis.stats.mean_se: one prediction per input, so the
ordinary std(ddof=1)/sqrt(n)); sentence BLEU and chrF are sacrebleu's
(effective order for BLEU), and corpus BLEU/chrF are reported beside them. Nothing here imports torch.
"""

import argparse
import hashlib
import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from analysis import schema as S
from analysis.metrics import bleu_scores, chrf_scores, per_sample_scores, quality_scores
from analysis.stats import mean_se
from common.io import atomic_write_text
from tasks.text import TASKS, task_input, task_splits

K_RANGE = range(1, 41)
CONSTANT_TOP = 20


@dataclass
class Baseline:
    name: str
    setting: dict
    predictions: list[str] = field(repr=False)


def references(examples: list[dict]) -> list[str]:
    """The references of examples: their completions without the leading space."""
    return [ex["completion"][1:] if ex["completion"].startswith(" ") else ex["completion"] for ex in examples]


def score(task: str, predictions: list[str], refs: list[str]) -> dict[str, list[float]]:
    """{metric: per-sample scores} for the task's metrics (schema.TASK_METRICS), by the metric modules every
    stage scores with."""
    return quality_scores(S.TASK_METRICS[task], predictions, refs)


def main_score(task: str, predictions: list[str], refs: list[str]) -> float:
    """Mean per-sample score of the task's main metric (the plain function its module wraps, same values)."""
    return mean_se(per_sample_scores(TASKS[task]["main"], predictions, refs))[0] if refs else 0.0


def _best(task, options, validation):
    """The option with the highest main score on validation; options are (tie-break key, setting, predict)
    and ties go to the smallest key."""
    refs = references(validation)
    scored = [(-main_score(task, predict(validation), refs), key, setting) for key, setting, predict in options]
    return min(scored, key=lambda s: (s[0], s[1]))


def first_k_words(task: str, examples: list[dict], k: int) -> list[str]:
    """The first k words of each example's input."""
    return [" ".join(task_input(task, ex["prompt"]).split()[:k]) for ex in examples]


def choose_k(task: str, validation: list[dict], ks=K_RANGE) -> int:
    """The k of first_k_words with the best main metric on `validation` (ties: the smallest k)."""
    options = [(k, k, lambda rows, k=k: first_k_words(task, rows, k)) for k in ks]
    return _best(task, options, validation)[2]


def constant_candidates(train: list[dict], top: int = CONSTANT_TOP, max_n: int = 4) -> list[str]:
    """The `top` most frequent train references and, for n = 1..max_n, the `top` lowercased word n-grams that
    occur in the most train references (each reference counted once per n-gram); frequency ties broken
    alphabetically. Deduplicated, in that order."""
    refs = references(train)
    found = [r for r, _ in sorted(Counter(refs).items(), key=lambda x: (-x[1], x[0]))[:top]]
    for n in range(1, max_n + 1):
        counts = Counter()
        for r in refs:
            words = r.lower().split()
            counts.update({" ".join(words[i : i + n]) for i in range(len(words) - n + 1)})
        found += [g for g, _ in sorted(counts.items(), key=lambda x: (-x[1], x[0]))[:top]]
    return list(dict.fromkeys(found))


def choose_constant(task: str, train: list[dict], validation: list[dict]) -> str:
    """The constant_candidates string with the best main metric on `validation` (ties: shorter, then first
    alphabetically)."""
    options = [((len(c), c), c, lambda rows, c=c: [c] * len(rows)) for c in constant_candidates(train)]
    return _best(task, options, validation)[2]


def copy_input(task: str, examples: list[dict]) -> list[str]:
    return [task_input(task, ex["prompt"]) for ex in examples]


# (task, digest of the train and validation examples) -> (k, constant): choosing scores every candidate on
# validation (about 100 s for summarisation), and a sweep asks once per run and checkpoint
_CHOSEN: dict[tuple[str, str], tuple[int, str]] = {}


def chosen_settings(task: str, splits: dict[str, list[dict]]) -> tuple[int, str]:
    """(k of first_k_words, best_constant's string) chosen on `splits`' train and validation examples, once per
    process for the same examples."""
    digest = hashlib.sha256(json.dumps([splits["train"], splits["validation"]], sort_keys=True).encode()).hexdigest()
    if (task, digest) not in _CHOSEN:
        _CHOSEN[task, digest] = (choose_k(task, splits["validation"]),
                                 choose_constant(task, splits["train"], splits["validation"]))  # fmt: skip
    return _CHOSEN[task, digest]


def baselines(task: str, splits: dict[str, list[dict]], split: str = "test") -> list[Baseline]:
    """Every baseline of `task` on `split`, settings chosen on train/validation (`chosen_settings`)."""
    rows = splits[split]
    k, constant = chosen_settings(task, splits)
    out = [
        Baseline("first_k_words", {"k": k}, first_k_words(task, rows, k)),
        Baseline("best_constant", {"constant": constant}, [constant] * len(rows)),
    ]
    if task == "translate":
        out.append(Baseline("copy_input", {}, copy_input(task, rows)))
    return out


def report(task: str, splits: dict[str, list[dict]], split: str = "test") -> list[dict]:
    """One row per baseline: name, setting, n, and per metric its mean and SE (plus corpus BLEU/chrF)."""
    refs = references(splits[split])
    rows = []
    for b in baselines(task, splits, split):
        row = {"baseline": b.name, "setting": b.setting, "n": len(refs)}
        for metric, values in score(task, b.predictions, refs).items():
            row[metric], row[f"{metric}_se"] = mean_se(values)
        if "bleu" in S.TASK_METRICS[task]:
            row["corpus_bleu"] = bleu_scores(b.predictions, refs)[0]
        if "chrf" in S.TASK_METRICS[task]:
            row["corpus_chrf"] = chrf_scores(b.predictions, refs)[0]
        rows.append(row)
    return rows


def format_report(task: str, rows: list[dict]) -> str:
    """A Markdown table of `report` rows: metric columns as mean ± SE (ROUGE in [0, 1], BLEU/chrF in 0-100)."""
    metrics = S.TASK_METRICS[task]
    extra = [c for c in ("corpus_bleu", "corpus_chrf") if rows and c in rows[0]]
    head = ["baseline", "setting", *metrics, *extra]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = [r["baseline"], ", ".join(f"{k}={v!r}" for k, v in r["setting"].items()) or "-"]
        for m in metrics:
            fmt = ".2f" if m in ("bleu", "chrf") else ".4f"
            cells.append(f"{r[m]:{fmt}} ± {r[m + '_se']:{fmt}}")
        cells += [f"{r[c]:.2f}" for c in extra]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


CARD_SECTION = "## Trivial baselines"
CARD_NEXT = "## Sources and licences"  # the card section (tasks/text.py write_task) the baselines go before


def card_section(task: str, rows: list[dict]) -> str:
    """The dataset card's section of the trivial baselines' scores."""
    return (
        f"{CARD_SECTION} (test split, mean ± standard error over examples)\n\n"
        f"`python -m analysis.baselines --task {task}` (settings chosen on train/validation, see "
        f"analysis/baselines.py):\n\n{format_report(task, rows)}\n\n"
    )


def write_card_section(card, task: str, rows: list[dict]) -> None:
    """Put the baselines section into a task's card (data/<task>/README.md, written by tasks/text.py), in place of
    the one it has, else before its sources section."""
    card = Path(card)
    text = card.read_text(encoding="utf-8")
    start = text.find(CARD_SECTION)
    if start >= 0:
        end = text.find("\n## ", start + len(CARD_SECTION))
        text = text[:start] + text[end + 1 :] if end >= 0 else text[:start]
    at = text.find(CARD_NEXT)
    at = len(text) if at < 0 else at
    atomic_write_text(card, text[:at] + card_section(task, rows) + text[at:])


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m analysis.baselines", description=__doc__.split("\n\n")[0])
    parser.add_argument("--task", required=True, choices=sorted(TASKS))
    parser.add_argument("--split", default="test")
    parser.add_argument("--json", action="store_true", help="print the rows as JSON")
    parser.add_argument("--card", help="also write the scores into this dataset card (data/<task>/README.md)")
    args = parser.parse_args(argv)
    rows = report(args.task, task_splits(args.task), args.split)
    if args.card:
        write_card_section(args.card, args.task, rows)
    print(json.dumps(rows, indent=1) if args.json else format_report(args.task, rows))


if __name__ == "__main__":
    main()
