"""Cost of offline IQLearn against MLE per training step: time and peak memory, same model, same batch.

    python benchmarks/objective_overhead.py [--vocabs 2000,32000] [--reps 7] [--batch 8] [--seq 256]

For each vocabulary size, a small Llama model (hidden 256, 4 layers) takes full training steps (forward,
objective, backward, AdamW) on one fixed batch, the objectives alternating repetition by repetition so that
drifts of the machine hit both alike; the median step time is compared. Peak memory is the largest total of
tensor storage alive during one step, counted by a dispatch mode on CPU (CUDA: max_memory_allocated).

Objectives: `mle` and `iqlearn` through the fused token terms (irl/objectives.py), `iqlearn_naive` through
the straightforward log_softmax route, and `mle_cross_entropy`, transformers' usual F.cross_entropy loss, as
an outside reference for the MLE step itself. One JSON line per vocabulary:
{"vocab", "time_ratio", "mem_ratio", "naive_time_ratio", "naive_mem_ratio", "mle_vs_cross_entropy", "ms": {...}}
with ratios against `mle`.
"""

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.multiprocessing.reductions import StorageWeakRef
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten
from transformers import LlamaConfig, LlamaForCausalLM

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from irl.objectives import iqlearn, mle, naive_token_terms, token_terms  # noqa: E402

EOS = 1


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


def loss_fn(name, logits, batch):
    ids, cmask = batch["input_ids"], batch["completion_mask"]
    if name == "mle_cross_entropy":
        labels = ids[:, 1:].masked_fill(cmask[:, 1:] == 0, -100)
        return F.cross_entropy(logits[:, :-1].flatten(0, 1).float(), labels.flatten(), ignore_index=-100)
    terms_fn = naive_token_terms if name == "iqlearn_naive" else token_terms
    terms = terms_fn(logits, ids, cmask, EOS)
    return mle(terms)[0] if name == "mle" else iqlearn(terms, lam=0.1, gamma=0.99)[0]


def make_step(model, optimizer, batch, name):
    def step():
        optimizer.zero_grad(set_to_none=True)
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        loss_fn(name, logits, batch).backward()
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


def measure(vocab, reps, batch_size, seq, device, names):
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=vocab, hidden_size=256, intermediate_size=768, num_hidden_layers=4,
        num_attention_heads=8, max_position_embeddings=seq, tie_word_embeddings=True,
    )
    model = LlamaForCausalLM(config).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    ids = torch.randint(2, vocab, (batch_size, seq), device=device)
    cmask = torch.zeros_like(ids)
    cmask[:, seq // 4 :] = 1  # a quarter prompt, the rest completion ending in EOS
    ids[:, -1] = EOS
    batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "completion_mask": cmask}
    steps = {name: make_step(model, optimizer, batch, name) for name in names}
    for step in steps.values():  # warm-up: allocator, optimizer state, kernels
        step()
    times = {name: [] for name in names}
    for _ in range(reps):
        for name, step in steps.items():
            start = time.perf_counter()
            step()
            times[name].append(time.perf_counter() - start)
    ms = {name: 1e3 * statistics.median(t) for name, t in times.items()}
    mem = {name: peak_memory(step, device) for name, step in steps.items()}
    return {
        "vocab": vocab,
        "time_ratio": round(ms["iqlearn"] / ms["mle"], 3),
        "mem_ratio": round(mem["iqlearn"] / mem["mle"], 3),
        "naive_time_ratio": round(ms["iqlearn_naive"] / ms["mle"], 3),
        "naive_mem_ratio": round(mem["iqlearn_naive"] / mem["mle"], 3),
        "mle_vs_cross_entropy": round(ms["mle"] / ms["mle_cross_entropy"], 3),
        "ms": {k: round(v, 1) for k, v in ms.items()},
        "peak_mb": {k: round(v / 2**20, 1) for k, v in mem.items()},
        "device": device,
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--vocabs", default="2000,32000")
    parser.add_argument("--reps", type=int, default=7)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--seq", type=int, default=256)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    names = ["mle", "iqlearn", "iqlearn_naive", "mle_cross_entropy"]
    for vocab in map(int, args.vocabs.split(",")):
        print(json.dumps(measure(vocab, args.reps, args.batch, args.seq, args.device, names)), flush=True)


if __name__ == "__main__":
    main()
