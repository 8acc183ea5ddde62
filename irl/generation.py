"""Completions sampled from the current policy during training (online IQLearn, GAIL).

`sample_completions` runs batched `generate` with the KV cache on left-padded prompts, without gradient, and
repacks the result (`pack_samples`) into the layout of the data: prompt, completion, right padding, with a
completion_mask, so that `token_terms` reads sampled and expert sequences alike. A completion that reaches EOS
ends the episode there; one cut by the length limit keeps no EOS, so its last token leaves every term that
needs V(s_{t+1}) (METHOD.md §1).
"""

import torch

BATCH_KEYS = ("input_ids", "attention_mask", "completion_mask")


@torch.no_grad()
def sample_completions(model, prompt_input_ids, prompt_attention_mask, *, num_samples: int, max_new_tokens: int,
                       temperature: float, eos_token_id: int, pad_token_id: int) -> dict:
    """`num_samples` completions per prompt from `model` (an unwrapped causal LM), in training layout.

    prompt_input_ids, prompt_attention_mask: (B, P), left-padded. Sampling is from the full softmax at
    `temperature` (no top-k/top-p), in eval mode; the model's train/eval mode is restored afterwards. Returns
    `pack_samples` of the B * num_samples sequences, the completions of prompt i in rows i*K ... i*K + K-1.
    """
    was_training = model.training
    model.eval()
    try:
        sequences = model.generate(
            input_ids=prompt_input_ids,
            attention_mask=prompt_attention_mask,
            do_sample=True,
            temperature=temperature,
            top_k=0,
            top_p=1.0,
            max_new_tokens=max_new_tokens,
            num_return_sequences=num_samples,
            eos_token_id=eos_token_id,
            pad_token_id=pad_token_id,
            use_cache=True,
        )
    finally:
        model.train(was_training)
    return pack_samples(sequences, prompt_attention_mask.repeat_interleave(num_samples, 0), eos_token_id, pad_token_id)


def pack_samples(sequences, prompt_attention_mask, eos_token_id: int, pad_token_id: int) -> dict:
    """Generated sequences in training layout.

    sequences (N, P + L): left-padded prompts (prompt_attention_mask (N, P)) followed by L generated tokens,
    padded after EOS. A row becomes its prompt tokens, its completion up to and including the first EOS, then
    padding: input_ids, attention_mask, completion_mask (N, W) with W the longest row, plus `truncated` (N,)
    bool, True where no EOS was generated (the completion is kept as it is, with no EOS appended).
    """
    width_prompt = prompt_attention_mask.shape[1]
    generated = sequences[:, width_prompt:]
    is_eos = generated == eos_token_id
    in_completion = is_eos.long().cumsum(1) - is_eos.long() == 0  # no EOS before this position
    prompts = sequences[:, :width_prompt]
    rows = [
        (prompt[mask.bool()], completion[keep])
        for prompt, mask, completion, keep in zip(prompts, prompt_attention_mask, generated, in_completion)
    ]
    width = max(len(p) + len(c) for p, c in rows)
    batch = {
        "input_ids": sequences.new_full((len(rows), width), pad_token_id),
        "attention_mask": sequences.new_zeros((len(rows), width)),
        "completion_mask": sequences.new_zeros((len(rows), width)),
    }
    for i, (prompt, completion) in enumerate(rows):
        n, m = len(prompt), len(prompt) + len(completion)
        batch["input_ids"][i, :n], batch["input_ids"][i, n:m] = prompt, completion
        batch["attention_mask"][i, :m] = 1
        batch["completion_mask"][i, n:m] = 1
    batch["truncated"] = ~is_eos.any(1)
    return batch


def pad_to(batch: dict, width: int, pad_token_id: int) -> dict:
    """input_ids, attention_mask, completion_mask of `batch` right-padded to `width` columns."""
    extra = width - batch["input_ids"].shape[1]
    values = {"input_ids": pad_token_id, "attention_mask": 0, "completion_mask": 0}
    return {k: torch.nn.functional.pad(batch[k], (0, extra), value=values[k]) for k in BATCH_KEYS}


def cat_rows(a: dict, b: dict) -> dict:
    """Two batches of the same width as one: a's rows, then b's."""
    return {k: torch.cat([a[k], b[k]]) for k in BATCH_KEYS}
