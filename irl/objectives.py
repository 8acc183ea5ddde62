"""Training objectives: MLE, MLE with an entropy bonus, offline and online IQLearn, GAIL (METHOD.md §3).

Every objective is a pure function of per-token tensors (irl/kernels.py TokenTerms: Q, V, V(s'), entropy and the
masks of each action) that returns `(loss, stats)`. The offline ones take the expert batch's TokenTerms; the
online ones (`online_iqlearn`, `gail`) also take the TokenTerms of completions sampled from the current policy for
the same prompts (irl/generation.py `sample_completions`), and GAIL the per-token discriminator reward and
reference log-probabilities of those completions. How the terms are computed (from full logits, or from the final
hidden states a chunk at a time, the gradient formed in the same pass) is irl/kernels.py's concern, not an
objective's.
"""

import torch
import torch.nn.functional as F

from irl.kernels import TokenTerms

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


def online_iqlearn(expert: TokenTerms, policy: TokenTerms, lam: float, gamma: float, alpha: float, reg_policy=True):
    """Online IQLearn: the value term partly on states of completions sampled from the policy (METHOD.md §3).

        L = -( E_expert[r] - E_mix[V(s) - gamma V(s')] ) + lam * E_reg[r^2]
        E_mix = (1-alpha) E_expert + alpha E_policy

    Over the same expert actions -r + (V(s) - gamma V(s')) = -log pi(a|s), so with d = V(s) - gamma V(s') this is

        L = E_expert[-log pi] + alpha (E_policy[d] - E_expert[d]) + lam ((1-alpha) E_expert[r^2] + alpha E_policy[r^2])

    and, with `reg_policy=False`, lam * E_expert[r^2] as the regulariser. Wulfmeier et al. 2024 (arXiv 2409.01369)
    mix in policy states with alpha = 0.1; whether the regulariser sees them is ours (default: yes).
    Token sets: E_expert[-log pi] over every completion action of the expert batch, as offline (so a truncated
    last token counts there although its d is unknown); d and r^2 over `td_mask` of each batch (actions with a
    next state: a sampled completion cut by the length limit loses its last action, METHOD.md §1).
    With alpha = 0 each added term is an exact zero, so loss and gradients are `iqlearn`'s bit for bit.
    """
    nll = masked_mean(-expert.logp, expert.mask)
    value_expert = masked_mean(expert.v - gamma * expert.v_next, expert.td_mask)
    value_policy = masked_mean(policy.v - gamma * policy.v_next, policy.td_mask)
    td = masked_mean(expert.reward(gamma).square(), expert.td_mask)
    td_policy = masked_mean(policy.reward(gamma).square(), policy.td_mask)
    reg = (1 - alpha) * td + alpha * td_policy if reg_policy else td
    loss = nll + alpha * (value_policy - value_expert) + lam * reg
    stats = {
        "iq/nll": nll,
        "iq/td": td,
        "iq/td_policy": td_policy,
        "iq/value_expert": value_expert,
        "iq/value_policy": value_policy,
    }
    return loss, stats


def discriminator_loss(logits_expert, mask_expert, logits_policy, mask_policy):
    """GAIL's discriminator loss: binary cross-entropy, expert actions labelled 1 and sampled actions 0.

        L_D = 1/2 ( mean_expert[ -log D ] + mean_policy[ -log(1 - D) ] ),   D = sigmoid(logit)

    with -log D = softplus(-logit), -log(1-D) = softplus(logit); each class weighs 1/2 whatever its token count.
    Logits and masks are per action, (B_expert, T-1) and (B_policy, T-1). Accuracy: share of expert actions with
    logit > 0 and of sampled actions with logit < 0.
    """
    loss_expert = masked_mean(F.softplus(-logits_expert), mask_expert)
    loss_policy = masked_mean(F.softplus(logits_policy), mask_policy)
    loss = 0.5 * (loss_expert + loss_policy)
    with torch.no_grad():
        stats = {
            "gail/disc_loss": loss.detach(),
            "gail/disc_acc_expert": masked_mean((logits_expert > 0).float(), mask_expert),
            "gail/disc_acc_policy": masked_mean((logits_policy < 0).float(), mask_policy),
        }
    return loss, stats


def sequence_advantages(returns: torch.Tensor, num_samples: int) -> torch.Tensor:
    """R_i minus the mean R of the `num_samples` completions of the same prompt; rows come prompt by prompt."""
    grouped = returns.view(-1, num_samples)
    return (grouped - grouped.mean(1, keepdim=True)).view(-1)


def gail(expert: TokenTerms, policy: TokenTerms, reward, logp_ref, num_samples: int, kl_coef: float,
         mle_weight: float, beta: float = 0.0):
    """GAIL's policy loss: REINFORCE on sampled completions with the discriminator logit as reward (METHOD.md §3).

        shaped_t = r_t - kl_coef * (log pi(a_t|s_t) - log pi_ref(a_t|s_t))     r_t = discriminator logit
        R_i      = sum_t shaped_t                       (completion i, no discount)
        A_i      = R_i - mean_{j: same prompt} R_j      (per-prompt mean baseline over num_samples completions)
        L        = -mean_policy[ A_i log pi(a_t|s_t) ] + mle_weight * mean_expert[ -log pi ] - beta * mean_policy[ H ]

    Ours, the paper gives no detail: the sequence reward (not reward-to-go) is the advantage of every token of
    a completion; the KL to the initial policy pi_ref is the per-token k1 estimate put into the reward, so it
    acts through the policy gradient (no gradient through it directly); a completion cut by the length limit
    is scored on the tokens it has. reward, logp_ref: (B*K, T-1) per sampled action, K = num_samples
    consecutive rows per prompt. Means run over completion actions.
    """
    logp = policy.logp
    kl = logp.detach() - logp_ref
    shaped = (reward - kl_coef * kl) * policy.mask
    returns = shaped.sum(1)  # (B*K,)
    advantages = sequence_advantages(returns, num_samples)
    pg = masked_mean(-advantages[:, None] * logp, policy.mask)
    nll = masked_mean(-expert.logp, expert.mask)
    entropy = masked_mean(policy.entropy, policy.mask)
    loss = pg + mle_weight * nll - beta * entropy if beta else pg + mle_weight * nll
    stats = {
        "gail/pg_loss": pg,
        "gail/nll": nll,
        "gail/reward_mean": masked_mean(reward, policy.mask),
        "gail/kl": masked_mean(kl, policy.mask),
        "gail/return_mean": returns.mean(),
        "gail/entropy": entropy,
    }
    return loss, stats


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


# Objectives whose gradient irl/kernels.py `head_loss` forms in one pass (see _HeadLoss there): dL/dV(s_t) and
# dL/dH(s_t) depend on no other state's V or H.
SINGLE_PASS = frozenset({mle, iqlearn, online_iqlearn})


def single_pass(objective) -> bool:
    """Whether `objective` (a function of SINGLE_PASS, or a functools.partial of one) may go through irl/kernels.py
    `head_loss`."""
    return getattr(objective, "func", objective) in SINGLE_PASS
