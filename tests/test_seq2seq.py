"""Encoder-decoder (T5) models on the shared pipeline.

The batch layout on literal tensors; on a tiny T5 the objectives' identities (lam=0 is MLE bit for bit in loss
and gradients, alpha=0 is offline IQLearn, gamma=1 telescopes) and the NLL against T5's own loss; decoding
(step by step against `generate`, the calculator at prompt_length 1); training (MLE and IQLearn lam=0 end with
the same weights, resume, GAIL, two processes under `accelerate launch`); rewards against a forward pass written
out here; a sweep and rewards of T5 checkpoints with the columns of a decoder-only model's, and every app page
on them.

    .venv/bin/python -m pytest -q tests/test_seq2seq.py
"""

import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from streamlit.testing.v1 import AppTest
from transformers import LogitsProcessor, LogitsProcessorList, T5ForConditionalGeneration

from analysis import rewards
from analysis import schema as S
from analysis.calculator import CalculatorLogitsProcessor
from analysis.reward_data import read_sweep, sweep_rows
from analysis.sweep import sweep
from irl import runs
from irl.config import ConfigError, TrainConfig, load_config
from irl.data import Collator, Encoded, batch_keys, encode, episode_features, model_inputs
from irl.gail import DISCRIMINATOR_DIR, Seq2SeqDiscriminator, load_discriminator
from irl.generation import (Decoded, Decoding, cat_rows, decode, left_padded, pack_samples, pad_together,
                            sample_completions)
from irl.kernels import token_terms
from irl.model import build_preset, context_length, kind_of, load_model, load_tokenizer, train_tokenizer
from irl.objectives import iqlearn, mle, online_iqlearn
from irl.train import train
from tasks.math import TEMPLATES as MATH_TEMPLATES, generate_splits
from tests.test_calculator import tokenizer as char_tokenizer  # noqa: F401 (a fixture)
from tests.test_generation import ENTROPY_ATOL
from tests.test_train import REPO, CrashAt, final_weights, one_thread, two_process_rows

PAD, EOS = 0, 1  # the presets' tokenizer: pad (also T5's decoder start) 0, EOS 1


# ---------------------------------------------------------------------------------------------------------------
# The batch layout


def test_episode_features_collator_and_action_masks_literal():
    """Prompts of 3 and 1 tokens; completions 7 8 EOS (ended) and 7 9 (cut by the length limit, no EOS)."""
    episodes = [Encoded([5, 6, 4], [7, 8, EOS], True), Encoded([9], [7, 9], False)]
    features = [episode_features(e, decoder_start_token_id=PAD) for e in episodes]
    assert features[0] == {"input_ids": [5, 6, 4], "decoder_input_ids": [PAD, 7, 8, EOS],
                           "completion_mask": [0, 1, 1, 1]}
    batch = Collator(PAD, prompts=True, seq2seq=True)(features)
    expected = {
        "input_ids": [[5, 6, 4], [9, PAD, PAD]],  # the encoder's input, right-padded
        "attention_mask": [[1, 1, 1], [1, 0, 0]],
        "decoder_input_ids": [[PAD, 7, 8, EOS], [PAD, 7, 9, PAD]],  # the start token, then the actions
        "decoder_attention_mask": [[1, 1, 1, 1], [1, 1, 1, 0]],
        "completion_mask": [[0, 1, 1, 1], [0, 1, 1, 0]],  # the start token is no action
        "prompt_input_ids": [[5, 6, 4], [PAD, PAD, 9]],  # left-padded for generate
        "prompt_attention_mask": [[1, 1, 1], [0, 0, 1]],
    }
    assert {k: v.tolist() for k, v in batch.items()} == expected
    # sampled completions come back in the same layout, flagged where they were cut
    packed = pack_samples(Decoded([[5, 6, 4], [9]], [[7, 8, EOS], [7, 9]], [True, False], None), PAD,
                          decoder_start_token_id=PAD)  # fmt: skip
    assert packed.pop("truncated").tolist() == [False, True]
    assert {k: v.tolist() for k, v in packed.items()} == {k: expected[k] for k in batch_keys(seq2seq=True)}
    # token_terms on the decoder's ids: entry k is the action decoder_input_ids[k + 1] taken in state (x, y_<=k)
    terms = token_terms(torch.randn(2, 4, 10), batch["decoder_input_ids"], batch["completion_mask"], EOS)
    assert terms.mask.tolist() == [[True, True, True], [True, True, False]]
    assert terms.td_mask.tolist() == [[True, True, True], [True, False, False]]  # the cut one's last action: no s'
    assert terms.v_next[0, 2] == 0  # EOS is terminal
    # an expert batch and a sampled one of other widths stack after padding, encoder and decoder apart
    other = Collator(PAD, seq2seq=True)([episode_features(Encoded([5, 6, 4, 3], [EOS], True), PAD)])
    a, b = pad_together(batch, other, PAD, batch_keys(seq2seq=True))
    both = cat_rows(a, b, batch_keys(seq2seq=True))
    assert both["input_ids"].tolist() == [[5, 6, 4, PAD], [9, PAD, PAD, PAD], [5, 6, 4, 3]]
    assert both["decoder_input_ids"].tolist() == [[PAD, 7, 8, EOS], [PAD, 7, 9, PAD], [PAD, EOS, PAD, PAD]]
    assert both["completion_mask"].tolist() == [[0, 1, 1, 1], [0, 1, 1, 0], [0, 1, 0, 0]]
    assert both["decoder_attention_mask"].tolist() == [[1, 1, 1, 1], [1, 1, 1, 0], [1, 1, 0, 0]]


def test_model_kind_is_derived_from_the_config(tmp_path):
    tokenizer = train_tokenizer(["Question: 1 + 2?\nAnswer: 3"] * 4, 300)
    model = build_preset("t5-tiny", tokenizer, 64, seed=0)
    assert model.config.is_encoder_decoder and model.config.decoder_start_token_id == tokenizer.pad_token_id == PAD
    assert context_length(model.config) is None
    model.save_pretrained(tmp_path / "t5")
    assert kind_of("t5-tiny") == kind_of(str(tmp_path / "t5")) == "seq2seq" and kind_of("tiny") == "causal"
    assert isinstance(load_model(str(tmp_path / "t5")), T5ForConditionalGeneration)
    with pytest.raises(ConfigError, match="model_kind='causal': model 't5-tiny' is 'seq2seq'"):
        train(TrainConfig(output_dir=str(tmp_path / "run"), model="t5-tiny", model_kind="causal"))


# ---------------------------------------------------------------------------------------------------------------
# The objectives on a tiny T5


@pytest.fixture(scope="module")
def t5():
    """(model, tokenizer, batch): t5-tiny, and four math examples in training layout, the last cut by the length
    limit."""
    examples = generate_splits([4, 0, 0], list(MATH_TEMPLATES), 0)["train"]
    tokenizer = train_tokenizer([ex["prompt"] + ex["completion"] for ex in examples], 300)
    model = build_preset("t5-tiny", tokenizer, 160, seed=0)
    features, counts = encode(examples[:3], tokenizer, 512, decoder_start_token_id=PAD)
    assert counts["truncated"] == 0
    prompt_length = len(tokenizer(examples[3]["prompt"])["input_ids"])
    cut, counts = encode(examples[3:], tokenizer, prompt_length + 5, decoder_start_token_id=PAD)
    assert counts["truncated"] == 1
    return model, tokenizer, Collator(PAD, prompts=True, seq2seq=True)(features + cut)


def terms_of(model, batch, **kwargs):
    logits = model(**model_inputs(batch, seq2seq=True)).logits  # (B, T, V) over the decoder's positions
    return token_terms(logits, batch["decoder_input_ids"], batch["completion_mask"], EOS, **kwargs)


def loss_and_grads(model, batch, objective):
    model.zero_grad()
    loss, _ = objective(terms_of(model, batch))
    loss.backward()
    return loss.detach(), {name: p.grad.clone() for name, p in model.named_parameters()}


def test_iqlearn_lam0_is_mle_bit_for_bit(t5):
    model, _, batch = t5
    loss_mle, grads_mle = loss_and_grads(model, batch, mle)
    loss_iq, grads_iq = loss_and_grads(model, batch, lambda t: iqlearn(t, lam=0.0, gamma=0.99))
    assert torch.equal(loss_mle, loss_iq)
    assert all(torch.equal(grads_mle[n], grads_iq[n]) for n in grads_mle) and len(grads_mle) > 10
    loss_td, grads_td = loss_and_grads(model, batch, lambda t: iqlearn(t, lam=0.5, gamma=0.99))
    assert loss_td > loss_mle and not torch.equal(grads_td["decoder.final_layer_norm.weight"],
                                                  grads_mle["decoder.final_layer_norm.weight"])  # fmt: skip


def test_nll_equals_t5s_own_loss(t5):
    """The token mean of -log pi over completion actions is T5's cross-entropy with the completions as labels (its
    decoder input is the labels shifted right after the start token: our decoder_input_ids without the last)."""
    model, _, batch = t5
    with torch.no_grad():
        nll = mle(terms_of(model, batch))[0]
        labels = batch["decoder_input_ids"][:, 1:].masked_fill(batch["completion_mask"][:, 1:] == 0, -100)
        own = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], labels=labels).loss
    # the same float32 logits; our logsumexp/gather mean against T5's cross_entropy: per token the same
    # logsumexp over V (one rounding apart), then a mean of N < 30 actions in another order, relative error
    # <= N * 2**-24 = 1.8e-6 of a loss of ~6, inside atol + rtol * 6 = 7e-6
    torch.testing.assert_close(nll, own, rtol=1e-6, atol=1e-6)


def test_online_alpha0_is_offline_iqlearn_bit_for_bit(t5):
    """Completions sampled from the T5 policy, expert and sampled rows in one forward pass (as compute_loss)."""
    model, tokenizer, batch = t5
    torch.manual_seed(0)
    policy = sample_completions(model, batch["prompt_input_ids"], batch["prompt_attention_mask"], num_samples=2,
                                max_new_tokens=6, temperature=1.0, eos_token_id=EOS, pad_token_id=PAD)  # fmt: skip
    assert policy.pop("truncated").any() and policy["decoder_input_ids"][:, 0].eq(PAD).all()
    keys = batch_keys(seq2seq=True)
    expert, policy = pad_together(batch, policy, PAD, keys)
    both_batch, n = cat_rows(expert, policy, keys), len(expert["input_ids"])

    def offline(terms):
        return iqlearn(terms.rows(slice(0, n)), lam=0.3, gamma=0.9)

    def online(terms):
        return online_iqlearn(terms.rows(slice(0, n)), terms.rows(slice(n, None)), lam=0.3, gamma=0.9, alpha=0.0)

    loss_off, grads_off = loss_and_grads(model, both_batch, offline)
    loss_on, grads_on = loss_and_grads(model, both_batch, online)
    assert torch.equal(loss_off, loss_on) and all(torch.equal(grads_off[k], grads_on[k]) for k in grads_off)
    loss_mix, _ = loss_and_grads(model, both_batch, lambda t: online_iqlearn(
        t.rows(slice(0, n)), t.rows(slice(n, None)), lam=0.3, gamma=0.9, alpha=0.1))  # fmt: skip
    assert loss_mix != loss_off


def test_gamma_one_rewards_telescope(t5):
    """With gamma = 1, sum_t r_t = log pi(y|x) + V(s_0) for a completion that ended, s_0 = (x, decoder start)."""
    model, _, batch = t5
    with torch.no_grad():
        terms = terms_of(model.double(), batch)
    model.float()
    ended = ~(terms.mask & ~terms.td_mask).any(1)  # rows whose every action has a next state
    assert ended.tolist() == [True, True, True, False]
    R = (terms.reward(1.0) * terms.mask).sum(1)
    logp = (terms.logp * terms.mask).sum(1)
    # float64 (model.double()): telescoping exact up to N < 20 roundings of values ~10: 20 * 10 * 2**-53 = 2e-14
    torch.testing.assert_close(R[ended], (logp + terms.v[:, 0])[ended], rtol=0, atol=1e-10)


# ---------------------------------------------------------------------------------------------------------------
# Decoding


class EndAfter(LogitsProcessor):
    """Forces a first token that differs by row (20 + 3 * row: no row has left the batch at the first step), then
    EOS once a row has generated (its first token mod 4) + 2 tokens (the decoder's ids start with the start
    token): rows end at different steps."""

    def __call__(self, input_ids, scores):
        scores = scores.clone()
        for row, ids in enumerate(input_ids.tolist()):
            force = 20 + 3 * row if len(ids) == 1 else EOS if len(ids) - 1 >= ids[1] % 4 + 2 else None
            if force is not None:
                scores[row] = -float("inf")
                scores[row, force] = 0.0
        return scores


PROMPTS = ["Question: 1 + 2?\nAnswer:", "Question: 2?\nAnswer:", "hi", "Question: 10 + 20 + 30?\nAnswer:"]


def run_decode(model, tokenizer, decoding, k, compact, processors=None):
    batch = left_padded(tokenizer, PROMPTS, "cpu")
    return decode(model, batch, decoding, k, max_new_tokens=10, seed=3, eos_token_id=EOS, pad_token_id=PAD,
                  entropy=True, logits_processor=processors, compact=compact)  # fmt: skip


def test_step_by_step_decoding_equals_generate(t5):
    model, tokenizer, _ = t5
    model.eval()
    compact = run_decode(model, tokenizer, Decoding("greedy"), 1, True, LogitsProcessorList([EndAfter()]))
    full = run_decode(model, tokenizer, Decoding("greedy"), 1, False, LogitsProcessorList([EndAfter()]))
    assert compact.completion_ids == full.completion_ids and all(compact.ended)
    assert len({len(c) for c in compact.completion_ids}) > 1  # finished rows left the batch at different steps
    assert compact.entropy == pytest.approx(full.entropy, abs=ENTROPY_ATOL)
    assert compact.prompt_ids[0] == tokenizer(PROMPTS[0])["input_ids"]  # the encoder's input, padding removed
    a = run_decode(model, tokenizer, Decoding("sample", temperature=1.0), 3, True)
    b = run_decode(model, tokenizer, Decoding("sample", temperature=1.0), 3, True)
    assert a.completion_ids == b.completion_ids and len(a.completion_ids) == 12
    for ids, ended in zip(a.completion_ids, a.ended):
        assert ended == (ids[-1] == EOS) and (ended or len(ids) == 10) and EOS not in ids[:-1]
    beams = run_decode(model, tokenizer, Decoding("beam", beams=2), 2, True)  # through generate
    assert len(beams.completion_ids) == 8 and beams.prompt_ids[::2] == compact.prompt_ids
    assert all(ended == (ids[-1] == EOS) for ids, ended in zip(beams.completion_ids, beams.ended))


class Script(LogitsProcessor):
    """A scripted model's log-probabilities: about 0 for the script's character at the decoder's step, -5 for a
    space, -30 elsewhere (log-probabilities, so that under beam search a forced token, scored 0 by the calculator,
    costs a beam no more than the script's own)."""

    def __init__(self, tokenizer, script: str):
        self.tokenizer, self.script = tokenizer, script

    def __call__(self, input_ids, scores):
        step = input_ids.shape[1] - 1  # ids: the start token, then the generated ones
        scores = torch.full_like(scores, -30.0)
        scores[:, self.tokenizer.convert_tokens_to_ids(" ")] = -5.0
        scores[:, self.tokenizer.convert_tokens_to_ids(self.script[step])] = 0.0
        return scores


@pytest.mark.parametrize("decoding, compact", [(Decoding("greedy"), True), (Decoding("greedy"), False),
                                               (Decoding("beam", beams=2), False)])  # fmt: skip
def test_calculator_at_prompt_length_one(char_tokenizer, decoding, compact):  # noqa: F811
    """The calculator on an encoder-decoder model reads the decoder's ids after the start token (prompt_length 1),
    step by step and inside generate, greedy and beam search."""
    script = " 3 * 4 = 99 apples"
    model = build_preset("t5-tiny", char_tokenizer, 64, seed=0).eval()
    batch = left_padded(char_tokenizer, ["Q: 3 * 4?", "Q: three times four?"], "cpu")
    processors = LogitsProcessorList([Script(char_tokenizer, script), CalculatorLogitsProcessor(char_tokenizer, 1)])
    out = decode(model, batch, decoding, 1, max_new_tokens=len(script), seed=0, eos_token_id=EOS, pad_token_id=PAD,
                 logits_processor=processors, compact=compact)  # fmt: skip
    assert char_tokenizer.batch_decode(out.completion_ids) == [" 3 * 4 = 12 apples"] * 2


# ---------------------------------------------------------------------------------------------------------------
# Training, sweep and rewards of T5 runs

TRAIN = dict(
    model="t5-tiny", vocab_size=400, math_sizes=[64, 16, 16], max_length=160, per_device_train_batch_size=4,
    max_steps=3, learning_rate=3e-3, warmup_steps=0, logging_steps=1, eval_steps=3, save_steps=2,
)  # fmt: skip
SWEEP = dict(temperatures=(0, 1.0), beams=(2,), samples=2, limit=4, max_new_tokens=10, batch_size=2)
RUNS = {"mle": dict(objective="mle"), "iqlearn": dict(objective="iqlearn", lam=0.0, gamma=0.9)}


@pytest.fixture(scope="module")
def chain(tmp_path_factory):
    """(runs root, causal run): t5-tiny MLE and IQLearn (lam 0, gamma 0.9) runs of the same seed, swept and
    scored on the sweep's samples and the math preferences; and a 1-step run of the causal tiny preset swept
    and scored alike, outside the root."""
    tmp = tmp_path_factory.mktemp("t5")
    root = tmp / "runs"
    with one_thread():
        for name, objective in RUNS.items():
            train(TrainConfig(output_dir=str(root / name), **{**TRAIN, **objective}))
        causal = tmp / "causal"
        train(TrainConfig(output_dir=str(causal), **{**TRAIN, "model": "tiny", "max_steps": 1, "save_steps": 1}))
        sweep([str(root / name) for name in RUNS] + [str(causal)], **SWEEP)
        for run in [root / name for name in RUNS] + [causal]:
            for data in ("test", "math-preferences"):
                rewards.main(["--checkpoint", str(runs.last_checkpoint(run)), "--data", data, "--n_boot", "20"])
    return root, causal


def test_mle_and_iqlearn_lam0_end_with_the_same_weights(chain):
    root, _ = chain
    a, b = final_weights(root / "mle"), final_weights(root / "iqlearn")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    ckpt = runs.last_checkpoint(root / "iqlearn")
    assert runs.read_config(root / "iqlearn")["model_kind"] == "seq2seq"
    assert runs.checkpoint_config(ckpt)["model_kind"] == "seq2seq"
    tokenizer = load_tokenizer(str(ckpt))
    initial = build_preset("t5-tiny", tokenizer, 160, seed=0).state_dict()
    assert all(not torch.equal(a[k], initial[k]) for k in a)  # every weight moved
    rows = [json.loads(line) for line in (root / "iqlearn" / runs.METRICS).read_text().splitlines()]
    assert sum("train/loss" in r for r in rows) == 3 and any("eval/nll" in r for r in rows)


def test_resume_after_interruption_matches_uninterrupted(chain, tmp_path):
    root, _ = chain
    cfg = dict(output_dir=str(tmp_path / "resumed"), **{**TRAIN, **RUNS["mle"]})
    with one_thread():  # as the uninterrupted run was trained: the same kernels, so the same bits
        with pytest.raises(KeyboardInterrupt):
            train(TrainConfig(**cfg), callbacks=[CrashAt(3)])
        assert [p.name for p in runs.checkpoints(tmp_path / "resumed")] == ["checkpoint-2"]
        train(TrainConfig(**cfg, resume=True))
    a, b = final_weights(root / "mle"), final_weights(tmp_path / "resumed")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_gail_from_a_t5_checkpoint(chain, tmp_path):
    root, _ = chain
    init = str(runs.last_checkpoint(root / "mle"))
    initial = {}
    discriminator = load_discriminator(init)
    assert isinstance(discriminator, Seq2SeqDiscriminator)
    cfg = TrainConfig(output_dir=str(tmp_path / "gail"), objective="gail", init=init, sample_max_new_tokens=8,
                      kl_coef=0.1, **{**TRAIN, "model": init, "max_steps": 2, "save_steps": 2})  # fmt: skip
    with pytest.MonkeyPatch.context() as mp:
        import irl.gail as gail_module

        def recording(path, trust_remote_code=False):
            model = load_discriminator(path, trust_remote_code)
            initial.update({k: v.clone() for k, v in model.state_dict().items()})
            return model

        mp.setattr(gail_module, "load_discriminator", recording)
        trainer = train(cfg)
    logged = [json.loads(line) for line in (tmp_path / "gail" / runs.METRICS).read_text().splitlines()]
    logged = [r for r in logged if "train/loss" in r]
    assert len(logged) == 2 and all(np.isfinite(r["gail/disc_loss"]) and np.isfinite(r["gail/kl"]) for r in logged)
    for name, p in trainer.discriminator.named_parameters():
        assert not torch.equal(p.detach(), initial[name]), f"discriminator {name} did not change"
    policy_initial = load_model(init).state_dict()
    assert any(not torch.equal(p.detach(), policy_initial[n]) for n, p in trainer.model.named_parameters())
    samples = [json.loads(line) for line in (tmp_path / "gail" / runs.SAMPLES).read_text().splitlines()]
    assert len(samples) == 4 and all(s["prompt"].startswith("Question: ") for s in samples)  # the encoder's input
    ckpt = runs.last_checkpoint(tmp_path / "gail")
    batch = Collator(PAD, seq2seq=True)([episode_features(Encoded([5, 6, 7], [8, 9, EOS], True), PAD)])
    saved = load_discriminator(str(ckpt / DISCRIMINATOR_DIR))
    with torch.no_grad():
        assert torch.equal(saved(**model_inputs(batch, True)).logits,
                           trainer.discriminator.eval()(**model_inputs(batch, True)).logits)  # fmt: skip


def test_two_processes_online_iqlearn(two_processes):
    """Online IQLearn on t5-tiny, 2 steps on two processes."""
    rows = two_process_rows(two_processes.root / "seq2seq")
    logged = [r for r in rows if "train/loss" in r]
    assert len(logged) == 2 and all("iq/value_policy" in r and "time/sample_s" in r for r in logged)
    assert isinstance(load_model(str(two_processes.root / "seq2seq" / "checkpoint-2")), T5ForConditionalGeneration)


def forward_terms(model, prompt_ids, completion_ids, ended, gamma):
    """q, v, v_next, logp, reward of one episode, from one unbatched forward pass: logsumexp and the gather
    written out in float64."""
    decoder = [model.config.decoder_start_token_id] + list(completion_ids)
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([list(prompt_ids)]), decoder_input_ids=torch.tensor([decoder])).logits
    z = logits[0].double()  # (T + 1, V): row t is the state (x, y_<=t) choosing y_{t+1}
    top = z.max(-1).values
    v = top + (z - top[:, None]).exp().sum(-1).log()
    n = len(completion_ids)
    q = torch.stack([z[t, completion_ids[t]] for t in range(n)])
    v_next = torch.stack([torch.tensor(0.0, dtype=z.dtype) if completion_ids[t] == EOS else v[t + 1] for t in range(n)])
    if not ended:
        v_next[-1] = float("nan")  # the last token of a cut completion has no next state
    return {S.Q: q, S.V: v[:n], S.V_NEXT: v_next, S.LOGP: q - v[:n], S.REWARD: q - gamma * v_next}


def test_rewards_equal_a_forward_pass_written_out(chain):
    root, _ = chain
    ckpt = runs.last_checkpoint(root / "iqlearn")
    model, tokenizer = rewards.load_checkpoint(ckpt)
    gamma = rewards.checkpoint_gamma(ckpt)
    assert gamma == 0.9
    rows = sweep_rows(read_sweep(runs.sweep_dir(ckpt, "test")))
    first = rows.iloc[0]
    literal = pd.DataFrame({  # an ended completion and the same completion cut before its EOS
        S.EXAMPLE_ID: [len(rows), len(rows) + 1], S.PROMPT_ID: "x", S.PROMPT: first[S.PROMPT], S.COMPLETION: "",
        S.PROMPT_IDS: [first[S.PROMPT_IDS]] * 2, S.COMPLETION_IDS: [[17, 18, 19, EOS], [17, 18, 19]],
        S.ENDED: [True, False],
    })  # fmt: skip
    rows = pd.concat([rows, literal], ignore_index=True)
    found = rewards.extract(model, tokenizer, rows, gamma)
    assert len(found.sequences) == len(rows) and found.counts["truncated"] >= 1
    for _, row in rows.iterrows():
        scored = found.tokens[found.tokens[S.EXAMPLE_ID] == row[S.EXAMPLE_ID]].sort_values(S.POSITION)
        assert scored[S.TOKEN_ID].tolist() == list(row[S.COMPLETION_IDS])
        expected = forward_terms(model, row[S.PROMPT_IDS], list(row[S.COMPLETION_IDS]), row[S.ENDED], gamma)
        # float32 logits of the scorer's padded batch against this unbatched forward (then float64): the same sums
        # (<= d_ff = 192 terms) in another order, a few ulps of values <= 10 (ulp 1e-6); R sums <= 12 of them
        for key, values in expected.items():
            np.testing.assert_allclose(scored[key].to_numpy(), values.numpy(), rtol=1e-5, atol=2e-5, err_msg=key)
        seq = found.sequences[found.sequences[S.EXAMPLE_ID] == row[S.EXAMPLE_ID]].iloc[0]
        assert seq[S.R] == pytest.approx(np.nansum(expected[S.REWARD].numpy()), rel=1e-5, abs=1e-4)
        assert bool(seq[S.TRUNCATED]) == (not row[S.ENDED])


def columns_and_types(path) -> list[tuple[str, str]]:
    table = pd.read_parquet(path)
    return [(c, str(t)) for c, t in table.dtypes.items()]


def test_sweep_and_rewards_write_the_columns_of_a_decoder_only_model(chain):
    root, causal = chain
    causal_ckpt = runs.last_checkpoint(causal)
    for name in RUNS:
        ckpt = runs.last_checkpoint(root / name)
        sweep_files = sorted(p.name for p in runs.sweep_dir(ckpt, "test").iterdir())
        assert sweep_files == sorted(p.name for p in runs.sweep_dir(causal_ckpt, "test").iterdir())
        for file in sweep_files:
            if file.endswith(".parquet"):
                ours, theirs = runs.sweep_dir(ckpt, "test") / file, runs.sweep_dir(causal_ckpt, "test") / file
                assert columns_and_types(ours) == columns_and_types(theirs), file
        # the token record: prompt_ids the encoder's input, completion_ids the decoder's tokens after its start
        # token, up to and including EOS
        samples = read_sweep(runs.sweep_dir(ckpt, "test"))
        tokenizer = load_tokenizer(str(ckpt))
        assert [list(p) for p in samples[S.PROMPT_IDS]] == [tokenizer(t)["input_ids"] for t in samples[S.PROMPT]]
        for ids, ended in zip(samples[S.COMPLETION_IDS], samples[S.ENDED]):
            assert (ids[-1] == EOS) == ended and EOS not in ids[:-1] and (ended or len(ids) == SWEEP["max_new_tokens"])
        for data in ("test", "math-preferences"):
            ours, theirs = runs.rewards_dir(ckpt, data), runs.rewards_dir(causal_ckpt, data)
            assert sorted(p.name for p in ours.iterdir()) == sorted(p.name for p in theirs.iterdir())
            for file in (runs.TOKENS_FILE, runs.SEQUENCES_FILE, runs.PAIRS_FILE):
                if (theirs / file).is_file():
                    assert columns_and_types(ours / file) == columns_and_types(theirs / file), (data, file)
            summary = [json.loads((d / runs.SUMMARY_FILE).read_text()) for d in (ours, theirs)]
            assert summary[0].keys() == summary[1].keys()
            assert summary[0]["gamma"] == (0.9 if name == "iqlearn" else 0.99)


MAIN = str(Path(REPO) / "app" / "main.py")


def app_page(monkeypatch, root, page=None) -> AppTest:
    monkeypatch.setattr(sys, "argv", [MAIN, "--runs-dir", str(root)])
    at = AppTest.from_file(MAIN, default_timeout=60).run()
    if page:
        at.switch_page(page).run()
    assert not at.exception, [e.message for e in at.exception]
    return at


def test_app_pages_render_t5_runs(chain, monkeypatch):
    root, _ = chain
    at = app_page(monkeypatch, root)
    assert sorted(at.dataframe[0].value[S.RUN]) == sorted(RUNS)
    at = app_page(monkeypatch, root, "views/token_rewards.py")
    bodies = [h.proto.body for h in at.get("html") if 'class="token-rewards"' in h.proto.body]
    assert len(bodies) == 2 and all(body.count("<span") > 0 for body in bodies)  # both checkpoints side by side
    at = app_page(monkeypatch, root, "views/quality_diversity.py")
    assert len(at.get("plotly_chart")) >= 2
    at = app_page(monkeypatch, root, "views/rewards_quality.py")
    assert len(at.get("plotly_chart")) >= 1
    at = app_page(monkeypatch, root, "views/samples.py")
    code = [c.value for c in at.code]
    assert code[0].startswith("Question: ") and "####" in code[1] and len(code) > 2  # prompt, reference, samples


def test_lora_on_t5_trains_and_loads_merged(tmp_path):
    """LoRA adapters on a T5 (peft's seq2seq task): only they train, and the checkpoint loads merged on its base
    as a T5 whose logits are the adapted model's."""
    cfg = TrainConfig(output_dir=str(tmp_path / "lora"), objective="iqlearn", use_peft=True, lora_r=4, lora_alpha=8,
                      lora_dropout=0.0, lora_target_modules=["q", "v"], **{**TRAIN, "max_steps": 2, "save_steps": 2})
    trainer = train(cfg)
    assert type(trainer.model).__name__ == "PeftModelForSeq2SeqLM"
    assert all(p.requires_grad == ("lora_" in n) for n, p in trainer.model.named_parameters())
    ckpt = runs.last_checkpoint(tmp_path / "lora")
    merged = load_model(str(ckpt)).eval()
    assert isinstance(merged, T5ForConditionalGeneration)
    batch = Collator(PAD, seq2seq=True)([episode_features(Encoded([5, 6, 7], [8, 9, EOS], True), PAD)])
    with torch.no_grad():  # merged against adapted, float32: as in test_lora (1e-6 expected, 1e-5 = 10x)
        torch.testing.assert_close(merged(**model_inputs(batch, True)).logits,
                                   trainer.model.eval()(**model_inputs(batch, True)).logits, rtol=0, atol=1e-5)


@pytest.mark.parametrize("name", ["t5_tiny", "t5_mle", "t5_iqlearn", "t5_online", "t5_gail"])
def test_t5_configs_parse(name):
    cfg = load_config(["--config", str(Path(REPO) / "configs" / f"{name}.yaml")])
    assert cfg.model.startswith("t5-") or cfg.init.startswith("runs/demo-t5/mle/")
