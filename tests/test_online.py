"""Online IQLearn: alpha=0 against offline bit for bit, a hand-worked value term, sampled completions in the
data's layout (a completion cut by the length limit included), a few training steps, resume, and
`accelerate launch` with two processes."""

import json
import math

import pytest
import torch

from irl import objectives
from irl.config import ConfigError, TrainConfig, load_config
from irl.data import Collator
from irl.model import build_preset, load_model, load_tokenizer, train_tokenizer
from irl.kernels import token_terms
from irl.objectives import iqlearn, online_iqlearn
from irl.runs import checkpoints, last_checkpoint
from irl.generation import Decoded, pack_samples, sample_completions
from irl.train import train
from irl.trainer import objective_fn
from tests.test_train import CrashAt, final_weights, tiny, two_process_rows

EOS = 0
LN = math.log


def hand_worked():
    """Expert: prompt 1, completion 2, 3, EOS (tests/test_objectives.py: V = ln5, ln6, ln7, nll 1.0892220, and
    with gamma 0.5 the TD mean 0.9698514). Policy: prompt 1, sampled 3, 2, cut by the length limit (no EOS):
      row 0 = [0, 0, 0, ln5]  exp-sum 8: V(s1) = ln8, Q(s1, 3) = ln5
      row 1 = [ln2, 0, 0, 0]  exp-sum 5: V(s2) = ln5, Q(s2, 2) = 0
      row 2 = the state after the cut: not in the batch, its logits never count.
    """
    f64 = torch.float64
    expert = torch.tensor([[[0, 0, LN(2), 0], [0, LN(3), 0, 0], [LN(4), 0, 0, 0], [5.0, -3.0, 2.0, 7.0]]], dtype=f64)
    policy = torch.tensor([[[0, 0, 0, LN(5)], [LN(2), 0, 0, 0], [9.0, -9.0, 3.0, 1.0]]], dtype=f64)
    return (expert, torch.tensor([[1, 2, 3, EOS]]), torch.tensor([[0, 1, 1, 1]])), (
        policy, torch.tensor([[1, 3, 2]]), torch.tensor([[0, 1, 1]])
    )


def test_hand_worked_online_value_term():
    (ze, ie, me), (zp, ip, mp) = hand_worked()
    expert, policy = token_terms(ze, ie, me, EOS), token_terms(zp, ip, mp, EOS)
    # d = V(s) - 0.5 V(s'): expert (ln5 - 0.5 ln6, ln6 - 0.5 ln7, ln7 - 0) -> mean 1.1594242
    # policy: only the first action has a next state: ln8 - 0.5 ln5 = 1.2747226; its r = ln5 - 0.5 ln5, r^2 = 0.6475726
    loss, stats = online_iqlearn(expert, policy, lam=0.1, gamma=0.5, alpha=0.25)
    # float64 against values written to 7 decimals: abs 1e-7 is the literals' rounding (5e-8)
    assert stats["iq/value_expert"].item() == pytest.approx(1.1594242, abs=1e-7)
    assert stats["iq/value_policy"].item() == pytest.approx(1.2747226, abs=1e-7)
    assert stats["iq/td_policy"].item() == pytest.approx(0.6475726, abs=1e-7)
    # 1.0892220 + 0.25 (1.2747226 - 1.1594242) + 0.1 (0.75 * 0.9698514 + 0.25 * 0.6475726) = 1.2069748
    assert loss.item() == pytest.approx(1.2069748, abs=1e-7)
    # expert-only regulariser: 1.0892220 + 0.0288246 + 0.1 * 0.9698514 = 1.2150317
    loss_expert_reg, _ = online_iqlearn(expert, policy, lam=0.1, gamma=0.5, alpha=0.25, reg_policy=False)
    assert loss_expert_reg.item() == pytest.approx(1.2150317, abs=1e-7)
    # the state after the cut is not in the batch: its logits change nothing
    zp2 = zp.clone()
    zp2[0, 2] = torch.tensor([-4.0, 8.0, 0.0, 2.0])
    assert online_iqlearn(expert, token_terms(zp2, ip, mp, EOS), lam=0.1, gamma=0.5, alpha=0.25)[0] == loss


def random_batch(seed, rows=3, width=9, V=13):
    """Rows ending in EOS, cut without EOS, and padded (the layouts of expert and sampled batches)."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(1, V, (rows, width), generator=g)
    cmask = torch.zeros(rows, width, dtype=torch.long)
    cmask[0, 3:] = 1
    ids[0, -1] = EOS
    cmask[1, 2:] = 1
    cmask[2, 4:7] = 1
    ids[2, 6] = EOS
    return torch.randn(rows, width, V, generator=g), ids, cmask


@pytest.mark.parametrize("reg_policy", [True, False])
def test_alpha_zero_is_offline_iqlearn_bit_for_bit(reg_policy):
    expert_batch, policy_batch = random_batch(0), random_batch(1)
    ze, zp = expert_batch[0].clone().requires_grad_(True), policy_batch[0].clone().requires_grad_(True)
    offline, _ = iqlearn(token_terms(ze, *expert_batch[1:], EOS), lam=0.3, gamma=0.9)
    (g_offline,) = torch.autograd.grad(offline, ze)
    online, _ = online_iqlearn(
        token_terms(ze, *expert_batch[1:], EOS), token_terms(zp, *policy_batch[1:], EOS),
        lam=0.3, gamma=0.9, alpha=0.0, reg_policy=reg_policy,
    )
    g_online, g_policy = torch.autograd.grad(online, (ze, zp))
    assert torch.equal(online, offline)
    assert torch.equal(g_online, g_offline)
    assert torch.equal(g_policy, torch.zeros_like(g_policy))
    # and a run with alpha = 0 is the offline objective itself, with nothing sampled
    cfg = TrainConfig(objective="iqlearn", lam=0.3, alpha=0.0)
    assert objective_fn(cfg).func is objectives.iqlearn and not cfg.samples_policy


def test_alpha_changes_the_gradient_of_policy_states():
    expert_batch, policy_batch = random_batch(0), random_batch(1)
    zp = policy_batch[0].clone().requires_grad_(True)
    loss, _ = online_iqlearn(
        token_terms(expert_batch[0], *expert_batch[1:], EOS), token_terms(zp, *policy_batch[1:], EOS),
        lam=0.3, gamma=0.9, alpha=0.1,
    )
    (g,) = torch.autograd.grad(loss, zp)
    assert g[0, 2:].abs().sum() > 0  # states of sampled completion tokens get a gradient
    assert torch.equal(g[0, :2], torch.zeros_like(g[0, :2]))  # rows 0-1 choose prompt tokens
    assert torch.equal(g[2, 7:], torch.zeros_like(g[2, 7:]))  # after EOS (terminal, then padding)


def test_collator_left_pads_prompts():
    batch = Collator(pad_token_id=0, prompts=True)(
        [{"input_ids": [5, 6, 7], "completion_mask": [0, 1, 1]}, {"input_ids": [8, 4, 9], "completion_mask": [0, 0, 1]}]
    )
    assert torch.equal(batch["input_ids"], torch.tensor([[5, 6, 7], [8, 4, 9]]))
    assert torch.equal(batch["prompt_input_ids"], torch.tensor([[0, 5], [8, 4]]))
    assert torch.equal(batch["prompt_attention_mask"], torch.tensor([[0, 1], [1, 1]]))


@pytest.mark.parametrize("pad", [0, 9])  # a pad token of its own, or EOS as pad (GPT-2)
def test_pack_samples_literal_and_truncated_completion(pad):
    """Prompts of 2, 3 and 1 tokens and their decoded completions (at most 4 tokens); EOS = 9."""
    decoded = Decoded(
        prompt_ids=[[5, 6], [4, 5, 6], [6]],
        completion_ids=[[7, 9], [7, 8, 7, 8], [9]],  # EOS after one token; cut by the length limit; EOS at once
        ended=[True, False, True],
        entropy=None,
    )
    batch = pack_samples(decoded, pad_token_id=pad)
    p = pad
    assert batch["input_ids"].tolist() == [[5, 6, 7, 9, p, p, p], [4, 5, 6, 7, 8, 7, 8], [6, 9, p, p, p, p, p]]
    assert batch["completion_mask"].tolist() == [[0, 0, 1, 1, 0, 0, 0], [0, 0, 0, 1, 1, 1, 1], [0, 1, 0, 0, 0, 0, 0]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1, 1, 0, 0, 0], [1] * 7, [1, 1, 0, 0, 0, 0, 0]]
    assert batch["truncated"].tolist() == [False, True, False]
    # METHOD.md §1: the cut completion's last token is in the NLL mask but leaves every V(s') term; no EOS added
    terms = token_terms(torch.randn(3, 7, 10), batch["input_ids"], batch["completion_mask"], eos_token_id=9)
    assert terms.mask[1].tolist() == [False, False, True, True, True, True]
    assert terms.td_mask[1].tolist() == [False, False, True, True, True, False]
    assert terms.td_mask[0].tolist() == terms.mask[0].tolist() == [False, True, True, False, False, False]
    assert terms.td_mask[2].tolist() == terms.mask[2].tolist() == [True] + [False] * 5


def test_sampled_completions_cut_by_the_length_limit():
    tokenizer = train_tokenizer(["Question: 1 + 2?\nAnswer: 1 + 2 = 3\n#### 3"] * 10, vocab_size=300)
    model = build_preset("tiny", tokenizer, 64, seed=0).train()  # untrained: EOS is rare within 5 tokens
    prompts = tokenizer(["Question: 1 + 2?\nAnswer:", "Question: 2?\nAnswer:"], padding=True, padding_side="left",
                        return_tensors="pt")
    torch.manual_seed(0)
    batch = sample_completions(
        model, prompts["input_ids"], prompts["attention_mask"], num_samples=3, max_new_tokens=5, temperature=1.0,
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
    )
    assert model.training  # mode restored
    assert batch["input_ids"].shape[0] == 6 and batch["truncated"].any()
    terms = token_terms(model(batch["input_ids"]).logits, batch["input_ids"], batch["completion_mask"],
                        tokenizer.eos_token_id)
    for row in range(6):
        completion = batch["input_ids"][row][batch["completion_mask"][row].bool()]
        if batch["truncated"][row]:
            assert len(completion) == 5 and tokenizer.eos_token_id not in completion.tolist()
            assert terms.td_mask[row].sum() == terms.mask[row].sum() - 1  # the last token has no next state
        else:
            assert completion[-1] == tokenizer.eos_token_id and torch.equal(terms.td_mask[row], terms.mask[row])


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--objective", "iqlearn", "--alpha", "1.5"], "alpha=1.5: must be in"),
        (["--objective", "mle", "--alpha", "0.1"], "alpha=0.1: the policy mix-in belongs"),
        (["--sample_temperature", "0"], "sample_temperature=0.0: must be > 0"),
        (["--sample_max_new_tokens", "0"], "sample_max_new_tokens=0: must be > 0"),
        (["--num_samples", "0"], "num_samples=0: must be >= 1"),
    ],
)
def test_invalid_online_config_names_the_field(flags, message):
    with pytest.raises(ConfigError, match=message):
        load_config(flags)


ONLINE = dict(objective="iqlearn", lam=0.1, alpha=0.5, sample_max_new_tokens=12, max_steps=3, save_steps=2)


@pytest.fixture(scope="module")
def online_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("online")
    return tmp, train(tiny(tmp, "straight", **ONLINE))


def test_online_steps_logs_and_reloads(online_run):
    tmp, trainer = online_run
    rows = [json.loads(line) for line in (tmp / "straight" / "metrics.jsonl").read_text().splitlines()]
    logged = [r for r in rows if "train/loss" in r]
    assert len(logged) == 3 and all(math.isfinite(r["train/loss"]) for r in logged)
    for key in ("iq/value_expert", "iq/value_policy", "iq/td_policy", "iq/nll", "time/sample_s", "time/update_s",
                "sample/length", "sample/truncated"):
        assert key in logged[-1] and math.isfinite(logged[-1][key]), key
    samples = [json.loads(line) for line in (tmp / "straight" / "samples.jsonl").read_text().splitlines()]
    assert [s["step"] for s in samples] == [1, 1, 2, 2, 3, 3]
    assert samples[0]["prompt"].startswith("Question: ") and isinstance(samples[0]["ended"], bool)
    tokenizer = load_tokenizer(str(tmp / "straight" / "tokenizer"))
    initial = build_preset("tiny", tokenizer, 160, 0).state_dict()
    for name, p in trainer.model.named_parameters():
        assert not torch.equal(p.detach(), initial[name]), f"{name} did not change"
    reloaded = load_model(str(last_checkpoint(tmp / "straight"))).eval()
    ids = torch.tensor([tokenizer("Question: A kid has 3 books.\nAnswer: 1 + 2 = 3")["input_ids"]])
    trainer.model.eval()
    with torch.no_grad():
        assert torch.equal(reloaded(ids).logits, trainer.model(ids).logits)


def test_online_resume_matches_uninterrupted(online_run):
    tmp, _ = online_run

    with pytest.raises(KeyboardInterrupt):
        train(tiny(tmp, "resumed", **ONLINE), callbacks=[CrashAt(3)])
    assert [p.name for p in checkpoints(tmp / "resumed")] == ["checkpoint-2"]
    train(tiny(tmp, "resumed", resume=True, **ONLINE))
    a, b = final_weights(tmp / "straight"), final_weights(tmp / "resumed")
    # the same completions are sampled again (the RNG state is restored from the checkpoint) and both runs take
    # the same kernels (this process, the same thread count): bit for bit
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    steps = [json.loads(line)["step"] for line in (tmp / "resumed" / "samples.jsonl").read_text().splitlines()]
    assert steps == [1, 1, 2, 2, 3, 3]


def test_accelerate_launch_two_processes_online(two_processes):
    """Online IQLearn (alpha 0.1), 2 steps on two processes."""
    rows = two_process_rows(two_processes.root / "online")
    logged = [r for r in rows if "train/loss" in r]
    assert len(logged) == 2 and all("iq/value_policy" in r and "time/sample_s" in r for r in logged)
    state = two_processes.root / "online" / "checkpoint-2" / "trainer_state.json"
    assert json.loads(state.read_text())["global_step"] == 2
