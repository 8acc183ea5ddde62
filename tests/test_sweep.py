"""The decoding sweep on a tiny checkpoint: documented columns, skip-and-resume, same seed same rows, one
process against two under `accelerate launch`, and aggregates recomputed from the sample rows."""

import math
import shutil

import numpy as np
import pandas as pd
import pytest
import torch

from analysis import schema as S
from analysis import sweep as sweep_module
from analysis.cli import sweep_parser
from analysis.metrics import aggregate, self_bleu
from analysis.sweep import SweepError, decoding_grid, format_table, sweep
from irl.generation import Decoding, completion_entropy, completion_lengths, left_padded
from irl.model import load_model, load_tokenizer
from irl.runs import sweep_dir
from tests.test_generation import ENTROPY_ATOL

# 5 prompts in batches of 2: three batches, shared 2 + 1 between two processes.
SWEEP = dict(temperatures=(0, 1.0), beams=(2,), samples=3, limit=5, max_new_tokens=10, batch_size=2)
CELLS = ("samples-greedy.parquet", "samples-t=1.parquet", "samples-beam=2.parquet")


def copy_run(tiny_run, tmp_path, name="run"):
    return shutil.copytree(tiny_run, tmp_path / name)


@pytest.fixture(scope="session")
def swept(tiny_run, tmp_path_factory):
    """(aggregate returned, sweep directory) of one uninterrupted sweep of a copy of the tiny run."""
    run = copy_run(tiny_run, tmp_path_factory.mktemp("swept"))
    return sweep(run, **SWEEP), sweep_dir(run / "checkpoint-3", "test")


def rows(out_dir) -> pd.DataFrame:
    """Every sample row of a sweep directory, without the run path (copies of a run live elsewhere)."""
    tables = [pd.read_parquet(out_dir / name) for name in CELLS]
    return pd.concat(tables, ignore_index=True).drop(columns=S.RUN)


def test_decoding_grid_is_greedy_once_then_temperatures_then_beams():
    grid = decoding_grid((0, 0.5, 1.0), (1, 4, 8))
    assert [d.label for d in grid] == ["greedy", "t=0.5", "t=1", "beam=4", "beam=8"]
    assert [d.samples_per_prompt(5) for d in grid] == [1, 5, 5, 4, 5]
    assert [d.label for d in decoding_grid((0.25,), (2,))] == ["t=0.25", "beam=2"]  # no 0, no 1: no greedy


def test_decoding_grid_crosses_temperatures_with_top_p_and_min_p_for_sampling_only():
    grid = decoding_grid((0, 0.5, 1.0), (1, 2), top_p=(0.9, 1.0), min_p=(0.0, 0.05))
    assert [d.label for d in grid] == [
        "greedy",
        "t=0.5", "t=0.5,min_p=0.05", "t=0.5,top_p=0.9", "t=0.5,top_p=0.9,min_p=0.05",
        "t=1", "t=1,min_p=0.05", "t=1,top_p=0.9", "t=1,top_p=0.9,min_p=0.05",
        "beam=2",
    ]  # fmt: skip
    assert {(d.top_p, d.min_p) for d in grid if d.kind != "sample"} == {(1.0, 0.0)}
    order = pd.DataFrame([{S.KIND: d.kind, S.TEMPERATURE: d.temperature, S.TOP_P: d.top_p, S.MIN_P: d.min_p,
                           S.BEAMS: d.beams, S.DECODING: d.label} for d in reversed(grid)])  # fmt: skip
    ordered = order.sort_values(list(S.GRID_ORDER), key=S.grid_sort_key, kind="stable")[S.DECODING].tolist()
    assert ordered == [d.label for d in grid]  # the aggregate's rows in the grid's order


def test_the_default_cell_of_rewards_is_the_hottest_unfiltered_sampler():
    from analysis.reward_data import default_decoding

    cells = pd.DataFrame({
        S.DECODING: ["t=1,min_p=0.05", "t=1,top_p=0.9", "t=1", "greedy", "t=0.5", "beam=4"],
        S.KIND: ["sample"] * 3 + ["greedy", "sample", "beam"], S.TEMPERATURE: [1, 1, 1, 0, 0.5, 0],
        S.TOP_P: [1, 0.9, 1, 1, 1, 1], S.MIN_P: [0.05, 0, 0, 0, 0, 0], S.BEAMS: [1, 1, 1, 1, 1, 4],
    })  # fmt: skip
    assert default_decoding(cells) == "t=1"
    assert default_decoding(cells.iloc[3:].drop(columns=[S.TOP_P, S.MIN_P])) == "t=0.5"  # a table without them


def test_checkpoints_every_n_keeps_every_nth_and_the_last(tmp_path):
    run = tmp_path / "run"
    for step in (10, 20, 30, 40, 50):
        (run / f"checkpoint-{step}").mkdir(parents=True)
    select = sweep_module.select_checkpoints
    with pytest.MonkeyPatch.context() as patch:  # checkpoints without weights: the listing alone matters here
        patch.setattr(sweep_module.runs, "checkpoints", lambda r: sorted(r.glob("checkpoint-*"), key=lambda p: int(
            p.name.split("-")[1])))  # fmt: skip
        steps = {n: [int(p.name.split("-")[1]) for p in select(run, f"every:{n}")] for n in (1, 2, 3, 5, 9)}
    assert steps == {1: [10, 20, 30, 40, 50], 2: [10, 30, 50], 3: [10, 40, 50], 5: [10, 50], 9: [10, 50]}
    for bad in ("every:0", "every:", "every:-2", "every:1.5"):
        with pytest.raises(SweepError, match="every:N takes a whole number N >= 1"):
            sweep_module.checkpoint_steps(bad)
    parse = sweep_parser().parse_args
    assert parse(["--run", str(run), "--all_checkpoints"]).checkpoints == "all"  # --checkpoints all, by its name
    assert parse(["--run", str(run), "--checkpoints", "every:2"]).checkpoints == "every:2"


def test_sweep_with_top_p_and_min_p_axes(tiny_run, swept, tmp_path):
    """A sweep with the new axes writes one cell per (temperature, top_p, min_p), keyed in its rows; its default
    cell is the same one (same label, same seed, same rows) as a sweep without them."""
    run = copy_run(tiny_run, tmp_path)
    table = sweep(run, **{**SWEEP, "beams": (), "top_p": (0.9, 1.0), "min_p": (0.0, 0.2)})
    labels = ["greedy", "t=1", "t=1,min_p=0.2", "t=1,top_p=0.9", "t=1,top_p=0.9,min_p=0.2"]
    assert table[S.DECODING].tolist() == labels
    assert table[[S.TOP_P, S.MIN_P]].values.tolist() == [[1, 0], [1, 0], [1, 0.2], [0.9, 0], [0.9, 0.2]]
    out_dir = sweep_dir(run / "checkpoint-3", "test")
    filtered = pd.read_parquet(out_dir / "samples-t=1,top_p=0.9,min_p=0.2.parquet")
    assert set(filtered[S.TOP_P]) == {0.9} and set(filtered[S.MIN_P]) == {0.2} and len(filtered) == 15
    same = pd.read_parquet(out_dir / "samples-t=1.parquet").drop(columns=S.RUN)
    pd.testing.assert_frame_equal(same, pd.read_parquet(swept[1] / "samples-t=1.parquet").drop(columns=S.RUN))


def test_a_sweep_directory_written_before_the_filter_axes_reads_and_reruns(tiny_run, swept, tmp_path):
    """Cells and an aggregate without top_p / min_p columns (as written before those axes existed): a rerun with
    the defaults keeps every cell, and the aggregate is rebuilt with the columns at their defaults."""
    run = copy_run(tiny_run, tmp_path)
    out_dir = sweep_dir(run / "checkpoint-3", "test")
    out_dir.parent.mkdir(parents=True)
    shutil.copytree(swept[1], out_dir)
    for path in out_dir.glob("*.parquet"):
        pd.read_parquet(path).drop(columns=[S.TOP_P, S.MIN_P]).to_parquet(path)
    cells = {p.name: p.stat().st_mtime_ns for p in out_dir.glob("samples-*")}
    again = sweep(run, **SWEEP)
    assert {p.name: p.stat().st_mtime_ns for p in out_dir.glob("samples-*")} == cells  # nothing decoded again
    pd.testing.assert_frame_equal(again.drop(columns=S.RUN), swept[0].drop(columns=S.RUN))


def test_quality_threshold_rebuilds_the_aggregate_with_effective_diversity(tiny_run, swept, tmp_path):
    """A rerun with a threshold decodes nothing and adds the effective columns, recomputed here from the rows;
    a rerun without it drops them again (the aggregate says what it was made with)."""
    run = copy_run(tiny_run, tmp_path)
    out_dir = sweep_dir(run / "checkpoint-3", "test")
    out_dir.parent.mkdir(parents=True)
    shutil.copytree(swept[1], out_dir)
    cells = {p.name: p.stat().st_mtime_ns for p in out_dir.glob("samples-*")}
    table = sweep(run, **SWEEP, quality_threshold=0.0).set_index(S.DECODING)
    assert {p.name: p.stat().st_mtime_ns for p in out_dir.glob("samples-*")} == cells
    samples = pd.read_parquet(out_dir / "samples-t=1.parquet")
    groups = [g[S.COMPLETION].tolist() for _, g in samples.groupby(S.PROMPT_ID)]  # exact match >= 0: all
    # rel 1e-6, approx's default: float64 arithmetic on both sides
    assert table.loc["t=1", S.EFFECTIVE_SELF_BLEU] == pytest.approx(np.mean([self_bleu(g) for g in groups]))
    # rel 1e-6, approx's default: float64 arithmetic on both sides
    assert table.loc["t=1", S.EFFECTIVE_DISTINCT_1] == pytest.approx(table.loc["t=1", S.DISTINCT_1])
    assert table.loc["t=1", S.EFFECTIVE_PROMPTS] == 5 and (table[S.QUALITY_THRESHOLD] == 0.0).all()
    plain = sweep(run, **SWEEP)
    assert S.QUALITY_THRESHOLD not in plain
    pd.testing.assert_frame_equal(plain.drop(columns=S.RUN), swept[0].drop(columns=S.RUN))
    with pytest.raises(SweepError, match="--quality_threshold nan"):
        sweep(run, **SWEEP, quality_threshold=float("nan"))


def test_completion_lengths_count_up_to_and_including_the_first_eos():
    eos, pad = 1, 0
    generated = torch.tensor([[5, eos, pad, pad], [5, 6, 7, 8], [eos, pad, pad, pad], [5, eos, 6, eos]])
    assert completion_lengths(generated, eos).tolist() == [2, 4, 1, 2]


def test_generation_lengths_leave_every_prompt_room_for_its_completion():
    """max_new_tokens follows the references (1.5 x the longest, EOS counted), at most half a decoder-only
    model's context; one long prompt no longer shrinks every completion: it keeps its last tokens instead."""

    class Chars:  # one token per character
        def __call__(self, text, add_special_tokens=True):
            return {"input_ids": list(range(len(text)))}

    examples = [{"prompt": "p" * 300, "completion": "c" * 9}, {"prompt": "p", "completion": "c"}]
    assert sweep_module.default_max_new_tokens(Chars(), examples, None) == 15  # ceil(1.5 x (9 + 1))
    assert sweep_module.default_max_new_tokens(Chars(), examples, 256) == 15  # the 300-token prompt is cut, not it
    assert sweep_module.default_max_new_tokens(Chars(), [{"prompt": "", "completion": "c" * 199}], 256) == 128
    assert sweep_module.max_prompt_tokens(15, 256) == 241 and sweep_module.max_prompt_tokens(15, None) is None
    with pytest.raises(SweepError, match="max_new_tokens=256"):
        sweep_module.max_prompt_tokens(256, 256)


def test_aggregate_of_hand_made_samples():
    base = {S.RUN: "r", S.METHOD: "mle", S.SEED: 0, S.STEP: 3}
    sampled = pd.DataFrame(
        {
            **base, S.DECODING: "t=1", S.KIND: "sample", S.TEMPERATURE: 1.0, S.BEAMS: 1,
            S.PROMPT_ID: ["p1", "p1", "p2", "p2"],
            S.COMPLETION: ["a b c", "d e f", "x y", "x y"],
            S.EXACT_MATCH: [1.0, 0.0, 1.0, 1.0],
            S.ENTROPY: [1.0, 2.0, 3.0, 4.0],
        }
    )  # fmt: skip
    greedy = pd.DataFrame(
        {
            **base, S.DECODING: "greedy", S.KIND: "greedy", S.TEMPERATURE: 0.0, S.BEAMS: 1,
            S.PROMPT_ID: ["p1", "p2"], S.COMPLETION: ["a b", "x y"], S.EXACT_MATCH: [1.0, 0.0], S.ENTROPY: [0.5, 1.5],
        }
    )  # fmt: skip
    agg = aggregate(pd.concat([sampled, greedy])).set_index(S.DECODING)
    # sampled: EM mean 3/4, SE clustered by prompt: residual sums p1 -0.5, p2 0.5, sqrt(2/1 * 0.5) / 4 = 0.25;
    # Self-BLEU: p1 disjoint 0, p2 identical 100
    # distinct-1: p1 6/6, p2 2/4; distinct-2: p1 4/4, p2 1/2
    assert agg.loc["t=1", "exact_match_mean"] == 0.75 and agg.loc["t=1", "exact_match_se"] == 0.25
    # rel 1e-6, approx's default: float64 arithmetic on both sides
    assert agg.loc["t=1", S.SELF_BLEU] == pytest.approx(50.0)
    assert agg.loc["t=1", S.DISTINCT_1] == 0.75 and agg.loc["t=1", S.DISTINCT_2] == 0.75
    assert agg.loc["t=1", S.ENTROPY] == 2.5 and agg.loc["t=1", S.N] == 4
    # greedy: one sample per prompt, so no diversity; SE std([1,0]) / sqrt(2) = 0.5
    # rel 1e-6, approx's default: float64 arithmetic on both sides
    assert agg.loc["greedy", "exact_match_mean"] == 0.5 and agg.loc["greedy", "exact_match_se"] == pytest.approx(0.5)
    assert agg.loc["greedy", [S.SELF_BLEU, S.DISTINCT_1, S.DISTINCT_2]].isna().all()
    assert agg.loc["greedy", S.ENTROPY] == 1.0 and agg.loc["greedy", S.N] == 2
    assert not set(S.EFFECTIVE_COLUMNS + (S.EFFECTIVE_PROMPTS, S.QUALITY_THRESHOLD)) & set(agg.columns)
    # effective diversity at exact match >= 1: p1 keeps "a b c" alone (no pair: left out), p2 both "x y": Self-BLEU
    # 100, distinct-1 2/4, distinct-2 1/2 over that one prompt; the diverse p1 was diverse by a wrong answer
    effective = aggregate(pd.concat([sampled, greedy]), [S.EXACT_MATCH], quality_threshold=1.0).set_index(S.DECODING)
    # rel 1e-6, approx's default: float64 arithmetic on both sides
    assert effective.loc["t=1", list(S.EFFECTIVE_COLUMNS)].tolist() == [pytest.approx(100.0), 0.5, 0.5]
    assert effective.loc["t=1", S.EFFECTIVE_PROMPTS] == 1 and effective.loc["t=1", S.QUALITY_THRESHOLD] == 1.0
    assert effective.loc["greedy", list(S.EFFECTIVE_COLUMNS)].isna().all()
    assert effective.loc["greedy", S.EFFECTIVE_PROMPTS] == 0
    # at the metric's floor every sample counts: the plain measures
    floor = aggregate(sampled, [S.EXACT_MATCH], quality_threshold=0.0).iloc[0]
    # rel 1e-6, approx's default: float64 arithmetic on both sides
    assert floor[list(S.EFFECTIVE_COLUMNS)].tolist() == [pytest.approx(50.0), 0.75, 0.75]
    assert floor[S.EFFECTIVE_PROMPTS] == 2


def test_format_table_marks_each_methods_front():
    agg = pd.DataFrame(
        {
            S.RUN: ["a", "a", "a", "b"], S.METHOD: ["mle", "mle", "mle", "iq"], S.STEP: 3,
            S.DECODING: ["greedy", "t=0.5", "t=1", "t=1"], S.KIND: ["greedy", "sample", "sample", "sample"],
            S.TEMPERATURE: [0.0, 0.5, 1.0, 1.0], S.BEAMS: 1,
            "exact_match_mean": [0.9, 0.5, 0.4, 0.1], "exact_match_se": 0.1,
            S.SELF_BLEU: [np.nan, 40.0, 50.0, 90.0], S.DISTINCT_1: 0.5, S.DISTINCT_2: 0.5, S.ENTROPY: 1.0, S.N: 10,
        }
    )  # fmt: skip
    lines = format_table(agg).splitlines()
    # greedy has no Self-BLEU; mle t=0.5 beats mle t=1 on both axes; iq's single point is its own front;
    # a point off the front has an empty marker, so its line ends with n = 10
    assert [line.split()[-1] for line in lines[1:]] == ["-", "*", "10", "*"]
    assert "0.500 ± 0.100" in lines[2] and "40.0" in lines[2]


@pytest.mark.parametrize("decoding", [Decoding("sample", temperature=0.5), Decoding("beam", beams=3)])
def test_entropy_from_generate_logits_matches_a_forward_pass(tiny_run, decoding):
    """Per-sample entropy read off generate's per-step logits (through beam_indices under beam search) equals
    the entropy of a teacher-forced forward pass over the returned left-padded sequences."""
    checkpoint = str(tiny_run / "checkpoint-3")
    tokenizer, model = load_tokenizer(checkpoint), load_model(checkpoint).eval()
    batch = left_padded(tokenizer, ["Question: 1 + 2 =", "Question: a much longer prompt, 3 + 4 ="], "cpu")
    torch.manual_seed(0)
    out = model.generate(
        **batch, **decoding.generate_kwargs(2), max_new_tokens=8, output_logits=True, return_dict_in_generate=True,
        pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id,
    )  # fmt: skip
    width = batch["input_ids"].shape[1]
    lengths = completion_lengths(out.sequences[:, width:], tokenizer.eos_token_id)
    beam_indices = out.beam_indices if decoding.kind == "beam" else None
    entropy = completion_entropy(out.logits, lengths, beam_indices)

    generated = torch.arange(out.sequences.shape[1] - width)[None, :] < lengths[:, None]
    mask = torch.cat([batch["attention_mask"].repeat_interleave(2, dim=0), generated.long()], dim=1)
    with torch.no_grad():
        logits = model(out.sequences, attention_mask=mask, position_ids=(mask.cumsum(-1) - 1).clamp(min=0)).logits
    logp = torch.log_softmax(logits[:, width - 1 : -1], dim=-1)  # (N, G, V): the states of the generated tokens
    per_token = -(logp.exp() * logp).sum(-1)
    expected = torch.stack([per_token[i, :n].mean() for i, n in enumerate(lengths.tolist())])
    torch.testing.assert_close(entropy, expected, atol=ENTROPY_ATOL, rtol=0)  # generate's logits against a forward


def test_sweep_writes_documented_columns(swept):
    returned, out_dir = swept
    assert sorted(p.name for p in out_dir.iterdir()) == sorted([*CELLS, "aggregate.parquet", "manifest.json"])
    samples = {name: pd.read_parquet(out_dir / name) for name in CELLS}
    extra = [S.DECODE_PATH, S.COMPLETION_CALC_IDS, S.ENDED_CALC, S.CALC_FORCED, S.COMPLETION_CALC, S.EXACT_MATCH,
             S.EXACT_MATCH_CALC]  # fmt: skip
    for table in samples.values():
        assert list(table.columns) == [*S.SAMPLE_COLUMNS, *extra]
    # the compact decoder passed its self-check; beam search goes through generate
    assert [set(t[S.DECODE_PATH]) for t in samples.values()] == [{"compact"}, {"compact"}, {"generate"}]
    # 5 prompts: greedy 1 row each, sampling K = 3, beam search min(K, 2) beams
    assert [len(t) for t in samples.values()] == [5, 15, 10]
    assert samples["samples-t=1.parquet"][S.SAMPLE].tolist() == [0, 1, 2] * 5
    assert samples["samples-t=1.parquet"][S.PROMPT_ID].tolist()[:4] == ["math-test-0"] * 3 + ["math-test-1"]
    beam = samples["samples-beam=2.parquet"].iloc[0]
    keys = (S.METHOD, S.SEED, S.STEP, S.DECODING, S.KIND, S.TEMPERATURE, S.TOP_P, S.MIN_P, S.BEAMS)
    assert tuple(beam[list(keys)]) == ("mle", 0, 3, "beam=2", "beam", 0.0, 1.0, 0.0, 2)
    for table in samples.values():
        assert table[S.N_TOKENS].between(1, 10).all() and (table[S.ENTROPY] > 0).all()
    assert returned[S.DECODING].tolist() == ["greedy", "t=1", "beam=2"]
    assert f"{S.EXACT_MATCH_CALC}_mean" in returned


def test_aggregate_matches_rows_recomputed_here(swept):
    returned, out_dir = swept
    for name in CELLS:
        table = pd.read_parquet(out_dir / name)
        agg = returned.set_index(S.DECODING).loc[table[S.DECODING].iloc[0]]
        for metric in (S.EXACT_MATCH, S.EXACT_MATCH_CALC):
            values = table[metric].to_numpy()
            # rel 1e-6, approx's default: float64 arithmetic on both sides
            assert agg[f"{metric}_mean"] == pytest.approx(values.mean())
            # clustered by prompt: the K samples of a prompt are one cluster
            residual = (table[metric] - values.mean()).groupby(table[S.PROMPT_ID]).sum()
            g = len(residual)
            # rel 1e-6, approx's default: float64 arithmetic on both sides
            assert agg[f"{metric}_se"] == pytest.approx(math.sqrt(g / (g - 1) * (residual**2).sum()) / len(values))
        # rel 1e-6, approx's default: float64 arithmetic on both sides
        assert agg[S.ENTROPY] == pytest.approx(table[S.ENTROPY].mean()) and agg[S.N] == len(table)
        groups = [g[S.COMPLETION].tolist() for _, g in table.groupby(S.PROMPT_ID)]
        if name == "samples-greedy.parquet":
            assert math.isnan(agg[S.SELF_BLEU])
        else:
            # rel 1e-6, approx's default: float64 arithmetic on both sides
            assert agg[S.SELF_BLEU] == pytest.approx(np.mean([self_bleu(g) for g in groups]))


def test_rerun_writes_nothing_and_other_settings_fail(swept):
    _, out_dir = swept
    run = out_dir.parents[2]
    before = {p.name: p.stat().st_mtime_ns for p in out_dir.iterdir()}
    again = sweep(run, **SWEEP)
    assert {p.name: p.stat().st_mtime_ns for p in out_dir.iterdir()} == before
    pd.testing.assert_frame_equal(again, swept[0])
    with pytest.raises(SweepError, match="samples: 3 there, 4 now"):
        sweep(run, **{**SWEEP, "samples": 4})


def test_interrupted_sweep_finishes_with_the_same_rows(tiny_run, swept, tmp_path, monkeypatch):
    run = copy_run(tiny_run, tmp_path)
    write = sweep_module.write_parquet

    def write_one_cell_then_die(path, table):
        if any(p.name.startswith("samples-") for p in path.parent.glob("*.parquet")):
            raise KeyboardInterrupt
        write(path, table)

    monkeypatch.setattr(sweep_module, "write_parquet", write_one_cell_then_die)
    with pytest.raises(KeyboardInterrupt):
        sweep(run, **SWEEP)
    out_dir = sweep_dir(run / "checkpoint-3", "test")
    assert sorted(p.name for p in out_dir.glob("*.parquet")) == ["samples-greedy.parquet"]
    monkeypatch.setattr(sweep_module, "write_parquet", write)
    sweep(run, **SWEEP)
    pd.testing.assert_frame_equal(rows(out_dir), rows(swept[1]))
    aggregate_table = pd.read_parquet(out_dir / "aggregate.parquet").drop(columns=S.RUN)
    pd.testing.assert_frame_equal(aggregate_table, swept[0].drop(columns=S.RUN))


def test_same_seed_same_rows_other_seed_other_samples(tiny_run, swept, tmp_path):
    reference = pd.read_parquet(swept[1] / "samples-t=1.parquet").drop(columns=S.RUN)
    for seed, same in ((0, True), (1, False)):
        run = copy_run(tiny_run, tmp_path, f"seed{seed}")
        sweep(run, **{**SWEEP, "temperatures": (1.0,), "beams": (), "seed": seed})
        table = pd.read_parquet(sweep_dir(run / "checkpoint-3", "test") / "samples-t=1.parquet").drop(columns=S.RUN)
        assert table.equals(reference) == same


def test_two_processes_write_the_same_rows(two_processes, swept):
    """`python -m analysis sweep` of a copy of the tiny run on two processes, with SWEEP's settings."""
    main, other = two_processes.stdout["sweep"]
    assert "decoded by 2 process(es)" in main
    assert main.count("beam=2") == 1 and other == ""  # the table is printed once, by the main process
    two = rows(sweep_dir(two_processes.root / "sweep" / "checkpoint-3", "test"))
    # texts exactly; entropies to ENTROPY_ATOL, as launched processes run one thread each (sums may reorder)
    pd.testing.assert_frame_equal(two, rows(swept[1]), check_exact=False, rtol=0, atol=ENTROPY_ATOL)


def test_the_sweep_can_skip_the_compact_decoders_check(tiny_run, swept, tmp_path, monkeypatch):
    """--check_fast_paths false: no self-check runs, the compact decoder decodes, and the rows are the checked
    sweep's (the check draws no random number the samples see)."""
    from irl import generation

    monkeypatch.setattr(generation, "_checked", {})
    checks = []
    check = generation.check_compact
    monkeypatch.setattr(generation, "check_compact", lambda *a, **kw: checks.append(1) or check(*a, **kw))
    run = copy_run(tiny_run, tmp_path)
    args = sweep_parser().parse_args(["--run", str(run), "--check_fast_paths", "false"])
    assert args.check_fast_paths is False
    sweep(run, **{**SWEEP, "beams": ()}, check_fast_paths=args.check_fast_paths)
    assert not checks and not generation._checked
    found = pd.read_parquet(sweep_dir(run / "checkpoint-3", "test") / "samples-t=1.parquet").drop(columns=S.RUN)
    assert set(found[S.DECODE_PATH]) == {generation.COMPACT}
    pd.testing.assert_frame_equal(found, pd.read_parquet(swept[1] / "samples-t=1.parquet").drop(columns=S.RUN))
