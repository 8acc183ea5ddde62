"""Synthetic runs directories with the on-disk shape of real runs (irl/runs.py, analysis/schema.py), for the app's
tests and its latency benchmark. No model is trained: every table is drawn from a seeded generator.

    build_runs(root)                                  # small: 2 methods x 2 seeds x 2 checkpoints, 6 prompts
    build_runs(root, n_prompts=150, steps=(100, 200, 300, 400, 500), ...)     # benchmark scale

Layout written, for each run <root>/<method>/seed<seed>/:
    config.yaml, metrics.jsonl (a step-0 data/init row, train/iq rows, eval/nll rows)
    checkpoint-<step>/trainer_state.json
    checkpoint-<step>/sweep/validation/samples-<decoding>.parquet, aggregate.parquet
    checkpoint-<step>/rewards/validation/{tokens,sequences}.parquet       the references, one per prompt
    checkpoint-<step>/rewards/validation-t=<T>/{tokens,sequences}.parquet the K samples at the highest T
    checkpoint-<step>/rewards/prefs/{tokens,sequences,pairs}.parquet      reference vs a wrong answer

The reference of prompt "p0" (example 0 of rewards/validation and of rewards/prefs) is made of the hostile
tokens in `HOSTILE_TOKENS`, and so is the greedy sample of "p0", so the pages must show them as text.
"""

import json
import re
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from analysis import schema as S
from irl.config import TrainConfig
from irl.runs import method_label

HOSTILE_TOKENS = ("<script>alert(1)</script>", "<img src=x onerror=alert(1)>")
METHODS = (("mle", 0.0), ("iqlearn", 0.1))  # (objective, lam)
SPLIT = "validation"
PREFS = "prefs"
# whitespace-led words as tokens; each hostile string is one token
_PIECE = re.compile("|".join([*(" ?" + re.escape(t) for t in HOSTILE_TOKENS), r" *\S+", r"\n"]))


def decoding_grid(temperatures=(0.5, 1.0), beams=(4,)) -> list[dict]:
    """Decoding settings as the sweep labels them: greedy, t=<T> sampling, beam=<B>."""
    grid = [{S.DECODING: "greedy", S.KIND: "greedy", S.TEMPERATURE: 0.0, S.BEAMS: 1}]
    grid += [{S.DECODING: f"t={t:g}", S.KIND: "sample", S.TEMPERATURE: float(t), S.BEAMS: 1} for t in temperatures]
    grid += [{S.DECODING: f"beam={b}", S.KIND: "beam", S.TEMPERATURE: 0.0, S.BEAMS: int(b)} for b in beams]
    return grid


def _problem(rng, lines: tuple[int, int]) -> tuple[str, str, int]:
    """A GSM8K-style problem with lines[0] to lines[1] - 1 addition steps: (prompt, reference completion
    ending "#### <answer>", answer)."""
    amounts = rng.integers(2, 40, 1 + int(rng.integers(*lines)))
    prompt = f"Question: Ava has {amounts[0]} apples. " + " ".join(f"She picks {a} more." for a in amounts[1:])
    prompt += " How many apples does she have?\nAnswer:"
    lines, total = [f" Ava starts with {amounts[0]} apples."], int(amounts[0])
    for a in amounts[1:]:
        lines.append(f"Then she has {total} + {a} = {total + a} apples.")
        total += int(a)
    return prompt, "\n".join(lines) + f"\n#### {total}", total


def build_runs(
    root,
    *,
    methods=METHODS,
    seeds=(0, 1),
    steps=(50, 100),
    n_prompts: int = 6,
    k: int = 3,
    temperatures=(0.5, 1.0),
    beams=(4,),
    solution_lines: tuple[int, int] = (1, 5),
    seed: int = 0,
) -> Path:
    """Write a runs directory under `root` (one run per method x seed, one checkpoint per step, the last step
    being max_steps, so every run is finished) and return `root`."""
    root = Path(root)
    rng = np.random.default_rng(seed)
    problems = [_problem(rng, solution_lines) for _ in range(n_prompts)]
    vocab: dict[str, int] = {}
    for objective, lam in methods:
        for run_seed in seeds:
            run = root / objective / f"seed{run_seed}"
            cfg = TrainConfig(
                output_dir=str(run), objective=objective, lam=lam or 0.1, seed=run_seed, model="small",
                max_steps=max(steps), eval_steps=max(steps) // 2,
            )  # fmt: skip
            _write_run(run, cfg, steps, problems, k, decoding_grid(temperatures, beams), vocab, rng)
    return root


def _write_run(run: Path, cfg: TrainConfig, steps, problems, k, grid, vocab, rng) -> None:
    run.mkdir(parents=True, exist_ok=True)
    (run / "config.yaml").write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False))
    iq = cfg.objective == "iqlearn"
    rows = [{"step": 0, "data/train/examples": 20000, "data/train/kept": 20000, "init/parameters": 1234567}]
    for step in range(10, cfg.max_steps + 1, 10):
        nll = 3.0 * np.exp(-step / 40) + 0.3 + 0.05 * rng.standard_normal()
        td = (8.0 if iq else 30.0) * np.exp(-step / 60) + 1.0
        noise = 0.05 * rng.standard_normal(2)
        rows.append({
            "step": step, "train/loss": nll + (cfg.lam * td if iq else 0.0),
            "train/lr": 2e-3 * (1 - step / cfg.max_steps), "train/grad_norm": 1.0, "train/tokens_per_s": 6000.0,
            "iq/nll": nll, "iq/td": td, "iq/reward_mean": (0.5 if iq else -3.0) * step / cfg.max_steps + noise[0],
            "iq/v_mean": (2.0 if iq else 12.0) + noise[1],
            "iq/entropy": (0.6 if iq else 0.3) + 2.0 * np.exp(-step / 50), "epoch": step / 600,
        })  # fmt: skip
        if step % cfg.eval_steps == 0:
            rows.append({"step": step, "eval/nll": nll + 0.05, "eval/tokens": 8000, "epoch": step / 600})
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    for step in steps:
        ckpt = run / f"checkpoint-{step}"
        ckpt.mkdir(exist_ok=True)
        (ckpt / "trainer_state.json").write_text(json.dumps({"global_step": step}))
        progress = step / cfg.max_steps
        keys = {S.RUN: str(run), S.METHOD: method_label(cfg.to_dict()), S.SEED: cfg.seed, S.STEP: step}
        samples = _write_sweep(ckpt / "sweep" / SPLIT, keys, problems, k, grid, iq, progress, rng)
        rewards = ckpt / "rewards"
        _write_rewards(rewards / SPLIT, _references(problems), cfg.gamma, iq, vocab, rng)
        _write_rewards(rewards / f"{SPLIT}-{samples[S.DECODING].iloc[0]}", samples, cfg.gamma, iq, vocab, rng)
        _write_pairs(rewards / PREFS, problems, cfg.gamma, iq, vocab, rng)


def _write_sweep(out: Path, keys, problems, k, grid, iq, progress, rng) -> pd.DataFrame:
    """One samples-<decoding>.parquet per setting and aggregate.parquet; returns the samples at the highest
    temperature."""
    out.mkdir(parents=True, exist_ok=True)
    agg_rows, last = [], None
    for setting in grid:
        n = 1 if setting[S.KIND] == "greedy" else k
        t = setting[S.TEMPERATURE]
        p_correct = min(0.95, 0.2 + 0.5 * progress + (0.1 if iq else 0.0) - 0.3 * t)
        rows = []
        for pid, (prompt, reference, answer) in enumerate(problems):
            for sample in range(n):
                correct = rng.random() < p_correct
                value = answer if correct else answer + int(rng.integers(1, 9))
                completion = reference.rsplit("####", 1)[0] + f"#### {value}"
                if pid == 0 and sample == 0 and setting[S.KIND] == "greedy":
                    completion = f" {HOSTILE_TOKENS[0]} {HOSTILE_TOKENS[1]}\n#### {value}"
                rows.append({
                    **keys, **setting, S.PROMPT_ID: f"p{pid}", S.SAMPLE: sample, S.PROMPT: prompt,
                    S.COMPLETION: completion, S.REFERENCE: reference, S.N_TOKENS: len(_PIECE.findall(completion)),
                    S.ENTROPY: 0.2 + t * rng.random(), S.COMPLETION_CALC: completion,
                    S.EXACT_MATCH: float(correct), S.EXACT_MATCH_CALC: float(correct or rng.random() < 0.3),
                    "rouge1": float(np.clip(0.5 + 0.4 * correct - 0.2 * t + 0.1 * rng.standard_normal(), 0, 1)),
                })  # fmt: skip
        samples = pd.DataFrame(rows)
        samples.to_parquet(out / f"samples-{setting[S.DECODING]}.parquet", index=False)
        agg = {**keys, **setting}
        for m in (S.EXACT_MATCH, S.EXACT_MATCH_CALC, "rouge1"):
            agg[S.mean_col(m)] = samples[m].mean()
            agg[S.se_col(m)] = samples[m].std(ddof=1) / np.sqrt(len(samples))
        diverse = t + (0.3 if iq else 0.0) * (t > 0)
        agg |= {
            S.SELF_BLEU: float(np.clip(95 - 60 * diverse + 5 * rng.standard_normal(), 0, 100)),
            S.DISTINCT_1: float(np.clip(0.2 + 0.4 * diverse, 0, 1)),
            S.DISTINCT_2: float(np.clip(0.3 + 0.5 * diverse, 0, 1)),
            S.ENTROPY: samples[S.ENTROPY].mean(), S.N: len(samples),
        }  # fmt: skip
        agg_rows.append(agg)
        last = samples if setting[S.KIND] == "sample" else last
    pd.DataFrame(agg_rows).to_parquet(out / "aggregate.parquet", index=False)  # analysis/sweep.py AGGREGATE
    return last


def _write_rewards(out: Path, examples: pd.DataFrame, gamma, iq, vocab, rng) -> pd.DataFrame:
    """tokens.parquet and sequences.parquet of `examples` (one row per completion: prompt_id, completion and
    any columns to carry, e.g. the sweep's); returns the sequences."""
    out.mkdir(parents=True, exist_ok=True)
    seqs = examples.reset_index(drop=True)
    seqs.insert(0, S.EXAMPLE_ID, np.arange(len(seqs)))
    pieces = [_PIECE.findall(text) for text in seqs[S.COMPLETION]]
    lengths = np.array([len(p) for p in pieces])
    tokens = np.concatenate(pieces)
    start = np.repeat(np.cumsum(lengths) - lengths, lengths)
    position = np.arange(len(tokens)) - start
    last = position == np.repeat(lengths, lengths) - 1
    # IQLearn's rewards track correctness; MLE's offset V is unconstrained noise (METHOD.md, section 4).
    signal = np.repeat(seqs[S.EXACT_MATCH].to_numpy(), lengths) * (0.6 if iq else 0.0)
    v = (2.0 if iq else 12.0) + rng.normal(0, 1.0 if iq else 3.0, len(tokens))
    logp = -np.abs(rng.normal(0, 1.2, len(tokens))) * (1.0 - 0.5 * signal)
    q = logp + v
    v_next = np.where(last, 0.0, np.roll(v, -1))  # V after EOS is 0
    table = pd.DataFrame({
        S.EXAMPLE_ID: np.repeat(seqs[S.EXAMPLE_ID].to_numpy(), lengths), S.POSITION: position,
        S.TOKEN_ID: [vocab.setdefault(t, len(vocab)) for t in tokens], S.TOKEN: tokens,
        S.Q: q, S.V: v, S.V_NEXT: v_next, S.LOGP: logp, S.REWARD: q - gamma * v_next,
    })  # fmt: skip
    table.to_parquet(out / S.TOKENS_FILE, index=False, row_group_size=20_000)
    sums = table.groupby(S.EXAMPLE_ID).agg(R=(S.REWARD, "sum"), logp_sum=(S.LOGP, "sum"), v0=(S.V, "first"))
    seqs[S.R] = sums["R"].to_numpy()
    seqs[S.R_CENTERED] = seqs[S.R] - seqs.groupby(S.PROMPT_ID)[S.R].transform("mean")
    seqs[S.LOGP_SUM] = sums["logp_sum"].to_numpy()
    seqs[S.V0] = sums["v0"].to_numpy()
    seqs[S.LENGTH] = lengths
    seqs[S.TRUNCATED], seqs[S.ROUNDTRIP] = False, True
    first = [*S.SEQUENCE_COLUMNS, S.TRUNCATED, S.ROUNDTRIP]
    seqs = seqs[first + [c for c in seqs.columns if c not in first]]
    seqs.to_parquet(out / S.SEQUENCES_FILE, index=False)
    return seqs


def _references(problems) -> pd.DataFrame:
    """The data set's own completions, one per prompt; the first one made of the hostile tokens."""
    refs = pd.DataFrame({
        S.PROMPT_ID: [f"p{i}" for i in range(len(problems))], S.PROMPT: [p for p, _, _ in problems],
        S.COMPLETION: [c for _, c, _ in problems], S.EXACT_MATCH: 1.0,
    })  # fmt: skip
    refs.loc[0, S.COMPLETION] = f" Ava wrote {HOSTILE_TOKENS[0]} and {HOSTILE_TOKENS[1]}\n#### 5"
    return refs


def _write_pairs(out: Path, problems, gamma, iq, vocab, rng) -> None:
    """A preference set, one pair per prompt: the reference chosen, a wrong final answer rejected."""
    chosen = _references(problems).assign(**{S.SIDE: "chosen"})
    rejected = chosen.assign(**{
        S.SIDE: "rejected", S.EXACT_MATCH: 0.0, S.COMPLETION: [c + "1" for c in chosen[S.COMPLETION]],
    })  # fmt: skip
    both = pd.concat([chosen, rejected]).assign(**{S.PAIR_ID: np.tile(np.arange(len(problems)), 2)})
    seqs = _write_rewards(out, both.sort_values(S.PAIR_ID, kind="stable"), gamma, iq, vocab, rng)
    c, r = (seqs[seqs[S.SIDE] == side].set_index(S.PAIR_ID) for side in ("chosen", "rejected"))
    pd.DataFrame({
        S.PAIR_ID: c.index, S.PROMPT_ID: c[S.PROMPT_ID].to_numpy(), S.CHOSEN_R: c[S.R].to_numpy(),
        S.REJECTED_R: r[S.R].to_numpy(), S.MARGIN: (c[S.R] - r[S.R]).to_numpy(),
        "chosen_example_id": c[S.EXAMPLE_ID].to_numpy(), "rejected_example_id": r[S.EXAMPLE_ID].to_numpy(),
    }).to_parquet(out / S.PAIRS_FILE, index=False)  # fmt: skip


# ---------------------------------------------------------------------------------------------------------------
# Serving the app and driving it in Debian's chromium (tests/test_app_browser.py, benchmarks/app_latency.py)

REPO = Path(__file__).resolve().parents[1]
CHROMIUM = "/usr/bin/chromium"  # Debian's package: apt-get install -y chromium (Playwright's download fails here)
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]  # fmt: skip
# URL path of each page (app/main.py), and what a complete render shows: Plotly charts and other elements.
PAGES = {
    "": {"charts": 1},
    "token_rewards": {"charts": 2, "selector": ".token-rewards"},
    "quality_diversity": {"charts": 2},
    "rewards_quality": {"charts": 4},
    "samples": {"charts": 0, "selector": '[data-testid="stCode"]'},
}
TITLES = {"": "Runs", "token_rewards": "Token rewards", "quality_diversity": "Quality vs diversity",
          "rewards_quality": "Rewards vs quality", "samples": "Samples"}  # fmt: skip
# Installed in every document: records the time of the last user input (click, key), of the last change to
# the page (a DOM mutation) and Streamlit's script state.
RECORD_CHANGES = """
window.__input = 0;
window.__changed = 0;
for (const type of ['click', 'keydown']) addEventListener(type, e => { window.__input = e.timeStamp; }, true);
new MutationObserver(() => { window.__changed = performance.now(); })
  .observe(document, {attributes: true, childList: true, characterData: true, subtree: true});
"""
# The time of the last change once the page has changed after `since`, then stayed still for `quiet` ms with
# the script idle, no element still loading (skeletons), `charts` drawn Plotly charts and an element matching
# `selector`; false before.
RENDERED = """([since, quiet, charts, selector]) => {
  const app = document.querySelector('[data-testid="stApp"]');
  const idle = app && app.getAttribute('data-test-script-state') === 'notRunning';
  const drawn = [...document.querySelectorAll('.js-plotly-plot')].filter(p => p.querySelector('.main-svg')).length;
  const still = window.__changed > since && performance.now() - window.__changed >= quiet;
  const shown = !selector || document.querySelector(selector) !== null;
  const loaded = !document.querySelector('[data-testid="stSkeleton"], [data-testid="stAppSkeleton"]');
  return idle && still && loaded && drawn >= charts && shown && window.__changed;
}"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def serve_app(runs_dir, log_path) -> Iterator[str]:
    """`streamlit run app/main.py -- --runs-dir runs_dir` on a free port of 127.0.0.1, output to `log_path`;
    yields the base URL once /_stcore/health answers."""
    port = free_port()
    command = [
        sys.executable, "-m", "streamlit", "run", "app/main.py", "--server.headless", "true",
        "--server.address", "127.0.0.1", "--server.port", str(port), "--browser.gatherUsageStats", "false",
        "--", "--runs-dir", str(runs_dir),
    ]  # fmt: skip
    with open(log_path, "w") as log:
        proc = subprocess.Popen(command, cwd=REPO, stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"streamlit exited with {proc.returncode}:\n{Path(log_path).read_text()}")
            try:
                with urllib.request.urlopen(f"{base}/_stcore/health", timeout=1) as r:
                    if r.status == 200:
                        break
            except OSError:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"streamlit did not answer on {base}:\n{Path(log_path).read_text()}") from None
                time.sleep(0.2)
        yield base
    finally:
        proc.terminate()
        proc.wait(timeout=10)


@contextmanager
def chromium(profile_dir, width: int = 1400, height: int = 1000):
    """A Playwright browser context on Debian's chromium with a fresh profile in `profile_dir` (its
    --user-data-dir), recording inputs and page changes in every document (RECORD_CHANGES)."""
    from playwright.sync_api import sync_playwright

    if not Path(CHROMIUM).is_file():
        raise FileNotFoundError(f"{CHROMIUM} is missing: apt-get update && apt-get install -y chromium")
    with sync_playwright() as p:
        context = p.chromium.launch_persistent_context(
            str(profile_dir), executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS,
            viewport={"width": width, "height": height},
        )  # fmt: skip
        context.add_init_script(RECORD_CHANGES)
        try:
            yield context
        finally:
            context.close()


def timed_run(page, action, charts=0, selector=None, reload=False, quiet_ms=300, timeout_ms=30_000) -> float:
    """Seconds, by the page's clock, from the last user input of `action()` (with `reload`: from the start of
    the navigation `action()` makes) to the last change of the page it causes: the page must then stay still
    for `quiet_ms` with the script idle, `charts` Plotly charts drawn and an element matching `selector`."""
    since = 0.0 if reload else page.evaluate("performance.now()")
    action()
    arg = [since, quiet_ms, charts, selector]
    done = page.wait_for_function(RENDERED, arg=arg, polling=50, timeout=timeout_ms).json_value()
    return (done - (0.0 if reload else page.evaluate("window.__input"))) / 1000


def choose(page, label: str, option: str) -> None:
    """Pick `option` in the Streamlit selectbox labelled `label` (type it, press Enter)."""
    page.get_by_label(label, exact=True).click()
    page.keyboard.type(option)
    page.keyboard.press("Enter")
