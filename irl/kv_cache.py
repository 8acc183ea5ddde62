"""KV caches for `irl.generation.decode_compact`: buffers written in place, and attention for K samples of one
prompt that reads the prompt's keys and values once per step, not K times.

`PreallocatedLayer` holds a layer's keys and values in buffers sized for the whole decode, so a step writes one
position in place instead of concatenating the cache into a new tensor.

When a decoder-only model decodes K samples of each prompt, each step's attention reads every row's cache: the
prompt's keys and values, the same for the K rows of a prompt, and the row's own generated positions. That read
is most of the step's memory traffic once the prompt is longer than a few tokens. A `SharedPrefixLayer` holds the
prompt's part once per prompt and only the generated positions per row, and `shared_prefix_attention` computes
a step in two parts that meet in one softmax (as cascade attention does):

    scores = [q . k_prompt(i)  |  q . k_row]  (the K queries of prompt i against its keys in one product)
    out    = softmax(scores) . [v_prompt(i) ; v_row]

These are the scores, the softmax and the weighted sum of attention over the concatenated cache, term for term:
values agree with it to float rounding (the products run in another order). Padded prompt positions get the
dtype's lowest value, as transformers' masks do.

The attention function is registered with transformers (`AttentionInterface`, under `NAME`) and is selected only
while `shared_prefix_attention_on` is active; the model is called with `shared_prefix=<the cache>`, which
transformers passes through to every attention call. It serves decoding steps of one token, for the model types
in `MODEL_TYPES`, whose attention is plain scaled dot-product over full-attention layers (no sliding windows,
soft-capping or attention sinks): `shares_prefix` says when it applies."""

from contextlib import contextmanager

import torch
from transformers import AttentionInterface
from transformers.cache_utils import DynamicLayer, EncoderDecoderCache
from transformers.masking_utils import AttentionMaskInterface

NAME = "irl_shared_prefix"
MODEL_TYPES = frozenset({"llama", "mistral", "qwen2", "qwen3"})


class PreallocatedLayer(DynamicLayer):
    """A `DynamicLayer` whose keys and values are views of buffers allocated once for the whole decode: a step
    writes its new position in place instead of concatenating the layer's whole cache into a new tensor, and
    dropping finished rows moves kept rows into the first places of the same buffers.

    Built from a filled layer's (B, H, L, D) keys and values: every row repeated `repeats` times (row i * repeats
    + j is copy j of row i) into buffers of `capacity` positions. The active rows are the buffers' first `rows`,
    so `keys` and `values` are (rows, H, length, D) views, as `DynamicLayer` exposes them."""

    def __init__(self, keys: torch.Tensor, values: torch.Tensor, capacity: int, repeats: int = 1):
        super().__init__()
        batch, heads, length, dim = keys.shape
        if capacity < length:
            raise ValueError(f"capacity {capacity} is below the {length} positions already cached")
        self.dtype, self.device, self.is_initialized = keys.dtype, keys.device, True
        self.rows, self.length = batch * repeats, length
        self._keys = keys.new_empty((self.rows, heads, capacity, dim))
        self._values = values.new_empty((self.rows, heads, capacity, dim))
        self._keys[:, :, :length] = keys.repeat_interleave(repeats, 0)
        self._values[:, :, :length] = values.repeat_interleave(repeats, 0)
        self._view()

    def _view(self) -> None:
        self.keys = self._keys[: self.rows, :, : self.length]
        self.values = self._values[: self.rows, :, : self.length]

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs):
        end = self.length + key_states.shape[-2]
        if end > self._keys.shape[2]:
            raise ValueError(f"cache full: {end} positions asked of a capacity of {self._keys.shape[2]}")
        self._keys[: self.rows, :, self.length : end] = key_states
        self._values[: self.rows, :, self.length : end] = value_states
        self.length = end
        self._view()
        return self.keys, self.values

    def batch_select_indices(self, indices: torch.Tensor) -> None:
        """Keep the rows `indices`, in that order, as the first len(indices) rows: only the rows whose place
        changes are moved (`fill_holes` gives an order that moves one row per dropped one)."""
        kept = len(indices)
        moved = (indices != torch.arange(kept, device=indices.device)).nonzero()[:, 0]
        if len(moved):  # the rows read are copied out before any is written
            self._keys[moved, :, : self.length] = self._keys[indices[moved], :, : self.length]
            self._values[moved, :, : self.length] = self._values[indices[moved], :, : self.length]
        self.rows = kept
        self._view()

    def batch_repeat_interleave(self, repeats: int) -> None:
        raise NotImplementedError("a PreallocatedLayer is repeated when it is built")

    def crop(self, tokens_to_remove: int) -> None:
        raise NotImplementedError("a PreallocatedLayer keeps every position until the decode ends")


def preallocated(cache, capacity: int, repeats: int = 1):
    """`cache` (a DynamicCache, or the self-attention part of an EncoderDecoderCache) with each full-attention
    layer made a `PreallocatedLayer` of `capacity` positions, and every layer's rows repeated `repeats` times;
    layers of other kinds (sliding windows, ...) keep their class and are repeated in place."""
    layers = cache.self_attention_cache.layers if isinstance(cache, EncoderDecoderCache) else cache.layers
    for i, layer in enumerate(layers):
        if type(layer) is DynamicLayer and layer.is_initialized:
            layers[i] = PreallocatedLayer(layer.keys, layer.values, capacity, repeats)
        elif repeats > 1:
            layer.batch_repeat_interleave(repeats)
    if isinstance(cache, EncoderDecoderCache) and repeats > 1:
        cache.cross_attention_cache.batch_repeat_interleave(repeats)
    return cache


def fill_holes(keep: torch.Tensor) -> torch.Tensor:
    """The rows where `keep` (R,) is True, in the order that moves fewest rows when they become the first ones
    (`PreallocatedLayer.batch_select_indices`): a kept row among the first keep.sum() stays in its place, and the
    kept rows after them fill the places of the dropped ones."""
    kept = keep.nonzero()[:, 0]
    order = torch.arange(len(kept), device=keep.device)
    order[(~keep[: len(kept)]).nonzero()[:, 0]] = kept[kept >= len(kept)]
    return order


class SharedPrefixLayer(PreallocatedLayer):
    """One layer's cache for n samples of each prompt: the prompts' keys (B, H, D, P) and values (B, H, P, D), the
    generated positions per row in preallocated buffers (`PreallocatedLayer`, starting empty). Row i * n + j is
    sample j of prompt i; `prompt` and `sample` say, for every active row, where its prompt's keys are and which
    sample it is. Dropping rows (`batch_select_indices`) drops a prompt's keys once none of its rows is left.

    `update` and `keys` / `values` are the generated positions only: `shared_prefix_attention` adds the prompt's
    part. `get_seq_length` counts both, as the model's position bookkeeping expects."""

    def __init__(self, keys: torch.Tensor, values: torch.Tensor, prompt_mask: torch.Tensor, capacity: int,
                 repeats: int):  # fmt: skip
        prompts, heads, _, dim = keys.shape
        super().__init__(keys.new_empty((prompts * repeats, heads, 0, dim)),
                         values.new_empty((prompts * repeats, heads, 0, dim)), capacity)  # fmt: skip
        # the prompts' keys stored transposed, (B, H, D, P), as every step's product reads them: a contiguous
        # right operand takes the batched product's fast path (twice as fast on the CPU at a toy model's sizes)
        self.prefix_keys_t, self.prefix_values, self.repeats = keys.transpose(-1, -2).contiguous(), values, repeats
        lowest = torch.finfo(keys.dtype).min
        self.prefix_bias = torch.zeros(prompt_mask.shape, dtype=keys.dtype, device=keys.device)
        self.prefix_bias.masked_fill_(~prompt_mask.bool(), lowest)  # (B, P): 0, or lowest on padding
        slot = torch.arange(prompts * repeats, device=keys.device)
        self.prompt, self.sample = slot // repeats, slot % repeats

    def get_seq_length(self) -> int:
        return self.prefix_keys_t.shape[3] + self.length

    def batch_select_indices(self, indices: torch.Tensor) -> None:
        """Keep the rows `indices`, in that order; a prompt none of whose rows is kept leaves the prefix."""
        super().batch_select_indices(indices)
        live, self.prompt = torch.unique(self.prompt[indices], return_inverse=True)  # live: increasing
        self.sample = self.sample[indices]
        if len(live) < self.prefix_keys_t.shape[0]:
            self.prefix_keys_t, self.prefix_values = self.prefix_keys_t[live], self.prefix_values[live]
            self.prefix_bias = self.prefix_bias[live]

    def _per_prompt(self, rows: torch.Tensor) -> torch.Tensor:
        """(R, H, G, X) per active row -> (B, H, n * G, X) per prompt, zeros in the slots of dropped rows."""
        _, heads, group, width = rows.shape
        slots = rows.new_zeros((self.prefix_keys_t.shape[0], heads, self.repeats, group, width))
        slots[self.prompt, :, self.sample] = rows
        return slots.view(slots.shape[0], heads, self.repeats * group, width)

    def _per_row(self, prompts: torch.Tensor) -> torch.Tensor:
        """(B, H, n * G, X) per prompt -> (R, H, G, X) per active row."""
        count, heads, _, width = prompts.shape
        return prompts.view(count, heads, self.repeats, -1, width)[self.prompt, :, self.sample]

    def attend(self, query: torch.Tensor, keys: torch.Tensor, values: torch.Tensor, scaling: float) -> torch.Tensor:
        """Attention of one step's queries (R, Hq, 1, D) over each row's prompt and its generated positions
        (`keys`, `values`: (R, H, L, D), H key-value heads, each shared by Hq / H query heads), as (R, 1, Hq, D)."""
        rows, query_heads, steps, dim = query.shape
        if steps != 1:
            raise ValueError(f"shared-prefix attention decodes one token per step, got {steps}")
        heads = keys.shape[1]
        q = query.reshape(rows, heads, query_heads // heads, dim)  # query head h reads key-value head h // group
        prefix = self._per_row(self._per_prompt(q) @ self.prefix_keys_t)  # (R, H, G, P)
        prefix = prefix * scaling + self.prefix_bias[self.prompt][:, None, None, :]
        own = (q @ keys.transpose(-1, -2)) * scaling  # (R, H, G, L)
        scores = torch.cat([prefix, own], -1)  # softmax in float32 at least, as transformers' attention takes it
        probs = torch.softmax(scores, dim=-1, dtype=torch.promote_types(scores.dtype, torch.float32)).to(values.dtype)
        width = prefix.shape[-1]
        out = self._per_row(self._per_prompt(probs[..., :width]) @ self.prefix_values) + probs[..., width:] @ values
        return out.reshape(rows, 1, query_heads, dim)


def shared_prefix(cache, prompt_mask: torch.Tensor, capacity: int, repeats: int):
    """`cache` (a DynamicCache filled by reading the prompts, whose padding is `prompt_mask` (B, P)) with each layer
    made a `SharedPrefixLayer` for `repeats` samples per prompt and `capacity` generated positions."""
    for i, layer in enumerate(cache.layers):
        cache.layers[i] = SharedPrefixLayer(layer.keys, layer.values, prompt_mask, capacity, repeats)
    return cache


def shares_prefix(model, cache) -> bool:
    """Whether `shared_prefix_attention` computes `model`'s attention exactly: a decoder-only model of a type in
    MODEL_TYPES whose every cache layer is a full-attention `DynamicLayer`."""
    return (
        not model.config.is_encoder_decoder
        and model.config.model_type in MODEL_TYPES
        and all(type(layer) is DynamicLayer and layer.is_initialized for layer in cache.layers)
    )


def shared_prefix_attention(module, query, key, value, attention_mask, scaling=None, dropout=0.0,
                            shared_prefix=None, **kwargs):  # fmt: skip
    """transformers' attention interface: `SharedPrefixLayer.attend` of the cache passed as `shared_prefix`."""
    if shared_prefix is None:
        raise ValueError(f"attention {NAME!r} needs the cache passed to the model as shared_prefix=")
    if dropout or any(kwargs.get(k) is not None for k in ("sliding_window", "softcap", "s_aux", "sinks")):
        raise ValueError(f"attention {NAME!r} computes plain attention only")
    layer = shared_prefix.layers[module.layer_idx]
    return layer.attend(query, key, value, module.scaling if scaling is None else scaling), None


def _no_mask(*args, **kwargs):
    """The mask of shared-prefix attention is the prompts' padding, which its layers hold: none is built."""
    return None


AttentionInterface.register(NAME, shared_prefix_attention)
AttentionMaskInterface.register(NAME, _no_mask)


@contextmanager
def shared_prefix_attention_on(model):
    """`model`'s attention computed by `shared_prefix_attention` inside the block, its own implementation after."""
    before = model.config._attn_implementation
    model.set_attn_implementation(NAME)
    try:
        yield
    finally:
        model.set_attn_implementation(before)
