"""The output head's routes alone, at a real shape: offline IQLearn's loss (lam 0.1) and its gradients with respect
to the final hidden states and the output embedding, from N rows of hidden size H over a vocabulary of V, on the
chunked routes against materialised logits, in float32 and under bf16 autocast (float32 leaves, as training keeps
them).

    python benchmarks/head_routes.py                       # the 0.5B shape's head: N 2,048, H 896, V 151,936
    python benchmarks/head_routes.py --rows 4096 --hidden 4096 --vocab 128256 --dtypes bfloat16

Routes (irl/kernels.py):
- `chunked`: head_loss, the gradient formed in the one pass over each chunk's logits (the training default);
- `recompute`: head_token_terms, whose backward computes each chunk's logits again (GAIL's route);
- `materialised`: F.linear to the (N, V) logits, then token_terms' fused pass.
Each route's forward and backward runs once untimed, then --reps times, the routes taking turns so that drifts of
the machine hit all alike; the median wall time is kept. One JSON line per dtype: {"dtype", "rows", "hidden",
"vocab", "chunked_s", "recompute_s", "materialised_s", "time_ratio" (chunked / materialised), "recompute_ratio",
"loss_max_rel_diff" (the routes' losses against the materialised one's: that they computed the same loss), "reps",
"commit", "machine"}. Peak memory at real shapes is the ladder's (benchmarks/scale.py).
"""

import argparse
import functools
import json
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.scale import commit, machine  # noqa: E402
from irl.kernels import head_loss, head_token_terms, token_terms  # noqa: E402
from irl.objectives import iqlearn  # noqa: E402

EOS = 1
ROUTES = ("chunked", "recompute", "materialised")


def make_step(route: str, hidden, weight, ids, cmask, autocast: bool):
    """One forward and backward of `route` on fresh leaves: the hidden states (1, N + 1, H) and the embedding W."""
    objective = functools.partial(iqlearn, lam=0.1, gamma=0.99)

    def step():
        h = hidden.clone().requires_grad_()
        w = weight.detach().requires_grad_()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            if route == "chunked":
                loss = head_loss(objective, h, w, None, ids, cmask, EOS)[0]
            elif route == "recompute":
                loss = objective(head_token_terms(h, w, None, ids, cmask, EOS))[0]
            else:
                loss = objective(token_terms(F.linear(h, w), ids, cmask, EOS))[0]
        loss.backward()
        return loss.item()

    return step


def measure(rows: int, hidden_size: int, vocab: int, dtype: str, reps: int) -> dict:
    g = torch.Generator().manual_seed(0)
    hidden = torch.randn(1, rows + 1, hidden_size, generator=g)
    weight = torch.randn(vocab, hidden_size, generator=g) * hidden_size**-0.5
    ids = torch.randint(2, vocab, (1, rows + 1), generator=g)
    cmask = torch.ones_like(ids)
    cmask[0, 0] = 0  # every position after the first is a completion token: N actions
    steps = {r: make_step(r, hidden, weight, ids, cmask, dtype == "bfloat16") for r in ROUTES}
    losses = {r: step() for r, step in steps.items()}  # the untimed run of each route
    seconds = {r: [] for r in ROUTES}
    for rep in range(reps):
        for r in ROUTES[rep % len(ROUTES):] + ROUTES[:rep % len(ROUTES)]:
            start = time.perf_counter()
            steps[r]()
            seconds[r].append(time.perf_counter() - start)
    median = {f"{r}_s": round(statistics.median(s), 6) for r, s in seconds.items()}
    return {"dtype": dtype, "rows": rows, "hidden": hidden_size, "vocab": vocab, **median,
            "time_ratio": round(median["chunked_s"] / median["materialised_s"], 3),
            "recompute_ratio": round(median["recompute_s"] / median["materialised_s"], 3),
            "loss_max_rel_diff": max(abs(losses[r] / losses["materialised"] - 1) for r in ROUTES), "reps": reps,
            "commit": commit(), "machine": machine()}  # fmt: skip


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=2048)
    parser.add_argument("--hidden", type=int, default=896)
    parser.add_argument("--vocab", type=int, default=151_936)
    parser.add_argument("--dtypes", default="float32,bfloat16")
    parser.add_argument("--reps", type=int, default=3, help="Timed runs of each route (each in every place).")
    args = parser.parse_args()
    for dtype in args.dtypes.split(","):
        if dtype not in ("float32", "bfloat16"):
            parser.error(f"--dtypes: {dtype!r} is not float32 or bfloat16")
        print(json.dumps(measure(args.rows, args.hidden, args.vocab, dtype, args.reps)), flush=True)


if __name__ == "__main__":
    main()
