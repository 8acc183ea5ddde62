"""Training objectives: MLE, MLE with an entropy bonus, offline IQLearn.

Every objective is a pure function of per-token tensors that returns `(loss, stats)`. The language model's
logits are read as a soft Q-function (METHOD.md §2):

    Q(s_t, a)   = logits_t[a]
    V(s_t)      = logsumexp_a logits_t[a]
    log pi(a_t|s_t) = Q(s_t, a_t) - V(s_t)
    r_t         = Q(s_t, a_t) - gamma * V(s_{t+1}),    V(terminal) = 0

`token_terms` turns a batch of logits into these per-token quantities with one pass over the (B, T, V)
logits (`fused_q_v_entropy`); `naive_token_terms` is the obvious log_softmax implementation it is tested
against. All tensors below are per action, shape (B, T-1): position k holds the action `input_ids[:, k+1]`
taken in the state whose logits are `logits[:, k]`.
"""

from dataclasses import dataclass

import torch
import torch.nn.functional as F

# Rows of the (B*T, V) logits processed at once by the fused function: bounds the temporary softmax to
# CHUNK_ROWS * V floats (128 MiB at V=32k in float32) instead of a full copy of the logits.
CHUNK_ROWS = 1024


@dataclass
class TokenTerms:
    """Per-action quantities of a batch, each (B, T-1)."""

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
        for start in range(0, n, CHUNK_ROWS):
            rows = slice(start, start + CHUNK_ROWS)
            z = logits[rows].to(acc)
            v[rows] = torch.logsumexp(z, dim=-1)
            p = torch.exp(z - v[rows, None])
            entropy[rows] = v[rows] - (p * z).sum(-1)
        q = logits.gather(-1, actions[:, None]).squeeze(-1).to(acc)
        ctx.save_for_backward(logits, actions, v, entropy)
        return q, v, entropy

    @staticmethod
    def backward(ctx, g_q, g_v, g_entropy):
        logits, actions, v, entropy = ctx.saved_tensors
        needs_softmax = g_v is not None or g_entropy is not None
        grad = (torch.empty_like if needs_softmax else torch.zeros_like)(logits, dtype=v.dtype)
        if needs_softmax:
            g_v = torch.zeros_like(v) if g_v is None else g_v
            for start in range(0, logits.shape[0], CHUNK_ROWS):
                rows = slice(start, start + CHUNK_ROWS)
                logp = torch.sub(logits[rows].to(v.dtype), v[rows, None], out=grad[rows])  # (rows, V) log pi
                coef = g_v[rows, None]
                if g_entropy is not None:
                    coef = coef - g_entropy[rows, None] * (logp + entropy[rows, None])
                logp.exp_().mul_(coef)  # grad[rows] = p * coef, in place
        if g_q is not None:
            grad.scatter_add_(-1, actions[:, None], g_q[:, None])
        return grad.to(logits.dtype), None


def fused_q_v_entropy(logits: torch.Tensor, actions: torch.Tensor):
    """q, v, entropy for logits (..., V) and actions (...), through one fused pass (see _FusedQVEntropy)."""
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


def token_terms(logits, input_ids, completion_mask, eos_token_id, stop_grad_next=False) -> TokenTerms:
    """Per-action Q, V, V(s'), entropy and masks from a forward pass.

    logits (B, T, V); input_ids, completion_mask (B, T) with completion_mask 1 on completion tokens, the
    appended EOS included. V(s_{t+1}) is the logsumexp at the action's own position, i.e. the next entry of
    `v` shifted by one; it is zeroed after EOS. `stop_grad_next` detaches it (an ablation, off by default).
    """
    mask, terminal, td_mask = _action_masks(input_ids, completion_mask, eos_token_id)
    q, v_all, entropy = fused_q_v_entropy(logits, F.pad(input_ids[:, 1:], (0, 1)))  # (B, T) each
    v_next = v_all[:, 1:]
    if stop_grad_next:
        v_next = v_next.detach()
    v_next = v_next.masked_fill(terminal, 0.0)
    return TokenTerms(q[:, :-1], v_all[:, :-1], v_next, entropy[:, :-1], mask, td_mask)


def naive_token_terms(logits, input_ids, completion_mask, eos_token_id, stop_grad_next=False) -> TokenTerms:
    """The straightforward reference for `token_terms`: log_softmax, gather, logsumexp and softmax, each a
    separate pass over the full (B, T, V) logits."""
    mask, terminal, td_mask = _action_masks(input_ids, completion_mask, eos_token_id)
    logits = logits.to(torch.promote_types(logits.dtype, torch.float32))
    logprobs = torch.log_softmax(logits, dim=-1)  # (B, T, V)
    v_all = torch.logsumexp(logits, dim=-1)  # (B, T)
    q = logits[:, :-1].gather(-1, input_ids[:, 1:, None]).squeeze(-1)
    entropy = -(logprobs.exp() * logprobs).sum(-1)
    v_next = v_all[:, 1:].detach() if stop_grad_next else v_all[:, 1:]
    v_next = v_next.masked_fill(terminal, 0.0)
    return TokenTerms(q, v_all[:, :-1], v_next, entropy[:, :-1], mask, td_mask)


def masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of x over mask; 0 (not NaN) for an empty mask so that a batch without such tokens adds nothing."""
    return (x * mask).sum() / mask.sum().clamp(min=1)


def mle(terms: TokenTerms, beta: float = 0.0):
    """Maximum likelihood, optionally with an entropy bonus (METHOD.md §3).

        L_mle = mean_t [ -log pi(a_t|s_t) ]                            (beta = 0)
        L_ent = mean_t [ -log pi(a_t|s_t) - beta * H(pi(.|s_t)) ]       (beta > 0)

    Means are over completion tokens of the batch.
    """
    nll = masked_mean(-terms.logp, terms.mask)
    loss = nll - beta * masked_mean(terms.entropy, terms.mask) if beta else nll
    return loss, {"iq/nll": nll}


def iqlearn(terms: TokenTerms, lam: float, gamma: float):
    """Offline IQLearn with the chi-squared regulariser, as MLE plus a TD term (METHOD.md §3).

        L_iq = mean_t [ -log pi(a_t|s_t) ] + lam * mean_t [ r_t^2 ],   r_t = Q(s_t,a_t) - gamma V(s_{t+1})

    Wulfmeier et al. 2024 (arXiv 2409.01369), eq. for IQLearn with phi(r) = r - lam r^2 and the initial-value
    term evaluated on expert states by telescoping. The NLL mean runs over all completion tokens, the TD mean
    over those with a next state (a truncated last token is excluded; ours). With lam = 0 this is MLE bit for
    bit: the added term is an exact zero in the loss and in every gradient.
    """
    nll = masked_mean(-terms.logp, terms.mask)
    reward = terms.reward(gamma)
    td = masked_mean(reward.square(), terms.td_mask)
    loss = nll + lam * td
    return loss, {"iq/nll": nll, "iq/td": td}


OBJECTIVES = {"mle": mle, "iqlearn": iqlearn}


@torch.no_grad()
def token_stats(terms: TokenTerms, gamma: float) -> dict[str, torch.Tensor]:
    """Logged statistics shared by every objective, means over completion tokens."""
    return {
        "iq/nll": masked_mean(-terms.logp, terms.mask),
        "iq/td": masked_mean(terms.reward(gamma).square(), terms.td_mask),
        "iq/reward_mean": masked_mean(terms.reward(gamma), terms.td_mask),
        "iq/v_mean": masked_mean(terms.v, terms.mask),
        "iq/entropy": masked_mean(terms.entropy, terms.mask),
    }
