"""Reward extraction on a tiny trained checkpoint: the command's rewards against a plain forward pass recomputed
here (logsumexp and gather, not token_terms), the gamma = 1 telescoping identity, every --data form, the demo's
report, and each bad input."""

import json
import random
import shutil

import datasets
import numpy as np
import pandas as pd
import pytest
import torch

from analysis import rewards, scoring
from analysis import schema as S
from analysis.__main__ import main as analysis_main
from analysis.metrics import answers_match
from analysis.preferences import corrupt
from analysis.report import format_preference_report, reward_report
from analysis.reward_data import math_test_split as _math_test_split
from analysis.rewards import main
from irl import runs
from irl.config import TrainConfig
from irl.model import load_model, load_tokenizer
from irl.runs import checkpoint_config, last_checkpoint, rewards_dir, sweep_dir
from irl.train import train

CONTEXT = 160  # max_length of the tiny run: the model's max_position_embeddings


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """A 3-step tiny MLE run on the math task, with a sweep of its 16 test prompts (t=1: K=3, and greedy)."""
    root = tmp_path_factory.mktemp("rewards")
    cfg = TrainConfig(
        output_dir=str(root / "run"), model="tiny", vocab_size=400, math_sizes=[64, 16, 16], max_length=CONTEXT,
        per_device_train_batch_size=4, max_steps=3, learning_rate=3e-3, warmup_steps=0, logging_steps=1, eval_steps=0,
        save_steps=3,
    )  # fmt: skip
    train(cfg)
    ckpt = last_checkpoint(cfg.output_dir)
    write_sweep(ckpt, math_test_split(ckpt))
    return ckpt


def math_test_split(ckpt):
    return _math_test_split(checkpoint_config(ckpt), ckpt)


def write_sweep(ckpt, examples):
    """samples-t=1.parquet (the reference, a carried and a dropped corruption) and samples-greedy.parquet."""
    out = sweep_dir(ckpt, "test")
    out.mkdir(parents=True)
    rng = random.Random(0)
    cells = {"t=1": ("sample", 1.0, 3), "greedy": ("greedy", 0.0, 1)}
    for label, (kind, temperature, k) in cells.items():
        rows = []
        for ex in examples:
            texts = [ex["completion"], corrupt(ex["completion"], "carried", rng) or ex["completion"] + " ok",
                     corrupt(ex["completion"], "dropped", rng) or " #### 0"]  # fmt: skip
            for i, text in enumerate(texts[:k]):
                rows.append({
                    S.RUN: str(ckpt.parent), S.METHOD: "mle", S.SEED: 0, S.STEP: 3, S.DECODING: label, S.KIND: kind,
                    S.TEMPERATURE: temperature, S.BEAMS: 1, S.PROMPT_ID: ex["id"], S.SAMPLE: i, S.PROMPT: ex["prompt"],
                    S.COMPLETION: text, S.REFERENCE: ex["completion"], S.N_TOKENS: 30, S.ENTROPY: 1.0,
                    S.EXACT_MATCH: float(answers_match(text, ex["completion"])),
                })  # fmt: skip
        pd.DataFrame(rows).to_parquet(out / f"samples-{label}.parquet", index=False)


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


@pytest.fixture(scope="module")
def model_and_tokenizer(checkpoint):
    return load_model(str(checkpoint)).eval(), load_tokenizer(str(checkpoint))


def plain_rewards(model, tokenizer, prompt, completion, gamma):
    """q, v, v_next, logp, reward per completion token from one unpadded forward pass, computed directly."""
    prompt_ids = tokenizer(prompt)["input_ids"]
    ids = prompt_ids + tokenizer(completion, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    with torch.no_grad():
        logits = model(torch.tensor([ids])).logits[0].double()  # (T, V)
    first = len(prompt_ids) - 1  # the state in which the first completion token is chosen
    states = logits[first:-1]  # (C, V)
    q = states.gather(-1, torch.tensor(ids[first + 1 :])[:, None])[:, 0]
    v = torch.logsumexp(states, -1)
    v_next = torch.logsumexp(logits[first + 1 :], -1)
    v_next[-1] = 0.0  # the state after EOS is terminal
    return {"token_id": ids[first + 1 :], S.Q: q, S.V: v, S.V_NEXT: v_next, S.LOGP: q - v, S.REWARD: q - gamma * v_next}


def read(ckpt, name, file):
    return pd.read_parquet(rewards_dir(ckpt, name) / file)


def test_command_rewards_equal_a_plain_forward_pass(checkpoint, model_and_tokenizer, tmp_path):
    model, tokenizer = model_and_tokenizer
    examples = math_test_split(checkpoint)[:4]
    rows = [{"prompt": e["prompt"], "completion": e["completion"], "score": float(i)} for i, e in enumerate(examples)]
    rows.append({"prompt": examples[0]["prompt"], "completion": " 3 + 4 = 7\n#### 7", "score": 9.0})
    analysis_main(["rewards", "--checkpoint", str(checkpoint), "--data", write_jsonl(tmp_path / "plain.jsonl", rows),
                   "--gamma", "0.9", "--metrics", "score", "--batch_tokens", "300"])  # fmt: skip
    tokens, seqs = read(checkpoint, "plain", runs.TOKENS_FILE), read(checkpoint, "plain", runs.SEQUENCES_FILE)
    assert list(tokens.columns) == [*S.TOKEN_COLUMNS, *S.DEFINITION_TOKEN_COLUMNS]
    assert list(seqs.columns[:10]) == [*S.SEQUENCE_COLUMNS, S.TRUNCATED]
    assert list(seqs["score"]) == [0.0, 1.0, 2.0, 3.0, 9.0]  # extra columns kept
    for example_id, row in enumerate(rows):
        expected = plain_rewards(model, tokenizer, row["prompt"], row["completion"], gamma=0.9)
        got = tokens[tokens[S.EXAMPLE_ID] == example_id].sort_values(S.POSITION)
        assert list(got[S.POSITION]) == list(range(len(expected["token_id"])))
        assert list(got[S.TOKEN_ID]) == expected["token_id"]
        assert list(got[S.TOKEN]) == [tokenizer.decode([i]) for i in expected["token_id"]]
        # float32 logits of the scorer's batched, left-padded forward against this unpadded one: the same sums (at
        # most d_ff = 192 terms) in another order, so a logit of size <= 10 within ~192 ulps (2e-4), and q, v,
        # v_next, reward (differences of two such terms) within 2e-4; R and log pi sum <= 20 of them (2e-3)
        for key in (S.Q, S.V, S.V_NEXT, S.LOGP, S.REWARD):
            np.testing.assert_allclose(got[key], expected[key].numpy(), atol=2e-4, rtol=1e-5, err_msg=key)
        seq = seqs.iloc[example_id]
        assert seq[S.R] == pytest.approx(expected[S.REWARD].sum().item(), abs=2e-3)
        assert seq[S.LOGP_SUM] == pytest.approx(expected[S.LOGP].sum().item(), abs=2e-3)
        assert seq[S.V0] == pytest.approx(expected[S.V][0].item(), abs=2e-4)
        assert seq[S.LENGTH] == len(expected["token_id"])
    # rows 0 and 4 share a prompt: centred on their mean; the others are alone (0)
    # rel 1e-6, approx's default: float64 arithmetic on both sides
    assert seqs[S.R_CENTERED].iloc[0] == pytest.approx((seqs[S.R].iloc[0] - seqs[S.R].iloc[4]) / 2)
    assert seqs[S.R_CENTERED].iloc[1:4].abs().max() < 1e-9
    summary = json.loads((rewards_dir(checkpoint, "plain") / runs.SUMMARY_FILE).read_text())
    assert summary["gamma"] == 0.9 and summary["counts"]["tokens"] == len(tokens)
    assert summary["route"]["route"] == "chunked" and summary["route"]["passed"]  # the tiny preset is a Llama
    found = [(c["reward"], c["metric"], c["n"]) for c in summary["correlations"]]
    assert found == [(score, "score", 5) for score in S.SCORES]  # every reward figure beside the baselines


def test_gamma_one_telescopes_to_loglik_plus_v0(checkpoint, tmp_path):
    rows = [{"prompt": ex["prompt"], "completion": ex["completion"]} for ex in math_test_split(checkpoint)]
    main(["--checkpoint", str(checkpoint), "--data", write_jsonl(tmp_path / "g1.jsonl", rows), "--gamma", "1"])
    seqs = read(checkpoint, "g1", runs.SEQUENCES_FILE)
    assert len(seqs) == 16
    # exact in real numbers; in float32 each of the <= 160 stored rewards (|q|, |v| <= 10) carries half an ulp of
    # 10 (5e-7) per term: <= 160 * 2 * 5e-7 = 1.6e-4 summed, 1e-3 leaves a margin
    np.testing.assert_allclose(seqs[S.R], seqs[S.LOGP_SUM] + seqs[S.V0], atol=1e-3, rtol=1e-5)


def test_preference_jsonl_and_a_dataset_with_a_column_mapping(checkpoint, tmp_path):
    examples = math_test_split(checkpoint)[:6]
    pairs = [
        {"prompt": ex["prompt"], "chosen": ex["completion"], "rejected": " 1 + 1 = 2\n#### 2", "margin": 1.5}
        for ex in examples
    ]
    main(["--checkpoint", str(checkpoint), "--data", write_jsonl(tmp_path / "prefs.jsonl", pairs)])
    table = read(checkpoint, "prefs", runs.PAIRS_FILE)
    assert len(table) == 6 and list(table["data_margin"]) == [1.5] * 6  # the data's own margin, renamed
    np.testing.assert_allclose(table[S.MARGIN], table[S.CHOSEN_R] - table[S.REJECTED_R])
    seqs = read(checkpoint, "prefs", runs.SEQUENCES_FILE)
    assert list(seqs[S.SIDE][:2]) == ["chosen", "rejected"] and len(seqs) == 12
    summary = json.loads((rewards_dir(checkpoint, "prefs") / runs.SUMMARY_FILE).read_text())
    wins, ties = int((table[S.MARGIN] > 0).sum()), int((table[S.MARGIN] == 0).sum())
    assert summary["preferences"][S.R]["accuracy"] == (wins + ties / 2) / 6 and summary["counts"]["pairs"] == 6
    lik = (table["chosen_logp_sum"] > table["rejected_logp_sum"]).mean()
    # rel 1e-6, approx's default: float64 arithmetic on both sides
    assert summary["preferences"][S.LOGP_SUM]["accuracy"] == pytest.approx(lik)

    renamed = [{"question": p["prompt"], "good": p["chosen"], "bad": p["rejected"]} for p in pairs]
    datasets.Dataset.from_list(renamed).save_to_disk(str(tmp_path / "hfprefs"))
    main(["--checkpoint", str(checkpoint), "--data", str(tmp_path / "hfprefs"), "--prompt_field", "question",
          "--chosen_field", "good", "--rejected_field", "bad"])  # fmt: skip
    again = read(checkpoint, "hfprefs", runs.PAIRS_FILE)
    # the same episodes in batches of another make-up: float32 forward rounding (above), R of <= 20 tokens
    np.testing.assert_allclose(again[S.CHOSEN_R], table[S.CHOSEN_R], atol=1e-5)
    np.testing.assert_allclose(again[S.REJECTED_R], table[S.REJECTED_R], atol=1e-5)


def test_sweep_and_builtin_preferences(checkpoint):
    main(["--checkpoint", str(checkpoint), "--data", "test", "--n_boot", "20"])  # the checkpoint's sweep of "test"
    seqs = read(checkpoint, "test", runs.SEQUENCES_FILE)
    assert len(seqs) == 16 * 3 + 16 and set(seqs[S.DECODING]) == {"t=1", "greedy"}
    summary = json.loads((rewards_dir(checkpoint, "test") / runs.SUMMARY_FILE).read_text())
    found = {(c["reward"], c["metric"]) for c in summary["correlations"]}
    assert found == {(score, S.EXACT_MATCH) for score in S.SCORES}
    assert set(summary["best_of_n"]) == {"t=1/exact_match"}  # greedy has one sample per prompt
    assert summary["best_of_n"]["t=1/exact_match"]["oracle"] == 1.0  # the reference is among each prompt's samples

    main(["--checkpoint", str(checkpoint), "--data", "math-preferences", "--n_boot", "20"])
    pairs = read(checkpoint, "math-preferences", runs.PAIRS_FILE)
    assert set(pairs[S.PAIR_SOURCE]) == {"carried", "operation", "dropped", "sample"}
    seqs = read(checkpoint, "math-preferences", runs.SEQUENCES_FILE)
    assert (seqs[S.EXACT_MATCH] == (seqs[S.SIDE] == "chosen")).all()
    corrupted = seqs[seqs[S.ERROR_POSITION].notna()]
    assert set(corrupted[S.SIDE]) == {"rejected"} and len(corrupted) == (pairs[S.PAIR_SOURCE] != "sample").sum()
    summary = json.loads((rewards_dir(checkpoint, "math-preferences") / runs.SUMMARY_FILE).read_text())
    assert summary["error_localisation"]["n"] == len(corrupted)


def test_reward_report(checkpoint):
    report = reward_report(checkpoint, n_boot=20)
    assert report["decoding"] == "t=1" and report["gamma"] == 0.99
    prefs = report["preferences"][S.R]
    assert prefs["n"] == report["counts"]["pairs"] and 0 <= prefs["accuracy"] <= 1 and prefs["low"] <= prefs["high"]
    assert set(report["preferences"]) == set(S.SCORES)
    assert set(report["preferences_by_source"]) == {"carried", "operation", "dropped", "sample"}
    assert report["correlations"][S.R]["n"] == 48 and set(report["correlations"]) == set(S.SCORES)
    best = report["best_of_n"]
    # rel 1e-6, approx's default: float64 arithmetic on both sides
    assert best["prompts"] == 16 and best["n"] == 3 and best["gain"] == pytest.approx(best[S.R] - best["random"])
    assert set(report["error_localisation"]) == {"n", *S.TOKEN_RANKINGS}
    assert (rewards_dir(checkpoint, "test-t=1") / runs.TOKENS_FILE).is_file()
    small = reward_report(checkpoint, limit=4, n_boot=10)  # the first 4 test prompts
    assert small["best_of_n"]["prompts"] == 4 and small["correlations"][S.R]["n"] == 12
    pairs = read(checkpoint, "math-preferences-4", runs.PAIRS_FILE)
    assert set(pairs[S.PROMPT_ID]) == {f"math-test-{i}" for i in range(4)}


def test_bad_inputs_are_counted_and_flagged(checkpoint, model_and_tokenizer, tmp_path):
    _, tokenizer = model_and_tokenizer
    prompt = "Question: A kid has 3 books.\nAnswer:"
    rows = [
        {"prompt": prompt, "completion": " 1" * 300},  # longer than the context: cut
        {"prompt": "Question:" + " 9" * 300, "completion": " 1"},  # the prompt alone fills the context: left out
        {"prompt": prompt, "completion": ""},  # empty: the episode of one EOS action, scored
        {"prompt": prompt, "completion": " 5<|endoftext|> 6"},  # EOS written inside: the episode ends there
    ]
    main(["--checkpoint", str(checkpoint), "--data", write_jsonl(tmp_path / "bad.jsonl", rows)])
    summary = json.loads((rewards_dir(checkpoint, "bad") / runs.SUMMARY_FILE).read_text())
    counts = summary["counts"]
    found = [counts[k] for k in ("truncated", "dropped_overlong", "eos_in_text")]
    assert found == [1, 1, 1] and "empty_completion" not in counts
    seqs = read(checkpoint, "bad", runs.SEQUENCES_FILE).set_index(S.EXAMPLE_ID)
    tokens = read(checkpoint, "bad", runs.TOKENS_FILE)
    assert list(seqs.index) == [0, 2, 3]
    assert list(seqs[S.TRUNCATED]) == [True, False, False]
    assert tokens[tokens[S.EXAMPLE_ID] == 2][S.TOKEN_ID].tolist() == [tokenizer.eos_token_id]
    cut = tokens[tokens[S.EXAMPLE_ID] == 0]
    assert len(cut) == CONTEXT - len(tokenizer(prompt)["input_ids"]) == seqs.loc[0, S.LENGTH]
    assert np.isnan(cut[S.REWARD].iloc[-1]) and not cut[S.REWARD].iloc[:-1].isna().any()  # no next state
    # two float32 sums of the same <= 150 rewards in other orders: within N * 2**-24 = 9e-6 of their size
    assert seqs.loc[0, S.R] == pytest.approx(cut[S.REWARD].iloc[:-1].sum(), rel=1e-5)
    ended = tokens[tokens[S.EXAMPLE_ID] == 3]
    assert list(ended[S.TOKEN_ID]) == tokenizer(" 5", add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]


def test_checkpoint_without_tokenizer_and_malformed_data_fail_clearly(checkpoint, tmp_path):
    bare = tmp_path / "checkpoint-1"
    bare.mkdir()
    for name in ("config.json", "model.safetensors"):
        shutil.copy(checkpoint / name, bare / name)
    with pytest.raises(SystemExit, match=f"checkpoint {bare} has no usable tokenizer"):
        main(["--checkpoint", str(bare), "--data", "math-preferences", "--gamma", "1"])
    path = tmp_path / "broken.jsonl"
    path.write_text('{"prompt": "a", "completion": "b"}\n{"prompt": "a", \n')
    with pytest.raises(SystemExit, match=f"{path}:2: malformed JSON"):
        main(["--checkpoint", str(checkpoint), "--data", str(path)])
    path.write_text('{"prompt": "a", "completion": "b"}\n\n{"prompt": "a", "completion": 3}\n')
    with pytest.raises(SystemExit, match=f"{path}:3: field 'completion' must be a string"):
        main(["--checkpoint", str(checkpoint), "--data", str(path)])


def test_preference_tables_fit_the_longest_method_name():
    """Every row of the preference and localisation tables starts its second column at the same place, whatever
    the length of the checkpoints' names."""
    preference = {"accuracy": 0.75, "low": 0.7, "high": 0.8, "auc": 0.6}
    report = {
        "gamma": 0.99, "terminal": "EOS terminal", "counts": {"pairs": 4},
        "preferences": {score: preference for score in S.SCORES},
        "preferences_by_source": {"corrupted": {score: preference for score in S.SCORES}},
        "error_localisation": {"n": 2} | {r: {"hit@1": 0.5, "hit@3": 1.0, "mrr": 0.75} for r in S.TOKEN_RANKINGS},
    }  # fmt: skip
    names = ("mle", "iqlearn lam=0.3 step 1600")
    text = format_preference_report(dict.fromkeys(names, report), "pairs")
    rows = [line for line in text.splitlines() if line.startswith(("method", *names))]
    assert len(rows) == 2 + len(names) * (len(S.SCORES) + len(S.TOKEN_RANKINGS))  # two headers
    second = len(names[1]) + 1  # where the second column starts: after the longest name and one space
    assert all(line[second - 1] == " " and line[second] != " " for line in rows), rows


def test_every_manifest_is_checked_before_anything_is_scored(checkpoint, tmp_path):
    """score_checkpoint (the one path every command takes) refuses data whose directory holds rewards made with
    other settings before it scores or writes any of the data it was given."""
    pair = {"prompt": "Question: 1 + 1?\nAnswer:", "chosen": " 2\n#### 2", "rejected": " 3\n#### 3"}
    path = write_jsonl(tmp_path / "one.jsonl", [pair])
    first, second = (rewards.load(path, checkpoint, name=n) for n in ("first-of-two", "second-of-two"))
    rewards.score_checkpoint(checkpoint, [second], gamma=0.5)
    with pytest.raises(rewards.RewardError, match=r"second-of-two holds rewards made with other settings \(gamma: 0.5 "
                                                  r"there, 0.9 now\)"):  # fmt: skip
        rewards.score_checkpoint(checkpoint, [first, second], gamma=0.9)
    assert not rewards_dir(checkpoint, "first-of-two").exists()


def test_the_chunked_route_scores_as_the_logits_and_checks_itself(checkpoint, model_and_tokenizer, monkeypatch):
    """Scoring from the final hidden states a chunk of rows at a time gives the rewards of the materialised
    logits (the same float32 sums in another order); a chunked route made deliberately wrong is caught by its
    self-check, and the rewards are then those of the materialised route bit for bit, the record saying so; the
    check runs once per process for a key, and can be skipped."""
    model, tokenizer = model_and_tokenizer
    examples = math_test_split(checkpoint)[:6]
    rows = pd.DataFrame({S.EXAMPLE_ID: range(6), S.PROMPT_ID: [e["id"] for e in examples],
                         S.PROMPT: [e["prompt"] for e in examples], S.COMPLETION: [e["completion"] for e in examples]})
    monkeypatch.setattr(scoring, "_checked", {})
    stock = rewards.extract(model, tokenizer, rows, 0.9, batch_tokens=300, chunked=False)
    fast = rewards.extract(model, tokenizer, rows, 0.9, batch_tokens=300)
    assert stock.route == {"route": "materialised"}
    assert fast.route["route"] == "chunked" and fast.route["check/chunked_terms_max_rel_diff"] < 1e-5
    for key in (S.Q, S.V, S.V_NEXT, S.LOGP, S.REWARD, S.TOKEN_ENTROPY):  # logits <= 10 within ~d_ff ulps (2e-4)
        np.testing.assert_allclose(fast.tokens[key], stock.tokens[key], atol=2e-4, rtol=1e-5, err_msg=key)

    head_token_terms = scoring.head_token_terms

    def wrong(*args, **kwargs):
        terms = head_token_terms(*args, **kwargs)
        terms.q = terms.q * 1.01
        return terms

    monkeypatch.setattr(scoring, "head_token_terms", wrong)
    monkeypatch.setattr(scoring, "_checked", {})
    caught = rewards.extract(model, tokenizer, rows, 0.9, batch_tokens=300)
    assert caught.route["route"] == "materialised" and not caught.route["passed"]
    assert caught.route["check/chunked_terms_max_rel_diff"] == pytest.approx(1e-2, rel=1e-3)
    pd.testing.assert_frame_equal(caught.tokens, stock.tokens)  # bit for bit: the stock route ran
    pd.testing.assert_frame_equal(caught.sequences, stock.sequences)
    again = rewards.extract(model, tokenizer, rows, 0.9, batch_tokens=300)  # the key's record: no second check
    assert again.route == caught.route
    unchecked = rewards.extract(model, tokenizer, rows, 0.9, batch_tokens=300, check=False)
    assert unchecked.route == {"route": "chunked"}  # the wrong route itself: nothing compared it
    assert not np.allclose(unchecked.tokens[S.Q], stock.tokens[S.Q], atol=2e-4)
