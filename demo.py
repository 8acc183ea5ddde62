"""The whole chain, small: train by MLE and by offline IQLearn from the same initial weights, then evaluate both,
on the built-in math task from scratch (chain `math`) or on the built-in summarisation task (man pages'
descriptions to their one-line summaries) from a pretrained base at models/base (chain `summarize`).

    make demo                       # python demo.py --runs runs/demo --chains summarize,findings
    make demo-all                   # ... --chains summarize,translate,summarize-scratch,math-all
    python demo.py --chains math    # the math chain alone

The summarize chain: (1) train configs/demo_text_mle.yaml and configs/demo_text_iqlearn.yaml into <runs>/summarize/{mle,
iqlearn} (a finished run is kept, an interrupted one resumed); (2) print validation NLL and greedy ROUGE-Lsum on
the whole test split with its standard error, beside the trivial baselines (the input's first k words, the best
constant string) on the same prompts; (3) sweep both last checkpoints over the default decoding grid on the first
`--limit` test prompts and print the quality/diversity table with each method's Pareto front; (4) extract both
checkpoints' rewards on the task's preference pairs (the reference against another item's summary or a corrupted
one) and print each score's pairwise accuracy beside the likelihood baselines, and error localisation on the
corrupted pairs; then on the sweep's samples at t=1, each score's Spearman with ROUGE-Lsum and its best-of-N pick
(the app's Rewards vs quality page). `findings` runs the small grid of configs/findings/demo.yaml (the tiny
preset on the math task, two seeds) into <runs>/grid, for the app's Findings page. `translate` does the same
on the translation task (chrF and BLEU) into <runs>/translate/;
`summarize-scratch` and `translate-scratch` repeat a chain from random weights of the base's architecture (its
tokenizer trained on the task's training split), same steps and batches, for the side-by-side comparison. The
math chain does the same for the built-in math task with models trained from scratch into <runs>/{mle,iqlearn}
(math-all adds online IQLearn and GAIL), with its built-in preference set and sweep samples. Each step prints
its wall time; every step skips what is already on disk.
"""

import argparse
import time
from pathlib import Path

from irl.config import load_config, read_config
from irl.runs import CONFIG, METRICS, last_checkpoint, step_of

TEXT_CONFIGS = {"mle": "configs/demo_text_mle.yaml", "iqlearn": "configs/demo_text_iqlearn.yaml"}
# The text chains: the task the configs are trained on, and flags added to them. `-scratch`: the same fine-tuning
# (steps, batches, learning rate) from random weights of the base's architecture, with a tokenizer trained on the
# task's training split, for the side-by-side comparison with the pretrained start.
SCRATCH = ("--model", "base", "--vocab_size", "4096")
TEXT_CHAINS = {
    "summarize": ("summarize", ()),
    "translate": ("translate", ("--data", "translate")),
    "summarize-scratch": ("summarize", SCRATCH),
    "translate-scratch": ("translate", ("--data", "translate", *SCRATCH)),
}
MATH_CONFIGS = {"mle": "configs/demo_mle.yaml", "iqlearn": "configs/demo_iqlearn.yaml"}
ONLINE_CONFIGS = {"online": "configs/demo_online.yaml", "gail": "configs/demo_gail.yaml"}
LIMIT = 50  # test prompts swept, as in the math chain
FINDINGS_CONFIG = "configs/findings/demo.yaml"  # run into <runs>/grid


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


def train_all(configs: dict, runs: Path, flags=()) -> dict[str, Path]:
    ckpts = {}
    for name, config in configs.items():
        t = time.perf_counter()
        extra = ["--init", str(ckpts["mle"])] if name == "gail" else []  # GAIL starts from the MLE run's end
        ckpts[name] = train_run(config, runs / name, *flags, *extra)
        print(f"[{name}] ready in {time.perf_counter() - t:.0f} s -> {ckpts[name]}", flush=True)
    return ckpts


def validation_nll(run_dir: Path) -> float:
    from analysis.results import read_metrics

    return float(read_metrics(run_dir / METRICS)["eval/nll"].dropna().iloc[-1])


def greedy_quality(checkpoint: Path, max_new_tokens: int = 128) -> tuple[list[tuple[str, float, float]], int]:
    """([(metric, mean, SE)] for each of the task's metrics, main first; n) of greedy decoding on the checkpoint's
    whole test split, decoded by the generation module the sweep uses and scored by the sweep's metric code."""
    from analysis import metrics as M
    from analysis import schema as S
    from analysis.stats import mean_se
    from analysis.sweep import max_prompt_tokens
    from irl.data import load_splits
    from irl.generation import Decoding, decode, left_padded
    from irl.model import context_length, load_model, load_tokenizer

    config = read_config(checkpoint.parent / CONFIG)
    test = load_splits(config)["test"]
    model, tokenizer = load_model(str(checkpoint)).eval(), load_tokenizer(str(checkpoint))
    keep = max_prompt_tokens(max_new_tokens, context_length(model.config))  # as the sweep truncates prompts
    completions = []
    for start in range(0, len(test), 64):
        batch = left_padded(tokenizer, [ex["prompt"] for ex in test[start : start + 64]], model.device, keep)
        out = decode(model, batch, Decoding("greedy"), 1, max_new_tokens=max_new_tokens, seed=0,
                     eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)  # fmt: skip
        completions += tokenizer.batch_decode(out.completion_ids, skip_special_tokens=True)
    metrics = S.TASK_METRICS[S.task_of(config.to_dict())]
    scores = M.quality_scores(metrics, completions, [ex["completion"] for ex in test])
    return [(metric, *mean_se(scores[metric])) for metric in metrics], len(test)


def evaluate(ckpts: dict[str, Path], max_new_tokens: int) -> None:
    t = time.perf_counter()
    print(f"\n{'method':<10} {'val NLL':>8}   greedy on the whole test split (mean ± SE)")
    for name, ckpt in ckpts.items():
        figures, n = greedy_quality(ckpt, max_new_tokens)
        scores = ", ".join(f"{metric} {mean:.3f} ± {se:.3f}" for metric, mean, se in figures)
        print(f"{name:<10} {validation_nll(ckpt.parent):>8.4f}   {scores} (n={n})")
    print(f"evaluated in {time.perf_counter() - t:.0f} s", flush=True)


def text_chain(runs: Path, limit: int, task: str, flags=()) -> None:
    from analysis import schema as S
    from analysis.report import (format_definitions, format_preference_report, format_samples_report, preference_report,
                                 samples_report)
    from analysis.sweep import baseline_table, format_baselines, format_table, sweep
    from tasks.text import preferences_path, task_splits

    ckpts = train_all(TEXT_CONFIGS, runs, flags)
    evaluate(ckpts, max_new_tokens=48)
    splits = task_splits(task)
    print("Trivial baselines on the whole test split, settings chosen on train and validation:")
    print(format_baselines(baseline_table(task, splits, "test", len(splits["test"]))))

    t = time.perf_counter()
    table = sweep([ckpt.parent for ckpt in ckpts.values()], checkpoints="last", split="test", limit=limit)
    print(f"\nQuality and diversity on the first {limit} test prompts (* = on its method's Pareto front of")
    print(f"{S.TASK_METRICS[task][0]} against Self-BLEU; - = greedy, one sample per prompt, no Self-BLEU):")
    print(format_table(table, quality=S.mean_col(S.TASK_METRICS[task][0])))
    print("Trivial baselines on the same prompts:")
    print(format_baselines(baseline_table(task, splits, "test", limit)))
    print(f"swept in {time.perf_counter() - t:.0f} s", flush=True)

    t = time.perf_counter()
    pairs = preferences_path(task)
    reports = {name: preference_report(ckpt, pairs) for name, ckpt in ckpts.items()}
    print("\n" + format_preference_report(reports, f"{task} preference pairs ({pairs})"))
    quality = S.TASK_METRICS[task][0]
    sampled = {name: samples_report(ckpt, quality, split="test", limit=limit) for name, ckpt in ckpts.items()}
    print("\n" + format_samples_report(sampled))
    print("\n" + format_definitions(reports, sampled))
    print(f"rewards in {time.perf_counter() - t:.0f} s", flush=True)


def findings_chain(config: str, output_dir: Path) -> None:
    """The findings grid of `config` into `output_dir` (as `python -m findings run` does into the file's own
    output_dir), whose report the app's Findings page shows."""
    import dataclasses

    from findings.grid import load_grid, run_grid
    from findings.report import record_timing, write_report

    grid = dataclasses.replace(load_grid(config), output_dir=output_dir)
    t = time.perf_counter()
    seconds = run_grid(grid)
    seconds["total"] = time.perf_counter() - t
    record_timing(grid, "run", seconds)
    print(f"findings report: {write_report(grid)}", flush=True)


def math_chain(runs: Path, limit: int, online: bool) -> None:
    from analysis.report import format_report, reward_report
    from analysis.sweep import format_table, sweep

    ckpts = train_all(MATH_CONFIGS | (ONLINE_CONFIGS if online else {}), runs)
    evaluate(ckpts, max_new_tokens=128)
    t = time.perf_counter()
    table = sweep([ckpt.parent for ckpt in ckpts.values()], checkpoints="last", split="test", limit=limit)
    print(f"\nQuality and diversity on the first {limit} test prompts (* = on its method's Pareto front of")
    print("exact match against Self-BLEU; - = greedy, one sample per prompt, no Self-BLEU):")
    print(format_table(table))
    print(f"swept in {time.perf_counter() - t:.0f} s", flush=True)
    t = time.perf_counter()
    reports = {name: reward_report(ckpt, sweep_split="test", limit=limit) for name, ckpt in ckpts.items()}
    print("\n" + format_report(reports))
    print(f"rewards in {time.perf_counter() - t:.0f} s", flush=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", default="runs/demo", help="Directory of the demo's runs.")
    parser.add_argument("--limit", type=int, default=LIMIT, help="Test prompts in the summarisation sweep.")
    parser.add_argument("--chains", default="summarize", help="Comma-separated chains to run, in order: summarize, "
                        "translate (from the shipped base), summarize-scratch, translate-scratch (the same from random "
                        "weights), math (from scratch), math-all (math with online IQLearn and GAIL), findings "
                        f"(the small grid of {FINDINGS_CONFIG}).")
    args = parser.parse_args()
    from transformers.utils import logging as transformers_logging

    transformers_logging.disable_progress_bar()  # a bar per checkpoint load would break up the demo's tables
    runs = Path(args.runs)
    start = time.perf_counter()
    for chain in args.chains.split(","):
        if chain in TEXT_CHAINS:
            task, flags = TEXT_CHAINS[chain]
            print(f"\n== {chain}", flush=True)
            text_chain(runs / chain, args.limit, task, flags)
        elif chain in ("math", "math-all"):
            math_chain(runs, 50, online=chain == "math-all")
        elif chain == "findings":
            print(f"\n== {chain}", flush=True)
            findings_chain(FINDINGS_CONFIG, runs / "grid")
        else:
            parser.error(f"--chains: unknown chain {chain!r}")
    print(f"demo total {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
