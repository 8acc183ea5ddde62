"""The runs directory the app's tests read, made by the real chain at toy scale once per test session.

`real_runs` trains, sweeps and scores through the Python APIs the commands use, into a temporary directory:

    irl.train.train          tiny preset, built-in math task (64 train problems), 4 steps, checkpoints at 2 and 4:
                             mle/seed0, mle/seed1, iqlearn/seed0, iqlearn/seed1 (lam 0.1)
    analysis.sweep.sweep     the last checkpoints, 6 test prompts: greedy, t=1 and beam=2 (K=4), exact match
                             and ROUGE-1 (ROUGE varies where the tiny model's exact match is all 0), calculator on
    analysis.rewards         score_checkpoint on each last checkpoint: the built-in `math-preferences` set and the
                             sweep's samples (`--data test`); on mle/seed0 and iqlearn/seed0 also `hostile.jsonl`,
                             preference pairs whose text holds HOSTILE_TOKENS, and a tie (one pair's chosen ==
                             rejected)

So a change in a writer changes what the app's tests read. About 17 s of CPU time, torch on one thread (more
threads are several times slower when the cores are shared); 66 s of wall time measured with load average 11
on 2 cores.
"""

import json
from dataclasses import dataclass
from pathlib import Path

import pytest

HOSTILE_TOKENS = ("<script>alert(1)</script>", "<img src=x onerror=alert(1)>")
HOSTILE = "hostile"  # name of the scored JSONL (its stem) and of its rewards/<name>/ directory
TRAIN = dict(
    model="tiny", vocab_size=400, math_sizes=[64, 8, 6], max_length=160, per_device_train_batch_size=4, max_steps=4,
    learning_rate=3e-3, warmup_steps=0, logging_steps=1, eval_steps=2, save_steps=2,
)  # fmt: skip
RUNS = {f"{objective}/seed{seed}": (objective, seed) for objective in ("mle", "iqlearn") for seed in (0, 1)}
SWEEP = dict(
    checkpoints="last", temperatures=(0.0, 1.0), beams=(2,), samples=4, split="test", limit=6, max_new_tokens=24,
    metrics=["exact_match", "rouge1"],
)  # fmt: skip
SCORED_HOSTILE = ("mle/seed0", "iqlearn/seed0")
HOSTILE_PAIRS = [
    {"prompt_id": "h0", "prompt": f"Question: what does {HOSTILE_TOKENS[0]} print?\nAnswer:",
     "chosen": f" It prints {HOSTILE_TOKENS[0]} and {HOSTILE_TOKENS[1]}\n#### 1", "rejected": " It prints 2\n#### 2"},
    {"prompt_id": "h1", "prompt": "Question: Ava has 2 apples and picks 2 more. How many?\nAnswer:",
     "chosen": " 2 + 2 = 4\n#### 4", "rejected": " 2 + 2 = 4\n#### 4"},  # a tie: the same text on both sides
    {"prompt_id": "h2", "prompt": "Question: Ava has 3 apples and eats 1. How many are left?\nAnswer:",
     "chosen": " 3 - 1 = 2\n#### 2", "rejected": " 3 + 1 = 4\n#### 4"},
]  # fmt: skip


@dataclass(frozen=True)
class RealRuns:
    root: Path  # the runs directory: <root>/<objective>/seed<seed>/
    checkpoints: dict  # run (path under root) -> its last checkpoint directory
    sweep_split: str  # "test"


def build_real_runs(root: Path) -> RealRuns:
    """Train, sweep and score into `root` (see the module docstring)."""
    import torch

    from analysis import rewards
    from analysis.sweep import sweep
    from irl.config import TrainConfig
    from irl.runs import last_checkpoint
    from irl.train import train

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for run, (objective, seed) in RUNS.items():
            train(TrainConfig(output_dir=str(root / run), objective=objective, seed=seed, **TRAIN))
        sweep([str(root / run) for run in RUNS], **SWEEP)
        hostile = root.parent / f"{HOSTILE}.jsonl"
        hostile.write_text("".join(json.dumps(pair) + "\n" for pair in HOSTILE_PAIRS))
        checkpoints = {run: last_checkpoint(root / run) for run in RUNS}
        for run, ckpt in checkpoints.items():
            data = ["math-preferences", SWEEP["split"], *([str(hostile)] if run in SCORED_HOSTILE else [])]
            rewards.score_checkpoint(ckpt, [rewards.load(d, ckpt) for d in data], n_boot=50)
    finally:
        torch.set_num_threads(threads)
    return RealRuns(root, checkpoints, SWEEP["split"])


@pytest.fixture(scope="session")
def real_runs(tmp_path_factory) -> RealRuns:
    return build_real_runs(tmp_path_factory.mktemp("real") / "runs")


@pytest.fixture(autouse=True)
def _keep_main_module():
    """Streamlit's AppTest runs the app as sys.modules["__main__"] and leaves it there; a later test that starts
    processes by `spawn` would then re-run the app script (with pytest's argv) in every child. Restore it."""
    import sys

    main = sys.modules.get("__main__")
    yield
    if main is not None:
        sys.modules["__main__"] = main
