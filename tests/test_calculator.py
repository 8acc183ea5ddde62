"""Tests for analysis/calculator.py: the expression evaluator, the decoding-time logits processor (driven
step by step with scripted scores, and inside a real `generate`), and the rewrite on gsm_symbolic references.

Run: HF_HUB_OFFLINE=1 .venv/bin/python -m pytest -q tests/test_calculator.py
"""

import string
from fractions import Fraction

import pytest
import torch
from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
from transformers import GPT2Config, GPT2LMHeadModel, LogitsProcessorList, PreTrainedTokenizerFast

from analysis.calculator import (
    _WRITTEN_RESULT,
    CalculatorLogitsProcessor,
    calculator_rewrite,
    evaluate_expression,
)

PROMPT = "Q:"


@pytest.mark.parametrize(
    "text, expected",
    [
        ("First find how long it takes: 240 shrimp / 12 shrimp/minute ", "20"),
        ("he earns £195/day * 12 days/month ", "2340"),
        ("The brokerage fee is $400,000 x 8/100 ", "32000"),
        ("Robert was left with 72*0.5", "36"),
        ("So 2 * (3 + 4) ", "14"),
        ("4 kilometers in cold water: 8+2(12)", "32"),  # implicit multiplication
        ("9 skeins per shawl + 7 skeins per pair of leg warmers ", "16"),
        ("   - 73 plants × €3 per plant ", "219"),  # a list bullet is not a minus
        ("The difference is -3 + 1 ", "-2"),
        ("10 / 4 ", "2.5"),
        ("2 / 3 ", "0.6667"),
        ("0.1 + 0.2 ", "0.3"),  # exact, not 0.30000000000000004
        ("1 / 3 * 3 ", "1"),
        ("20 x 0.5 ", "10"),  # the references write 10.0
        ("100% - 20% ", "80"),
        ("She had 5 apples. Then 2 + 3 ", "5"),  # the clause starts after the sentence end
        ("12 + 3 = 15 + 5 ", "20"),  # and after the previous "="
        ("70 + 40 + 25 + T ", None),  # unknown in operand position
        ("135 + T ", None),
        ("we get 2x+100", None),
        ("If there were 188 beetles, the number is half * 188 beetles ", None),
        ("She has 40 apples ", None),  # no operator
        ("-5 ", None),
        ("5 / 0 ", None),
        ("$220 * 40% ", None),  # 40% is 0.4 here but 100 in "85 / 250 * 100%"
        ("15÷2/5", None),  # 15 ÷ (2/5) in the references
        ("20 ÷ 4 ", "5"),
        ("2 ** 3 ", None),
        ("", None),
    ],
)
def test_evaluate_expression(text, expected):
    assert evaluate_expression(text) == expected


def test_calculator_rewrite():
    text = "A: 3 * 4 = 13 apples, $1,000 + $500 = $1,400. T + 2 = 5\nThen 1/4 = 0.25 kg\n#### 5"
    expected = "A: 3 * 4 = 12 apples, $1,000 + $500 = $1500. T + 2 = 5\nThen 1/4 = 0.25 kg\n#### 5"
    assert calculator_rewrite(text) == expected


@pytest.fixture(scope="module")
def tokenizer():
    """Character-level tokenizer: every character (digits included) is one token."""
    chars = " \n=+-*/.,:$#%()?" + string.digits + string.ascii_letters
    vocab = {"<pad>": 0, "<eos>": 1, "<unk>": 2, **{c: i + 3 for i, c in enumerate(chars)}}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")
    tok.decoder = decoders.Fuse()
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="<pad>", eos_token="<eos>", unk_token="<unk>", padding_side="left"
    )


def _scripted_scores(tokenizer, scripts: list, step: int, fallback: str) -> torch.Tensor:
    """(B, V) scores of a scripted model: 10 for the script's token at this step, 5 for `fallback`."""
    scores = torch.zeros(len(scripts), len(tokenizer))
    scores[:, tokenizer.convert_tokens_to_ids(fallback)] = 5.0
    for row, script in enumerate(scripts):
        scores[row, tokenizer.convert_tokens_to_ids(script[step])] = 10.0
    return scores


def _greedy(tokenizer, scripts: list, swap_rows: bool = False, fallback: str = " ") -> list[str]:
    """Greedy decoding of the scripted model through the processor; a script is a string (one token per
    character) or a list of tokens, indexed by step, so tokens the calculator inserts replace the script's
    tokens at those steps. With swap_rows, the rows are reversed after every step, as beam search may
    reorder them; each script stays with its text."""
    input_ids = torch.tensor(tokenizer([PROMPT] * len(scripts))["input_ids"])
    prompt_length = input_ids.shape[1]
    processor = CalculatorLogitsProcessor(tokenizer, prompt_length)
    order = list(range(len(scripts)))  # order[row] = which script the row holds
    for step in range(len(scripts[0])):
        scores = _scripted_scores(tokenizer, [scripts[i] for i in order], step, fallback)
        input_ids = torch.cat([input_ids, processor(input_ids, scores).argmax(-1, keepdim=True)], dim=1)
        if swap_rows:
            input_ids, order = input_ids.flip(0), order[::-1]
    texts = tokenizer.batch_decode(input_ids[:, prompt_length:], skip_special_tokens=True)
    return [texts[order.index(i)] for i in range(len(scripts))]


@pytest.mark.parametrize(
    "script, expected",
    [
        (" 3 * 4 = 99 apples", " 3 * 4 = 12 apples"),
        (" 12 + 30 = 97 pens", " 12 + 30 = 42 pens"),  # a wrong two-token result replaced token by token
        (" 2 + 3 = 5 cats", " 2 + 3 = 5 cats"),  # the model was right: nothing changes
        (" 135 + T = 140", " 135 + T = 140"),  # unknown: no insertion
        (" 3 * 4 = 120 apples", " 3 * 4 = 12  apples"),  # the "0" glued onto 12 is forbidden; a space wins
        (" 3 * 4 = 99.5 kg", " 3 * 4 = 12.  kg"),  # "." may end a sentence, but no digit after it
        # the 6 inserted tokens overwrite "0 x 2"; "0.125" before the next "=" has no operator
        (" 1 / 8 = 0 x 2 = 9", " 1 / 8 = 0.125 = 9"),
    ],
)
def test_processor_single_row(tokenizer, script, expected):
    assert _greedy(tokenizer, [script]) == [expected]


def test_processor_batch_rows_in_different_states(tokenizer):
    # at step 8 row 0 has just written "=" and is forced while row 1 is still writing its expression
    scripts = [" 3 * 4 = 99 apples", " 10 + 20 = 99 pens"]
    assert _greedy(tokenizer, scripts) == [" 3 * 4 = 12 apples", " 10 + 20 = 30 pens"]


def test_processor_follows_text_when_rows_are_reordered(tokenizer):
    scripts = [" 3 * 4 = 99 apples", " 10 + 20 = 99 pens"]
    assert _greedy(tokenizer, scripts, swap_rows=True) == [" 3 * 4 = 12 apples", " 10 + 20 = 30 pens"]


def test_processor_with_sentencepiece_style_tokens():
    """Whole numbers as tokens, "▁" marking a leading space: " 12" is one token, "0" and ".5" would glue
    onto it and are forbidden after it, "▁5" starts a new word and is allowed."""
    words = ["<pad>", "<eos>", "<unk>", "▁3", "▁*", "▁4", "▁=", "▁12", "▁99", "▁apples",
             "0", ".5", "▁5", "▁a"]  # fmt: skip
    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    tok.decoder = decoders.Metaspace()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="<eos>", unk_token="<unk>")
    scripts = [
        ["▁3", "▁*", "▁4", "▁=", "▁99", "0", "▁apples"],
        ["▁3", "▁*", "▁4", "▁=", "▁99", "▁5", "▁apples"],
    ]
    assert _greedy(tokenizer, scripts, fallback="▁a") == ["3 * 4 = 12 a apples", "3 * 4 = 12 5 apples"]


def _script_model(tokenizer, text: str) -> GPT2LMHeadModel:
    """A GPT-2 with no layers that writes `text` by position: position p's embedding is one-hot, so the
    logits at p are column p of lm_head (its rows sum to 0 across columns, which LayerNorm's centring
    needs), 10 for text[p + 1] and 5 for a space."""
    n_pos, vocab = len(text), len(tokenizer)
    config = GPT2Config(
        vocab_size=vocab, n_positions=n_pos, n_embd=n_pos + 1, n_layer=0, n_head=1, tie_word_embeddings=False
    )
    model = GPT2LMHeadModel(config).eval()
    head = torch.zeros(vocab, n_pos + 1)
    head[tokenizer.convert_tokens_to_ids(" "), :n_pos] = 5.0
    for p in range(n_pos - 1):
        head[tokenizer.convert_tokens_to_ids(text[p + 1]), p] = 10.0
    head[:, n_pos] = -head[:, :n_pos].sum(1)
    with torch.no_grad():
        model.transformer.wte.weight.zero_()
        model.transformer.wpe.weight.copy_(torch.eye(n_pos, n_pos + 1))
        model.transformer.ln_f.weight.fill_(1.0)
        model.transformer.ln_f.bias.zero_()
        model.lm_head.weight.copy_(head)
    return model


@pytest.mark.parametrize(
    "decoding",
    [{"do_sample": False}, {"do_sample": True, "num_return_sequences": 2}, {"num_beams": 3}],
    ids=["greedy", "sampling", "beam"],
)
def test_processor_inside_generate(tokenizer, decoding):
    script = " 3 * 4 = 99 apples"
    model = _script_model(tokenizer, PROMPT + script)
    batch = tokenizer([PROMPT, PROMPT], return_tensors="pt")
    prompt_length = batch["input_ids"].shape[1]
    kwargs = dict(max_new_tokens=len(script), pad_token_id=0, eos_token_id=1, **decoding)
    plain = model.generate(**batch, **kwargs)
    assert tokenizer.decode(plain[0, prompt_length:]) == script
    processor = CalculatorLogitsProcessor(tokenizer, prompt_length)
    out = model.generate(**batch, logits_processor=LogitsProcessorList([processor]), **kwargs)
    texts = tokenizer.batch_decode(out[:, prompt_length:], skip_special_tokens=True)
    assert texts == [" 3 * 4 = 12 apples"] * len(texts)


def _written_results(text: str) -> list[Fraction | None]:
    """The value written right after each "=" (None where no number follows)."""
    matches = (_WRITTEN_RESULT.match(piece) for piece in text.split("=")[1:])
    return [Fraction(m["num"].replace(",", "")) if m else None for m in matches]


def test_rewrite_reproduces_gsm_symbolic_references():
    """On 200 references (seed 0) the calculator fires on 619 of 671 "= <number>" and leaves the written
    values of 193 references unchanged (0.965). The 7 others: "3 / 6 = 50.0%" (the result switches to
    percent after the "=", 3 references) and results the reference floors ("9*0.5=4", "899.35 / 1.2 = 749",
    4 references), where the calculator is right. It does not fire on unknowns ("135 + T"), words as
    operands ("half * 188"), products with percentages ("$220 * 40%") or "15÷2/5"."""
    from reasoning_gym.arithmetic.gsm_symbolic.gsm_symbolic import GSMSymbolicDataset, GSMSymbolicDatasetConfig

    dataset = GSMSymbolicDataset(GSMSymbolicDatasetConfig(seed=0, size=200))
    references = [dataset[i]["metadata"]["answer_cot"] for i in range(200)]
    n_fired = n_results = n_unchanged = 0
    for ref in references:
        pieces = ref.split("=")
        for i in range(1, len(pieces)):
            if _WRITTEN_RESULT.match(pieces[i]):
                n_results += 1
                n_fired += evaluate_expression("=".join(pieces[:i])) is not None
        before, after = _written_results(ref), _written_results(calculator_rewrite(ref))
        # the calculator rounds to 4 decimals; the references write up to 16
        n_unchanged += all(a == b or abs(a - b) < Fraction(1, 10**4) for a, b in zip(before, after))
    assert n_fired / n_results >= 0.9
    assert n_unchanged / len(references) >= 0.95


def test_reading_ids_backwards_decides_as_decoding_them(tokenizer):
    """`_past_the_number` skips decoding a row only where decoding finds no number after a "=" to act on: on every
    prefix of 40 gsm_symbolic references with wrong results, and of texts with "£", "÷", an ideographic space
    (whitespace to the regex, three bytes to a byte-level tokenizer) and a special token after a "=", each
    tokenised by a byte-level BPE trained on them and by the character-level tokenizer, `_action` gives what
    decoding every prefix gives; and it decodes few of them."""
    from reasoning_gym.arithmetic.gsm_symbolic.gsm_symbolic import GSMSymbolicDataset, GSMSymbolicDatasetConfig

    from irl.model import train_tokenizer

    dataset = GSMSymbolicDataset(GSMSymbolicDatasetConfig(seed=0, size=40))
    texts = [_wrong(dataset[i]["metadata"]["answer_cot"]) for i in range(40)]
    texts += [" 12 / 4 =\u3000 3 pens", " £2 × 3 = 6£", " 15÷3 = 5.", " 2 + 2 = 4<eos>1", " 3 * 4 =-12,0 apples"]
    for tok in (train_tokenizer(texts, 400), tokenizer):
        processor = CalculatorLogitsProcessor(tok, 0)
        decoding = CalculatorLogitsProcessor(tok, 0)
        decoding._past_the_number = lambda ids: False  # every row decoded
        decoded = prefixes = 0
        for text in texts:
            ids = tok(text, add_special_tokens=False)["input_ids"]
            for t in range(len(ids) + 1):
                prefixes += 1
                decoded += not processor._past_the_number(ids[:t])
                fast, full = processor._action(ids[:t]), decoding._action(ids[:t])
                assert type(fast) is type(full) and (fast is None or (fast[0] == full[0] and torch.equal(
                    torch.as_tensor(fast[1]), torch.as_tensor(full[1])))), (text, t)  # fmt: skip
        assert decoded < 0.3 * prefixes, (decoded, prefixes)


def _wrong(reference: str) -> str:
    """A reference with each result written right after a "=" replaced by a wrong one (its digits reversed, then 1)."""
    pieces = reference.split("=")
    for i in range(1, len(pieces)):
        m = _WRITTEN_RESULT.match(pieces[i])
        if m:
            pieces[i] = pieces[i][: m.start("num")] + m["num"][::-1] + "1" + pieces[i][m.end("num") :]
    return "=".join(pieces)
