"""Conversational data: TRL's `messages` and chat-form prompt/completion, rendered by the tokenizer's chat
template, with the action mask on the final assistant turn's tokens only (literal tensors on a word-level
tokenizer whose ids are known), and the encoding rule's treatment of empty, overlong and in-text-EOS examples."""

import json

import pytest
import torch
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

from irl.config import TrainConfig
from irl.data import Collator, DataError, encode, encode_example, example_of, load_splits

# ChatML, as Qwen's: each turn "<|im_start|>role\ncontent<|im_end|>\n"; the generation prompt opens the assistant's.
CHATML = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
WORDS = ["<pad>", "<|im_end|>", "<|im_start|>", "user", "assistant", "\n", "hi", "there", "bye", "system", "be",
         "brief", "ok", "again", "<eos>"]  # fmt: skip
ID = {w: i for i, w in enumerate(WORDS)}
IM_START, IM_END, NL = ID["<|im_start|>"], ID["<|im_end|>"], ID["\n"]


def word_tokenizer(eos="<|im_end|>") -> PreTrainedTokenizerFast:
    """Words split on spaces, newlines kept as tokens, ids as in WORDS; eos: the end of turn (as Qwen's instruct
    tokenizers) or a separate <eos> (as base tokenizers whose template ends turns with another token)."""
    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(WORDS)}, unk_token="<pad>"))
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Split(" ", "removed"), pre_tokenizers.Split("\n", "isolated")]
    )
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token=eos, pad_token="<pad>")
    tokenizer.add_special_tokens({"additional_special_tokens": ["<|im_start|>", "<|im_end|>"]})
    tokenizer.chat_template = CHATML
    return tokenizer


def turn(role, *words):
    return [IM_START, ID[role], NL, *(ID[w] for w in words), IM_END, NL]


USER_HI = [{"role": "user", "content": "hi there"}]
BYE = [{"role": "assistant", "content": "bye"}]


def test_messages_mask_covers_exactly_the_assistant_tokens():
    tokenizer = word_tokenizer()
    conversation = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"},
                    {"role": "assistant", "content": "ok"}, {"role": "user", "content": "again"},
                    {"role": "assistant", "content": "bye there"}]  # fmt: skip
    cfg = TrainConfig()

    example = example_of({"messages": conversation}, "row", 0, cfg)
    assert example["prompt"] == conversation[:-1] and example["completion"] == conversation[-1:]
    features, counts = encode([example], tokenizer, max_length=64)
    batch = Collator(tokenizer.pad_token_id, prompts=True)(features)
    # the prompt: every earlier turn (the first assistant turn included: part of the state) + the generation prompt
    prompt = turn("system", "be", "brief") + turn("user", "hi") + turn("assistant", "ok") + turn("user", "again")
    prompt += [IM_START, ID["assistant"], NL]
    # the actions: the final turn's content and its end-of-turn marker, which is EOS here (the "\n" after it is
    # the template's, not the assistant's)
    actions = [ID["bye"], ID["there"], IM_END]
    assert torch.equal(batch["input_ids"], torch.tensor([prompt + actions]))
    assert torch.equal(batch["completion_mask"], torch.tensor([[0] * len(prompt) + [1, 1, 1]]))
    assert torch.equal(batch["prompt_input_ids"], torch.tensor([prompt]))
    assert counts["kept"] == 1 and counts["eos_in_text"] == 0


def test_chat_prompt_completion_equals_messages_and_strings_with_apply_chat_template():
    tokenizer = word_tokenizer(eos="<eos>")  # EOS is not the end of turn: it is appended after it

    as_messages = example_of({"messages": USER_HI + BYE}, "r", 0, TrainConfig())
    as_lists = example_of({"prompt": USER_HI, "completion": BYE}, "r", 0, TrainConfig())
    as_strings = example_of({"prompt": "hi there", "completion": "bye"}, "r", 0, TrainConfig(apply_chat_template=True))
    expected = turn("user", "hi", "there") + [IM_START, ID["assistant"], NL]
    for ex in (as_messages, as_lists, as_strings):
        encoded, status = encode_example(tokenizer, ex["prompt"], ex["completion"], 64)
        assert status == "ok" and encoded.prompt_ids == expected
        assert encoded.completion_ids == [ID["bye"], IM_END, ID["<eos>"]] and encoded.ended


def test_chat_examples_keep_the_encoding_rule():
    tokenizer = word_tokenizer()
    prompt_len = len(turn("user", "hi", "there")) + 3
    # empty assistant content: dropped
    empty = [{"role": "assistant", "content": "  "}]
    assert encode_example(tokenizer, USER_HI, empty, 64) == (None, "empty_completion")
    # overlong: cut, no EOS (did not end); or dropped
    long = [{"role": "assistant", "content": "bye bye bye bye"}]
    cut, status = encode_example(tokenizer, USER_HI, long, prompt_len + 2)
    assert status == "truncated" and cut.completion_ids == [ID["bye"], ID["bye"]] and not cut.ended
    assert encode_example(tokenizer, USER_HI, long, prompt_len + 2, "drop") == (None, "dropped_overlong")
    # an end of turn written inside the content ends the episode there; what follows is counted, not trained on
    inner = [{"role": "assistant", "content": "bye<|im_end|> there"}]
    encoded, status = encode_example(tokenizer, USER_HI, inner, 64)
    assert encoded.completion_ids == [ID["bye"], IM_END] and encoded.after_eos == 2  # "there", the turn's end
    # a tokenizer without a chat template cannot render chat data
    tokenizer.chat_template = None
    with pytest.raises(DataError, match="chat template"):
        encode_example(tokenizer, USER_HI, BYE, 64)


def test_chat_rows_from_jsonl_are_checked(tmp_path):
    rows = [{"messages": USER_HI + BYE}, {"messages": USER_HI}]
    data = tmp_path / "chat.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(DataError, match=r"chat\.jsonl:2: the last message of 'messages' must be the assistant's"):
        load_splits(TrainConfig(data=str(data), eval_size=0))
    data.write_text(json.dumps({"prompt": [{"role": "user"}], "completion": "x"}) + "\n")
    with pytest.raises(DataError, match="field 'prompt' must be a string or a non-empty list of"):
        load_splits(TrainConfig(data=str(data), eval_size=0))
