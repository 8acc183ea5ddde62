"""The whole chain, small: train MLE and offline IQLearn from the same initial weights on the built-in math
task, then evaluate both.

    make demo                       # or: python demo.py --runs runs/demo
    make demo-all                   # also online IQLearn and GAIL: python demo.py --runs runs/demo --all

Steps: (1) train configs/demo_mle.yaml and configs/demo_iqlearn.yaml into <runs>/mle and <runs>/iqlearn (a
finished run is kept, an interrupted one resumed); (2) print validation NLL and greedy exact match on the
test split for both; (3) sweep both last checkpoints over the default decoding grid on the first `--limit`
test prompts and print the quality/diversity table with each method's Pareto front; (4) extract both
checkpoints' rewards and print their pairwise accuracy on the built-in preference set, their Spearman
correlation with correctness and the best-of-N gain. Each step prints its wall time; every step skips what
is already on disk, so a second `make demo` only prints.
"""

import argparse
import json
import time
from pathlib import Path

from irl.config import load_config, read_config
from irl.runs import CONFIG, METRICS, last_checkpoint, step_of

CONFIGS = {"mle": "configs/demo_mle.yaml", "iqlearn": "configs/demo_iqlearn.yaml"}
ONLINE_CONFIGS = {"online": "configs/demo_online.yaml", "gail": "configs/demo_gail.yaml"}  # with --all
LIMIT = 50  # test prompts swept: the default grid on two checkpoints then takes about 2.5 min here


def train_run(config: str, run_dir: Path, *extra: str) -> Path:
    """Train one demo run (or finish it); returns its last checkpoint."""
    from irl.train import train

    name = run_dir.name
    flags = ["--config", config, "--output_dir", str(run_dir), *extra]
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


def greedy_quality(checkpoint: Path) -> str:
    """Greedy quality of a checkpoint on its run's whole test split, as "metric mean ± SE" of the task's first
    metric, decoded by the generation module the sweep uses and scored by the sweep's metric code."""
    from analysis import metrics as M
    from analysis import schema as S
    from analysis.stats import mean_se
    from irl.data import load_splits
    from irl.generation import Decoding, decode, left_padded
    from irl.model import load_model, load_tokenizer

    config = read_config(checkpoint.parent / CONFIG)
    test = load_splits(config)["test"]
    model, tokenizer = load_model(str(checkpoint)).eval(), load_tokenizer(str(checkpoint))
    completions = []
    for start in range(0, len(test), 64):
        batch = left_padded(tokenizer, [ex["prompt"] for ex in test[start : start + 64]], model.device)
        out = decode(model, batch, Decoding("greedy"), 1, max_new_tokens=128, seed=0,
                     eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)  # fmt: skip
        completions += tokenizer.batch_decode(out.completion_ids, skip_special_tokens=True)
    metric = S.TASK_METRICS[S.task_of(config.to_dict())][0]
    scores = M.quality_scores([metric], completions, [ex["completion"] for ex in test])[metric]
    mean, se = mean_se(scores)
    return f"{metric} {mean:.3f} ± {se:.3f}"


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", default="runs/demo", help="Directory of the demo's runs.")
    parser.add_argument("--limit", type=int, default=LIMIT, help="Test prompts in the sweep and reward steps.")
    parser.add_argument("--all", action="store_true", help="Also train online IQLearn and GAIL (make demo-all).")
    args = parser.parse_args()
    runs = Path(args.runs)
    start = time.perf_counter()
    ckpts = {}
    for name, config in (CONFIGS | ONLINE_CONFIGS if args.all else CONFIGS).items():
        t = time.perf_counter()
        extra = ["--init", str(ckpts["mle"])] if name == "gail" else []  # GAIL starts from the MLE demo's end
        ckpts[name] = train_run(config, runs / name, *extra)
        print(f"[{name}] ready in {time.perf_counter() - t:.0f} s -> {ckpts[name]}", flush=True)
    t = time.perf_counter()
    print(f"\n{'method':<10} {'val NLL':>8} {'greedy exact match (test)':>26}")
    for name, ckpt in ckpts.items():
        print(f"{name:<10} {validation_nll(ckpt.parent):>8.4f} {greedy_quality(ckpt):>26}")
    print(f"evaluated in {time.perf_counter() - t:.0f} s", flush=True)

    from analysis.report import format_report, reward_report
    from analysis.sweep import format_table, sweep

    t = time.perf_counter()
    table = sweep([ckpt.parent for ckpt in ckpts.values()], checkpoints="last", split="test", limit=args.limit)
    print(f"\nQuality and diversity on the first {args.limit} test prompts (* = on its method's Pareto front of")
    print("exact match against Self-BLEU; - = greedy, one sample per prompt, no Self-BLEU):")
    print(format_table(table))
    print(f"swept in {time.perf_counter() - t:.0f} s", flush=True)

    t = time.perf_counter()
    reports = {name: reward_report(ckpt, sweep_split="test", limit=args.limit) for name, ckpt in ckpts.items()}
    print("\n" + format_report(reports))
    print(f"rewards in {time.perf_counter() - t:.0f} s; demo total {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
