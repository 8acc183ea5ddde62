"""The objectives from hidden states in chunks (kernels.head_token_terms) against today's route on full logits
(kernels.token_terms), in float64, for every objective; the hidden states the trainer reads against each
model's own logits; training with and without chunks; statistics accumulated on the device against the values
read step by step; a non-finite loss caught without a read per step."""

import functools
import itertools
import json
import math
from collections import defaultdict

import pytest
import torch
import torch.nn.functional as F
from transformers import AutoConfig, AutoModelForCausalLM

from irl import kernels
from irl import trainer as trainer_module
from irl.kernels import action_rows, head_loss, head_token_terms, naive_token_terms, token_terms
from irl.objectives import gail, iqlearn, mle, online_iqlearn, single_pass, token_stats
from irl.runs import checkpoints
from irl.train import train
from irl.trainer import HEAD_IS_LINEAR, IRLTrainer, NonFiniteLossError, final_hidden, head_is_linear
from tests.test_train import final_weights, tiny

EOS = 0
V, H = 29, 6


def layout():
    """Seven sequences of width 9: an expert batch of three, then four sampled completions (two per prompt).

    Per row, the positions whose action is a completion token (the rows the head route projects):
      0: prompt 3, completion ending in EOS at the last position   -> 6 rows (0-5 of the flattened selection)
      1: prompt 2, completion cut by the length limit (no EOS)     -> 7 rows (6-12)
      2: prompt 4, completion of 3 ending in EOS, then padding     -> 3 rows (13-15)
      3: prompt 2, completion of 4 ending in EOS, then padding     -> 4 rows (16-19)
      4: prompt 2, completion cut (no EOS), to the last position   -> 6 rows (20-25)
      5: prompt 1, completion of 2 ending in EOS, then padding     -> 2 rows (26-27)
      6: prompt 1, completion to the end without EOS               -> 8 rows (28-35)
    """
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(1, V, (7, 9), generator=g)
    cmask = torch.zeros(7, 9, dtype=torch.long)
    for row, (start, end, ended) in enumerate(
        [(3, 9, True), (2, 9, False), (4, 7, True), (2, 6, True), (2, 8, False), (1, 3, True), (1, 9, False)]
    ):
        cmask[row, start:end] = 1
        if ended:
            ids[row, end - 1] = EOS
        ids[row, end:] = EOS  # padding: pad id = EOS id, as for GPT-2
    return ids, cmask


def selected_per_row(cmask):
    return cmask[:, 1:].sum(1).tolist()


def borders_cases():
    """Chunk sizes with a border inside a sequence and one on a sequence's end (checked in the test below)."""
    return [1, 4, 6, 13, 1000]  # 1000: one chunk


def test_chunk_sizes_cover_borders_inside_and_at_the_end_of_sequences():
    ends = torch.tensor(selected_per_row(layout()[1])).cumsum(0).tolist()
    assert ends == [6, 13, 16, 20, 26, 28, 36]
    borders = {size: set(range(size, ends[-1], size)) for size in borders_cases()}
    assert borders[4] - set(ends) and borders[6] - set(ends)  # e.g. 4 and 12: inside sequences 0 and 1
    assert borders[4] & set(ends) and borders[6] & set(ends) and borders[13] <= set(ends)  # 16, 6; 13 and 26
    assert borders[1000] == set()  # one chunk
    # V(s') of row 3 (position 5 of sequence 0) is the V of row 4 (position 6): in the next chunk for size 4
    assert action_rows(layout()[1])[:7].tolist() == [2, 3, 4, 5, 6, 7, 10]


def leaves(seed=1, bias=True):
    g = torch.Generator().manual_seed(seed)
    hidden = torch.randn(7, 9, H, generator=g, dtype=torch.float64).requires_grad_(True)
    weight = torch.randn(V, H, generator=g, dtype=torch.float64).requires_grad_(True)
    b = torch.randn(V, generator=g, dtype=torch.float64).requires_grad_(True) if bias else None
    return hidden, weight, b


def both_routes(hidden, weight, bias, ids, cmask, chunk_rows, stop_grad_next=False):
    """TokenTerms of the head route in chunks, and of today's route on the materialised logits."""
    chunked = head_token_terms(hidden, weight, bias, ids, cmask, EOS, stop_grad_next, chunk_rows=chunk_rows)
    full = token_terms(F.linear(hidden, weight, bias), ids, cmask, EOS, stop_grad_next)
    return chunked, full


EXPERT, POLICY = slice(0, 3), slice(3, 7)


def reward_and_ref():
    g = torch.Generator().manual_seed(5)
    return torch.randn(4, 8, generator=g, dtype=torch.float64), torch.randn(4, 8, generator=g, dtype=torch.float64)


OBJECTIVES = {
    "mle": lambda t: mle(t.rows(EXPERT)),
    "mle_entropy": lambda t: mle(t.rows(EXPERT), beta=0.3),
    "iqlearn": lambda t: iqlearn(t.rows(EXPERT), lam=0.5, gamma=0.9),
    "iqlearn_gamma1": lambda t: iqlearn(t.rows(EXPERT), lam=2.0, gamma=1.0),
    "online_iqlearn": lambda t: online_iqlearn(t.rows(EXPERT), t.rows(POLICY), lam=0.5, gamma=0.9, alpha=0.3),
    "online_iqlearn_expert_reg": lambda t: online_iqlearn(
        t.rows(EXPERT), t.rows(POLICY), lam=0.5, gamma=0.9, alpha=0.3, reg_policy=False
    ),
    "gail": lambda t: gail(t.rows(EXPERT), t.rows(POLICY), *reward_and_ref(), num_samples=2, kl_coef=0.1,
                           mle_weight=0.7, beta=0.05),
}


@pytest.mark.parametrize("stop_grad_next, bias", [(False, True), (True, False)])
@pytest.mark.parametrize("chunk_rows", borders_cases())
@pytest.mark.parametrize("name", list(OBJECTIVES))
def test_chunked_matches_full_logits_values_and_gradients(name, chunk_rows, stop_grad_next, bias):
    ids, cmask = layout()
    objective = OBJECTIVES[name]
    results = []
    for route in (0, 1):
        hidden, weight, b = leaves(bias=bias)
        terms = both_routes(hidden, weight, b, ids, cmask, chunk_rows, stop_grad_next)[route]
        loss, stats = objective(terms)
        stats = {**stats, **token_stats(terms.rows(EXPERT), gamma=0.9)}
        loss.backward()
        results.append((loss.detach(), stats, [x.grad for x in (hidden, weight, b) if x is not None]))
    (loss_c, stats_c, grads_c), (loss_f, stats_f, grads_f) = results
    # float64: the same sums in chunks of rows (<= 63 rows x V = 29): ~100 * 2**-53 = 1e-14 relative; a gradient
    # entry sums over every row and vocabulary entry (~2000 terms): 1e-10
    torch.testing.assert_close(loss_c, loss_f, rtol=1e-12, atol=1e-12)
    assert stats_c.keys() == stats_f.keys()
    for key in stats_c:
        torch.testing.assert_close(stats_c[key], stats_f[key], rtol=1e-12, atol=1e-12, msg=key)
    for g_c, g_f, what in zip(grads_c, grads_f, ("hidden", "weight", "bias")):
        torch.testing.assert_close(g_c, g_f, rtol=1e-10, atol=1e-12, msg=what)


SINGLE_PASS_NAMES = [name for name in OBJECTIVES if name != "gail"]


@pytest.mark.parametrize("stop_grad_next, bias", [(False, True), (True, False)])
@pytest.mark.parametrize("chunk_rows", borders_cases())
@pytest.mark.parametrize("name", SINGLE_PASS_NAMES)
def test_single_pass_matches_full_logits_values_and_gradients(name, chunk_rows, stop_grad_next, bias):
    """head_loss forms the gradient while it computes the logits, chunk by chunk, with the rows of later chunks
    not yet known: loss, statistics, logged terms and gradients equal those of the full logits in float64,
    with chunk borders inside sequences and on their ends (V(s') of a chunk's last row in the next chunk)."""
    ids, cmask = layout()
    objective = OBJECTIVES[name]
    hidden, weight, b = leaves(bias=bias)
    loss_s, stats_s, terms_s = head_loss(objective, hidden, weight, b, ids, cmask, EOS, stop_grad_next,
                                         chunk_rows=chunk_rows)  # fmt: skip
    (loss_s * 3).backward()  # an output gradient other than 1 (e.g. 1 / gradient accumulation steps) scales all
    grads_s = [x.grad for x in (hidden, weight, b) if x is not None]
    hidden, weight, b = leaves(bias=bias)
    terms_f = token_terms(F.linear(hidden, weight, b), ids, cmask, EOS, stop_grad_next)
    loss_f, stats_f = objective(terms_f)
    (loss_f * 3).backward()
    grads_f = [x.grad for x in (hidden, weight, b) if x is not None]
    torch.testing.assert_close(loss_s, loss_f.detach(), rtol=1e-12, atol=1e-12)
    assert stats_s.keys() == stats_f.keys()
    for key in stats_s:
        torch.testing.assert_close(stats_s[key], stats_f[key].detach(), rtol=1e-12, atol=1e-12, msg=key)
    for name_, where in (("q", terms_f.mask), ("v", terms_f.mask), ("entropy", terms_f.mask),
                         ("v_next", terms_f.td_mask)):  # fmt: skip
        a, c = getattr(terms_s, name_), getattr(terms_f, name_).detach()
        torch.testing.assert_close(a[where], c[where], rtol=1e-12, atol=1e-12, msg=name_)
    for g_s, g_f, what in zip(grads_s, grads_f, ("hidden", "weight", "bias")):
        torch.testing.assert_close(g_s, g_f, rtol=1e-10, atol=1e-12, msg=what)


def test_single_pass_is_kept_to_objectives_it_is_exact_for():
    """GAIL's advantages sum log pi over each completion, so a chunk's gradient depends on rows of later chunks:
    through head_loss its gradient would be wrong (with chunks; right with one), and `single_pass` excludes it."""
    ids, cmask = layout()
    grads = {}
    for chunk_rows in (4, 1000):
        hidden, weight, _ = leaves(bias=False)
        head_loss(OBJECTIVES["gail"], hidden, weight, None, ids, cmask, EOS, chunk_rows=chunk_rows)[0].backward()
        grads[chunk_rows] = hidden.grad
    hidden, weight, _ = leaves(bias=False)
    OBJECTIVES["gail"](token_terms(F.linear(hidden, weight), ids, cmask, EOS))[0].backward()
    torch.testing.assert_close(grads[1000], hidden.grad, rtol=1e-10, atol=1e-12)
    assert not torch.allclose(grads[4], hidden.grad, rtol=1e-6, atol=1e-6)
    assert [single_pass(f) for f in (mle, iqlearn, online_iqlearn, gail)] == [True, True, True, False]
    assert single_pass(functools.partial(iqlearn, lam=0.1, gamma=0.9))
    assert not single_pass(functools.partial(gail, num_samples=2, kl_coef=0.1, mle_weight=0.0))


@pytest.mark.parametrize("chunk_rows", borders_cases())
def test_chunked_terms_match_inside_the_masks(chunk_rows):
    ids, cmask = layout()
    hidden, weight, b = leaves()
    chunked, full = both_routes(hidden, weight, b, ids, cmask, chunk_rows)
    assert torch.equal(chunked.mask, full.mask) and torch.equal(chunked.td_mask, full.td_mask)
    for name in ("q", "v", "entropy"):
        a, c = getattr(chunked, name), getattr(full, name)
        torch.testing.assert_close(a[full.mask], c[full.mask], rtol=1e-12, atol=1e-12)
        assert (a[~full.mask] == 0).all()  # rows no term reads are never projected
    torch.testing.assert_close(chunked.v_next[full.td_mask], full.v_next[full.td_mask], rtol=1e-12, atol=1e-12)
    naive = naive_token_terms(F.linear(hidden, weight, b), ids, cmask, EOS)  # log_softmax, gather, logsumexp
    for name, where in (("q", full.mask), ("v", full.mask), ("entropy", full.mask), ("v_next", full.td_mask)):
        torch.testing.assert_close(getattr(chunked, name)[where], getattr(naive, name)[where], rtol=1e-12, atol=1e-12)
    # the truncated rows (1, 4, 6) keep their last action in the NLL but not in the TD term; EOS is terminal
    for row in range(7):
        last = full.mask[row].nonzero().max()
        assert chunked.td_mask[row, last] == (row not in (1, 4, 6))
        if row not in (1, 4, 6):
            assert chunked.v_next[row, last] == 0
    # rows passed in (as the trainer computes them before the forward) give the same terms
    given = head_token_terms(hidden, weight, b, ids, cmask, EOS, rows=action_rows(cmask), chunk_rows=chunk_rows)
    assert torch.equal(given.q, chunked.q) and torch.equal(given.v_next, chunked.v_next)


def test_default_chunks_hold_chunk_logits_or_the_hidden_states_size(monkeypatch):
    """Rows per chunk: max(CHUNK_LOGITS // V, N H / V). Small budgets give several chunks, and the same terms."""
    ids, cmask = layout()
    hidden, weight, b = leaves()
    one_chunk = head_token_terms(hidden, weight, b, ids, cmask, EOS)
    sizes = []
    apply = kernels._HeadQVEntropy.apply
    monkeypatch.setattr(kernels._HeadQVEntropy, "apply", lambda *a: sizes.append(a[-1]) or apply(*a))
    monkeypatch.setattr(kernels, "CHUNK_LOGITS", 3 * V)  # 3 rows, but 36 rows of H = 6 over V = 29: 8 rows
    several = head_token_terms(hidden, weight, b, ids, cmask, EOS)
    monkeypatch.setattr(kernels, "CHUNK_LOGITS", 20 * V)
    head_token_terms(hidden, weight, b, ids, cmask, EOS)
    assert sizes == [8, 20]
    for name in ("q", "v", "entropy", "v_next"):
        torch.testing.assert_close(getattr(several, name), getattr(one_chunk, name), rtol=1e-12, atol=1e-12)


def test_groups_of_chunks_gather_each_chunks_gradient_once_in_order(monkeypatch):
    """Below float32 the chunks' dL/dz are gathered into groups of whole chunks (GROUP_ROWS) before the (V, H)
    product: every row once, in order, each group's buffer exactly its chunks' float32 gradients cast; in float32
    each chunk is its own group, handed on as it is."""
    monkeypatch.setattr(kernels, "GROUP_ROWS", 14)  # 3 chunks of 4 rows
    assert [kernels.group_rows(4, True), kernels.group_rows(4, False), kernels.group_rows(20, True)] == [12, 4, 20]
    g = torch.Generator().manual_seed(0)
    grads = torch.randn(23, V, generator=g)
    called = []

    def chunk_grad(rows):
        called.append((rows.start, rows.stop))
        return grads[rows].clone()

    buffers = kernels._ChunkBuffers(4, V, torch.bfloat16, torch.float32, "cpu", statistics=False)
    groups = list(kernels._grouped_logit_grads(23, 4, buffers, chunk_grad))
    assert [(s.start, s.stop) for s, _ in groups] == [(0, 12), (12, 23)]
    assert called == [(0, 4), (4, 8), (8, 12), (12, 16), (16, 20), (20, 23)]
    assert torch.equal(torch.cat([x for _, x in groups]), grads.to(torch.bfloat16))
    called.clear()
    buffers = kernels._ChunkBuffers(4, V, torch.float32, torch.float32, "cpu", statistics=True)
    groups = list(kernels._grouped_logit_grads(23, 4, buffers, chunk_grad))
    assert [(s.start, s.stop) for s, _ in groups] == called == [(0, 4), (4, 8), (8, 12), (12, 16), (16, 20), (20, 23)]
    assert torch.equal(torch.cat([x for _, x in groups]), grads)
    # a group of one chunk below float32: that chunk's gradient cast into e's memory (free once the statistics are
    # taken), read before the next chunk
    monkeypatch.setattr(kernels, "GROUP_ROWS", 4)
    buffers = kernels._ChunkBuffers(4, V, torch.bfloat16, torch.float32, "cpu", statistics=True)
    for group, x in kernels._grouped_logit_grads(23, 4, buffers, chunk_grad):
        assert torch.equal(x, grads[group].to(torch.bfloat16))
        assert x.untyped_storage().data_ptr() == buffers.e.untyped_storage().data_ptr()


def test_single_pass_gradients_are_handed_on_once():
    """head_loss forms its gradients in forward and scales them in place in backward (no second (V, H) copy): a
    second backward through the same loss says why it cannot, instead of scaling them twice."""
    ids, cmask = layout()
    hidden, weight, _ = leaves(bias=False)
    loss = head_loss(lambda t: iqlearn(t, 0.5, 0.9), hidden, weight, None, ids, cmask, EOS, chunk_rows=4)[0]
    (loss * 2).backward(retain_graph=True)
    first = weight.grad.clone()
    with pytest.raises(RuntimeError, match="second backward"):
        loss.backward()
    assert torch.equal(weight.grad, first)


@pytest.mark.parametrize("group_chunks", [1, 2, 1000])
def test_chunked_under_bf16_autocast_runs_the_products_in_bf16(monkeypatch, group_chunks):
    """Under autocast the head routes (recomputing, and one-pass) multiply in bf16, as the model's own lm_head
    would: they agree with the full-logits route under the same autocast to bf16 precision, and their gradients
    keep the leaves' dtypes; with each chunk its own group, groups of two chunks of 4 rows, or one group."""
    monkeypatch.setattr(kernels, "GROUP_ROWS", group_chunks * 4)
    ids, cmask = layout()
    hidden, weight, _ = leaves(bias=False)
    hidden32 = hidden.detach().float().requires_grad_(True)
    weight32 = weight.detach().float().requires_grad_(True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        chunked = head_token_terms(hidden32, weight32, None, ids, cmask, EOS, chunk_rows=4)
        full = token_terms(F.linear(hidden32, weight32), ids, cmask, EOS)
    assert chunked.q.dtype == torch.float32
    # bf16 products (8-bit mantissa: 2**-8 = 3.9e-3 relative per logit) accumulated in float32, on either CPU
    # kind (AMX, or AVX2/AVX-512 emulation: the same roundings of the same products). The loss, a mean over ~40
    # actions of independently rounded terms, agrees to 1e-3 (a quarter of a bf16 ulp); each gradient entry
    # keeps its products' roundings: rtol 0.05 (~13 bf16 ulps), atol 2e-3 near 0; against float64, 2e-2
    loss_c, loss_f = iqlearn(chunked, 0.5, 0.9)[0], iqlearn(full, 0.5, 0.9)[0]
    torch.testing.assert_close(loss_c, loss_f, rtol=1e-3, atol=1e-3)
    g_c = torch.autograd.grad(loss_c, [hidden32, weight32])
    g_f = torch.autograd.grad(loss_f, [hidden32, weight32])
    for a, c in zip(g_c, g_f):
        assert a.dtype == torch.float32
        torch.testing.assert_close(a, c, rtol=0.05, atol=2e-3)
    # and both are close to the float64 result
    exact = iqlearn(token_terms(F.linear(hidden, weight), ids, cmask, EOS), 0.5, 0.9)[0]
    torch.testing.assert_close(loss_c.double(), exact.detach(), rtol=2e-2, atol=2e-2)
    # the one-pass gradient under the same autocast: the same loss and gradients to bf16 precision
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss_s = head_loss(lambda t: iqlearn(t, 0.5, 0.9), hidden32, weight32, None, ids, cmask, EOS, chunk_rows=4)[0]
    torch.testing.assert_close(loss_s, loss_f, rtol=1e-3, atol=1e-3)
    for a, c in zip(torch.autograd.grad(loss_s, [hidden32, weight32]), g_f):
        assert a.dtype == torch.float32
        torch.testing.assert_close(a, c, rtol=0.05, atol=2e-3)


# Tiny configurations of causal LMs: those whose head is linear, and three that transform their logits.
TINY = dict(vocab_size=48, hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
            num_key_value_heads=2, max_position_embeddings=32, head_dim=8, pad_token_id=0, bos_token_id=1,
            eos_token_id=2)
CONFIGS = {t: TINY for t in HEAD_IS_LINEAR} | {
    "gpt2": dict(vocab_size=48, n_embd=16, n_layer=1, n_head=2, n_positions=32, bos_token_id=1, eos_token_id=2),
    "gemma2": dict(TINY, final_logit_softcapping=0.5),  # tanh soft-capping of the logits
    "cohere": dict(TINY, logit_scale=0.5),  # logits times a scale
    "granite": dict(TINY, logits_scaling=4.0),  # logits divided by a scale
}


def tiny_model(model_type):
    torch.manual_seed(0)
    return AutoModelForCausalLM.from_config(AutoConfig.for_model(model_type, **CONFIGS[model_type])).eval()


@pytest.mark.parametrize("model_type", sorted(CONFIGS))
def test_final_hidden_through_the_head_gives_the_models_logits(model_type):
    """For every type in HEAD_IS_LINEAR, lm_head(final_hidden) is the model's own logits; the three others
    transform them, which is why they stay on the full-logits route."""
    model = tiny_model(model_type)
    ids = torch.randint(3, 48, (2, 7), generator=torch.Generator().manual_seed(1))
    attention = torch.ones_like(ids)
    attention[1, 5:] = 0
    head = model.get_output_embeddings()
    with torch.no_grad():
        logits = model(input_ids=ids, attention_mask=attention).logits
        through_head = F.linear(final_hidden(model, ids, attention), head.weight, head.bias)
    assert head_is_linear(model) == (model_type in HEAD_IS_LINEAR)
    if head_is_linear(model):
        # the same float32 hidden states through the same linear map, in a kernel blocked for another shape
        torch.testing.assert_close(through_head, logits, rtol=1e-6, atol=1e-6)
    else:
        assert (through_head - logits).abs().max() > 1e-3


def test_final_hidden_computes_no_logits():
    model = tiny_model("llama")
    seen = []
    model.get_output_embeddings().register_forward_hook(lambda module, args, out: seen.append(out.shape))
    hidden = final_hidden(model, torch.randint(3, 48, (2, 7)), torch.ones(2, 7, dtype=torch.long))
    assert hidden.shape == (2, 7, 16) and seen == [(2, 0, 48)]


# --- the trainer ---------------------------------------------------------------------------------------------


def lm_head_positions(monkeypatch):
    """Record the number of positions the policy's lm_head projects on each call during training, and whether each
    training batch came with its `action_rows` (computed when Trainer fetched it, not in the micro-step)."""
    seen, rows_given = [], []
    init, compute_loss = IRLTrainer.__init__, IRLTrainer.compute_loss

    def recording_init(self, *args, **kwargs):
        init(self, *args, **kwargs)
        self.model.get_output_embeddings().register_forward_hook(lambda m, a, out: seen.append(out.shape[:-1].numel()))

    def recording_compute_loss(self, model, inputs, **kwargs):
        rows_given.append("action_rows" in inputs)
        return compute_loss(self, model, inputs, **kwargs)

    monkeypatch.setattr(IRLTrainer, "__init__", recording_init)
    monkeypatch.setattr(IRLTrainer, "compute_loss", recording_compute_loss)
    return seen, rows_given


@pytest.mark.parametrize("objective", [dict(objective="mle", beta=0.1), dict(objective="iqlearn", lam=0.3)])
def test_training_with_and_without_chunks_ends_with_the_same_weights(tmp_path, monkeypatch, objective):
    seen, rows_given = lm_head_positions(monkeypatch)
    chunked = train(tiny(tmp_path, "chunked", **objective))
    assert chunked.chunked and seen and max(seen) == 0  # no position's logits ever computed, eval included
    assert rows_given == [True] * 3
    seen.clear()
    full = train(tiny(tmp_path, "full", chunked_loss=False, **objective))
    assert not full.chunked and min(seen) > 0
    a, b = final_weights(tmp_path / "chunked"), final_weights(tmp_path / "full")
    # float32 sums in another order (the one-pass gradient adds the action logits' part row by row), through
    # Adam, whose first steps move a weight by about lr whatever its gradient's size: a few weights of near-zero
    # gradient differ by up to about 3e-5 after three steps (float64 agreement: test_single_pass_matches_...)
    for name in a:
        torch.testing.assert_close(a[name], b[name], rtol=1e-4, atol=1e-4, msg=name)
    rows = {run: [json.loads(line) for line in (tmp_path / run / "metrics.jsonl").read_text().splitlines()]
            for run in ("chunked", "full")}
    for r_c, r_f in zip(rows["chunked"][1:], rows["full"][1:]):
        for key in ("train/loss", "iq/nll", "iq/td", "iq/entropy", "eval/nll"):
            if key in r_c:
                assert r_c[key] == pytest.approx(r_f[key], rel=1e-4), key  # of weights 3e-5 apart (above)


def test_models_that_transform_their_logits_train_on_full_logits():
    assert not head_is_linear(tiny_model("gemma2")) and not head_is_linear(tiny_model("cohere"))
    assert head_is_linear(tiny_model("llama")) and head_is_linear(tiny_model("gpt2"))


@pytest.mark.parametrize(
    "overrides",
    [dict(objective="iqlearn", lam=0.2, gradient_accumulation_steps=2, logging_steps=2, max_steps=4),
     dict(objective="iqlearn", lam=0.2, alpha=0.5, sample_max_new_tokens=8, logging_steps=2, max_steps=4)],
    ids=["offline_accumulated", "online"],
)
def test_logged_statistics_are_window_means_of_the_step_values(tmp_path, monkeypatch, overrides):
    """Every statistic logged is the mean over its logging window of the values recorded at each micro-step, as
    they read one by one (the old way): the sums kept on the device lose nothing."""
    recorded = defaultdict(list)  # (key, optimizer step at record time) -> values
    record = IRLTrainer.record

    def reading_record(self, stats):
        for key, value in stats.items():
            recorded[key, self.state.global_step].append(value.item())
        record(self, stats)

    monkeypatch.setattr(IRLTrainer, "record", reading_record)
    cfg = tiny(tmp_path, **overrides)
    train(cfg)
    logged = [r for r in map(json.loads, (tmp_path / "run" / "metrics.jsonl").read_text().splitlines())
              if "train/loss" in r]
    assert [r["step"] for r in logged] == [2, 4]
    keys = {key for key, _ in recorded}
    assert {"iq/nll", "iq/td", "iq/reward_mean", "iq/v_mean", "iq/entropy"} <= keys
    if cfg.alpha:
        assert {"sample/length", "sample/truncated", "iq/value_policy", "iq/td_policy"} <= keys
    previous = 0
    for row in logged:
        for key in keys:
            window = [v for (k, step), values in recorded.items() if k == key and previous <= step < row["step"]
                      for v in values]
            assert len(window) == (row["step"] - previous) * cfg.gradient_accumulation_steps
            # a float32 running sum of <= 8 values against Python's float64 mean: 8 * 2**-24 = 5e-7 relative
            assert row[key] == pytest.approx(sum(window) / len(window), rel=1e-6, abs=1e-7), (key, row["step"])
        previous = row["step"]


def nan_from_step(step):
    """An `objective_fn` whose loss is MLE's for the first `step` micro-steps, NaN after (one micro-step per step)."""

    def objective_fn(cfg):
        calls = itertools.count()

        def objective(terms):
            loss, stats = mle(terms)
            return (loss * float("nan") if next(calls) >= step else loss), stats

        return objective

    return objective_fn


def test_nan_loss_stops_at_the_next_checkpoint_before_writing_it(tmp_path, monkeypatch):
    """NaN at step 2, logs every 5 steps, checkpoints every 3: training stops when checkpoint-3 would be written,
    naming step 2, and no checkpoint holds weights updated with the NaN."""
    monkeypatch.setattr(trainer_module, "objective_fn", nan_from_step(2))
    with pytest.raises(NonFiniteLossError, match="non-finite loss nan at step 2; no checkpoint holds"):
        train(tiny(tmp_path, max_steps=6, logging_steps=5, save_steps=3))
    assert checkpoints(tmp_path / "run") == []


def test_nan_loss_stops_at_the_next_log(tmp_path, monkeypatch):
    monkeypatch.setattr(trainer_module, "objective_fn", nan_from_step(3))
    with pytest.raises(NonFiniteLossError, match="non-finite loss nan at step 3"):
        train(tiny(tmp_path, max_steps=8, logging_steps=2, save_steps=2))
    assert [p.name for p in checkpoints(tmp_path / "run")] == ["checkpoint-2"]
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if "train/loss" in r] == [2]  # the log at step 4 raised before being written
    assert all(math.isfinite(r["train/loss"]) for r in rows if "train/loss" in r)


def route_line(run_dir) -> dict:
    return next(r for r in map(json.loads, (run_dir / "metrics.jsonl").read_text().splitlines()) if "route/loss" in r)


def test_the_check_cuts_its_rows_to_128_positions_around_their_first_completion_tokens():
    """At any context the self-check reads 2 x 128 positions: from 64 before the rows' earliest first completion
    token (row 0's at 100, row 1's at 150: positions 36 to 163), the same positions of every tensor."""
    ids = torch.arange(2 * 300).view(2, 300)
    completion = torch.zeros(2, 300, dtype=torch.long)
    completion[0, 100:280] = 1
    completion[1, 150:200] = 1
    rows = trainer_module.check_window({"input_ids": ids, "attention_mask": torch.ones_like(ids),
                                        "completion_mask": completion})  # fmt: skip
    assert torch.equal(rows["input_ids"], ids[:, 36:164])
    assert torch.equal(rows["completion_mask"], completion[:, 36:164])
    assert rows["completion_mask"].sum(1).tolist() == [64, 14] and rows["attention_mask"].shape == (2, 128)
    short = trainer_module.check_window({"input_ids": ids[:, :50], "completion_mask": completion[:, :50]})
    assert torch.equal(short["input_ids"], ids[:, :50])  # no completion token: from the start, as long as it is
    completion[0, :] = 0  # only row 1 has completion tokens
    assert torch.equal(trainer_module.check_window({"completion_mask": completion})["completion_mask"],
                       completion[:, 86:214])


def test_a_wrong_chunked_loss_is_caught_and_the_run_trains_on_the_logits(tmp_path, monkeypatch):
    """The chunked loss made 1% wrong: its self-check sees it (a relative difference of 1e-2 against 1e-3 allowed
    in float32), the run falls back to materialised logits and ends with the weights of a run that trained on them
    from the start, bit for bit; metrics.jsonl says which route ran and by how much the check differed."""
    monkeypatch.setattr(trainer_module, "_checked", {})
    head_loss = kernels.head_loss

    def wrong(*args, **kwargs):
        loss, stats, terms = head_loss(*args, **kwargs)
        return loss * 1.01, stats, terms

    monkeypatch.setattr(kernels, "head_loss", wrong)
    caught = train(tiny(tmp_path, "caught", objective="iqlearn", lam=0.3))
    assert not caught.chunked
    monkeypatch.setattr(kernels, "head_loss", head_loss)
    stock = train(tiny(tmp_path, "stock", objective="iqlearn", lam=0.3, chunked_loss=False))
    a, b = final_weights(tmp_path / "caught"), final_weights(tmp_path / "stock")
    assert all(torch.equal(a[name], b[name]) for name in a)
    line = route_line(tmp_path / "caught")
    assert line["route/loss"] == "materialised"
    assert line["check/chunked_loss_max_rel_diff"] == pytest.approx(1e-2, rel=1e-3)
    assert not stock.chunked and route_line(tmp_path / "stock") == {"step": 0, "route/loss": "materialised"}


def test_the_chunked_loss_passes_its_check_once_per_process_and_the_check_can_be_skipped(tmp_path, monkeypatch):
    monkeypatch.setattr(trainer_module, "_checked", {})
    checks = []
    check = trainer_module.check_chunked
    monkeypatch.setattr(trainer_module, "check_chunked", lambda *a: checks.append(1) or check(*a))
    first = train(tiny(tmp_path, "first", max_steps=1, save_steps=1))
    line = route_line(tmp_path / "first")
    assert first.chunked and line["route/loss"] == "chunked" and line["check/chunked_loss_max_rel_diff"] < 1e-5
    train(tiny(tmp_path, "second", max_steps=1, save_steps=1))
    assert len(checks) == 1 and route_line(tmp_path / "second")["route/loss"] == "chunked"  # the same key: checked
    monkeypatch.setattr(trainer_module, "_checked", {})
    train(tiny(tmp_path, "unchecked", max_steps=1, save_steps=1, check_fast_paths=False))
    assert len(checks) == 1 and route_line(tmp_path / "unchecked") == {"step": 0, "route/loss": "chunked"}
