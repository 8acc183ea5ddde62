"""Models and tokenizers: presets built from a config with a locally trained BPE tokenizer, or any
`AutoModelForCausalLM` or `AutoModelForSeq2SeqLM` by name or local path, optionally with LoRA adapters (peft).

Presets are Llama-architecture models (RMSNorm, rotary positions, SwiGLU) sized for CPU work:
`tiny` (~0.2M parameters at a 1k vocabulary, tests) and `small` (~3M, the demo). Their tokenizer is a
byte-level BPE trained with `tokenizers` on the training split, digits split one per token (so that numbers
are written digit by digit, which small models learn far more easily than multi-digit tokens), and saved
in Hugging Face format with every checkpoint.

Encoder-decoder presets (`t5-tiny` for tests, `t5-small` for demos; the hub's T5-small is
`google-t5/t5-small`) are T5 models on the same tokenizer: relative position buckets, RMS layer norm,
gated-GELU feed-forward (T5 v1.1's), no dropout (as the Llama presets), input and output embeddings tied with
the decoder output scaled by d_model^-1/2 before the head (original T5's; transformers 5 ties T5's embeddings in
every case, and the scaling keeps the initial logits at unit scale). The tokenizer's pad token (id 0) is the
decoder start token and EOS (id 1) ends completions, T5's own convention. A model's kind, decoder-only or
encoder-decoder, is read from its config once (`model_kind`: `config.is_encoder_decoder`).

LoRA (`use_peft`, `add_lora`): the checkpoint holds the adapter as peft saves it (adapter_model.safetensors,
adapter_config.json naming the base model) beside the base's config.json; `load_model`, the one loader of every
later stage, loads such a checkpoint on its base and merges the adapter into it (`merge_and_unload`), so the
sweep and reward extraction run a plain model at full speed. Merged weights W + (lora_alpha / lora_r) B A equal
the adapted model's function up to float rounding (the adapted model adds B A x to W x instead).

Real-size shapes (models/shapes/, irl/shapes.py): the published config.json of Qwen2.5-0.5B, a Llama 3 model of
the 128k vocabulary, T5-base and T5-large, with a tokenizer of the published vocabulary and no weights;
`load_model` builds them with random weights, for measuring time and memory at those sizes.
"""

import contextlib
import json
import warnings
from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import (
    AutoConfig,
    AutoModelForCausalLM,
    AutoModelForSeq2SeqLM,
    AutoTokenizer,
    LlamaConfig,
    LlamaForCausalLM,
    PreTrainedTokenizerFast,
    T5Config,
    T5ForConditionalGeneration,
)

from irl.shapes import is_shape

EOS, PAD = "<|endoftext|>", "<|pad|>"
ADAPTER_CONFIG = "adapter_config.json"  # peft's: marks a LoRA checkpoint
BASE_MODEL = "base_model"  # <run>/base_model/: the initial weights of a preset trained with LoRA

PRESETS = {
    "tiny": dict(hidden_size=64, intermediate_size=192, num_hidden_layers=2, num_attention_heads=4),
    "small": dict(hidden_size=256, intermediate_size=768, num_hidden_layers=4, num_attention_heads=8),
    "base": dict(hidden_size=256, intermediate_size=640, num_hidden_layers=5, num_attention_heads=8),
    # T5 (SEQ2SEQ_PRESETS): as many layers in the encoder (reading the prompt) and in the decoder (writing the
    # completion) as the Llama preset of the same size has in all, so a token costs about the same.
    "t5-tiny": dict(d_model=64, d_ff=192, d_kv=16, num_heads=4, num_layers=2, num_decoder_layers=2),
    "t5-small": dict(d_model=256, d_ff=768, d_kv=32, num_heads=8, num_layers=4, num_decoder_layers=4),
}
SEQ2SEQ_PRESETS = ("t5-tiny", "t5-small")
CAUSAL, SEQ2SEQ = "causal", "seq2seq"  # model kinds (`model_kind`)


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


def build_preset(name: str, tokenizer, max_length: int, seed: int) -> LlamaForCausalLM | T5ForConditionalGeneration:
    """A freshly initialised preset model; the same seed gives the same weights."""
    if name in SEQ2SEQ_PRESETS:
        return _build_t5(name, tokenizer, seed)
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


def _build_t5(name: str, tokenizer, seed: int) -> T5ForConditionalGeneration:
    """A T5 preset (module docstring). Relative positions: no length limit is built in (`context_length`)."""
    config = T5Config(
        vocab_size=len(tokenizer),
        feed_forward_proj="gated-gelu",
        dropout_rate=0.0,
        tie_word_embeddings=True,  # and scale the decoder output by d_model^-1/2
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        decoder_start_token_id=tokenizer.pad_token_id,
        **PRESETS[name],
    )
    torch.manual_seed(seed)
    return T5ForConditionalGeneration(config)


def model_kind(config) -> str:
    """CAUSAL or SEQ2SEQ, from a model's config (`is_encoder_decoder`): the one place the kind is derived."""
    return SEQ2SEQ if config.is_encoder_decoder else CAUSAL


def kind_of(name_or_path: str, trust_remote_code: bool = False) -> str:
    """CAUSAL or SEQ2SEQ of a preset (by name) or of the model at a name or path (`model_kind` of its config)."""
    if name_or_path in PRESETS:
        return SEQ2SEQ if name_or_path in SEQ2SEQ_PRESETS else CAUSAL
    _check_local(name_or_path, "model", "config.json")
    try:
        return model_kind(AutoConfig.from_pretrained(name_or_path, trust_remote_code=trust_remote_code))
    except (OSError, ValueError) as e:
        raise ModelError(f"cannot load a model config from {name_or_path!r}: {e}") from None


def context_length(config) -> int | None:
    """The longest sequence a model reads: a decoder-only model's prompt + completion (max_position_embeddings);
    None for an encoder-decoder model (T5's relative positions set no limit; its prompt and completion are two
    sequences)."""
    return None if config.is_encoder_decoder else config.max_position_embeddings


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


def is_adapter(path) -> bool:
    """Whether `path` is a LoRA checkpoint (peft's adapter_config.json)."""
    return (Path(path).expanduser() / ADAPTER_CONFIG).is_file()


def load_model(name_or_path: str, trust_remote_code: bool = False, dtype=torch.float32):
    """An AutoModelForCausalLM, or an AutoModelForSeq2SeqLM when its config says `is_encoder_decoder`, by hub name
    or local path (a checkpoint directory of a run included). A LoRA checkpoint is loaded on its base model and
    merged into it (module docstring). A shape directory (irl/shapes.py: a published config.json and no weights)
    gives its model with random weights drawn from torch's generator as it stands (the run's seed)."""
    if is_adapter(name_or_path):
        return _load_merged(Path(name_or_path).expanduser(), trust_remote_code, dtype)
    _check_local(name_or_path, "model", "config.json")
    try:
        config = AutoConfig.from_pretrained(name_or_path, trust_remote_code=trust_remote_code)
        auto = AutoModelForSeq2SeqLM if model_kind(config) == SEQ2SEQ else AutoModelForCausalLM
        if is_shape(name_or_path):
            return auto.from_config(config, trust_remote_code=trust_remote_code, dtype=dtype)
        return auto.from_pretrained(name_or_path, config=config, trust_remote_code=trust_remote_code, dtype=dtype)
    except (OSError, ValueError) as e:
        raise ModelError(f"cannot load a model from {name_or_path!r}: {e}") from None


def adapter_base(checkpoint: Path) -> str:
    """The base model of a LoRA checkpoint: adapter_config.json's base_model_name_or_path, a hub name, an absolute
    path, or a path relative to the checkpoint (a preset's ../base_model)."""
    base = json.loads((checkpoint / ADAPTER_CONFIG).read_text())["base_model_name_or_path"]
    if base is None:
        raise ModelError(f"{checkpoint}: {ADAPTER_CONFIG} names no base model")
    beside = checkpoint / base
    return str(beside.resolve()) if not Path(base).is_absolute() and beside.is_dir() else base


@contextlib.contextmanager
def peft_reads_deprecated_alias():
    """peft 0.21 wraps a model after reading transformers 5's deprecated `is_gradient_checkpointing` (a
    FutureWarning at every wrap, about peft's code, not the user's): that one warning is left out here."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="`is_gradient_checkpointing` is deprecated", category=FutureWarning)
        yield


def _load_merged(checkpoint: Path, trust_remote_code: bool, dtype):
    from peft import PeftModel

    base = load_model(adapter_base(checkpoint), trust_remote_code, dtype)  # itself merged if it is a LoRA checkpoint
    try:
        with peft_reads_deprecated_alias():
            return PeftModel.from_pretrained(base, str(checkpoint)).merge_and_unload()
    except (OSError, ValueError) as e:
        raise ModelError(f"cannot load the LoRA adapter at {checkpoint}: {e}") from None


def add_lora(model, cfg, base_name_or_path: str):
    """`model` wrapped by peft with fresh LoRA adapters per `cfg` (lora_r, lora_alpha, lora_dropout,
    lora_target_modules); only the adapters train. B starts at zero, so the adapted model starts as the base
    bit for bit. `base_name_or_path` is what the saved adapter_config.json names as its base."""
    from peft import LoraConfig, get_peft_model

    target = cfg.lora_target_modules
    config = LoraConfig(
        r=cfg.lora_r,
        lora_alpha=cfg.lora_alpha,
        lora_dropout=cfg.lora_dropout,
        target_modules=target[0] if target == ["all-linear"] else target,
        task_type="SEQ_2_SEQ_LM" if model.config.is_encoder_decoder else "CAUSAL_LM",
    )
    model.name_or_path = base_name_or_path  # peft records it as base_model_name_or_path
    try:
        with peft_reads_deprecated_alias():
            return get_peft_model(model, config)
    except ValueError as e:  # e.g. target modules that the architecture lacks
        raise ModelError(f"lora_target_modules={target!r}: {e}") from None


def count_parameters(model) -> int:
    return sum(p.numel() for p in model.parameters())
