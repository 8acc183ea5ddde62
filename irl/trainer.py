"""One training loop for every objective: transformers' Trainer with the loss, the logs and the validation
pass overridden, and nothing else. Mixed precision, gradient accumulation, checkpoint rotation, resume and
multi-process training (`accelerate launch`, DeepSpeed, FSDP) are Trainer's.

The objective sees only per-token tensors (irl/objectives.py), so MLE and IQLearn runs differ in the loss
alone. A variant that samples completions during training (online IQLearn, GAIL) adds its policy states to
`inputs` in `training_step` before `compute_loss` reads them; the rest of this loop stays as it is.
"""

import functools
import time
from collections import defaultdict
from pathlib import Path

import torch
from transformers import Trainer

from irl import objectives
from irl.io import append_jsonl

class NonFiniteLossError(FloatingPointError):
    """The loss became NaN or infinite; training stops before the weights are updated with it."""


def objective_fn(cfg):
    """The configured objective as a function TokenTerms -> (loss, stats)."""
    if cfg.objective == "mle":
        return functools.partial(objectives.mle, beta=cfg.beta)
    return functools.partial(objectives.iqlearn, lam=cfg.lam, gamma=cfg.gamma)


class IRLTrainer(Trainer):
    """Trainer whose loss is an objective of irl/objectives.py, logging train/*, iq/* and eval/nll to
    `<output_dir>/metrics.jsonl` (one JSON object per line, append-only)."""

    def __init__(self, *args, cfg, **kwargs):
        super().__init__(*args, **kwargs)
        self.cfg = cfg
        self.objective = objective_fn(cfg)
        self.eos_token_id = self.processing_class.eos_token_id
        self.metrics_path = Path(self.args.output_dir) / "metrics.jsonl"
        self._stats = defaultdict(list)
        self._tokens = 0  # non-padding tokens processed since the last log
        self._step_time = 0.0  # seconds inside training_step since the last log (no eval, no saving)
        self._evaluated_at = None  # (step, metrics) of the last validation pass

    def terms(self, model, inputs) -> objectives.TokenTerms:
        logits = model(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"]).logits  # (B, T, V)
        return objectives.token_terms(
            logits, inputs["input_ids"], inputs["completion_mask"], self.eos_token_id, self.cfg.stop_grad_next
        )

    def training_step(self, model, inputs, num_items_in_batch=None):
        start = time.perf_counter()
        loss = super().training_step(model, inputs, num_items_in_batch)
        self._step_time += time.perf_counter() - start
        return loss

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        terms = self.terms(model, inputs)
        loss, _ = self.objective(terms)
        if not torch.isfinite(loss):
            raise NonFiniteLossError(
                f"non-finite loss {loss.item()} at step {self.state.global_step}; weights left as at the last "
                f"checkpoint (lower lr, check the data, or resume with --resume)"
            )
        for key, value in objectives.token_stats(terms, self.cfg.gamma).items():
            self._stats[key].append(value.item())
        self._tokens += int(inputs["attention_mask"].sum())
        return loss

    def log(self, logs: dict, start_time=None) -> None:
        if "loss" in logs:  # a training log: rename Trainer's keys, add the objective's statistics
            tokens = self.accelerator.reduce(torch.tensor(float(self._tokens), device=self.args.device), "sum")
            logs = {
                "train/loss": logs.pop("loss"),
                "train/lr": logs.pop("learning_rate", None),
                "train/grad_norm": logs.pop("grad_norm", None),
                "train/tokens_per_s": tokens.item() / max(self._step_time, 1e-9),
                **self._reduced_stats(),
                **logs,
            }
            self._stats.clear()
            self._tokens, self._step_time = 0, 0.0
        super().log(logs, start_time)
        if self.is_world_process_zero():
            append_jsonl(self.metrics_path, {"step": self.state.global_step, **logs})

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
