"""One training loop for every objective: transformers' Trainer with the loss, the logs and the validation
pass overridden, and nothing else. Mixed precision, gradient accumulation, checkpoint rotation, resume and
multi-process training (`accelerate launch`, DeepSpeed, FSDP) are Trainer's.

The objective sees only per-token tensors (irl/objectives.py), so MLE and IQLearn runs differ in the loss
alone. A variant that samples completions during training (online IQLearn, GAIL) samples them in
`training_step` for the batch's prompts (irl/sampling.py), adds them to `inputs` as `inputs["policy"]` (with
the objective's extra arguments, `policy_kwargs`: GAIL's discriminator step and rewards, irl/gail.py) and
then runs Trainer's own step, whose `compute_loss` reads expert and sampled rows in one forward pass.
Sampling is timed apart from the update (time/sample_s, time/update_s) and a few sampled completions of each
logging step go to `<output_dir>/samples.jsonl`.

Encoder-decoder models (cfg.model_kind "seq2seq", e.g. T5) run the same loop and objectives: a batch holds the
prompt as the encoder's input and [decoder start] + completion as the decoder's (irl/data.py `episode_features`),
and the per-token terms are read off the decoder's logits, materialised (B, T, V) (objectives.token_terms).
"""

import functools
import time
from collections import defaultdict
from pathlib import Path

import torch
from transformers import Trainer

from irl import objectives, runs
from irl.config import save_config
from irl.io import append_jsonl
from irl.data import action_ids, batch_keys, model_inputs
from irl.generation import cat_rows, pad_together, sample_completions

SAMPLES_LOGGED = 2  # sampled completions written to samples.jsonl per logging step

class NonFiniteLossError(FloatingPointError):
    """The loss became NaN or infinite; training stops before the weights are updated with it."""


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
        self.cfg = cfg
        self.objective = objective_fn(cfg)
        self.eos_token_id = self.processing_class.eos_token_id
        self.seq2seq = cfg.model_kind == "seq2seq"  # the batch layout (irl/data.py batch_keys)
        self.metrics_path = Path(self.args.output_dir) / "metrics.jsonl"
        self.samples_path = Path(self.args.output_dir) / "samples.jsonl"
        self._stats = defaultdict(list)
        self._tokens = 0  # non-padding expert tokens processed since the last log
        # Seconds inside training_step since the last log: sampling, forward, backward (and GAIL's discriminator
        # step); the optimizer step, evaluation and saving happen outside it.
        self._step_time = 0.0
        self._sample_time = 0.0  # of which sampling completions
        self._samples = None  # the first rows of the last sampled batch, for samples.jsonl
        self._evaluated_at = None  # (step, metrics) of the last validation pass

    def terms(self, model, inputs) -> objectives.TokenTerms:
        logits = model(**model_inputs(inputs, self.seq2seq)).logits  # (B, T, V); T: the decoder's for seq2seq
        return objectives.token_terms(
            logits, action_ids(inputs, self.seq2seq), inputs["completion_mask"], self.eos_token_id,
            self.cfg.stop_grad_next,
        )  # fmt: skip

    def sample(self, model, inputs) -> dict:
        """`num_samples` completions per prompt of the batch from the current policy, in training layout."""
        cfg, tokenizer = self.cfg, self.processing_class
        prompt_width = inputs["prompt_input_ids"].shape[1]
        return sample_completions(
            self.accelerator.unwrap_model(model),
            inputs["prompt_input_ids"],
            inputs["prompt_attention_mask"],
            num_samples=cfg.num_samples,
            max_new_tokens=min(cfg.sample_max_new_tokens, cfg.max_length - prompt_width),  # data's length limit
            temperature=cfg.sample_temperature,
            eos_token_id=self.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
        )

    def policy_kwargs(self, expert: dict, policy: dict) -> dict:
        """Extra keyword arguments of the objective from the sampled batch: none here (GAIL's: irl/gail.py)."""
        return {}

    def training_step(self, model, inputs, num_items_in_batch=None):
        start = time.perf_counter()
        if self.cfg.samples_policy:
            inputs = self._prepare_inputs(inputs)
            policy = self.sample(model, inputs)
            self._sample_time += time.perf_counter() - start
            truncated = policy.pop("truncated")
            self.record({
                "sample/length": policy["completion_mask"].sum(1).float().mean(),
                "sample/truncated": truncated.float().mean(),  # each cut completion's last token leaves the TD terms
            })
            pad_id = self.processing_class.pad_token_id
            expert, policy = pad_together(inputs, policy, pad_id, batch_keys(self.seq2seq))
            self._samples = {k: v[:SAMPLES_LOGGED].cpu() for k, v in policy.items()}
            inputs = {**expert, "policy": policy, "policy_kwargs": self.policy_kwargs(expert, policy)}
        loss = super().training_step(model, inputs, num_items_in_batch)
        if loss.is_cuda:
            torch.cuda.synchronize()  # time the backward pass, not only its launch
        self._step_time += time.perf_counter() - start
        return loss

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        if "policy" in inputs:  # expert and sampled rows in one forward pass (one pass of a DDP-wrapped model)
            n = inputs["input_ids"].shape[0]
            both = self.terms(model, cat_rows(inputs, inputs["policy"], batch_keys(self.seq2seq)))
            terms = both.rows(slice(0, n))
            loss, stats = self.objective(terms, both.rows(slice(n, None)), **inputs["policy_kwargs"])
        else:
            terms = self.terms(model, inputs)
            loss, stats = self.objective(terms)
        if not torch.isfinite(loss):
            raise NonFiniteLossError(
                f"non-finite loss {loss.item()} at step {self.state.global_step}; weights left as at the last "
                f"checkpoint (lower lr, check the data, or resume with --resume)"
            )
        self.record({**objectives.token_stats(terms, self.cfg.gamma), **stats})
        self._tokens += int(inputs["attention_mask"].sum())  # the encoder's, for seq2seq; then the decoder's:
        self._tokens += int(inputs["decoder_attention_mask"].sum()) if self.seq2seq else 0
        return loss

    def record(self, stats: dict) -> None:
        """Keep scalar statistics of this step; `log` writes their mean over the window and the processes."""
        for key, value in stats.items():
            self._stats[key].append(value.detach().item())

    def log(self, logs: dict, start_time=None) -> None:
        if "loss" in logs:  # a training log: rename Trainer's keys, add the objective's statistics
            tokens = self.accelerator.reduce(torch.tensor(float(self._tokens), device=self.args.device), "sum")
            times = torch.tensor([self._step_time - self._sample_time, self._sample_time], device=self.args.device)
            update_s, sample_s = self.accelerator.reduce(times, "mean").tolist()  # seconds in this window
            logs = {
                "train/loss": logs.pop("loss"),
                "train/lr": logs.pop("learning_rate", None),
                "train/grad_norm": logs.pop("grad_norm", None),
                "train/tokens_per_s": tokens.item() / max(self._step_time, 1e-9),
                "time/update_s": update_s,
                **({"time/sample_s": sample_s} if self.cfg.samples_policy else {}),
                **self._reduced_stats(),
                **logs,
            }
            self._stats.clear()
            self._tokens, self._step_time, self._sample_time = 0, 0.0, 0.0
            if self._samples is not None and self.is_world_process_zero():
                self._write_samples()
        super().log(logs, start_time)
        if self.is_world_process_zero():
            append_jsonl(self.metrics_path, {"step": self.state.global_step, **logs})

    def _write_samples(self) -> None:
        """Append the first sampled completions of the last step to samples.jsonl: step, prompt, completion, ended."""
        tokenizer, batch = self.processing_class, self._samples
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
        """Each statistic's mean over the steps since the last log and over processes."""
        if not self._stats:
            return {}
        keys = sorted(self._stats)
        local = torch.tensor([sum(self._stats[k]) / len(self._stats[k]) for k in keys], device=self.args.device)
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
        metrics = {f"{metric_key_prefix}/nll": (total[0] / total[1]).item(), f"{metric_key_prefix}/tokens": int(total[1])}
        self.log(metrics)
        self._evaluated_at = (self.state.global_step, metrics)
        model.train()
        return metrics

    def _save(self, output_dir=None, state_dict=None) -> None:
        """Trainer's save (weights, tokenizer), plus the run's config: a checkpoint says how it was trained (gamma
        for its rewards, the task for its sweep) also when copied out of its run directory."""
        super()._save(output_dir, state_dict)
        if self.args.should_save:
            save_config(self.cfg, Path(output_dir or self.args.output_dir) / runs.CHECKPOINT_CONFIG)
