"""Models and tokenizers: presets built from a config with a locally trained BPE tokenizer, or any
`AutoModelForCausalLM` by name or local path.

Presets are Llama-architecture models (RMSNorm, rotary positions, SwiGLU) sized for CPU work:
`tiny` (~0.2M parameters at a 1k vocabulary, tests) and `small` (~3M, the demo). Their tokenizer is a
byte-level BPE trained with `tokenizers` on the training split, digits split one per token (so that numbers
are written digit by digit, which small models learn far more easily than multi-digit tokens), and saved
in Hugging Face format with every checkpoint.
"""

from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

EOS, PAD = "<|endoftext|>", "<|pad|>"

PRESETS = {
    "tiny": dict(hidden_size=64, intermediate_size=192, num_hidden_layers=2, num_attention_heads=4),
    "small": dict(hidden_size=256, intermediate_size=768, num_hidden_layers=4, num_attention_heads=8),
    "base": dict(hidden_size=256, intermediate_size=640, num_hidden_layers=5, num_attention_heads=8),
}


class ModelError(ValueError):
    """A model or tokenizer could not be loaded; the message says which and why."""


def train_tokenizer(texts, vocab_size: int) -> PreTrainedTokenizerFast:
    """A byte-level BPE tokenizer trained on `texts`, deterministic for the same texts in the same order."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Digits(individual_digits=True), pre_tokenizers.ByteLevel(add_prefix_space=False)]
    )
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[PAD, EOS],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token=EOS, pad_token=PAD, padding_side="right")


def build_preset(name: str, tokenizer, max_length: int, seed: int) -> LlamaForCausalLM:
    """A freshly initialised preset model; the same seed gives the same weights."""
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        max_position_embeddings=max_length,
        tie_word_embeddings=True,
        bos_token_id=None,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        **PRESETS[name],
    )
    torch.manual_seed(seed)
    return LlamaForCausalLM(config)


def _check_local(name_or_path: str, what: str, marker: str) -> None:
    """A path-like name must be an existing directory holding `marker`: a typo fails here, not on the hub."""
    path = Path(name_or_path).expanduser()
    if (name_or_path.startswith((".", "/", "~")) or path.exists()) and not (path / marker).is_file():
        raise ModelError(f"{name_or_path!r} is not a {what} directory (no {marker})")


def load_tokenizer(name_or_path: str, trust_remote_code: bool = False):
    """A tokenizer by name or path, with a pad token (EOS when it has none, as for GPT-2)."""
    _check_local(name_or_path, "tokenizer", "tokenizer_config.json")
    try:
        tokenizer = AutoTokenizer.from_pretrained(name_or_path, trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as e:
        raise ModelError(f"cannot load a tokenizer from {name_or_path!r}: {e}") from None
    if tokenizer.eos_token_id is None:
        raise ModelError(f"tokenizer {name_or_path!r} has no EOS token; completions need one to end")
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_model(name_or_path: str, trust_remote_code: bool = False, dtype=torch.float32):
    """An AutoModelForCausalLM by hub name or local path (a checkpoint directory of a run included)."""
    _check_local(name_or_path, "model", "config.json")
    try:
        return AutoModelForCausalLM.from_pretrained(name_or_path, trust_remote_code=trust_remote_code, dtype=dtype)
    except (OSError, ValueError) as e:
        raise ModelError(f"cannot load a model from {name_or_path!r}: {e}") from None


def count_parameters(model) -> int:
    return sum(p.numel() for p in model.parameters())
