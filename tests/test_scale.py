"""benchmarks/scale.py at toy size: the smallest point of the ladder through every stage in both dtypes (a process
each), one JSON line per point with the fields the README's table reads, a table, the curves, and a second run
that resumes (adds nothing)."""

import json
import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import scale  # noqa: E402

FIELDS = {"commit", "machine", "model", "parameters", "vocab", "context", "stage", "route", "dtype", "peak_bytes",
          "predicted_peak_bytes", "seconds_per_token"}  # fmt: skip


def test_smallest_point_through_every_stage_and_resume(tmp_path, capsys):
    out = tmp_path / "scale.jsonl"
    argv = ["--points", "tiny", "--contexts", "32", "--objectives", "mle", "--tokens_per_batch", "256",
            "--out", str(out)]
    rows = scale.main(argv)
    assert sorted((r["model"], r["dtype"], r["stage"], r["route"]) for r in rows) == sorted(
        (model, dtype, stage, route) for model in ("tiny",) for dtype in ("float32", "bfloat16")
        for stage, route in [("train/mle", "chunked"), ("train/mle", "materialised"), ("decode", "greedy"),
                             ("decode", "t=1,K=5"), ("decode", "beam=4"), ("rewards", "chunked"),
                             ("rewards", "materialised")])  # fmt: skip
    for row in map(json.loads, out.read_text().splitlines()):
        assert FIELDS <= set(row) and row["peak_bytes"] > 0 and row["seconds_per_token"] > 0
        # what analysis.rewards.write puts on disk per scored token: tens of bytes (parquet, compressed)
        assert row["stage"] != "rewards" or 10 < row["bytes_written_per_token"] < 1000
    assert out.with_suffix(".png").stat().st_size > 0
    lines = out.read_text()
    scale.main(argv)  # resumes: every point is there for this commit
    assert out.read_text() == lines
    assert "model" in capsys.readouterr().out


def test_the_table_takes_each_stage_from_the_last_commit_that_measured_it(tmp_path):
    """A stage measured again at a later commit replaces that point's earlier rows of the stage, routes renamed
    included; the other stages of the point keep their rows."""
    row = dict(machine="m", model="tiny", context=256, dtype="float32", peak_bytes=1, predicted_peak_bytes=1,
               seconds_per_token=1.0, parameters=1, vocab=1)  # fmt: skip
    rows = [dict(row, commit="a", stage="rewards", route="extract"),
            dict(row, commit="a", stage="decode", route="greedy"),
            dict(row, commit="b", stage="rewards", route="chunked"),
            dict(row, commit="b", stage="rewards", route="materialised"),
            dict(row, commit="a", stage="rewards", route="extract", context=1024)]  # fmt: skip
    out = tmp_path / "scale.jsonl"
    out.write_text("".join(json.dumps(r) + "\n" for r in rows))
    found = [(r["commit"], r["context"], r["stage"], r["route"]) for r in scale.newest(out)]
    assert found == [("a", 256, "decode", "greedy"), ("b", 256, "rewards", "chunked"),
                     ("b", 256, "rewards", "materialised"), ("a", 1024, "rewards", "extract")]


@pytest.mark.parametrize("failure", ["killed", "error"])
def test_a_point_killed_for_memory_is_named_and_the_ladder_goes_on(tmp_path, capsys, monkeypatch, failure):
    """A point whose process dies (the kernel kills it at the machine's memory) or whose unit raises stops no other
    point: each is run, and the failed ones are named at the end, for a rerun of the same command to retry."""
    out = tmp_path / "scale.jsonl"
    calls = []

    def alone(fn, *args):
        calls.append(args[0])
        if args[0] != "small":
            return real_alone(fn, *args)
        # the small point's process ends at once, as one the kernel kills (without a word to the ladder), or its
        # unit raises in the process
        return real_alone(os._exit, 137) if failure == "killed" else real_alone(int, "not a number")

    real_alone = scale.alone
    monkeypatch.setattr(scale, "alone", alone)
    rows = scale.main(["--points", "small,tiny", "--contexts", "32", "--objectives", "mle", "--stages", "decode",
                       "--dtypes", "float32", "--tokens_per_batch", "256", "--out", str(out)])  # fmt: skip
    assert calls == ["small", "tiny"]
    assert {r["model"] for r in rows} == {"tiny"} and all(r["point_seconds"] > 0 for r in rows)
    printed = capsys.readouterr().out
    said = "a process of it was killed" if failure == "killed" else "ValueError: invalid literal for int()"
    assert "points that failed" in printed and f"small at 32 in float32: {said}" in printed


def test_the_machine_names_the_cpu_model_and_its_bf16_instructions():
    """Rows of two CPUs must not read alike: times depend on the model and on which bf16 instructions it has."""
    cpuinfo = Path("/proc/cpuinfo")
    if not cpuinfo.is_file():
        pytest.skip("no /proc/cpuinfo: the machine is named by platform.processor()")
    first = cpuinfo.read_text().split("\n\n")[0]
    fields = {k.strip(): v.strip() for k, v in (line.split(":", 1) for line in first.splitlines() if ":" in line)}
    described = scale.machine()
    assert fields["model name"] in described and f"{os.cpu_count()} cores" in described
    assert ("avx512_bf16" in described) == ("avx512_bf16" in fields["flags"].split())


def test_training_batches_are_padded_to_the_context_as_the_prediction_counts_them(tmp_path):
    """write_data's rows, encoded by the training encoder under the byte-level tokenizer the ladder trains with,
    have PADDED_LENGTHS lengths from the context down: any two rows of different lengths make a padded batch whose
    longest row is at most the context (irl/memory.py counts a padded batch at max_length for B > 1)."""
    from irl.data import encode_example
    from irl.model import load_tokenizer

    context, rows = 64, 20
    path = tmp_path / "data.jsonl"
    scale.write_data(path, rows, context)
    tokenizer = load_tokenizer(scale._preset_tokenizer(tmp_path))
    lengths = []
    for line in path.read_text().splitlines():
        example = json.loads(line)
        encoded, status = encode_example(tokenizer, example["prompt"], example["completion"], context)
        assert status == "ok" and encoded.completion_ids[-1] == tokenizer.eos_token_id  # whole episodes, none cut
        lengths.append(len(encoded.prompt_ids) + len(encoded.completion_ids))
    assert lengths == [context - i % scale.PADDED_LENGTHS for i in range(rows)]


def test_the_report_pairs_the_routes_and_names_the_points_outside_the_tolerance():
    """Hand-made rows: a training pair at 3 and 4 MiB (memory ratio 0.75, time ratio 2 / 1.6 = 1.25), a scoring
    pair, and one row whose prediction is 20% high."""
    mib = 2**20
    row = lambda stage, route, peak, predicted, seconds: dict(  # noqa: E731
        commit="abc1234", model="small", parameters=10, vocab=1024, context=256, dtype="float32", stage=stage,
        route=route, peak_bytes=peak * mib, predicted_peak_bytes=predicted * mib, seconds_per_token=seconds)
    rows = [row("train/mle", "chunked", 3, 3, 2.0), row("train/mle", "materialised", 4, 4.2, 1.6),
            row("rewards", "chunked", 2, 2.4, 1.0), row("rewards", "materialised", 8, 8, 2.0)]
    text = scale.report(rows)
    assert text.splitlines()[0] == "Predicted over measured peak: 3 of 4 rows within 15% (from 1.00 to 1.20)."
    assert text.splitlines()[1] == "- small at 256 in float32, rewards chunked: 1.20 (2 MiB measured, 2 predicted)"
    assert "| small | 256 | float32 | mle | - | 3 | 4 | 0.75 | 1.25 | abc1234 |" in text.splitlines()
    assert "| small | 256 | float32 | 2 | 8 | 0.25 | 0.50 | 2 / 8 | abc1234 |" in text.splitlines()
    assert sum(line.startswith("| small | 10 | 1,024 |") for line in text.splitlines()) == 4  # every row


@pytest.mark.parametrize("written", [None, ""], ids=["missing", "empty"])
def test_a_report_of_no_rows_is_one_line_naming_the_file(tmp_path, capsys, written):
    out = tmp_path / "scale.jsonl"
    if written is not None:
        out.write_text(written)
    with pytest.raises(SystemExit) as exit_:
        scale.main(["--report", "--out", str(out)])
    assert exit_.value.code == 2
    assert capsys.readouterr().err.splitlines()[-1].endswith(f"--report: no ladder rows in {out}")
    assert not out.exists() or out.read_text() == written  # nothing written


def test_head_routes_times_each_route_on_the_same_loss():
    """benchmarks/head_routes.py at toy size: every route timed, the ratios of the medians, and the routes' losses
    equal (float32: to rounding; bf16 products: to bf16 precision)."""
    import head_routes

    for dtype, tolerance in (("float32", 1e-5), ("bfloat16", 2e-2)):
        row = head_routes.measure(rows=12, hidden_size=8, vocab=40, dtype=dtype, reps=2)
        assert (row["dtype"], row["rows"], row["hidden"], row["vocab"], row["reps"]) == (dtype, 12, 8, 40, 2)
        assert all(row[f"{r}_s"] > 0 for r in head_routes.ROUTES)
        assert row["time_ratio"] == round(row["chunked_s"] / row["materialised_s"], 3)
        assert row["loss_max_rel_diff"] < tolerance
