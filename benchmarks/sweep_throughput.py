"""Sweep throughput: generated tokens per second of `analysis.sweep.sweep` against a loop that calls
`generate` one prompt at a time (same checkpoint, same prompts, K=5 samples at temperature 1), and the share of
the sweep's time spent computing metrics (per-sample quality, Self-BLEU, distinct-n). Both sides load the
checkpoint in their timed window, after one untimed load has paid transformers' set-up of the process.
`speedup` compares with one call per prompt returning its K samples (no calculator),
`speedup_vs_one_sample_per_call` with K calls per prompt, and `speedup_calc` does the same with the calculator
on, as the math sweep runs by default (the sweep then decodes every cell twice, plain and with the calculator,
and so does the loop). The sweep decodes `--batch_size` prompts at a time, by default the sweep's own default.

    .venv/bin/python benchmarks/sweep_throughput.py [--checkpoint DIR] [--prompts 32] [--batch_size 32]

The checkpoint defaults to the last one of runs/demo/mle; without it (a fresh clone) a short run of the small
preset is trained into a temporary directory first (about a minute). The sweep writes into a temporary copy of
the run, never into runs/. Its time excludes loading the task's data (the same for any evaluation; reported
as `data_s`). Each side is timed `--repeats` times, the two taking turns, and the best times are compared (as
`timeit` does: the machine's noise only ever adds time). Goals: speedup >= 5, metrics_share <= 0.10. The last
line is JSON.
"""

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
import torch
from transformers import LogitsProcessorList

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from analysis import results  # noqa: E402
from analysis import schema as S  # noqa: E402
from analysis import sweep as sweep_module  # noqa: E402
from analysis.calculator import CalculatorLogitsProcessor  # noqa: E402
from irl.generation import completion_lengths, left_padded  # noqa: E402
from irl import runs  # noqa: E402
from irl.config import TrainConfig  # noqa: E402
from irl.data import load_splits  # noqa: E402
from irl.model import load_model, load_tokenizer  # noqa: E402

K = 5
TEMPERATURE = 1.0
DEMO_RUN = REPO / "runs" / "demo" / "mle"


def run_with_checkpoint(checkpoint: Path | None, tmp: Path) -> tuple[Path, str]:
    """(run directory in `tmp`, where its checkpoint came from): a copy of `checkpoint` (config.yaml and
    weights, no results), or a freshly trained short run of the small preset when there is none."""
    if checkpoint is None and runs.last_checkpoint(DEMO_RUN) is None:
        from irl.train import train

        print("no checkpoint in runs/demo/mle: training a short run of the small preset", file=sys.stderr)
        cfg = TrainConfig(
            output_dir=str(tmp / "run"), model="small", math_sizes=[4000, 50, 200], max_steps=80,
            per_device_train_batch_size=32, learning_rate=2e-3, warmup_steps=10, logging_steps=20, eval_steps=0,
            save_steps=80,
        )  # fmt: skip
        train(cfg)
        return tmp / "run", f"small preset trained {cfg.max_steps} steps"
    checkpoint = Path(checkpoint) if checkpoint else runs.last_checkpoint(DEMO_RUN)
    run = tmp / "run"
    run.mkdir()
    shutil.copy(checkpoint.parent / runs.CONFIG, run / runs.CONFIG)
    results = shutil.ignore_patterns("sweep", "rewards", "optimizer.pt")
    shutil.copytree(checkpoint, run / checkpoint.name, ignore=results)
    return run, str(checkpoint)


def timed(fn, totals: dict, key: str):
    """`fn`, adding its wall time to totals[key] at each call."""

    def wrapper(*args, **kwargs):
        start = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            totals[key] += time.perf_counter() - start

    return wrapper


@torch.no_grad()
def loop(checkpoint: Path, prompts: list[str], max_new_tokens: int, per_call: int, calculator: bool = False):
    """(generated tokens, seconds) of K samples per prompt from a loop of `generate` calls on one prompt,
    `per_call` samples each (K: one call per prompt; 1: one call per sample); with `calculator`, each call is
    made a second time with the calculator's logits processor."""
    tokenizer, model = load_tokenizer(str(checkpoint)), load_model(str(checkpoint)).eval()
    tokens, start = 0, time.perf_counter()
    for i, prompt in enumerate(prompts):
        batch = left_padded(tokenizer, [prompt], model.device)
        width = batch["input_ids"].shape[1]
        passes = [None] + ([LogitsProcessorList([CalculatorLogitsProcessor(tokenizer, width)])] if calculator else [])
        for j in range(K // per_call):
            for processors in passes:
                torch.manual_seed(i * K + j)
                sequences = model.generate(
                    **batch, do_sample=True, temperature=TEMPERATURE, top_k=0, top_p=1.0,
                    num_return_sequences=per_call, max_new_tokens=max_new_tokens, pad_token_id=tokenizer.pad_token_id,
                    eos_token_id=tokenizer.eos_token_id, logits_processor=processors,
                )  # fmt: skip
                tokens += int(completion_lengths(sequences[:, width:], tokenizer.eos_token_id).sum())
    return tokens, time.perf_counter() - start


def sweep_once(run: Path, args, totals: dict, calculator: bool, max_new_tokens: int | None) -> dict:
    """One timed sweep of `run`'s last checkpoint from scratch (its sweep directory removed first): seconds without
    data loading, of which metrics, generated tokens (the calculator pass's included) and max_new_tokens."""
    checkpoint = runs.last_checkpoint(run)
    shutil.rmtree(checkpoint / runs.SWEEP, ignore_errors=True)
    totals.update(data=0.0, metrics=0.0)
    start = time.perf_counter()
    sweep_module.sweep(
        run, temperatures=(TEMPERATURE,), beams=(), samples=K, limit=args.prompts, calculator=calculator,
        batch_size=args.batch_size, max_new_tokens=max_new_tokens,
    )  # fmt: skip
    seconds = time.perf_counter() - start - totals["data"]
    out_dir = runs.sweep_dir(checkpoint, "test")
    cell = pd.read_parquet(out_dir / runs.cell_file(f"t={TEMPERATURE:g}"))
    tokens = int(cell[S.N_TOKENS].sum() + (cell[S.COMPLETION_CALC_IDS].map(len).sum() if calculator else 0))
    manifest = json.loads((out_dir / runs.MANIFEST).read_text())
    return {"s": seconds, "metrics_s": totals["metrics"], "data_s": totals["data"], "tokens": tokens,
            "max_new_tokens": manifest["max_new_tokens"]}  # fmt: skip


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", type=Path, default=None)
    parser.add_argument("--prompts", type=int, default=32)
    parser.add_argument("--batch_size", type=int, default=sweep_module.BATCH_SIZE, help="default: the sweep's")
    parser.add_argument("--repeats", type=int, default=3, help="timings per side, alternating; the best is compared")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory() as tmp:
        run, source = run_with_checkpoint(args.checkpoint, Path(tmp))
        checkpoint = runs.last_checkpoint(run)
        # transformers builds its weight-conversion tables at the process's first load (about 0.4 s): paid here,
        # so that the sweep, timed first, and the loop load the checkpoint at the same cost
        load_model(str(checkpoint))
        totals = {"data": 0.0, "metrics": 0.0}
        sweep_module.load_splits = timed(load_splits, totals, "data")
        sweep_module.M.quality_scores = timed(sweep_module.M.quality_scores, totals, "metrics")
        sweep_module.M.aggregate = timed(sweep_module.M.aggregate, totals, "metrics")
        prompts = [ex["prompt"] for ex in load_splits(TrainConfig(**results.read_config(run)))["test"][: args.prompts]]
        # the two sides take turns, so that both meet the machine in the same states; each keeps its best time
        sweeps, loops, calc_sweeps, calc_loops = [], [], [], []
        for _ in range(args.repeats):
            sweeps.append(sweep_once(run, args, totals, calculator=False, max_new_tokens=None))
            max_new_tokens = sweeps[0]["max_new_tokens"]
            loops.append(loop(checkpoint, prompts, max_new_tokens, per_call=K))
        for _ in range(args.repeats):
            calc_sweeps.append(sweep_once(run, args, totals, calculator=True, max_new_tokens=max_new_tokens))
            calc_loops.append(loop(checkpoint, prompts, max_new_tokens, per_call=K, calculator=True))
        single_tokens, single_s = loop(checkpoint, prompts, max_new_tokens, per_call=1)

    best, calc = min(sweeps, key=lambda r: r["s"]), min(calc_sweeps, key=lambda r: r["s"])
    fastest = (min(side, key=lambda r: r[1]) for side in (loops, calc_loops))  # (tokens, seconds) each
    (loop_tokens, loop_s), (loop_calc_tokens, loop_calc_s) = fastest
    sweep_rate = best["tokens"] / best["s"]
    result = {
        "checkpoint": source,
        "prompts": args.prompts,
        "samples": K,
        "batch_size": args.batch_size,
        "max_new_tokens": max_new_tokens,
        "repeats": args.repeats,
        "sweep_tokens": best["tokens"],
        "sweep_s": round(best["s"], 2),
        "sweep_s_each": [round(r["s"], 2) for r in sweeps],
        "data_s": round(best["data_s"], 2),
        "sweep_tokens_per_s": round(sweep_rate, 1),
        "loop_tokens": loop_tokens,
        "loop_s": round(loop_s, 2),
        "loop_s_each": [round(s, 2) for _, s in loops],
        "loop_tokens_per_s": round(loop_tokens / loop_s, 1),
        "single_tokens_per_s": round(single_tokens / single_s, 1),
        "speedup": round(sweep_rate / (loop_tokens / loop_s), 2),
        "speedup_with_data_loading": round((best["tokens"] / (best["s"] + best["data_s"])) / (loop_tokens / loop_s), 2),
        "speedup_vs_one_sample_per_call": round(sweep_rate / (single_tokens / single_s), 2),
        "calc_tokens_per_s": round(calc["tokens"] / calc["s"], 1),
        "calc_s_each": [round(r["s"], 2) for r in calc_sweeps],
        "loop_calc_tokens_per_s": round(loop_calc_tokens / loop_calc_s, 1),
        "loop_calc_s_each": [round(s, 2) for _, s in calc_loops],
        "speedup_calc": round((calc["tokens"] / calc["s"]) / (loop_calc_tokens / loop_calc_s), 2),
        "metrics_s": round(best["metrics_s"], 2),
        "metrics_share": round(best["metrics_s"] / best["s"], 4),
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
