"""The runs directory the app's tests read, made by the real chain at toy scale once per test session.

`real_runs` trains, sweeps and scores through the Python APIs the commands use, into a temporary directory:

    irl.train.train          tiny preset, built-in math task (64 train problems), 4 steps, checkpoints at 2 and 4:
                             mle/seed0, mle/seed1, iqlearn/seed0, iqlearn/seed1 (lam 0.1)
    analysis.sweep.sweep     the last checkpoints, 6 test prompts: greedy, t=1 and beam=2 (K=4), exact match
                             and ROUGE-1 (ROUGE varies where the tiny model's exact match is all 0), calculator on;
                             then mle/seed0 and iqlearn/seed0 at both checkpoints, 4 validation prompts: t=1 with
                             top_p 0.9, 1 and min_p 0, 0.05 (K=4), ROUGE-1, effective diversity (threshold 0)
                             (the fronts over training and the sampling filters of the Quality vs diversity page)
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
# quality threshold 0: every sample counts, so the effective axis is drawn whatever the tiny model writes
FILTERED_SWEEP = dict(
    checkpoints="all", temperatures=(1.0,), beams=(), top_p=(0.9, 1.0), min_p=(0.0, 0.05), samples=4,
    split="validation", limit=4, max_new_tokens=24, metrics=["rouge1"], calculator=False, quality_threshold=0.0,
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
        sweep([str(root / run) for run in SCORED_HOSTILE], **FILTERED_SWEEP)
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


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory) -> Path:
    """A pristine 3-step MLE run of the tiny preset on the math task (tests.test_train.tiny's settings); tests
    sweep copies of it and start other runs from its checkpoint-3."""
    from irl.train import train
    from tests.test_train import tiny

    root = tmp_path_factory.mktemp("tiny")
    train(tiny(root, "run"))
    return root / "run"


@pytest.fixture(scope="session")
def quick_findings(tmp_path_factory) -> tuple[Path, list[str]]:
    """`python -m findings run` on the toy quick grid (tests.test_findings.toy_quick_grid), in this process:
    (grid directory, printed lines)."""
    import contextlib
    import io

    from findings.__main__ import main
    from tests.test_findings import toy_quick_grid

    tmp = tmp_path_factory.mktemp("findings")
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        main(["run", "--config", toy_quick_grid(tmp)])
    return tmp / "quick", out.getvalue().strip().splitlines()


@dataclass(frozen=True)
class TwoProcesses:
    root: Path  # each job's outputs under <root>/<job name>
    stdout: dict  # job name -> what each process printed: [process 0's text, process 1's text]


@pytest.fixture(scope="session")
def two_processes(tmp_path_factory, tiny_run) -> TwoProcesses:
    """The commands that the two-process tests check, run in one `accelerate launch` of two CPU processes
    (tests/two_processes.py); each test asserts on its own job's outputs. A failing job fails the tests that
    read any of them, with the launch's stderr."""
    import shutil

    from tests.test_findings import toy_quick_grid
    from tests.test_train import launch_on_two_cpu_processes

    root = tmp_path_factory.mktemp("two_processes")
    tiny_yaml = ["train", "--config", "configs/tiny.yaml"]
    online = ["--sample_max_new_tokens", "8", "--max_steps", "2", "--save_steps", "2", "--eval_steps", "2",
              "--logging_steps", "1"]  # fmt: skip
    jobs = {
        # test_train: offline IQLearn
        "train": ("irl", [*tiny_yaml, "--output_dir", str(root / "train"), "--objective", "iqlearn",
                          "--max_steps", "4", "--save_steps", "4", "--eval_steps", "4"]),  # fmt: skip
        # test_online: online IQLearn on the decoder-only preset; test_seq2seq: on t5-tiny
        "online": ("irl", [*tiny_yaml, "--output_dir", str(root / "online"), "--objective", "iqlearn",
                           "--alpha", "0.1", *online]),  # fmt: skip
        "seq2seq": ("irl", [*tiny_yaml, "--output_dir", str(root / "seq2seq"), "--model", "t5-tiny",
                            "--objective", "iqlearn", "--alpha", "0.1", *online]),  # fmt: skip
        # test_gail: GAIL from the tiny MLE run
        "gail": ("irl", [*tiny_yaml, "--output_dir", str(root / "gail"), "--objective", "gail",
                         "--init", str(tiny_run / "checkpoint-3"), *online]),  # fmt: skip
        # test_sweep: a copy of the tiny run, swept as test_sweep's one-process `swept`
        "sweep": ("analysis", ["sweep", "--run", str(shutil.copytree(tiny_run, root / "sweep")),
                               "--temperatures", "0,1", "--beams", "2", "--samples", "3", "--limit", "5",
                               "--max_new_tokens", "10", "--batch_size", "2"]),  # fmt: skip
        # test_findings: the toy quick grid, run to its report
        "findings": ("findings", ["run", "--config", toy_quick_grid(root)]),
    }
    plan = root / "plan.json"
    plan.write_text(json.dumps([{"name": n, "module": m, "argv": a} for n, (m, a) in jobs.items()]))
    launch_on_two_cpu_processes("tests.two_processes", str(plan), timeout=900)
    printed = {n: [(root / f"{n}.stdout.{k}").read_text() for k in (0, 1)] for n in jobs}
    return TwoProcesses(root, printed)


@pytest.fixture(autouse=True)
def _keep_main_module():
    """Streamlit's AppTest runs the app as sys.modules["__main__"] and leaves it there; a later test that starts
    processes by `spawn` would then re-run the app script (with pytest's argv) in every child. Restore it."""
    import sys

    main = sys.modules.get("__main__")
    yield
    if main is not None:
        sys.modules["__main__"] = main
