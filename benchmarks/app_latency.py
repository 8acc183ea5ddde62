"""Latency of the app in a real browser, on a runs directory of realistic shape.

    .venv/bin/python benchmarks/app_latency.py            # needs /usr/bin/chromium (apt-get install -y chromium)
    .venv/bin/python benchmarks/app_latency.py --runs /tmp/bench-runs   # keep the runs directory; reuse it next time
    .venv/bin/python benchmarks/app_latency.py --runs /tmp/bench-runs --token_rows 10000000   # 10M-row tables

Builds 2 methods x 2 seeds x 5 checkpoints (20 checkpoints) with ~100k samples (150 math prompts, greedy + 4
temperatures + 3 beam widths, K=5), their aggregates, and per checkpoint the rewards of the 750 samples at t=1
and of ~400 corruption preference pairs (tests/app_fixtures.py: drawn samples and curves, every table and
summary.json by the real writers; 26 min to build with load average 11 on 2 cores). With --token_rows N, the
reward table of the samples at t=1 of each run's last checkpoint (the checkpoints the pages open on) is made to
hold N token rows: those samples repeated as the samples of further prompts and scored again by
analysis.rewards (tests/app_fixtures.py enlarge_rewards; 2 min at 1M, 12 min at 10M with load average 4), and
the Token rewards page is also measured on them (it opens on another data set). Then it serves the app
(`streamlit run`), and measures in chromium (a step that takes longer than app_fixtures.LOAD_MS fails):

- app start: a new browser loads the app from a new server (Streamlit's frontend, the server's first script
  run with its imports, Plotly's first load) until the Runs page is drawn.
- first render of each page with a cold cache: from another page, the app's Reload button empties every
  cache (st.cache_data), then a click on the page's sidebar link; until the script run has finished, the
  page has stopped changing and its charts are drawn.
- a typical interaction per page once its cache is warm (a widget changed back and forth, then timed 3 times,
  median): select a run, recolour tokens, switch the diversity axis, switch checkpoint, switch prompt.

Times run from the input event (click, key) to the last change of the page, by the browser's clock.

Goal: <= 2 s first render, <= 0.5 s per interaction. The last line is JSON with first_render_s (the slowest
page) and interaction_s (the slowest interaction), then the per-page figures.
"""

import argparse
import json
import os
import statistics
import sys
import tempfile
from pathlib import Path

import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.app_fixtures import (  # noqa: E402
    PAGES,
    TITLES,
    build_runs,
    choose,
    chromium,
    enlarge_rewards,
    serve_app,
    timed_run,
)


def shape(root: Path) -> dict:
    def rows(pattern):
        return sum(pq.read_metadata(p).num_rows for p in root.rglob(pattern))

    checkpoints = len(list(root.rglob("checkpoint-*")))
    largest = max(pq.read_metadata(p).num_rows for p in root.rglob("tokens.parquet"))
    return {
        "token_rows": rows("tokens.parquet"),
        "largest_token_table": largest,
        "samples": rows("samples-*.parquet"),
        "checkpoints": checkpoints,
    }


def select_first_run(page):
    """Toggle the selection of the first row of the runs table (its checkbox column)."""
    box = page.locator('[data-testid="stDataFrame"]').first.bounding_box()
    page.mouse.click(box["x"] + 18, box["y"] + 35 + 17)


def interactions(page) -> dict:
    """Per page: (URL path, [action to state A, action to state B])."""
    segment = lambda name: lambda: page.get_by_role("radio", name=name, exact=True).click()  # noqa: E731
    pick = lambda label, option: lambda: choose(page, label, option)  # noqa: E731
    return {
        "select a run": ("", [lambda: select_first_run(page)] * 2),
        "recolour tokens": ("token_rewards", [segment("V"), segment("reward")]),
        "switch diversity axis": ("quality_diversity", [pick("Diversity", d) for d in ("distinct_2", "self_bleu")]),
        "switch checkpoint": ("rewards_quality", [pick("Checkpoint", c) for c in ("mle/seed0@100", "mle/seed1@500")]),
        "switch prompt": ("samples", [pick("Prompt", "math-validation-1:"), pick("Prompt", "math-validation-0:")]),
    }  # fmt: skip


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=Path, default=None, help="build the runs directory here and keep it, or "
                        "reuse it if it holds one already (default: a temporary directory)")  # fmt: skip
    parser.add_argument("--token_rows", type=int, default=None, help="make the reward table of each run's last "
                        "checkpoint hold this many token rows (default: as built, ~35k)")  # fmt: skip
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        root = args.runs or tmp / "runs"
        if not (root.is_dir() and any(root.iterdir())):
            root.parent.mkdir(parents=True, exist_ok=True)
            build_runs(
                root, seeds=(0, 1), steps=(100, 200, 300, 400, 500), n_prompts=150, k=5,
                temperatures=(0.25, 0.5, 0.75, 1.0), beams=(2, 4, 8),
            )  # fmt: skip
        enlarged = None
        if args.token_rows:
            enlarged = enlarge_rewards(root, args.token_rows)[0].name  # the Token rewards page opens on another
        runs_shape = shape(root)
        print("runs directory:", runs_shape, flush=True)
        first, interaction = {}, {}
        with serve_app(root, tmp / "streamlit.log") as base, chromium(tmp / "profile", 1400, 1000) as context:
            page = context.new_page()
            start = timed_run(page, lambda: page.goto(base), reload=True, **PAGES[""])
            print(f"app start (s): {start:.3f}", flush=True)
            link = lambda title: page.locator('[data-testid="stSidebarNavLink"]', has_text=title)  # noqa: E731
            for url, title in TITLES.items():
                other = next(u for u in TITLES if u != url)
                timed_run(page, link(TITLES[other]).click, **PAGES[other])
                timed_run(page, page.get_by_role("button", name="Reload").click, **PAGES[other])
                first[title] = timed_run(page, link(title).click, **PAGES[url])
                if url == "token_rewards" and enlarged:  # then on the enlarged tables, their caches still cold
                    pick = lambda: choose(page, "Data", enlarged)  # noqa: E731
                    first[f"{title} ({enlarged})"] = timed_run(page, pick, **PAGES[url])
            print("first render, cold cache (s):", {k: round(v, 3) for k, v in first.items()}, flush=True)
            query = {"token_rewards": f"?data={enlarged}"} if enlarged else {}
            for name, (url, actions) in interactions(page).items():
                address = f"{base}/{url}{query.get(url, '')}"
                timed_run(page, lambda address=address: page.goto(address), reload=True, **PAGES[url])
                for action in actions:  # warm both states
                    timed_run(page, action, **PAGES[url])
                times = [timed_run(page, actions[i % 2], **PAGES[url]) for i in range(3)]
                interaction[name] = statistics.median(times)
                print(f"{name}: {[round(t, 3) for t in times]}", flush=True)
    result = {
        "largest_token_table": runs_shape["largest_token_table"],
        "first_render_s": round(max(first.values()), 3),
        "load_average_1min": round(os.getloadavg()[0], 2),  # other work on the machine slows every figure
        "app_start_s": round(start, 3),
        "interaction_s": round(max(interaction.values()), 3),
        "first_render_by_page_s": {k: round(v, 3) for k, v in first.items()},
        "interaction_median_s": {k: round(v, 3) for k, v in interaction.items()},
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
