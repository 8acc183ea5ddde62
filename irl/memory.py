"""Will it fit? The peak memory of a training run or a decoding sweep as configured, predicted before any weight
exists, and the measured peak it is checked against.

    python -m irl train --config configs/paper/tldr_iqlearn.yaml --dry_run     # prints the terms, then one JSON line
    python -m analysis sweep --run runs/demo/mle --dry_run                      # the same for decoding (its batch of
                                                                                # longest prompts, each decoding)

What is predicted is the peak of the bytes held by torch tensors on the training device (what
torch.cuda.max_memory_allocated reports on CUDA; on CPU the same count, taken from the profiler's allocation
events by `measured_peak`), for one optimizer step after the first, every batch at max_length and every position
a completion token (the most a batch can hold). Process overhead (the Python interpreter, torch's libraries, the
CUDA context, the allocator's cache) is not in it; `fits` leaves HEADROOM of the device's memory for it.

The terms, P parameters of which P_t trainable, in the model's dtype (b bytes each):

    weights      P b
    gradients    P_t b                          (set to None after each step: held from backward to the step, and
                                                through every micro-batch under gradient accumulation)
    optimizer    2 P_t b                        AdamW's two moments; 8-bit or other optimizers are not modelled
    activations  what autograd saves in the model's forward for one batch, counted by tracing the forward of the
                 same architecture with 1 and 2 layers on batches of 1 and 2 sequences (`saved_bytes`) and
                 extending the count linearly in layers and in sequences: exact for every layer alike; with
                 activation checkpointing, each layer's input and one layer's activations (`activation_bytes`)
    head         the objective's route through the output embedding W (V, H), N = B T rows (irl/kernels.py):
                 chunked, single pass: dL/dh (N, H) and dL/dW (V, H) formed in forward and kept (backward scales
                 them in place), 2 chunks of logits (rows, V) alive while a chunk is processed, and below float32
                 the group of chunks' dL/dz they are gathered into (irl/kernels.py GROUP_ROWS);
                 materialised logits: the (B, T, V) logits kept, their gradient (B, T, V) in backward, and
                 a chunk of CHUNK_ROWS rows of exp(z - max) in the fused pass (two below float32)

GAIL adds what stays resident (the frozen reference policy, P b, and the discriminator, the policy's body with
its gradients and AdamW's moments, 4 P b) and a moment of its own, the discriminator's step over the expert and
sampled rows (its activations traced as the policy's, with a one-logit head).

The peak is the largest of the moments of a step: the end of forward (weights, optimizer, activations, the head's
kept tensors and chunks), the start of backward (the same, plus what the head's backward forms: the gradient of the
materialised logits, or the recomputing route's chunk and dL/dW), under activation checkpointing a layer's
recomputation (weights, optimizer, the kept inputs and one layer's activations), GAIL's discriminator step, and the
optimizer's step (weights, optimizer, gradients, and two temporaries of the largest parameter's size in AdamW's
per-parameter update); under gradient accumulation the gradients are held at every moment.

Decoding (`predict_decoding`, no gradient): weights, and the larger of the prompt's forward beside its cache and
the KV cache at its fullest (every row to the last step, with an encoder-decoder model's encoder output of every
row) beside a step's logits. Reward extraction (`predict_scoring`): weights, and the larger of a layer's feed-forward
and the kept logits (or, on the chunked route, the final hidden states and a chunk of logits). Not modelled: 8-bit
optimizers, and activation offloading.

Under bf16 autocast (training's `--bf16 true`; decoding and scoring under torch.autocast) the weights stay float32
and autocast casts each to bfloat16 where a matmul reads it: the activations are traced under autocast (what is
saved then includes each layer's cast weights), the head's products (logits, dL/dh) are bfloat16 with W's cast
kept for backward, and decoding holds the cast of each weight from its first read to the end of its run
(autocast's weight cache: the output head's is made after the prompts' forward, an encoder-decoder model's decoder's
after its encoder's). A rotary model's cache is then float32, values included (`kv_bytes_per_token`).
"""

import copy
import dataclasses
import json
from dataclasses import dataclass

import torch

from irl import kernels

HEADROOM = 0.10  # share of the device's memory left to what is not a tensor (interpreter, libraries, allocator)
PROBE_VOCAB = 128  # vocabulary of the traced models: the head's terms are added from their formula
DTYPE = torch.float32  # training keeps float32 weights (irl/model.py load_model; bf16 is autocast)


@dataclass
class Prediction:
    """A run's predicted memory, in bytes: its terms and the peak they give (module docstring)."""

    weights: int
    gradients: int
    optimizer: int
    activations: int
    head_kept: int  # tensors of the head's route kept from forward to backward
    head_transient: int  # chunks of logits alive during forward
    head_backward: int  # what backward adds at its start
    largest_parameter: int
    attention_backward: int = 0  # gradients of materialised attention scores in a layer's backward (T5)
    recomputed: int = 0  # one layer's activations, recomputed in backward under activation checkpointing
    accumulated: int = 0  # gradients held through the next micro-batch under gradient accumulation
    resident: int = 0  # other models held through the step: GAIL's reference and discriminator (its AdamW too)
    discriminator: int = 0  # GAIL: the activations of the discriminator's step, before the policy's forward
    peak: int = 0

    def __post_init__(self):
        base = self.weights + self.optimizer + self.resident
        held = base + self.accumulated + self.activations
        forward_end = held + self.head_kept + self.head_transient
        backward_start = held + self.head_kept + max(self.head_backward, self.attention_backward)
        # the top layer recomputed once the head's gradients are down to dL/dh; lower layers find fewer inputs kept
        recompute = held + self.recomputed
        discriminator = base + self.accumulated + self.discriminator
        step = base + self.gradients + 2 * self.largest_parameter
        self.peak = max(forward_end, backward_start, recompute, discriminator, step)


def measured_peak(fn) -> tuple[int, object]:
    """(peak bytes of torch tensors on the CPU above those held when `fn` starts, fn's result): the running sum
    of the profiler's allocation and free events while `fn()` runs, at its highest."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        result = fn()
    events = sorted((e.start_ns(), e.nbytes()) for e in prof.profiler.kineto_results.events() if e.name() == "[memory]")
    live = peak = 0
    for _, nbytes in events:
        live += nbytes
        peak = max(peak, live)
    return peak, result


def saved_bytes(model, fn) -> int:
    """Bytes of the tensors autograd saves for backward while `fn()` runs (each storage once, parameters excluded)."""
    parameters = {p.untyped_storage().data_ptr() for p in model.parameters()}
    saved = {}

    def pack(t):
        storage = t.untyped_storage()
        if storage.data_ptr() not in parameters:
            saved[storage.data_ptr()] = storage.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn()
    return sum(saved.values())


def model_config(cfg):
    """The model's transformers config, without weights: a preset's as build_preset makes it (its vocabulary
    that of cfg.tokenizer, else cfg.vocab_size, the most a tokenizer trained for it holds), else the config at
    cfg.model."""
    from transformers import AutoConfig

    from irl import model as models

    if cfg.model in models.PRESETS:
        size = len(models.load_tokenizer(cfg.tokenizer, cfg.trust_remote_code)) if cfg.tokenizer else cfg.vocab_size
        with torch.device("meta"):
            return models.build_preset(cfg.model, _Sized(size), cfg.max_length, cfg.seed).config
    return AutoConfig.from_pretrained(cfg.model, trust_remote_code=cfg.trust_remote_code)


@dataclass
class _Sized:
    """What build_preset reads of a tokenizer, for a tokenizer not trained yet."""

    size: int
    eos_token_id: int = 1
    pad_token_id: int = 0

    def __len__(self):
        return self.size


def _auto(config):
    from transformers import AutoModelForCausalLM, AutoModelForSeq2SeqLM

    return AutoModelForSeq2SeqLM if config.is_encoder_decoder else AutoModelForCausalLM


def _with_layers(config, layers: int, vocab: int):
    config = copy.deepcopy(config)
    config.num_hidden_layers = layers
    if config.is_encoder_decoder:
        config.num_decoder_layers = layers
    config.vocab_size = vocab
    config.pad_token_id = None  # the embedding's padding index changes no memory, and may lie past `vocab`
    return config


def _probe(config, layers: int, batch: int, lengths: tuple[int, int], chunked: bool, autocast: bool,
           padded: bool, lora=None, input_grads: bool = False) -> int:
    """Activation bytes of one forward of the architecture with `layers` layers on `batch` sequences of `lengths`
    (decoder-only: (T, 0); encoder-decoder: (encoder T, decoder T)), on the CPU, weights left uninitialised (the
    count does not depend on their values). When `padded`, one sequence is padded at its end, so that the padding
    mask a real batch has is built. With `lora` (a TrainConfig), the model carries its adapters, as training's does;
    with `input_grads`, its input embeddings' output requires a gradient, as activation checkpointing makes it (with
    frozen embeddings, the first layer then saves what every other layer does)."""
    from irl.trainer import final_hidden

    config = _with_layers(config, layers, PROBE_VOCAB)
    with torch.device("meta"):
        model = _auto(config).from_config(config, dtype=DTYPE)
    model = model.to_empty(device="cpu").train()
    if lora is not None:  # frozen weights: their layers keep only what the adapters' and the inputs' gradients need
        from irl.model import add_lora

        model = add_lora(model, lora, lora.model)
        if input_grads:
            model.enable_input_require_grads()
    encoder, decoder = lengths
    ids = torch.zeros(batch, encoder, dtype=torch.long)
    mask = torch.ones_like(ids)
    mask[0, -1] = int(not padded)
    if config.is_encoder_decoder:
        dec = torch.zeros(batch, decoder, dtype=torch.long)
        dec_mask = torch.ones_like(dec)
        dec_mask[0, -1] = int(not padded)
        forward = lambda: model(input_ids=ids, attention_mask=mask, decoder_input_ids=dec,  # noqa: E731
                                decoder_attention_mask=dec_mask)  # fmt: skip
    elif chunked:
        forward = lambda: final_hidden(model, ids, mask)  # noqa: E731
    else:
        forward = lambda: model(input_ids=ids, attention_mask=mask)  # noqa: E731
    # under autocast what is saved includes each layer's weights cast to bfloat16 (autocast's cache)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        return saved_bytes(model, forward)


def activation_bytes(config, batch: int, lengths: tuple[int, int], chunked: bool, autocast: bool = False,
                     checkpointed: bool = False, lora=None) -> tuple[int, int]:
    """(activations kept from forward to backward, one layer's activations recomputed in backward) of the full
    model on `batch` sequences: traced at 1 and 2 layers and 1 and 2 sequences, then a + b B + c L + d B L through
    the four counts (each term linear in layers and in sequences), and nothing recomputed. With activation
    checkpointing (`checkpointed`) each layer keeps only its input, the residual stream (B, T, H) in float32:
    a + b B + L B T H 4, and backward recomputes one layer's activations at a time, c + d B."""
    padded = batch > 1  # a batch of one sequence is never padded: its attention takes no mask
    counts = {(n, b): _probe(config, n, b, lengths, chunked, autocast, padded, lora, checkpointed)
              for n in (1, 2) for b in (1, 2)}  # fmt: skip
    per_layer = {b: counts[2, b] - counts[1, b] for b in (1, 2)}  # one more layer, at 1 and 2 sequences
    fixed = {b: counts[1, b] - per_layer[b] for b in (1, 2)}
    layers = config.num_hidden_layers

    def at(values):  # linear in sequences through the counts at 1 and 2
        return values[1] + (batch - 1) * (values[2] - values[1])

    if checkpointed:
        hidden = hidden_size(config)
        return at(fixed) + layers * batch * sum(lengths) * hidden * 4, at(per_layer)
    return at(fixed) + layers * at(per_layer), 0


def predict_train(cfg, config=None) -> Prediction:
    """The predicted memory of training per `cfg` (irl/config.py TrainConfig): module docstring."""
    config = config or model_config(cfg)
    with torch.device("meta"):
        model = _auto(config).from_config(config, dtype=DTYPE)
    if cfg.use_peft:
        from irl.model import add_lora

        with torch.device("meta"):
            model = add_lora(model, cfg, cfg.model)
    dtype = next(model.parameters()).dtype
    width = torch.finfo(dtype).bits // 8
    parameters = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    largest = max(p.numel() for p in model.parameters() if p.requires_grad) * width

    batch, length = cfg.per_device_train_batch_size, cfg.max_length
    if cfg.samples_policy:  # sampled completions go through the same forward as the expert rows
        batch += cfg.per_device_train_batch_size * cfg.num_samples
    seq2seq = config.is_encoder_decoder
    chunked = cfg.chunked_loss and can_chunk(config)
    splits = [(length - d, d + 1) for d in (1, length // 2, length - 1)] if seq2seq else [(length, 0)]
    autocast = bool(cfg.bf16)
    checkpointed = bool(cfg.activation_checkpointing)
    lora = cfg if cfg.use_peft else None
    activations, recomputed = max(activation_bytes(config, batch, split, chunked, autocast, checkpointed, lora)
                                  for split in splits)  # fmt: skip

    head = model.get_output_embeddings().weight
    vocab, hidden = head.shape
    rows = batch * (max(d for _, d in splits) if seq2seq else length)  # positions whose logits are read
    acc = max(width, 4)  # the head's statistics and its dW accumulate in at least float32
    head_grad = vocab * hidden * acc if head.requires_grad else 0  # no dL/dW for a frozen head (LoRA)
    # under bf16 autocast the head's products (logits, dL/dh) are bfloat16, and W's bfloat16 cast is kept for backward
    product = 2 if autocast else width
    cast = vocab * hidden * 2 if autocast else 0
    if chunked:
        from irl.objectives import single_pass

        chunk = min(rows, max(1, kernels.CHUNK_LOGITS // vocab, -(-rows * hidden // vocab)))  # rows of a chunk
        # a chunk's z and exp(z - max) (below float32 the product z is read from is written into the latter's
        # memory), and below float32 the group of chunks' dL/dz they are gathered into when a group holds more than
        # one chunk (irl/kernels.py _ChunkBuffers, GROUP_ROWS); without statistics (the recomputing route's
        # backward) the product has a buffer of its own
        low = product != acc
        logits = chunk * vocab * acc
        group = min(kernels.group_rows(chunk, low_precision=low), rows)
        grouped = group * vocab * product if group > chunk else 0
        if single_pass(_objective(cfg)):
            kept = rows * hidden * product + head_grad + cast  # dL/dh and dL/dW formed in forward
            transient = 2 * logits + grouped
            backward = 0  # both scaled in place by the loss's output gradient
        else:  # recomputed in backward: the rows' hidden states are kept, and the chunk comes back with dL/dz
            kept = rows * hidden * product + cast
            transient = 2 * logits
            backward = logits + (chunk * vocab * product if low else 0) + grouped + head_grad
    else:
        kept = rows * vocab * product + cast  # the logits, kept by the fused pass
        copies = 1 if product == acc else 2  # a chunk of exp(z - max), and of z in float32 when the logits are not
        transient = copies * min(kernels.CHUNK_ROWS, rows) * vocab * acc
        backward = rows * vocab * acc + (rows * vocab * product if product != acc else 0)  # dL/dz, and in the dtype
    # T5's relative position bias is a float attention mask that needs a gradient: each layer's backward forms
    # the (B, heads, T, T) gradients of its scores, its softmax and the bias, at the longest self-attention
    longest = max(max(splits)) if seq2seq else length
    attention_backward = 3 * scores_bytes(config, batch, longest) if relative_bias(config) else 0
    resident = discriminator = 0
    if cfg.objective == "gail":  # irl/gail.py: a frozen copy of the policy (not with LoRA) and the discriminator,
        # the policy's body and a one-logit head, trained by AdamW on the expert and sampled rows
        body = parameters - (0 if config.tie_word_embeddings else vocab * hidden)
        resident = (0 if cfg.use_peft else parameters * width) + 4 * body * width
        discriminator = sum(activation_bytes(config, batch, splits[-1], False, autocast, checkpointed))
    return Prediction(
        attention_backward=attention_backward,
        recomputed=recomputed,
        accumulated=trainable * width if cfg.gradient_accumulation_steps > 1 else 0,
        resident=resident,
        discriminator=discriminator,
        weights=parameters * width,
        gradients=trainable * width,
        optimizer=2 * trainable * width,
        activations=activations,
        head_kept=kept,
        head_transient=transient,
        head_backward=backward,
        largest_parameter=largest,
    )


def _objective(cfg):
    from irl.trainer import objective_fn

    return objective_fn(cfg)


def device_memory(device: torch.device) -> int:
    """Bytes the device can hold: a CUDA device's total memory, else the host's available memory (MemAvailable)."""
    if device.type == "cuda":
        return torch.cuda.get_device_properties(device).total_memory
    with open("/proc/meminfo") as f:
        fields = dict(line.split(":", 1) for line in f)
    return int(fields["MemAvailable"].split()[0]) * 1024


def dry_run_train(cfg) -> dict:
    """Print the predicted memory of training per `cfg`, term by term, whether it fits the device, and last one
    JSON object; trains nothing."""
    prediction = predict_train(cfg)
    available = device_memory(cfg.device)
    fits = prediction.peak <= (1 - HEADROOM) * available
    for name, value in dataclasses.asdict(prediction).items():
        print(f"{name:>18}: {value / 2**30:8.3f} GiB")
    print(f"{'device':>18}: {cfg.device.type}, {available / 2**30:.3f} GiB available, "
          f"{HEADROOM:.0%} left to the process")
    record = {"predicted_peak_bytes": prediction.peak, "fits": fits, "available_bytes": available,
              "device": cfg.device.type, **{f"{k}_bytes": v for k, v in dataclasses.asdict(prediction).items()
                                            if k != "peak"}}  # fmt: skip
    print(json.dumps(record))
    return record


def kv_bytes_per_token(config, width: int = 4, autocast: bool = False) -> int:
    """Bytes of keys and values one position holds in a decoder's cache, all layers: 2 L kv_heads head_dim b (and
    for an encoder-decoder model, its decoder's self-attention; cross-attention is counted per prompt token).
    Under bf16 autocast the projections are bfloat16, but rotary embeddings multiply the keys by float32 cos and sin
    before they are cached, and the values follow them: transformers' DynamicLayer starts each layer's cache as an
    empty tensor of the first keys' dtype and concatenates onto it, which promotes the bfloat16 values to float32
    (the preallocated cache of irl/kv_cache.py is built from that one, in its dtypes). Without rotary embeddings
    (T5) both stay bfloat16."""
    heads = getattr(config, "num_key_value_heads", None) or config.num_attention_heads
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    layers = config.num_decoder_layers if config.is_encoder_decoder else config.num_hidden_layers
    if autocast:
        width = 4 if "rope_parameters" in config.to_dict() else 2
    return 2 * layers * heads * head_dim * width


def predict_decoding(config, parameters: int, prompts: int, prompt_tokens: int, new_tokens: int, rows_per_prompt: int,
                     beam: bool, shared: bool, width: int = 4, autocast: bool = False) -> dict:
    """Predicted peak bytes of decoding `prompts` prompts of `prompt_tokens` tokens (left-padded to the longest),
    `rows_per_prompt` rows each (K samples or beams), up to `new_tokens` tokens, in irl/generation.py `decode`:

        weights      P b; under bf16 autocast (`autocast`) also their bfloat16 casts (`autocast_cast_bytes`), and
                     the activations and logits below in bfloat16
        later_casts  of those casts, the ones made after the prompts' forward (not held at its widest moment:
                     `prefill_cast_bytes`)
        kv_cache     per position kv_bytes_per_token: the prompt's positions once per prompt when `shared`
                     (shared-prefix decoding), else once per row; every row's generated positions, preallocated
        encoder      an encoder-decoder model's encoder output, repeated for every row (rows P H, in the weights'
                     dtype: T5's last layer norm returns it so under autocast), which each step's cross-attention
                     reads beside the cache
        prefill      the prompts' forward, no gradient (`forward_bytes` of the B prompts when `shared` or read by
                     an encoder, else of every row: generate expands the prompts first; the larger of it
                     and T5's position bias, `bias_bytes`), beside the prompts' cache (a decoder's)
        step         the active rows' logits in float32 and what is made of them (scores, softmax): 3 rows V 4
                     (and the logits in bfloat16 before, under autocast);
                     beam search: log-softmax and the (B, beams V) candidates, 4 rows V 4; and one layer's cache
                     copied (the prompt's into the preallocated buffers; beam search through generate grows and
                     reorders its cache by copies)

    and the peak is the larger of the prefill (weights less later_casts, the prompts' cache, prefill) and the
    decoding steps (weights, kv_cache, encoder, step).
    """
    rows = prompts * rows_per_prompt
    seq2seq = config.is_encoder_decoder
    cached = prompts if shared else rows  # rows holding the prompt's positions (an encoder's: its cross-attention)
    read = prompts if shared or seq2seq else rows  # generate expands the prompts to every row before a decoder
    casts = autocast_cast_bytes(config, parameters) if autocast else 0
    weights = parameters * width + casts
    later_casts = casts - prefill_cast_bytes(config, parameters) if autocast else 0
    per_token = kv_bytes_per_token(config, width, autocast)
    layers = config.num_decoder_layers if seq2seq else config.num_hidden_layers
    prompt_kv = 0 if seq2seq else read * prompt_tokens * per_token  # an encoder's output, not yet a cache
    kv = (cached * prompt_tokens + rows * new_tokens) * per_token
    copied = (kv if beam else prompt_kv) // layers
    prefill = forward_bytes(config, read * prompt_tokens, width, autocast)
    if relative_bias(config):  # the encoder's position bias, beside which the feed-forward's bytes are small
        prefill = max(prefill, bias_bytes(config, prompt_tokens, autocast))
    step = (4 if beam else 3) * rows * config.vocab_size * 4 + copied
    step += rows * config.vocab_size * 2 if autocast else 0  # the bfloat16 logits, before their float32 copy
    hidden = hidden_size(config)
    encoder = rows * prompt_tokens * hidden * width if seq2seq else 0
    terms = {"weights": weights, "kv_cache": kv, "encoder": encoder, "prefill": prefill, "step": step,
             "later_casts": later_casts}
    terms["peak"] = weights + max(prompt_kv + prefill - later_casts, kv + encoder + step)
    return terms


def dry_run_decoding(checkpoint, prompts: int, prompt_tokens: int, new_tokens: int, decodings, k: int,
                     autocast: bool = False) -> dict:
    """Print the predicted peak of decoding a batch of `prompts` prompts of `prompt_tokens` tokens under each of
    `decodings` (irl/generation.py Decoding) with K = `k`, the largest last as one JSON object with `fits`."""
    from transformers import AutoConfig

    from irl.kv_cache import MODEL_TYPES

    config = AutoConfig.from_pretrained(checkpoint)
    with torch.device("meta"):
        parameters = sum(p.numel() for p in _auto(config).from_config(config, dtype=DTYPE).parameters())
    predictions = {}
    for decoding in decodings:
        rows = decoding.beams if decoding.kind == "beam" else decoding.samples_per_prompt(k)
        shared = rows > 1 and decoding.kind == "sample" and not config.is_encoder_decoder
        shared = shared and config.model_type in MODEL_TYPES
        predictions[decoding.label] = predict_decoding(config, parameters, prompts, prompt_tokens, new_tokens, rows,
                                                       decoding.kind == "beam", shared, autocast=autocast)  # fmt: skip
    label, worst = max(predictions.items(), key=lambda item: item[1]["peak"])
    available = device_memory(torch.device("cuda" if torch.cuda.is_available() else "cpu"))
    for name, terms in predictions.items():
        print(f"{checkpoint} {name:>8}: " + ", ".join(f"{k} {v / 2**30:.3f} GiB" for k, v in terms.items()))
    record = {"predicted_peak_bytes": worst["peak"], "fits": worst["peak"] <= (1 - HEADROOM) * available,
              "available_bytes": available, "decoding": label, "checkpoint": str(checkpoint),
              **{f"{k}_bytes": v for k, v in worst.items() if k != "peak"}}  # fmt: skip
    return record


def hidden_size(config) -> int:
    """The width of the residual stream: hidden_size, or d_model for a config that names it only so."""
    return getattr(config, "hidden_size", None) or config.d_model


def relative_bias(config) -> bool:
    """Whether attention adds a learned relative position bias (T5): SDPA then takes a float mask of (B, heads,
    T, T) and materialises the scores."""
    return "relative_attention_num_buckets" in config.to_dict()


def scores_bytes(config, rows: int, tokens: int) -> int:
    """Bytes of one (rows, heads, T, T) float32 tensor of attention scores."""
    heads = getattr(config, "num_heads", None) or config.num_attention_heads
    return rows * heads * tokens * tokens * 4


def bias_bytes(config, tokens: int, autocast: bool) -> int:
    """What a forward without gradient holds of T5's position bias over `tokens` tokens: the bias (1, heads, T, T) in
    float32 and its sum with the padding mask (broadcast over the rows by SDPA), and under bf16 autocast that sum's
    bfloat16 cast, which SDPA reads (measured: 263 MiB at 8 heads, T = 2,016, against 248 MiB for the two)."""
    return scores_bytes(config, 1, tokens) * (10 if autocast else 8) // 4


def autocast_cast_bytes(config, parameters: int) -> int:
    """What bf16 autocast's weight cache holds while a decode runs with gradients possible (no_grad, not
    inference_mode): each weight a linear layer reads, cast to bfloat16 once, i.e. every parameter but an untied
    input embedding (read by index, not cast), 2 bytes each."""
    hidden = hidden_size(config)
    untied = 0 if config.tie_word_embeddings else config.vocab_size * hidden
    return 2 * (parameters - untied)


def prefill_cast_bytes(config, parameters: int) -> int:
    """Of `autocast_cast_bytes`, what the weight cache holds while the prompts' forward is at its widest: the casts
    of the weights read before it. A decoder's prompt forward reads every weight but the output head's (read once
    the last layer is done); an encoder-decoder model's reads its encoder's linear layers only (attention's four
    projections and the feed-forward's two, or three when gated, in each layer)."""
    if not config.is_encoder_decoder:
        return autocast_cast_bytes(config, parameters) - 2 * config.vocab_size * hidden_size(config)
    attention = 4 * config.d_model * config.num_heads * config.d_kv
    feed_forward = (3 if config.is_gated_act else 2) * config.d_model * config.d_ff
    return 2 * config.num_layers * (attention + feed_forward)


def forward_bytes(config, tokens: int, width: int = 4, autocast: bool = False) -> int:
    """The widest moment of a forward pass without gradient and without a KV cache over `tokens` tokens: a layer's
    feed-forward, tokens (4 H + 3 I) b (the residual stream, its norm, the layer's input and output, and gate, up
    and their product). Attention on the CPU (SDPA's flash kernel, with or without a padding mask) holds less:
    q, k, v and its output. T5's attention materialises its scores (`scores_bytes`, added by the caller).
    Under bf16 autocast the feed-forward's products are bfloat16 and the residual stream stays float32."""
    hidden = hidden_size(config)
    inner = getattr(config, "intermediate_size", None) or config.d_ff
    return tokens * (4 * hidden * width + 3 * inner * (2 if autocast else width))


def predict_scoring(config, parameters: int, batch_tokens: int, width: int = 4, autocast: bool = False,
                    chunked: bool = False) -> dict:
    """Predicted peak bytes of reward extraction (analysis/scoring.py `score`, no gradient, no KV cache) in
    batches of at most `batch_tokens` padded tokens (under bf16 autocast, `autocast`, the activations and the kept
    logits in bfloat16; in inference mode autocast keeps no casts of the weights):

        weights   P b
        forward   `forward_bytes` of batch_tokens tokens
        logits    materialised: the kept logits, at most batch_tokens V (float32), and a chunk of CHUNK_ROWS rows
                  of exp(z - max) in the fused pass (irl/kernels.py token_terms);
                  `chunked` (a decoder-only model with a linear head, analysis/scoring.py can_chunk): the final
                  hidden states of the batch (batch_tokens H b) and their kept rows, the chunk's z and exp(z - max)
                  in float32 (irl/kernels.py head_token_terms), under autocast also W's bf16 cast
    """
    hidden, vocab = hidden_size(config), config.vocab_size
    forward = forward_bytes(config, batch_tokens, width, autocast)
    if chunked and can_chunk(config):
        rows = min(batch_tokens, max(1, kernels.CHUNK_LOGITS // vocab, -(-batch_tokens * hidden // vocab)))
        logits = 2 * batch_tokens * hidden * width + 2 * rows * vocab * 4
        logits += vocab * hidden * 2 if autocast else 0  # W's cast (the chunk's bf16 product is in exp's memory)
    else:
        chunk = min(kernels.CHUNK_ROWS, batch_tokens) * vocab * 4 * (2 if autocast else 1)
        logits = batch_tokens * vocab * (2 if autocast else width) + chunk
    terms = {"weights": parameters * width, "forward": forward, "logits": logits}
    terms["peak"] = terms["weights"] + max(forward, logits)
    return terms


def can_chunk(config) -> bool:
    """Whether a model of `config` can take the chunked head routes (training's chunked loss, scoring's chunked
    route): decoder-only, its logits exactly lm_head(final hidden states) (irl/trainer.py HEAD_IS_LINEAR)."""
    from irl.trainer import HEAD_IS_LINEAR

    return not config.is_encoder_decoder and config.model_type in HEAD_IS_LINEAR


def dry_run_rewards(checkpoint, batch_tokens: int, autocast: bool = False, chunked: bool = True) -> dict:
    """Print the predicted peak of reward extraction from `checkpoint` in batches of `batch_tokens` tokens, then one
    JSON object with `fits`."""
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(checkpoint)
    with torch.device("meta"):
        parameters = sum(p.numel() for p in _auto(config).from_config(config, dtype=DTYPE).parameters())
    terms = predict_scoring(config, parameters, batch_tokens, autocast=autocast, chunked=chunked)
    available = device_memory(torch.device("cuda" if torch.cuda.is_available() else "cpu"))
    print(f"{checkpoint}: " + ", ".join(f"{k} {v / 2**30:.3f} GiB" for k, v in terms.items()))
    record = {"predicted_peak_bytes": terms["peak"], "fits": terms["peak"] <= (1 - HEADROOM) * available,
              "available_bytes": available, "checkpoint": str(checkpoint),
              **{f"{k}_bytes": v for k, v in terms.items() if k != "peak"}}  # fmt: skip
    print(json.dumps(record))
    return record
