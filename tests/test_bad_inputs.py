"""Every bad input and damaged file of the commands, table-driven: each ends with one line naming the flag, field
or file and what to do (exit status 1, `error: ...`; argparse's own errors exit 2), no traceback, and every file
that existed before byte-identical after; or, where the damage can be undone exactly (a cell or a log line cut
short by a kill), the command recomputes it and ends with the numbers of an undamaged run.

The fault table truncates each kind of artefact of a run directory (safetensors, parquet, JSONL, YAML, manifest)
and runs each reader of it here (training's --resume, the sweep, the rewards); the app's and the findings
report's readers are tested with their pages and tables.

The commands run in this process (their `main` functions, as `python -m irl|analysis|findings` calls them), where
`sys.exit("error: ...")` prints the message and exits 1; one subprocess checks that mapping once.

    .venv/bin/python -m pytest -q tests/test_bad_inputs.py
"""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch
from safetensors.torch import load_file

from analysis import schema as S
from analysis.__main__ import main as analysis_main
from common.io import atomic_write_text
from findings.__main__ import main as findings_main
from irl import runs
from irl.__main__ import main as irl_main
from irl.model import load_model, load_tokenizer
from tests.test_train import fails, one_thread

REPO = Path(__file__).resolve().parent.parent
TRAIN = dict(
    model="tiny", vocab_size=400, math_sizes=[64, 8, 8], max_length=160, per_device_train_batch_size=4, max_steps=2,
    learning_rate=3e-3, warmup_steps=0, logging_steps=1, eval_steps=0, save_steps=1,
)  # fmt: skip
SWEEP = ["--temperatures", "0,1", "--beams", "1", "--samples", "2", "--limit", "4", "--max_new_tokens", "8",
         "--no-calculator"]  # fmt: skip


def flags(values: dict) -> list[str]:
    out = []
    for k, v in values.items():
        out += [f"--{k}", *map(str, v)] if isinstance(v, list) else [f"--{k}", str(v)]
    return out


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    """A 2-step tiny MLE run (checkpoints at steps 1 and 2) swept on 4 test prompts (greedy and t=1, K=2), made
    by the real commands; tests work on copies (`run_copy`)."""
    root = tmp_path_factory.mktemp("made")
    with one_thread():
        irl_main(["train", *flags({**TRAIN, "output_dir": str(root / "run")})])
        analysis_main(["sweep", "--run", str(root / "run"), *SWEEP])
    return root / "run"


@pytest.fixture
def run_copy(made, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(made, run)
    return run


def snapshot(root: Path) -> dict:
    return {p.relative_to(root): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def truncate(path: Path) -> None:
    """Cut a file to half its bytes, as a full disk or a killed copy leaves it."""
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


CKPT = f"{runs.CHECKPOINT_PREFIX}2"
CELL = f"{CKPT}/{runs.SWEEP}/test/{runs.cell_file('t=1')}"


def _write(rel: str, text: str):
    def write(run):
        (run / rel).parent.mkdir(parents=True, exist_ok=True)
        (run / rel).write_text(text)

    return write


def _truncate(rel: str):
    return lambda run: truncate(run / rel)


def _cut_after(rel: str, text: str):
    """Cut a file just after the first `text` in it."""

    def cut(run):
        data = (run / rel).read_text()
        (run / rel).write_text(data[: data.index(text) + len(text)])

    return cut


def _half_lines(rel: str):
    """Keep the first half of a file's lines: a cut that leaves valid YAML, without its last fields."""

    def cut(run):
        lines = (run / rel).read_text().splitlines(keepends=True)
        (run / rel).write_text("".join(lines[: len(lines) // 2]))

    return cut


def _train(run, *extra):
    return ["train", *flags({**TRAIN, "output_dir": str(run)}), *extra]


def _sweep(run, *extra):
    return ["sweep", "--run", str(run), *SWEEP, *extra]


def _rewards(run, *extra):
    return ["rewards", "--checkpoint", str(run / CKPT), "--n_boot", "5", *extra]


# (case, damage done to the run copy, the command's argv, exit status, words its message holds)
REFUSED = [
    # training: the run directory and its config
    ("output_dir is a file", lambda run: (run.parent / "file").write_text("x"),
     lambda run: _train(run.parent / "file"), 1, ["output_dir=", "is a file"]),
    ("output_dir under a file", lambda run: (run.parent / "file").write_text("x"),
     lambda run: _train(run.parent / "file" / "run"), 1, ["output_dir=", "a file, not a directory"]),
    ("--config missing", None, lambda run: _train(run.parent / "new", "--config", str(run.parent / "nope.yaml")),
     1, ["--config", "nope.yaml", "no such file"]),
    ("--config not YAML", lambda run: (run.parent / "bad.yaml").write_text("objective: mle\nlam: [0.1\n"),
     lambda run: _train(run.parent / "new", "--config", str(run.parent / "bad.yaml")), 1,
     ["--config", "bad.yaml", "not valid YAML"]),
    ("--config empty", lambda run: (run.parent / "empty.yaml").write_text(""),
     lambda run: _train(run.parent / "new", "--config", str(run.parent / "empty.yaml")), 1,
     ["empty.yaml", "expected a mapping", "empty file"]),
    # training --resume over damaged files of the run (fault table: YAML, safetensors, JSONL)
    ("--resume, config.yaml cut short", _half_lines(runs.CONFIG), lambda run: _train(run, "--resume", "true"), 1,
     ["config.yaml", "cut short"]),
    ("--resume, config.yaml not YAML", _write(runs.CONFIG, "objective: [mle\n"),
     lambda run: _train(run, "--resume", "true"), 1, ["config.yaml", "not valid YAML"]),
    ("--resume, weights cut short", _truncate(f"{CKPT}/model.safetensors"),
     lambda run: _train(run, "--resume", "true"), 1, [f"{CKPT}/model.safetensors", "damaged", "delete its checkpoint"]),
    ("--resume, metrics.jsonl damaged inside",
     lambda run: (run / runs.METRICS).write_text("{\"step\": 0}\n{\"st\n{\"step\": 1}\n"),
     lambda run: _train(run, "--resume", "true"), 1, [runs.METRICS, "line 2 is not JSON"]),
    # sweep arguments: refused before any work, so no manifest records them
    ("negative temperature", None, lambda run: _sweep(run, "--temperatures=-0.5,1"), 1,
     ["--temperatures", "-0.5", ">= 0"]),
    ("beam width 0", None, lambda run: _sweep(run, "--beams", "0"), 1, ["--beams", "[0]", ">= 1"]),
    ("beam width 2.5", None, lambda run: _sweep(run, "--beams", "2.5"), 2, ["--beams", "2.5"]),
    ("--limit -3", None, lambda run: _sweep(run, "--limit", "-3"), 1, ["--limit -3", ">= 1"]),
    ("--limit 0", None, lambda run: _sweep(run, "--limit", "0"), 1, ["--limit 0", ">= 1"]),
    ("--samples 0", None, lambda run: _sweep(run, "--samples", "0"), 1, ["--samples 0", ">= 1"]),
    ("--batch_size 0", None, lambda run: _sweep(run, "--batch_size", "0"), 1, ["--batch_size 0", ">= 1"]),
    ("--max_new_tokens 0", None, lambda run: _sweep(run, "--max_new_tokens", "0"), 1, ["--max_new_tokens 0"]),
    ("--checkpoints abc", None, lambda run: _sweep(run, "--checkpoints", "abc"), 1,
     ["--checkpoints 'abc'", "last, all, every:N, or steps"]),
    ("--checkpoints every:0", None, lambda run: _sweep(run, "--checkpoints", "every:0"), 1,
     ["--checkpoints 'every:0'", "every:N", ">= 1"]),
    ("--checkpoints every:x", None, lambda run: _sweep(run, "--checkpoints", "every:x"), 1,
     ["--checkpoints 'every:x'", "every:N", ">= 1"]),
    ("--top_p 0", None, lambda run: _sweep(run, "--top_p", "0,0.9"), 1, ["--top_p [0.0]", "(0, 1]"]),
    ("--top_p 1.5", None, lambda run: _sweep(run, "--top_p", "1.5"), 1, ["--top_p [1.5]", "(0, 1]"]),
    ("--min_p 1", None, lambda run: _sweep(run, "--min_p", "0,1"), 1, ["--min_p [1.0]", "[0, 1)"]),
    ("--min_p -0.1", None, lambda run: _sweep(run, "--min_p=-0.1"), 1, ["--min_p [-0.1]", "[0, 1)"]),
    # sweep over damaged files (fault table: YAML, safetensors, manifest)
    ("sweep, config.yaml not YAML", _write(runs.CONFIG, "data: [math\n"), lambda run: _sweep(run), 1,
     ["config.yaml", "not valid YAML"]),
    ("sweep, config.yaml cut in a number", _cut_after(runs.CONFIG, "\nmax_length: 16"), lambda run: _sweep(run), 1,
     ["config.yaml", "cut short"]),  # it parses, max_length 16 (of 160), without the fields after it
    ("sweep, config.yaml cut short", _half_lines(runs.CONFIG), lambda run: _sweep(run), 1,
     ["config.yaml", "cut short", "no field"]),  # it still parses, without the run's own fields (they come last)
    ("sweep, config.yaml cut in its last value",
     lambda run: (run / runs.CONFIG).write_bytes((run / runs.CONFIG).read_bytes()[:-1]), lambda run: _sweep(run), 1,
     ["config.yaml", "cut short", "last line"]),
    ("sweep, weights cut short", _truncate(f"{CKPT}/model.safetensors"), lambda run: _sweep(run), 1,
     [f"{CKPT}/model.safetensors", "damaged"]),
    ("sweep, manifest cut short", _truncate(f"{CKPT}/{runs.SWEEP}/test/{runs.MANIFEST}"), lambda run: _sweep(run), 1,
     [runs.MANIFEST, "damaged", "not JSON"]),
    # rewards (fault table: safetensors, YAML, parquet, manifest)
    ("rewards, weights cut short", _truncate(f"{CKPT}/model.safetensors"), lambda run: _rewards(run, "--data", "test"),
     1, [f"{CKPT}/model.safetensors", "damaged"]),
    ("rewards, checkpoint config cut short", _half_lines(f"{CKPT}/{runs.CHECKPOINT_CONFIG}"),
     lambda run: _rewards(run, "--data", "test"), 1, [runs.CHECKPOINT_CONFIG, "cut short"]),
    ("rewards, checkpoint config not YAML", _write(f"{CKPT}/{runs.CHECKPOINT_CONFIG}", "gamma: [1\n"),
     lambda run: _rewards(run, "--data", "test"), 1, [runs.CHECKPOINT_CONFIG, "not valid YAML"]),
    ("rewards, samples cut short", _truncate(CELL), lambda run: _rewards(run, "--data", "test"), 1,
     [runs.cell_file("t=1"), "damaged parquet", "analysis sweep"]),
    ("rewards, manifest cut short", _write(f"{CKPT}/{runs.REWARDS}/damaged/{runs.MANIFEST}", '{"data": "te'),
     lambda run: _rewards(run, "--data", "test", "--name", "damaged"), 1, [runs.MANIFEST, "damaged", "not JSON"]),
    ("preferences without chosen",
     _write("../pairs.jsonl", json.dumps({"prompt": "Question: 1 + 1?\nAnswer:", "rejected": " 3"}) + "\n"),
     lambda run: _rewards(run, "--data", str(run.parent / "pairs.jsonl")), 1,
     ["pairs.jsonl", "missing field 'chosen'"]),
    # findings
    ("findings --config missing", None, lambda run: ["run", "--config", str(run.parent / "nope.yaml")], 1,
     ["--config", "nope.yaml", "no such file"]),
    ("findings --config not YAML", lambda run: (run.parent / "grid.yaml").write_text("output_dir: [x\n"),
     lambda run: ["run", "--config", str(run.parent / "grid.yaml")], 1, ["--config", "grid.yaml", "not valid YAML"]),
]  # fmt: skip


@pytest.mark.parametrize("case, damage, argv, status, words", REFUSED, ids=[c[0] for c in REFUSED])
def test_refused_with_one_line_naming_what_to_fix(run_copy, capsys, case, damage, argv, status, words):
    if damage is not None:
        damage(run_copy)
    before = snapshot(run_copy.parent)
    argv = argv(run_copy)
    entry = {"train": irl_main, "sweep": analysis_main, "rewards": analysis_main}.get(argv[0], findings_main)
    message = fails(capsys, entry, argv, status)
    for word in words:
        assert word in message, (word, message)
    assert snapshot(run_copy.parent) == before  # nothing written, nothing changed


def test_output_dir_not_writable(tmp_path, capsys):
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o555)
    try:
        if os.access(locked, os.W_OK):  # root writes in a read-only directory; nobody makes files in sysfs
            locked = Path("/sys/kernel")
            if not locked.is_dir():
                pytest.skip("this user writes in read-only directories and there is no /sys/kernel")
        message = fails(capsys, irl_main, _train(locked / "run"))
        assert f"output_dir={str(locked / 'run')!r}: cannot write in {locked}" in message
    finally:
        (tmp_path / "locked").chmod(0o755)


def test_an_error_is_one_line_on_stderr_and_status_1_from_the_shell(run_copy):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    out = subprocess.run([sys.executable, "-m", "analysis", *_sweep(run_copy, "--limit", "-3")], cwd=REPO, env=env,
                         capture_output=True, text=True, timeout=120)  # fmt: skip
    assert out.returncode == 1 and out.stderr.strip().splitlines() == ["error: --limit -3: must be a whole number >= 1"]


# ---------------------------------------------------------------------------------------------------------------
# Damage that is undone exactly


def test_sweep_decodes_a_cut_short_cell_again_and_rebuilds_the_aggregate(made, run_copy, capsys):
    sweep = run_copy / CKPT / runs.SWEEP / "test"
    truncate(sweep / runs.cell_file("t=1"))
    truncate(sweep / runs.AGGREGATE)
    (sweep / runs.cell_file("greedy")).unlink()
    with one_thread():  # as `made` was swept: the same kernels, so the same entropies bit for bit
        analysis_main(_sweep(run_copy))
    assert "damaged" in capsys.readouterr().out
    original = made / CKPT / runs.SWEEP / "test"
    for name in (runs.cell_file("t=1"), runs.cell_file("greedy"), runs.AGGREGATE):
        # the stored run column is where each table was made; everything else the same, bit for bit
        a, b = (pd.read_parquet(d / name).drop(columns=S.RUN) for d in (original, sweep))
        pd.testing.assert_frame_equal(a, b, check_exact=True)


def test_sweep_rerun_in_a_copied_run_prints_the_copy(made, run_copy, capsys):
    before = snapshot(run_copy)
    analysis_main(_sweep(run_copy))
    out = capsys.readouterr().out
    assert str(run_copy) in out and str(made) not in out
    assert snapshot(run_copy) == before  # every cell kept


def test_resume_drops_a_half_written_last_log_line_and_ends_as_the_uninterrupted_run(made, run_copy):
    """A kill while appending step 2's log line: checkpoint-2 was not saved yet, the line is cut short."""
    shutil.rmtree(run_copy / CKPT)
    rows = [json.loads(line) for line in (run_copy / runs.METRICS).read_text().splitlines()]
    kept = [r for r in rows if r["step"] <= 1]
    (run_copy / runs.METRICS).write_text("".join(json.dumps(r) + "\n" for r in kept) + '{"step": 2, "train/lo')
    with one_thread():  # as `made` was trained: the same kernels
        irl_main(_train(run_copy, "--resume", "true"))
    a, b = (load_file(str(run / CKPT / "model.safetensors")) for run in (made, run_copy))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    # every process records once which route its loss takes ("route/loss"), a resumed one too: the other lines
    # are the uninterrupted run's
    logged = [[json.loads(line) for line in (run / runs.METRICS).read_text().splitlines()] for run in (made, run_copy)]
    steps = [[row["step"] for row in rows if "route/loss" not in row] for rows in logged]
    assert steps[0] == steps[1]  # the cut line dropped, step 2's lines written once
    assert [sum("route/loss" in row for row in rows) for rows in logged] == [1, 2]


def test_a_failed_run_leaves_nothing_that_feeds_the_next(made, tmp_path, capsys):
    """A run that fails after training its tokenizer (every example longer than max_length) leaves tokenizer/; the
    next run in that directory, with another vocab_size, trains its own."""
    run = tmp_path / "run"
    failed = {**TRAIN, "output_dir": str(run), "vocab_size": 300, "max_length": 8, "overlong": "drop"}
    assert "no training example left" in fails(capsys, irl_main, ["train", *flags(failed)])
    assert (run / "tokenizer").is_dir() and not (run / runs.CONFIG).exists()
    with one_thread():
        irl_main(_train(run, "--max_steps", "1"))
    for name in ("tokenizer.json", "tokenizer_config.json"):
        assert (run / "tokenizer" / name).read_bytes() == (made / "tokenizer" / name).read_bytes()
    assert len(load_tokenizer(str(run / f"{runs.CHECKPOINT_PREFIX}1"))) == len(load_tokenizer(str(made / CKPT)))


# ---------------------------------------------------------------------------------------------------------------
# Rewards on odd completions, ties, and what a killed write leaves


def test_empty_and_whitespace_completions_are_scored_as_the_tokens_they_are(run_copy, tmp_path):
    """"" is the episode of a single EOS action: r = Q(s_0, EOS) - gamma * 0 = its logit (V is 0 after EOS);
    " \\n" is its whitespace tokens then EOS."""
    ckpt = run_copy / CKPT
    prompt = "Question: Ava has 2 apples. How many?\nAnswer:"
    data = tmp_path / "odd.jsonl"
    data.write_text("".join(json.dumps({"prompt": prompt, "completion": c}) + "\n" for c in ("", " \n", " 2")))
    analysis_main(["rewards", "--checkpoint", str(ckpt), "--data", str(data), "--n_boot", "5", "--name", "odd"])
    out = runs.rewards_dir(ckpt, "odd")
    summary = json.loads((out / runs.SUMMARY_FILE).read_text())
    assert summary["counts"]["scored"] == 3 and "empty_completion" not in summary["counts"]
    seqs = pd.read_parquet(out / runs.SEQUENCES_FILE).set_index(S.COMPLETION)
    tokenizer, model = load_tokenizer(str(ckpt)), load_model(str(ckpt)).eval()
    assert seqs.loc["", S.LENGTH] == 1
    assert seqs.loc[" \n", S.LENGTH] == len(tokenizer(" \n", add_special_tokens=False)["input_ids"]) + 1
    with torch.no_grad():
        logits = model(torch.tensor([tokenizer(prompt)["input_ids"]])).logits[0, -1]
    # float32 logits of the scorer's batched forward against this unbatched one: the same sums (of at most
    # d_ff = 192 terms of size O(1)) in another order, so within 192 float32 ulps of 1
    assert seqs.loc["", S.R] == pytest.approx(logits[tokenizer.eos_token_id].item(), rel=0, abs=192 * 2**-23)


def test_pairs_all_tied_warn_in_one_line(run_copy, tmp_path, capsys):
    data = tmp_path / "ties.jsonl"
    pair = {"prompt": "Question: 1 + 1?\nAnswer:", "chosen": " 2\n#### 2", "rejected": " 2\n#### 2"}
    data.write_text(json.dumps(pair) + "\n" + json.dumps({**pair, "prompt": "Question: 2 + 1?\nAnswer:"}) + "\n")
    analysis_main(["rewards", "--checkpoint", str(run_copy / CKPT), "--data", str(data), "--n_boot", "5"])
    err = capsys.readouterr().err
    warnings = [line for line in err.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1 and "ties.jsonl" in warnings[0] and "0.5" in warnings[0]


def test_a_killed_atomic_write_leaves_no_temporary_file_after_the_next(tmp_path):
    target = tmp_path / "out" / "summary.json"
    target.parent.mkdir()
    stale = target.parent / f".{target.name}.k1ll3d.tmp"  # what kill -9 inside atomic_write leaves
    stale.write_text("{\"half\": ")
    other = target.parent / ".sequences.parquet.k1ll3d.tmp"  # another file's: not this write's to remove
    other.write_text("x")
    atomic_write_text(target, "{}\n")
    assert target.read_text() == "{}\n" and not stale.exists() and other.exists()
