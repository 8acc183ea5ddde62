"""The whole chain, small: train MLE and offline IQLearn from the same initial weights on the built-in math
task, then evaluate both.

    make demo                       # or: python demo.py --runs runs/demo

Steps: (1) train configs/demo_mle.yaml and configs/demo_iqlearn.yaml into <runs>/mle and <runs>/iqlearn (a
finished run is kept, an interrupted one resumed); (2) print validation NLL and greedy exact match on the
test split for both. Each step prints its wall time.
"""

import argparse
import json
import time
from pathlib import Path

from irl.config import load_config, read_config
from irl.runs import CONFIG, METRICS, last_checkpoint, step_of

CONFIGS = {"mle": "configs/demo_mle.yaml", "iqlearn": "configs/demo_iqlearn.yaml"}


def train_run(name: str, run_dir: Path) -> Path:
    """Train one demo run (or finish it); returns its last checkpoint."""
    from irl.train import train

    flags = ["--config", CONFIGS[name], "--output_dir", str(run_dir)]
    if (run_dir / CONFIG).exists():
        ckpt = last_checkpoint(run_dir)
        if ckpt is not None and step_of(ckpt) == read_config(run_dir / CONFIG).max_steps:
            print(f"[{name}] finished run found at {run_dir}, kept")
            return ckpt
        flags.append("--resume")
    train(load_config(flags))
    return last_checkpoint(run_dir)


def validation_nll(run_dir: Path) -> float:
    rows = [json.loads(line) for line in (run_dir / METRICS).read_text().splitlines()]
    return [r["eval/nll"] for r in rows if "eval/nll" in r][-1]


def greedy_exact_match(checkpoint: Path) -> float:
    """Share of test problems whose greedy solution ends in the right `#### <number>`."""
    from analysis.generation import generate
    from analysis.metrics import answers_match
    from irl.data import load_splits
    from irl.model import load_model, load_tokenizer

    test = load_splits(read_config(checkpoint.parent / CONFIG))["test"]
    model, tokenizer = load_model(str(checkpoint)).eval(), load_tokenizer(str(checkpoint))
    outs = generate(model, tokenizer, [ex["prompt"] for ex in test], max_new_tokens=128, do_sample=False)
    return sum(answers_match(out[0], ex["completion"]) for out, ex in zip(outs, test)) / len(test)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", default="runs/demo", help="Directory of the demo's runs.")
    args = parser.parse_args()
    runs = Path(args.runs)
    start = time.perf_counter()
    ckpts = {}
    for name in CONFIGS:
        t = time.perf_counter()
        ckpts[name] = train_run(name, runs / name)
        print(f"[{name}] trained in {time.perf_counter() - t:.0f} s -> {ckpts[name]}", flush=True)
    t = time.perf_counter()
    print(f"\n{'method':<10} {'val NLL':>8} {'greedy exact match (test)':>26}")
    for name, ckpt in ckpts.items():
        print(f"{name:<10} {validation_nll(ckpt.parent):>8.4f} {greedy_exact_match(ckpt):>26.3f}")
    print(f"evaluated in {time.perf_counter() - t:.0f} s; demo total {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
