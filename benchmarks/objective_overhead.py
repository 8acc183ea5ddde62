"""Cost of offline IQLearn against MLE per training step: time and peak memory, same model, same batch; and the
per-update cost of the methods that sample (online IQLearn, GAIL), split into sampling and update.

    python benchmarks/objective_overhead.py [--vocabs 32000,128000] [--reps 4] [--batch 8] [--seq 256] [--device cuda]
    python benchmarks/objective_overhead.py --parts online [--online_steps 8] [--online_batch 32] [--max_new_tokens 64]
    python benchmarks/objective_overhead.py --parts seq2seq [--vocabs 32000] [--batch 8] [--seq 256]   # T5

For each vocabulary size, a small Llama model with a big vocabulary (hidden 64, 2 layers, tied embeddings) takes
full training steps (forward, objective, backward, AdamW) on one fixed batch (a quarter prompt, the rest
completion ending in EOS; `--prompt_share 0` for completions only), the objectives taking turns, each in every
place of the order, so that drifts of the machine hit all alike; the median step time is compared. On CUDA a step's
time is wall-clock time up to a synchronisation; on CPU it is the process's CPU time in one thread (`--threads`),
which on a shared machine measures the step and not its neighbours' load. Peak memory is the largest total of
tensor storage alive during one step, counted by a dispatch mode on CPU (CUDA: max_memory_allocated above what was
allocated before the step).

Objectives:
- `mle`, `iqlearn`: the training default, from the final hidden states in chunks with the gradient formed in the
  same pass (irl/trainer.py final_hidden, irl/objectives.py head_loss): no (B, T, V) logits, each chunk's logits
  computed once;
- `iqlearn_recompute`: the same chunks through kernels.head_token_terms, whose backward computes each chunk's
  logits again (GAIL's route);
- `mle_cross_entropy`: MLE as transformers computes it, F.cross_entropy on the model's materialised logits;
- `iqlearn_logits`: IQLearn on the materialised logits through the fused pass (kernels.token_terms; the
  route of models whose logits are more than lm_head(hidden)).
One JSON line per vocabulary: {"vocab", "time_ratio", "mem_ratio" (iqlearn over mle, both chunked; goal <= 1.05),
"time_vs_materialised", "mem_vs_materialised" (iqlearn chunked over mle_cross_entropy; goals <= 1.1 and <= 0.5),
"logits_time_vs_materialised", "logits_mem_vs_materialised" (iqlearn_logits over mle_cross_entropy),
"recompute_time_vs_materialised", "recompute_mem_vs_materialised" (iqlearn_recompute over mle_cross_entropy), "ms",
"peak_mb", "device", ...}. The chunked route projects only the positions whose next token is a completion token,
so part of its edge over the materialised routes is the prompt share of the batch (compare `--prompt_share 0`).

Encoder-decoder part (`--parts seq2seq`): the same, on a T5 model with a big vocabulary (d_model 64, 2 encoder
and 2 decoder layers, gated-GELU, tied embeddings: irl/model.py's T5 presets at that width) reading a quarter of
`--seq` as the prompt in its encoder and the rest as [decoder start] + completion ending in EOS in its decoder.
Seq2seq training reads the decoder's materialised logits (irl/trainer.py), so `mle` and `iqlearn` both go
through kernels.token_terms there; `mle_cross_entropy` is T5's own loss (`labels`), as transformers trains it.
One JSON line per vocabulary: {"model": "t5", "vocab", "time_ratio", "mem_ratio" (iqlearn over mle; goal <= 1.05),
"time_vs_cross_entropy", "mem_vs_cross_entropy" (iqlearn over T5's own loss), "ms", "peak_mb", ...}.

Online part (`--parts online`): real training runs through irl/train.py on the built-in task, small preset, the
same batches for every method: MLE, online IQLearn (alpha=0.1, one completion per prompt) and GAIL (two per
prompt, from the MLE run's checkpoint). Each run logs every step its seconds spent sampling (time/sample_s) and
in the rest of the step (time/update_s: forward, backward, GAIL's discriminator step and reference pass; the
optimizer step is outside, alike for all); the first two steps are warm-up, the median of the others is kept.
The models are barely trained, so completions mostly run to max_new_tokens: the sampling cost is that of
completions of that length. The runs follow one another: on a shared machine, a change of load between them
skews the ratios (pin the cores, e.g. `taskset -c 0,1`, and run it alone). One JSON line per objective:
{"objective", "sample_s", "update_s", "time_ratio", "update_ratio", "sample_length", ...} with ratios of
(sample_s + update_s) and of update_s against MLE's update_s (the paper, T5-base: MLE 189 ms, IQLearn 196 ms,
sampling 443 ms per batch).
"""

import argparse
import functools
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.multiprocessing.reductions import StorageWeakRef
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten
from transformers import LlamaConfig, LlamaForCausalLM

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from irl.kernels import head_loss, head_token_terms, token_terms  # noqa: E402
from irl.objectives import iqlearn, mle  # noqa: E402
from irl.data import model_inputs  # noqa: E402
from irl.trainer import final_hidden  # noqa: E402

EOS = 1
NAMES = ["mle", "iqlearn", "mle_cross_entropy", "iqlearn_logits", "iqlearn_recompute"]


class PeakTensorMemory(TorchDispatchMode):
    """Peak bytes of tensor storage allocated inside the mode and still alive (CPU has no allocator stats)."""

    def __init__(self):
        super().__init__()
        self.live, self.current, self.peak = {}, 0, 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for key in [k for k, (ref, _) in self.live.items() if ref.expired()]:
            self.current -= self.live.pop(key)[1]
        for t in tree_flatten(out)[0]:
            if isinstance(t, torch.Tensor):
                storage = t.untyped_storage()
                key = storage.data_ptr()
                if key and key not in self.live:
                    self.live[key] = (StorageWeakRef(storage), storage.nbytes())
                    self.current += storage.nbytes()
        self.peak = max(self.peak, self.current)
        return out


def loss_fn(name, model, batch):
    """The step's loss: chunked from the final hidden states (`mle`, `iqlearn` in one pass, `iqlearn_recompute`),
    or on materialised logits."""
    ids, attention, cmask = batch["input_ids"], batch["attention_mask"], batch["completion_mask"]
    objective = functools.partial(mle) if name == "mle" else functools.partial(iqlearn, lam=0.1, gamma=0.99)
    if name in ("mle", "iqlearn", "iqlearn_recompute"):
        head = model.get_output_embeddings()
        hidden = final_hidden(model, ids, attention)  # (B, T, H)
        if name == "iqlearn_recompute":
            return objective(head_token_terms(hidden, head.weight, head.bias, ids, cmask, EOS))[0]
        return head_loss(objective, hidden, head.weight, head.bias, ids, cmask, EOS)[0]
    logits = model(input_ids=ids, attention_mask=attention).logits  # (B, T, V)
    if name == "mle_cross_entropy":
        labels = ids[:, 1:].masked_fill(cmask[:, 1:] == 0, -100)
        return F.cross_entropy(logits[:, :-1].flatten(0, 1).float(), labels.flatten(), ignore_index=-100)
    return iqlearn(token_terms(logits, ids, cmask, EOS), lam=0.1, gamma=0.99)[0]


def seq2seq_loss_fn(name, model, batch):
    """An encoder-decoder step's loss: the token terms of the decoder's logits (`mle`, `iqlearn`), as irl/trainer.py
    computes them for seq2seq models, or T5's own cross-entropy (`mle_cross_entropy`)."""
    if name == "mle_cross_entropy":
        labels = batch["decoder_input_ids"][:, 1:].masked_fill(batch["completion_mask"][:, 1:] == 0, -100)
        return model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], labels=labels).loss
    logits = model(**model_inputs(batch, seq2seq=True)).logits  # (B, T, V) of the decoder
    terms = token_terms(logits, batch["decoder_input_ids"], batch["completion_mask"], EOS)
    return mle(terms)[0] if name == "mle" else iqlearn(terms, lam=0.1, gamma=0.99)[0]


def make_step(model, optimizer, batch, name, loss=loss_fn):
    def step():
        optimizer.zero_grad(set_to_none=True)
        loss(name, model, batch).backward()
        optimizer.step()
        if batch["input_ids"].is_cuda:
            torch.cuda.synchronize()

    return step


def peak_memory(step, device) -> int:
    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        step()
        return torch.cuda.max_memory_allocated() - base
    with PeakTensorMemory() as tracker:
        step()
    return tracker.peak


def timed(steps: dict, reps: int, device: str) -> tuple[dict, dict]:
    """Median milliseconds and peak bytes per step of each of `steps`, taking turns (each in every place)."""
    clock = time.perf_counter if device == "cuda" else time.process_time
    for step in steps.values():  # warm-up: allocator, optimizer state, kernels
        step()
    names = list(steps)
    times = {name: [] for name in names}
    for rep in range(reps):
        for name in names[rep % len(names) :] + names[: rep % len(names)]:  # each takes every place in turn
            start = clock()
            steps[name]()
            times[name].append(clock() - start)
    ms = {name: 1e3 * statistics.median(t) for name, t in times.items()}
    return ms, {name: peak_memory(step, device) for name, step in steps.items()}


def measure(vocab, reps, batch_size, seq, device, prompt_share):
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=vocab, hidden_size=64, intermediate_size=192, num_hidden_layers=2,
        num_attention_heads=4, max_position_embeddings=seq, tie_word_embeddings=True,
    )
    model = LlamaForCausalLM(config).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    ids = torch.randint(2, vocab, (batch_size, seq), device=device)
    cmask = torch.zeros_like(ids)
    cmask[:, int(seq * prompt_share) :] = 1  # the prompt, then the completion ending in EOS
    ids[:, -1] = EOS
    batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "completion_mask": cmask}
    steps = {name: make_step(model, optimizer, batch, name) for name in NAMES}
    ms, mem = timed(steps, reps, device)
    return {
        "vocab": vocab,
        "time_ratio": round(ms["iqlearn"] / ms["mle"], 3),
        "mem_ratio": round(mem["iqlearn"] / mem["mle"], 3),
        "time_vs_materialised": round(ms["iqlearn"] / ms["mle_cross_entropy"], 3),
        "mem_vs_materialised": round(mem["iqlearn"] / mem["mle_cross_entropy"], 3),
        "logits_time_vs_materialised": round(ms["iqlearn_logits"] / ms["mle_cross_entropy"], 3),
        "logits_mem_vs_materialised": round(mem["iqlearn_logits"] / mem["mle_cross_entropy"], 3),
        "recompute_time_vs_materialised": round(ms["iqlearn_recompute"] / ms["mle_cross_entropy"], 3),
        "recompute_mem_vs_materialised": round(mem["iqlearn_recompute"] / mem["mle_cross_entropy"], 3),
        "ms": {k: round(v, 1) for k, v in ms.items()},
        "peak_mb": {k: round(v / 2**20, 1) for k, v in mem.items()},
        "batch": batch_size,
        "seq": seq,
        "prompt_share": prompt_share,
        "device": device,
        "clock": "wall" if device == "cuda" else f"cpu time, {torch.get_num_threads()} thread(s)",
    }


SEQ2SEQ_NAMES = ["mle", "iqlearn", "mle_cross_entropy"]


def measure_seq2seq(vocab, reps, batch_size, seq, device, prompt_share):
    """IQLearn against MLE on a T5 model: the module docstring's encoder-decoder part."""
    from transformers import T5Config, T5ForConditionalGeneration

    torch.manual_seed(0)
    config = T5Config(
        vocab_size=vocab, d_model=64, d_ff=192, d_kv=16, num_heads=4, num_layers=2, num_decoder_layers=2,
        feed_forward_proj="gated-gelu", dropout_rate=0.0, tie_word_embeddings=True, pad_token_id=0, eos_token_id=EOS,
        decoder_start_token_id=0,
    )  # fmt: skip
    model = T5ForConditionalGeneration(config).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    prompt = int(seq * prompt_share)
    decoder = torch.randint(2, vocab, (batch_size, seq - prompt + 1), device=device)
    decoder[:, 0], decoder[:, -1] = 0, EOS  # [decoder start] + completion ending in EOS
    cmask = torch.ones_like(decoder)
    cmask[:, 0] = 0
    encoder = torch.randint(2, vocab, (batch_size, prompt), device=device)
    batch = {"input_ids": encoder, "attention_mask": torch.ones_like(encoder), "decoder_input_ids": decoder,
             "decoder_attention_mask": torch.ones_like(decoder), "completion_mask": cmask}  # fmt: skip
    steps = {name: make_step(model, optimizer, batch, name, seq2seq_loss_fn) for name in SEQ2SEQ_NAMES}
    ms, mem = timed(steps, reps, device)
    return {
        "model": "t5",
        "vocab": vocab,
        "time_ratio": round(ms["iqlearn"] / ms["mle"], 3),
        "mem_ratio": round(mem["iqlearn"] / mem["mle"], 3),
        "time_vs_cross_entropy": round(ms["iqlearn"] / ms["mle_cross_entropy"], 3),
        "mem_vs_cross_entropy": round(mem["iqlearn"] / mem["mle_cross_entropy"], 3),
        "ms": {k: round(v, 1) for k, v in ms.items()},
        "peak_mb": {k: round(v / 2**20, 1) for k, v in mem.items()},
        "batch": batch_size,
        "encoder_len": prompt,
        "decoder_len": seq - prompt + 1,
        "device": device,
        "clock": "wall" if device == "cuda" else f"cpu time, {torch.get_num_threads()} thread(s)",
    }


def measure_online(steps: int, batch_size: int, max_new_tokens: int, data: str = "math") -> list[dict]:
    """Median seconds per step spent sampling and updating, from the logs of short MLE, online IQLearn and GAIL runs."""
    from irl.config import TrainConfig
    from irl.train import train

    runs = {
        "mle": dict(objective="mle"),
        "iqlearn_online": dict(objective="iqlearn", lam=0.1, alpha=0.1),
        "gail": dict(objective="gail"),  # init: the MLE run's last checkpoint
    }
    base = dict(
        data=data, model="small", vocab_size=1024, math_sizes=[steps * batch_size, 32, 32], max_length=256, seed=0,
        per_device_train_batch_size=batch_size, max_steps=steps, learning_rate=1e-3, warmup_steps=0, logging_steps=1,
        eval_steps=steps, save_steps=steps, sample_max_new_tokens=max_new_tokens,
    )
    medians = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, overrides in runs.items():
            cfg = {**base, **overrides, "output_dir": f"{tmp}/{name}"}
            if name == "gail":
                cfg["model"] = cfg["init"] = f"{tmp}/mle/checkpoint-{steps}"
            trainer = train(TrainConfig(**cfg))
            rows = [json.loads(line) for line in trainer.metrics_path.read_text().splitlines()]
            logged = [r for r in rows if "train/loss" in r][2:]  # two warm-up steps
            medians[name] = {
                key: statistics.median(r.get(key, 0.0) for r in logged)
                for key in ("time/sample_s", "time/update_s", "sample/length")
            }
    mle_s = medians["mle"]["time/update_s"]
    return [
        {
            "objective": name,
            "sample_s": round(m["time/sample_s"], 4),
            "update_s": round(m["time/update_s"], 4),
            "time_ratio": round((m["time/sample_s"] + m["time/update_s"]) / mle_s, 3),
            "update_ratio": round(m["time/update_s"] / mle_s, 3),
            "sample_length": round(m["sample/length"], 1),
            "batch": batch_size,
            "max_new_tokens": max_new_tokens,
            "device": "cuda" if torch.cuda.is_available() else "cpu",
        }
        for name, m in medians.items()
    ]


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--parts", default="vocab,seq2seq,online",
                        help="Comma-separated: vocab (offline), seq2seq (offline, T5), online.")  # fmt: skip
    parser.add_argument("--vocabs", default="32000,128000")
    parser.add_argument("--reps", type=int, default=4, help="Timed steps per objective (each in every place).")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--seq", type=int, default=256)
    parser.add_argument("--prompt_share", type=float, default=0.25, help="Share of each sequence that is prompt.")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--threads", type=int, default=1, help="CPU: torch threads (CPU time is summed over them).")
    parser.add_argument("--online_steps", type=int, default=8, help="Online part: steps per run (2 are warm-up).")
    parser.add_argument("--online_batch", type=int, default=32, help="Online part: prompts per batch.")
    parser.add_argument("--max_new_tokens", type=int, default=64, help="Online part: tokens per sampled completion.")
    parser.add_argument("--data", default="math", help="Online part: training data (TrainConfig.data).")
    args = parser.parse_args()
    parts = set(args.parts.split(","))
    for part, fn in (("vocab", measure), ("seq2seq", measure_seq2seq)):
        if part not in parts:
            continue
        threads = torch.get_num_threads()
        if args.device == "cpu":
            torch.set_num_threads(args.threads)
        for vocab in map(int, args.vocabs.split(",")):
            print(json.dumps(fn(vocab, args.reps, args.batch, args.seq, args.device, args.prompt_share)), flush=True)
        torch.set_num_threads(threads)
    if "online" in parts:
        for line in measure_online(args.online_steps, args.online_batch, args.max_new_tokens, args.data):
            print(json.dumps(line), flush=True)


if __name__ == "__main__":
    main()
