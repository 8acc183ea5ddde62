"""The paper's recipes (configs/paper/) at their real shapes on this CPU: each recipe's predicted peak memory
(irl/memory.py, the dry run's figures), and for each that fits, two real optimizer steps as the recipe configures
them, measured; for each that does not, why not and what would make it fit.

    python benchmarks/paper_recipes.py                               # every recipe (make bench-recipes); resumes
    python benchmarks/paper_recipes.py --recipes gsm8k_mle,gsm8k_gail

Shapes (SHAPES, by the recipe's name): models/shapes/qwen2.5-0.5b for gsm8k_*, models/shapes/t5-base and t5-large
for t5_base_* and t5_large_*: the published architectures with random weights (irl/shapes.py).

Fits: the predicted peak is at most (1 - irl.memory.HEADROOM) of `--memory_gib` (24 GiB, this machine's memory, by
default); for GAIL it counts the reference policy, the discriminator and its step. Before training, the prediction is
also held against the memory available now (MemAvailable): a recipe that fits 24 GiB but not what other processes
leave free is not started (nothing recorded, a rerun takes it up).

A recipe that fits trains through irl.train.train, under irl.memory.measured_peak, with everything as the recipe
sets it (batch size, gradient accumulation, bf16, activation checkpointing, max_length, objective, lam,
num_samples, sample_max_new_tokens, eval_size, seed, ...) except these overrides (`flags`, `measure`), which only
make it run offline and measured: the shape as `--model`, local data (a directory laid out as the hub dataset,
with the recipe's config name and columns), the run directory, `--report_to none`, `--max_steps 2`,
`--logging_steps 1` (a log line per step: its tokens) and `--eval_strategy no` (the end-of-training evaluation
of eval_size examples is a forward pass over 500 examples: minutes at this size, and no part of a training step).
The run saves its checkpoint at the end, as every run does. GSM8K's local data: the built-in math task's problems
(tasks/math.py, GSM8K's own problems with their names and numbers made variable, solutions ending in "#### <n>"),
question/answer, as many as 2 steps x batch x accumulation plus eval_size. gsm8k_gail starts (`--init`) from the
2-step gsm8k_mle run's checkpoint.

`--unprofiled` recipes train without the profiler (peak_bytes null; times and resident memory only). One JSON line
per recipe is appended to `--out` (benchmarks/results/paper_recipes.jsonl) with the commit and machine;
a recipe already there for this commit is skipped. Each recipe runs in a process of its own. Trained: the measured
peak (torch tensors, as predicted) and its process's maximum resident memory (for GAIL, the MLE run it starts from
included when that had to be trained again),
seconds of each optimizer step (its micro-batches, sampling included, and the
optimizer's step: `StepClock`), expert tokens per step (non-padding, from metrics.jsonl), the overrides.
Not fitting: the predicted terms, the largest, and the predictions under each change that would help (bf16,
activation checkpointing, a smaller per-device batch with more accumulation, as flags), and the smallest GPU
memory that holds the recipe as configured.
"""

import argparse
import dataclasses
import json
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import torch
from transformers import TrainerCallback

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from analysis.results import read_metrics  # noqa: E402
from benchmarks.scale import commit, machine  # noqa: E402
from irl import memory  # noqa: E402
from irl.config import load_config  # noqa: E402
from irl.runs import last_checkpoint  # noqa: E402
from irl.train import train  # noqa: E402
from tasks.math import TEMPLATES, generate_splits  # noqa: E402

PAPER = REPO / "configs" / "paper"
OUT = REPO / "benchmarks" / "results" / "paper_recipes.jsonl"
WORKDIR = REPO / "build" / "paper_recipes"  # local data and run directories (the MLE run is GAIL's init)
SHAPES = {"gsm8k_": "models/shapes/qwen2.5-0.5b", "t5_base_": "models/shapes/t5-base",
          "t5_large_": "models/shapes/t5-large"}  # fmt: skip
STEPS = 2
MEMORY_GIB = 24
GPUS_GIB = (16, 24, 40, 48, 80, 141)  # memory of common GPUs (V100/T4 16 GB ... H200 141 GB)
GAIL, GAIL_INIT = "gsm8k_gail", "gsm8k_mle"  # GAIL starts from the MLE recipe's checkpoint (its `init`)
TERMS = tuple(f.name for f in dataclasses.fields(memory.Prediction) if f.name not in ("largest_parameter", "peak"))


class StepClock(TrainerCallback):
    """Seconds of each optimizer step: from its first micro-batch to the end of the optimizer's step."""

    def __init__(self):
        self.seconds, self._start = [], None

    def on_step_begin(self, args, state, control, **kwargs):
        self._start = time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs):
        self.seconds.append(time.perf_counter() - self._start)


def recipes(names: str | None) -> list[str]:
    """The recipes to take, GAIL after the MLE recipe it starts from."""
    found = sorted(p.stem for p in PAPER.glob("*.yaml"))
    chosen = found if names is None else names.split(",")
    unknown = sorted(set(chosen) - set(found))
    if unknown:
        raise SystemExit(f"--recipes: {unknown} not in {PAPER} ({found})")
    return sorted(chosen, key=lambda name: name == GAIL)


def shape_of(name: str, shapes: dict) -> str:
    return next(path for prefix, path in shapes.items() if name.startswith(prefix))


def write_gsm8k(directory: Path, config_name: str, train_rows: int, test_rows: int = 8) -> None:
    """A directory laid out as openai/gsm8k: README.md declaring the configuration `config_name`, parquet files
    of question/answer for train and test, from the built-in math task (module docstring)."""
    splits = generate_splits([train_rows, 0, test_rows], TEMPLATES, seed=0)
    for split in ("train", "test"):
        rows = [{"question": ex["prompt"].removeprefix("Question: ").removesuffix("\nAnswer:"),
                 "answer": ex["completion"].strip()} for ex in splits[split]]  # fmt: skip
        (directory / config_name).mkdir(parents=True, exist_ok=True)
        pd.DataFrame(rows).to_parquet(directory / config_name / f"{split}-00000-of-00001.parquet")
    files = "".join(f"  - split: {split}\n    path: {config_name}/{split}-*\n" for split in ("train", "test"))
    (directory / "README.md").write_text(f"---\nconfigs:\n- config_name: {config_name}\n  data_files:\n{files}---\n")


LOCAL_DATA = {"openai/gsm8k": write_gsm8k}  # hub dataset -> writer of a local stand-in with its columns


def local_data(cfg, workdir: Path) -> Path:
    """The local stand-in for cfg.data, with enough training rows for STEPS optimizer steps plus eval_size."""
    rows = STEPS * cfg.per_device_train_batch_size * cfg.gradient_accumulation_steps + cfg.eval_size
    directory = workdir / "data" / f"{cfg.data.replace('/', '--')}-{cfg.dataset_config}-{rows}"
    if not (directory / "README.md").is_file():
        LOCAL_DATA[cfg.data](directory, cfg.dataset_config, rows)
    return directory


def flags(name: str, shape: str, workdir: Path, extra: list[str], init: str | None = None) -> list[str]:
    """The overrides of recipe `name` (module docstring); `extra` after them (toy sizes, in the tests)."""
    model = ["--init", init] if name == GAIL else ["--model", shape]
    return [*model, "--output_dir", str(workdir / "runs" / name), "--report_to", "none", "--max_steps", str(STEPS),
            "--logging_steps", "1", "--eval_strategy", "no", *extra]  # fmt: skip


def predict(name: str, shape: str, workdir: Path, extra: list[str], more: tuple = ()):
    """(config, prediction) of recipe `name` at `shape` with `more` flags (GAIL's `init` the shape: the MLE run it
    starts from has the shape's config)."""
    cfg = load_config(["--config", str(PAPER / f"{name}.yaml"), *flags(name, shape, workdir, extra, shape), *more])
    return cfg, memory.predict_train(cfg)


def why_not(name: str, shape: str, workdir: Path, extra: list[str], cfg, prediction, budget: int) -> dict:
    """What the peak is made of and what would make the recipe fit `budget` bytes: each change added to the ones
    before it (bf16 autocast, activation checkpointing, then the per-device batch halved with the accumulation
    doubled, the batch per optimizer step kept), with its prediction, and the smallest GPU that holds it as is."""
    terms = {f"{k}_bytes": getattr(prediction, k) for k in TERMS}
    largest = max(terms, key=terms.get)
    bound = prediction.peak
    changes = []
    if not cfg.bf16:
        changes.append({"--bf16": "true"})
    if not cfg.activation_checkpointing:
        changes.append({"--activation_checkpointing": "true"})
    batch, accumulation = cfg.per_device_train_batch_size, cfg.gradient_accumulation_steps
    while batch > 1:
        batch, accumulation = batch // 2, accumulation * 2
        changes.append({"--per_device_train_batch_size": str(batch),
                        "--gradient_accumulation_steps": str(accumulation)})
    remedies, applied = [], {}
    for change in changes:
        applied |= change
        more = tuple(x for item in applied.items() for x in item)
        peak = predict(name, shape, workdir, extra, more)[1].peak
        remedies.append({"flags": " ".join(more), "predicted_peak_bytes": peak,
                         "fits": peak <= (1 - memory.HEADROOM) * budget})  # fmt: skip
        if remedies[-1]["fits"]:
            break
    gpu = next((g for g in GPUS_GIB if bound <= (1 - memory.HEADROOM) * g * 2**30), None)
    fix = next((r["flags"] for r in remedies if r["fits"]), None)
    reason = (f"predicted {bound / 2**30:.1f} GiB > {(1 - memory.HEADROOM) * budget / 2**30:.1f} GiB; "
              f"largest term {largest} {terms[largest] / 2**30:.1f} GiB; "
              + (f"fits with {fix}" if fix else "no change above makes it fit")
              + (f"; as configured it needs a GPU of {gpu} GB" if gpu else ""))  # fmt: skip
    return {"largest_term": largest, "remedies": remedies, "smallest_gpu_gib": gpu, "reason": reason}


def measure(name: str, shape: str, workdir: Path, extra: list[str], init: str | None, profiled: bool = True) -> dict:
    """Two optimizer steps of recipe `name` on local data, measured; the run directory is left in workdir. Not
    `profiled`: no peak of torch tensors (peak_bytes None), the steps, their times and the process's resident
    memory only."""
    recipe = ["--config", str(PAPER / f"{name}.yaml"), *flags(name, shape, workdir, extra, init)]
    data = local_data(load_config(recipe), workdir)
    overrides = [*recipe[2:], "--data", str(data)]
    cfg = load_config([*recipe, "--data", str(data)])
    shutil.rmtree(cfg.output_dir, ignore_errors=True)  # a run interrupted before: train refuses to overwrite it
    clock = StepClock()
    start = time.perf_counter()
    run = lambda: train(cfg, callbacks=[clock])  # noqa: E731
    peak, trainer = memory.measured_peak(run) if profiled else (None, run())
    seconds = time.perf_counter() - start
    logged = read_metrics(Path(cfg.output_dir) / "metrics.jsonl").dropna(subset=["train/tokens_per_s"])
    spent = logged["time/update_s"] + (logged["time/sample_s"] if "time/sample_s" in logged else 0)
    tokens = (logged["train/tokens_per_s"] * spent).round().astype(int).tolist()
    return {"peak_bytes": peak, "process_max_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
            "seconds_per_step": clock.seconds, "tokens_per_step": tokens, "run_seconds": seconds,
            "sequences_per_step": cfg.per_device_train_batch_size * cfg.gradient_accumulation_steps,
            "route": "chunked" if trainer.chunked else "materialised", "overrides": " ".join(overrides),
            **({"init": f"{init} (the {GAIL_INIT} recipe after {STEPS} steps)"} if name == GAIL else {})}  # fmt: skip


def gail_init(shape: str, workdir: Path, extra: list[str]) -> str:
    """The checkpoint of the 2-step MLE recipe run in workdir, trained again if a previous process removed it."""
    checkpoint = last_checkpoint(workdir / "runs" / GAIL_INIT)
    if checkpoint is None:
        measure(GAIL_INIT, shape, workdir, extra, None)
        checkpoint = last_checkpoint(workdir / "runs" / GAIL_INIT)
    return str(checkpoint)


def done(out: Path, head: str) -> set:
    rows = [json.loads(line) for line in out.read_text().splitlines() if line.strip()] if out.is_file() else []
    return {r["recipe"] for r in rows if r["commit"] == head}


def take(name: str, args, out: Path, head: str) -> None:
    """Predict recipe `name`; train it for STEPS steps if it fits, else say why not; append its row to `out`."""
    workdir, extra = Path(args.workdir), args.flags.split()
    shapes = dict(item.split("=", 1) for item in args.shapes.split(","))
    budget = int(args.memory_gib * 2**30)
    shape = shape_of(name, shapes)
    cfg, prediction = predict(name, shape, workdir, extra)
    bound = prediction.peak
    fits = bound <= (1 - memory.HEADROOM) * budget
    row = {"recipe": name, "shape": shape, "commit": head, "machine": machine(),
           "predicted_peak_bytes": prediction.peak, "fits": fits, "budget_bytes": budget,
           "budget": f"{args.memory_gib:g} GiB less {memory.HEADROOM:.0%} headroom (--memory_gib)",
           **{f"{k}_bytes": getattr(prediction, k) for k in TERMS}}  # fmt: skip
    if not fits:
        row |= why_not(name, shape, workdir, extra, cfg, prediction, budget)
    else:
        available = memory.device_memory(torch.device("cpu"))
        if bound > (1 - memory.HEADROOM) * available:
            print(f"{name}: fits {args.memory_gib:g} GiB, but only {available / 2**30:.1f} GiB is available now; "
                  f"not started (rerun when the machine is quiet)", flush=True)  # fmt: skip
            return
        if cfg.data not in LOCAL_DATA:
            print(f"{name}: fits, not trained: no local stand-in for data {cfg.data!r} (LOCAL_DATA)", flush=True)
            return
        init = gail_init(shape_of(GAIL_INIT, shapes), workdir, extra) if name == GAIL else None
        row |= measure(name, shape, workdir, extra, init, profiled=name not in args.unprofiled.split(","))
        if name != GAIL_INIT:  # the MLE run stays: GAIL's init
            shutil.rmtree(workdir / "runs" / name, ignore_errors=True)
    with out.open("a") as f:
        f.write(json.dumps(row) + "\n")
    print(json.dumps(row), flush=True)


def main(argv=None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--recipes", help="Comma-separated recipe names (files of configs/paper/); default: all.")
    parser.add_argument("--memory_gib", type=float, default=MEMORY_GIB, help="The memory a recipe must fit.")
    parser.add_argument("--out", default=str(OUT))
    parser.add_argument("--workdir", default=str(WORKDIR), help="Local data and run directories.")
    parser.add_argument("--shapes", default=",".join(f"{k}={v}" for k, v in SHAPES.items()),
                        help="prefix=model path, the model of each recipe whose name starts with prefix.")
    parser.add_argument("--flags", default="", help="More flags for every recipe, after the overrides (toy sizes).")
    parser.add_argument("--unprofiled", default="", help="Comma-separated recipes trained without the profiler that "
                        "measures the peak of torch tensors: the steps, their times and the process's resident memory "
                        "only (the profiler holds an event per operation and allocation: a recipe that samples makes "
                        "millions, more than this machine holds beside the run).")  # fmt: skip
    parser.add_argument("--in_process", action="store_true", help=argparse.SUPPRESS)  # the recipes in this process
    args = parser.parse_args(argv)
    out, head = Path(args.out), commit()
    out.parent.mkdir(parents=True, exist_ok=True)
    recorded = done(out, head)
    for name in recipes(args.recipes):
        if name in recorded:
            continue
        if args.in_process:
            take(name, args, out, head)
            continue
        # a process per recipe: what one leaves allocated (the profiler's buffers, the allocator's cache) is not
        # counted against the next one's available memory, and a recipe the kernel kills stops only itself
        child = subprocess.run([sys.executable, __file__, *(argv if argv is not None else sys.argv[1:]),
                                "--recipes", name, "--in_process"])  # fmt: skip
        if child.returncode:
            print(f"{name}: its process ended with status {child.returncode}; nothing recorded", flush=True)
    if args.in_process:
        return []
    rows = [r for r in map(json.loads, out.read_text().splitlines()) if r["commit"] == head]
    print(f"\n{'recipe':<26} {'predicted':>9} {'measured':>9} {'s/step':>8} {'tokens/step':>11}  fits / reason")
    for r in rows:
        measured = f"{r['peak_bytes'] / 2**30:9.2f}" if r.get("peak_bytes") else f"{'-':>9}"
        step = f"{r['seconds_per_step'][-1]:8.1f} {r['tokens_per_step'][-1]:>11}" if "seconds_per_step" in r else \
            f"{'-':>8} {'-':>11}"  # fmt: skip
        print(f"{r['recipe']:<26} {r['predicted_peak_bytes'] / 2**30:9.2f} {measured} {step}  "
              f"{'fits' if r['fits'] else r['reason']}")  # fmt: skip
    return rows


if __name__ == "__main__":
    main()
