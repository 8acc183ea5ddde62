"""The generation module: step-by-step decoding where finished rows leave the batch gives the rows transformers'
`generate` gives (greedy, with a logits processor that ends rows at different steps; samples of a prompt that
share its cache), reproducible samples, and the token record (ids up to EOS, ended flags, entropy); the
preallocated cache holds what transformers' own cache holds."""

import numpy as np
import pytest
import torch
from transformers import LogitsProcessor, LogitsProcessorList

from transformers.cache_utils import DynamicLayer

from irl import generation
from irl.generation import Decoding, agreement, decode, left_padded, truncate_left
from irl.kv_cache import PreallocatedLayer
from irl.model import build_preset, train_tokenizer

# Entropies of float32 logits computed under other batch shapes (rows leave the batch, other padding, one thread
# or two): the same sums in another order put a logit of size <= 16 a few ulps, at most ~16 (3e-5), off, and
# H = -sum p log p moves by at most max|dz| * 2 ln V (V <= 400: 12x) for that: 4e-4.
ENTROPY_ATOL = 4e-4
PROMPTS = ["Question: 1 + 2?\nAnswer:", "Question: 2?\nAnswer:", "hi", "Question: 10 + 20 + 30?\nAnswer:"]


class EndAfter(LogitsProcessor):
    """Forces EOS once a row has generated (its first prompt token mod 5) + 2 tokens: rows end at different steps."""

    def __init__(self, width: int, eos: int):
        self.width, self.eos = width, eos

    def __call__(self, input_ids, scores):
        scores = scores.clone()
        for row, ids in enumerate(input_ids.tolist()):
            if len(ids) - self.width >= ids[self.width - 1] % 5 + 2:
                scores[row] = -float("inf")
                scores[row, self.eos] = 0.0
        return scores


class OnlyArgmax(LogitsProcessor):
    """Leaves only each row's most likely token: sampling then draws it, whatever the random numbers."""

    def __call__(self, input_ids, scores):
        return torch.full_like(scores, -float("inf")).scatter(1, scores.argmax(1, keepdim=True), 0.0)


@pytest.fixture(scope="module")
def model_and_tokenizer():
    tokenizer = train_tokenizer(["Question: 1 + 2?\nAnswer: 1 + 2 = 3\n#### 3", "hello world and more"] * 10, 300)
    return build_preset("tiny", tokenizer, 128, seed=0).eval(), tokenizer


def run(model, tokenizer, decoding, k, compact, processor=True):
    batch = left_padded(tokenizer, PROMPTS, "cpu")
    processors = LogitsProcessorList([EndAfter(batch["input_ids"].shape[1], tokenizer.eos_token_id)])
    return decode(model, batch, decoding, k, max_new_tokens=12, seed=3, eos_token_id=tokenizer.eos_token_id,
                  pad_token_id=tokenizer.pad_token_id, entropy=True,
                  logits_processor=processors if processor else None, compact=compact)  # fmt: skip


def test_compact_greedy_equals_generate(model_and_tokenizer):
    model, tokenizer = model_and_tokenizer
    compact = run(model, tokenizer, Decoding("greedy"), 1, compact=True)
    full = run(model, tokenizer, Decoding("greedy"), 1, compact=False)
    assert compact.completion_ids == full.completion_ids and compact.ended == full.ended
    assert len({len(c) for c in compact.completion_ids}) > 1 and all(compact.ended)  # rows ended at different steps
    assert all(c[-1] == tokenizer.eos_token_id and tokenizer.eos_token_id not in c[:-1] for c in compact.completion_ids)
    assert compact.entropy == pytest.approx(full.entropy, abs=ENTROPY_ATOL)
    assert compact.prompt_ids[0] == tokenizer(PROMPTS[0])["input_ids"]  # padding removed


def test_compact_samples_of_a_prompt_share_its_cache_and_equal_generate(model_and_tokenizer):
    """The prompt is read once and its cache repeated for the K samples: with a processor that leaves one token
    per row, sampling is deterministic, and the K rows of each prompt equal generate's (which reads the prompt K
    times), as rows end at different steps."""
    model, tokenizer = model_and_tokenizer
    batch = left_padded(tokenizer, PROMPTS, "cpu")
    width = batch["input_ids"].shape[1]

    def sampled(compact):
        processors = LogitsProcessorList([OnlyArgmax(), EndAfter(width, tokenizer.eos_token_id)])
        return decode(model, batch, Decoding("sample", temperature=1.0), 3, max_new_tokens=12, seed=0,
                      eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id, entropy=True,
                      logits_processor=processors, compact=compact)  # fmt: skip

    compact, full = sampled(True), sampled(False)
    assert compact.completion_ids == full.completion_ids and len(compact.completion_ids) == 12
    assert len({len(c) for c in compact.completion_ids}) > 1 and all(compact.ended)
    assert compact.entropy == pytest.approx(full.entropy, abs=ENTROPY_ATOL)


def test_preallocated_layer_holds_what_a_dynamic_layer_holds():
    """Built from a filled layer with each row repeated, written step by step and compacted: the same keys and
    values, bit for bit, as transformers' DynamicLayer given the repeated rows, the same updates and selections."""
    torch.manual_seed(0)
    keys, values = torch.randn(2, 3, 4, 5), torch.randn(2, 3, 4, 5)
    ours, theirs = PreallocatedLayer(keys, values, capacity=8, repeats=3), DynamicLayer()
    theirs.update(keys.repeat_interleave(3, 0), values.repeat_interleave(3, 0))
    # none dropped; rows 1 and 4 dropped, row 5 filling place 1; the last dropped; the first dropped, in swapped order
    for keep in ([0, 1, 2, 3, 4, 5], [0, 5, 2, 3], [0, 1, 2], [2, 1]):
        new_keys, new_values = torch.randn(6, 3, 1, 5)[: len(keep)], torch.randn(6, 3, 1, 5)[: len(keep)]
        if len(keep) < ours.rows:
            ours.batch_select_indices(torch.tensor(keep))
            theirs.batch_select_indices(torch.tensor(keep))
        got, expected = ours.update(new_keys, new_values), theirs.update(new_keys, new_values)
        assert all(torch.equal(a, b) for a, b in zip(got, expected))
        assert ours.get_seq_length() == theirs.get_seq_length()
    assert ours.get_seq_length() == 8 and ours.rows == 2
    with pytest.raises(ValueError, match="cache full"):
        ours.update(new_keys, new_values)


def test_sampling_is_reproducible_and_cut_rows_are_flagged(model_and_tokenizer):
    model, tokenizer = model_and_tokenizer
    a = run(model, tokenizer, Decoding("sample", temperature=1.0), 3, compact=True, processor=False)
    b = run(model, tokenizer, Decoding("sample", temperature=1.0), 3, compact=True, processor=False)
    assert a.completion_ids == b.completion_ids and len(a.completion_ids) == 12
    for ids, ended in zip(a.completion_ids, a.ended):
        assert ended == (ids[-1] == tokenizer.eos_token_id) and (ended or len(ids) == 12)
    c = run(model, tokenizer, Decoding("sample", temperature=1.0), 3, compact=True)
    assert all(c.ended) and len({len(x) for x in c.completion_ids}) > 1


def test_beam_search_goes_through_generate(model_and_tokenizer):
    model, tokenizer = model_and_tokenizer
    beams = run(model, tokenizer, Decoding("beam", beams=2), 2, compact=True)
    again = run(model, tokenizer, Decoding("beam", beams=2), 2, compact=False)
    assert beams.completion_ids == again.completion_ids and len(beams.completion_ids) == 8


def test_long_prompts_keep_their_last_tokens_and_the_record_says_so(model_and_tokenizer):
    """A prompt longer than max_prompt_tokens keeps its last ones (the part the completion continues); shorter
    prompts are untouched; the decoded record's prompt_ids are the ids the model read."""
    model, tokenizer = model_and_tokenizer
    full = [tokenizer(p)["input_ids"] for p in PROMPTS]
    keep = 6
    batch = left_padded(tokenizer, PROMPTS, "cpu", max_prompt_tokens=keep)
    assert batch["input_ids"].shape[1] == keep
    out = decode(model, batch, Decoding("greedy"), 1, max_new_tokens=3, seed=0, eos_token_id=tokenizer.eos_token_id,
                 pad_token_id=tokenizer.pad_token_id)  # fmt: skip
    assert out.prompt_ids == [ids[-keep:] for ids in full]
    assert any(len(ids) > keep for ids in full) and any(len(ids) <= keep for ids in full)


def test_left_truncation_keeps_a_leading_special_token():
    class Bos:
        all_special_ids = [1]

    assert truncate_left([1, 10, 11, 12, 13], 3, Bos()) == [1, 12, 13]
    assert truncate_left([10, 11, 12, 13], 3, Bos()) == [11, 12, 13]
    assert truncate_left([1, 10], 3, Bos()) == [1, 10]


def test_the_self_check_allows_a_tie_and_stops_comparing_that_row():
    """generation.agreement on hand-made logits (2 rows, vocabulary 3, tolerance 0.1 of the largest magnitude, 4):
    equal tokens and logits within it pass; a row that takes the other side of a tie (generate's logits 4.0 and
    3.8: 0.2 <= 0.4) passes, counts one tie, and its later logits, read after another token, are not compared; a
    row that takes a token 2.0 below generate's (> 0.4) fails, as do logits 0.5 apart on rows that agree."""
    stock = [torch.tensor([[4.0, 3.8, 0.0], [0.0, 1.0, 3.0]]), torch.tensor([[1.0, 2.0, 0.0], [0.0, 0.0, 2.0]])]
    same = agreement([[0, 1], [2, 2]], [[0, 1], [2, 2]], [b.clone() for b in stock], stock, 0.1)
    assert same == {"passed": True, "tokens_equal": True, "ties": 0, "check/compact_logits_max_rel_diff": 0.0,
                    "tolerance": 0.1}  # fmt: skip
    far_after = [stock[0].clone(), stock[1] + torch.tensor([[9.0, 0.0, 0.0], [0.0, 0.0, 0.0]])]
    tie = agreement([[1, 0], [2, 2]], [[0, 1], [2, 2]], far_after, stock, 0.1)
    assert tie["passed"] and not tie["tokens_equal"] and tie["ties"] == 1
    assert tie["check/compact_logits_max_rel_diff"] == 0.0  # row 0's second step not compared
    wrong = [torch.tensor([[4.0, 3.8, 0.0], [0.0, 1.0, 3.0]]), stock[1]]
    assert not agreement([[0, 1], [1, 2]], [[0, 1], [2, 2]], wrong, stock, 0.1)["passed"]  # 1.0 against 3.0
    off = [stock[0] + 0.5, stock[1]]
    result = agreement([[0, 1], [2, 2]], [[0, 1], [2, 2]], off, stock, 0.1)
    assert not result["passed"] and result["check/compact_logits_max_rel_diff"] == pytest.approx(0.5 / 4.0)


def test_a_wrong_compact_decoder_is_caught_and_decoding_goes_through_generate(model_and_tokenizer, monkeypatch):
    """The compact decoder's cache made wrong (the first layer's values scaled by 1.5 once the prompt is read): its
    self-check sees it, and the decoding goes through generate, with generate's results exactly; Decoded.path says
    so. A correct decoder passes the check (tokens equal, logits within float32 roundings), once per process;
    `check=False` skips it."""
    model, tokenizer = model_and_tokenizer
    monkeypatch.setattr(generation, "_checked", {})
    allocate = generation.preallocated

    def wrong(cache, *args, **kwargs):
        cache = allocate(cache, *args, **kwargs)
        cache.layers[0].values.mul_(1.5)
        return cache

    monkeypatch.setattr(generation, "shares_prefix", lambda *a: False)  # every row through `preallocated`
    monkeypatch.setattr(generation, "preallocated", wrong)
    caught = run(model, tokenizer, Decoding("greedy"), 1, compact=True)
    stock = run(model, tokenizer, Decoding("greedy"), 1, compact=False)
    assert caught == stock and caught.path == stock.path == generation.GENERATE
    record = next(iter(generation._checked.values()))
    assert not record["passed"] and record["check/compact_logits_max_rel_diff"] > record["tolerance"]

    monkeypatch.undo()
    monkeypatch.setattr(generation, "_checked", {})
    checks = []
    check = generation.check_compact
    monkeypatch.setattr(generation, "check_compact", lambda *a, **kw: checks.append(1) or check(*a, **kw))
    assert run(model, tokenizer, Decoding("greedy"), 1, compact=True).path == generation.COMPACT
    assert run(model, tokenizer, Decoding("sample", 1.0), 2, compact=True).path == generation.COMPACT
    record = next(iter(generation._checked.values()))
    assert record["passed"] and record["tokens_equal"] and record["check/compact_logits_max_rel_diff"] < 1e-5
    assert len(checks) == 2 and len(generation._checked) == 1  # asked twice, computed once
    generation._checked.clear()
    batch = left_padded(tokenizer, PROMPTS, "cpu")
    decode(model, batch, Decoding("greedy"), 1, max_new_tokens=4, seed=0, eos_token_id=tokenizer.eos_token_id,
           pad_token_id=tokenizer.pad_token_id, check=False)  # fmt: skip
    assert not generation._checked


def test_top_p_and_min_p_filter_as_hand_computed():
    """probs .5, .3, .15, .05: top-p 0.8 keeps the smallest set of most likely tokens holding >= 0.8 ({0, 1}),
    min-p 0.25 keeps the tokens of probability >= 0.25 x 0.5 = 0.125 ({0, 1, 2}); both: {0, 1}. The defaults
    filter nothing and keep the labels made before these axes existed."""
    logits = torch.tensor([[0.5, 0.3, 0.15, 0.05]]).log()
    ids = torch.zeros((1, 1), dtype=torch.long)

    def kept(decoding):
        scores = logits
        for warp in decoding.warpers():
            scores = warp(ids, scores)
        return torch.isfinite(scores[0]).nonzero()[:, 0].tolist()

    assert kept(Decoding("sample", 1.0, top_p=0.8)) == [0, 1]
    assert kept(Decoding("sample", 1.0, min_p=0.25)) == [0, 1, 2]
    assert kept(Decoding("sample", 1.0, top_p=0.8, min_p=0.25)) == [0, 1]
    assert kept(Decoding("sample", 1.0)) == [0, 1, 2, 3] and Decoding("sample", 1.0).warpers() == []
    labels = [Decoding("sample", 1.0).label, Decoding("sample", 0.5, top_p=0.9).label,
              Decoding("sample", 1.0, min_p=0.05).label, Decoding("sample", 0.7, top_p=0.95, min_p=0.1).label]
    assert labels == ["t=1", "t=0.5,top_p=0.9", "t=1,min_p=0.05", "t=0.7,top_p=0.95,min_p=0.1"]


def test_draw_inverts_the_cumulative_distribution_by_hand_and_in_frequency():
    """probs .25, 0, .5, .25 (cumulative .25, .25, .75, 1, exact in binary): u = .1 draws 0; u = .25 draws 2,
    never the empty token 1; u = .75 draws 3; rows need not sum to one (.125, .125: cumulative .125, .25, so u = .5
    draws 1); u = 1, which rounding can reach, draws the last token of nonzero probability. 200,000 draws from a
    row of five probabilities give each token's frequency within 5 standard errors."""
    probs = torch.tensor([[0.25, 0.0, 0.5, 0.25]] * 4 + [[0.125, 0.125, 0.0, 0.0], [0.5, 0.5, 0.0, 0.0]])
    uniform = torch.tensor([0.1, 0.25, 0.75, 0.999, 0.5, 1.0])
    assert generation.draw(probs, uniform).tolist() == [0, 2, 3, 3, 1, 1]
    torch.manual_seed(0)
    p = torch.tensor([0.05, 0.4, 0.0, 0.25, 0.3])
    n = 200_000
    counts = torch.bincount(generation.draw(p.expand(n, -1)), minlength=5).double()
    assert counts[2] == 0
    assert ((counts / n - p.double()).abs() <= 5 * (p.double() * (1 - p.double()) / n).sqrt() + 1e-12).all(), counts


class Recorder(LogitsProcessor):
    """Keeps each step's raw scores by the row's ids so far, to find the step a token was drawn in."""

    def __init__(self):
        self.steps = []

    def __call__(self, input_ids, scores):
        self.steps.append({tuple(row): s.clone() for row, s in zip(input_ids.tolist(), scores)})
        return scores


@pytest.mark.parametrize("top_p, min_p", [(0.5, 0.0), (1.0, 0.5), (0.7, 0.1)])
def test_compact_sampling_draws_only_tokens_the_filters_keep(model_and_tokenizer, top_p, min_p):
    """Every token the compact sampler draws at temperature 0.8 is in the nucleus (the fewest most likely tokens
    of softmax(logits / 0.8) holding >= top_p) and has probability >= min_p x the largest, computed here from the
    step's raw logits; the unfiltered distribution puts much of its mass outside, so the filters did something."""
    model, tokenizer = model_and_tokenizer
    batch = left_padded(tokenizer, PROMPTS, "cpu")
    recorder = Recorder()
    decoding = Decoding("sample", temperature=0.8, top_p=top_p, min_p=min_p)
    out = decode(model, batch, decoding, 3, max_new_tokens=12, seed=3, eos_token_id=tokenizer.eos_token_id,
                 pad_token_id=tokenizer.pad_token_id, logits_processor=LogitsProcessorList([recorder]))  # fmt: skip
    outside = []
    for i, (prompt, completion) in enumerate(zip(out.prompt_ids, out.completion_ids)):
        padded = batch["input_ids"][i // 3].tolist()
        for t, token in enumerate(completion):
            probs = torch.softmax(recorder.steps[t][tuple(padded + completion[:t])] / 0.8, -1)
            ranked = probs.sort(descending=True).values
            # the smallest prefix whose mass reaches top_p (all of them at top_p 1, where float sums may fall short)
            nucleus = min(int((ranked.cumsum(0) < top_p).sum()) + 1, len(ranked))
            assert probs[token] >= ranked[nucleus - 1] and probs[token] >= min_p * ranked[0]
            outside.append(1 - float(ranked[:nucleus][ranked[:nucleus] >= min_p * ranked[0]].sum()))
    assert np.mean(outside) > 0.1, np.mean(outside)


def test_generate_takes_top_p_and_min_p(model_and_tokenizer):
    """Through generate (compact=False), a top-p small enough to keep one token draws the greedy tokens."""
    model, tokenizer = model_and_tokenizer
    greedy = run(model, tokenizer, Decoding("greedy"), 1, compact=False)
    nucleus = run(model, tokenizer, Decoding("sample", temperature=1.0, top_p=1e-6), 1, compact=False)
    assert nucleus.completion_ids == greedy.completion_ids
