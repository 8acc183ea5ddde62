"""bfloat16 autocast on CPU: training (`--use_cpu true --bf16 true`), the sweep and reward extraction (`--bf16
true`) against float32, their fast paths' self-checks at the bfloat16 tolerance, and the manifests that keep bf16
and float32 results apart.

Every tolerance follows from the dtype and the operations, never from this CPU: one without bf16 instructions
(AVX2 only) multiplies the same bf16-rounded inputs in float32 and rounds the output alike, so it makes the same
roundings up to the order of float32 sums. The model is the tiny preset (irl/model.py PRESETS["tiny"], a Llama).
"""

import json
import math
import os
import shutil
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import torch

from analysis import rewards, scoring
from analysis import schema as S
from analysis.cli import rewards_parser, sweep_parser
from analysis.results import read_jsonl
from analysis.sweep import SweepError, sweep
from irl import generation
from irl import trainer as trainer_module
from irl.generation import Decoding, check_compact, left_padded
from irl.model import PRESETS, load_model, load_tokenizer
from irl.runs import MANIFEST, METRICS, SUMMARY_FILE, rewards_dir, sweep_dir
from irl.train import train
from tests.test_train import tiny

BF16 = torch.bfloat16
# bfloat16 keeps 8 significant bits: one rounding moves a value by at most u = 2**-8 = 3.9e-3 of it (half of
# torch.finfo(torch.bfloat16).eps = 2**-7, the spacing at 1).
U = 2.0**-8
# The products on the path from the input to one logit of the tiny Llama, under autocast (linear, matmul and
# scaled_dot_product_attention run in bf16 on CPU): per layer the q/k/v projections, Q K^T, P V, the output
# projection, gate/up and down (6), then lm_head. Each rounds its two inputs and its output to bf16: 3 roundings.
PRODUCTS = 6 * PRESETS["tiny"]["num_hidden_layers"] + 1  # 13
ROUNDINGS = 3 * PRODUCTS  # 39
# Independent roundings add like a random walk (Higham and Mary, SIAM J. Sci. Comput. 2019: sqrt(n) u, against the
# worst case n u): a logit is within sqrt(39) u = 2.4e-2 of the logits' scale (their largest magnitude) of its
# float32 value, with float32's own roundings (eps 1.2e-7) negligible beside it.
LOGIT_RTOL = math.sqrt(ROUNDINGS) * U
SWEEP = dict(temperatures=(0.0, 1.0), beams=(2,), samples=2, limit=6, max_new_tokens=12)


def logit_scale(checkpoint, sequences) -> float:
    """The largest |logit| of a checkpoint's float32 model over token sequences: the scale LOGIT_RTOL is of."""
    model = load_model(str(checkpoint)).eval()
    with torch.inference_mode():
        return max(model(input_ids=torch.tensor([seq])).logits.abs().max().item() for seq in sequences)


def copy_run(tiny_run, tmp_path, name):
    return shutil.copytree(tiny_run, tmp_path / name)


def test_bf16_flag_reads_as_trainings():
    """`--bf16 true` as `python -m irl train` spells it, `--bf16` alone, and off by default, for both commands."""
    commands = ((sweep_parser(), ["--run", "r"]), (rewards_parser(), ["--checkpoint", "c", "--data", "d"]))
    for parser, required in commands:
        assert parser.parse_args(required).bf16 is False
        assert parser.parse_args([*required, "--bf16", "true"]).bf16 is True
        assert parser.parse_args([*required, "--bf16", "False"]).bf16 is False
        assert parser.parse_args([*required, "--bf16"]).bf16 is True


def test_autocast_runs_on_any_cpu_and_says_when_its_bf16_is_emulated(monkeypatch, caplog):
    """--bf16's context: bf16 products with float32 weights; on a CPU without bf16 instructions (as an AVX2-only
    one reports) the same, with a warning once per process; None changes nothing."""
    layer = torch.nn.Linear(4, 3)
    x = torch.randn(2, 4)
    with scoring.autocast(None, "cpu"):
        assert layer(x).dtype == torch.float32
    with scoring.autocast(scoring.BF16, "cpu"):
        native = layer(x)
    assert native.dtype == BF16 and layer.weight.dtype == torch.float32
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False)
    scoring.cpu_has_bf16.cache_clear()
    try:
        with caplog.at_level("WARNING", logger=scoring.__name__):
            for _ in range(2):  # a sweep enters it once per batch: said once
                with scoring.autocast(scoring.BF16, "cpu"):
                    assert layer(x).dtype == BF16
    finally:
        scoring.cpu_has_bf16.cache_clear()
    assert caplog.text.count("no bfloat16 instructions") == 1


# The tiny checkpoint's logits under bf16 autocast, printed as a list: run here, and in a process whose oneDNN and
# ATen kernels are held to AVX2 (no AVX512-BF16, no AMX), as on a CPU without bf16 instructions.
LOGITS = """
import json, sys, torch
from irl.model import load_model
model = load_model(sys.argv[1]).eval()
with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
    print(json.dumps(model(input_ids=torch.tensor([json.loads(sys.argv[2])])).logits.float().tolist()))
"""


def test_bf16_logits_on_an_avx2_only_cpu_are_those_of_bf16_instructions(tiny_run):
    """With oneDNN and ATen held to AVX2 (ONEDNN_MAX_CPU_ISA, ATEN_CPU_CAPABILITY), bf16 autocast multiplies the
    same bf16-rounded inputs in float32 kernels: the logits agree with this CPU's within the tolerance every bf16
    test here uses (LOGIT_RTOL of the logits' scale)."""
    checkpoint = str(tiny_run / "checkpoint-3")
    sequence = json.dumps(load_tokenizer(checkpoint)("Question: Ava has 3 apples and eats 1.")["input_ids"])
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

    def logits(**env):
        out = subprocess.run([sys.executable, "-c", LOGITS, checkpoint, sequence], env={**os.environ, **env},
                             cwd=root, capture_output=True, text=True, check=True)  # fmt: skip
        return np.array(json.loads(out.stdout.splitlines()[-1]))

    here, avx2 = logits(), logits(ONEDNN_MAX_CPU_ISA="AVX2", ATEN_CPU_CAPABILITY="avx2")
    scale = np.abs(here).max()
    # float32 sums in another order (eps 1.2e-7) move a few products across a bf16 rounding boundary: one more
    # rounding there, propagated as the others are, inside the LOGIT_RTOL budget
    assert np.abs(avx2 - here).max() <= LOGIT_RTOL * scale


def test_training_in_bf16_keeps_float32s_loss_and_checks_its_chunked_loss_at_the_bf16_tolerance(tmp_path, monkeypatch):
    """Three MLE steps of the tiny preset under bf16 autocast (float32 weights, accelerate's autocast): the loss of
    each step is float32's within bf16 rounding, and the chunked head loss's self-check (loss and gradients against
    materialised logits) ran under the same autocast, keyed and judged as bf16, and passed."""
    monkeypatch.setattr(trainer_module, "_checked", {})
    train(tiny(tmp_path, "fp32", use_cpu=True))
    train(tiny(tmp_path, "bf16", use_cpu=True, bf16=True))
    lines = {run: read_jsonl(tmp_path / run / METRICS) for run in ("fp32", "bf16")}
    loss = {run: [line["train/loss"] for line in lines[run] if "train/loss" in line] for run in lines}
    assert len(loss["bf16"]) == len(loss["fp32"]) == 3
    # loss = mean of logsumexp(z) - z_a: within twice the logits' error, 2 LOGIT_RTOL of their scale; the tiny
    # model's logits stay below the loss (checked here: |z| ~ 1 against log 400 = 6), so 2 LOGIT_RTOL of the loss
    # bounds it. The first step's weights are the same (the forward's roundings alone); the next two also carry
    # updates from gradients of the same precision, which Adam moves by at most about lr = 3e-3 per weight,
    # changing the loss by less than that budget.
    prompt = load_tokenizer(str(tmp_path / "fp32" / "checkpoint-3"))("Question: Ava has 3 apples.\nAnswer: 3")
    assert logit_scale(tmp_path / "fp32" / "checkpoint-3", [prompt["input_ids"]]) < min(loss["fp32"])
    np.testing.assert_allclose(loss["bf16"], loss["fp32"], rtol=2 * LOGIT_RTOL)
    assert loss["bf16"] != loss["fp32"]  # autocast did run: bf16 roundings change the loss
    route = next(line for line in lines["bf16"] if "route/loss" in line)
    assert route["route/loss"] == "chunked"
    record = trainer_module._checked[("cpu", BF16, "llama", True)]  # the head trains
    assert record["passed"] and record["tolerance"] == trainer_module.CHECK_TOLERANCE[BF16]
    assert route["check/chunked_loss_max_rel_diff"] == record["check/chunked_loss_max_rel_diff"] <= record["tolerance"]
    assert trainer_module._checked[("cpu", torch.float32, "llama", True)]["tolerance"] == (
        trainer_module.CHECK_TOLERANCE[torch.float32])


def test_shared_prefix_decoding_checks_itself_against_generate_at_the_bf16_tolerance(tiny_run, monkeypatch):
    """Under bf16 autocast the compact decoder's self-check (two rows per prompt: the shared-prefix attention,
    against transformers' generate and its own cache) runs under the same autocast, is keyed as bf16 apart from
    float32's, is judged at the bf16 tolerance, and passes: the same greedy tokens, step logits within it."""
    monkeypatch.setattr(generation, "_checked", {})
    checkpoint = tiny_run / "checkpoint-3"
    model, tokenizer = load_model(str(checkpoint)).eval(), load_tokenizer(str(checkpoint))
    prompts = ["Question: Ava has 3 apples and eats 1. How many are left?\nAnswer:", "Question: 2 + 2?\nAnswer:"]
    batch = left_padded(tokenizer, prompts, "cpu")
    ids = dict(eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    assert generation.shares_prefix(model, model(**batch, use_cache=True).past_key_values)
    with torch.autocast("cpu", dtype=BF16):
        assert generation.compute_dtype(model) == BF16
        bf16 = check_compact(model, batch, **ids)
    fp32 = check_compact(model, batch, **ids)
    assert set(generation._checked) == {("cpu", BF16, "llama"), ("cpu", torch.float32, "llama")}
    assert bf16["tolerance"] == generation.CHECK_TOLERANCE[BF16] and bf16["passed"] and bf16["tokens_equal"]
    assert fp32["tolerance"] == generation.CHECK_TOLERANCE[torch.float32] and fp32["passed"]
    # both routes round to bf16, so they differ by far more than float32's roundings, within the bf16 tolerance
    assert fp32["check/compact_logits_max_rel_diff"] < bf16["check/compact_logits_max_rel_diff"] <= bf16["tolerance"]
    with torch.autocast("cpu", dtype=BF16):
        decoded = generation.decode(model, batch, Decoding("greedy"), 1, max_new_tokens=8, seed=0, **ids)
    assert decoded.path == generation.COMPACT


def test_online_training_in_bf16_checks_its_compact_sampler_as_bf16(tmp_path, monkeypatch):
    """Online IQLearn samples its completions under the run's bf16 autocast, so the compact decoder's self-check
    is keyed and judged as bf16 (the forward's logits are bf16 products), and passes: the sampler stays compact."""
    monkeypatch.setattr(generation, "_checked", {})
    train(tiny(tmp_path, "online", objective="iqlearn", alpha=0.1, sample_max_new_tokens=8, use_cpu=True, bf16=True,
               max_steps=2, save_steps=2))  # fmt: skip
    assert list(generation._checked) == [("cpu", BF16, "llama")]
    record = generation._checked[("cpu", BF16, "llama")]
    assert record["passed"] and record["tolerance"] == generation.CHECK_TOLERANCE[BF16]


def test_a_bf16_sweep_scores_as_float32_and_never_shares_its_directory(tiny_run, tmp_path):
    """The sweep under --bf16 records autocast: bfloat16 in its manifest; its greedy completions that are float32's
    tokens have float32's mean entropy within bf16 rounding; a float32 sweep into a bf16 directory, or a bf16 one
    into a float32 directory, is refused."""
    runs = {name: copy_run(tiny_run, tmp_path, name) for name in ("fp32", "bf16")}
    sweep(runs["fp32"], **SWEEP)
    sweep(runs["bf16"], **SWEEP, bf16=True)
    out = {name: sweep_dir(run / "checkpoint-3", "test") for name, run in runs.items()}
    manifests = {name: json.loads((d / MANIFEST).read_text()) for name, d in out.items()}
    assert manifests["bf16"]["autocast"] == "bfloat16" and manifests["fp32"]["autocast"] is None
    assert {k: v for k, v in manifests["bf16"].items() if k != "autocast"} == {
        k: v for k, v in manifests["fp32"].items() if k != "autocast"
    }
    greedy = {name: pd.read_parquet(d / "samples-greedy.parquet") for name, d in out.items()}
    assert set(greedy["bf16"][S.DECODE_PATH]) == {generation.COMPACT}  # the self-check passed under autocast
    same = [list(a) == list(b) for a, b in zip(greedy["fp32"][S.COMPLETION_IDS], greedy["bf16"][S.COMPLETION_IDS])]
    assert any(same)  # greedy tokens may differ where two logits are within bf16 rounding; compare the same ones
    fp32, bf16 = greedy["fp32"][same], greedy["bf16"][same]
    scale = logit_scale(runs["fp32"] / "checkpoint-3",
                        [list(p) + list(c) for p, c in zip(fp32[S.PROMPT_IDS], fp32[S.COMPLETION_IDS])])  # fmt: skip
    # entropy H(z): dH/dz_i = -p_i (log p_i + H), so |dH| <= max|dz| sum_i p_i |log p_i + H| <= 2 H max|dz|, and
    # max|dz| <= LOGIT_RTOL x scale; a mean over a completion's tokens keeps the bound of its largest H
    bound = 2 * fp32[S.ENTROPY].to_numpy() * LOGIT_RTOL * scale
    assert (np.abs(bf16[S.ENTROPY].to_numpy() - fp32[S.ENTROPY].to_numpy()) <= bound).all()
    with pytest.raises(SweepError, match="autocast: 'bfloat16' there, None now"):
        sweep(runs["bf16"], **SWEEP)
    with pytest.raises(SweepError, match="autocast: None there, 'bfloat16' now"):
        sweep(runs["fp32"], **SWEEP, bf16=True)


def test_bf16_rewards_are_float32s_within_bf16_rounding_and_never_overwrite_them(tiny_run, tmp_path):
    """Rewards of the same episodes (a float32 sweep's samples) extracted in float32 and under --bf16: every
    per-token term within its bound from bf16 rounding of the logits; the manifest and summary record the autocast;
    bf16 rewards into the float32 directory are refused, another --name holds them."""
    run = copy_run(tiny_run, tmp_path, "run")
    sweep(run, **SWEEP)
    checkpoint = run / "checkpoint-3"
    rewards.score_checkpoint(checkpoint, [rewards.load("test", checkpoint)], n_boot=10)
    with pytest.raises(rewards.RewardError, match="autocast: None there, 'bfloat16' now"):
        rewards.score_checkpoint(checkpoint, [rewards.load("test", checkpoint)], n_boot=10, bf16=True)
    rewards.score_checkpoint(checkpoint, [rewards.load("test", checkpoint, name="test-bf16")], n_boot=10, bf16=True)
    dirs = {name: rewards_dir(checkpoint, name) for name in ("test", "test-bf16")}
    assert json.loads((dirs["test-bf16"] / MANIFEST).read_text())["autocast"] == "bfloat16"
    assert json.loads((dirs["test-bf16"] / SUMMARY_FILE).read_text())["autocast"] == "bfloat16"
    assert json.loads((dirs["test"] / SUMMARY_FILE).read_text())["autocast"] is None
    fp32, bf16 = (pd.read_parquet(d / "tokens.parquet") for d in dirs.values())
    keys = [S.EXAMPLE_ID, S.POSITION, S.TOKEN_ID]
    pd.testing.assert_frame_equal(fp32[keys], bf16[keys])  # the same tokens scored
    samples = pd.concat([pd.read_parquet(p) for p in sweep_dir(checkpoint, "test").glob("samples-*.parquet")])
    sequences = [list(p) + list(c) for p, c in zip(samples[S.PROMPT_IDS], samples[S.COMPLETION_IDS])]
    scale = logit_scale(checkpoint, sequences)
    dz = LOGIT_RTOL * scale  # the largest error of a logit
    # q = z_a and v = logsumexp(z) (1-Lipschitz in the largest entry): dz each; log pi = q - v and
    # r = q - gamma v_next (gamma <= 1): 2 dz; entropy: 2 H dz (the sweep test's bound)
    bounds = {S.Q: dz, S.V: dz, S.V_NEXT: dz, S.LOGP: 2 * dz, S.REWARD: 2 * dz,
              S.TOKEN_ENTROPY: 2 * fp32[S.TOKEN_ENTROPY].to_numpy() * dz}  # fmt: skip
    for column, bound in bounds.items():
        a, b = fp32[column].to_numpy(), bf16[column].to_numpy()
        assert (np.isnan(a) == np.isnan(b)).all(), column
        assert (np.abs(a - b)[~np.isnan(a)] <= np.broadcast_to(bound, a.shape)[~np.isnan(a)]).all(), column
    assert not np.array_equal(fp32[S.Q].to_numpy(), bf16[S.Q].to_numpy())  # autocast did run
