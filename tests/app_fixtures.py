"""A runs directory at the scale of real work for benchmarks/app_latency.py (the app's tests read the real
chain's output instead: tests/conftest.py), and the helpers that serve the app and drive it in Debian's
chromium (tests/test_app_browser.py, benchmarks/app_latency.py).

    build_runs(root)      2 methods x 2 seeds x 5 checkpoints, 150 prompts, greedy + 4 temperatures + 3 beam
                          widths at K = 5: ~100k samples, ~1.3M token rows

Training and decoding at that scale take hours, so two things are drawn instead of made: the training curves
in metrics.jsonl, and each sample, which is the reference solution or one of its corruptions (the rejected
sides of analysis.preferences.corruption_pairs), picked with a probability of being right that grows with the
step and falls with the temperature. The checkpoints hold trainer_state.json only. Everything else is made by
the real code:

- problems: the built-in math task (tasks.math.generate_splits); configs: irl.config.save_config;
- sweep: the decoding grid of analysis.sweep.decoding_grid, per-sample metrics by analysis.metrics.quality_scores
  (the task's checker, ROUGE-1), the manifest of analysis.sweep.Settings, aggregate.parquet by
  analysis.sweep.rebuild_aggregate (prompt-clustered SEs of analysis.stats.mean_se);
- rewards: a tiny model trained here for 2 steps (irl.train.train) scores, on every checkpoint, the samples at
  the highest temperature (`<split>-t=1`, by their token ids) and the corruption preference pairs (`math-pairs`)
  through analysis.rewards.load and score_checkpoint: tokens, sequences, pairs,
  summary.json and manifest.json as the command writes them. The same model scores every checkpoint, so the
  rewards differ between texts only.

    enlarge_rewards(root, n)  the samples at t = 1 of each run's last checkpoint, repeated as the samples of
                              further prompts until they make n token rows, scored again into the same rewards
                              directory: reward tables of a given size (the samples' distinct episodes are
                              scored once: 4 tables of 10M token rows in 12 min, load average 4)
"""

import json
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pandas as pd

from analysis import schema as S
from irl.config import TrainConfig, save_config
from irl.runs import MANIFEST, cell_file, method_label, sweep_dir
from tasks.math import TEMPLATES as MATH_TEMPLATES

METHODS = (("mle", 0.0), ("iqlearn", 0.1))  # (objective, lam)
SPLIT = "validation"
PAIRS = "math-pairs"
SCORER = dict(
    model="tiny", vocab_size=400, math_sizes=[64, 8, 8], max_length=256, per_device_train_batch_size=4, max_steps=2,
    warmup_steps=0, logging_steps=1, eval_steps=0, save_steps=2,
)  # fmt: skip
METRICS = (S.EXACT_MATCH, "rouge1")
N_BOOT = 10  # bootstrap replicates of the correlations in summary.json (the command's default is 1000): the
# intervals are wide, the files and pages the same


def build_runs(
    root,
    *,
    methods=METHODS,
    seeds=(0, 1),
    steps=(100, 200, 300, 400, 500),
    n_prompts: int = 150,
    k: int = 5,
    temperatures=(0.25, 0.5, 0.75, 1.0),
    beams=(2, 4, 8),
    seed: int = 0,
) -> Path:
    """Write a runs directory under `root` (one run per method x seed, one checkpoint per step, the last step
    being max_steps, so every run is finished) and return `root`. See the module docstring."""
    import torch

    from analysis import rewards
    from analysis.metrics import quality_scores
    from analysis.preferences import corruption_pairs
    from analysis.sweep import decoding_grid
    from irl.runs import last_checkpoint
    from irl.train import train
    from tasks.math import generate_splits

    root = Path(root)
    problems = generate_splits([0, n_prompts, 0], list(MATH_TEMPLATES), seed)[SPLIT]
    rng = np.random.default_rng(seed)
    pairs = corruption_pairs(problems, seed=seed)  # the reference against each of its wrong corruptions
    pairs_file = root.parent / f"{PAIRS}.jsonl"
    pairs_file.write_text("".join(json.dumps(pair) + "\n" for pair in pairs))
    # each prompt's texts: its reference, then its wrong corruptions; scored once (a sample is one of them)
    texts = {ex["id"]: [ex["completion"]] for ex in problems}
    for pair in pairs:
        texts[pair[S.PROMPT_ID]].append(pair["rejected"])
    flat = [(ex["completion"], text) for ex in problems for text in texts[ex["id"]]]
    scored = quality_scores(METRICS, [text for _, text in flat], [reference for reference, _ in flat])
    scores, at = {}, 0
    for ex in problems:
        n = len(texts[ex["id"]])
        scores[ex["id"]] = {m: scored[m][at : at + n] for m in METRICS}
        at += n
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        scorer_dir = root.parent / "scorer"
        train(TrainConfig(output_dir=str(scorer_dir), **SCORER))
        model, tokenizer = rewards.load_checkpoint(last_checkpoint(scorer_dir))
        grid = decoding_grid((0.0, *temperatures), beams)
        for objective, lam in methods:
            for run_seed in seeds:
                run = root / objective / f"seed{run_seed}"
                cfg = TrainConfig(
                    output_dir=str(run), objective=objective, lam=lam or 0.1, seed=run_seed, model="small",
                    max_steps=max(steps), eval_steps=max(steps) // 2,
                )  # fmt: skip
                _write_run(run, cfg, rng)
                for step in steps:
                    ckpt = run / f"checkpoint-{step}"
                    ckpt.mkdir()
                    (ckpt / "trainer_state.json").write_text(json.dumps({"global_step": step}))
                    hottest = _write_sweep(ckpt, cfg, step, problems, texts, scores, grid, k, tokenizer, rng)
                    cell = sweep_dir(ckpt, SPLIT) / cell_file(hottest)
                    data = [rewards.load(str(d), ckpt) for d in (cell, pairs_file)]
                    rewards.score_checkpoint(ckpt, data, n_boot=N_BOOT, scorer=(model, tokenizer))
    finally:
        torch.set_num_threads(threads)
    return root


def enlarge_rewards(root, token_rows: int) -> list[Path]:
    """Make the reward table of the samples at the highest temperature of each run's last checkpoint (under a
    runs directory of `build_runs`) hold `token_rows` token rows, or the first rows past it: its samples are
    repeated, copy after copy, as the samples of further prompts (prompt id <id>#<copy>, the same text and K), so
    that best-of-K over a prompt's samples costs what it does at the fixture's K; written as a sweep cell beside
    `root` and scored by analysis.rewards.score_checkpoint with the fixture's scorer into the same rewards
    directory, which is replaced. A table already made from that cell is kept. Returns the rewards directories."""
    from analysis import reward_data, rewards
    from common.io import read_json, write_parquet
    from irl.runs import last_checkpoint, rewards_dir, sweep_rewards_name

    root = Path(root)
    scorer = rewards.load_checkpoint(last_checkpoint(root.parent / "scorer"))
    written = []
    for config in sorted(root.rglob("config.yaml")):
        ckpt = last_checkpoint(config.parent)
        label = reward_data.default_decoding(reward_data.read_sweep(sweep_dir(ckpt, SPLIT)))
        cell = sweep_dir(ckpt, SPLIT) / cell_file(label)
        out = rewards_dir(ckpt, sweep_rewards_name(SPLIT, label))
        enlarged = root.parent / f"token-rows-{token_rows}" / ckpt.relative_to(root) / SPLIT / cell.name
        written.append(out)
        if (out / MANIFEST).is_file() and read_json(out / MANIFEST)["data"] == str(enlarged):
            continue
        samples = reward_data.read_sweep(cell)
        copies = -(-token_rows // int(samples[S.N_TOKENS].sum()))
        more = pd.concat([samples.assign(**{S.PROMPT_ID: samples[S.PROMPT_ID] + (f"#{c}" if c else "")})
                          for c in range(copies)], ignore_index=True)  # fmt: skip
        more = more.iloc[: int(np.searchsorted(more[S.N_TOKENS].cumsum().to_numpy(), token_rows)) + 1]
        enlarged.parent.mkdir(parents=True, exist_ok=True)
        write_parquet(enlarged, more)
        shutil.rmtree(out, ignore_errors=True)
        rewards.score_checkpoint(ckpt, [rewards.load(str(enlarged), ckpt)], n_boot=N_BOOT, scorer=scorer)
    return written


def _write_run(run: Path, cfg: TrainConfig, rng) -> None:
    """config.yaml, and metrics.jsonl with the keys irl/trainer.py logs on curves drawn around decaying ones."""
    run.mkdir(parents=True)
    save_config(cfg, run / "config.yaml")
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


def _write_sweep(ckpt: Path, cfg: TrainConfig, step: int, problems, texts, scores, grid, k, tokenizer, rng) -> str:
    """One samples-<decoding>.parquet per setting (each sample one of its prompt's `texts`, the reference first,
    with its `scores` and the token record the sweep keeps, as `tokenizer` encodes it), the manifest and
    aggregate.parquet; returns the label of the sampling cell at the highest temperature."""
    from analysis.sweep import Settings, rebuild_aggregate
    from common.io import atomic_write_text, write_parquet

    out = sweep_dir(ckpt, SPLIT)
    out.mkdir(parents=True)
    settings = Settings(samples=k, limit=None, max_new_tokens=256, max_prompt_tokens=None, seed=0, batch_size=16,
                        calculator=True, metrics=METRICS)  # fmt: skip
    atomic_write_text(out / MANIFEST, json.dumps(asdict(settings), indent=1) + "\n")
    ids = {}  # (text, is completion) -> token ids: a prompt's few distinct texts are encoded once

    def encode(text: str, completion: bool) -> list[int]:
        if (text, completion) not in ids:
            found = tokenizer(text, add_special_tokens=not completion)["input_ids"]
            ids[text, completion] = found + [tokenizer.eos_token_id] if completion else found
        return ids[text, completion]

    keys = {S.RUN: str(ckpt.parent), S.METHOD: method_label(cfg.to_dict()), S.SEED: cfg.seed, S.STEP: step}
    for decoding in grid:
        better = 0.5 * step / cfg.max_steps + 0.1 * (cfg.objective == "iqlearn") - 0.3 * decoding.temperature
        p_right = min(0.95, 0.2 + better)
        rows = []
        for ex in problems:
            for sample in range(decoding.samples_per_prompt(k)):
                right = rng.random() < p_right or len(texts[ex["id"]]) == 1
                j = 0 if right else int(rng.integers(1, len(texts[ex["id"]])))
                text, completion_ids = texts[ex["id"]][j], encode(texts[ex["id"]][j], True)
                rows.append({
                    **keys, S.DECODING: decoding.label, S.KIND: decoding.kind, S.TEMPERATURE: decoding.temperature,
                    S.BEAMS: decoding.beams, S.PROMPT_ID: ex["id"], S.SAMPLE: sample, S.PROMPT: ex["prompt"],
                    S.COMPLETION: text, S.REFERENCE: ex["completion"], S.N_TOKENS: len(completion_ids),
                    S.ENTROPY: 0.2 + decoding.temperature * rng.random(), S.PROMPT_IDS: encode(ex["prompt"], False),
                    S.COMPLETION_IDS: completion_ids, S.ENDED: True, S.COMPLETION_CALC: text,
                    **{m: scores[ex["id"]][m][j] for m in METRICS},
                    S.EXACT_MATCH_CALC: scores[ex["id"]][S.EXACT_MATCH][j],
                })  # fmt: skip
        samples = pd.DataFrame(rows)
        write_parquet(out / cell_file(decoding.label), samples)
    rebuild_aggregate(out)
    return [d for d in grid if d.kind == "sample"][-1].label


# ---------------------------------------------------------------------------------------------------------------
# Serving the app and driving it in Debian's chromium (tests/test_app_browser.py, benchmarks/app_latency.py)

REPO = Path(__file__).resolve().parents[1]
CHROMIUM = "/usr/bin/chromium"  # Debian's package: apt-get install -y chromium (Playwright's download fails here)
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]  # fmt: skip
LOAD_MS = 120_000  # how long a step may take to render: the first starts Streamlit's frontend, on a shared CPU
# URL path of each page (app/main.py), and what a complete render shows: Plotly charts and other elements.
PAGES = {
    "": {"charts": 1},
    "token_rewards": {"charts": 2, "selector": ".token-rewards"},
    "quality_diversity": {"charts": 2},
    "rewards_quality": {"charts": 6},
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


def timed_run(page, action, charts=0, selector=None, reload=False, quiet_ms=300, timeout_ms=LOAD_MS) -> float:
    """Seconds, by the page's clock, from the last user input of `action()` (with `reload`: from the start of
    the navigation `action()` makes) to the last change of the page it causes: the page must then stay still
    for `quiet_ms` with the script idle, `charts` Plotly charts drawn and an element matching `selector`."""
    since = 0.0 if reload else page.evaluate("performance.now()")
    action()
    arg = [since, quiet_ms, charts, selector]
    done = page.wait_for_function(RENDERED, arg=arg, polling=50, timeout=timeout_ms).json_value()
    return (done - (0.0 if reload else page.evaluate("window.__input"))) / 1000


def choose(page, label: str, option: str) -> None:
    """Pick the first option starting with `option` in the Streamlit selectbox labelled `label`: type it, then
    click that option once the list shows it (pressing Enter at once picks whatever the list showed before it
    filtered, on a slow machine)."""
    page.get_by_label(label, exact=True).click()
    page.keyboard.type(option)
    page.get_by_role("option").filter(has_text=re.compile("^" + re.escape(option))).first.click()
# Every selection control (segmented control, selectbox, multiselect) whose box or any of whose options reaches
# past the right edge of its column (or of the main area, outside columns): [label, right edge, column's edge].
OVERFLOWING = """() => {
  const out = [];
  const controls = '[data-testid="stButtonGroup"], [data-testid="stSelectbox"], [data-testid="stMultiSelect"]';
  for (const el of document.querySelectorAll(`[data-testid="stMain"] :is(${controls})`)) {
    const column = el.closest('[data-testid="stColumn"]') || el.closest('[data-testid="stMainBlockContainer"]');
    const edge = column.getBoundingClientRect().right;
    const right = Math.max(...[el, ...el.querySelectorAll('button, [role="button"]')]
      .map(e => e.getBoundingClientRect().right));
    if (right > edge + 1) out.push([el.innerText.split('\\n')[0], right, edge]);
  }
  return out;
}"""
# Every text of every drawn Plotly chart (titles, axis titles, tick labels, annotations, legend entries, point
# labels) that leaves its chart, and every pair of them whose boxes overlap by more than a pixel each way.
CHART_TEXT_CLASHES = """() => {
  const selectors = '.gtitle, [class^="g-"][class$="title"] text, [class*="tick"] > text, .annotation-text, ' +
    '.legendtext, .textpoint text';
  const out = [];
  document.querySelectorAll('[data-testid="stMain"] .js-plotly-plot').forEach((plot, i) => {
    const svg = plot.querySelector('.main-svg').getBoundingClientRect();
    const texts = [...new Set(plot.querySelectorAll(selectors))]
      .filter(t => t.textContent.trim() && t.getBoundingClientRect().width > 0)
      .map(t => ({text: t.textContent, box: t.getBoundingClientRect()}));
    for (const {text, box} of texts)
      if (box.left < svg.left - 1 || box.right > svg.right + 1 || box.top < svg.top - 1 || box.bottom > svg.bottom + 1)
        out.push(`chart ${i}: "${text}" leaves the chart`);
    for (let a = 0; a < texts.length; a++) for (let b = a + 1; b < texts.length; b++) {
      const p = texts[a].box, q = texts[b].box;
      const w = Math.min(p.right, q.right) - Math.max(p.left, q.left);
      const h = Math.min(p.bottom, q.bottom) - Math.max(p.top, q.top);
      if (w > 1 && h > 1) out.push(`chart ${i}: "${texts[a].text}" overlaps "${texts[b].text}"`);
    }
  });
  return out;
}"""
