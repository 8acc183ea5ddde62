"""Token reward definitions side by side (analysis/definitions.py): each against an independent recomputation
from a plain forward pass of a tiny trained checkpoint, the default reference against the run's logged initial
weights, and best-of-K and the per-definition agreement on literal frames with hand-computed values.

    .venv/bin/python -m pytest -q tests/test_definitions.py
"""

import shutil

import numpy as np
import pandas as pd
import pytest
import torch

from analysis import definitions
from analysis import schema as S
from analysis.stats import pairwise_accuracy, wilson_interval


def test_add_definitions_by_hand():
    # example 0 (prompt a): two tokens, the second cut (no next state); example 1 (prompt a): one EOS token
    tokens = pd.DataFrame({
        S.EXAMPLE_ID: [0, 0, 1], S.POSITION: [0, 1, 0], S.Q: [1.0, 2.0, 3.0], S.V: [2.0, 2.5, 4.0],
        S.V_NEXT: [2.5, np.nan, 0.0], S.LOGP: [-1.0, -0.5, -1.0], S.REWARD: [-1.475, np.nan, 3.0],
        S.LOGP_REF: [-2.0, -1.0, -0.5],
    })  # fmt: skip
    sequences = pd.DataFrame({S.EXAMPLE_ID: [0, 1], S.PROMPT_ID: ["a", "a"], S.R: [-1.475, 3.0],
                              S.R_MEAN: [-1.475, 3.0], S.LOGP_SUM: [-1.5, -1.0]})  # fmt: skip
    tokens, sequences = definitions.add_definitions(tokens, sequences, beta=2.0)
    np.testing.assert_allclose(tokens[S.REWARD_GAMMA1], [1.0 - 2.5, np.nan, 3.0])  # q - v_next
    np.testing.assert_allclose(tokens[S.REWARD_IMPLICIT], [2.0 * 1.0, 2.0 * 0.5, 2.0 * -0.5])  # beta (logp - ref)
    b = (-1.475 + 3.0) / 2  # the prompt's mean R_mean
    np.testing.assert_allclose(tokens[S.REWARD_BASELINE], [-1.475 - b, np.nan, 3.0 - b])
    np.testing.assert_allclose(sequences[S.R_GAMMA1], [-1.5, 3.0])  # the cut token adds nothing
    np.testing.assert_allclose(sequences[S.R_IMPLICIT], [3.0, -1.0])  # every token has one
    np.testing.assert_allclose(sequences[S.R_BASELINE], [-1.475 - b, 3.0 - b])


def test_best_of_k_by_hand():
    rows = []
    for prompt, quality, score in [
        ("a", [1, 0, 0, 0], [5, 1, 2, 3]),  # the best sample scored highest: 1
        ("b", [3, 2, 1, 0, 0], [0, 4, 1, 1, 2]),  # 5 subsets of 4: only the one without sample 0 is right: 1/5
        ("c", [1, 0, 0, 0], [2, 2, 0, 0]),  # the best tied for the highest score with another: 1/2
        ("d", [1, 1, 0, 0], [9, 0, 0, 0]),  # no unique best: left out
        ("e", [1, 0, 0], [1, 0, 0]),  # fewer than 4 samples: left out
    ]:
        rows += [{S.PROMPT_ID: prompt, "q": q, "s": s} for q, s in zip(quality, score)]
    found = definitions.best_of_k(pd.DataFrame(rows), "q", "s")
    accuracy = (1 + 1 / 5 + 1 / 2) / 3
    # rel 1e-6, approx's default: float64 arithmetic on both sides
    assert found["accuracy"] == pytest.approx(accuracy) and found["n"] == 3 and found["random"] == 0.25
    # rel 1e-6, approx's default: float64 arithmetic on both sides
    assert (found["low"], found["high"]) == pytest.approx(wilson_interval(accuracy, 3))
    # 4 samples of one prompt, but 2 under each of two decodings: no 4 of one setting to pick from
    split = pd.DataFrame({S.PROMPT_ID: "a", S.DECODING: ["t=1", "t=1", "t=0.5", "t=0.5"], "q": [1, 0, 0, 0],
                          "s": [5, 1, 2, 3]})  # fmt: skip
    assert definitions.best_of_k(split, "q", "s")["n"] == 0


def test_agreement_has_one_row_per_definition():
    sequences = pd.DataFrame({S.EXAMPLE_ID: range(4), S.PROMPT_ID: ["a", "a", "b", "b"]})
    for i, (_, column) in enumerate(S.DEFINITIONS.values()):
        sequences[column] = [1.0, 0.0, float(i % 2), 1.0]  # odd definitions tie the second pair
    pairs = pd.DataFrame({"chosen_example_id": [0, 2], "rejected_example_id": [1, 3]})
    rows = definitions.agreement(sequences, pairs, ())
    assert [r["definition"] for r in rows] == list(S.DEFINITIONS)
    for i, row in enumerate(rows):
        expected = pairwise_accuracy([1.0, float(i % 2)], [0.0, 1.0])
        assert row["pairwise_accuracy"] == expected["accuracy"] == (0.75 if i % 2 else 0.5)
        assert (row["pairwise_low"], row["pairwise_high"]) == (expected["low"], expected["high"])


def plain_terms(model, prompt_ids, completion_ids, ended, eos_id) -> pd.DataFrame:
    """The per-token terms of one episode from one unpadded forward pass, in float64 from the float32 logits:
    Q = logit of the action, V = logsumexp of the state's logits, log π = Q - V; V after an EOS action 0, after
    the last action of a cut completion unknown."""
    ids = torch.tensor([list(prompt_ids) + list(completion_ids)])
    with torch.no_grad():
        logits = model(input_ids=ids).logits[0].double()  # (T, V)
    n, p = len(completion_ids), len(prompt_ids)
    states = logits[p - 1 : p - 1 + n]  # the state each action is taken in
    actions = torch.tensor(list(completion_ids))
    q = states[torch.arange(n), actions].numpy()
    v = torch.logsumexp(states, -1).numpy()
    v_next = np.append(v[1:], 0.0 if ended else np.nan)
    v_next[np.array(completion_ids) == eos_id] = 0.0
    return pd.DataFrame({S.Q: q, S.V: v, S.V_NEXT: v_next, S.LOGP: q - v})


def test_every_definition_against_a_plain_forward_pass(real_runs, tmp_path):
    """A checkpoint of the real chain scores its sweep's samples with checkpoint-2 of the same run as π_ref; each
    definition is recomputed here from plain forward passes of the two models. Tolerance: the scorer reads float32
    logits of a left-padded batch, this a float64 logsumexp of one unpadded sequence's float32 logits: float32
    rounding of terms of size up to ~10 (a few 1e-6) and of a padded matmul; 1e-4 per token, 24 tokens summed
    1e-3."""
    from transformers import AutoModelForCausalLM

    from analysis import rewards

    run = real_runs.root / "iqlearn" / "seed0"
    for name in ("checkpoint-2", "checkpoint-4"):
        shutil.copytree(run / name, tmp_path / name, ignore=shutil.ignore_patterns(rewards.runs.REWARDS))
    ckpt, ref = tmp_path / "checkpoint-4", tmp_path / "checkpoint-2"
    data = [rewards.load(name, ckpt) for name in ("test", "math-preferences")]
    summaries = rewards.score_checkpoint(ckpt, data, n_boot=10, reference=str(ref), beta=0.5)
    summary = summaries["test"]
    assert summary["reference"] == str(ref) and summary["beta"] == 0.5
    out = rewards.runs.rewards_dir(ckpt, "test")
    tokens, seqs = pd.read_parquet(out / S.TOKENS_FILE), pd.read_parquet(out / S.SEQUENCES_FILE)
    model, reference = (AutoModelForCausalLM.from_pretrained(str(c)).eval() for c in (ckpt, ref))
    gamma, eos = summary["gamma"], rewards.load_tokenizer(str(ckpt)).eos_token_id
    expected = []
    for row in seqs.itertuples():
        mine = plain_terms(model, row.prompt_ids, row.completion_ids, row.ended, eos)
        theirs = plain_terms(reference, row.prompt_ids, row.completion_ids, row.ended, eos)
        expected.append(mine.assign(**{
            S.EXAMPLE_ID: row.example_id, S.PROMPT_ID: row.prompt_id, S.POSITION: range(len(mine)),
            S.REWARD: mine[S.Q] - gamma * mine[S.V_NEXT], S.REWARD_GAMMA1: mine[S.Q] - mine[S.V_NEXT],
            S.REWARD_IMPLICIT: 0.5 * (mine[S.LOGP] - theirs[S.LOGP]),
        }))  # fmt: skip
    expected = pd.concat(expected, ignore_index=True)
    r_mean = expected.groupby(S.EXAMPLE_ID)[S.REWARD].mean()
    prompt = expected.groupby(S.EXAMPLE_ID)[S.PROMPT_ID].first()
    b = r_mean.groupby(prompt).transform("mean")  # the prompt's mean over its completions of R_mean
    expected[S.REWARD_BASELINE] = expected[S.REWARD] - expected[S.EXAMPLE_ID].map(b)
    got = tokens.merge(expected, on=[S.EXAMPLE_ID, S.POSITION], suffixes=("", "_plain"))
    assert len(got) == len(tokens) == len(expected) and got[S.REWARD].isna().any()  # cut completions among them
    for _, (column, sequence) in S.DEFINITIONS.items():
        np.testing.assert_allclose(got[column], got[f"{column}_plain"], rtol=0, atol=1e-4, err_msg=column)
        sums = expected.groupby(S.EXAMPLE_ID)[column].sum(min_count=1)
        np.testing.assert_allclose(seqs[sequence], seqs[S.EXAMPLE_ID].map(sums), rtol=0, atol=1e-3, err_msg=sequence)
    # the soft-Bellman telescoping: a completion ended by EOS sums r_t at γ = 1 to log π(y|x) + V(s_0) (the
    # preference texts all end with EOS)
    texts = pd.read_parquet(rewards.runs.rewards_dir(ckpt, "math-preferences") / S.SEQUENCES_FILE)
    assert not texts[S.TRUNCATED].any()
    np.testing.assert_allclose(texts[S.R_GAMMA1], texts[S.LOGP_SUM] + texts[S.V0], rtol=0, atol=1e-3)
    assert [r["definition"] for r in summaries["math-preferences"]["definitions"]] == list(S.DEFINITIONS)
    rows = summary["definitions"]
    assert [r["definition"] for r in rows if r["metric"] == "rouge1"] == list(S.DEFINITIONS)


def test_the_default_reference_is_the_runs_initial_weights(real_runs):
    """With no --reference, π_ref is the preset rebuilt from the run's seed: the very weights training started
    from, whose fingerprint train logged at step 0."""
    from analysis import rewards
    from analysis.results import read_metrics
    from irl.train import weights_sha256

    for run in ("mle/seed0", "iqlearn/seed1"):
        ckpt = real_runs.checkpoints[run]
        _, tokenizer = rewards.load_checkpoint(ckpt)
        model, what = rewards.reference_model(ckpt, rewards.INITIAL, tokenizer)
        logged = read_metrics(real_runs.root / run / "metrics.jsonl")
        assert weights_sha256(model) == logged["init/weights_sha256"].dropna().item()  # one step-0 line holds it
        assert what == f"initial: preset tiny at seed {run[-1]}"


def test_command_takes_the_reference_and_beta(real_runs, tmp_path):
    """`--reference` the checkpoint itself: the same model on the same batches, so every implicit reward is
    exactly 0 whatever β; the summary names the reference and β."""
    from analysis.__main__ import main as analysis_main
    from irl import runs as R

    ckpt = tmp_path / "checkpoint-4"
    shutil.copytree(real_runs.checkpoints["mle/seed1"], ckpt, ignore=shutil.ignore_patterns(R.REWARDS))
    analysis_main(["rewards", "--checkpoint", str(ckpt), "--data", "math-preferences", "--reference", str(ckpt),
                   "--beta", "3", "--n_boot", "10"])  # fmt: skip
    out = R.rewards_dir(ckpt, "math-preferences")
    tokens = pd.read_parquet(out / S.TOKENS_FILE)
    assert (tokens[S.REWARD_IMPLICIT] == 0).all() and (tokens[S.LOGP_REF] == tokens[S.LOGP]).all()
    written = pd.read_json(out / S.SUMMARY_FILE, typ="series")
    assert written["reference"] == str(ckpt) and written["beta"] == 3.0
