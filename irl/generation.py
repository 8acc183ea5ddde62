"""Batched decoding with the KV cache, the one place `generate` is called: the decoding sweep and the demo
(`decode`), and completions sampled during training for online IQLearn and GAIL (`sample_completions`).

Prompts are tokenised by the training rule (irl/data.py `encode_example`: the tokenizer's special prefix, no
completion) and left-padded, so every row's generated tokens start at the same column. What comes back is token
ids, never re-encoded text: each completion is its generated ids up to and including the first EOS, with a
flag saying whether it ended there or was cut at the length limit (then its last token has no next state and
leaves every term that needs V(s_{t+1}), METHOD.md section 1).

Encoder-decoder models (`model.config.is_encoder_decoder`, e.g. T5) read the prompt in the encoder and generate
after the decoder start token: the prompt ids are the encoder's input, the completion the decoder's tokens after
the start token. (T5's relative positions make left padding of the encoder's input harmless: distances between
real tokens are unchanged and padded keys are masked.)

`sample_completions` repacks its samples (`pack_samples`) into the layout of the data (irl.data
`episode_features` and `Collator`), so `token_terms` reads sampled and expert sequences alike.

The compact decoder checks itself (`check_compact`): the first time it runs in a process for a device type, dtype
and model type, it decodes a few tokens of the batch's first prompts greedily, twice per prompt (so that the
shared-prefix attention runs where the model allows it), and compares them with transformers' `generate` and its
own cache; if they differ, that decoding and every later one for the same key go through `generate`, a warning
says so once with the figures, and `Decoded.path` says which path ran (the sweep writes it in its samples tables).
"""

import hashlib
import logging
from contextlib import nullcontext
from dataclasses import dataclass

import torch
from transformers import LogitsProcessor, LogitsProcessorList, MinPLogitsWarper, TopPLogitsWarper
from transformers.modeling_outputs import BaseModelOutput

from irl.data import Collator, Encoded, episode_features
from irl.kv_cache import fill_holes, preallocated, shared_prefix, shared_prefix_attention_on, shares_prefix

logger = logging.getLogger(__name__)

COMPACT, GENERATE = "compact", "generate"  # the paths of `decode` (Decoded.path)
# The compact decoder's self-check: prompts of the batch and tokens decoded, and the largest difference allowed
# between its step logits and generate's, relative to their largest magnitude. Both compute the same attention
# (the shared prefix's in two parts that meet in one softmax) and layers in another order: sums over H or the
# context rounded differently, a few eps per layer, about 1e-5 for a few dozen float32 layers (eps 1.2e-7), so
# 1e-4; bfloat16 weights, or float32 ones under bfloat16 autocast (the analysis commands' --bf16), round each
# product's inputs and output to 8 bits (eps 7.8e-3): 5e-2; float16 (eps 9.8e-4): 1e-2; float64 (eps 2.2e-16):
# 1e-12. The dtype is the autocast one when autocast is on (`compute_dtype`), else the weights'. The tokens must
# be equal (a row dropped or misplaced by compaction changes them) but where the two paths' logits tie within the
# tolerance: there the two roundings may pick either token, and that row's later steps, read after different
# tokens, are not compared (`agreement`). Random weights in bf16 tie often (near-equal logits rounded to 8 bits).
CHECK_PROMPTS, CHECK_TOKENS = 2, 8
CHECK_TOLERANCE = {torch.float64: 1e-12, torch.float32: 1e-4, torch.bfloat16: 5e-2, torch.float16: 1e-2}
_checked: dict[tuple, dict] = {}  # (device type, dtype, model type) -> the check's record, once per process


def compute_dtype(model) -> torch.dtype:
    """The dtype a model's products run in here: the autocast dtype when autocast is on for its device (the
    analysis commands' --bf16 keeps float32 weights under bfloat16 autocast), else its weights' dtype."""
    device = model.device.type
    return torch.get_autocast_dtype(device) if torch.is_autocast_enabled(device) else model.dtype


def left_padded(tokenizer, prompts, device, max_prompt_tokens: int | None = None) -> dict:
    """Prompts tokenised as in training and left-padded: input_ids, attention_mask (B, P) on `device`.

    With `max_prompt_tokens`, a longer prompt keeps its last `max_prompt_tokens` tokens (after a special token the
    tokenizer puts first, if any), as lm-evaluation-harness truncates contexts: the end of a prompt ("...
    Summary:") is what the completion continues, and a decoder-only model reads prompt and completion in one
    context. The ids decoded from are those returned, so the samples' prompt_ids record any truncation."""
    rows = tokenizer(list(prompts))["input_ids"]
    if max_prompt_tokens is not None:
        rows = [truncate_left(row, max_prompt_tokens, tokenizer) for row in rows]
    side = tokenizer.padding_side
    tokenizer.padding_side = "left"
    try:
        batch = tokenizer.pad({"input_ids": rows}, padding=True, return_tensors="pt")
    finally:
        tokenizer.padding_side = side
    return {k: v.to(device) for k, v in batch.items() if k in ("input_ids", "attention_mask")}


def truncate_left(ids: list[int], keep: int, tokenizer) -> list[int]:
    """The last `keep` ids of a tokenised prompt, its leading special token (BOS) kept in front when it has one."""
    if len(ids) <= keep:
        return ids
    if keep < 1:
        raise ValueError(f"a prompt must keep at least one token, got keep={keep}")
    if ids[0] in tokenizer.all_special_ids and keep > 1:
        return ids[:1] + ids[len(ids) - keep + 1 :]
    return ids[len(ids) - keep :]


def completion_lengths(generated: torch.Tensor, eos_token_id: int) -> torch.Tensor:
    """Generated tokens per row of `generated` (N, G), up to and including the first EOS (G when none)."""
    is_eos = generated == eos_token_id
    return torch.where(is_eos.any(1), is_eos.int().argmax(1) + 1, generated.shape[1])


def draw(probs: torch.Tensor, uniform: torch.Tensor | None = None) -> torch.Tensor:
    """One token per row of `probs` (R, V), each drawn with its row's probabilities (normalised by their sum), by
    the inverse of the cumulative distribution: the first token whose cumulative probability, summed in float64,
    exceeds u times the row's sum, for u uniform in [0, 1) (`uniform` (R,), default torch.rand from torch's
    generator). One random number per row: torch.multinomial on the CPU draws one per vocabulary entry (an
    exponential race), 30 times slower at 160 rows of 640. A token of probability 0 is never drawn: its
    cumulative probability equals its predecessor's. Should rounding make u times the sum reach the sum itself
    (u within 2^-53 of 1), the last token of nonzero probability is drawn, as the exact arithmetic would."""
    cdf = probs.double().cumsum(-1)  # (R, V)
    if uniform is None:
        uniform = torch.rand(probs.shape[0], dtype=torch.float64, device=probs.device)
    token = torch.searchsorted(cdf, uniform.double()[:, None] * cdf[:, -1:], right=True)[:, 0]
    last = probs.shape[1] - 1 - (probs.flip(-1) > 0).int().argmax(-1)  # the last token of nonzero probability
    return torch.minimum(token, last)


def _entropy(logits: torch.Tensor) -> torch.Tensor:
    """Entropy of softmax over the last dimension, in nats, computed in float32."""
    logp = torch.log_softmax(logits.float(), dim=-1)
    return -(logp.exp() * logp).sum(-1)


def completion_entropy(step_logits, lengths: torch.Tensor, beam_indices: torch.Tensor | None = None) -> torch.Tensor:
    """Mean entropy (nats) of the policy softmax(logits) over each returned sequence's generated tokens, EOS
    included: one value per sequence, (N,).

    `step_logits` is `generate(..., output_logits=True).logits`: at each step the raw logits (before
    temperature or any processor) of every running row, (R, V). Row n is sequence n, except under beam search,
    where rows are hypotheses and `beam_indices` (N, G) names the row each returned beam was in at each step.
    """
    entropy = torch.stack([_entropy(logits) for logits in step_logits], dim=1)  # (R, steps)
    width = int(lengths.max())
    steps = torch.arange(width, device=lengths.device)[None, :]
    if beam_indices is None:
        rows = torch.arange(len(lengths), device=lengths.device)[:, None]
    else:
        rows = beam_indices[:, :width].clamp(min=0)  # -1 marks the steps after a beam ended
    per_token = entropy[rows, steps]  # (N, width)
    return (per_token * (steps < lengths[:, None])).sum(1) / lengths


@dataclass(frozen=True)
class Decoding:
    """One decoding setting of the sweep's grid."""

    kind: str  # "greedy" | "sample" | "beam"
    temperature: float = 0.0
    beams: int = 1
    top_p: float = 1.0  # sampling only: nucleus, transformers' TopPLogitsWarper (1: off)
    min_p: float = 0.0  # sampling only: transformers' MinPLogitsWarper (0: off)

    @property
    def label(self) -> str:
        """"greedy", "beam=4", "t=0.5", and for sampling with a filter "t=0.5,top_p=0.9", "t=1,min_p=0.05" (the
        default top_p=1, min_p=0 stay out, so labels made before these axes existed read the same)."""
        if self.kind != "sample":
            return {"greedy": "greedy", "beam": f"beam={self.beams}"}[self.kind]
        filters = [f"top_p={self.top_p:g}"] * (self.top_p != 1.0) + [f"min_p={self.min_p:g}"] * (self.min_p != 0.0)
        return ",".join([f"t={self.temperature:g}", *filters])

    def warpers(self) -> list:
        """The filters of sampling after temperature, in generate's order (top-p, then min-p)."""
        top_p = [TopPLogitsWarper(self.top_p)] if self.top_p != 1.0 else []
        return top_p + ([MinPLogitsWarper(self.min_p)] if self.min_p != 0.0 else [])

    def samples_per_prompt(self, k: int) -> int:
        return {"greedy": 1, "sample": k, "beam": min(k, self.beams)}[self.kind]

    def generate_kwargs(self, k: int) -> dict:
        n = self.samples_per_prompt(k)
        if self.kind == "sample":
            return dict(do_sample=True, temperature=self.temperature, top_k=0, top_p=self.top_p,
                        min_p=self.min_p or None, num_return_sequences=n)  # fmt: skip
        return dict(do_sample=False, num_beams=self.beams, num_return_sequences=n)


def batch_seed(seed: int, label: str, batch: int) -> int:
    """The torch seed of one batch of one decoding: a hash, so nearby (seed, batch) pairs are unrelated."""
    digest = hashlib.sha256(f"{seed}/{label}/{batch}".encode()).digest()
    return int.from_bytes(digest[:8], "little") % 2**63


@dataclass
class Decoded:
    """What `decode` generated for a batch: one entry per returned sequence, prompt-major (row i * n + j is
    sequence j of prompt i, n = decoding.samples_per_prompt(k))."""

    prompt_ids: list[list[int]]  # the prompt's ids as the model read them, padding removed
    completion_ids: list[list[int]]  # generated ids up to and including the first EOS
    ended: list[bool]  # True: ended by EOS; False: cut at max_new_tokens
    entropy: list[float] | None  # mean policy entropy along the completion (with `entropy=True`)
    path: str = COMPACT  # COMPACT (decode_compact) or GENERATE (transformers' generate)


@torch.no_grad()
def decode(model, batch: dict, decoding: Decoding, k: int, *, max_new_tokens: int, seed: int | None, eos_token_id: int,
           pad_token_id: int, entropy: bool = False, logits_processor=None, compact: bool = True,
           synced_gpus: bool = False, check: bool = True) -> Decoded:
    """Decode a left-padded batch of prompts (`left_padded`) with one decoding setting: K samples per prompt,
    the top min(K, width) beams, or one greedy completion.

    torch is seeded with `seed` first (None: not reseeded), so two calls with the same seed draw the same random
    numbers (the sweep's calculator pass differs from the plain one only from its first forced token on).
    `entropy` asks for the mean per-token entropy of the policy (raw logits, before temperature and processors).
    Greedy and sampled decoding run `decode_compact` (finished rows leave the batch); with `compact=False`, and
    for beam search, transformers' `generate` decodes. `synced_gpus` (FSDP: each forward is a collective) makes
    every process step until all are done, through `generate`. Encoder-decoder models alike: the prompts are the
    encoder's input, and `logits_processor` sees the decoder's ids ([decoder start] + generated, so the
    calculator's prompt_length is 1). `check`: the compact decoder's self-check (module docstring) first.
    """
    n = decoding.samples_per_prompt(k)
    compact = compact and not synced_gpus and decoding.kind != "beam"
    if compact and check:
        compact = check_compact(model, batch, eos_token_id=eos_token_id, pad_token_id=pad_token_id)["passed"]
    if seed is not None:
        torch.manual_seed(seed)
    if compact:
        # inference mode spares autograd's bookkeeping of every op (8% of a toy model's sweep); not under autocast,
        # where no_grad keeps autocast's cache of the weights' bf16 casts for the whole decode
        with torch.inference_mode(not torch.is_autocast_enabled(model.device.type)):
            return decode_compact(model, batch, decoding, n, max_new_tokens=max_new_tokens,
                                  eos_token_id=eos_token_id, entropy=entropy,
                                  logits_processor=logits_processor)  # fmt: skip
    out = model.generate(
        **batch,
        **decoding.generate_kwargs(k),
        max_new_tokens=max_new_tokens,
        pad_token_id=pad_token_id,
        eos_token_id=eos_token_id,
        return_dict_in_generate=True,
        output_logits=entropy,
        logits_processor=logits_processor,
        synced_gpus=synced_gpus,
    )
    # generate's rows: prompt + generated (decoder-only), [decoder start] + generated (encoder-decoder)
    start = 1 if model.config.is_encoder_decoder else batch["input_ids"].shape[1]
    generated = out.sequences[:, start:]  # (B * n, G)
    lengths = completion_lengths(generated, eos_token_id)
    prompts = [ids[mask.bool()].tolist() for ids, mask in zip(batch["input_ids"], batch["attention_mask"])]
    mean_entropy = None
    if entropy:
        beam_indices = out.beam_indices if decoding.kind == "beam" else None
        mean_entropy = completion_entropy(out.logits, lengths, beam_indices).tolist()
    return Decoded(
        prompt_ids=[p for p in prompts for _ in range(n)],
        completion_ids=[ids[:m] for ids, m in zip(generated.tolist(), lengths.tolist())],
        ended=(generated == eos_token_id).any(1).tolist(),
        entropy=mean_entropy,
        path=GENERATE,
    )


class _StepLogits(LogitsProcessor):
    """A processor that keeps a copy of each step's raw scores (float32) and changes nothing."""

    def __init__(self):
        self.steps = []

    def __call__(self, input_ids, scores):
        self.steps.append(scores.detach().float().clone())
        return scores


def agreement(fast_ids: list, stock_ids: list, fast_steps: list, stock_steps: list, tolerance: float) -> dict:
    """How the compact decoder's greedy rows agree with generate's: `*_ids` the rows' tokens, `*_steps` each step's
    raw logits (rows, V), the same rows in the same order. At each step, over the rows whose tokens agree so far,
    the largest |difference| of the logits relative to generate's largest magnitude; a row whose token differs
    from generate's is a tie if generate's logit of the compact decoder's token is within `tolerance` of that
    magnitude below its own token's (either may come out of two roundings), a failure otherwise, and its later
    steps are not compared. The steps stop where a row has ended (the compact decoder's rows are then fewer and
    reordered). Returns {"passed", "tokens_equal", "ties" (rows), "check/compact_logits_max_rel_diff",
    "tolerance"}."""
    agree, worst, ties, passed = [True] * len(stock_ids), 0.0, 0, True
    for t, (a, b) in enumerate(zip(fast_steps, stock_steps)):
        live = [r for r in range(len(agree)) if agree[r]]
        if a.shape != b.shape or not live:
            break
        scale = b[live].abs().max()
        worst = max(worst, ((a[live] - b[live]).abs().max() / scale).item())
        for r in live:
            mine = fast_ids[r][t] if t < len(fast_ids[r]) else None
            theirs = stock_ids[r][t] if t < len(stock_ids[r]) else None
            if mine == theirs:
                continue
            agree[r] = False
            tie = mine is not None and theirs is not None and bool(b[r, theirs] - b[r, mine] <= tolerance * scale)
            ties, passed = ties + tie, passed and tie
    return {"passed": passed and worst <= tolerance, "tokens_equal": fast_ids == stock_ids, "ties": ties,
            "check/compact_logits_max_rel_diff": worst, "tolerance": tolerance}  # fmt: skip


def check_compact(model, batch: dict, *, eos_token_id: int, pad_token_id: int) -> dict:
    """`decode_compact` against `generate` on the first CHECK_PROMPTS prompts of a left-padded batch, once per
    process for a device type, dtype (`compute_dtype`: autocast's when on) and model type (later calls return the
    first record): CHECK_TOKENS greedy tokens, two rows per prompt for the compact decoder, one for generate,
    their tokens and raw logits compared (`agreement`). Returns {"passed", "tokens_equal", "ties",
    "check/compact_logits_max_rel_diff", "tolerance"}; a failure is logged once with its figures."""
    key = (model.device.type, compute_dtype(model), model.config.model_type)
    if key in _checked:
        return _checked[key]
    rows = {k: v[:CHECK_PROMPTS] for k, v in batch.items()}
    width = int(rows["attention_mask"].sum(1).max())  # no column of padding alone
    rows = {k: v[:, v.shape[1] - width :] for k, v in rows.items()}
    greedy, ids = Decoding("greedy"), dict(eos_token_id=eos_token_id, pad_token_id=pad_token_id)
    fast_logits, stock_logits = _StepLogits(), _StepLogits()
    with torch.random.fork_rng(devices=[model.device] if model.device.type == "cuda" else []):
        fast = decode_compact(model, rows, greedy, 2, max_new_tokens=CHECK_TOKENS, eos_token_id=eos_token_id,
                              logits_processor=fast_logits)  # fmt: skip
        stock = decode(model, rows, greedy, 1, max_new_tokens=CHECK_TOKENS, seed=None, compact=False, check=False,
                       logits_processor=LogitsProcessorList([stock_logits]), **ids)  # fmt: skip
    tolerance = CHECK_TOLERANCE[key[1]]
    record = agreement(fast.completion_ids, [c for c in stock.completion_ids for _ in range(2)], fast_logits.steps,
                       [b.repeat_interleave(2, 0) for b in stock_logits.steps], tolerance)  # fmt: skip
    if not record["passed"]:
        logger.warning(
            "decode: on %s the compact decoder differs from generate (tokens equal: %s, logits %.3g relative, "
            "tolerance %.3g): decoding goes through generate", key, record["tokens_equal"],
            record["check/compact_logits_max_rel_diff"], tolerance,
        )  # fmt: skip
    _checked[key] = record
    return record


@torch.no_grad()
def decode_compact(model, batch: dict, decoding: Decoding, n: int, *, max_new_tokens: int, eos_token_id: int,
                   entropy: bool = False, logits_processor=None) -> Decoded:
    """Greedy or ancestral decoding of `n` completions per prompt, step by step with the KV cache, where a row
    that has generated EOS leaves the batch (its cache rows are dropped): finished rows stop costing compute.

    A decoder-only model reads each prompt once. For n > 1 samples of a model whose attention allows it
    (irl.kv_cache `shares_prefix`), the prompt's keys and values are kept once for its n samples and each step's
    attention reads them once (`shared_prefix`); otherwise the prompt's cache is repeated for the n samples. Either
    way the generated positions go into buffers that hold every position the decode can reach (`preallocated`),
    so a step writes one position in place rather than copying the whole cache, and when rows finish, the last
    active rows take their places (`fill_holes`): the rows' order changes, each row's state moves with it. Each step
    reads the raw logits of the active rows (float32), applies `logits_processor` to them with the rows' ids so far
    (as `generate` passes them: prompt included for a decoder-only model, [decoder start] + generated for an
    encoder-decoder one), then takes the argmax (greedy) or samples (`draw`) from softmax of scores / temperature
    filtered by the decoding's top-p and min-p (`Decoding.warpers`, generate's order; no top-k). An
    encoder-decoder model encodes the prompts once; each step runs the decoder with the cached self- and
    cross-attention of its active rows. Greedy rows equal `generate`'s; sampled rows are reproducible for a seed
    (the random draws are those of the active rows only, so they differ from `generate`'s)."""
    seq2seq = model.config.is_encoder_decoder
    attention = batch["attention_mask"].repeat_interleave(n, 0)  # (N, P): row i * n + j is sample j of prompt i
    total, device = attention.shape[0], attention.device
    rows = torch.arange(total, device=device)  # the original row of each active row
    generated = torch.zeros((total, max_new_tokens), dtype=torch.long, device=device)
    lengths = torch.zeros(total, dtype=torch.long, device=device)
    ended = torch.zeros(total, dtype=torch.bool, device=device)
    entropy_sum = torch.zeros(total, device=device)
    shared = False
    if seq2seq:  # ids: the decoder's, from its start token; the encoder reads each prompt once
        encoder = model.get_encoder()
        hidden = encoder(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).last_hidden_state
        hidden = hidden.repeat_interleave(n, 0) if n > 1 else hidden  # (N, P, H): held for every step
        ids = torch.full((total, 1), model.config.decoder_start_token_id, dtype=torch.long, device=device)
        out = model(encoder_outputs=BaseModelOutput(last_hidden_state=hidden), attention_mask=attention,
                    decoder_input_ids=ids, use_cache=True)  # fmt: skip
        cache = preallocated(out.past_key_values, 1 + max_new_tokens)
        logits = out.logits[:, -1]
    else:
        ids = batch["input_ids"].repeat_interleave(n, 0)
        prompt_attention = batch["attention_mask"]
        positions = (prompt_attention.cumsum(1) - 1).clamp(min=0)
        out = model(input_ids=batch["input_ids"], attention_mask=prompt_attention, position_ids=positions,
                    use_cache=True, logits_to_keep=1)  # fmt: skip
        shared = n > 1 and shares_prefix(model, out.past_key_values)
        if shared:  # each prompt's keys and values held once for its n samples
            cache = shared_prefix(out.past_key_values, prompt_attention, max_new_tokens, repeats=n)
        else:
            cache = preallocated(out.past_key_values, ids.shape[1] + max_new_tokens, repeats=n)
        logits = out.logits[:, -1].repeat_interleave(n, 0)
    with shared_prefix_attention_on(model) if shared else nullcontext():
        for t in range(max_new_tokens):
            raw = logits.float()  # (R, V)
            if entropy:
                entropy_sum[rows] += _entropy(raw)
            scores = raw if logits_processor is None else logits_processor(ids, raw)
            if decoding.kind == "sample":
                scores = scores / decoding.temperature
                for warp in decoding.warpers():
                    scores = warp(ids, scores)
                token = draw(torch.softmax(scores, dim=-1))
            else:
                token = scores.argmax(-1)
            generated[rows, t] = token
            lengths[rows] += 1
            done = token == eos_token_id
            ended[rows[done]] = True
            if t == max_new_tokens - 1 or done.all():
                break
            ids = torch.cat([ids, token[:, None]], 1)
            if not seq2seq:
                attention = torch.cat([attention, attention.new_ones((len(rows), 1))], 1)
            if done.any():  # drop finished rows from every batch-shaped state
                keep = fill_holes(~done)  # kept rows stay in place, the last ones fill the gaps
                cache.batch_select_indices(keep)
                rows, ids, attention, token = rows[keep], ids[keep], attention[keep], token[keep]
                if seq2seq:
                    hidden = hidden[keep]
            if seq2seq:
                out = model(encoder_outputs=BaseModelOutput(last_hidden_state=hidden), attention_mask=attention,
                            decoder_input_ids=token[:, None], past_key_values=cache, use_cache=True)  # fmt: skip
            else:
                position = attention.sum(1, keepdim=True) - 1
                # shared-prefix attention holds the prompts' padding in its layers: no mask to pass
                mask = {"shared_prefix": cache} if shared else {"attention_mask": attention}
                out = model(input_ids=token[:, None], position_ids=position, past_key_values=cache, use_cache=True,
                            **mask)  # fmt: skip
            cache, logits = out.past_key_values, out.logits[:, -1]
    prompts = [p[m.bool()].tolist() for p, m in zip(batch["input_ids"], batch["attention_mask"])]
    return Decoded(
        prompt_ids=[p for p in prompts for _ in range(n)],
        completion_ids=[g[:m] for g, m in zip(generated.tolist(), lengths.tolist())],
        ended=ended.tolist(),
        entropy=(entropy_sum / lengths).tolist() if entropy else None,
    )


@torch.no_grad()
def sample_completions(model, prompt_input_ids, prompt_attention_mask, *, num_samples: int, max_new_tokens: int,
                       temperature: float, eos_token_id: int, pad_token_id: int, synced_gpus: bool = False) -> dict:
    """`num_samples` completions per prompt from `model` (an unwrapped causal or encoder-decoder LM), in training
    layout.

    prompt_input_ids, prompt_attention_mask: (B, P), left-padded. Sampling is from the full softmax at
    `temperature` (no top-k/top-p), in eval mode, without reseeding torch; the model's train/eval mode is restored
    afterwards. Returns `pack_samples` of the B * num_samples sequences, the completions of prompt i in rows
    i*K ... i*K + K-1.
    """
    was_training = model.training
    model.eval()
    try:
        decoded = decode(
            model, {"input_ids": prompt_input_ids, "attention_mask": prompt_attention_mask},
            Decoding("sample", temperature=temperature), num_samples, max_new_tokens=max_new_tokens, seed=None,
            eos_token_id=eos_token_id, pad_token_id=pad_token_id, synced_gpus=synced_gpus,
        )  # fmt: skip
    finally:
        model.train(was_training)
    start = model.config.decoder_start_token_id if model.config.is_encoder_decoder else None
    return pack_samples(decoded, pad_token_id, prompt_input_ids.device, decoder_start_token_id=start)


def pack_samples(decoded: Decoded, pad_token_id: int, device=None, decoder_start_token_id: int | None = None) -> dict:
    """Decoded sequences in training layout (irl.data `episode_features` padded by `Collator`): each completion up
    to and including the first EOS, or cut with no EOS appended, after its prompt (decoder-only) or after the
    decoder start token with the prompt in the encoder (encoder-decoder: `decoder_start_token_id` given); right
    padding. Tensors (N, W) with W the longest row, plus `truncated` (N,) bool, True where the completion did
    not end."""
    features = [
        episode_features(Encoded(p, c, e), decoder_start_token_id)
        for p, c, e in zip(decoded.prompt_ids, decoded.completion_ids, decoded.ended)
    ]
    batch = Collator(pad_token_id, seq2seq=decoder_start_token_id is not None)(features)
    batch["truncated"] = ~torch.tensor(decoded.ended, dtype=torch.bool)
    return {k: v.to(device) for k, v in batch.items()}


def _pad_value(key: str, pad_token_id: int) -> int:
    return pad_token_id if key.endswith("input_ids") else 0  # ids get the pad token, masks 0


def pad_together(a: dict, b: dict, pad_token_id: int, keys) -> tuple[dict, dict]:
    """The tensors `keys` (irl.data.batch_keys) of two batches, each right-padded to the wider of the two, so their
    rows can be stacked (`cat_rows`). Tensors of one sequence (ids, attention and completion masks) share a
    width in a batch, so they stay aligned."""
    widths = {k: max(a[k].shape[1], b[k].shape[1]) for k in keys}

    def pad(batch):
        return {
            k: torch.nn.functional.pad(batch[k], (0, widths[k] - batch[k].shape[1]), value=_pad_value(k, pad_token_id))
            for k in keys
        }

    return pad(a), pad(b)


def cat_rows(a: dict, b: dict, keys) -> dict:
    """The tensors `keys` of two batches of the same widths as one: a's rows, then b's."""
    return {k: torch.cat([a[k], b[k]]) for k in keys}
