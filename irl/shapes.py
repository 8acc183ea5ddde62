"""Real-size architectures for measuring: model directories that hold a published `config.json` and a tokenizer of
the published vocabulary, and no weights. `--model models/shapes/qwen2.5-0.5b` builds the model with random
weights (seeded by the run's seed) wherever a model path is accepted (irl/model.py `load_model`), and
`AutoConfig.from_pretrained` reads the directory as it would the hub's. They are for measuring time and memory at a
researcher's size, not for quality.

    python -m irl.shapes          # rewrite the tokenizers of models/shapes/* from SHAPES (deterministic bytes)

models/shapes/qwen2.5-0.5b/chat_template.jinja is Qwen2.5-0.5B-Instruct's published chat template (from its
tokenizer_config.json; the model configs/paper/gsm8k_*.yaml name, of the same architecture), copied as config.json
is: with <|im_start|> and <|im_end|> at their published ids, `apply_chat_template: true` renders a conversation on
the shape as on the published model (the shape's EOS stays the base model's <|endoftext|>).

A shape directory is marked by `shape.json` (SHAPE_FILE: the hub model its config.json was copied from), so that a
checkpoint whose weights are missing still fails to load instead of silently training from random weights.

The tokenizers are byte-level BPE (GPT-2's byte alphabet, as Qwen's and Llama 3's) with no merges: text encodes one
token per byte, ids 0-255 (T5: 3-258) are the bytes, and the rest of the published vocabulary is filled with
multi-byte tokens that decoding turns into bytes, so a sampled id always decodes. Special tokens sit at their
published ids (Qwen's <|endoftext|> 151643, Llama 3's <|begin_of_text|> 128000 and <|end_of_text|> 128001, T5's
<pad> 0, </s> 1, <unk> 2 and <extra_id_0> 32099). Neither adds special tokens around a text (the workbench
appends EOS itself). Lengths in tokens are therefore longer than the published tokenizers give for the same text;
every cost that matters here is per token.
"""

import itertools
import json
from dataclasses import dataclass
from pathlib import Path

from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers

SHAPES_DIR = Path(__file__).resolve().parent.parent / "models" / "shapes"
SHAPE_FILE = "shape.json"


@dataclass(frozen=True)
class TokenizerLayout:
    """A published tokenizer's id layout: `size` ids in all (len(tokenizer), at most the config's vocab_size),
    `specials` at their ids, every other id a regular (byte or filler) token."""

    size: int
    specials: dict[int, str]
    eos: str
    pad: str | None
    bos: str | None
    model_max_length: int
    unk: str | None = None


# Qwen2.5's 22 added tokens follow its 151,643 BPE tokens; Llama 3's 256 follow 128,000; T5's 100 sentinels end its
# 32,000 SentencePiece pieces, <extra_id_0> last.
_QWEN = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|object_ref_start|>", "<|object_ref_end|>", "<|box_start|>",
         "<|box_end|>", "<|quad_start|>", "<|quad_end|>", "<|vision_start|>", "<|vision_end|>", "<|vision_pad|>",
         "<|image_pad|>", "<|video_pad|>", "<tool_call>", "</tool_call>", "<|fim_prefix|>", "<|fim_middle|>",
         "<|fim_suffix|>", "<|fim_pad|>", "<|repo_name|>", "<|file_sep|>"]  # fmt: skip
_LLAMA = ["<|begin_of_text|>", "<|end_of_text|>", "<|reserved_special_token_0|>", "<|reserved_special_token_1|>",
          "<|finetune_right_pad_id|>", "<|reserved_special_token_2|>", "<|start_header_id|>", "<|end_header_id|>",
          "<|eom_id|>", "<|eot_id|>", "<|python_tag|>"] + [f"<|reserved_special_token_{i}|>" for i in range(3, 248)]
_T5 = {0: "<pad>", 1: "</s>", 2: "<unk>"} | {32000 + i: f"<extra_id_{99 - i}>" for i in range(100)}

SHAPES = {
    "qwen2.5-0.5b": TokenizerLayout(151_665, dict(enumerate(_QWEN, 151_643)), "<|endoftext|>", "<|endoftext|>", None,
                                    131_072),
    "llama-128k": TokenizerLayout(128_256, dict(enumerate(_LLAMA, 128_000)), "<|end_of_text|>", None,
                                  "<|begin_of_text|>", 131_072),
    "t5-base": TokenizerLayout(32_100, _T5, "</s>", "<pad>", None, 512, "<unk>"),
    "t5-large": TokenizerLayout(32_100, _T5, "</s>", "<pad>", None, 512, "<unk>"),
}  # fmt: skip


def is_shape(name_or_path: str) -> bool:
    """Whether `name_or_path` is a shape directory (it holds SHAPE_FILE)."""
    return (Path(name_or_path).expanduser() / SHAPE_FILE).is_file()


def byte_alphabet() -> list[str]:
    """GPT-2's byte-to-character map in byte order: the character that stands for byte b in a byte-level token."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    shifted = iter(range(256, 512))  # the other bytes, in order, onto characters from U+0100 on
    return [chr(b) if b in printable else chr(next(shifted)) for b in range(256)]


def shape_tokenizer(layout: TokenizerLayout) -> Tokenizer:
    """The byte-level tokenizer of a layout (module docstring): regular ids in order hold the 256 bytes, then every
    string of two bytes, then of three, ..., until the layout is full."""
    alphabet = byte_alphabet()
    fillers = ("".join(t) for n in itertools.count(2) for t in itertools.product(alphabet, repeat=n))
    regular = (i for i in range(layout.size) if i not in layout.specials)
    vocab = dict(zip(itertools.chain(alphabet, fillers), regular))
    vocab |= {token: i for i, token in layout.specials.items()}  # in the model's vocabulary, added below as special
    tokenizer = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    specials = [AddedToken(t, special=True, normalized=False) for _, t in sorted(layout.specials.items())]
    tokenizer.add_special_tokens(specials)
    return tokenizer


def write_tokenizer(directory: Path, layout: TokenizerLayout) -> None:
    """tokenizer.json (compact: no indentation, a third smaller) and tokenizer_config.json as transformers reads
    them."""
    shape_tokenizer(layout).save(str(directory / "tokenizer.json"), pretty=False)
    config = {"backend": "tokenizers", "tokenizer_class": "TokenizersBackend", "eos_token": layout.eos,
              "pad_token": layout.pad, "bos_token": layout.bos, "unk_token": layout.unk,
              "model_max_length": layout.model_max_length, "clean_up_tokenization_spaces": False}  # fmt: skip
    (directory / "tokenizer_config.json").write_text(json.dumps(config, indent=2) + "\n")


def main() -> None:
    for name, layout in SHAPES.items():
        write_tokenizer(SHAPES_DIR / name, layout)
        print(f"{SHAPES_DIR / name}: tokenizer of {layout.size:,} ids")


if __name__ == "__main__":
    main()
