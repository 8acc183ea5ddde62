"""The app without a browser: every page under streamlit's AppTest on fixture runs, the runs-directory
confinement, and the pure table and chart builders on literal frames.

    .venv/bin/python -m pytest -q tests/test_app.py
"""

import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from streamlit.testing.v1 import AppTest

from analysis import schema as S
from app import charts, data, tables
from app.safety import OutsideRunsDir, inside
from tests.app_fixtures import HOSTILE_TOKENS, REPO, build_runs

MAIN = str(REPO / "app" / "main.py")


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return build_runs(tmp_path_factory.mktemp("app") / "runs")


def app(monkeypatch, runs_dir, page=None) -> AppTest:
    """The app started as `streamlit run app/main.py -- --runs-dir runs_dir`, run once (on `page`)."""
    monkeypatch.setattr(sys, "argv", [MAIN, "--runs-dir", str(runs_dir)])
    at = AppTest.from_file(MAIN, default_timeout=30).run()
    if page:
        at.switch_page(page).run()
    assert not at.exception, [e.message for e in at.exception]
    return at


def figure(at, i: int) -> dict:
    return json.loads(at.get("plotly_chart")[i].proto.spec)


# ---------------------------------------------------------------------------------------------------------------
# Pages


def test_runs_page(monkeypatch, root):
    at = app(monkeypatch, root)
    assert at.header[0].value == "Runs"
    table = at.dataframe[0].value
    assert list(table[S.RUN]) == ["iqlearn/seed0", "iqlearn/seed1", "mle/seed0", "mle/seed1"]
    assert list(table["status"]) == ["finished"] * 4
    assert list(table["lam"]) == ["0.1", "0.1", "", ""]  # lam does not apply to MLE
    curves = figure(at, 0)
    assert [a["text"] for a in curves["layout"]["annotations"]] == list(tables.CURVES.values())  # panel titles
    loss = [t for t in curves["data"] if t["xaxis"] == "x"]
    assert [t["name"] for t in loss] == ["iqlearn lam=0.1 seeds", "iqlearn lam=0.1", "mle seeds", "mle"]
    assert len(at.get("download_button")) == 1


def test_token_rewards_page_escapes_tokens(monkeypatch, root):
    at = app(monkeypatch, root, "views/token_rewards.py")
    assert [b.value for b in at.selectbox][:3] == ["prefs", "mle/seed1@100", "iqlearn/seed0@100"]  # MLE vs IQLearn
    for label, value in (("Data", "validation"), ("Prompt (best match first)", "p0")):
        next(b for b in at.selectbox if b.label == label).set_value(value).run()
    assert next(b for b in at.selectbox if b.label == "Completion").value == 0  # p0's reference: hostile tokens
    assert not at.exception
    html = [h.proto.body for h in at.get("html")]
    assert len(html) == 2  # two checkpoints side by side
    for body in html:
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in body and "<script" not in body
        assert "&lt;img src=x onerror=alert(1)&gt;" in body and "<img" not in body
    assert len(at.get("plotly_chart")) == 2
    differences = at.dataframe[-1].value  # both checkpoints scored the same references
    assert differences.columns[-1] == "difference" and len(differences) == 20


def test_quality_diversity_page(monkeypatch, root):
    at = app(monkeypatch, root, "views/quality_diversity.py")
    pareto, temperature = figure(at, 0), figure(at, 1)
    assert pareto["layout"]["xaxis"]["title"]["text"] == "self_bleu (lower = more diverse)"
    names = [t["name"] for t in pareto["data"]]
    assert "mle front" in names and "iqlearn lam=0.1 front" in names and "mle · beam" in names
    names = [t["name"] for t in temperature["data"]]
    assert names == ["iqlearn lam=0.1", "mle", "iqlearn lam=0.1 · beam", "mle · beam"]
    {b.label: b for b in at.selectbox}["Quality"].set_value("rouge1").run()
    assert figure(at, 0)["layout"]["yaxis"]["title"]["text"] == "rouge1_mean"


def test_rewards_quality_page(monkeypatch, root):
    at = app(monkeypatch, root, "views/rewards_quality.py")
    data_box = next(b for b in at.selectbox if b.label == "Data")
    assert data_box.value == "prefs"  # the first data set whose metric varies (references are all correct)
    data_box.set_value("validation-t=1").run()
    titles = [figure(at, i)["layout"]["title"]["text"] for i in range(4)]
    assert titles[0].startswith("R vs exact_match: Spearman ρ = ") and titles[0].endswith("(n = 18)")  # 6 x 3 samples
    assert titles[1:] == [
        "Spearman ρ(R, metric) against lam",
        "P(R(chosen) > R(rejected)), 95% Wilson interval",
        "margin distribution",
    ]
    accuracy = figure(at, 2)["data"][0]
    assert len(accuracy["x"]) == 8  # 4 runs x 2 checkpoints


def test_samples_page(monkeypatch, root):
    at = app(monkeypatch, root, "views/samples.py")
    code = [c.value for c in at.code]
    assert code[0].startswith("Question: Ava has") and "\n#### " in code[1]  # the prompt, the reference
    # 2 checkpoints x (greedy: 1 sample + t=0.5: 3 samples), the greedy sample of p0 holding hostile text
    completions = code[2:]
    assert len(completions) == 8
    assert sum(HOSTILE_TOKENS[0] in c for c in completions) == 2


def test_empty_runs_dir_says_what_to_run(monkeypatch, tmp_path):
    at = app(monkeypatch, tmp_path)
    assert "make demo" in at.info[0].value and "python -m analysis sweep" in at.info[0].value


def test_pages_import_no_torch(root):
    """Every page runs without importing torch, transformers or evaluate (the app starts fast)."""
    script = f"""
import sys
sys.argv = [{MAIN!r}, "--runs-dir", {str(root)!r}]
from streamlit.testing.v1 import AppTest
at = AppTest.from_file({MAIN!r}, default_timeout=30).run()
for page in ("token_rewards", "quality_diversity", "rewards_quality", "samples"):
    at.switch_page(f"views/{{page}}.py").run()
    assert not at.exception, page
print(sorted(m for m in ("torch", "transformers", "evaluate", "scipy") if m in sys.modules))
"""
    out = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


# ---------------------------------------------------------------------------------------------------------------
# Confinement


def test_confinement_refuses_paths_outside_the_root(tmp_path):
    root = tmp_path / "runs"
    (root / "a" / "b").mkdir(parents=True)
    (tmp_path / "secret").mkdir()
    (root / "escape").symlink_to(tmp_path / "secret")
    assert inside(root, "a/b") == (root / "a" / "b").resolve()
    for bad in ("../../etc", "../secret", "escape", "escape/config.yaml", "/etc"):
        with pytest.raises(OutsideRunsDir):
            inside(root, bad)
    with pytest.raises(OutsideRunsDir):
        data.metrics(root, "../../etc")


def test_index_skips_a_run_that_links_outside(tmp_path):
    root = build_runs(tmp_path / "runs", methods=(("mle", 0.0),), seeds=(0,), steps=(100,))
    outside = build_runs(tmp_path / "elsewhere", methods=(("iqlearn", 0.1),), seeds=(0,), steps=(100,))
    (root / "linked").symlink_to(outside / "iqlearn" / "seed0")  # not followed when looking for runs
    (root / "evil").mkdir()
    (root / "evil" / "config.yaml").symlink_to(outside / "iqlearn" / "seed0" / "config.yaml")
    (root / "mle" / "seed0" / "checkpoint-100" / "rewards" / "stolen").symlink_to(outside)
    runs, results, refused = data.index(root)
    assert list(runs[S.RUN]) == ["mle/seed0"]
    assert set(results["name"]) == {"validation", "validation-t=1", "prefs"}
    assert len(refused) == 2 and "evil/config.yaml" in refused[0] and "stolen" in refused[1]


# ---------------------------------------------------------------------------------------------------------------
# Tables


def test_run_row_status_and_blank_settings():
    cfg = {"objective": "mle", "lam": 0.1, "gamma": 0.99, "beta": 0.0, "seed": 1, "model": "tiny", "data": "math",
           "max_steps": 100}  # fmt: skip
    row = tables.run_row("mle/seed1", cfg, [50, 100])
    assert (row[S.METHOD], row["status"], row["last_checkpoint"]) == ("mle", "finished", 100)
    assert np.isnan(row["lam"]) and np.isnan(row["gamma"]) and np.isnan(row["alpha"])
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


def test_spearman():
    # ranks 1 2 3 4 vs 1 2 4 3: sum d^2 = 2, rho = 1 - 6 * 2 / (4 * 15) = 0.8
    assert tables.spearman([1, 2, 3, 4], [10, 20, 40, 30]) == pytest.approx(0.8)
    # ties get average ranks 1.5 1.5 3.5 3.5: Pearson of ranks = 4 / (2 * sqrt(5))
    assert tables.spearman([0, 0, 1, 1], [1, 2, 3, 4]) == pytest.approx(2 / np.sqrt(5))
    seqs = pd.DataFrame({S.RUN: [*"aaaabbb"], S.STEP: 1, S.R: [1, 2, 3, 4, 1, 2, 3], "em": [1, 2, 4, 3, 0, 0, 0]})
    corr = tables.correlations(seqs, "em")
    assert corr["spearman"].iloc[0] == pytest.approx(0.8) and np.isnan(corr["spearman"].iloc[1])
    assert list(corr["n"]) == [4, 3]


def test_wilson_interval_and_pairwise_accuracy():
    lo, hi = tables.wilson_interval([8, 0], [10, 2])
    assert lo == pytest.approx([0.4902, 0.0], abs=1e-4) and hi == pytest.approx([0.9433, 0.6576], abs=1e-4)
    pairs = pd.DataFrame({S.RUN: ["a"] * 4 + ["b"] * 2, S.STEP: [5] * 6, S.MARGIN: [1.0, -1.0, 2.0, 0.5, -1.0, -2.0]})
    acc = tables.pairwise_accuracy(pairs)
    assert list(acc["accuracy"]) == [0.75, 0.0] and list(acc["n"]) == [4, 2]
    assert acc["lo"].round(4).tolist() == [0.3006, 0.0] and acc["hi"].round(4).tolist() == [0.9544, 0.6576]


def test_reward_differences_compare_only_identical_completions():
    a = pd.DataFrame({S.EXAMPLE_ID: [0, 0, 1], S.POSITION: [0, 1, 0], S.TOKEN_ID: [5, 6, 7], S.TOKEN: ["x", "<b>", "y"],
                      S.REWARD: [1.0, 2.0, 0.0]})  # fmt: skip
    b = a.assign(**{S.TOKEN_ID: [5, 6, 8], S.REWARD: [1.5, -1.0, 5.0]})  # example 1 is another completion in b
    diff = tables.reward_differences(a, b)
    assert diff.to_dict("list") == {S.EXAMPLE_ID: [0, 0], S.POSITION: [1, 0], S.TOKEN: ["<b>", "x"],
                                    "reward_a": [2.0, 1.0], "reward_b": [-1.0, 1.5], "diff": [-3.0, 0.5]}  # fmt: skip


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
    assert points.loc["t=1", "q_mean"] == pytest.approx(0.5)
    assert points.loc["t=1", S.seed_se_col("q_mean")] == pytest.approx(0.1)  # std 0.1414 / sqrt(2)
    assert points[S.ON_FRONT].to_dict() == {"beam=4": False, "t=0.5": True, "t=1": True}  # greedy: no Self-BLEU

    fig = charts.pareto_figure(points.reset_index(), "q_mean", S.SELF_BLEU)
    assert [t.name for t in fig.data] == ["A · beam", "A · sample", "A front"]
    assert (fig.data[0].marker.symbol, fig.data[1].marker.symbol) == ("square", "diamond")
    assert list(fig.data[2].x) == [10.0, 20.0] and list(fig.data[2].y) == pytest.approx([0.5, 0.7])
    assert list(fig.data[1].x) == [20.0, 10.0]  # t=0.5 (one seed: no SE), t=1
    assert np.isnan(fig.data[1].error_y.array[0]) and fig.data[1].error_y.array[1] == pytest.approx(0.1)
    assert fig.layout.xaxis.title.text == "self_bleu (lower = more diverse)" and fig.layout.yaxis.title.text == "q_mean"


def test_temperature_figure_lines_and_beam_markers():
    points = pd.DataFrame({
        S.METHOD: ["A"] * 4, S.STEP: [1] * 4, S.KIND: ["sample", "greedy", "sample", "beam"],
        S.DECODING: ["t=1", "greedy", "t=0.5", "beam=4"], S.TEMPERATURE: [1.0, 0.0, 0.5, 0.0],
        "q": [0.2, 0.6, 0.4, 0.7], "q_seed_se": [0.01, 0.02, 0.03, 0.04],
    })  # fmt: skip
    fig = charts.temperature_figure(points, "q")
    line, beam = fig.data
    assert (line.name, list(line.x), list(line.y)) == ("A", [0.0, 0.5, 1.0], [0.6, 0.4, 0.2])  # sorted by T
    assert list(line.error_y.array) == [0.02, 0.03, 0.01]
    assert (beam.name, list(beam.text), list(beam.y)) == ("A · beam", ["beam=4"], [0.7])


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


def test_reward_and_preference_figures():
    seqs = pd.DataFrame({S.R: [1.0, 2.0, 3.0], "em": [0.0, 1.0, 1.0], "rouge1": [0.1, 0.5, 0.2]})
    box = charts.reward_quality_figure(seqs, S.R, "em", 0.5).data[0]
    assert (box.type, list(box.x), box.boxpoints) == ("box", [0.0, 1.0, 1.0], "all")  # a 0/1 metric: boxes
    scatter = charts.reward_quality_figure(seqs, S.R, "rouge1", 0.5)
    assert scatter.data[0].type == "scatter" and scatter.layout.title.text == "R vs rouge1: Spearman ρ = 0.500 (n = 3)"

    acc = pd.DataFrame({S.CHECKPOINT: ["a@1"], "accuracy": [0.75], "lo": [0.3006], "hi": [0.9544], "n": [4]})
    bar = charts.accuracy_figure(acc).data[0]
    assert list(bar.error_y.array) == pytest.approx([0.2044])  # hi - accuracy
    assert list(bar.error_y.arrayminus) == pytest.approx([0.4494])  # accuracy - lo

    corr = pd.DataFrame({S.RUN: ["m0", "m1", "i0"], S.METHOD: ["mle", "mle", "iq"], S.STEP: 5, S.LAM: [0.0, 0.0, 0.1],
                         "spearman": [0.1, -0.1, 0.6]})  # fmt: skip
    mean, iq, mle = charts.correlation_lam_figure(corr).data
    assert (mean.name, list(mean.x), list(mean.y)) == ("step 5: mean", [0.0, 0.1], pytest.approx([0.0, 0.6]))
    assert (iq.name, list(iq.y), mle.name, list(mle.y)) == ("iq", [0.6], "mle", [0.1, -0.1])


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
