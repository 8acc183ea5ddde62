"""The built-in task: GSM8K-style math word problems from reasoning-gym's gsm_symbolic generators.

Each gsm_symbolic generator is one GSM8K problem with its names and numbers made variable; its solution is
step by step and ends in `#### <number>`. A prompt is `Question: <problem>\\nAnswer:` and its completion the
solution, so an example reads like a GSM8K training pair.

Why these templates (TEMPLATES = 10, 16, 31, 43, 72): the demo trains a model of a few million
parameters for a few minutes on two CPU cores. These five problems have the shortest solutions (two or three
steps, about 20-40 tokens) and small operands (one- and two-digit additions, subtractions, small products
and divisions), so a small model can learn both the solution format and much of the arithmetic in that
budget; the other generators need 3-4 digit products, percentages, fractions or currency that a model this
size does not learn in minutes. Any other set is one flag away (`--math_templates 0,1,2`).

Splits are drawn from one stream of distinct problems seeded by `data_seed`: the first problems go to test,
the next to validation, the rest to train, so no prompt occurs in two splits.
"""

import argparse
from pathlib import Path
from random import Random

from common.io import write_jsonl

SPLITS = ("train", "validation", "test")
TEMPLATES = (10, 16, 31, 43, 72)  # the gsm_symbolic generators used by default (see above)
SIZES = (20000, 200, 200)  # train, validation, test


def _generator(index: int):
    # imported here: training on other data, loading models and scoring never pay for reasoning-gym's import
    from reasoning_gym.arithmetic.gsm_symbolic import generators_00_49, generators_50_99

    module = generators_00_49 if index < 50 else generators_50_99
    return getattr(module, f"generate_{index}")


def make_prompt(question: str) -> str:
    return f"Question: {question}\nAnswer:"


def generate_splits(sizes, templates, seed: int) -> dict[str, list[dict]]:
    """{split: [{"id", "prompt", "completion", "answer", "template"}]} with sizes (train, validation, test)."""
    n_train, n_val, n_test = sizes
    wanted = n_test + n_val + n_train
    rng = Random(seed)
    generators = {t: _generator(t) for t in templates}
    seen, examples = set(), []
    attempts = 0
    while len(examples) < wanted:
        attempts += 1
        if attempts > 20 * wanted:
            raise ValueError(
                f"templates {list(templates)} yield only {len(examples)} distinct problems; ask for fewer or add "
                "templates"
            )
        template = rng.choice(templates)
        ex = generators[template](Random(rng.getrandbits(64)), 1.0)
        prompt = make_prompt(ex["question"])
        if prompt in seen:
            continue
        seen.add(prompt)
        examples.append(
            {
                "prompt": prompt,
                "completion": " " + ex["metadata"]["answer_cot"],
                "answer": ex["answer"],
                "template": template,
            }
        )
    bounds = {"test": (0, n_test), "validation": (n_test, n_test + n_val), "train": (n_test + n_val, wanted)}
    return {
        split: [{"id": f"math-{split}-{i}", **ex} for i, ex in enumerate(examples[lo:hi])]
        for split, (lo, hi) in bounds.items()
    }


def main(argv=None) -> None:
    """`python -m tasks math --out DIR [--sizes 20,5,5]`: write the built-in task's splits as DIR/<split>.jsonl
    (the splits training builds in memory from the same sizes, templates and seed)."""
    parser = argparse.ArgumentParser(prog="python -m tasks math", description=main.__doc__)
    parser.add_argument("--out", required=True)
    parser.add_argument("--sizes", default=",".join(map(str, SIZES)), help="train,validation,test")
    parser.add_argument("--templates", default=",".join(map(str, TEMPLATES)))
    parser.add_argument("--seed", type=int, default=0, help="the seed training calls data_seed")
    args = parser.parse_args(argv)
    sizes, templates = ([int(x) for x in value.split(",")] for value in (args.sizes, args.templates))
    splits = generate_splits(sizes, templates, args.seed)
    for split, rows in splits.items():
        write_jsonl(Path(args.out) / f"{split}.jsonl", rows)
        print(f"{args.out}/{split}.jsonl: {len(rows)} examples")
