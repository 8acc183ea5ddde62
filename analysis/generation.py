"""Batched decoding of prompts with a checkpoint: left-padded `generate` with the KV cache."""

import torch


def left_padded(tokenizer, prompts, device):
    """Prompts tokenised and left-padded, so every row's generated tokens start at the same column."""
    side = tokenizer.padding_side
    tokenizer.padding_side = "left"
    try:
        batch = tokenizer(list(prompts), return_tensors="pt", padding=True)
    finally:
        tokenizer.padding_side = side
    return {k: v.to(device) for k, v in batch.items() if k in ("input_ids", "attention_mask")}


@torch.no_grad()
def generate(model, tokenizer, prompts, max_new_tokens: int, batch_size: int = 64, **generate_kwargs) -> list[list[str]]:
    """Completions for each prompt: a list of `num_return_sequences` strings per prompt.

    `generate_kwargs` go to `model.generate` (do_sample, temperature, num_beams, num_return_sequences, ...).
    Completions are decoded up to EOS with special tokens removed.
    """
    k = generate_kwargs.get("num_return_sequences", 1)
    out = []
    for start in range(0, len(prompts), batch_size):
        batch = left_padded(tokenizer, prompts[start : start + batch_size], model.device)
        sequences = model.generate(
            **batch,
            max_new_tokens=max_new_tokens,
            pad_token_id=tokenizer.pad_token_id,
            eos_token_id=tokenizer.eos_token_id,
            **generate_kwargs,
        )
        texts = tokenizer.batch_decode(sequences[:, batch["input_ids"].shape[1] :], skip_special_tokens=True)
        out.extend(texts[i : i + k] for i in range(0, len(texts), k))
    return out
