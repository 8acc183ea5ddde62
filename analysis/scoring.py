"""Per-token rewards read off a checkpoint's logits (METHOD.md sections 2 and 4), for completions given as token
ids: r_t = Q(s_t, a_t) - gamma * V(s_{t+1}), with V = 0 after EOS and no reward for an action without a next
state (the last token of a completion cut by a length limit). One forward pass per batch, no generation.

What is scored is exactly a list of `irl.data.Encoded` episodes: a sweep's samples as their generated ids
(`from_ids`), texts through the encoding rule training uses (`from_texts`, irl.data.encode_example).
Encoder-decoder models (T5) score an episode with its prompt in the encoder and [decoder start] + completion in
the decoder, the layout of training (irl.data.episode_features); their context has no length limit
(irl.model.context_length is None).

Decoder-only models whose logits are exactly lm_head(final hidden states) (irl/trainer.py HEAD_IS_LINEAR) are
scored on the chunked route by default, as they train: the final hidden states of the kept positions are projected
a chunk of rows at a time (irl.kernels.head_token_terms), so a batch never holds its (B, T, V) logits (at the 0.5B
shape's vocabulary of 151,936, 2.3 GiB per 4,096 tokens in float32). The route checks itself (`check_chunked`):
the first time it runs in a process for a device type, dtype and model type, the first episodes of the batch are
scored both ways and compared; if they differ, that scoring and every later one for the same key read the
materialised logits, a warning says so once with the figures, and the record `score` returns says which route
ran (analysis/rewards.py writes it in summary.json).
"""

import functools
import logging
import sys
from contextlib import nullcontext

import numpy as np
import pandas as pd
import torch

from analysis import schema as S
from irl.data import OK, TRUNCATED, Collator, Encoded, encode_example, episode_features, model_inputs
from irl import memory
from irl.generation import compute_dtype
from irl.kernels import head_token_terms, token_terms
from irl.model import ModelError

logger = logging.getLogger(__name__)
BF16 = "bfloat16"  # the autocast dtype of --bf16: what the manifests of sweeps and rewards record as `autocast`
CHUNKED, MATERIALISED = "chunked", "materialised"  # the routes of `score` (its record's "route")
# The chunked route's self-check: episodes of the first batch scored both ways, and the largest difference of Q, V
# and the entropy allowed, relative to the largest magnitude of each: the same sums in another order, as the
# training loss's check (irl/trainer.py CHECK_TOLERANCE says why these figures).
CHECK_EPISODES, CHECK_TOKENS = 2, 64  # episodes of the first batch, each cut to its last prompt and first completion
# tokens: materialised logits of 2 x 128 positions, whatever the context (the check must not set the peak)
_checked: dict[tuple, dict] = {}  # (device type, dtype, model type) -> the check's record, once per process


def autocast(dtype: str | None, device_type: str):
    """The precision of the model's forward in the sweep and in reward extraction: torch.autocast to `dtype` (BF16,
    --bf16) on `device_type`, the weights kept as they are (float32), as training's --bf16 runs under accelerate;
    a context that changes nothing for None.

    Any CPU runs it. One without bf16 instructions (AVX512-BF16, AMX) multiplies bf16 inputs in float32 and rounds
    the result to bf16, the same roundings as the native instructions, up to the order of float32 sums: the same
    results within the same tolerances, slower (logged). A CUDA device without bf16 (before Ampere) is refused
    (ModelError), as TrainingArguments refuses --bf16 there."""
    if dtype is None:
        return nullcontext()
    if device_type == "cuda" and not torch.cuda.is_bf16_supported():
        raise ModelError(f"--bf16: this GPU ({torch.cuda.get_device_name()}) has no bfloat16; run in float32")
    if device_type == "cpu":
        cpu_has_bf16()
    return torch.autocast(device_type, dtype={BF16: torch.bfloat16}[dtype])


@functools.cache
def cpu_has_bf16() -> bool:
    """Whether this CPU has bfloat16 instructions (AVX512-BF16 or AMX); a warning, once per process, when not."""
    native = torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()
    if not native:
        logger.warning("--bf16: this CPU has no bfloat16 instructions (AVX512-BF16, AMX): bf16 products are "
                       "emulated in float32, with the same roundings but slower than float32")  # fmt: skip
    return native


def from_texts(tokenizer, prompts, completions, context: int | None) -> tuple[list[Encoded | None], list[str]]:
    """(Encoded or None, status) per prompt/completion text, by irl.data.encode_example with the model's
    context as the length limit (a completion that does not fit is cut and loses its EOS; None: no limit). An
    empty or whitespace-only completion is scored as the episode it is (METHOD.md: the empty one is a single EOS
    action, the state after it terminal), not left out as in training data."""
    limit = sys.maxsize if context is None else context
    found = [encode_example(tokenizer, p, c, limit, keep_empty=True) for p, c in zip(prompts, completions)]
    return [e for e, _ in found], [status for _, status in found]


def from_ids(prompt_ids, completion_ids, ended, context: int | None) -> tuple[list[Encoded], list[str]]:
    """Encoded episodes of generated token ids, as they were generated; one longer than the context is cut to
    fit (its last kept token then has no next state; None: no limit)."""
    encoded, status = [], []
    for p, c, e in zip(prompt_ids, completion_ids, ended):
        p, c = list(map(int, p)), list(map(int, c))
        room = sys.maxsize if context is None else context - len(p)
        cut = len(c) > room
        encoded.append(Encoded(p, c[:room], bool(e) and not cut))
        status.append(TRUNCATED if cut else OK)
    return encoded, status


def _batches(encoded: list, batch_tokens: int) -> list[list[int]]:
    """Indices of the scorable episodes in batches of at most `batch_tokens` padded tokens, longest first."""
    lengths = {i: len(e.prompt_ids) + len(e.completion_ids) for i, e in enumerate(encoded) if e is not None}
    batches, current, width = [], [], 0
    for i in sorted(lengths, key=lambda i: -lengths[i]):
        width = width or lengths[i]  # sorted: the first sequence of a batch is its widest
        if current and (len(current) + 1) * width > batch_tokens:
            batches.append(current)
            current, width = [], lengths[i]
        current.append(i)
    return batches + [current] if current else batches


@torch.inference_mode()
def score_batch(model, batch: list[Encoded], pad_id: int, eos_id: int, gamma: float,
                chunked: bool = False) -> dict[str, np.ndarray]:
    """Per completion action of a batch, row-major: q, v, v_next, logp, reward, entropy (v_next and reward NaN
    for an action without a next state). One forward pass, then irl.kernels' token terms, as in training:
    `_causal_terms` (on the chunked route when `chunked`, which `can_chunk` must allow) or `_seq2seq_terms`."""
    if model.config.is_encoder_decoder:
        terms = _seq2seq_terms(model, batch, pad_id, eos_id)
    else:
        terms = _causal_terms(model, batch, pad_id, eos_id, chunked)
    mask, no_next = terms.mask, terms.mask & ~terms.td_mask  # (B, actions)
    nan = torch.tensor(float("nan"), device=terms.q.device)
    out = {
        S.Q: terms.q,
        S.V: terms.v,
        S.V_NEXT: torch.where(no_next, nan, terms.v_next),
        S.LOGP: terms.logp,
        S.REWARD: torch.where(no_next, nan, terms.reward(gamma)),
        S.TOKEN_ENTROPY: terms.entropy,
    }
    return {k: v[mask].float().cpu().numpy() for k, v in out.items()}


def can_chunk(model) -> bool:
    """Whether the chunked route can score `model`: a decoder-only model whose logits are exactly its linear
    lm_head's projection of the final hidden states."""
    return memory.can_chunk(model.config) and isinstance(model.get_output_embeddings(), torch.nn.Linear)


def _causal_terms(model, batch: list[Encoded], pad_id: int, eos_id: int, chunked: bool = False):
    """TokenTerms of a decoder-only model: the batch left-padded, the logits kept for the completion positions only
    (`logits_to_keep`), or with `chunked` the final hidden states of those positions projected a chunk of rows at
    a time (irl.kernels.head_token_terms: zero outside the completion's actions, which are all that is read)."""
    seqs = [e.prompt_ids + e.completion_ids for e in batch]
    width = max(map(len, seqs))
    keep = max(len(e.completion_ids) for e in batch) + 1  # logits of the completions and the last prompt token
    ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
    attention = torch.zeros_like(ids)
    completion = torch.zeros_like(ids)
    for row, (seq, e) in enumerate(zip(seqs, batch)):  # left padding: every sequence ends at the last column
        ids[row, width - len(seq) :] = torch.tensor(seq)
        attention[row, width - len(seq) :] = 1
        completion[row, width - len(e.completion_ids) :] = 1
    positions = (attention.cumsum(1) - 1).clamp(min=0)  # as if unpadded
    device = model.device
    ids, attention, positions = ids.to(device), attention.to(device), positions.to(device)
    # use_cache=False: one pass reads the whole sequence, a KV cache of every layer would only hold memory
    if chunked:  # the base model's output is the final hidden states, after the final norm: lm_head's input
        hidden = model.base_model(input_ids=ids, attention_mask=attention, position_ids=positions,
                                  use_cache=False).last_hidden_state[:, -keep:]  # fmt: skip
        head = model.get_output_embeddings()
        return head_token_terms(hidden, head.weight, head.bias, ids[:, -keep:], completion[:, -keep:].to(device),
                                eos_id)  # fmt: skip
    logits = model(input_ids=ids, attention_mask=attention, position_ids=positions, logits_to_keep=keep,
                   use_cache=False).logits  # fmt: skip
    # logits (B, keep, V): column k holds the state in which the action ids[:, width - keep + k + 1] is taken
    return token_terms(logits, ids[:, -keep:], completion[:, -keep:].to(device), eos_id)


def _seq2seq_terms(model, batch: list[Encoded], pad_id: int, eos_id: int):
    """TokenTerms of an encoder-decoder model, on the batch in training layout: prompts in the encoder,
    [decoder start] + completion in the decoder, right-padded."""
    features = [episode_features(e, model.config.decoder_start_token_id) for e in batch]
    inputs = {k: v.to(model.device) for k, v in Collator(pad_id, seq2seq=True)(features).items()}
    logits = model(**model_inputs(inputs, seq2seq=True), use_cache=False).logits  # (B, T, V): the decoder's T
    return token_terms(logits, inputs["decoder_input_ids"], inputs["completion_mask"], eos_id)


@torch.inference_mode()
def check_chunked(model, batch: list[Encoded], pad_id: int, eos_id: int) -> dict:
    """The chunked route against materialised logits on the first CHECK_EPISODES episodes of a batch, each cut to
    its last CHECK_TOKENS prompt tokens and first CHECK_TOKENS completion tokens, once per process for a device
    type, dtype (irl.generation.compute_dtype: autocast's when on) and model type (later calls return the first
    record): Q, V and the entropy of every completion action compared. Returns {"passed",
    "check/chunked_terms_max_rel_diff", "tolerance"}; a failure is logged once with its figures."""
    from irl.trainer import CHECK_TOLERANCE

    key = (model.device.type, compute_dtype(model), model.config.model_type)
    if key in _checked:
        return _checked[key]
    episodes = [Encoded(e.prompt_ids[-CHECK_TOKENS:], e.completion_ids[:CHECK_TOKENS], False)
                for e in batch[:CHECK_EPISODES]]  # fmt: skip
    fast, stock = (_causal_terms(model, episodes, pad_id, eos_id, chunked) for chunked in (True, False))
    worst = max(
        ((a - b)[stock.mask].abs().max() / b[stock.mask].abs().max().clamp(min=torch.finfo(b.dtype).tiny)).item()
        for a, b in ((fast.q, stock.q), (fast.v, stock.v), (fast.entropy, stock.entropy))
    )
    tolerance = CHECK_TOLERANCE[key[1]]
    record = {"passed": worst <= tolerance, "check/chunked_terms_max_rel_diff": worst, "tolerance": tolerance}
    if not record["passed"]:
        logger.warning("rewards: on %s the chunked route differs from materialised logits by %.3g (relative; "
                       "tolerance %.3g): scoring reads the full logits", key, worst, tolerance)  # fmt: skip
    _checked[key] = record
    return record


def score(model, tokenizer, encoded: list[Encoded | None], gamma: float, batch_tokens: int, *, chunked: bool = True,
          check: bool = True) -> tuple[pd.DataFrame, pd.DataFrame, dict]:
    """Score episodes: (per-episode table indexed like `encoded`, per-token table, the route's record).

    `chunked`: the chunked route where `can_chunk` allows it (module docstring); `check`: its self-check first
    (`check_chunked`; a failure scores on materialised logits). The record: {"route": CHUNKED or MATERIALISED},
    with the check's figures when it ran.

    Per episode (NaN where `encoded` holds None): R (the rewards of the tokens with a next state, summed),
    R_mean (their mean), logp_sum, logp_mean (per token), v0 (V of the first state), length (tokens scored, EOS
    included), truncated (no EOS: the last token has no next state). Per token: `episode` (the index in
    `encoded`), position (0 = first completion token), token_id, token (tokenizer.decode([id])), q, v, v_next,
    logp, reward, entropy.
    """
    pad_id, eos_id = tokenizer.pad_token_id, tokenizer.eos_token_id
    order = _batches(encoded, batch_tokens)
    batches = [[encoded[i] for i in batch] for batch in order]
    record = {}
    chunked = chunked and can_chunk(model)
    if chunked and check and batches:
        record = check_chunked(model, batches[0], pad_id, eos_id)
        chunked = record["passed"]
    record = {"route": CHUNKED if chunked else MATERIALISED, **record}
    chunks = [score_batch(model, batch, pad_id, eos_id, gamma, chunked) for batch in batches]
    index = [i for batch in order for i in batch]
    lengths = np.array([len(encoded[i].completion_ids) for i in index], dtype=int)
    token_ids = np.concatenate([encoded[i].completion_ids for i in index]).astype(int) if index else np.zeros(0, int)
    tokens = pd.DataFrame(
        {
            "episode": np.repeat(np.array(index, dtype=int), lengths),
            S.POSITION: np.concatenate([np.arange(n) for n in lengths]) if index else np.zeros(0, int),
            S.TOKEN_ID: token_ids,
        }
    )
    vocab = {i: tokenizer.decode([i]) for i in np.unique(token_ids).tolist()}
    tokens[S.TOKEN] = tokens[S.TOKEN_ID].map(vocab)
    for key in (S.Q, S.V, S.V_NEXT, S.LOGP, S.REWARD, S.TOKEN_ENTROPY):
        tokens[key] = np.concatenate([c[key] for c in chunks]) if chunks else np.zeros(0, np.float32)
    by = tokens.groupby("episode", sort=False)
    per = pd.DataFrame(
        {
            # skips NaN (a cut last token has no reward); NaN when no token has one (a completion cut to one token)
            S.R: by[S.REWARD].sum(min_count=1).astype(float),
            S.R_MEAN: by[S.REWARD].mean().astype(float),
            S.LOGP_SUM: by[S.LOGP].sum().astype(float),
            S.LOGP_MEAN: by[S.LOGP].mean().astype(float),
            S.V0: by[S.V].first().astype(float),
            S.LENGTH: by.size(),
        }
    ).reindex(range(len(encoded)))
    per[S.TRUNCATED] = [e is not None and not e.ended for e in encoded]
    return per, tokens, record


def error_position(tokenizer, completion_ids: list[int], error_char: int) -> int:
    """The position of the token of `completion_ids` that holds character `error_char` of the completion's
    text (the first token whose decoded prefix reaches past it)."""
    for t in range(len(completion_ids)):
        if len(tokenizer.decode(completion_ids[: t + 1], skip_special_tokens=True)) > error_char:
            return t
    return len(completion_ids) - 1
