"""GAIL: discriminator loss, advantages and policy loss on literal tensors; a few steps from an MLE checkpoint
that move the policy and the discriminator; the discriminator saved, reloaded and restored on resume; and
`accelerate launch` with two processes."""

import json
import math

import pytest
import torch
from safetensors.torch import load_file

from irl import gail as gail_module
from irl.config import ConfigError, TrainConfig, load_config
from irl.gail import DISCRIMINATOR_DIR, load_discriminator
from irl.model import load_model, load_tokenizer
from irl.kernels import TokenTerms
from irl.objectives import discriminator_loss, gail, sequence_advantages
from irl.runs import checkpoints, last_checkpoint
from irl.train import train
from tests.test_train import CrashAt, tiny, two_process_rows

LN = math.log


def test_discriminator_loss_literal():
    # expert logits 0, ln3: -log D = softplus(-z) = ln2, ln(4/3) -> mean ln(8/3)/2
    # policy logits ln3, -ln2 (the middle one masked): -log(1-D) = softplus(z) = ln4, ln(3/2) -> mean ln6/2
    # loss = (ln(8/3) + ln6) / 4 = ln16 / 4 = ln2
    loss, stats = discriminator_loss(
        torch.tensor([[0.0, LN(3)]]), torch.tensor([[True, True]]),
        torch.tensor([[LN(3), 5.0, -LN(2)]]), torch.tensor([[True, False, True]]),
    )
    # float32: four softplus terms, each within 1 ulp (2**-24 near 0.7), averaged: within 4 ulps of ln 2
    assert loss.item() == pytest.approx(LN(2), abs=4 * 2**-24)
    assert stats["gail/disc_acc_expert"].item() == 0.5  # logit > 0 for ln3 only
    assert stats["gail/disc_acc_policy"].item() == 0.5  # logit < 0 for -ln2 only


def test_sequence_advantages_per_prompt_mean():
    adv = sequence_advantages(torch.tensor([1.0, 3.0, 2.0, 6.0]), num_samples=2)
    assert adv.tolist() == [-1.0, 1.0, -2.0, 2.0]


def terms_with_logp(logp, mask, entropy=None):
    """TokenTerms whose V is 0, so log pi = Q."""
    zeros = torch.zeros_like(logp)
    return TokenTerms(logp, zeros, zeros, zeros if entropy is None else entropy, mask, mask)


def test_gail_policy_loss_literal():
    """Two completions of one prompt, two actions each (the second's second action is padding)."""
    logp = torch.tensor([[-1.0, -2.0], [-0.5, -3.0]], requires_grad=True)
    mask = torch.tensor([[True, True], [True, False]])
    policy = terms_with_logp(logp, mask, entropy=torch.tensor([[1.0, 2.0], [3.0, 4.0]]))
    expert = terms_with_logp(torch.tensor([[-2.0, -1.0]]), torch.tensor([[True, True]]))
    reward = torch.tensor([[1.0, 2.0], [0.5, 7.0]])
    logp_ref = torch.tensor([[-1.5, -2.0], [-0.5, -1.0]])
    loss, stats = gail(expert, policy, reward, logp_ref, num_samples=2, kl_coef=0.2, mle_weight=0.5, beta=0.1)
    # kl = logp - logp_ref = (0.5, 0 | 0, -); shaped = r - 0.2 kl = (0.9, 2 | 0.5, -); R = (2.9, 0.5), mean 1.7
    # A = (1.2, -1.2); pg = -(1.2 * -1 + 1.2 * -2 - 1.2 * -0.5) / 3 = 1.0
    # nll = (2 + 1) / 2 = 1.5; entropy = (1 + 2 + 3) / 3 = 2; loss = 1.0 + 0.5 * 1.5 - 0.1 * 2 = 1.55
    # float32 sums and means of <= 4 terms of size <= 3 (ulp 2.4e-7): a few ulps, inside 1e-6
    assert stats["gail/pg_loss"].item() == pytest.approx(1.0, abs=1e-6)
    assert stats["gail/kl"].item() == pytest.approx(0.5 / 3, abs=1e-6)
    assert stats["gail/reward_mean"].item() == pytest.approx(3.5 / 3, abs=1e-6)
    assert stats["gail/return_mean"].item() == pytest.approx(1.7, abs=1e-6)
    assert loss.item() == pytest.approx(1.55, abs=1e-6)
    # REINFORCE: d loss / d log pi = -A_i / (number of sampled actions); nothing through the KL in the reward
    loss.backward()
    torch.testing.assert_close(logp.grad, torch.tensor([[-0.4, -0.4], [0.4, 0.0]]))


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--objective", "gail"], "init=None: .gail. starts from an MLE checkpoint"),
        (["--objective", "gail", "--init", "x", "--num_samples", "1"], "num_samples=1: gail's per-prompt baseline"),
        (["--objective", "gail", "--init", "x", "--kl_coef", "-1"], "kl_coef=-1.0: must be >= 0"),
        (["--objective", "gail", "--init", "x", "--mle_weight", "-1"], "mle_weight=-1.0: must be >= 0"),
        (["--objective", "gail", "--init", "x", "--model", "small"], "model='small': with init set"),
        (["--objective", "gail", "--init", "x", "--disc_lr", "0"], "disc_lr=0.0: must be > 0"),
    ],
)
def test_invalid_gail_config_names_the_field(flags, message):
    with pytest.raises(ConfigError, match=message):
        load_config(flags)


def test_gail_config_defaults_and_missing_init(tmp_path):
    cfg = TrainConfig(objective="gail", init="runs/x/checkpoint-3")
    assert (cfg.model, cfg.num_samples, cfg.samples_policy) == ("runs/x/checkpoint-3", 2, True)
    with pytest.raises(ConfigError, match="init=.*not a checkpoint directory"):
        train(tiny(tmp_path, objective="gail", init=str(tmp_path / "nowhere")))


@pytest.fixture(scope="module")
def mle_checkpoint(tiny_run):
    return str(tiny_run / "checkpoint-3")  # the tiny preset's 3-step MLE run (conftest.py)


def gail_cfg(tmp, name, init, **overrides):
    return tiny(tmp, name, objective="gail", init=init, sample_max_new_tokens=12, max_steps=3, save_steps=2,
                kl_coef=0.1, beta=0.01, **overrides)


@pytest.fixture(scope="module")
def gail_run(tmp_path_factory, mle_checkpoint):
    """A 3-step GAIL run, with the discriminator's initial weights recorded when it is built."""
    tmp, initial = tmp_path_factory.mktemp("gail"), {}

    def recording(path, trust_remote_code=False):
        model = load_discriminator(path, trust_remote_code)
        initial.update({k: v.clone() for k, v in model.state_dict().items()})
        return model

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(gail_module, "load_discriminator", recording)
        trainer = train(gail_cfg(tmp, "straight", mle_checkpoint))
    return tmp, trainer, initial


def test_gail_steps_move_policy_and_discriminator(gail_run, mle_checkpoint):
    tmp, trainer, disc_initial = gail_run
    rows = [json.loads(line) for line in (tmp / "straight" / "metrics.jsonl").read_text().splitlines()]
    logged = [r for r in rows if "train/loss" in r]
    assert len(logged) == 3 and all(math.isfinite(r["train/loss"]) for r in logged)
    for key in ("gail/disc_loss", "gail/disc_acc_expert", "gail/disc_acc_policy", "gail/reward_mean", "gail/kl",
                "gail/pg_loss", "gail/nll", "time/sample_s", "time/update_s", "sample/length"):
        assert key in logged[-1] and math.isfinite(logged[-1][key]), key
    assert 0 <= logged[-1]["gail/disc_acc_expert"] <= 1 and 0 <= logged[-1]["gail/disc_acc_policy"] <= 1
    assert (tmp / "straight" / "samples.jsonl").read_text().count("\n") == 6
    policy_initial = load_model(mle_checkpoint).state_dict()
    for name, p in trainer.model.named_parameters():
        assert not torch.equal(p.detach(), policy_initial[name]), f"policy {name} did not change"
    for name, p in trainer.discriminator.named_parameters():
        assert not torch.equal(p.detach(), disc_initial[name]), f"discriminator {name} did not change"
    for name, p in trainer.ref_model.named_parameters():  # the KL reference stays the initial policy
        assert torch.equal(p, policy_initial[name]) and not p.requires_grad


def test_gail_checkpoint_holds_the_discriminator(gail_run):
    tmp, trainer, _ = gail_run
    ckpt = last_checkpoint(tmp / "straight")
    disc_dir = ckpt / DISCRIMINATOR_DIR
    assert (disc_dir / "model.safetensors").is_file() and (disc_dir / "optimizer.pt").is_file()
    tokenizer = load_tokenizer(str(ckpt))
    ids = torch.tensor([tokenizer("Question: A kid has 3 books.\nAnswer: 1 + 2 = 3")["input_ids"]])
    with torch.no_grad():
        saved, live = load_file(str(disc_dir / "model.safetensors")), trainer.discriminator.state_dict()
        assert all(torch.equal(saved[k], live[k]) for k in saved)
        # Same weights; CPU kernels may round differently for tensors aligned differently in memory (another
        # blocking of the same float32 sums, of at most d_ff = 192 terms): within 192 ulps of the logits' size, ~1
        reloaded = load_discriminator(str(disc_dir))(ids).logits
        torch.testing.assert_close(reloaded, trainer.discriminator(ids).logits, rtol=0, atol=192 * 2**-23)
        assert torch.equal(load_model(str(ckpt))(ids).logits, trainer.model.eval()(ids).logits)


def test_gail_resume_restores_the_discriminator(gail_run, mle_checkpoint):
    tmp, _, _ = gail_run

    with pytest.raises(KeyboardInterrupt):
        train(gail_cfg(tmp, "resumed", mle_checkpoint), callbacks=[CrashAt(3)])
    assert [p.name for p in checkpoints(tmp / "resumed")] == ["checkpoint-2"]
    train(gail_cfg(tmp, "resumed", mle_checkpoint, resume=True))
    for part in (".", DISCRIMINATOR_DIR):  # policy, then discriminator: as if never interrupted
        a = load_file(str(last_checkpoint(tmp / "straight") / part / "model.safetensors"))
        b = load_file(str(last_checkpoint(tmp / "resumed") / part / "model.safetensors"))
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)  # same kernels: bit for bit


def test_accelerate_launch_two_processes_gail(two_processes):
    """GAIL from the tiny MLE run, 2 steps on two processes."""
    rows = two_process_rows(two_processes.root / "gail")
    logged = [r for r in rows if "train/loss" in r]
    assert len(logged) == 2 and all("gail/disc_acc_policy" in r for r in logged)
    assert (two_processes.root / "gail" / "checkpoint-2" / DISCRIMINATOR_DIR / "model.safetensors").is_file()
