"""Training steps per second when logging every step against logging every tenth step.

    python benchmarks/logging_overhead.py [--steps 40] [--warmup 5] [--repeats 2] [--objective iqlearn] [--device cpu]

Real training runs through irl/train.py (built-in task, small preset, offline IQLearn by default), identical but
for `logging_steps` (1 against 10), alternating run by run so that drifts of the machine hit both alike. A
callback times the optimizer steps after the warm-up, from the end of step `warmup` to the end of the last step;
the logs written in between (metrics.jsonl, Trainer's printed line, the statistics reduced and read from the
device) fall inside that window, the validation pass and the checkpoint of the last step after it. On CUDA the
window is wall-clock time from one device synchronisation to another (nothing else in it waits for the device on
purpose); on CPU it is the process's CPU time in one thread (`--threads`), which on a shared machine measures the
run and not its neighbours' load.

One JSON line: {"steps_per_s": {"every_step": [...], "every_tenth": [...]}, "ratio": every step over every tenth,
best runs (goal >= 0.95), "device", ...}. `--device cpu` hides GPUs; by default the Trainer's device (CUDA when
present).
"""

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def steps_per_second(cfg, warmup: int) -> float:
    """Optimizer steps per second of one training run, after `warmup` steps."""
    import torch
    from transformers import TrainerCallback

    from irl.train import train

    cuda = torch.cuda.is_available()

    class StepClock(TrainerCallback):
        def __init__(self):
            self.times = {}

        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step in (warmup, cfg.max_steps):
                if cuda:
                    torch.cuda.synchronize()
                self.times[state.global_step] = time.perf_counter() if cuda else time.process_time()

    clock = StepClock()
    train(cfg, callbacks=[clock])
    return (cfg.max_steps - warmup) / (clock.times[cfg.max_steps] - clock.times[warmup])


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=40, help="Optimizer steps per run.")
    parser.add_argument("--warmup", type=int, default=5, help="Steps before the timed window.")
    parser.add_argument("--repeats", type=int, default=2, help="Runs per logging setting, alternating.")
    parser.add_argument("--objective", default="iqlearn")
    parser.add_argument("--model", default="small")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--device", choices=("auto", "cpu"), default="auto", help="cpu: hide GPUs.")
    parser.add_argument("--threads", type=int, default=1, help="CPU: torch threads (CPU time is summed over them).")
    args = parser.parse_args()
    if args.device == "cpu":
        os.environ["CUDA_VISIBLE_DEVICES"] = ""
    import torch

    if not torch.cuda.is_available():
        torch.set_num_threads(args.threads)

    from irl.config import TrainConfig

    settings = {"every_step": 1, "every_tenth": 10}
    rates = {name: [] for name in settings}
    with tempfile.TemporaryDirectory() as tmp:
        for repeat in range(args.repeats):
            for name, logging_steps in settings.items():
                cfg = TrainConfig(
                    output_dir=f"{tmp}/{name}-{repeat}", objective=args.objective, model=args.model, vocab_size=1024,
                    math_sizes=[args.steps * args.batch, 32, 32], max_length=256, seed=0,
                    per_device_train_batch_size=args.batch, max_steps=args.steps, learning_rate=1e-3, warmup_steps=0,
                    logging_steps=logging_steps, eval_steps=args.steps, save_steps=args.steps,
                )
                rates[name].append(steps_per_second(cfg, args.warmup))
    print(json.dumps({
        "steps_per_s": {name: [round(r, 3) for r in values] for name, values in rates.items()},
        "ratio": round(max(rates["every_step"]) / max(rates["every_tenth"]), 3),
        "objective": args.objective,
        "model": args.model,
        "batch": args.batch,
        "timed_steps": args.steps - args.warmup,
        "device": "cuda" if torch.cuda.is_available() else "cpu",
        "clock": "wall" if torch.cuda.is_available() else f"cpu time, {torch.get_num_threads()} thread(s)",
    }), flush=True)


if __name__ == "__main__":
    main()
