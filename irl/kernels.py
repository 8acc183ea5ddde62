"""The objectives' token kernels: the per-token quantities every objective of irl/objectives.py combines, read off a
language model's logits as a soft Q-function (METHOD.md §2), and the chunked routes that compute them (and an
objective's gradient) without holding the (B, T, V) logits.

    Q(s_t, a)   = logits_t[a]
    V(s_t)      = logsumexp_a logits_t[a]
    log pi(a_t|s_t) = Q(s_t, a_t) - V(s_t)
    r_t         = Q(s_t, a_t) - gamma * V(s_{t+1}),    V(terminal) = 0

Two routes give these per-token quantities (TokenTerms):
- `head_token_terms`, used in training wherever the model allows it (irl/trainer.py): from the final hidden
  states (B, T, H) and the output embedding, computing the logits of a chunk of rows at a time in forward and
  again in backward (`_HeadQVEntropy`), so the (B, T, V) logits never exist; only the rows some term reads
  (`action_rows`) are projected;
  `head_loss` goes further for the objectives of irl/objectives.py SINGLE_PASS: it forms the loss's gradient while
  it computes each chunk's logits, so they are computed once (`_HeadLoss`);
- `token_terms`: from materialised (B, T, V) logits, with one fused pass over them (`fused_q_v_entropy`).
`naive_token_terms` is the obvious log_softmax implementation both are tested against. All tensors below are per
action, shape (B, T-1): position k holds the action `input_ids[:, k+1]` taken in the state whose logits are
`logits[:, k]`.
"""

import dataclasses
from dataclasses import dataclass

import torch
import torch.nn.functional as F

# Rows of the (B*T, V) logits processed at once by the fused function: bounds the temporary softmax to
# CHUNK_ROWS * V floats (128 MiB at V=32k in float32) instead of a full copy of the logits.
CHUNK_ROWS = 1024
# Entries of one chunk's logits in the hidden-state route (`head_token_terms`), at least: its rows per chunk are
# max(CHUNK_LOGITS // V, N * H / V) for N rows of hidden size H (1024 rows at V = 32k; at V = 152k, 220 rows, or
# 772 for 32k rows of H = 3584). So a chunk holds 128 MiB of float32 logits, or as many entries as the hidden
# states when those are larger, and there are at most V / H + 1 chunks: each chunk reads and writes the whole
# (V, H) weight gradient once, which many small chunks would turn into the backward's main cost on a GPU.
CHUNK_LOGITS = 2**25
# Rows of low-precision dL/dz the head routes gather, at most, before they form dL/dh, dL/dW and dL/db (under bf16
# autocast): the chunks of a group (as many whole chunks as GROUP_ROWS holds, at least one) are written into one
# buffer, so that the (V, H) product dL/dz^T h and its addition to the float32 sum of dL/dW are made once per group
# instead of once per chunk. That product is bound by writing its V H outputs when it reads few rows: at V = 152k,
# H = 896 and chunks of 220 rows, it and the addition took 0.36 s a chunk, against 0.54 s for a group of 880 rows
# (2-core Xeon with AMX). A chunk of 1,024 rows or more (V = 32k) is its own group. In float32 each chunk's product
# is added in place (addmm_) and there are no groups.
GROUP_ROWS = 1024
# Entries of the low-precision (V, H) product dL/dz^T h formed at once: a slice of the vocabulary at a time, so that
# each slice is added to the float32 sum of dL/dW while it is still in cache (16 MiB of bfloat16). At V = 152k and
# H = 896, a group of 880 rows took 0.36 s so, against 0.59 s for the whole product and then its addition.
WEIGHT_SLICE_ENTRIES = 2**23


@dataclass
class TokenTerms:
    """Per-action quantities of a batch, each (B, T-1): the soft-Bellman terms of METHOD.md §2. `logp` is
    log pi(a_t|s_t) = Q(s_t, a_t) - V(s_t) and `reward(gamma)` the implicit reward of the inverse soft Bellman
    operator, r_t = Q(s_t, a_t) - gamma * V(s_{t+1}) with V(terminal) = 0; the masks hold the token sets of §1
    (completion actions only; a truncated last action has no next state and leaves every term that reads one)."""

    q: torch.Tensor  # Q(s_t, a_t): the logit of the taken token
    v: torch.Tensor  # V(s_t): logsumexp of the logits
    v_next: torch.Tensor  # V(s_{t+1}); 0 after a terminal (EOS) action
    entropy: torch.Tensor  # H(pi(.|s_t)), nats
    mask: torch.Tensor  # bool: the action is a completion token (prompt and padding excluded)
    td_mask: torch.Tensor  # bool: completion action with a next state (a truncated last token excluded)

    @property
    def logp(self) -> torch.Tensor:
        return self.q - self.v

    def reward(self, gamma: float) -> torch.Tensor:
        return self.q - gamma * self.v_next

    def rows(self, index) -> "TokenTerms":
        """The terms of a subset of the batch's sequences (`index` selects along the batch dimension)."""
        return TokenTerms(*(getattr(self, f.name)[index] for f in dataclasses.fields(self)))


class _FusedQVEntropy(torch.autograd.Function):
    """(q, v, entropy) of rows of logits in one read, with a backward that writes one (N, V) gradient.

    forward:  v = logsumexp(z), q = z[a], H = v - sum_i p_i z_i with p = softmax(z)
    backward: dL/dz = p * (g_v - g_H * (z - v + H)) + onehot(a) * g_q
    (dH/dz_i = -p_i (log p_i + H) and log p_i = z_i - v.) The straightforward route (log_softmax, gather,
    a second logsumexp for V, softmax for H) materialises several (N, V) tensors in forward and backward;
    this one materialises the softmax in chunks of CHUNK_ROWS rows only. Computed in at least float32 (a bf16
    logsumexp over 32k entries loses the value's precision).
    """

    @staticmethod
    def forward(ctx, logits, actions):
        ctx.set_materialize_grads(False)  # an unused output (entropy, when only logged) costs no backward work
        n, acc = logits.shape[0], torch.promote_types(logits.dtype, torch.float32)
        v = torch.empty(n, dtype=acc, device=logits.device)
        entropy = torch.empty_like(v)
        for rows in _chunks(n, CHUNK_ROWS):
            v[rows], entropy[rows] = _v_entropy(logits[rows].to(acc))
        q = logits.gather(-1, actions[:, None]).squeeze(-1).to(acc)
        ctx.save_for_backward(logits, actions, v, entropy)
        return q, v, entropy

    @staticmethod
    def backward(ctx, g_q, g_v, g_entropy):
        logits, actions, v, entropy = ctx.saved_tensors
        grad = torch.empty_like(logits, dtype=v.dtype)
        for rows in _chunks(logits.shape[0], CHUNK_ROWS):
            grad[rows] = logits[rows]
            _logit_grad_(grad[rows], rows, actions, v, entropy, g_q, g_v, g_entropy)
        return grad.to(logits.dtype), None


class _HeadQVEntropy(torch.autograd.Function):
    """(q, v, entropy) of the rows of logits z = h W^T + b, from the hidden states h (N, H) and the output embedding
    W (V, H), b (V,) or None, without ever holding more than one chunk of logits.

    forward:  per chunk of `chunk_rows` rows, z = h W^T + b (rows, V), then q, v, H as _FusedQVEntropy; only h,
              W, b and the per-row v, H are kept.
    backward: per chunk, z is computed again from h, then
              dL/dz = p * (g_v - g_H * (z - v + H)) + onehot(a) * g_q          (as _FusedQVEntropy)
              and per group of chunks (GROUP_ROWS; a chunk in float32)
              dL/dh = dL/dz W,    dL/dW = sum over groups of dL/dz^T h,    dL/db = sum over rows of dL/dz
    Recomputing z costs one more (rows x H x V) product per chunk (four in all instead of three) and spares the
    (N, V) logits, their softmax and their gradient. The products run in the autocast dtype when autocast is on at
    forward (as the model's own lm_head would under mixed precision), else in the promoted dtype of h and W; the
    softmax statistics in at least float32, and dL/dW accumulates in at least float32.
    """

    @staticmethod
    def forward(ctx, hidden, weight, bias, actions, chunk_rows):
        ctx.set_materialize_grads(False)  # an unused output (entropy, when only logged) costs no backward work
        device = hidden.device.type
        dtype, acc = _head_dtypes(hidden, weight)
        n = hidden.shape[0]
        q, v, entropy = (torch.empty(n, dtype=acc, device=hidden.device) for _ in range(3))
        with torch.autocast(device, enabled=False):  # dtypes are explicit below
            w, b = weight.to(dtype), None if bias is None else bias.to(dtype)
            buffers = _ChunkBuffers(min(chunk_rows, n), w.shape[0], dtype, acc, hidden.device, statistics=True)
            for rows in _chunks(n, chunk_rows):
                z = buffers.logits(hidden[rows].to(dtype), w, b)  # (rows, V)
                q[rows] = z.gather(-1, actions[rows, None]).squeeze(-1)
                v[rows], entropy[rows] = _v_entropy(z, buffers.e)
        ctx.save_for_backward(hidden, weight, bias, actions, v, entropy)
        ctx.dtype, ctx.chunk_rows = dtype, chunk_rows
        return q, v, entropy

    @staticmethod
    def backward(ctx, g_q, g_v, g_entropy):
        hidden, weight, bias, actions, v, entropy = ctx.saved_tensors
        dtype, device = ctx.dtype, hidden.device.type
        needs_hidden, needs_weight, needs_bias = ctx.needs_input_grad[:3]
        acc = torch.promote_types(weight.dtype, torch.float32)
        n = hidden.shape[0]
        grad_hidden = torch.empty_like(hidden) if needs_hidden else None
        grad_weight = _weight_grad_sum(weight, acc, n) if needs_weight else None
        grad_bias = torch.zeros_like(bias, dtype=acc) if needs_bias else None
        with torch.autocast(device, enabled=False):
            w, b = weight.to(dtype), None if bias is None else bias.to(dtype)
            buffers = _ChunkBuffers(min(ctx.chunk_rows, n), w.shape[0], dtype, acc, hidden.device, statistics=False)

            def chunk_grad(rows):
                z = buffers.logits(hidden[rows].to(dtype), w, b)  # (rows, V), as in forward
                return _logit_grad_(z, rows, actions, v, entropy, g_q, g_v, g_entropy)

            for group, grad_z in _grouped_logit_grads(n, ctx.chunk_rows, buffers, chunk_grad):
                _add_group_grads(grad_z, hidden[group].to(dtype), w, group, grad_hidden, grad_weight, grad_bias)
        grad_weight = grad_weight.to(weight.dtype) if needs_weight else None
        grad_bias = grad_bias.to(bias.dtype) if needs_bias else None
        return grad_hidden, grad_weight, grad_bias, None, None


def _head_dtypes(hidden, weight) -> tuple[torch.dtype, torch.dtype]:
    """(dtype of the head's products, dtype of its statistics): the autocast dtype when autocast is on (as the
    model's own lm_head would run), else the promoted dtype of h and W; statistics in at least float32."""
    device = hidden.device.type
    if torch.is_autocast_enabled(device):
        dtype = torch.get_autocast_dtype(device)
    else:
        dtype = torch.promote_types(hidden.dtype, weight.dtype)
    return dtype, torch.promote_types(dtype, torch.float32)


def group_rows(chunk_rows: int, low_precision: bool) -> int:
    """Rows of a group (see GROUP_ROWS): a whole number of chunks, one unless the products run below the
    statistics' precision."""
    return chunk_rows * (max(1, GROUP_ROWS // chunk_rows) if low_precision else 1)


def _grouped_logit_grads(n: int, chunk_rows: int, buffers: "_ChunkBuffers", chunk_grad):
    """(group, dL/dz of its rows in the products' dtype) for the groups of rows covering n rows (`group_rows`),
    where chunk_grad(rows) gives dL/dz of a chunk's rows in the statistics' dtype (a view of buffers.z): a group of
    one chunk is that chunk's dL/dz as `buffers.low` gives it (valid until the next chunk), a larger one its chunks'
    written into a buffer of the group."""
    for group in _chunks(n, group_rows(chunk_rows, buffers.product_dtype != buffers.z.dtype)):
        if group.stop - group.start <= chunk_rows:
            yield group, buffers.low(chunk_grad(group))
            continue
        grad_z = torch.empty(group.stop - group.start, buffers.z.shape[1], dtype=buffers.product_dtype,
                             device=buffers.z.device)  # fmt: skip
        for rows in _chunks(group.stop - group.start, chunk_rows):
            grad_z[rows] = chunk_grad(slice(group.start + rows.start, group.start + rows.stop))
        yield group, grad_z


class _ChunkBuffers:
    """A chunk's logits z in the statistics' dtype and, where the `statistics` are taken, exp(z - max) (`e`),
    allocated once for the largest chunk and reused by every chunk: on CPU a fresh (rows, V) tensor costs the page
    faults of its first write, which took a third of a chunk's elementwise time at V = 152k. Below the statistics'
    dtype the product z is read from, and a chunk's dL/dz cast back to it, are written into e's memory, which holds
    neither then (or into a buffer of their own without statistics)."""

    def __init__(self, rows: int, vocab: int, dtype, acc, device, statistics: bool):
        self.z = torch.empty(rows, vocab, dtype=acc, device=device)
        self.e = torch.empty_like(self.z) if statistics else None
        self.product_dtype = dtype
        if dtype == acc:
            self._low = None
        elif self.e is not None:  # the first rows * vocab entries of e's memory, read as `dtype`
            self._low = self.e.view(-1).view(dtype)[:rows * vocab].view(rows, vocab)
        else:
            self._low = torch.empty(rows, vocab, dtype=dtype, device=device)

    def logits(self, h, w, b):
        """z = h W^T + b (rows, V) of a chunk's hidden states h, in the statistics' dtype: a view of the buffer."""
        rows = h.shape[0]
        out = self.z[:rows] if self._low is None else self._low[:rows]
        if b is None:
            torch.mm(h, w.T, out=out)
        else:
            torch.addmm(b, h, w.T, out=out)
        return out if self._low is None else self.z[:rows].copy_(out)

    def low(self, x):
        """x (a chunk's rows of z's dtype) in the products' dtype: x itself when that is z's dtype."""
        return x if self._low is None else self._low[:x.shape[0]].copy_(x)


def _weight_grad_sum(weight, acc, n: int):
    """The sum of dL/dW in `acc` (at least float32), which the first group sets (`_add_group_grads`): zeros only
    when there are no rows."""
    return torch.zeros_like(weight, dtype=acc) if n == 0 else torch.empty_like(weight, dtype=acc)


def _add_group_grads(grad_z, h, w, rows, grad_hidden, grad_weight, grad_bias) -> None:
    """Add a group's share to the gradients (each None when not needed): dL/dh[rows] = dL/dz W, dL/dW += dL/dz^T h
    (the group of row 0 sets it), dL/db += the sum of dL/dz over rows. A low-precision product dL/dz^T h is formed
    and added to the float32 sum of dL/dW a slice of the vocabulary at a time (WEIGHT_SLICE_ENTRIES)."""
    first = rows.start == 0
    if grad_hidden is not None:
        grad_hidden[rows] = grad_z @ w
    if grad_weight is not None and grad_weight.dtype == grad_z.dtype:
        if first:
            torch.mm(grad_z.T, h, out=grad_weight)
        else:
            grad_weight.addmm_(grad_z.T, h)
    elif grad_weight is not None:
        for part in _chunks(grad_weight.shape[0], max(1, WEIGHT_SLICE_ENTRIES // h.shape[1])):
            if first:
                grad_weight[part] = grad_z[:, part].T @ h
            else:
                grad_weight[part] += grad_z[:, part].T @ h
    if grad_bias is not None:
        grad_bias += grad_z.sum(0)


def _v_entropy(z, e=None):
    """V = logsumexp(z) and H = V - sum_i p_i z_i of a chunk of logits z (rows, V), with one (rows, V) temporary
    (written into `e`, a buffer of at least z's rows, when given).

    With m = max_i z_i, e_i = exp(z_i - m) and s = sum_i e_i: V = m + log s and sum_i p_i z_i = sum_i e_i z_i / s.
    """
    m = z.amax(-1, keepdim=True)
    e = torch.sub(z, m, out=None if e is None else e[:z.shape[0]]).exp_()  # (rows, V)
    s = e.sum(-1)
    v = m.squeeze(-1) + s.log()
    return v, v - e.mul_(z).sum(-1) / s


def _chunks(n: int, size: int):
    """Row slices [0, size), [size, 2 size), ..., [k size, n) covering n rows."""
    return [slice(start, min(start + size, n)) for start in range(0, n, size)]


def _logit_grad_(z, rows, actions, v, entropy, g_q, g_v, g_entropy):
    """dL/dz of a chunk of rows, written over the chunk's logits z (rows, V), in v's dtype:

        dL/dz = p * (g_v - g_H * (log p + H)) + onehot(a) * g_q,    log p = z - v

    `rows` selects the chunk in the per-row actions, v, entropy and output gradients g_* (N,); a None gradient is
    an output the loss does not use.
    """
    if g_v is None and g_entropy is None:
        z.zero_()
    else:
        logp = z.sub_(v[rows, None])  # (rows, V) log pi
        coef = torch.zeros_like(v[rows, None]) if g_v is None else g_v[rows, None]
        if g_entropy is not None:
            coef = coef - g_entropy[rows, None] * (logp + entropy[rows, None])
        logp.exp_().mul_(coef)  # p * coef, in place
    if g_q is not None:
        z.scatter_add_(-1, actions[rows, None], g_q[rows, None])
    return z


def fused_q_v_entropy(logits: torch.Tensor, actions: torch.Tensor):
    """q, v, entropy for logits (..., V) and actions (...), through one fused pass (see _FusedQVEntropy): METHOD.md
    §2's Q(s_t, a_t) = logits_t[a_t] and V(s_t) = logsumexp_a logits_t[a], and the policy's entropy
    H(pi(.|s_t)) = V(s_t) - sum_a pi(a|s_t) logits_t[a] that §3's entropy bonus reads."""
    shape = actions.shape
    q, v, entropy = _FusedQVEntropy.apply(logits.reshape(-1, logits.shape[-1]), actions.reshape(-1))
    return q.view(shape), v.view(shape), entropy.view(shape)


def _action_masks(input_ids, completion_mask, eos_token_id):
    """Shifted (B, T-1) masks: actions, terminal actions, actions with a next state."""
    mask = completion_mask[:, 1:].bool()
    terminal = mask & (input_ids[:, 1:] == eos_token_id)
    # A completion action has a next state if it ends the episode (V = 0) or the completion goes on. The last
    # token of a completion cut by the length limit has neither: it leaves the TD term (METHOD.md §1).
    next_is_completion = F.pad(mask[:, 1:], (0, 1), value=False)
    td_mask = mask & (terminal | next_is_completion)
    return mask, terminal, td_mask


def _shifted_terms(q, v_all, entropy, input_ids, completion_mask, eos_token_id, stop_grad_next) -> TokenTerms:
    """TokenTerms from per-position q, V, H (B, T): V(s_{t+1}) is the next position's V, zeroed after EOS."""
    mask, terminal, td_mask = _action_masks(input_ids, completion_mask, eos_token_id)
    v_next = v_all[:, 1:]
    if stop_grad_next:
        v_next = v_next.detach()
    v_next = v_next.masked_fill(terminal, 0.0)
    return TokenTerms(q[:, :-1], v_all[:, :-1], v_next, entropy[:, :-1], mask, td_mask)


def token_terms(logits, input_ids, completion_mask, eos_token_id, stop_grad_next=False) -> TokenTerms:
    """Per-action Q, V, V(s'), entropy and masks from a forward pass: METHOD.md §2's soft-Bellman terms on
    materialised logits, with §1's episode ends (V = 0 after EOS; a truncated last action has no next state).

    logits (B, T, V); input_ids, completion_mask (B, T) with completion_mask 1 on completion tokens, the
    appended EOS included. V(s_{t+1}) is the logsumexp at the action's own position, i.e. the next entry of
    `v` shifted by one; it is zeroed after EOS. `stop_grad_next` detaches it (an ablation, off by default).
    """
    q, v_all, entropy = fused_q_v_entropy(logits, F.pad(input_ids[:, 1:], (0, 1)))  # (B, T) each
    return _shifted_terms(q, v_all, entropy, input_ids, completion_mask, eos_token_id, stop_grad_next)


def action_rows(completion_mask) -> torch.Tensor:
    """Indices into the flattened (B*T) positions of the states whose action is a completion token: the only rows
    of the logits that any term reads (METHOD.md §1: only completion tokens count). (V(s_{t+1}) is read only for an
    action with a next state that is not terminal, and that next action is then a completion token too.) Position k
    of a row acts `input_ids[k+1]`.
    """
    return F.pad(completion_mask[:, 1:].bool(), (0, 1)).flatten().nonzero().squeeze(1)


def head_token_terms(hidden, weight, bias, input_ids, completion_mask, eos_token_id, stop_grad_next=False,
                     rows=None, chunk_rows=None) -> TokenTerms:
    """`token_terms` of the logits hidden @ weight^T + bias, without materialising them: METHOD.md §2's Q, V and
    r_t of the head's logits, computed a chunk of rows at a time in forward and again in backward.

    hidden (B, T, H): the model's final hidden states; weight (V, H), bias (V,) or None: its output embedding
    (for a model whose logits are exactly that projection; irl/trainer.py checks which are). Only the positions
    in `rows` (default `action_rows(completion_mask)`; pass it precomputed on the host to spare the device a read)
    are projected, `chunk_rows` at a time (default: see CHUNK_LOGITS), forward and backward (`_HeadQVEntropy`).
    The V(s_{t+1}) of an action is the V of the next position, which may lie in the next chunk or the next
    call's rows: it is taken after the chunks are put back in place. Entries outside `mask` are 0 (in
    `token_terms` they are whatever those logits give); every objective reads only entries inside it.
    """
    rows, chunk_rows, actions = _projected(hidden, weight, input_ids, completion_mask, rows, chunk_rows)
    selected = _HeadQVEntropy.apply(hidden.flatten(0, 1)[rows], weight, bias, actions, chunk_rows)
    return _terms_at(rows, selected, input_ids, completion_mask, eos_token_id, stop_grad_next)


def _projected(hidden, weight, input_ids, completion_mask, rows, chunk_rows):
    """(rows, chunk_rows, actions) of the head routes: the flattened positions projected (default
    `action_rows`), the rows per chunk (default: see CHUNK_LOGITS) and the action taken at each of them."""
    if rows is None:
        rows = action_rows(completion_mask)
    vocab, size = weight.shape
    chunk_rows = chunk_rows or max(1, CHUNK_LOGITS // vocab, -(-len(rows) * size // vocab))
    return rows, chunk_rows, F.pad(input_ids[:, 1:], (0, 1)).flatten()[rows]


def _terms_at(rows, values, input_ids, completion_mask, eos_token_id, stop_grad_next) -> TokenTerms:
    """TokenTerms from per-row (q, v, entropy) of the projected `rows`, put back in place (0 elsewhere)."""
    batch, width = input_ids.shape
    q, v_all, entropy = (x.new_zeros(batch * width).index_copy(0, rows, x).view(batch, width) for x in values)
    return _shifted_terms(q, v_all, entropy, input_ids, completion_mask, eos_token_id, stop_grad_next)


class _HeadLoss(torch.autograd.Function):
    """An objective's loss on the logits z = h W^T + b with its gradient formed in the same pass over them: each
    chunk of logits is computed once, in forward, as in a fused linear cross-entropy. Returns the loss; backward
    scales the gradients kept from forward by the loss's output gradient, in place (one backward per forward).

    forward, per chunk of `chunk_rows` rows: z, then v and H of its rows as _HeadQVEntropy, then g_v = dL/dv and
              g_H = dL/dH of its rows (autograd through `loss_of` on the small per-row tensors), then
              dL/dz (without its one-hot part) = p * (g_v - g_H * (log p + H));
    per group of chunks (GROUP_ROWS; a chunk in float32): dL/dh = dL/dz W,   dL/dW += dL/dz^T h,
              dL/db += sum over rows of dL/dz;
    after the groups: the loss from every row's q, v and H, g_q = dL/dq, and the one-hot part of dL/dz, added
              row by row: dL/dh_n += g_q[n] W[a_n], dL/dW[a_n] += g_q[n] h_n, dL/db[a_n] += g_q[n].
    Three (rows x H x V) products per chunk, as backpropagation through materialised logits takes, against four
    for _HeadQVEntropy's recomputation. Exact for objectives whose dL/dv and dL/dH at a row depend on the
    values of no other row (q apart, which every chunk knows): the rows of later chunks are still 0 when a
    chunk's g_v and g_H are taken. MLE, MLE with entropy and IQLearn offline and online are such objectives
    (irl/objectives.py SINGLE_PASS): V(s_t) enters L through -log pi(a_t|s_t) = V(s_t) - Q(s_t, a_t), linear value
    terms and r_{t-1} = Q(s_{t-1}, a_{t-1}) - gamma V(s_t). GAIL's is not: its advantages sum log pi over a completion.
    The products and statistics run in the dtypes of _HeadQVEntropy.
    """

    @staticmethod
    def forward(ctx, hidden, weight, bias, actions, chunk_rows, loss_of, out):
        device = hidden.device.type
        dtype, acc = _head_dtypes(hidden, weight)
        n = hidden.shape[0]
        needs_hidden, needs_weight, needs_bias = ctx.needs_input_grad[:3]
        v, entropy = torch.zeros(n, dtype=acc, device=hidden.device), torch.zeros(n, dtype=acc, device=hidden.device)
        grad_hidden = torch.zeros_like(hidden, dtype=acc) if needs_hidden else None
        grad_weight = _weight_grad_sum(weight, acc, n) if needs_weight else None
        grad_bias = torch.zeros_like(bias, dtype=acc) if needs_bias else None
        with torch.autocast(device, enabled=False):
            w, b = weight.to(dtype), None if bias is None else bias.to(dtype)
            buffers = _ChunkBuffers(min(chunk_rows, n), w.shape[0], dtype, acc, hidden.device, statistics=True)
            # q = z[a] row by row: a dot product per row, rounded to the products' dtype as a chunk's z would be
            q = (hidden.to(acc) * w[actions].to(acc)).sum(-1)
            q = (q if b is None else q + b[actions].to(acc)).to(dtype).to(acc)

            def chunk_grad(rows):
                z = buffers.logits(hidden[rows].to(dtype), w, b)  # (rows, V)
                v[rows], entropy[rows] = _v_entropy(z, buffers.e)
                _, _, (g_v, g_entropy) = _loss_grads(loss_of, (q, v, entropy), wrt=(1, 2))
                return _logit_grad_(z, rows, actions, v, entropy, None, g_v, g_entropy)

            for group, grad_z in _grouped_logit_grads(n, chunk_rows, buffers, chunk_grad):
                _add_group_grads(grad_z, hidden[group].to(dtype), w, group, grad_hidden, grad_weight, grad_bias)
            loss, stats, (g_q,) = _loss_grads(loss_of, (q, v, entropy), wrt=(0,))
            if g_q is not None:
                if needs_hidden:
                    grad_hidden += g_q[:, None] * w[actions].to(acc)
                if needs_weight:
                    grad_weight.index_add_(0, actions, g_q[:, None] * hidden.to(acc))
                if needs_bias:
                    grad_bias.index_add_(0, actions, g_q)
        # kept on ctx, not saved for backward: backward scales them in place and hands them on, so that the loss's
        # output gradient costs no second copy of dL/dW; a second backward through the same graph finds them gone
        ctx.grads = [g if g is None else g.to(x.dtype) for g, x in zip(
            (grad_hidden, grad_weight, grad_bias), (hidden, weight, bias))]  # fmt: skip
        out.update(stats={k: x.detach() for k, x in stats.items()}, q=q, v=v, entropy=entropy)
        return loss.detach()

    @staticmethod
    def backward(ctx, g_loss):
        grads, ctx.grads = ctx.grads, None
        if grads is None:
            raise RuntimeError("head_loss's gradients were formed in its forward and handed on by a first backward; "
                               "a second backward through the same loss (retain_graph=True) needs a second forward")
        return *(g if g is None else g.mul_(g_loss.to(g.dtype)) for g in grads), None, None, None, None


def _loss_grads(loss_of, values, wrt):
    """(loss, stats, gradients) of `loss_of(*values)`: the gradients with respect to values[i] for i in `wrt`, each
    None where the loss does not depend on it."""
    with torch.enable_grad():
        leaves = [x.detach().requires_grad_(i in wrt) for i, x in enumerate(values)]
        loss, stats = loss_of(*leaves)
        grads = torch.autograd.grad(loss, [leaves[i] for i in wrt], allow_unused=True)
    return loss, stats, grads


def head_loss(objective, hidden, weight, bias, input_ids, completion_mask, eos_token_id, stop_grad_next=False,
              rows=None, chunk_rows=None) -> tuple[torch.Tensor, dict, TokenTerms]:
    """`objective(terms)` with terms = `head_token_terms(...)`, its gradient formed in one pass over the logits
    (`_HeadLoss`): the losses of METHOD.md §3 (L_mle, L_ent, L_iq, L_online), whose dependence on V(s_t) is through
    -log pi(a_t|s_t) = V(s_t) - Q(s_t, a_t) of §2 and linear or r_t^2 terms, differentiated through the logits
    without holding them. Returns (loss, stats, terms), the stats and terms detached (for logging). For
    `objective`s whose gradient is exact that way only: those of irl/objectives.py SINGLE_PASS, or a function of
    TokenTerms that calls one of them on some rows of the terms (as the trainer does for expert and sampled rows);
    irl/objectives.py `single_pass` says which."""
    rows, chunk_rows, actions = _projected(hidden, weight, input_ids, completion_mask, rows, chunk_rows)

    def terms_of(*values):
        return _terms_at(rows, values, input_ids, completion_mask, eos_token_id, stop_grad_next)

    out = {}
    loss = _HeadLoss.apply(hidden.flatten(0, 1)[rows], weight, bias, actions, chunk_rows,
                           lambda *values: objective(terms_of(*values)), out)  # fmt: skip
    return loss, out["stats"], terms_of(out["q"], out["v"], out["entropy"])


def naive_token_terms(logits, input_ids, completion_mask, eos_token_id, stop_grad_next=False) -> TokenTerms:
    """The straightforward reference for `token_terms`: METHOD.md §2's log pi = log_softmax(logits), Q by gather,
    V = logsumexp(logits) and the entropy from the softmax, each a separate pass over the full (B, T, V) logits."""
    mask, terminal, td_mask = _action_masks(input_ids, completion_mask, eos_token_id)
    logits = logits.to(torch.promote_types(logits.dtype, torch.float32))
    logprobs = torch.log_softmax(logits, dim=-1)  # (B, T, V)
    v_all = torch.logsumexp(logits, dim=-1)  # (B, T)
    q = logits[:, :-1].gather(-1, input_ids[:, 1:, None]).squeeze(-1)
    entropy = -(logprobs.exp() * logprobs).sum(-1)
    v_next = v_all[:, 1:].detach() if stop_grad_next else v_all[:, 1:]
    v_next = v_next.masked_fill(terminal, 0.0)
    return TokenTerms(q, v_all[:, :-1], v_next, entropy[:, :-1], mask, td_mask)


