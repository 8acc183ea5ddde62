"""Token-exact analysis: the rewards score exactly the ids a sweep generated; training and rewards encode texts by
one rule; gamma comes from the checkpoint; results of other settings are never overwritten; the statistics on
literal cases; error localisation; gradient accumulation as the README documents it."""

import json
import shutil

import numpy as np
import pandas as pd
import pytest
import torch

from analysis import agreement, reward_data, rewards, stats
from analysis import schema as S
from analysis.sweep import sweep
from irl import runs
from irl.config import TrainConfig
from irl.data import DataError, encode, encode_example, load_splits
from irl.model import load_tokenizer
from irl.kernels import token_terms
from irl.objectives import iqlearn
from irl.train import train


@pytest.fixture(scope="module")
def run09(tmp_path_factory):
    """A 3-step IQLearn run of the tiny preset on the math task with gamma 0.9, swept with a grid whose
    max_new_tokens cuts some samples."""
    root = tmp_path_factory.mktemp("exact")
    cfg = TrainConfig(
        output_dir=str(root / "run"), model="tiny", objective="iqlearn", lam=0.1, gamma=0.9, vocab_size=400,
        math_sizes=[64, 16, 16], max_length=160, per_device_train_batch_size=4, max_steps=3, learning_rate=3e-3,
        warmup_steps=0, logging_steps=1, eval_steps=0, save_steps=3,
    )  # fmt: skip
    train(cfg)
    sweep(root / "run", temperatures=(0, 1.0), beams=(2,), samples=3, limit=6, max_new_tokens=12, batch_size=4)
    return root / "run" / "checkpoint-3"


def test_rewards_score_exactly_the_generated_ids(run09):
    samples = reward_data.read_sweep(runs.sweep_dir(run09, "test"))
    assert (~samples[S.ENDED]).any()  # samples cut at max_new_tokens (an untrained model rarely ends; the literal
    # test below has an ended one beside a cut one)
    model, tokenizer = rewards.load_checkpoint(run09)
    found = rewards.extract(model, tokenizer, reward_data.sweep_rows(samples), gamma=0.9)
    tokens, seqs = found.tokens, found.sequences
    assert len(seqs) == len(samples)
    eos = tokenizer.eos_token_id
    for example_id, row in samples.reset_index(drop=True).iterrows():
        scored = tokens[tokens[S.EXAMPLE_ID] == example_id].sort_values(S.POSITION)
        assert scored[S.TOKEN_ID].tolist() == list(row[S.COMPLETION_IDS])  # the generated ids, nothing re-encoded
        if row[S.ENDED]:
            assert scored[S.TOKEN_ID].iloc[-1] == eos and scored[S.V_NEXT].iloc[-1] == 0
        else:  # cut: no EOS row, and its last token has no next state
            assert eos not in scored[S.TOKEN_ID].tolist()
            assert np.isnan(scored[S.V_NEXT].iloc[-1]) and np.isnan(scored[S.REWARD].iloc[-1])
            assert scored[S.V_NEXT].iloc[:-1].notna().all()
    assert (seqs[S.TRUNCATED] == ~samples[S.ENDED].to_numpy()).all()


def test_a_cut_sample_literally(run09):
    model, tokenizer = rewards.load_checkpoint(run09)
    prompt_ids = tokenizer("Question: 1 + 1?\nAnswer:")["input_ids"]
    completion_ids = tokenizer(" 1 + 1 = 2", add_special_tokens=False)["input_ids"]
    rows = pd.DataFrame({
        S.EXAMPLE_ID: [0, 1], S.PROMPT_ID: ["a", "a"], S.PROMPT: ["q", "q"], S.COMPLETION: ["c", "c"],
        S.PROMPT_IDS: [prompt_ids, prompt_ids],
        S.COMPLETION_IDS: [completion_ids, completion_ids + [tokenizer.eos_token_id]],
        S.ENDED: [False, True],
    })  # fmt: skip
    found = rewards.extract(model, tokenizer, rows, gamma=1.0)
    cut = found.tokens[found.tokens[S.EXAMPLE_ID] == 0]
    ended = found.tokens[found.tokens[S.EXAMPLE_ID] == 1]
    assert cut[S.TOKEN_ID].tolist() == completion_ids and len(ended) == len(completion_ids) + 1
    assert np.isnan(cut[S.V_NEXT].iloc[-1]) and np.isnan(cut[S.REWARD].iloc[-1])
    # the shared prefix is scored alike; the cut one's R leaves out its last token
    # the same prefix in two rows of one float32 forward (another padding): a few ulps apart (rtol 1e-5 = 84 ulps);
    # R: two float32 sums of the same <= 150 rewards in other orders, within N * 2**-24 = 9e-6
    np.testing.assert_allclose(cut[S.Q].to_numpy(), ended[S.Q].to_numpy()[:-1], rtol=1e-5)
    seqs = found.sequences.set_index(S.EXAMPLE_ID)
    np.testing.assert_allclose(seqs.loc[0, S.R], cut[S.REWARD].iloc[:-1].sum(), rtol=1e-5)
    assert bool(seqs.loc[0, S.TRUNCATED]) and not bool(seqs.loc[1, S.TRUNCATED])


def test_training_and_rewards_encode_texts_by_one_rule(run09):
    tokenizer = load_tokenizer(str(run09))
    eos = tokenizer.eos_token
    texts = [
        ("Question: 2?\nAnswer:", " 2 = 2"),  # ordinary
        ("Question: 3?\nAnswer:", "  \n "),  # whitespace only: dropped from training data, scored by rewards
        ("Question: 4?\nAnswer:", f" 4 = 4{eos} and more text"),  # the episode ends at the written EOS
    ]
    features, counts = encode([{"prompt": p, "completion": c} for p, c in texts], tokenizer, max_length=160)
    assert counts["empty_completion"] == 1 and counts["eos_in_text"] == 1 and counts["kept"] == 2
    after = len(tokenizer(" and more text", add_special_tokens=False)["input_ids"])
    assert counts["after_eos_tokens"] == after
    model, tokenizer = rewards.load_checkpoint(run09)
    rows = pd.DataFrame({S.EXAMPLE_ID: [0, 1, 2], S.PROMPT: [p for p, _ in texts], S.COMPLETION: [c for _, c in texts],
                         S.PROMPT_ID: ["x", None, np.nan]})  # fmt: skip
    rows = reward_data.fill_prompt_ids(rows)
    assert rows[S.PROMPT_ID].tolist() == ["x", "prompt:1", "prompt:2"]  # partly missing ids: one per prompt text
    found = rewards.extract(model, tokenizer, rows, gamma=0.9)
    assert "empty_completion" not in found.counts and found.counts["eos_in_text"] == 1
    assert found.counts["after_eos_tokens"] == after
    whitespace = found.tokens[found.tokens[S.EXAMPLE_ID] == 1][S.TOKEN_ID].tolist()  # its tokens, then EOS
    assert whitespace == tokenizer("  \n ", add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    kept = found.sequences[found.sequences[S.EXAMPLE_ID] != 1]
    for feature, (_, seq) in zip(features, kept.iterrows()):  # the same ids as training's
        scored = found.tokens[found.tokens[S.EXAMPLE_ID] == seq[S.EXAMPLE_ID]][S.TOKEN_ID].tolist()
        completion = [t for t, m in zip(feature["input_ids"], feature["completion_mask"]) if m]
        assert scored == completion and scored[-1] == tokenizer.eos_token_id
    assert found.sequences[S.R_CENTERED].notna().all()


def test_gamma_is_read_from_the_checkpoint_also_outside_its_run(run09, tmp_path):
    assert rewards.checkpoint_gamma(run09) == 0.9
    copy = shutil.copytree(run09, tmp_path / "loose-checkpoint")
    assert rewards.checkpoint_gamma(copy) == 0.9
    (copy / runs.CHECKPOINT_CONFIG).unlink()
    with pytest.raises(rewards.RewardError, match="pass --gamma"):
        rewards.checkpoint_gamma(copy)
    assert rewards.checkpoint_gamma(copy, 0.5) == 0.5


def test_results_of_other_settings_are_never_overwritten(run09, tmp_path, capsys):
    ckpt = shutil.copytree(run09, tmp_path / "run" / "checkpoint-3")
    data = tmp_path / "texts.jsonl"
    data.write_text(json.dumps({"prompt": "Question: 1?\nAnswer:", "completion": " 1"}) + "\n")
    rewards.main(["--checkpoint", str(ckpt), "--data", str(data), "--n_boot", "10"])
    out = runs.rewards_dir(ckpt, "texts")
    manifest = json.loads((out / runs.MANIFEST).read_text())
    assert manifest["gamma"] == 0.9 and manifest["weights_sha256"] and manifest["data_sha256"]
    before = (out / runs.SEQUENCES_FILE).read_bytes()
    with pytest.raises(SystemExit, match="other settings.*gamma"):
        rewards.main(["--checkpoint", str(ckpt), "--data", str(data), "--gamma", "0.5", "--n_boot", "10"])
    assert (out / runs.SEQUENCES_FILE).read_bytes() == before
    rewards.main(["--checkpoint", str(ckpt), "--data", str(data), "--gamma", "0.5", "--name", "texts-g05",
                  "--n_boot", "10"])  # fmt: skip
    assert json.loads((runs.rewards_dir(ckpt, "texts-g05") / runs.SUMMARY_FILE).read_text())["gamma"] == 0.5


def test_command_errors_are_one_line(run09, tmp_path):
    for argv, message in (
        (["--checkpoint", str(run09.parent), "--data", "x.jsonl"], "not a checkpoint directory"),
        (["--checkpoint", str(run09), "--data", str(tmp_path / "missing.jsonl")], "no such file"),
        (["--checkpoint", str(run09), "--data", "validation"], "no sweep of split"),
    ):
        with pytest.raises(SystemExit) as e:
            rewards.main(argv)
        assert message in str(e.value) and "\n" not in str(e.value)


def test_clustered_standard_error_by_hand():
    # two prompts: (1, 0, 1) and (0, 0); mean 2/5; cluster residual sums 2 - 3 * 0.4 = 0.8 and 0 - 2 * 0.4 = -0.8;
    # se = sqrt(G / (G - 1) * (0.8^2 + 0.8^2)) / n = sqrt(2 * 1.28) / 5 = 0.32
    mean, se = stats.mean_se([1, 0, 1, 0, 0], ["a", "a", "a", "b", "b"])
    assert mean == pytest.approx(0.4)  # rel 1e-6, approx's default: float64 arithmetic on both sides
    assert se == pytest.approx(0.32)  # rel 1e-6, approx's default: float64 arithmetic on both sides
    # one value per cluster: the ordinary standard error
    x = [0.3, 0.9, 0.1, 0.5]
    # rel 1e-6, approx's default: float64 arithmetic on both sides
    assert stats.mean_se(x)[1] == pytest.approx(np.std(x, ddof=1) / 2)


def test_pairwise_accuracy_counts_ties_half():
    found = stats.pairwise_accuracy([2.0, 1.0, 0.5, 3.0], [1.0, 1.0, 0.7, 3.0])
    assert (found["wins"], found["ties"], found["losses"]) == (1, 2, 1)
    assert found["accuracy"] == 0.5  # (1 + 2 * 0.5) / 4
    # rel 1e-6, approx's default: float64 arithmetic on both sides
    assert stats.roc_auc([1.0, 2.0], [1.0, 0.0]) == pytest.approx((0.5 + 1 + 1 + 1) / 4)


def test_error_localisation_by_hand():
    # example 0: error at position 1; rewards (0.5, -2, 1): lowest first -> rank 1; logp (-1, -1, -3): rank 2-3
    # example 1: error at position 0; rewards (0, 0, 0, 1): a 3-way tie for rank 1 -> ranks 1, 2, 3 uniformly
    tokens = pd.DataFrame({
        S.EXAMPLE_ID: [0, 0, 0, 1, 1, 1, 1],
        S.POSITION: [0, 1, 2, 0, 1, 2, 3],
        S.REWARD: [0.5, -2.0, 1.0, 0.0, 0.0, 0.0, 1.0],
        S.LOGP: [-1.0, -1.0, -3.0, -0.1, -0.2, -0.3, -0.4],
        S.TOKEN_ENTROPY: [0.1, 2.0, 0.3, 0.5, 0.4, 0.3, 0.2],
    })  # fmt: skip
    seqs = pd.DataFrame({S.EXAMPLE_ID: [0, 1], S.ERROR_POSITION: [1, 0]})
    found = agreement.error_localisation(tokens, seqs)
    assert found["n"] == 2
    r = found[S.REWARD]
    assert r["hit@1"] == pytest.approx((1 + 1 / 3) / 2)  # rel 1e-6, approx's default: float64 arithmetic on both sides
    assert r["hit@3"] == pytest.approx(1.0)  # rel 1e-6, approx's default: float64 arithmetic on both sides
    # rel 1e-6, approx's default: float64 arithmetic on both sides
    assert r["mrr"] == pytest.approx((1 + (1 + 1 / 2 + 1 / 3) / 3) / 2)
    # log pi, lowest first: ex 0 rank 2 or 3 (tie at -1 behind -3); ex 1: -0.1 is the highest, rank 4
    lp = found[S.LOGP]
    # rel 1e-6, approx's default: float64 arithmetic on both sides
    assert lp["hit@1"] == 0 and lp["hit@3"] == pytest.approx(0.5)
    # rel 1e-6, approx's default: float64 arithmetic on both sides
    assert lp["mrr"] == pytest.approx(((1 / 2 + 1 / 3) / 2 + 1 / 4) / 2)
    ent = found[S.TOKEN_ENTROPY]  # highest first: ex 0 rank 1; ex 1 rank 1
    assert ent["hit@1"] == 1 and ent["mrr"] == 1
    rnd = found["random"]  # uniform over 3 and over 4 positions
    # rel 1e-6, approx's default: float64 arithmetic on both sides
    assert rnd["hit@1"] == pytest.approx((1 / 3 + 1 / 4) / 2) and rnd["hit@3"] == pytest.approx((1 + 3 / 4) / 2)
    # rel 1e-6, approx's default: float64 arithmetic on both sides
    assert rnd["mrr"] == pytest.approx(((1 + 1 / 2 + 1 / 3) / 3 + (1 + 1 / 2 + 1 / 3 + 1 / 4) / 4) / 2)


def test_error_position_of_built_in_corruptions(run09):
    tokenizer = load_tokenizer(str(run09))
    examples = reward_data.math_test_split(runs.checkpoint_config(run09), run09)[:4]
    rows, _ = reward_data.builtin_rows(examples, None)
    rejected = rows[rows[S.SIDE] == "rejected"].iloc[0]
    chosen = rows[(rows[S.PAIR_ID] == rejected[S.PAIR_ID]) & (rows[S.SIDE] == "chosen")].iloc[0]
    c = int(rejected["error_char"])
    assert rejected[S.COMPLETION][:c] == chosen[S.COMPLETION][:c]
    assert rejected[S.COMPLETION][c] != chosen[S.COMPLETION][c]
    encoded, _ = encode_example(tokenizer, rejected[S.PROMPT], rejected[S.COMPLETION], 500)
    from analysis.scoring import error_position

    t = error_position(tokenizer, encoded.completion_ids, c)
    decoded_length = [len(tokenizer.decode(encoded.completion_ids[:end])) for end in (t, t + 1)]
    assert decoded_length[0] <= c < decoded_length[1]


def test_training_without_validation_and_a_misspelt_data_path(tmp_path, monkeypatch):
    rows = [{"prompt": f"Q{i}:", "completion": f" answer {i}"} for i in range(12)]
    data = tmp_path / "d.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    cfg = TrainConfig(output_dir=str(tmp_path / "run"), data=str(data), eval_size=0, model="tiny", vocab_size=300,
                      max_length=32, per_device_train_batch_size=4, max_steps=2, warmup_steps=0, save_steps=2,
                      logging_steps=1)  # fmt: skip
    train(cfg)
    assert (tmp_path / "run" / "checkpoint-2" / runs.CHECKPOINT_CONFIG).is_file()
    import datasets

    def no_hub(*args, **kwargs):
        raise AssertionError("the hub was asked")

    monkeypatch.setattr(datasets, "load_dataset", no_hub)
    for source in ("data/mathh", str(tmp_path / "nope"), "./x", "missing.jsonl"):
        with pytest.raises(DataError, match="no such file or directory"):
            load_splits(TrainConfig(data=source))


def test_gradient_accumulation_is_the_mean_of_micro_batch_token_means(tmp_path, monkeypatch):
    """README: 'With gradient accumulation the loss is the mean of micro-batch token means.' One optimizer step
    over two micro-batches of two examples: the logged loss and gradient norm equal those of the mean of the two
    micro-batches' token-mean losses, recomputed here from the initial weights; the token mean over the four
    examples as one batch is another number."""
    from irl import model as models
    from irl.trainer import IRLTrainer

    seen = []
    original = IRLTrainer.compute_loss

    def recording(self, model, inputs, *args, **kwargs):
        seen.append({k: v.clone() for k, v in inputs.items()})
        return original(self, model, inputs, *args, **kwargs)

    monkeypatch.setattr(IRLTrainer, "compute_loss", recording)
    # completions of 1, 3, 20 and 40 words: micro-batches of unequal token counts; at initialisation the EOS
    # action's r_t^2 is near 0 and the others' near (gamma ln V)^2, so short and long ones have unequal token means
    data = tmp_path / "d.jsonl"
    data.write_text("".join(json.dumps({"prompt": f"Q{n}:", "completion": " w" * n}) + "\n" for n in (1, 3, 20, 40)))
    cfg = TrainConfig(output_dir=str(tmp_path / "acc"), model="tiny", vocab_size=300, data=str(data), eval_size=0,
                      max_length=64, per_device_train_batch_size=2, gradient_accumulation_steps=2, max_steps=1,
                      save_steps=1, logging_steps=1, warmup_steps=0, objective="iqlearn", lam=1.0,
                      max_grad_norm=1e9)  # fmt: skip
    trainer = train(cfg)
    micro = seen[:2]
    assert len(micro) == 2 and all(len(m["input_ids"]) == 2 for m in micro)
    tokenizer = trainer.processing_class
    fresh = models.build_preset("tiny", tokenizer, cfg.max_length, cfg.seed)  # the run's initial weights

    def loss_of(batch):
        logits = fresh(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        terms = token_terms(logits, batch["input_ids"], batch["completion_mask"], tokenizer.eos_token_id)
        return iqlearn(terms, lam=1.0, gamma=0.99)[0]

    fresh.zero_grad()
    loss = (loss_of(micro[0]) + loss_of(micro[1])) / 2
    loss.backward()
    grad_norm = torch.sqrt(sum((p.grad.double() ** 2).sum() for p in fresh.parameters() if p.grad is not None))
    records = map(json.loads, (tmp_path / "acc" / runs.METRICS).read_text().splitlines())
    logged = next(r for r in records if "train/loss" in r)
    # float32 forward and backward of the Trainer's batches (padded to one width) against the two micro-batches
    # alone: sums in another order; the loss within ~1e-6, the gradient norm (sum of 132k squares, each gradient
    # a sum over the batch's tokens) within ~1e-4; rel 1e-4 and 1e-3 leave 10x
    assert logged["train/loss"] == pytest.approx(loss.item(), rel=1e-4)
    assert logged["train/grad_norm"] == pytest.approx(grad_norm.item(), rel=1e-3)
    width = max(m["input_ids"].shape[1] for m in micro)
    pad = tokenizer.pad_token_id
    whole = {
        k: torch.cat([torch.nn.functional.pad(m[k], (0, width - m[k].shape[1]), value=pad if k == "input_ids" else 0)
                      for m in micro])
        for k in ("input_ids", "attention_mask", "completion_mask")
    }  # fmt: skip
    with torch.no_grad():
        assert abs(loss_of(whole).item() - loss.item()) > 1e-2 * loss.item()  # not the token mean of one batch
