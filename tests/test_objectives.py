"""The objectives on literal tensors: hand-worked values, lam=0 against MLE, telescoping, masking, and the
fused token terms against the straightforward ones."""

import math

import pytest
import torch

from irl.kernels import naive_token_terms, token_terms
from irl.objectives import iqlearn, masked_mean, mle, token_stats

EOS = 0
LN = math.log


def hand_worked():
    """One sequence: prompt token 1, completion tokens 2, 3, EOS; vocabulary of four.

    Row k of the logits is the state in which token k+1 is chosen:
      row 0 = [0, 0, ln2, 0]  exp-sum 5: V(s1) = ln5, Q(s1, 2)   = ln2, log pi = ln(2/5)
      row 1 = [0, ln3, 0, 0]  exp-sum 6: V(s2) = ln6, Q(s2, 3)   = 0,   log pi = ln(1/6)
      row 2 = [ln4, 0, 0, 0]  exp-sum 7: V(s3) = ln7, Q(s3, EOS) = ln4, log pi = ln(4/7)
      row 3 = the state after EOS: terminal, its logits never count.
    """
    logits = torch.tensor(
        [[[0, 0, LN(2), 0], [0, LN(3), 0, 0], [LN(4), 0, 0, 0], [5.0, -3.0, 2.0, 7.0]]], dtype=torch.float64
    )
    input_ids = torch.tensor([[1, 2, 3, EOS]])
    completion_mask = torch.tensor([[0, 1, 1, 1]])
    return logits, input_ids, completion_mask


def test_hand_worked_iqlearn_loss():
    logits, ids, cmask = hand_worked()
    loss, stats = iqlearn(token_terms(logits, ids, cmask, EOS), lam=0.1, gamma=0.5)
    # r1 = ln2 - 0.5 ln6 = -0.2027326, r2 = 0 - 0.5 ln7 = -0.9729551, r3 = ln4 - 0.5 * 0 (terminal) = 1.3862944
    # td  = (0.0411005 + 0.9466415 + 1.9218121) / 3 = 0.9698514
    # nll = (ln(5/2) + ln6 + ln(7/4)) / 3 = ln(26.25) / 3 = 1.0892220
    # loss = 1.0892220 + 0.1 * 0.9698514 = 1.1862071
    # float64 against values written to 7 decimals: abs 1e-7 is the literals' rounding (5e-8), float64 adds ~1e-16
    assert stats["iq/nll"].item() == pytest.approx(1.0892220, abs=1e-7)
    assert stats["iq/td"].item() == pytest.approx(0.9698514, abs=1e-7)
    assert loss.item() == pytest.approx(1.1862071, abs=1e-7)
    terms = token_terms(logits, ids, cmask, EOS)
    torch.testing.assert_close(
        terms.reward(0.5), torch.tensor([[-0.2027326, -0.9729551, 1.3862944]], dtype=torch.float64), atol=1e-7, rtol=0
    )
    assert mle(terms)[0].item() == pytest.approx(1.0892220, abs=1e-7)


def random_batch(dtype=torch.float32, seed=0, V=13):
    """Three sequences: ended by EOS, cut by the length limit (no EOS), and a short one with padding."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(1, V, (3, 9), generator=g)
    cmask = torch.zeros(3, 9, dtype=torch.long)
    cmask[0, 3:] = 1
    ids[0, -1] = EOS
    cmask[1, 2:] = 1  # truncated: last token is not EOS
    cmask[2, 4:7] = 1
    ids[2, 6] = EOS
    ids[2, 7:] = 0  # padding
    logits = torch.randn(3, 9, V, generator=g, dtype=dtype)
    return logits, ids, cmask


def grads(fn, logits, *args):
    logits = logits.clone().requires_grad_(True)
    loss, _ = fn(logits, *args)
    loss.backward()
    return loss.detach(), logits.grad


def test_lam_zero_is_mle_bit_for_bit_on_logits():
    logits, ids, cmask = random_batch()
    loss_mle, g_mle = grads(lambda z, *a: mle(token_terms(z, *a)), logits, ids, cmask, EOS)
    loss_iq, g_iq = grads(lambda z, *a: iqlearn(token_terms(z, *a), lam=0.0, gamma=0.99), logits, ids, cmask, EOS)
    assert torch.equal(loss_mle, loss_iq)
    assert torch.equal(g_mle, g_iq)


def test_gamma_one_rewards_telescope():
    """With gamma = 1: sum_t r_t = log pi(y|x) + V(s_0) for a completion ended by EOS."""
    g = torch.Generator().manual_seed(3)
    logits = torch.randn(2, 7, 11, generator=g, dtype=torch.float64)
    ids = torch.randint(1, 11, (2, 7), generator=g)
    ids[:, -1] = EOS
    cmask = torch.tensor([[0, 0, 1, 1, 1, 1, 1], [0, 1, 1, 1, 1, 1, 1]])
    terms = token_terms(logits, ids, cmask, EOS)
    R = (terms.reward(1.0) * terms.mask).sum(1)
    logp = (terms.logp * terms.mask).sum(1)
    first = terms.mask.int().argmax(1)
    v0 = terms.v[torch.arange(2), first]
    torch.testing.assert_close(R, logp + v0, rtol=0, atol=1e-12)  # float64 telescoping: ~7 roundings of ~10


def test_prompt_logits_and_padding_do_not_change_the_loss():
    logits, ids, cmask = random_batch()
    loss = iqlearn(token_terms(logits, ids, cmask, EOS), lam=0.3, gamma=0.9)[0]
    changed = logits.clone()
    changed[0, :2] += 10 * torch.randn(2, 13)  # rows 0-1 choose prompt tokens 1-2 of sequence 0
    changed[2, 7:] = 1e4  # padding rows
    ids2 = ids.clone()
    ids2[2, 7:] = 5  # whatever the pad id
    assert torch.equal(iqlearn(token_terms(changed, ids2, cmask, EOS), lam=0.3, gamma=0.9)[0], loss)
    # the last prompt row is the state of the first completion token: it does count
    changed[0, 2] += 1.0
    assert not torch.equal(iqlearn(token_terms(changed, ids, cmask, EOS), lam=0.3, gamma=0.9)[0], loss)
    # extra padding columns change nothing either
    wide = torch.cat([logits, torch.randn(3, 4, 13)], 1)
    wide_ids = torch.cat([ids, torch.zeros(3, 4, dtype=torch.long)], 1)
    wide_mask = torch.cat([cmask, torch.zeros(3, 4, dtype=torch.long)], 1)
    # float32 defaults (rtol 1.3e-6 = 11 ulps): the same terms, reduced over a wider masked tensor
    torch.testing.assert_close(iqlearn(token_terms(wide, wide_ids, wide_mask, EOS), lam=0.3, gamma=0.9)[0], loss)


def test_eos_is_terminal_and_truncated_last_token_leaves_td():
    logits, ids, cmask = random_batch(torch.float64)
    terms = token_terms(logits, ids, cmask, EOS)
    # sequence 0 ends in EOS at position 8 (action index 7): V(s') = 0, reward = Q
    assert terms.v_next[0, 7] == 0
    assert terms.reward(0.9)[0, 7] == terms.q[0, 7]
    # sequence 1 was cut: its last action (index 7) is in the NLL but not in the TD term
    assert terms.mask[1].tolist() == [False] + [True] * 7
    assert terms.td_mask[1].tolist() == [False] + [True] * 6 + [False]
    assert terms.td_mask[0].tolist() == terms.mask[0].tolist()
    assert terms.td_mask[2].tolist() == [False, False, False, True, True, True, False, False]
    # the TD mean equals the mean over the hand-listed actions
    r = terms.reward(0.9)
    listed = torch.cat([r[0, 2:8], r[1, 1:7], r[2, 3:6]])
    torch.testing.assert_close(iqlearn(terms, lam=1.0, gamma=0.9)[1]["iq/td"], listed.square().mean())


@pytest.mark.parametrize("stop_grad_next", [False, True])
@pytest.mark.parametrize("beta", [0.0, 0.1])
def test_fused_terms_match_naive_values_and_gradients(stop_grad_next, beta):
    logits, ids, cmask = random_batch(torch.float64, seed=1, V=37)

    def loss_of(terms_fn):
        def f(z, *a):
            t = terms_fn(z, *a, stop_grad_next=stop_grad_next)
            loss = iqlearn(t, lam=0.5, gamma=0.9)[0] - beta * masked_mean(t.entropy, t.mask)
            return loss, None

        return f

    loss_fast, g_fast = grads(loss_of(token_terms), logits, ids, cmask, EOS)
    loss_naive, g_naive = grads(loss_of(naive_token_terms), logits, ids, cmask, EOS)
    torch.testing.assert_close(loss_fast, loss_naive, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(g_fast, g_naive, rtol=1e-10, atol=1e-12)
    fast, naive = token_terms(logits, ids, cmask, EOS), naive_token_terms(logits, ids, cmask, EOS)
    for name in ("q", "v", "v_next", "entropy"):
        torch.testing.assert_close(getattr(fast, name), getattr(naive, name), rtol=1e-12, atol=1e-12)


def test_fused_terms_in_chunks(monkeypatch):
    """More rows than a chunk: the chunked loop covers every row."""
    import irl.kernels as kernels

    monkeypatch.setattr(kernels, "CHUNK_ROWS", 5)
    logits, ids, cmask = random_batch(torch.float64, seed=2)
    loss_fast, g_fast = grads(lambda z, *a: mle(token_terms(z, *a), beta=0.2), logits, ids, cmask, EOS)
    loss_naive, g_naive = grads(lambda z, *a: mle(naive_token_terms(z, *a), beta=0.2), logits, ids, cmask, EOS)
    torch.testing.assert_close(loss_fast, loss_naive, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(g_fast, g_naive, rtol=1e-10, atol=1e-12)


def test_entropy_bonus_and_stats():
    logits, ids, cmask = hand_worked()
    terms = token_terms(logits, ids, cmask, EOS)
    # H of row 0: p = (1, 1, 2, 1)/5 -> -(3 * 0.2 ln0.2 + 0.4 ln0.4) = 1.3321790
    assert terms.entropy[0, 0].item() == pytest.approx(1.3321790, abs=1e-7)
    loss, _ = mle(terms, beta=0.5)
    assert loss.item() == pytest.approx(1.0892220 - 0.5 * terms.entropy[0].mean().item(), abs=1e-7)
    stats = token_stats(terms, gamma=0.5)
    assert stats["iq/v_mean"].item() == pytest.approx((LN(5) + LN(6) + LN(7)) / 3, abs=1e-7)
    assert stats["iq/reward_mean"].item() == pytest.approx((-0.2027326 - 0.9729551 + 1.3862944) / 3, abs=1e-7)
