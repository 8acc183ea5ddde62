"""GAIL on the shared loop: a discriminator, a frozen reference policy, and the Trainer hooks that save them.

The discriminator is a separate sequence model with one logit per position: the policy's architecture, with
the init (MLE) checkpoint's body and a new one-logit head (`AutoModelForTokenClassification`, num_labels=1).
Its logit at the position of token a_t reads (x, y_<=t), i.e. D(s_t, a_t). Each training step
(`GAILTrainer.policy_kwargs`, called by IRLTrainer.training_step after sampling):

1. one discriminator step: binary cross-entropy, expert completion tokens against the sampled ones
   (objectives.discriminator_loss), with its own AdamW optimizer; under gradient accumulation it steps with the
   policy;
2. the sampled tokens' rewards: the discriminator logits of that same forward pass, i.e. before its update;
3. log pi_ref of the sampled tokens under the initial policy (the KL reference).

The discriminator lives outside the Trainer's engine: every process holds all of it and its optimizer, and
its gradients are averaged over processes (one all-reduce) before each step, which is what DDP would do. The
policy alone goes through `accelerator.prepare`, so DeepSpeed (one engine per accelerator, which a second
prepared model breaks) and FSDP (whose flattened parameters an optimizer created before wrapping does not see)
accept the run; the price is an unsharded discriminator (the policy's body plus a head) with its AdamW state on
every process. DeepSpeed ZeRO-3 is refused for GAIL: models loaded under it are partitioned at load time,
discriminator and reference included.

The KL reference: without LoRA, a frozen copy of the initial (init checkpoint) policy. With `use_peft`, the
policy is the init checkpoint's weights (an adapter checkpoint merged into its base) plus fresh LoRA adapters
whose B is zero, so the policy with its adapters disabled is exactly the initial policy, at every step
(disabled adapters bypass the LoRA path; the frozen weights never change) and after resume: no copy is kept.

The policy loss is then objectives.gail. Checkpoints hold the discriminator in
checkpoint-<step>/discriminator/ (Hugging Face format, safetensors, plus optimizer.pt); resume restores both.

Encoder-decoder policies (T5) get `Seq2SeqDiscriminator`: the policy's encoder-decoder body (`AutoModel`, e.g.
T5Model, with the init checkpoint's weights) and a new one-logit head on the decoder's final states. The
decoder state at position j has read the whole prompt (cross-attention) and the decoder tokens up to j, so its
logit is D(s_t, a_t) for the action at j, as for the causal discriminator, from features the MLE policy learnt.
transformers has no per-decoder-token classifier (T5ForTokenClassification is T5's encoder alone), and an
encoder classifier over prompt + completion would let each position see the tokens after it (T5's encoder is
bidirectional), so its score would not be one of (s_t, a_t).
"""

import copy
from pathlib import Path

import torch
from accelerate.utils import DistributedType
from safetensors.torch import load_model, save_model
from transformers import AutoConfig, AutoModel, AutoModelForTokenClassification
from transformers.modeling_outputs import TokenClassifierOutput

from irl import model as models
from irl import objectives
from irl.config import ConfigError
from irl.data import batch_keys, model_inputs
from irl.generation import cat_rows
from irl.model import ModelError
from irl.trainer import IRLTrainer

DISCRIMINATOR_DIR = "discriminator"
DISCRIMINATOR_OPTIMIZER = "optimizer.pt"


class Seq2SeqDiscriminator(torch.nn.Module):
    """One logit per decoder position of an encoder-decoder model: its body (`AutoModel`: encoder and decoder,
    no LM head) and a linear head on the decoder's final states (module docstring). Saved as a config.json
    (architectures: ["Seq2SeqDiscriminator"]) and a model.safetensors of body.* and score.* weights."""

    def __init__(self, body):
        super().__init__()
        self.body = body
        self.config = body.config
        self.score = torch.nn.Linear(body.config.hidden_size, 1)

    def forward(self, input_ids, attention_mask, decoder_input_ids, decoder_attention_mask) -> TokenClassifierOutput:
        hidden = self.body(input_ids=input_ids, attention_mask=attention_mask, decoder_input_ids=decoder_input_ids,
                           decoder_attention_mask=decoder_attention_mask).last_hidden_state  # (B, T, H)  # fmt: skip
        return TokenClassifierOutput(logits=self.score(hidden))  # (B, T, 1)

    def save_pretrained(self, out) -> None:
        Path(out).mkdir(parents=True, exist_ok=True)
        self.config.architectures = [type(self).__name__]
        self.config.save_pretrained(out)
        save_model(self, str(Path(out) / "model.safetensors"))


def load_discriminator(path: str, trust_remote_code: bool = False):
    """A one-logit-per-position model on the body of the LM at `path` (a new, randomly initialised head), or a
    discriminator saved in a checkpoint's discriminator/ directory.

    Causal LMs: AutoModelForTokenClassification, dropout before the head off, so that the logits used as rewards
    are those the loss trained. Encoder-decoder LMs: `Seq2SeqDiscriminator`. A LoRA checkpoint's body is its base
    with the adapter merged in.
    """
    if models.is_adapter(path):
        causal = models.load_model(path, trust_remote_code)
        if models.model_kind(causal.config) == models.SEQ2SEQ:
            return _seq2seq_on(causal, trust_remote_code)
        config = copy.deepcopy(causal.config)
        config.num_labels, config.classifier_dropout = 1, 0.0
        discriminator = AutoModelForTokenClassification.from_config(config, trust_remote_code=trust_remote_code)
        discriminator.base_model.load_state_dict(causal.base_model.state_dict())
        return discriminator
    try:
        config = AutoConfig.from_pretrained(path, num_labels=1, trust_remote_code=trust_remote_code)
        if models.model_kind(config) == models.SEQ2SEQ:
            return _load_seq2seq(path, config, trust_remote_code)
        config.classifier_dropout = 0.0
        return AutoModelForTokenClassification.from_pretrained(
            path, config=config, trust_remote_code=trust_remote_code, dtype=torch.float32
        )
    except (OSError, ValueError) as e:
        raise ModelError(f"cannot build a discriminator from {path!r}: {e}") from None


def _load_seq2seq(path: str, config, trust_remote_code: bool) -> Seq2SeqDiscriminator:
    if config.architectures == [Seq2SeqDiscriminator.__name__]:  # a saved discriminator: body and head
        discriminator = Seq2SeqDiscriminator(AutoModel.from_config(config, trust_remote_code=trust_remote_code))
        load_model(discriminator, str(Path(path) / "model.safetensors"))
        return discriminator
    body = AutoModel.from_pretrained(path, config=config, trust_remote_code=trust_remote_code, dtype=torch.float32)
    return Seq2SeqDiscriminator(body)


def _seq2seq_on(lm, trust_remote_code: bool) -> Seq2SeqDiscriminator:
    """A Seq2SeqDiscriminator whose body holds the weights of the encoder-decoder LM `lm` (all but its head)."""
    discriminator = Seq2SeqDiscriminator(AutoModel.from_config(lm.config, trust_remote_code=trust_remote_code))
    missing, _ = discriminator.body.load_state_dict(lm.state_dict(), strict=False)  # the LM head is left out
    if missing:
        raise ModelError(f"the discriminator's body has weights the LM lacks: {missing[:5]}")
    return discriminator


def action_logits(discriminator, batch: dict, seq2seq: bool) -> torch.Tensor:
    """Discriminator logit of every action, (B, T-1): entry k scores token k+1 (of the decoder's tokens, seq2seq)
    in its context."""
    return discriminator(**model_inputs(batch, seq2seq)).logits[..., 0][:, 1:]


def average_gradients(module) -> None:
    """Each gradient of `module` replaced by its mean over the processes of the default group (one all-reduce of
    all of them, flattened), as DDP would average them; nothing outside a process group."""
    if not (torch.distributed.is_initialized() and torch.distributed.get_world_size() > 1):
        return
    grads = [p.grad for p in module.parameters() if p.grad is not None]
    flat = torch.cat([g.flatten() for g in grads])
    torch.distributed.all_reduce(flat)
    flat /= torch.distributed.get_world_size()
    for g, mean in zip(grads, flat.split([g.numel() for g in grads])):
        g.copy_(mean.view_as(g))


class GAILTrainer(IRLTrainer):
    """IRLTrainer with GAIL's discriminator step and reference policy; the loop and the loss path are IRLTrainer's."""

    def __init__(self, *args, cfg, **kwargs):
        super().__init__(*args, cfg=cfg, **kwargs)
        if self.is_deepspeed_enabled and self.accelerator.state.deepspeed_plugin.zero_stage == 3:
            raise ConfigError("deepspeed: GAIL does not run under ZeRO-3 (its discriminator and reference are "
                              "loaded unsharded); use ZeRO-1/2 or FSDP")  # fmt: skip
        # the initial policy, frozen; with LoRA, the policy with its adapters disabled (module docstring)
        self.ref_model = None if cfg.use_peft else copy.deepcopy(self.model).requires_grad_(False).eval()
        if self.ref_model is not None:  # under DeepSpeed and FSDP the Trainer has not moved the policy yet
            self.ref_model.to(self.args.device)
        self.discriminator = load_discriminator(cfg.init, cfg.trust_remote_code).to(self.args.device)
        if cfg.activation_checkpointing:  # as the Trainer sets it on the policy; the score head is not checkpointed
            body = self.discriminator.body if self.seq2seq else self.discriminator
            kwargs = dict(cfg.activation_checkpointing_kwargs or {})
            body.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs or None)
        lr = cfg.learning_rate if cfg.disc_lr is None else cfg.disc_lr
        self.disc_optimizer = torch.optim.AdamW(self.discriminator.parameters(), lr=lr, weight_decay=cfg.weight_decay)

    def policy_kwargs(self, expert: dict, policy: dict) -> dict:
        """One discriminator step on (expert, sampled) tokens; the sampled tokens' rewards and log pi_ref."""
        n = expert["input_ids"].shape[0]
        both = cat_rows(expert, policy, batch_keys(self.seq2seq))
        self.discriminator.train()
        with self.accelerator.autocast():  # the run's mixed precision, as the policy's forward runs in
            logits = action_logits(self.discriminator, both, self.seq2seq).float()  # (B + B*K, T-1)
        actions = both["completion_mask"][:, 1:].bool()
        loss, stats = objectives.discriminator_loss(logits[:n], actions[:n], logits[n:], actions[n:])
        (loss / self.current_gradient_accumulation_steps).backward()
        if self.accelerator.sync_gradients:  # steps with the policy's optimizer
            average_gradients(self.discriminator)
            torch.nn.utils.clip_grad_norm_(self.discriminator.parameters(), self.args.max_grad_norm)
            self.disc_optimizer.step()
            self.disc_optimizer.zero_grad()
        with torch.no_grad():
            logp_ref = self._reference_logp(policy)
        self.record(stats)
        return {"reward": logits[n:].detach(), "logp_ref": logp_ref}


    def _reference_logp(self, batch: dict) -> torch.Tensor:
        """log pi_ref(a_t|s_t) of the initial policy, by the same (chunked) route as the policy's own terms: the
        frozen copy, or with LoRA the policy with its adapters disabled (run through the prepared model, so a
        sharded policy gathers its weights as in training)."""
        if self.ref_model is not None:
            return self.terms(self.ref_model, batch).logp
        peft_model = self.accelerator.unwrap_model(self.model_wrapped)
        was_training = peft_model.training
        peft_model.eval()  # as the frozen copy: no dropout
        try:
            with peft_model.disable_adapter():
                fsdp = self.accelerator.distributed_type == DistributedType.FSDP  # the root's forward gathers
                return self.terms(self.model_wrapped if fsdp else peft_model, batch).logp
        finally:
            peft_model.train(was_training)

    def save_model(self, output_dir=None, _internal_call=False):
        super().save_model(output_dir, _internal_call)
        if self.args.should_save:
            self.discriminator.save_pretrained(Path(output_dir or self.args.output_dir) / DISCRIMINATOR_DIR)

    def _save_optimizer_and_scheduler(self, output_dir):
        super()._save_optimizer_and_scheduler(output_dir)
        if self.args.should_save:
            torch.save(self.disc_optimizer.state_dict(), Path(output_dir) / DISCRIMINATOR_DIR / DISCRIMINATOR_OPTIMIZER)

    def _load_from_checkpoint(self, resume_from_checkpoint, model=None):
        super()._load_from_checkpoint(resume_from_checkpoint, model)
        weights = Path(resume_from_checkpoint) / DISCRIMINATOR_DIR / "model.safetensors"
        load_model(self.discriminator, str(weights), device=str(self.args.device))

    def _load_optimizer_and_scheduler(self, checkpoint):
        super()._load_optimizer_and_scheduler(checkpoint)
        if checkpoint is not None:
            state = torch.load(Path(checkpoint) / DISCRIMINATOR_DIR / DISCRIMINATOR_OPTIMIZER, weights_only=True)
            self.disc_optimizer.load_state_dict(state)
