"""The app without a browser: every page under streamlit's AppTest on the real chain's output (tests/conftest.py
`real_runs`), each figure compared with the one the analysis wrote or computes; the runs-directory confinement
under file-system call recording; and the pure table and chart builders on literal frames.

    .venv/bin/python -m pytest -q tests/test_app.py
"""

import base64
import ctypes
import html
import json
import math
import os
import re
import shutil
import struct
import subprocess
import urllib.parse
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import streamlit as st
from streamlit.testing.v1 import AppTest

from analysis import stats
from analysis import schema as S
from app import charts, data, tables
from app.safety import OutsideRunsDir, inside
from tests.conftest import HOSTILE, HOSTILE_TOKENS, RUNS, SCORED_HOSTILE, SWEEP, TRAIN

REPO = Path(__file__).resolve().parents[1]
MAIN = str(REPO / "app" / "main.py")
LAST = TRAIN["max_steps"]


def app(monkeypatch, runs_dir, page=None) -> AppTest:
    """The app started as `streamlit run app/main.py -- --runs-dir runs_dir`, run once (on `page`)."""
    monkeypatch.setattr(sys, "argv", [MAIN, "--runs-dir", str(runs_dir)])
    at = AppTest.from_file(MAIN, default_timeout=60).run()
    if page:
        at.switch_page(page).run()
    assert not at.exception, [e.message for e in at.exception]
    return at


def _decoded(obj):
    """Plotly's JSON with its typed arrays ({"dtype", "bdata", "shape"}: base64 of the numpy buffer) as lists."""
    if isinstance(obj, dict) and "bdata" in obj and "dtype" in obj:
        values = np.frombuffer(base64.b64decode(obj["bdata"]), dtype=obj["dtype"])
        return values.reshape([int(n) for n in str(obj.get("shape", len(values))).split(",")]).tolist()
    if isinstance(obj, dict):
        return {k: _decoded(v) for k, v in obj.items()}
    return [_decoded(v) for v in obj] if isinstance(obj, list) else obj


def figure(at, i: int) -> dict:
    """The i-th Plotly chart of the page as the browser receives it, arrays as lists."""
    return _decoded(json.loads(at.get("plotly_chart")[i].proto.spec))


def title(fig: dict) -> str:
    """A chart's title as one line (charts.py wraps long titles with <br>)."""
    return fig["layout"]["title"]["text"].replace("<br>", " ")


def select(at, label: str):
    return next(b for b in at.selectbox if b.label == label)


def rewards_file(real_runs, run: str, name: str, file: str) -> Path:
    return real_runs.checkpoints[run] / "rewards" / name / file


def summary(real_runs, run: str, name: str) -> dict:
    return json.loads(rewards_file(real_runs, run, name, S.SUMMARY_FILE).read_text())


# ---------------------------------------------------------------------------------------------------------------
# The chain


def test_chain_outputs_exist(real_runs):
    """train -> sweep -> rewards wrote what the app reads, for every run."""
    for run in RUNS:
        run_dir = real_runs.root / run
        assert (run_dir / "config.yaml").is_file() and (run_dir / "metrics.jsonl").is_file()
        steps = sorted(int(p.name.split("-")[1]) for p in run_dir.glob("checkpoint-*"))
        assert steps == [2, 4] and real_runs.checkpoints[run] == run_dir / f"checkpoint-{LAST}"
        sweep = real_runs.checkpoints[run] / "sweep" / SWEEP["split"]
        assert sorted(p.name for p in sweep.glob("*.parquet")) == [
            "aggregate.parquet", "samples-beam=2.parquet", "samples-greedy.parquet", "samples-t=1.parquet",
        ]  # fmt: skip
        names = ["math-preferences", SWEEP["split"], *([HOSTILE] if run in SCORED_HOSTILE else [])]
        for name in names:
            for file in (S.TOKENS_FILE, S.SEQUENCES_FILE, S.SUMMARY_FILE):
                assert rewards_file(real_runs, run, name, file).is_file(), (run, name, file)
        assert rewards_file(real_runs, run, "math-preferences", S.PAIRS_FILE).is_file()
    pairs = pd.read_parquet(rewards_file(real_runs, "mle/seed0", HOSTILE, S.PAIRS_FILE))
    assert (pairs[S.MARGIN] == 0).sum() == 1  # the tie: the same text on both sides
    tokens = pd.read_parquet(rewards_file(real_runs, "mle/seed0", HOSTILE, S.TOKENS_FILE))
    assert HOSTILE_TOKENS[0] in "".join(tokens.loc[tokens[S.EXAMPLE_ID] == 0, S.TOKEN])


# ---------------------------------------------------------------------------------------------------------------
# Pages on the chain's output


def test_runs_page(monkeypatch, real_runs):
    at = app(monkeypatch, real_runs.root)
    assert at.header[0].value == "Runs" and not at.warning
    table = at.dataframe[0].value
    assert list(table[S.RUN]) == sorted(RUNS)
    assert list(table["status"]) == ["finished"] * 4 and list(table["last_checkpoint"]) == [LAST] * 4
    # analysis.results.run_attributes: MLE is IQLearn at lam = 0; gamma is IQLearn's, blank for MLE
    assert list(table["lam"]) == ["0.1", "0.1", "0", "0"] and list(table["gamma"]) == ["0.99", "0.99", "", ""]
    curves = figure(at, 0)
    logged = {run: pd.read_json(real_runs.root / run / "metrics.jsonl", lines=True) for run in RUNS}
    keys = set().union(*(m.columns for m in logged.values()))
    assert [a["text"] for a in curves["layout"]["annotations"]] == [t for k, t in tables.CURVES.items() if k in keys]
    loss = [t for t in curves["data"] if t["xaxis"] == "x"]
    assert [t["name"] for t in loss] == ["iqlearn lam=0.1 seeds", "iqlearn lam=0.1", "mle seeds", "mle"]
    # the line is the mean over the two seeds of what train wrote to metrics.jsonl
    mle = pd.concat([logged["mle/seed0"], logged["mle/seed1"]])
    loss_by_step = mle.dropna(subset=["train/loss"]).groupby(S.STEP)["train/loss"].mean()
    # rel 1e-6, approx's default: float64 arithmetic on both sides
    assert loss[3]["x"] == loss_by_step.index.tolist() and loss[3]["y"] == pytest.approx(loss_by_step.tolist())
    assert len(at.get("download_button")) == 1


def test_token_rewards_page_escapes_tokens(monkeypatch, real_runs):
    at = app(monkeypatch, real_runs.root, "views/token_rewards.py")
    assert [b.value for b in at.selectbox][:3] == [HOSTILE, f"mle/seed0@{LAST}", f"iqlearn/seed0@{LAST}"]
    select(at, "Prompt (best match first)").set_value("h0").run()
    select(at, "Completion").set_value(0).run()  # example 0: the chosen side of pair 0, holding the hostile text
    assert not at.exception
    assert f"γ = {summary(real_runs, 'mle/seed0', HOSTILE)['gamma']:g}; EOS terminal" in at.caption[0].value
    assert HOSTILE_TOKENS[0] in at.code[0].value  # the prompt, shown verbatim
    bodies = [h.proto.body for h in at.get("html") if 'class="token-rewards"' in h.proto.body]
    assert len(bodies) == 2  # two checkpoints side by side
    for body, run in zip(bodies, SCORED_HOSTILE):
        assert "<script" not in body and "<img" not in body
        # the text of the spans holds no "<": unescaped, it is every token in order
        shown = html.unescape("".join(re.findall(r">([^<]*)</span>", body))).replace("↵\n", "\n")
        tokens = pd.read_parquet(rewards_file(real_runs, run, HOSTILE, S.TOKENS_FILE))
        assert shown == "".join(tokens.loc[tokens[S.EXAMPLE_ID] == 0, S.TOKEN])  # every token, in order
        assert HOSTILE_TOKENS[0] in shown and HOSTILE_TOKENS[1] in shown
    assert len(at.get("plotly_chart")) == 2
    assert "What changed from" in at.subheader[-1].value  # both checkpoints scored the same texts


def test_quality_diversity_page_shows_the_sweeps_standard_errors(monkeypatch, real_runs):
    at = app(monkeypatch, real_runs.root, "views/quality_diversity.py")
    select(at, "Quality").set_value("rouge1").run()
    pareto_fig, temperature = figure(at, 0), figure(at, 1)
    assert pareto_fig["layout"]["xaxis"]["title"]["text"] == "self_bleu (lower = more diverse)"
    names = ["iqlearn lam=0.1", "mle", "iqlearn lam=0.1 · beam", "mle · beam"]
    assert [t["name"] for t in temperature["data"]] == names
    written = pd.concat([
        pd.read_parquet(real_runs.checkpoints[run] / "sweep" / SWEEP["split"] / "aggregate.parquet").assign(run=run)
        for run in RUNS
    ])  # fmt: skip
    # the table shows each run's mean and SE as analysis/sweep.py wrote them
    shown = at.dataframe[-1].value
    assert shown.columns.tolist()[3:6] == ["rouge1_mean", "rouge1_se", S.N]
    assert len(shown) == len(written) and shown["rouge1_se"].gt(0).any()
    shown = shown.assign(**{S.RUN: shown[S.CHECKPOINT].str.split("@").str[0]})
    columns = ["rouge1_mean", "rouge1_se", S.N]
    np.testing.assert_array_equal(shown.set_index([S.RUN, S.DECODING])[columns].sort_index(),
                                  written.set_index([S.RUN, S.DECODING])[columns].sort_index())  # fmt: skip
    # which is the prompt-clustered SE of analysis/stats.py over the samples the sweep wrote
    samples = pd.read_parquet(real_runs.checkpoints["mle/seed0"] / "sweep" / SWEEP["split"] / "samples-t=1.parquet")
    row = shown[(shown[S.RUN] == "mle/seed0") & (shown[S.DECODING] == "t=1")].iloc[0]
    clustered = stats.mean_se(samples["rouge1"], samples[S.PROMPT_ID])
    # rel 1e-6, approx's default: float64 arithmetic on both sides
    assert (row["rouge1_mean"], row["rouge1_se"]) == pytest.approx(clustered)
    # the temperature lines' error bars are analysis/stats.py's SE over seeds of those means
    over_seeds = stats.aggregate_seeds(written, metrics=["rouge1_mean"])
    mle = over_seeds[(over_seeds[S.METHOD] == "mle") & over_seeds[S.KIND].isin(["greedy", "sample"])]
    line = next(t for t in temperature["data"] if t["name"] == "mle")
    # rel 1e-6, approx's default: float64 arithmetic on both sides
    assert line["y"] == pytest.approx(mle.sort_values(S.TEMPERATURE)["rouge1_mean"].tolist())
    # rel 1e-6, approx's default: float64 arithmetic on both sides
    assert line["error_y"]["array"] == pytest.approx(mle.sort_values(S.TEMPERATURE)["rouge1_mean_seed_se"].tolist())


def test_rewards_quality_page_shows_the_analysis_correlations(monkeypatch, real_runs):
    at = app(monkeypatch, real_runs.root, "views/rewards_quality.py")
    assert select(at, "Data").value == SWEEP["split"]
    seqs = pd.read_parquet(rewards_file(real_runs, "mle/seed0", SWEEP["split"], S.SEQUENCES_FILE))
    assert S.EXACT_MATCH_CALC in seqs.columns
    assert select(at, "Metric").options == S.quality_columns(seqs.columns, same_text=True)  # no exact_match_calc
    assert select(at, "Metric").value == "rouge1"  # the tiny model's exact match is all 0: rho undefined
    assert select(at, "Score").options == list(S.SCORES) and select(at, "Score").value == S.R
    select(at, "Checkpoint").set_value(f"mle/seed0@{LAST}").run()
    scatter, by_lam, by_score = figure(at, 0), figure(at, 1), figure(at, 2)
    written = {(run, row["reward"], row["metric"]): row for run in RUNS
               for row in summary(real_runs, run, SWEEP["split"])["correlations"]}  # fmt: skip
    mine = written[("mle/seed0", S.R, "rouge1")]
    rho = stats.rank_correlations(seqs[S.R], seqs["rouge1"])["spearman"]  # the analysis' function, again
    assert mine["spearman"] == pytest.approx(rho, abs=1e-12)
    expected = f"R vs rouge1: Spearman ρ = {rho:.3f} [{mine['spearman_low']:.3f}, {mine['spearman_high']:.3f}]"
    assert title(scatter) == f"{expected} (n = {len(seqs)})"
    subtitle = scatter["layout"]["title"]["subtitle"]["text"]
    assert subtitle.startswith("r_t = Q − γV(s_t+1), γ = 0.99<br>EOS terminal")
    # rel 1e-6, approx's default: float64 arithmetic on both sides
    assert sorted(scatter["data"][0]["y"]) == pytest.approx(sorted(seqs[S.R]))
    # per checkpoint against lam: summary.json's rho and its bootstrap interval, as error bars
    markers = [t for t in by_lam["data"] if t["mode"] == "markers"]
    assert sum(len(t["y"]) for t in markers) == len(RUNS)
    for t in markers:
        for (run, step, _), rho, high in zip(t["customdata"], t["y"], t["error_y"]["array"]):
            row = written[(run, S.R, "rouge1")]
            # rel 1e-6, approx's default: float64 arithmetic on both sides
            assert rho == pytest.approx(row["spearman"]) and high == pytest.approx(row["spearman_high"] - rho)
    # every reward beside every likelihood baseline, per checkpoint, as written
    assert [t["name"] for t in by_score["data"]] == list(S.SCORES)
    for t in by_score["data"]:
        runs = [x.split("@")[0] for x in t["x"]]
        rhos = [written[(run, t["name"], "rouge1")]["spearman"] for run in runs]
        assert t["y"] == pytest.approx([np.nan if r is None else r for r in rhos], nan_ok=True)  # null: undefined
    # a written correlation needs the switch to another score only: logp_sum's
    select(at, "Score").set_value(S.LOGP_SUM).run()
    rho = stats.rank_correlations(seqs[S.LOGP_SUM], seqs["rouge1"])["spearman"]
    assert title(figure(at, 0)).startswith(f"logp_sum vs rouge1: Spearman ρ = {rho:.3f} [")


def test_rewards_quality_page_counts_a_tie_as_half(monkeypatch, real_runs):
    at = app(monkeypatch, real_runs.root, "views/rewards_quality.py")
    assert select(at, "Preference data").value == HOSTILE
    accuracy = next(figure(at, i) for i in range(len(at.get("plotly_chart"))) if "ties ½" in title(figure(at, i)))
    assert [t["name"] for t in accuracy["data"]] == list(S.SCORES)  # each reward beside each likelihood baseline
    for bars in accuracy["data"]:
        score = bars["name"]
        assert bars["x"] == [f"iqlearn/seed0@{LAST}", f"mle/seed0@{LAST}"]
        for run, y, high, low in zip(["iqlearn/seed0", "mle/seed0"], bars["y"], bars["error_y"]["array"],
                                     bars["error_y"]["arrayminus"]):  # fmt: skip
            pairs = pd.read_parquet(rewards_file(real_runs, run, HOSTILE, S.PAIRS_FILE))
            written = summary(real_runs, run, HOSTILE)["preferences"][score]
            computed = stats.pairwise_accuracy(pairs[f"chosen_{score}"], pairs[f"rejected_{score}"])
            assert written["ties"] == computed["ties"] >= 1  # the pair whose two sides are the same text
            # rel 1e-6, approx's default: float64 arithmetic on both sides
            assert y == written["accuracy"] == pytest.approx(computed["accuracy"])
            margin = pairs[f"chosen_{score}"] - pairs[f"rejected_{score}"]
            # rel 1e-6, approx's default: float64 arithmetic on both sides
            assert y == pytest.approx((margin > 0).mean() + 0.5 * (margin == 0).mean())
            assert y != (margin > 0).mean()  # a tie counted as a loss would show less
            # rel 1e-6, approx's default: float64 arithmetic on both sides
            assert (y + high, y - low) == pytest.approx((written["high"], written["low"]))


def test_margin_histograms_are_the_pairs_of_the_checkpoints_picked(monkeypatch, real_runs):
    """The margins chart draws R(chosen) - R(rejected) of pairs.parquet, one histogram per checkpoint picked (by
    default the last of each method), and nothing when none is picked."""
    at = app(monkeypatch, real_runs.root, "views/rewards_quality.py")
    margins = lambda: next(figure(at, i) for i in range(len(at.get("plotly_chart")))  # noqa: E731
                           if title(figure(at, i)).startswith("margin distribution"))  # fmt: skip
    picked = next(w for w in at.multiselect if w.label == "Margins of")
    assert picked.value == [f"iqlearn/seed0@{LAST}", f"mle/seed0@{LAST}"]
    for trace in margins()["data"]:
        run = trace["name"].rsplit("@", 1)[0]
        written = pd.read_parquet(rewards_file(real_runs, run, HOSTILE, S.PAIRS_FILE))[S.MARGIN]
        assert list(trace["x"]) == written.tolist()
    assert [t["name"] for t in margins()["data"]] == picked.value
    picked.set_value([]).run()
    assert not at.exception and margins()["data"] == []


def test_token_view_marks_the_known_error(monkeypatch, real_runs):
    """A corrupted rejected completion of the built-in preference set: the token the corruption changed first is
    outlined and marked in the per-token chart, and the error-localisation figure is the written one."""
    name = "math-preferences"
    seqs = pd.read_parquet(rewards_file(real_runs, "mle/seed0", name, S.SEQUENCES_FILE))
    rejected = seqs.dropna(subset=[S.ERROR_POSITION]).iloc[0]
    at = app(monkeypatch, real_runs.root, "views/token_rewards.py")
    select(at, "Data").set_value(name).run()
    select(at, "Checkpoint").set_value(f"mle/seed0@{LAST}").run()
    select(at, "Prompt (best match first)").set_value(rejected[S.PROMPT_ID]).run()
    select(at, "Completion").set_value(rejected[S.EXAMPLE_ID]).run()
    assert not at.exception
    error = int(rejected[S.ERROR_POSITION])
    body = at.get("html")[0].proto.body
    spans = re.findall(r"<span([^>]*)>", body)
    assert [i for i, attrs in enumerate(spans) if 'class="known-error"' in attrs] == [error]
    assert f"position {error})" in " ".join(c.value for c in at.caption)
    assert [s["x0"] for s in figure(at, 0)["layout"]["shapes"]] == [error]
    with_pairs = app(monkeypatch, real_runs.root, "views/rewards_quality.py")
    select(with_pairs, "Preference data").set_value(name).run()
    localisation = figure(with_pairs, len(with_pairs.get("plotly_chart")) - 1)
    written = {run: summary(real_runs, run, name)["error_localisation"] for run in RUNS}
    for t in localisation["data"]:
        ranking = t["name"].split(" ")[0]
        assert t["y"] == [written[x.split("@")[0]][ranking]["mrr"] for x in t["x"]]


def test_samples_page(monkeypatch, real_runs):
    at = app(monkeypatch, real_runs.root, "views/samples.py")
    sweep = real_runs.checkpoints["mle/seed0"] / "sweep" / SWEEP["split"]
    greedy = pd.read_parquet(sweep / "samples-greedy.parquet")
    first = greedy[greedy[S.PROMPT_ID] == select(at, "Prompt").value].iloc[0]
    code = [c.value for c in at.code]
    assert code[:2] == [first[S.PROMPT], first[S.REFERENCE]]
    # the last checkpoint of one seed per method x (greedy: 1 sample, t=1: 3), plus calculator texts that differ
    assert len(code) - 2 >= 2 * (1 + SWEEP["samples"]) and first[S.COMPLETION] in code[2:]


def test_empty_runs_dir_says_what_to_run(monkeypatch, tmp_path):
    at = app(monkeypatch, tmp_path)
    assert "make demo" in at.info[0].value and "python -m analysis sweep" in at.info[0].value


def test_pages_import_no_torch(real_runs):
    """Every page runs without importing torch, transformers, evaluate or scipy (the app starts fast); the
    Findings page, with no grid under the runs directory, opens the first report shipped in docs/findings."""
    script = f"""
import sys
sys.argv = [{MAIN!r}, "--runs-dir", {str(real_runs.root)!r}]
from streamlit.testing.v1 import AppTest
at = AppTest.from_file({MAIN!r}, default_timeout=60).run()
for page in ("token_rewards", "quality_diversity", "rewards_quality", "samples", "findings"):
    at.switch_page(f"views/{{page}}.py").run()
    assert not at.exception, page
print(at.selectbox[0].value)
print(sorted(m for m in ("torch", "transformers", "evaluate", "scipy") if m in sys.modules))
"""
    out = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, check=True)
    shown, heavy = out.stdout.strip().splitlines()[-2:]
    assert heavy == "[]"
    shipped = sorted(p.parent.parent.name for p in (REPO / "docs" / "findings").glob("*/findings/findings.json"))
    assert shipped and shown == f"reports:{shipped[0]}"  # the first shipped report, rendered without torch


# ---------------------------------------------------------------------------------------------------------------
# Confinement


class FileSystemCalls:
    """Every file and directory the process opens or lists while recording, seen twice: by the interpreter's
    audit events ("open", "os.listdir", "os.scandir": Python's own calls, pathlib's globs) and by the kernel,
    inotify watches on every directory of `watched` (IN_OPEN, IN_ACCESS: also what pyarrow's C++ reads)."""

    IN_ACCESS, IN_OPEN = 0x1, 0x20
    _audited: list | None = None
    _hooked = False

    def __init__(self, watched: Path):
        if not FileSystemCalls._hooked:  # an audit hook cannot be removed: one for the whole test process
            sys.addaudithook(FileSystemCalls._hook)
            FileSystemCalls._hooked = True
        self.libc = ctypes.CDLL(None, use_errno=True)
        self.fd = self.libc.inotify_init1(os.O_NONBLOCK)
        assert self.fd >= 0, os.strerror(ctypes.get_errno())
        self.dirs = {}
        for d in [watched, *(p for p in watched.rglob("*") if p.is_dir() and not p.is_symlink())]:
            wd = self.libc.inotify_add_watch(self.fd, str(d).encode(), self.IN_ACCESS | self.IN_OPEN)
            assert wd >= 0, os.strerror(ctypes.get_errno())
            self.dirs[wd] = d
        self.kernel_events()  # drop what setting up the watches did

    @staticmethod
    def _hook(event, args):
        if FileSystemCalls._audited is not None and event in ("open", "os.listdir", "os.scandir") and args:
            path = args[0]
            if isinstance(path, (str, bytes, os.PathLike)):
                FileSystemCalls._audited.append((event, os.fsdecode(path)))

    def __enter__(self):
        FileSystemCalls._audited = []
        return self

    def __exit__(self, *exc):
        self.audited, FileSystemCalls._audited = FileSystemCalls._audited, None
        self.kernel = self.kernel_events()
        os.close(self.fd)

    def kernel_events(self) -> list[str]:
        """Paths of the inotify events since the last call (a directory's own events name the directory)."""
        events, buffer = [], b""
        while True:
            try:
                buffer += os.read(self.fd, 65536)
            except BlockingIOError:
                break
        while buffer:
            wd, _, _, size = struct.unpack_from("iIII", buffer)
            name = buffer[16 : 16 + size].rstrip(b"\0").decode()
            events.append(str(self.dirs[wd] / name) if name else str(self.dirs[wd]))
            buffer = buffer[16 + size :]
        return events


def page_text(at) -> list[str]:
    """The text of what a page shows: markdown, captions, code, alerts, options, tables and charts."""
    texts = [e.value for kind in ("markdown", "caption", "code", "warning", "info", "header") for e in at.get(kind)]
    texts += [str(b.options) for b in at.selectbox] + [str(m.options) for m in at.multiselect]
    texts += [d.value.to_csv() for d in at.dataframe] + [c.proto.spec for c in at.get("plotly_chart")]
    return texts


def hostile_runs_dir(real_runs, tmp: Path) -> tuple[Path, Path]:
    """(root, outside): `outside` a copy of the chain's runs; `root` two real runs with symlinks pointing into
    `outside` in place of a run, a checkpoint, a metrics.jsonl, a sweep/ folder, a rewards/<data> folder, a
    result file and a config.yaml."""
    outside, root = tmp / "outside", tmp / "root"
    shutil.copytree(real_runs.root, outside)
    for run in ("mle/seed0", "mle/seed1"):
        shutil.copytree(real_runs.root / run, root / run)
    ckpt = f"checkpoint-{LAST}"
    links = {
        "linked-run": "iqlearn/seed0",  # a run
        "mle/seed0/checkpoint-6": f"iqlearn/seed0/{ckpt}",  # a complete checkpoint, with sweep and rewards
        "mle/seed1/metrics.jsonl": "mle/seed1/metrics.jsonl",
        f"mle/seed1/{ckpt}/sweep": f"mle/seed1/{ckpt}/sweep",
        f"mle/seed0/{ckpt}/rewards/stolen": f"iqlearn/seed0/{ckpt}/rewards/{SWEEP['split']}",
        f"mle/seed0/{ckpt}/rewards/math-preferences/{S.PAIRS_FILE}": f"mle/seed1/{ckpt}/rewards/math-preferences/"
        f"{S.PAIRS_FILE}",
        "evil/config.yaml": "iqlearn/seed1/config.yaml",
    }  # fmt: skip
    for link, target in links.items():
        path = root / link
        if path.is_dir():
            shutil.rmtree(path)
        path.unlink(missing_ok=True)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.symlink_to(outside / target)
    return root, outside


def test_nothing_outside_the_root_is_listed_or_read(monkeypatch, real_runs, tmp_path):
    """Symlinks into another runs directory in place of a run, a checkpoint, a metrics.jsonl, a sweep folder, a
    result folder and file and a config: every page renders, nothing under the other directory is opened or
    listed (audit events and inotify), and each link is reported by its path under the root, not its target."""
    root, outside = hostile_runs_dir(real_runs, tmp_path)
    st.cache_data.clear()
    # no shipped reports: their root's confinement is tests/test_findings_app.py's
    monkeypatch.setattr(sys, "argv", [MAIN, "--runs-dir", str(root), "--reports-dir", str(tmp_path / "no-reports")])
    errors, shown = {}, []
    with FileSystemCalls(outside) as calls:
        at = AppTest.from_file(MAIN, default_timeout=60).run()
        for page in ("runs", "token_rewards", "quality_diversity", "rewards_quality", "samples", "findings"):
            if page != "runs":
                at.switch_page(f"views/{page}.py").run()
            errors[page] = [e.message for e in at.exception]
            shown += page_text(at)
    assert [p for _, p in calls.audited if p.startswith(str(outside))] == []
    assert calls.kernel == []
    assert any(p.startswith(str(root)) for _, p in calls.audited)  # the recording works: the root was read
    assert errors == {page: [] for page in errors}

    at = app(monkeypatch, root)
    ckpt = f"checkpoint-{LAST}"
    assert at.warning[0].value.startswith("Skipped 7 entries")
    assert sorted(at.code[0].value.splitlines()) == sorted([
        "evil/config.yaml: outside the runs directory",
        "linked-run: outside the runs directory, not followed",
        "mle/seed0/checkpoint-6: outside the runs directory",
        f"mle/seed0/{ckpt}/rewards/stolen: outside the runs directory",
        f"mle/seed0/{ckpt}/rewards/math-preferences/{S.PAIRS_FILE}: outside the runs directory",
        "mle/seed1/metrics.jsonl: outside the runs directory",
        f"mle/seed1/{ckpt}/sweep: outside the runs directory",
    ])  # fmt: skip
    assert not [text for text in shown if str(outside) in text] and "outside/" not in at.code[0].value
    table = at.dataframe[0].value
    assert list(table[S.RUN]) == ["mle/seed0", "mle/seed1"]  # seed1 listed without its metrics
    assert list(table["last_checkpoint"]) == [LAST, LAST]  # the outside checkpoint-6 is not a step
    band = next(t for t in figure(at, 0)["data"] if t["name"] == "mle")
    assert {n for (n,) in band["customdata"]} == {1}  # the curve of one seed: seed1 has no readable metrics


def test_inside_refuses_paths_outside_the_root_without_naming_the_target(tmp_path):
    root = tmp_path / "runs"
    (root / "a" / "b").mkdir(parents=True)
    (tmp_path / "secret").mkdir()
    (root / "escape").symlink_to(tmp_path / "secret")
    (root / "loop").symlink_to(root / "loop")
    assert inside(root, "a/b") == (root / "a" / "b").resolve()
    for bad in ("../../etc", "../secret", "escape", "escape/config.yaml", "/etc", "loop"):
        with pytest.raises(OutsideRunsDir) as refused:
            inside(root, bad)
        assert str(refused.value).startswith(f"{bad}: ") and "secret" not in str(refused.value).removeprefix(bad)
    assert data.metrics(root, "escape").empty  # a run's metrics.jsonl outside: no curves, no error


# ---------------------------------------------------------------------------------------------------------------
# Tables and charts on literal frames


def test_run_row_status_and_blank_settings():
    cfg = {"objective": "mle", "lam": 0.1, "gamma": 0.99, "beta": 0.0, "seed": 1, "model": "tiny", "data": "math",
           "max_steps": 100}  # fmt: skip
    row = tables.run_row("mle/seed1", cfg, [50, 100])
    assert (row[S.METHOD], row["status"], row["last_checkpoint"]) == ("mle", "finished", 100)
    # MLE is IQLearn at lam = 0: its config's lam (0.1) is an unused default; gamma and alpha do not apply
    assert row["lam"] == 0.0 and np.isnan(row["gamma"]) and np.isnan(row["alpha"]) and row["family"] == "mle"
    row = tables.run_row("iq", cfg | {"objective": "iqlearn", "alpha": 0.1}, [50])
    assert (row["lam"], row["gamma"], row["alpha"], row["status"]) == (0.1, 0.99, 0.1, "running/incomplete")
    assert tables.run_row("new", cfg, [])["status"] == "running/incomplete"


def test_seed_groups_tell_apart_runs_that_differ_in_more_than_seed():
    base = {"objective": "mle", "lam": 0.1, "gamma": 0.99, "beta": 0.0, "model": "tiny", "data": "math"}
    configs = {
        "a/s0": base | {"seed": 0, "output_dir": "a/s0"},
        "a/s1": base | {"seed": 1, "output_dir": "a/s1"},
        "b/s0": base | {"seed": 0, "output_dir": "b/s0", "model": "small"},
        "c/s0": base | {"seed": 0, "objective": "iqlearn"},
        "d/s0": base | {"seed": 0, "objective": "iqlearn", "output_dir": "elsewhere"},
        "e/x/s0": base | {"seed": 0, "objective": "iqlearn", "lr": 1, "data": "d", "beta": 1},
        "e/x/s1": base | {"seed": 1, "objective": "iqlearn", "lr": 1, "data": "d", "beta": 1},
    }
    assert tables.seed_groups(configs) == {
        "a/s0": "mle model=tiny", "a/s1": "mle model=tiny", "b/s0": "mle model=small",
        "c/s0": "iqlearn lam=0.1 [c/s0]", "d/s0": "iqlearn lam=0.1 [d/s0]",  # an experiment run twice
        "e/x/s0": "iqlearn lam=0.1 (e/x)", "e/x/s1": "iqlearn lam=0.1 (e/x)",  # 3 settings differ: by path
    }  # fmt: skip


def test_seed_band_and_long_metrics():
    nan = np.nan
    metrics = pd.DataFrame({S.STEP: [0, 10, 10, 20], "train/loss": [nan, 2, nan, 1.0], "eval/nll": [nan, nan, 3, nan]})
    long = tables.long_metrics(metrics)
    rows = [("train/loss", 10, 2.0), ("train/loss", 20, 1.0), ("eval/nll", 10, 3.0)]
    assert list(zip(long["key"], long[S.STEP], long["value"])) == rows
    curves = pd.DataFrame({"key": "k", S.METHOD: "m", S.SEED: [0, 1, 0], S.STEP: [10, 10, 20], "value": [1, 3, 5.0]})
    band = tables.seed_band(curves)
    assert band.to_dict("list") == {"key": ["k", "k"], S.METHOD: ["m", "m"], S.STEP: [10, 20], "mean": [2.0, 5.0],
                                    "lo": [1.0, 5.0], "hi": [3.0, 5.0], "n_seeds": [2, 1]}  # fmt: skip


def test_token_differences_compare_only_identical_completions():
    a = pd.DataFrame({S.EXAMPLE_ID: [0, 0, 1, 2, 2], S.POSITION: [0, 1, 0, 0, 1], S.TOKEN_ID: [5, 6, 7, 5, 9],
                      S.TOKEN: ["x", "<b>", "y", "x", "z"], S.REWARD: [1.0, 2.0, 0.0, 0.5, 1.0],
                      S.LOGP: [-1.0, -2.0, -3.0, -0.5, -0.25]})  # fmt: skip
    # example 1 is another completion in b (token 8), example 2 a shorter one (its prefix): neither compared
    b = a.assign(**{S.TOKEN_ID: [5, 6, 8, 5, 9], S.REWARD: [1.5, -1.0, 5.0, 0.0, 0.0],
                    S.LOGP: [-0.5, -2.5, 0.0, 0.0, 0.0]}).drop(index=4)  # fmt: skip
    diff = tables.token_differences(a, b)
    assert diff.to_dict("list") == {
        S.EXAMPLE_ID: [0, 0], S.POSITION: [0, 1], S.TOKEN: ["x", "<b>"], "reward_a": [1.0, 2.0],
        "reward_b": [1.5, -1.0], "logp_a": [-1.0, -2.0], "logp_b": [-0.5, -2.5], "d_reward": [0.5, -3.0],
        "d_logp": [0.5, -0.5],
    }  # fmt: skip
    assert tables.largest_changes(diff, S.REWARD)[S.POSITION].tolist() == [1, 0]  # |-3| before |0.5|
    assert tables.largest_changes(diff, S.LOGP)[S.POSITION].tolist() == [0, 1]  # a tie keeps position order


def test_token_changes_keep_the_whole_comparison_and_one_example_is_its_rows(real_runs):
    """What the Token rewards page shows of two checkpoints' token tables: data.token_changes holds the largest
    changes and token moves of the whole tables' comparison, and one completion compared alone (the rows the
    page reads for it) gives that comparison's rows of the completion."""
    name, runs = "math-preferences", ("mle/seed0", "iqlearn/seed1")
    a, b = (pd.read_parquet(rewards_file(real_runs, run, name, S.TOKENS_FILE)) for run in runs)
    whole = tables.token_differences(a, b)
    assert whole[S.EXAMPLE_ID].nunique() > 1  # the same completions, scored by both
    where = [(run, LAST) for run in runs]
    compared, changes = data.token_changes(real_runs.root, *where, name)
    assert compared == whole[S.EXAMPLE_ID].nunique()
    for q in tables.DIFFERENCES:
        largest, moves = changes[q]
        pd.testing.assert_frame_equal(largest, tables.largest_changes(whole, q))
        pd.testing.assert_frame_equal(moves, tables.token_moves(whole, q))
    for example in a[S.EXAMPLE_ID].unique():
        one = tables.token_differences(*(data.tokens(real_runs.root, *w, name, example) for w in where))
        expected = whole[whole[S.EXAMPLE_ID] == example].reset_index(drop=True)
        pd.testing.assert_frame_equal(one, expected)
    assert data.token_rows(real_runs.root, *where[0], name) == len(a)


def test_token_moves_average_each_token_texts_changes():
    diff = pd.DataFrame({S.TOKEN: ["x", "x", "y", "y", "y", "z"], "d_reward": [1.0, -3.0, 0.5, 0.5, np.nan, 9.0]})
    moves = tables.token_moves(diff, S.REWARD)  # z seen once: left out; y's NaN (no next state) not counted
    assert moves.to_dict("list") == {S.TOKEN: ["x", "y"], "n": [2, 2], "mean d_reward": [-1.0, 0.5],
                                     "mean |d_reward|": [2.0, 0.5]}  # fmt: skip


def test_pareto_points_average_seeds_and_mark_the_front():
    base = {S.METHOD: "A", S.STEP: 1, S.KIND: "sample", S.BEAMS: 1}
    agg = pd.DataFrame([
        base | {S.DECODING: "t=1", S.TEMPERATURE: 1.0, S.SEED: 0, "q_mean": 0.4, S.SELF_BLEU: 10.0},
        base | {S.DECODING: "t=1", S.TEMPERATURE: 1.0, S.SEED: 1, "q_mean": 0.6, S.SELF_BLEU: 10.0},
        base | {S.DECODING: "t=0.5", S.TEMPERATURE: 0.5, S.SEED: 0, "q_mean": 0.7, S.SELF_BLEU: 20.0},
        base | {S.DECODING: "beam=4", S.KIND: "beam", S.BEAMS: 4, S.TEMPERATURE: 0.0, S.SEED: 0, "q_mean": 0.6,
                S.SELF_BLEU: 30.0},
        base | {S.DECODING: "greedy", S.KIND: "greedy", S.TEMPERATURE: 0.0, S.SEED: 0, "q_mean": 0.9,
                S.SELF_BLEU: np.nan},
    ])  # fmt: skip
    points = tables.pareto_points(agg, "q_mean", S.SELF_BLEU).set_index(S.DECODING)
    # rel 1e-6, approx's default: float64 arithmetic on both sides
    assert points.loc["t=1", "q_mean"] == pytest.approx(0.5)
    assert points.loc["t=1", S.seed_se_col("q_mean")] == pytest.approx(0.1)  # std 0.1414 / sqrt(2)
    assert points[S.ON_FRONT].to_dict() == {"beam=4": False, "t=0.5": True, "t=1": True}  # greedy: no Self-BLEU

    fig = charts.pareto_figure(points.reset_index(), "q_mean", S.SELF_BLEU)
    assert [t.name for t in fig.data] == ["A · beam", "A · sample", "A front"]
    assert (fig.data[0].marker.symbol, fig.data[1].marker.symbol) == ("square", "diamond")
    # rel 1e-6, approx's default: float64 arithmetic on both sides
    assert list(fig.data[2].x) == [10.0, 20.0] and list(fig.data[2].y) == pytest.approx([0.5, 0.7])
    assert list(fig.data[1].x) == [20.0, 10.0]  # t=0.5 (one seed: no SE), t=1
    # rel 1e-6, approx's default: float64 arithmetic on both sides
    assert np.isnan(fig.data[1].error_y.array[0]) and fig.data[1].error_y.array[1] == pytest.approx(0.1)
    assert fig.layout.xaxis.title.text == "self_bleu (lower = more diverse)" and fig.layout.yaxis.title.text == "q_mean"
    # a later step: a front of its own, each step's named and dashed apart
    later = agg.assign(**{S.STEP: 2, "q_mean": agg["q_mean"] + 0.2})
    both = tables.pareto_points(pd.concat([agg, later]), "q_mean", S.SELF_BLEU)
    assert both.groupby(S.STEP)[S.ON_FRONT].sum().to_dict() == {1: 2, 2: 2}  # step 2 does not hide step 1's front
    fronts = [t for t in charts.pareto_figure(both, "q_mean", S.SELF_BLEU).data if t.name.endswith("front")]
    assert [(t.name, t.line.dash) for t in fronts] == [("A @ 1 front", "dot"), ("A @ 2 front", "dash")]


def test_temperature_figure_lines_and_beam_markers():
    points = pd.DataFrame({
        S.METHOD: ["A"] * 5, S.STEP: [1] * 5, S.KIND: ["sample", "greedy", "sample", "beam", "beam"],
        S.DECODING: ["t=1", "greedy", "t=0.5", "beam=4", "beam=2"], S.TEMPERATURE: [1.0, 0.0, 0.5, 0.0, 0.0],
        S.BEAMS: [1, 1, 1, 4, 2], "q": [0.2, 0.6, 0.4, 0.7, 0.5], "q_seed_se": [0.01, 0.02, 0.03, 0.04, 0.05],
    })  # fmt: skip
    fig = charts.temperature_figure(points, "q")
    line, beam = fig.data
    assert (line.name, list(line.x), list(line.y)) == ("A", [0.0, 0.5, 1.0], [0.6, 0.4, 0.2])  # sorted by T
    assert list(line.error_y.array) == [0.02, 0.03, 0.01] and line.xaxis == "x2"  # the right panel
    # beam search in the left panel, by width: the widths are the axis' ticks, no text beside the points
    assert (beam.name, list(beam.x), list(beam.y), beam.xaxis) == ("A · beam", ["beam=2", "beam=4"], [0.5, 0.7], "x")
    assert beam.text is None and list(fig.layout.xaxis.categoryarray) == ["beam=2", "beam=4"]
    only_sampling = charts.temperature_figure(points[points[S.KIND] != "beam"], "q")
    assert [t.xaxis for t in only_sampling.data] == ["x"]  # one panel when no beam search was swept
    baselines = pd.DataFrame({S.BASELINE: ["first_k_words", "best_constant"], "q": [0.3, 0.1]})
    with_baselines = charts.temperature_figure(points, "q", baselines)
    lines = sorted((shape.y0, shape.xref) for shape in with_baselines.layout.shapes)
    assert lines == [(0.1, "x domain"), (0.1, "x2 domain"), (0.3, "x domain"), (0.3, "x2 domain")]  # both panels
    named = [a.text for a in with_baselines.layout.annotations if a.text.startswith("baseline")]
    assert sorted(named) == ["baseline: best_constant", "baseline: first_k_words"]  # named once each


def test_temperature_figure_draws_a_dotted_line_per_top_p_and_min_p_filter():
    points = pd.DataFrame({
        S.METHOD: ["A"] * 5, S.STEP: [1] * 5, S.KIND: ["greedy", "sample", "sample", "sample", "sample"],
        S.DECODING: ["greedy", "t=0.5", "t=1", "t=0.5,top_p=0.9", "t=1,top_p=0.9"],
        S.TEMPERATURE: [0.0, 0.5, 1.0, 0.5, 1.0], S.TOP_P: [1.0, 1.0, 1.0, 0.9, 0.9], S.MIN_P: 0.0, S.BEAMS: 1,
        "q": [0.6, 0.4, 0.2, 0.5, 0.45], "q_seed_se": 0.01,
    })  # fmt: skip
    unfiltered, nucleus = charts.temperature_figure(points, "q").data  # greedy on the unfiltered line only
    assert (nucleus.name, list(nucleus.x), list(nucleus.y), nucleus.line.dash) == ("A · top_p=0.9", [0.5, 1.0],
                                                                                  [0.5, 0.45], "dot")  # fmt: skip
    assert (unfiltered.name, list(unfiltered.x), unfiltered.line.dash) == ("A", [0.0, 0.5, 1.0], "solid")


def test_curves_figure_panels_bands_and_means():
    bands = pd.DataFrame({"key": ["b", "b", "a"], S.METHOD: "m", S.STEP: [10, 20, 10], "mean": [2.0, 5.0, 7.0],
                          "lo": [1.0, 4.0, 7.0], "hi": [3.0, 6.0, 7.0], "n_seeds": [2, 2, 1]})  # fmt: skip
    fig = charts.curves_figure(bands, {"a": "A", "b": "B", "c": "C"})  # c was not logged: no panel
    assert [a.text for a in fig.layout.annotations] == ["A", "B"]
    a_fill, a_mean, b_fill, b_mean = fig.data
    assert (a_mean.xaxis, b_mean.xaxis, a_mean.showlegend, b_mean.showlegend) == ("x", "x2", True, False)
    assert list(b_fill.x) == [10, 20, 20, 10] and list(b_fill.y) == [3.0, 6.0, 4.0, 1.0] and b_fill.fill == "toself"
    assert (b_mean.name, list(b_mean.y)) == ("m", [2.0, 5.0])


def test_tokens_html_escapes_and_colours():
    tokens = pd.DataFrame({S.POSITION: [1, 0], S.TOKEN: [HOSTILE_TOKENS[0], " a\"b"], S.Q: [0.0, 1.0], S.V: [0.0, 0.5],
                           S.V_NEXT: [0.0, 0.0], S.LOGP: [-0.5, -0.1], S.REWARD: [-1.0, 2.0]})  # fmt: skip
    html = charts.tokens_html(tokens, S.REWARD)
    assert "<script" not in html and "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert html.index("a&quot;b") < html.index("&lt;script")  # sorted by position
    assert "background:rgba(33,102,172,0.850)" in html  # reward 2 = the largest |value|: full opacity, blue
    assert "background:rgba(178,24,43,0.425)" in html  # reward -1: half of it, red
    assert "running R=2.000" in html and "running R=1.000" in html
    truncated = tokens.assign(**{S.REWARD: [np.nan, 2.0]})  # the cut last token has no reward
    html = charts.tokens_html(truncated, S.REWARD)
    assert "background:rgba(33,102,172,0.000)" in html and html.count("running R=2.000") == 2


def test_summary_tables_read_the_written_figures():
    """summary.json as tables: null (an undefined correlation) becomes NaN; one row per score; the rule names
    every gamma and the terminal rule as written."""
    corr = {"reward": "R", "metric": "em", "n": 4, "spearman": None, "spearman_low": None, "spearman_high": None,
            "kendall": None, "kendall_low": None, "kendall_high": None}  # fmt: skip
    acc = {"accuracy": 0.625, "low": 0.3, "high": 0.9, "n": 4, "wins": 2, "ties": 1, "losses": 1, "auc": 0.7}
    prefs = {S.R: acc | {"margin": {"mean": 1.0}}, S.LOGP_SUM: acc | {"accuracy": 0.25}}
    best = {"prompts": 2, "n": 3.0, **dict.fromkeys(S.SCORES, 0.5), "random": 0.25, "oracle": 1.0, "gain": 0.25}
    terminal = "EOS terminal (V=0 after it)"
    summaries = {
        ("a", 5): {"gamma": 0.99, "terminal": terminal, "best_of_n": {"t=1/em": best},
                   "correlations": [corr, corr | {"metric": "r1", "spearman": 0.5}]},
        ("b", 5): {"gamma": 1.0, "terminal": terminal, "preferences": prefs,
                   "preferences_by_source": {"carried": prefs},
                   "error_localisation": {"n": 3, "reward": {"hit@1": 1 / 3, "hit@3": 1.0, "mrr": 0.5}}},
    }  # fmt: skip
    c = tables.summary_correlations(summaries)
    assert c[[S.RUN, S.STEP, "metric"]].values.tolist() == [["a", 5, "em"], ["a", 5, "r1"]]
    assert np.isnan(c["spearman"].iloc[0]) and c["spearman"].iloc[1] == 0.5 and c["n"].dtype == float
    p = tables.summary_preferences(summaries)
    rows = [["b", S.R, 0.625, 1.0], ["b", S.LOGP_SUM, 0.25, 1.0]]
    assert p[[S.RUN, "score", "accuracy", "ties"]].values.tolist() == rows
    assert tables.summary_preferences_by_source(summaries)[S.PAIR_SOURCE].tolist() == ["carried", "carried"]
    b = tables.summary_best_of_n(summaries)
    assert b[["decoding", "metric", S.R, S.LOGP_SUM, "oracle"]].values.tolist() == [["t=1", "em", 0.5, 0.5, 1.0]]
    loc = tables.summary_error_localisation(summaries)
    assert loc[[S.RUN, "ranking", "n", "hit@1", "mrr"]].values.tolist() == [["b", "reward", 3.0, 1 / 3, 0.5]]
    assert tables.reward_rule(summaries) == f"r_t = Q − γV(s_t+1), γ = 0.99 or 1 (per checkpoint); {terminal}"


def test_reward_and_preference_figures():
    seqs = pd.DataFrame({S.R: [1.0, 2.0, 3.0], "em": [0.0, 1.0, 1.0], "rouge1": [0.1, 0.5, 0.2]})
    corr = {"spearman": 0.5, "spearman_low": 0.25, "spearman_high": 0.75, "n": 3.0}
    box = charts.reward_quality_figure(seqs, S.R, "em", corr).data[0]
    assert (box.type, list(box.x), box.boxpoints) == ("box", [0.0, 1.0, 1.0], "all")  # a 0/1 metric: boxes
    scatter = charts.reward_quality_figure(seqs, S.R, "rouge1", corr, "γ = 1")
    assert scatter.data[0].type == "scatter"
    assert scatter.layout.title.text == "R vs rouge1: Spearman ρ = 0.500 [0.250,<br>0.750] (n = 3)"  # wrapped
    assert scatter.layout.title.subtitle.text == "γ = 1"
    assert charts.points_caption(seqs, "em") == ""  # every point drawn
    n = charts.SHOWN_POINTS + 1
    many = pd.DataFrame({S.R: np.arange(float(n)), "rouge1": np.linspace(0, 1, n)})
    points = charts.reward_quality_figure(many, S.R, "rouge1", corr).data[0]
    assert points.type == "scatter" and len(points.y) == charts.SHOWN_POINTS
    assert set(points.y) < set(many[S.R]) and list(points.y) == sorted(points.y)  # a subset, in the table's order
    assert charts.points_caption(many, "rouge1") == (
        f"2,000 of {n:,} points shown (a random subset); ρ over all; the CSV holds every point.")
    undefined = charts.reward_quality_figure(seqs, S.R, "em", corr | {"spearman": np.nan})
    assert title(undefined.to_plotly_json()) == "R vs em: Spearman ρ = n/a (a side is constant) (n = 3)"

    acc = pd.DataFrame({S.CHECKPOINT: ["a@1", "a@1"], "score": [S.R, S.LOGP_SUM], "accuracy": [0.75, 0.5],
                        "low": [0.3006, 0.2], "high": [0.9544, 0.8], "n": [4, 4], "ties": [1, 0]})  # fmt: skip
    r, logp = charts.accuracy_figure(acc).data
    assert charts.accuracy_figure(acc, "a; <b>; c").layout.title.subtitle.text == "a<br>&lt;b&gt;; c"  # escaped
    assert (r.name, logp.name, list(logp.y)) == (S.R, S.LOGP_SUM, [0.5])
    assert list(r.error_y.array) == pytest.approx([0.2044])  # high - accuracy
    assert list(r.error_y.arrayminus) == pytest.approx([0.4494])  # accuracy - low

    corr = pd.DataFrame({S.RUN: ["m0", "m1", "i0"], S.METHOD: ["mle", "mle", "iq"], S.STEP: 5, S.LAM: [0.0, 0.0, 0.1],
                         "spearman": [0.1, -0.1, 0.6], "spearman_low": [0.0, -0.3, 0.5],
                         "spearman_high": [0.2, 0.0, 0.9], "n": 10})  # fmt: skip
    mean, iq, mle = charts.correlation_lam_figure(corr).data
    # rel 1e-6, approx's default: float64 arithmetic on both sides
    assert (mean.name, list(mean.x), list(mean.y)) == ("step 5: mean", [0.0, 0.1], pytest.approx([0.0, 0.6]))
    assert (iq.name, list(iq.y), mle.name, list(mle.y)) == ("iq", [0.6], "mle", [0.1, -0.1])
    # rel 1e-6, approx's default: float64 arithmetic on both sides
    assert list(iq.error_y.array) == pytest.approx([0.3]) and list(mle.error_y.arrayminus) == pytest.approx([0.1, 0.2])


def plotly_box(values) -> dict:
    """The box Plotly draws over `values` with its defaults, as plotly.js computes it (src/traces/box/calc.js):
    Lib.interp(sorted, p) at position p·n − ½ for the quartiles and the median, and the fences at the most
    extreme values within 1.5 IQR of the box, the box's edge where none is."""
    v = sorted(values)
    n = len(v)

    def interp(p):
        at = p * n - 0.5
        if at < 0:
            return v[0]
        if at > n - 1:
            return v[-1]
        frac = at % 1
        return frac * v[math.ceil(at)] + (1 - frac) * v[math.floor(at)]

    q1, q3 = interp(0.25), interp(0.75)
    low = min(x for x in v if x >= q1 - 1.5 * (q3 - q1))
    high = max(x for x in v if x <= q3 + 1.5 * (q3 - q1))
    return {"n": n, "q1": q1, "median": interp(0.5), "q3": q3, "lowerfence": min(q1, low), "upperfence": max(q3, high)}


def test_box_statistics_are_plotlys_boxes():
    # by hand: 1, 2, 3, 4, 100: q1 at position 0.75 (1.75), median 3, q3 at 3.25 (4 + 0.25 · 96 = 28); IQR
    # 26.25, so the fences reach -37.625 and 67.375: the lower at 1, the upper at the box's edge, 28 (no value
    # lies between 28 and 67.375; 100 lies outside)
    five = pd.DataFrame({"x": 0.0, S.R: [4.0, 100.0, 1.0, 3.0, 2.0]})
    box = tables.box_statistics(five, "x", S.R).iloc[0]
    assert box[list(tables.BOX_STATISTICS)].tolist() == [5, 1.75, 3.0, 28.0, 1.0, 28.0]
    # and on skewed, tied and tiny groups, with a NaN left out as Plotly leaves it out
    rng = np.random.default_rng(3)
    values = np.r_[rng.exponential(size=501), np.round(rng.normal(size=400), 1), [7.0], [np.nan]]
    frame = pd.DataFrame({"x": np.r_[np.zeros(501), np.ones(400), [2.0], [1.0]], S.R: values})
    for (_, g), (_, row) in zip(frame.groupby("x"), tables.box_statistics(frame, "x", S.R).iterrows()):
        # rel 1e-6, approx's default: the same float64 interpolation on both sides
        assert row[list(tables.BOX_STATISTICS)].to_dict() == pytest.approx(plotly_box(g[S.R].dropna()))


def test_a_large_box_figure_draws_a_subset_and_boxes_over_every_point():
    """Above SHOWN_POINTS, the 0/1 figure sends each box as its statistics over ALL points (not only the drawn
    ones), draws a seeded subset of SHOWN_POINTS, and its caption counts both."""
    n = 3 * charts.SHOWN_POINTS + 7
    rng = np.random.default_rng(1)
    seqs = pd.DataFrame({"em": (rng.random(n) < 0.3).astype(float), S.R: rng.gamma(2.0, size=n)})
    corr = {"spearman": 0.5, "spearman_low": 0.25, "spearman_high": 0.75, "n": float(n)}
    box, points = charts.reward_quality_figure(seqs, S.R, "em", corr).data
    assert (box.type, box.y, points.type, len(points.y)) == ("box", None, "scatter", charts.SHOWN_POINTS)
    assert list(box.x) == [0.0, 1.0] and box.width == charts.BOX_WIDTH
    for i, value in enumerate(box.x):
        every = plotly_box(seqs.loc[seqs["em"] == value, S.R])
        drawn = {k: box[k][i] for k in ("q1", "median", "q3", "lowerfence", "upperfence")}
        # rel 1e-6, approx's default: the same float64 interpolation on both sides
        assert drawn == pytest.approx({k: every[k] for k in drawn})
    again = charts.reward_quality_figure(seqs, S.R, "em", corr).data[1]
    assert list(again.y) == list(points.y) and set(points.y) < set(seqs[S.R])  # seeded: the same subset
    jitter = np.asarray(points.x) - seqs["em"].to_numpy()[charts.shown_points(n)]
    assert np.abs(jitter).max() <= 0.2 * charts.BOX_WIDTH
    assert charts.points_caption(seqs, "em") == (
        f"2,000 of {n:,} points shown (a random subset); boxes over all; the CSV holds every point.")


def test_token_figure_shows_the_chosen_quantity_and_running_reward():
    tokens = pd.DataFrame({S.POSITION: [0, 1], S.TOKEN: ["a", "<b>"], S.Q: [1.0, 2.0], S.V: [0.5, 0.5],
                           S.V_NEXT: [0.5, 0.0], S.LOGP: [-0.5, -1.0], S.REWARD: [0.5, 2.0]})  # fmt: skip
    fig = charts.token_figure(tokens, S.V)
    assert [(t.name, t.visible) for t in fig.data] == [
        (S.V, True), (charts.RUNNING_R, True), (S.Q, "legendonly"), (S.V_NEXT, "legendonly"),
        (S.LOGP, "legendonly"), (S.REWARD, "legendonly"),
    ]  # fmt: skip
    assert list(fig.data[1].y) == [0.5, 2.5]
    assert list(fig.data[0].customdata) == ["&#x27;a&#x27;", "&#x27;&lt;b&gt;&#x27;"]  # repr, escaped for hover


# ---------------------------------------------------------------------------------------------------------------
# Links that share a view


def opened_from_link(monkeypatch, runs_dir, page: str, query: dict) -> AppTest:
    """The app opened on `page` by a link whose query parameters are `query` (a fresh session)."""
    monkeypatch.setattr(sys, "argv", [MAIN, "--runs-dir", str(runs_dir)])
    at = AppTest.from_file(MAIN, default_timeout=60)
    at.switch_page(page)
    at.query_params.update(query)
    at.run()
    assert not at.exception, [e.message for e in at.exception]
    return at


def selections(at) -> dict:
    """Every selection widget of the page by label: selectboxes, multiselects and segmented controls."""
    found = {b.label: b.value for b in at.selectbox} | {m.label: m.value for m in at.multiselect}
    return found | {g.label: g.value for g in at.get("button_group")}


def shared_link(at) -> str:
    """The address the page's "Copy link" popover shows (under AppTest, without origin: a path and a query)."""
    return at.sidebar.code[-1].value


def test_a_link_opens_the_same_runs_data_example_and_colouring(monkeypatch, real_runs):
    """A link naming another checkpoint, no partner, another sequence score, a prompt, a completion and log π as
    the colour opens the token view on exactly those: the widgets show them and the tokens drawn are that
    example's under that checkpoint."""
    name = "math-preferences"
    seqs = pd.read_parquet(rewards_file(real_runs, "iqlearn/seed1", name, S.SEQUENCES_FILE))
    wanted = seqs.dropna(subset=[S.ERROR_POSITION]).iloc[-1]  # a rejected side, far from the default first
    query = {"data": name, "checkpoint": f"iqlearn/seed1@{LAST}", "beside": "none", "score": S.LOGP_SUM,
             "prompt": wanted[S.PROMPT_ID], "example": str(wanted[S.EXAMPLE_ID]), "colour": S.LOGP}  # fmt: skip
    at = opened_from_link(monkeypatch, real_runs.root, "views/token_rewards.py", query)
    shown = selections(at)
    assert shown["Data"] == name and shown["Checkpoint"] == f"iqlearn/seed1@{LAST}"
    assert shown["Side by side with"] == "none" and shown["Sequence score"] == S.LOGP_SUM
    assert shown["Prompt (best match first)"] == wanted[S.PROMPT_ID]
    assert shown["Completion"] == wanted[S.EXAMPLE_ID] and shown["Colour by"] == S.LOGP
    tokens = pd.read_parquet(rewards_file(real_runs, "iqlearn/seed1", name, S.TOKENS_FILE))
    tokens = tokens[tokens[S.EXAMPLE_ID] == wanted[S.EXAMPLE_ID]].sort_values(S.POSITION)
    line = figure(at, 0)["data"][0]  # the per-token chart's first line: the colouring quantity
    # rel 1e-6, approx's default: float64 arithmetic on both sides
    assert line["name"] == S.LOGP and line["y"] == pytest.approx(tokens[S.LOGP].tolist())
    assert at.query_params["example"] == str(wanted[S.EXAMPLE_ID])  # the URL keeps what the link named
    assert shared_link(at).startswith("/token_rewards?data=math-preferences&checkpoint=iqlearn%2Fseed1%404")


@pytest.mark.parametrize("page, changes", [
    ("views/runs.py", {}),
    ("views/token_rewards.py",
     {"Data": SWEEP["split"], "Checkpoint": f"iqlearn/seed1@{LAST}", "Side by side with": "none"}),
    ("views/quality_diversity.py", {"Quality": "rouge1", "Diversity": S.DISTINCT_2}),
    ("views/rewards_quality.py", {"Score": S.LOGP_MEAN, "Checkpoint": f"iqlearn/seed1@{LAST}", "Margins of": []}),
    ("views/samples.py", {"Decodings": ["beam=2"], "Checkpoints": [f"mle/seed1@{LAST}"]}),
])  # fmt: skip
def test_the_copied_link_reopens_every_selection(monkeypatch, real_runs, page, changes):
    """Change selections on a page, take the address its "Copy link" shows, open it in a fresh session: every
    selection widget of the page shows the same value."""
    at = app(monkeypatch, real_runs.root, page)
    for label, value in changes.items():
        widget = next(w for w in [*at.selectbox, *at.multiselect] if w.label == label)
        widget.set_value(value).run()
        assert not at.exception
    before = selections(at)
    assert all(before[label] == value for label, value in changes.items())
    link = shared_link(at)
    assert link.startswith(f"/{Path(page).stem if page != 'views/runs.py' else ''}")
    query = {}
    for key, value in [pair.split("=", 1) for pair in link.partition("?")[2].split("&") if pair]:
        query.setdefault(urllib.parse.unquote_plus(key), []).append(urllib.parse.unquote_plus(value))
    again = opened_from_link(monkeypatch, real_runs.root, page, query)
    assert selections(again) == before and not again.warning


def test_a_link_naming_what_is_not_here_says_so(monkeypatch, real_runs):
    at = opened_from_link(monkeypatch, real_runs.root, "views/token_rewards.py", {"checkpoint": "gone/seed9@4"})
    assert "checkpoint='gone/seed9@4' is not here" in at.warning[0].value
    assert select(at, "Checkpoint").value == f"mle/seed0@{LAST}"  # the default, as without the link


def test_charts_save_in_the_format_picked_in_the_sidebar(monkeypatch, real_runs):
    at = app(monkeypatch, real_runs.root, "views/quality_diversity.py")
    config = json.loads(at.get("plotly_chart")[0].proto.config)
    assert config["toImageButtonOptions"]["format"] == "png"
    at.sidebar.get("button_group")[0].set_value("svg").run()
    config = json.loads(at.get("plotly_chart")[0].proto.config)
    assert config["toImageButtonOptions"]["format"] == "svg"
    assert config["toImageButtonOptions"]["filename"].startswith("pareto-test-")


def test_token_view_shows_what_changed_between_two_checkpoints(monkeypatch, real_runs):
    """MLE beside IQLearn on the same preference pairs: the example coloured by Δr_t, its tokens and the split's
    by the largest change, each change recomputed here from the two token tables as the analysis wrote them."""
    name = "math-preferences"
    at = app(monkeypatch, real_runs.root, "views/token_rewards.py")
    select(at, "Data").set_value(name).run()
    select(at, "Checkpoint").set_value(f"mle/seed0@{LAST}").run()
    select(at, "Side by side with").set_value(f"iqlearn/seed0@{LAST}").run()
    example = select(at, "Completion").value
    a, b = (pd.read_parquet(rewards_file(real_runs, run, name, S.TOKENS_FILE))
            for run in ("mle/seed0", "iqlearn/seed0"))  # fmt: skip
    ids = [S.EXAMPLE_ID, S.POSITION, S.TOKEN_ID]
    assert np.array_equal(a[ids].to_numpy(), b[ids].to_numpy())  # the same samples, so every token compared
    both = a.merge(b, on=[S.EXAMPLE_ID, S.POSITION], suffixes=("_a", "_b"))
    both["d"] = both["reward_b"] - both["reward_a"]
    mine = both[both[S.EXAMPLE_ID] == example]
    body = next(h.proto.body for h in at.get("html") if "token-differences" in h.proto.body)
    hovers = [html.unescape(t) for t in re.findall(r'title="([^"]*)"', body)]
    assert len(hovers) == len(mine)
    for hover, d in zip(hovers, mine.sort_values(S.POSITION)["d"]):
        assert f"Δ = {d:+.3f}" in hover.splitlines()[1]  # the reward line: a → b, Δ
    by_size = at.dataframe[-3].value  # this completion's tokens, largest |Δr_t| first
    expected = mine.dropna(subset=["d"]).sort_values("d", key=abs, ascending=False)["d"]
    assert by_size["d_reward"].dropna().tolist() == pytest.approx(expected.tolist(), abs=1e-12)
    largest = at.dataframe[-2].value  # across the split
    assert len(largest) == 20 and largest["d_reward"].abs().tolist() == pytest.approx(
        both["d"].abs().dropna().sort_values(ascending=False).head(20).tolist(), abs=1e-12)
    next(g for g in at.get("button_group") if g.label == "Change in").set_value(S.LOGP).run()
    largest = at.dataframe[-2].value
    d_logp = (both["logp_b"] - both["logp_a"]).abs().sort_values(ascending=False)
    assert largest["d_logp"].abs().tolist() == pytest.approx(d_logp.head(20).tolist(), abs=1e-12)
    assert at.query_params["change"] == S.LOGP


# ---------------------------------------------------------------------------------------------------------------
# Reward definitions side by side


def test_rewards_quality_page_shows_every_definition_with_its_interval(monkeypatch, real_runs):
    """One row per (checkpoint, definition) with Spearman and best-of-4 and their intervals on the samples, and
    pairwise accuracy with its interval on the pairs, each the number summary.json holds; the best per checkpoint."""
    at = app(monkeypatch, real_runs.root, "views/rewards_quality.py")
    metric = select(at, "Metric").value
    tables_shown = [d.value for d in at.dataframe]
    every = next(t for t in tables_shown if "definition" in t and "spearman" in t)
    assert len(every) == len(RUNS) * len(S.DEFINITIONS)
    for row in every.itertuples():
        run = row.checkpoint.split("@")[0]
        written = next(r for r in summary(real_runs, run, SWEEP["split"])["definitions"]
                       if r["definition"] == row.definition and r["metric"] == metric)  # fmt: skip
        for key in ("spearman", "spearman_low", "spearman_high", "best_of_4_accuracy", "best_of_4_random"):
            # rel 1e-6, approx's default: float64 arithmetic on both sides
            assert getattr(row, key) == pytest.approx(written[key], nan_ok=True) or written[key] is None
    assert set(every["best_of_4_random"]) == {0.25}
    best = next(t for t in tables_shown if "best" in t and "runner-up" in t and "spearman" in t)
    for row in best.itertuples():
        mine = every[every[S.CHECKPOINT] == row.checkpoint]
        tied = set(mine.loc[mine["spearman"] == row.spearman, "definition"])
        assert row.spearman == mine["spearman"].max() and row.best in tied
    pairwise = next(t for t in tables_shown if "definition" in t and "pairwise_accuracy" in t)
    for row in pairwise.itertuples():
        run = row.checkpoint.split("@")[0]
        written = next(r for r in summary(real_runs, run, HOSTILE)["definitions"] if r["definition"] == row.definition)
        assert (row.pairwise_accuracy, row.pairwise_low, row.pairwise_high) == pytest.approx(
            (written["pairwise_accuracy"], written["pairwise_low"], written["pairwise_high"]))


def test_token_view_shows_two_definitions_aligned_with_their_difference(monkeypatch, real_runs):
    at = app(monkeypatch, real_runs.root, "views/token_rewards.py")
    select(at, "Definition").set_value("r_t at γ=1").run()
    select(at, "against").set_value("implicit β·log(π/π_ref)").run()
    example, run = select(at, "Completion").value, "mle/seed0"
    tokens = pd.read_parquet(rewards_file(real_runs, run, HOSTILE, S.TOKENS_FILE))
    tokens = tokens[tokens[S.EXAMPLE_ID] == example].sort_values(S.POSITION)
    body = next(h.proto.body for h in at.get("html") if "token-definitions" in h.proto.body)
    rows = re.findall(r"<tr>(.*?)</tr>", body)
    cells = [re.findall(r"<td[^>]*>([^<]*)</td>", row) for row in rows[1:]]
    shown = [[float(c) if c else np.nan for c in row] for row in cells]
    first, second = tokens[S.REWARD_GAMMA1], tokens[S.REWARD_IMPLICIT]
    expected = [first, second, first - second]
    for values, want in zip(shown, expected):
        assert values == pytest.approx(want.round(2).tolist(), abs=0.0051, nan_ok=True)  # shown to 2 decimals
    assert at.query_params["definition"] == "r_t at γ=1"


def test_definitions_html_aligns_rows_and_escapes():
    tokens = pd.DataFrame({S.POSITION: [1, 0], S.TOKEN: ["<b>", "a\n"], "x": [np.nan, 2.0], "y": [1.0, -1.0]})
    body = charts.definitions_html(tokens, "x", "y", {"x": "first", "y": "second"})
    assert "<b>" not in body and "&lt;b&gt;" in body and "a↵" in body
    rows = [re.findall(r"<td[^>]*>([^<]*)</td>", row) for row in re.findall(r"<tr>(.*?)</tr>", body)[1:]]
    assert rows == [["2.00", ""], ["-1.00", "1.00"], ["3.00", ""]]  # by position; NaN blank, difference x - y


def test_best_definitions_name_the_lead_and_whether_it_is_resolved():
    table = pd.DataFrame({
        S.CHECKPOINT: ["a"] * 3 + ["b"] * 2, "definition": ["r", "logp", "imp", "r", "logp"],
        "spearman": [0.5, 0.2, np.nan, 0.1, 0.3], "spearman_low": [0.4, 0.0, np.nan, 0.0, 0.05],
        "spearman_high": [0.6, 0.3, np.nan, 0.2, 0.5],
    })  # fmt: skip
    best = tables.best_definitions(table, "spearman")
    assert best.to_dict("list") == {S.CHECKPOINT: ["a", "b"], "best": ["r", "logp"], "spearman": [0.5, 0.3],
                                    "runner-up": ["logp", "r"], "runner-up spearman": [0.2, 0.1],
                                    "separated": [True, False]}  # fmt: skip


def test_quality_diversity_page_shows_each_fronts_hypervolume(monkeypatch, real_runs):
    """The hypervolume per method and step: the area the seed means of the sweep's written points dominate,
    against (0, Self-BLEU 100), recomputed here from aggregate.parquet by plain pandas."""
    from analysis.pareto import hypervolume

    at = app(monkeypatch, real_runs.root, "views/quality_diversity.py")
    select(at, "Quality").set_value("rouge1").run()
    shown = next(d.value for d in at.dataframe if "hypervolume" in d.value)
    written = pd.concat([
        pd.read_parquet(real_runs.checkpoints[run] / "sweep" / SWEEP["split"] / "aggregate.parquet").assign(run=run)
        for run in RUNS
    ]).dropna(subset=[S.SELF_BLEU])  # fmt: skip
    written[S.METHOD] = written["run"].map(lambda r: "mle" if r.startswith("mle") else "iqlearn lam=0.1")
    means = written.groupby([S.METHOD, S.DECODING])[["rouge1_mean", S.SELF_BLEU]].mean()
    for row in shown.itertuples():
        mine = means.loc[row.method]
        # rel 1e-6, approx's default: float64 arithmetic on both sides
        assert row.hypervolume == pytest.approx(hypervolume(mine["rouge1_mean"], mine[S.SELF_BLEU], True, (0, 100)))
        assert row.reference == "rouge1_mean = 0, self_bleu = 100" and row.step == LAST
    assert shown["hypervolume"].gt(0).any()
    line = next(figure(at, i) for i in range(len(at.get("plotly_chart"))) if "hypervolume" in title(figure(at, i)))
    assert sorted(t["name"] for t in line["data"]) == sorted(shown[S.METHOD])


def test_token_view_lists_the_first_prompts_and_finds_the_others(monkeypatch, real_runs):
    """Past tables.PROMPT_CHOICES prompts (here 2), the picker lists the first ones in the page's order, says how
    many there are, and *Find a prompt* narrows it to the prompts whose id or text holds what was typed; a link
    opens a prompt past the first ones; nothing matching says so."""
    monkeypatch.setattr(tables, "PROMPT_CHOICES", 2)
    at = app(monkeypatch, real_runs.root, "views/token_rewards.py")
    picker = select(at, "Prompt (best match first)")
    seqs = pd.read_parquet(rewards_file(real_runs, "mle/seed0", HOSTILE, S.SEQUENCES_FILE))
    everyone = seqs.sort_values(S.R_CENTERED, ascending=False, kind="stable")[S.PROMPT_ID].unique().tolist()
    assert len(everyone) > 2 and [o.split(":")[0] for o in picker.options] == everyone[:2]  # "<id>: <text>"
    assert f"The first 2 of the {len(everyone)} prompts in this order" in at.caption[1].value
    last = everyone[-1]
    at.text_input(key="find").input(last.upper()).run()  # any case
    assert not at.exception
    assert select(at, "Prompt (best match first)").value == last and at.query_params["find"] == last.upper()
    tokens = pd.read_parquet(rewards_file(real_runs, "mle/seed0", HOSTILE, S.TOKENS_FILE))
    example = seqs.loc[seqs[S.PROMPT_ID] == last, S.EXAMPLE_ID]
    assert select(at, "Completion").value in set(example) and set(example) <= set(tokens[S.EXAMPLE_ID])
    at.text_input(key="find").input("no prompt holds this").run()
    assert "No prompt holds the text typed" in at.info[0].value
    opened = opened_from_link(monkeypatch, real_runs.root, "views/token_rewards.py", {"prompt": last})
    assert select(opened, "Prompt (best match first)").value == last and not opened.warning


def test_token_view_lists_the_matching_examples_as_written(monkeypatch, real_runs):
    """The matching examples are drawn only once their expander is opened. Listed (read without their texts, which
    come for the rows listed only), they are sequences.parquet's rows in the page's order with every column but the
    token record, texts included; the CSV's reader gives every row so."""
    at = app(monkeypatch, real_runs.root, "views/token_rewards.py")
    examples = lambda: next(e for e in at.expander if "matching examples" in e.label)  # noqa: E731
    assert not examples().children  # closed: nothing read for it
    at.session_state["examples"] = True  # opened
    at.run()
    seqs = pd.read_parquet(rewards_file(real_runs, "mle/seed0", HOSTILE, S.SEQUENCES_FILE))
    seqs = seqs.drop(columns=[c for c in data.TOKEN_RECORD if c in seqs])
    ordered = seqs.sort_values(S.R_CENTERED, ascending=False, kind="stable").reset_index(drop=True)
    listed = examples().dataframe[0].value
    assert {S.PROMPT, S.COMPLETION} <= set(listed.columns) and len(listed) == len(ordered)
    pd.testing.assert_frame_equal(listed.reset_index(drop=True), ordered, check_dtype=False)
    without = ordered.drop(columns=list(data.TEXTS), errors="ignore")
    every = data.with_texts(real_runs.root, "mle/seed0", LAST, HOSTILE, without, cache=False)
    pd.testing.assert_frame_equal(every, ordered, check_dtype=False)


def test_the_shared_sequences_table_is_read_once_and_never_changed(monkeypatch, real_runs):
    """app.data.sequences hands every rerun the one cached frame (st.cache_resource, not a copy): the token view,
    rerun under other selections, leaves it equal to sequences.parquet (but the token record)."""
    columns = data.sequence_columns(real_runs.root, "mle/seed0", LAST, HOSTILE)
    shared = data.sequences(real_runs.root, "mle/seed0", LAST, HOSTILE, [c for c in columns if c not in data.TEXTS])
    at = app(monkeypatch, real_runs.root, "views/token_rewards.py")  # its checkpoint's table: the frame read above
    select(at, "Prompt (best match first)").set_value("h0").run()
    select(at, "Side by side with").set_value("none").run()
    at.session_state["examples"] = True
    at.run()
    assert not at.exception
    again = data.sequences(real_runs.root, "mle/seed0", LAST, HOSTILE, [c for c in columns if c not in data.TEXTS])
    assert again is shared
    written = pd.read_parquet(rewards_file(real_runs, "mle/seed0", HOSTILE, S.SEQUENCES_FILE))[list(shared.columns)]
    pd.testing.assert_frame_equal(shared, written, check_dtype=False)


def test_prompt_choices_filter_by_id_or_text_and_keep_the_order():
    ids = ["p3", "p1", "p2", "q9"]
    texts = {"p3": "What is 2+2?", "p1": "Name a <b>", "p2": "what IS 3+3?"}
    assert tables.prompt_choices(ids, texts, "", 2) == (["p3", "p1"], 4)
    assert tables.prompt_choices(ids, texts, "what is", 5) == (["p3", "p2"], 2)  # any case, in the given order
    assert tables.prompt_choices(ids, texts, "Q9", 5) == (["q9"], 1)  # by id; q9 has no text
    assert tables.prompt_choices(ids, texts, "2+", 5) == (["p3"], 1)  # as typed, not a pattern
    assert tables.prompt_choices(ids, texts, "<b>", 5) == (["p1"], 1)
