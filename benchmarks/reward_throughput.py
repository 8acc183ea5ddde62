"""Reward extraction against sampling on the same model: tokens per second, and peak memory of one batch.

    python benchmarks/reward_throughput.py [--vocab 32000] [--batch 32] [--prompt 48] [--completion 64] [--reps 3]

Model: the `small` preset's shape (Llama, hidden 256, 4 layers) with a `--vocab` vocabulary, randomly
initialised (speed does not depend on the weights), and a word-level tokenizer of the same size. Texts: random
words, every prompt `--prompt` tokens and every completion `--completion` tokens (EOS included).

- extraction: analysis.scoring.score_batch on the `--batch` tokenised sequences: one forward pass, the token
  terms and the per-token arrays on the host, on the chunked head (the route `score` and the rewards command take
  by default) and on materialised logits; tokens/s = completion tokens scored / median seconds.
- sampling: model.generate of the same tokenised prompts (ancestral sampling, top_k=0, KV cache), forced to the
  same length with min_new_tokens; tokens/s = generated tokens / median seconds.
- speedup = sampling seconds / extraction seconds: token ids in, numbers out, both ways.
- end to end: analysis.scoring.score on the texts (encoded by training's rule, decoding each token's
  text and building the tables included), reported as end_to_end_tokens_per_s and end_to_end_speedup; on a GPU
  this host-side work, not the forward pass, sets its speed.
- peak memory of one extraction batch (score_batch) on each route, weights excluded: CUDA max_memory_allocated
  above what was allocated before; on CPU, the largest total of tensor storage allocated during the batch and alive
  at once (counted by objective_overhead.PeakTensorMemory, a dispatch mode), not RSS: the allocator's cache and
  Python objects are not counted.
Last line: JSON {"speedup", "peak_mem_mb", "extract_tokens_per_s", "generate_tokens_per_s", ...}, the chunked
route's, with the materialised route's as extract_materialised_tokens_per_s and peak_mem_materialised_mb.
"""

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from analysis import schema as S  # noqa: E402
from analysis.scoring import from_texts, score, score_batch  # noqa: E402
from irl.data import Encoded  # noqa: E402
from irl.model import EOS, PAD, PRESETS  # noqa: E402
from objective_overhead import PeakTensorMemory  # noqa: E402


def word_tokenizer(vocab: int) -> PreTrainedTokenizerFast:
    """A tokenizer of `vocab` ids: PAD, EOS, then the words w2 ... w<vocab-1>, split on whitespace."""
    words = {PAD: 0, EOS: 1} | {f"w{i}": i for i in range(2, vocab)}
    tok = Tokenizer(models.WordLevel(words, unk_token=PAD))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token=EOS, pad_token=PAD)


def median_seconds(fns: dict, reps: int, device: str) -> dict[str, float]:
    """Median seconds of each function, the functions alternating repetition by repetition so that drifts of
    a shared machine hit all alike."""
    times = {name: [] for name in fns}
    for _ in range(reps):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            if device == "cuda":
                torch.cuda.synchronize()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t) for name, t in times.items()}


def peak_mb(fn, device: str) -> float:
    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        fn()
        return (torch.cuda.max_memory_allocated() - base) / 2**20
    with PeakTensorMemory() as tracker:
        fn()
    return tracker.peak / 2**20


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--vocab", type=int, default=32000)
    parser.add_argument("--batch", type=int, default=32, help="sequences per batch, both ways")
    parser.add_argument("--prompt", type=int, default=48, help="prompt tokens")
    parser.add_argument("--completion", type=int, default=64, help="completion tokens, EOS included")
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()

    torch.manual_seed(0)
    tokenizer = word_tokenizer(args.vocab)
    config = LlamaConfig(
        vocab_size=args.vocab, max_position_embeddings=args.prompt + args.completion, tie_word_embeddings=True,
        bos_token_id=None, eos_token_id=1, pad_token_id=0, **PRESETS["small"],
    )  # fmt: skip
    model = LlamaForCausalLM(config).to(args.device).eval()
    rng = np.random.default_rng(0)

    def text(n):
        return " ".join(f"w{i}" for i in rng.integers(2, args.vocab, n))

    texts = pd.DataFrame({S.PROMPT: [text(args.prompt) for _ in range(args.batch)]})
    texts[S.COMPLETION] = [text(args.completion - 1) for _ in range(args.batch)]  # + EOS = args.completion
    prompts = tokenizer(list(texts[S.PROMPT]), return_tensors="pt")["input_ids"].to(args.device)
    completions = tokenizer(list(texts[S.COMPLETION]), add_special_tokens=False)["input_ids"]
    batch = [Encoded(p, c + [1], True) for p, c in zip(prompts.tolist(), completions)]
    n_tokens = args.batch * args.completion

    def extract(chunked=True):
        assert len(score_batch(model, batch, pad_id=0, eos_id=1, gamma=0.99, chunked=chunked)[S.REWARD]) == n_tokens

    def extract_materialised():
        extract(chunked=False)

    def end_to_end():
        whole = args.batch * (args.prompt + args.completion)  # the whole batch in one forward pass
        encoded, _ = from_texts(tokenizer, texts[S.PROMPT], texts[S.COMPLETION], config.max_position_embeddings)
        assert len(score(model, tokenizer, encoded, 0.99, batch_tokens=whole)[1]) == n_tokens

    @torch.inference_mode()
    def sample(n=args.completion):
        out = model.generate(
            prompts, attention_mask=torch.ones_like(prompts), do_sample=True, top_k=0, top_p=1.0,
            max_new_tokens=n, min_new_tokens=n, pad_token_id=0, eos_token_id=1,
        )  # fmt: skip
        assert out.shape[1] - prompts.shape[1] == n

    extract(), extract_materialised(), sample(n=4), end_to_end()  # warm-up (a short generation: the same steps)
    seconds = median_seconds({"extract": extract, "extract_materialised": extract_materialised, "sample": sample,
                              "end_to_end": end_to_end}, args.reps, args.device)  # fmt: skip
    extract_s, generate_s, end_to_end_s = seconds["extract"], seconds["sample"], seconds["end_to_end"]
    result = {
        "vocab": args.vocab,
        "batch": args.batch,
        "prompt": args.prompt,
        "completion": args.completion,
        "device": args.device,
        "extract_tokens_per_s": round(n_tokens / extract_s, 1),
        "extract_materialised_tokens_per_s": round(n_tokens / seconds["extract_materialised"], 1),
        "generate_tokens_per_s": round(n_tokens / generate_s, 1),
        "end_to_end_tokens_per_s": round(n_tokens / end_to_end_s, 1),
        "end_to_end_speedup": round(generate_s / end_to_end_s, 2),
        "speedup": round(generate_s / extract_s, 2),
        "peak_mem_mb": round(peak_mb(extract, args.device), 1),
        "peak_mem_materialised_mb": round(peak_mb(extract_materialised, args.device), 1),
    }
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
