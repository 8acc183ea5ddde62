"""Shared-prefix attention (irl.kv_cache): the K samples of a prompt read its keys and values once. It is attention
over the whole cache computed in two parts, so it must give what attention over the concatenated cache gives,
in float64 to rounding, through padding, grouped key-value heads and rows (and whole prompts) leaving the batch;
decoding with it must give the rows decoding without it gives; and models it does not fit keep the plain path."""

import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM, LogitsProcessorList
from transformers import Qwen2Config, Qwen2ForCausalLM
from transformers.cache_utils import DynamicCache

import irl.generation as generation
from irl.generation import Decoding, decode, left_padded
from irl.kv_cache import SharedPrefixLayer, fill_holes, shares_prefix
from irl.model import train_tokenizer

PROMPTS = ["Question: 1 + 2?\nAnswer:", "Question: 2?\nAnswer:", "hi", "Question: 10 + 20 + 30?\nAnswer:"]


def attention_over_whole_cache(query, keys, values, mask, scaling):
    """Textbook attention of (R, Hq, 1, D) queries over (R, H, L, D) keys and values, key-value head h serving
    query heads h * G ... h * G + G - 1, positions where `mask` (R, L) is False left out."""
    group = query.shape[1] // keys.shape[1]
    keys, values = keys.repeat_interleave(group, 1), values.repeat_interleave(group, 1)
    scores = (query @ keys.transpose(-1, -2)) * scaling
    scores = scores.masked_fill(~mask[:, None, None, :], -torch.inf)
    return (torch.softmax(scores, -1) @ values).transpose(1, 2)  # (R, 1, Hq, D)


def test_fill_holes_moves_one_row_per_dropped_row():
    keep = torch.tensor([True, False, True, True, False, True])
    assert fill_holes(keep).tolist() == [0, 5, 2, 3]  # row 5 takes row 1's place; rows 0, 2, 3 stay
    assert fill_holes(torch.tensor([False, True, True])).tolist() == [2, 1]
    assert fill_holes(torch.tensor([True, True])).tolist() == [0, 1]
    assert fill_holes(torch.tensor([False, False])).tolist() == []


def test_two_part_attention_equals_attention_over_the_concatenated_cache():
    """3 prompts (left padding of 2, 0 and 4 positions), 4 samples each, 4 query heads over 2 key-value heads, float64:
    at each step the output equals textbook attention over [the row's prompt ; its generated positions] to 1e-12,
    while rows leave (inside a prompt's group, a prompt's last row, the first row)."""
    torch.manual_seed(0)
    prompts, samples, heads, query_heads, width, dim = 3, 4, 2, 4, 6, 8
    prefix_keys = torch.randn(prompts, heads, width, dim, dtype=torch.float64)
    prefix_values = torch.randn(prompts, heads, width, dim, dtype=torch.float64)
    prompt_mask = torch.ones(prompts, width, dtype=torch.long)
    prompt_mask[0, :2], prompt_mask[2, :4] = 0, 0
    layer = SharedPrefixLayer(prefix_keys, prefix_values, prompt_mask, capacity=6, repeats=samples)
    rows = torch.arange(prompts * samples)  # each active row's original row: prompt rows // samples
    own_keys = torch.empty(prompts * samples, heads, 0, dim, dtype=torch.float64)
    own_values = own_keys.clone()
    # the active rows to drop at each step: one inside a prompt's group, the last row, the first row, a prompt's
    # last rows; they leave as in decoding, the last kept rows filling their places (`fill_holes`)
    drops = [[], [2], [10], [0], [3, 4, 6, 7], [1]]
    for step, drop in enumerate(drops):
        if drop:
            keep = fill_holes(~torch.isin(torch.arange(len(rows)), torch.tensor(drop)))
            layer.batch_select_indices(keep)
            rows, own_keys, own_values = rows[keep], own_keys[keep], own_values[keep]
        new_keys = torch.randn(len(rows), heads, 1, dim, dtype=torch.float64)
        new_values = torch.randn(len(rows), heads, 1, dim, dtype=torch.float64)
        got_keys, got_values = layer.update(new_keys, new_values)
        own_keys, own_values = torch.cat([own_keys, new_keys], 2), torch.cat([own_values, new_values], 2)
        assert torch.equal(got_keys, own_keys) and torch.equal(got_values, own_values)
        assert layer.get_seq_length() == width + step + 1

        query = torch.randn(len(rows), query_heads, 1, dim, dtype=torch.float64)
        prompt = rows // samples
        keys = torch.cat([prefix_keys[prompt], own_keys], 2)
        values = torch.cat([prefix_values[prompt], own_values], 2)
        mask = torch.cat([prompt_mask[prompt].bool(), torch.ones(len(rows), step + 1, dtype=torch.bool)], 1)
        expected = attention_over_whole_cache(query, keys, values, mask, scaling=dim**-0.5)
        got = layer.attend(query, got_keys, got_values, scaling=dim**-0.5)
        assert got.shape == (len(rows), 1, query_heads, dim)
        # float64 attention over <= 20 positions, the same sums in another order: ~20 * 2**-53 of values ~3
        torch.testing.assert_close(got, expected, rtol=0, atol=1e-12)
    assert layer.prefix_keys_t.shape[0] < prompts  # a prompt that lost all its rows lost its keys too
    with pytest.raises(ValueError, match="one token per step"):
        layer.attend(torch.randn(3, query_heads, 2, dim, dtype=torch.float64), got_keys, got_values, 1.0)


@pytest.fixture(scope="module")
def tokenizer():
    return train_tokenizer(["Question: 1 + 2?\nAnswer: 1 + 2 = 3\n#### 3", "hello world and more"] * 10, 300)


def tiny(kind: str, tokenizer):
    """A small random float64 decoder of `kind`, with grouped key-value heads where the architecture has them."""
    torch.manual_seed(0)
    ids = dict(vocab_size=len(tokenizer), eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    if kind == "gpt2":
        model = GPT2LMHeadModel(GPT2Config(n_embd=32, n_layer=2, n_head=4, n_positions=64, bos_token_id=None, **ids))
    else:
        config, cls = {"llama": (LlamaConfig, LlamaForCausalLM), "qwen2": (Qwen2Config, Qwen2ForCausalLM)}[kind]
        model = cls(config(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                           num_key_value_heads=2, max_position_embeddings=64, **ids))  # fmt: skip
    return model.double().eval()


class EndAfterMultipleOfThree:
    """Forces EOS after a generated token whose id is a multiple of 3 (from the second one on): samples of one
    prompt end at different steps, as do prompts."""

    def __init__(self, width: int, eos: int):
        self.width, self.eos = width, eos

    def __call__(self, input_ids, scores):
        ends = (input_ids.shape[1] - self.width >= 2) & (input_ids[:, -1] % 3 == 0)
        only_eos = torch.full_like(scores, -torch.inf).index_fill(1, torch.tensor([self.eos]), 0)
        return torch.where(ends[:, None], only_eos, scores)


def sample(model, tokenizer, k=3, processors=None):
    batch = left_padded(tokenizer, PROMPTS, "cpu")
    processors = LogitsProcessorList(processors or [EndAfterMultipleOfThree(batch["input_ids"].shape[1],
                                                                            tokenizer.eos_token_id)])  # fmt: skip
    return decode(model, batch, Decoding("sample", temperature=1.0), k, max_new_tokens=10, seed=5,
                  eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id, entropy=True,
                  logits_processor=processors)  # fmt: skip


@pytest.mark.parametrize("kind", ["llama", "qwen2"])
def test_decoding_with_the_prompt_held_once_gives_the_rows_of_decoding_without(kind, tokenizer, monkeypatch):
    """The same seed, K=3 samples of 4 prompts of different lengths: shared-prefix decoding and decoding with every
    row's full cache draw the same tokens, with the same per-row entropies (float64, to 1e-10); the model's own
    attention implementation is back afterwards."""
    model = tiny(kind, tokenizer)
    before = model.config._attn_implementation
    prefill = model(**left_padded(tokenizer, PROMPTS, "cpu"), use_cache=True).past_key_values
    assert shares_prefix(model, prefill)
    calls = []
    attend = SharedPrefixLayer.attend
    monkeypatch.setattr(SharedPrefixLayer, "attend", lambda self, *a: calls.append(1) or attend(self, *a))
    shared = sample(model, tokenizer)
    assert calls  # the steps after the first went through shared-prefix attention
    assert model.config._attn_implementation == before
    monkeypatch.setattr(generation, "shares_prefix", lambda model, cache: False)
    plain = sample(model, tokenizer)
    assert shared.completion_ids == plain.completion_ids and shared.ended == plain.ended
    lengths = [len(c) for c in shared.completion_ids]
    assert any(len(set(lengths[i : i + 3])) > 1 for i in range(0, 12, 3))  # a prompt's samples left at different steps
    assert all(shared.ended[:3]) or all(shared.ended[3:6])  # and a whole prompt left before the end
    # float64 model: a logit off by a few ulps (1e-15) moves an entropy by 2 ln V times that
    assert shared.entropy == pytest.approx(plain.entropy, abs=1e-10)


def test_a_failed_decode_gives_the_model_its_attention_back(tokenizer):
    class Fails:
        def __call__(self, input_ids, scores):
            raise RuntimeError("processor failed")

    model = tiny("llama", tokenizer)
    before = model.config._attn_implementation
    with pytest.raises(RuntimeError, match="processor failed"):
        sample(model, tokenizer, processors=[Fails()])
    assert model.config._attn_implementation == before


def test_models_it_does_not_fit_decode_as_before(tokenizer):
    """GPT-2 (not a listed type) and one sample per prompt keep the plain path; GPT-2 still decodes."""
    gpt2 = tiny("gpt2", tokenizer)
    cache = gpt2(**left_padded(tokenizer, PROMPTS, "cpu"), use_cache=True).past_key_values
    assert isinstance(cache, DynamicCache) and not shares_prefix(gpt2, cache)
    assert len(sample(gpt2, tokenizer).completion_ids) == 12
