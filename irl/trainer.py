"""One training loop for every objective: transformers' Trainer with the loss, the logs and the validation
pass overridden, and nothing else. Mixed precision, gradient accumulation, checkpoint rotation, resume and
multi-process training (`accelerate launch`, DeepSpeed, FSDP) are Trainer's.

The objective sees only per-token tensors (irl/objectives.py, computed by irl/kernels.py), so MLE and IQLearn runs
differ in the loss alone. A variant that samples completions during training (online IQLearn, GAIL) samples them
in `training_step` for the batch's prompts (irl/generation.py `sample_completions`), adds them to `inputs` as
`inputs["policy"]` (with the objective's extra arguments, `policy_kwargs`: GAIL's discriminator step and rewards,
irl/gail.py) and then runs Trainer's own step, whose `compute_loss` reads expert and sampled rows in one forward
pass.
Sampling is timed apart from the update (time/sample_s, time/update_s) and a few sampled completions of each
logging step go to `<output_dir>/samples.jsonl`.

The per-token terms come from the model's final hidden states and its output embedding, a chunk of rows at a
time (`final_hidden`, kernels.head_token_terms), so the (B, T, V) logits never exist in training; for the
objectives of objectives.SINGLE_PASS the loss's gradient is formed in that one pass (kernels.head_loss);
models outside HEAD_IS_LINEAR, FSDP/DeepSpeed runs and `chunked_loss: false` read the full logits
(kernels.token_terms).

A micro-step reads nothing back from the device. The one read a batch needs, the index of its completion
tokens (`action_rows`: which rows to project), is made when Trainer fetches the batches of an optimizer step
(`get_batch_samples`), right after their copy to the device, which waits for the device anyway (unless
accelerate's dataloader is set to `non_blocking`); batches made during the step (sampled completions, whose
sampling waits for the device at every token) have theirs computed in `terms`. Statistics, token counts and
step times stay on the device and are read once per logging step. A non-finite loss is noted on the device and
stops training at the next log or checkpoint, whichever comes first (at most `logging_steps` steps later), so
no checkpoint holds weights updated with it; the weights in memory may be, but the run ends there.

Encoder-decoder models (cfg.model_kind "seq2seq", e.g. T5) run the same loop and objectives: a batch holds the
prompt as the encoder's input and [decoder start] + completion as the decoder's (irl/data.py `episode_features`),
and the per-token terms are read off the decoder's full logits (kernels.token_terms): T5 is outside
HEAD_IS_LINEAR (its head reads the decoder's output scaled by d_model^-1/2, and its forward keeps every logit).
"""

import functools
import logging
import time
import warnings
from collections import defaultdict
from pathlib import Path

import torch
from accelerate.utils import DistributedType
from transformers import Trainer
from transformers.trainer_callback import PrinterCallback, ProgressCallback

from common.io import append_jsonl
from irl import kernels, objectives, runs
from irl.config import save_config
from irl.data import action_ids, batch_keys, model_inputs
from irl.generation import cat_rows, pad_together, sample_completions
from irl.sharding import unwrap_for_generation

SAMPLES_LOGGED = 2  # sampled completions written to samples.jsonl per logging step

# Model types (config.model_type) whose causal LM computes exactly logits = lm_head(last hidden state) with an
# nn.Linear lm_head: no final soft-capping (gemma2, gemma3), no logit scaling (cohere, granite, ...). Read from
# transformers 5's modeling code; tests/test_chunked.py checks each against the model's own logits. Any other
# model trains on its full logits.
HEAD_IS_LINEAR = frozenset(
    {"gemma", "gpt2", "llama", "mistral", "olmo2", "phi", "phi3", "qwen2", "qwen3", "smollm3", "starcoder2"}
)
# Set-ups where the lm_head weight is not whole outside the model's forward (sharded by FSDP, DeepSpeed ZeRO-3,
# Megatron): they train on the full logits.
SHARDED = frozenset({DistributedType.FSDP, DistributedType.DEEPSPEED, DistributedType.MEGATRON_LM})
# The chunked route's self-check (`check_chunked`): rows of the batch compared, the window of positions they are cut
# to (CHECK_TOKENS before the rows' first completion token and CHECK_TOKENS from it: at any context the check holds
# the logits of 2 x 128 positions, 39 MB at V = 152k), and the largest difference allowed
# from materialised logits, relative to the largest magnitude of each compared tensor. Both routes sum the same
# float32 products in another order, so they differ by roundings of sums over V or H terms, about sqrt(V) eps:
# 4e-5 at V = 152k in float32 (eps 1.2e-7), 1e-3 leaves a margin of 25; under bf16 autocast the products keep 8
# bits (eps 7.8e-3) and the logits differ by about one rounding of each: 5e-2; float16 (eps 9.8e-4): 1e-2;
# float64 (eps 2.2e-16): 1e-10.
CHECK_ROWS = 2
CHECK_TOKENS = 64
CHECK_TOLERANCE = {torch.float64: 1e-10, torch.float32: 1e-3, torch.bfloat16: 5e-2, torch.float16: 1e-2}
_checked: dict[tuple, dict] = {}  # (device type, dtype, model type, head trained) -> its check, once per process

logger = logging.getLogger(__name__)


class ProgressBar(ProgressCallback):
    """Trainer's progress bar with the latest training loss and validation NLL as its postfix. Trainer's own
    callbacks print every log dict (under the bar, or in its place without one); metrics.jsonl holds them all."""

    POSTFIX = ("train/loss", "eval/nll")

    def __init__(self):
        super().__init__()
        self.latest = {}

    def on_log(self, args, state, control, logs=None, **kwargs):
        if state.is_world_process_zero and self.training_bar is not None:
            self.latest.update({k: f"{logs[k]:.4g}" for k in self.POSTFIX if k in logs})
            self.training_bar.set_postfix(self.latest, refresh=False)


class NonFiniteLossError(FloatingPointError):
    """The loss became NaN or infinite; training stops before any checkpoint holds weights updated with it."""


def head_is_linear(model) -> bool:
    """Whether a causal LM's logits are exactly lm_head(final hidden states): its type is in HEAD_IS_LINEAR."""
    return model.config.model_type in HEAD_IS_LINEAR


def check_window(rows: dict) -> dict:
    """The (B, T) tensors of `rows` cut to the positions [s, s + 2 CHECK_TOKENS), s = CHECK_TOKENS before the first
    completion token of any row (0 when none has one): a shorter episode of the same rows, its completions' first
    tokens and the prompt before them."""
    completion = rows["completion_mask"].bool()
    first = completion.int().argmax(1)[completion.any(1)]  # each row's first completion position
    start = max(0, int(first.min()) - CHECK_TOKENS) if len(first) else 0
    return {k: v[:, start:start + 2 * CHECK_TOKENS] for k, v in rows.items()}


def check_chunked(model, inputs, eos_token_id: int, gamma: float, autocast) -> dict:
    """Compare the chunked routes (kernels.head_loss and kernels.head_token_terms) with materialised logits (the
    model's own lm_head, then kernels.token_terms) on the first CHECK_ROWS rows of a batch, cut to the 2 CHECK_TOKENS
    positions from CHECK_TOKENS before their first completion token (`check_window`): IQLearn's loss
    (lam = 1, so that Q, V and V(s') all count) and its gradients with respect to the final hidden states and the
    output embedding where the run trains it (a frozen head, as under LoRA, has no gradient on either route, and
    forming one here would hold (V, H) tensors the run never does). Returns {"check/chunked_loss_max_rel_diff": the
    largest relative difference, "passed"}. The model's forward runs once, without touching the caller's graph, its
    RNG state restored after."""
    rows = check_window({k: v[:CHECK_ROWS] for k, v in inputs.items()
                         if k in ("input_ids", "attention_mask", "completion_mask")})  # fmt: skip
    ids, completion = rows["input_ids"], rows["completion_mask"]
    head = model.get_output_embeddings()
    objective = functools.partial(objectives.iqlearn, lam=1.0, gamma=gamma)
    with torch.random.fork_rng(devices=[ids.device] if ids.device.type == "cuda" else []):
        with torch.no_grad():
            hidden = final_hidden(model, ids, rows["attention_mask"])
    leaves = (hidden.detach().requires_grad_(), head.weight.detach().requires_grad_(head.weight.requires_grad))

    def grads(route):
        loss = route(*leaves)
        return (loss, *torch.autograd.grad(loss, [x for x in leaves if x.requires_grad]))

    def stock(h, w):
        with autocast():
            logits = torch.nn.functional.linear(h, w, head.bias)
        return objective(kernels.token_terms(logits, ids, completion, eos_token_id))[0]

    def fused(h, w):
        with autocast():
            return kernels.head_loss(objective, h, w, head.bias, ids, completion, eos_token_id)[0]

    def recomputed(h, w):
        with autocast():
            return objective(kernels.head_token_terms(h, w, head.bias, ids, completion, eos_token_id))[0]

    with torch.enable_grad():
        reference = grads(stock)
        worst = max(
            ((a - b).abs().max() / b.abs().max().clamp(min=torch.finfo(b.dtype).tiny)).item()
            for route in (fused, recomputed) for a, b in zip(grads(route), reference)
        )  # fmt: skip
    with autocast():
        dtype = torch.get_autocast_dtype(ids.device.type) if torch.is_autocast_enabled(ids.device.type) else None
    tolerance = CHECK_TOLERANCE[dtype or head.weight.dtype]
    return {"check/chunked_loss_max_rel_diff": worst, "passed": worst <= tolerance, "tolerance": tolerance}


def final_hidden(model, input_ids, attention_mask) -> torch.Tensor:
    """The final hidden states (B, T, H) of a causal LM, i.e. the input of its lm_head.

    Through the model's own forward (so that DDP, mixed precision and hooks wrap it as usual), asking for the
    logits of no position (`logits_to_keep` an empty index: the lm_head sees (B, 0, H)) and for the hidden states,
    whose last entry transformers ties to the last hidden state after the final norm.
    """
    no_position = input_ids.new_empty(0)
    out = model(
        input_ids=input_ids, attention_mask=attention_mask, logits_to_keep=no_position, output_hidden_states=True
    )
    return out.hidden_states[-1]


class Stopwatch:
    """Seconds spent between `start` and `stop`, summed until read, without waiting for the device at each stop: on
    CUDA from events recorded on the stream (`seconds` waits for the last one), elsewhere from the host clock (the
    work is synchronous there)."""

    def __init__(self, device: torch.device):
        self.cuda = device.type == "cuda"
        self.total, self.spans, self.begun = 0.0, [], None

    def _now(self):
        if not self.cuda:
            return time.perf_counter()
        event = torch.cuda.Event(enable_timing=True)
        event.record()
        return event

    def start(self) -> None:
        self.begun = self._now()

    def stop(self) -> None:
        end = self._now()
        if self.cuda:
            self.spans.append((self.begun, end))
        else:
            self.total += end - self.begun

    def seconds(self) -> float:
        """The sum so far; starts a new one."""
        if self.spans:
            self.spans[-1][1].synchronize()
            self.total += sum(a.elapsed_time(b) for a, b in self.spans) / 1e3
        total, self.total, self.spans = self.total, 0.0, []
        return total


def objective_fn(cfg):
    """The configured objective as a function TokenTerms -> (loss, stats)."""
    if cfg.objective == "mle":
        return functools.partial(objectives.mle, beta=cfg.beta)
    if cfg.objective == "gail":
        return functools.partial(
            objectives.gail, num_samples=cfg.num_samples, kl_coef=cfg.kl_coef, mle_weight=cfg.mle_weight, beta=cfg.beta
        )
    if cfg.alpha > 0:
        return functools.partial(
            objectives.online_iqlearn, lam=cfg.lam, gamma=cfg.gamma, alpha=cfg.alpha, reg_policy=cfg.reg_policy
        )
    return functools.partial(objectives.iqlearn, lam=cfg.lam, gamma=cfg.gamma)


class IRLTrainer(Trainer):
    """Trainer whose loss is an objective of irl/objectives.py, logging train/*, time/*, iq/* (and gail/*,
    sample/* for the variants that sample) and eval/nll to `<output_dir>/metrics.jsonl` (one JSON object per
    line, append-only)."""

    def __init__(self, *args, cfg, **kwargs):
        super().__init__(*args, **kwargs)
        self.remove_callback(PrinterCallback)  # added by Trainer when the bar is off: the logs go to metrics.jsonl
        if self.pop_callback(ProgressCallback) is not None:
            self.add_callback(ProgressBar)
        self.cfg = cfg
        self.objective = objective_fn(cfg)
        self.eos_token_id = self.processing_class.eos_token_id
        self.seq2seq = cfg.model_kind == "seq2seq"  # the batch layout (irl/data.py batch_keys)
        self.metrics_path = Path(self.args.output_dir) / "metrics.jsonl"
        self.samples_path = Path(self.args.output_dir) / "samples.jsonl"
        distributed = self.accelerator.distributed_type
        self.chunked = cfg.chunked_loss and head_is_linear(self.model) and distributed not in SHARDED
        if cfg.chunked_loss and not self.chunked:
            logger.warning(
                "chunked_loss: model type %r under %s trains on its full logits (chunked for HEAD_IS_LINEAR %s, "
                "not under %s)", self.model.config.model_type, distributed, sorted(HEAD_IS_LINEAR), sorted(SHARDED),
            )
        # Since the last log, on the device: each statistic's sum over the records (their count on the host), the
        # non-padding expert tokens processed.
        self._sums: dict[str, torch.Tensor] = {}
        self._counts = defaultdict(int)
        self._tokens = torch.zeros((), device=self.args.device)
        # Seconds inside training_step since the last log: sampling, and the rest (forward, backward, GAIL's
        # discriminator step); the optimizer step, evaluation and saving happen outside it.
        self._update_time, self._sample_time = Stopwatch(self.args.device), Stopwatch(self.args.device)
        # [[step, loss]] of the first non-finite loss (step -1: none yet), read at logs and checkpoints
        self._nonfinite = torch.tensor([[-1.0, 0.0]], device=self.args.device)
        self._samples = None  # the first rows of the last sampled batch, for samples.jsonl
        self._evaluated_at = None  # (step, metrics) of the last validation pass
        self._route_recorded = False  # whether metrics.jsonl says which route the loss takes

    def create_accelerator_and_postprocess(self) -> None:
        """Trainer's, with the batch order seeded by `seed`: the config's `data_seed` seeds the data itself (the
        built-in task, held-out splits, train_size subsets), so runs that differ only in seed keep the same data
        and see it in a different order."""
        super().create_accelerator_and_postprocess()
        self.accelerator.dataloader_config.data_seed = self.args.seed

    def terms(self, model, inputs) -> kernels.TokenTerms:
        """Per-token Q, V, V(s'), entropy of a batch under `model` (the policy, or a frozen copy of it)."""
        ids, completion = inputs["input_ids"], inputs["completion_mask"]
        if not self.chunked:  # the full logits: (B, T, V), T the decoder's length for seq2seq
            logits = model(**model_inputs(inputs, self.seq2seq)).logits
            return kernels.token_terms(
                logits, action_ids(inputs, self.seq2seq), completion, self.eos_token_id, self.cfg.stop_grad_next
            )
        hidden, head, rows = self._head(model, inputs)
        with self.accelerator.autocast():  # the precision the model's own lm_head runs in
            return kernels.head_token_terms(
                hidden, head.weight, head.bias, ids, completion, self.eos_token_id, self.cfg.stop_grad_next, rows=rows
            )

    def loss(self, model, inputs, objective) -> tuple[torch.Tensor, dict, kernels.TokenTerms]:
        """(loss, stats, terms) of `objective` (TokenTerms -> (loss, stats)) on a batch under the policy `model`:
        in one pass over the logits where the objective allows it (kernels.head_loss), the terms then
        detached; else through `terms`."""
        if not (self.chunked and objectives.single_pass(self.objective)):
            terms = self.terms(model, inputs)
            return *objective(terms), terms
        hidden, head, rows = self._head(model, inputs)
        with self.accelerator.autocast():
            return kernels.head_loss(objective, hidden, head.weight, head.bias, inputs["input_ids"],
                                        inputs["completion_mask"], self.eos_token_id, self.cfg.stop_grad_next,
                                        rows=rows)  # fmt: skip

    def _head(self, model, inputs):
        """(final hidden states (B, T, H), output embedding, action rows) of a causal LM's batch."""
        rows = inputs.get("action_rows")  # from get_batch_samples; not in batches made during the step
        rows = kernels.action_rows(inputs["completion_mask"]) if rows is None else rows
        hidden = final_hidden(model, inputs["input_ids"], inputs["attention_mask"])  # (B, T, H)
        return hidden, self.accelerator.unwrap_model(model).get_output_embeddings(), rows

    def get_batch_samples(self, epoch_iterator, num_batches, device):
        """Trainer's batches of one optimizer step, each with its `action_rows` (see the module's docstring)."""
        batch_samples, num_items_in_batch = super().get_batch_samples(epoch_iterator, num_batches, device)
        if self.chunked:
            for batch in batch_samples:
                batch["action_rows"] = kernels.action_rows(batch["completion_mask"])
        return batch_samples, num_items_in_batch

    def sample(self, model, inputs) -> dict:
        """`num_samples` completions per prompt of the batch from the current policy, in training layout. Under
        ZeRO-3 and FSDP the sharded weights are gathered for generation first (irl/sharding.py)."""
        cfg, tokenizer = self.cfg, self.processing_class
        prompt_width = inputs["prompt_input_ids"].shape[1]
        # under the run's autocast, as accelerate runs the forward: the compact decoder's self-check then sees
        # the dtype its logits are computed in (irl.generation.compute_dtype) and judges at its tolerance
        with unwrap_for_generation(model, self.accelerator) as (unwrapped, synced), self.accelerator.autocast():
            return sample_completions(
                unwrapped,
                inputs["prompt_input_ids"],
                inputs["prompt_attention_mask"],
                num_samples=cfg.num_samples,
                max_new_tokens=min(cfg.sample_max_new_tokens, cfg.max_length - prompt_width),  # data's length limit
                temperature=cfg.sample_temperature,
                eos_token_id=self.eos_token_id,
                pad_token_id=tokenizer.pad_token_id,
                synced_gpus=synced,
            )

    def policy_kwargs(self, expert: dict, policy: dict) -> dict:
        """Extra keyword arguments of the objective from the sampled batch: none here (GAIL's: irl/gail.py)."""
        return {}

    def training_step(self, model, inputs, num_items_in_batch=None):
        if self.cfg.samples_policy:
            self._sample_time.start()
            inputs = self._prepare_inputs(inputs)
            policy = self.sample(model, inputs)
            self._sample_time.stop()
            self._update_time.start()
            truncated = policy.pop("truncated")
            self.record({
                "sample/length": policy["completion_mask"].sum(1).float().mean(),
                "sample/truncated": truncated.float().mean(),  # each cut completion's last token leaves the TD terms
            })
            pad_id = self.processing_class.pad_token_id
            expert, policy = pad_together(inputs, policy, pad_id, batch_keys(self.seq2seq))
            self._samples = {k: v[:SAMPLES_LOGGED] for k, v in policy.items()}  # to the host when written
            inputs = {**expert, "policy": policy, "policy_kwargs": self.policy_kwargs(expert, policy)}
        else:
            self._update_time.start()
        loss = super().training_step(model, inputs, num_items_in_batch)
        self._update_time.stop()
        return loss

    def _choose_route(self, model, inputs) -> None:
        """At the first loss: the chunked route's self-check (`check_chunked`, once per process for a device type,
        dtype and model type, unless cfg.check_fast_paths is off), falling back to materialised logits when it
        fails; then one line of metrics.jsonl records the route the run's loss takes and the check's figures."""
        self._route_recorded = True
        record = {}
        if self.chunked and self.cfg.check_fast_paths:
            unwrapped = self.accelerator.unwrap_model(model)
            with self.accelerator.autocast():
                device = inputs["input_ids"].device.type
                dtype = torch.get_autocast_dtype(device) if torch.is_autocast_enabled(device) else None
            trains_head = unwrapped.get_output_embeddings().weight.requires_grad  # its gradient is checked too
            key = (device, dtype or unwrapped.dtype, unwrapped.config.model_type, trains_head)
            if key not in _checked:
                _checked[key] = check_chunked(unwrapped, inputs, self.eos_token_id, self.cfg.gamma,
                                              self.accelerator.autocast)  # fmt: skip
                if not _checked[key]["passed"]:
                    logger.warning(
                        "chunked_loss: on %s the chunked loss differs from materialised logits by %.3g (relative; "
                        "tolerance %.3g): this run trains on the full logits", key,
                        _checked[key]["check/chunked_loss_max_rel_diff"], _checked[key]["tolerance"],
                    )
            self.chunked = _checked[key]["passed"]
            record["check/chunked_loss_max_rel_diff"] = _checked[key]["check/chunked_loss_max_rel_diff"]
        if self.is_world_process_zero():
            route = "chunked" if self.chunked else "materialised"
            append_jsonl(self.metrics_path, {"step": self.state.global_step, "route/loss": route, **record})

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        if not self._route_recorded:
            self._choose_route(model, inputs)
        n = inputs["input_ids"].shape[0]
        if "policy" in inputs:  # expert and sampled rows in one forward pass (one pass of a DDP-wrapped model)
            batch = cat_rows(inputs, inputs["policy"], batch_keys(self.seq2seq))
            kwargs = inputs["policy_kwargs"]
            loss, stats, terms = self.loss(
                model, batch, lambda both: self.objective(both.rows(slice(0, n)), both.rows(slice(n, None)), **kwargs)
            )
        else:
            loss, stats, terms = self.loss(model, inputs, self.objective)
        self._watch(loss)
        self.record({**objectives.token_stats(terms.rows(slice(0, n)), self.cfg.gamma), **stats})
        self._tokens += inputs["attention_mask"].sum()  # the encoder's, for seq2seq; then the decoder's:
        self._tokens += inputs["decoder_attention_mask"].sum() if self.seq2seq else 0
        return loss

    def _watch(self, loss) -> None:
        """Keep the step and value of the first non-finite loss, on the device (read by `_check_finite`)."""
        value = loss.detach().float()
        first = ~torch.isfinite(value) & (self._nonfinite[0, 0] < 0)
        now = torch.stack([torch.full_like(value, self.state.global_step), value])[None]  # (1, 2)
        self._nonfinite = torch.where(first, now, self._nonfinite)

    def _check_finite(self) -> None:
        """Raise NonFiniteLossError on every process if any process saw a non-finite loss (one read)."""
        seen = self.accelerator.gather(self._nonfinite)  # (processes, 2)
        for step, value in seen.tolist():
            if step >= 0:
                raise NonFiniteLossError(
                    f"non-finite loss {value} at step {int(step)}; no checkpoint holds weights updated with it "
                    f"(lower lr, check the data, or resume with --resume)"
                )

    def _save_checkpoint(self, model, trial) -> None:
        self._check_finite()
        super()._save_checkpoint(model, trial)

    def record(self, stats: dict) -> None:
        """Add scalar statistics of this step to their sums on the device; `log` writes their means over the
        window and the processes."""
        for key, value in stats.items():
            value = value.detach().float()
            self._sums[key] = self._sums[key] + value if key in self._sums else value
            self._counts[key] += 1

    def log(self, logs: dict, start_time=None) -> None:
        self._check_finite()
        if "loss" in logs:  # a training log: rename Trainer's keys, add the objective's statistics
            tokens = self.accelerator.reduce(self._tokens.float(), "sum")
            local = [self._update_time.seconds(), self._sample_time.seconds()]  # seconds in this window
            update_s, sample_s = self.accelerator.reduce(torch.tensor(local, device=self.args.device), "mean").tolist()
            logs = {
                "train/loss": logs.pop("loss"),
                "train/lr": logs.pop("learning_rate", None),
                "train/grad_norm": logs.pop("grad_norm", None),
                "train/tokens_per_s": tokens.item() / max(sum(local), 1e-9),
                "time/update_s": update_s,
                **({"time/sample_s": sample_s} if self.cfg.samples_policy else {}),
                **self._reduced_stats(),
                **logs,
            }
            self._tokens = torch.zeros_like(self._tokens)
            if self._samples is not None and self.is_world_process_zero():
                self._write_samples()
        super().log(logs, start_time)
        if self.is_world_process_zero():
            append_jsonl(self.metrics_path, {"step": self.state.global_step, **logs})

    def _write_samples(self) -> None:
        """Append the first sampled completions of the last step to samples.jsonl: step, prompt, completion, ended."""
        tokenizer, batch = self.processing_class, {k: v.cpu() for k, v in self._samples.items()}
        actions = action_ids(batch, self.seq2seq)
        for ids, attention, completion, acted in zip(batch["input_ids"], batch["attention_mask"],
                                                     batch["completion_mask"], actions):  # fmt: skip
            # the prompt: the encoder's input (seq2seq), else the sequence's tokens before the completion
            prompt_ids = ids[attention.bool()] if self.seq2seq else ids[attention.bool() & ~completion.bool()]
            completion_ids = acted[completion.bool()]
            append_jsonl(self.samples_path, {
                "step": self.state.global_step,
                "prompt": tokenizer.decode(prompt_ids),
                "completion": tokenizer.decode(completion_ids, skip_special_tokens=True),
                "ended": bool(completion_ids[-1] == self.eos_token_id),  # False: cut by the length limit
            })

    def _reduced_stats(self) -> dict:
        """Each statistic's mean over the records since the last log and over processes (one read); clears them."""
        if not self._sums:
            return {}
        keys = sorted(self._sums)
        local = torch.stack([self._sums[k] / self._counts[k] for k in keys]).to(self.args.device)
        self._sums.clear()
        self._counts.clear()
        return dict(zip(keys, self.accelerator.reduce(local, "mean").tolist()))

    @torch.no_grad()
    def evaluate(self, eval_dataset=None, ignore_keys=None, metric_key_prefix="eval") -> dict:
        """Validation NLL per completion token, summed over the whole split (every process's share)."""
        if self._evaluated_at and self._evaluated_at[0] == self.state.global_step:
            return self._evaluated_at[1]  # Trainer asks again at the end of training when eval_steps divides it
        model = self.model
        model.eval()
        sums = []
        for inputs in self.get_eval_dataloader(eval_dataset):
            inputs = self._prepare_inputs(inputs)
            terms = self.terms(model, inputs)
            per_seq = torch.stack([(-terms.logp * terms.mask).sum(1), terms.mask.sum(1).to(terms.q.dtype)], 1)
            sums.append(self.accelerator.gather_for_metrics(per_seq))  # (B, 2), duplicates of uneven splits removed
        total = torch.cat(sums).sum(0)
        metrics = {f"{metric_key_prefix}/nll": (total[0] / total[1]).item(),
                   f"{metric_key_prefix}/tokens": int(total[1])}
        self.log(metrics)
        self._evaluated_at = (self.state.global_step, metrics)
        model.train()
        return metrics

    def _save(self, output_dir=None, state_dict=None) -> None:
        """Trainer's save (weights, tokenizer), plus the run's config: a checkpoint says how it was trained (gamma
        for its rewards, the task for its sweep) also when copied out of its run directory."""
        with warnings.catch_warnings():
            # peft looks for the base's config.json at the adapter's base_model_name_or_path, "../base_model" (relative
            # to the checkpoint, not to the working directory), to learn whether the vocabulary changed: LoRA here
            # never changes it, and peft's warning that it assumes so says nothing to the user
            warnings.filterwarnings("ignore", message="Could not find a config file in ", category=UserWarning)
            super()._save(output_dir, state_dict)
        if self.args.should_save:
            out = Path(output_dir or self.args.output_dir)
            save_config(self.cfg, out / runs.CHECKPOINT_CONFIG)
            if self.cfg.use_peft:  # beside peft's adapter files: the base's config.json (context length, architecture)
                self.accelerator.unwrap_model(self.model).get_base_model().config.save_pretrained(out)
