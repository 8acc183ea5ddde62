"""The app in a real browser: Debian's chromium driven by Playwright against `streamlit run` on 127.0.0.1.

Every page renders its charts with no Streamlit exception (screenshots in test-artifacts/app/) on the real
chain's output (tests/conftest.py `real_runs`), and the hostile tokens scored there are shown as text, with no
script run. Needs `apt-get install -y chromium`; fails, does not skip, without it.

    .venv/bin/python -m pytest -q tests/test_app_browser.py
"""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tests.app_fixtures import (
    CHART_TEXT_CLASHES, OVERFLOWING, PAGES, REPO, choose, chromium, serve_app, timed_run,
)
from analysis import schema as S
from app import charts, tables
from findings import rules as R
from tests.conftest import HOSTILE, HOSTILE_TOKENS

ARTIFACTS = REPO / "test-artifacts" / "app"


@pytest.fixture(scope="module")
def page(tmp_path_factory, real_runs):
    """A browser page on the app served over the real chain's runs directory; collects every dialog it opens."""
    tmp = tmp_path_factory.mktemp("browser")
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with serve_app(real_runs.root, ARTIFACTS / "streamlit.log") as base, chromium(tmp / "profile") as context:
        page = context.new_page()
        page.dialogs = []
        page.on("dialog", lambda d: (page.dialogs.append(d.message), d.dismiss()))
        page.base = base
        yield page


def screenshot(page, name: str) -> Path:
    """The whole page: the viewport grown to the height of Streamlit's scrolling main area."""
    height = page.evaluate("document.querySelector('[data-testid=\"stMain\"]').scrollHeight")
    page.set_viewport_size({"width": 1400, "height": max(height, 800)})
    path = ARTIFACTS / f"{name}.png"
    page.screenshot(path=str(path))
    page.set_viewport_size({"width": 1400, "height": 1000})
    return path


LAID_OUT = ("token_rewards", "quality_diversity", "rewards_quality", "")  # the pages with segmented controls/charts


@pytest.mark.parametrize("url", [*list(PAGES)[1:], ""])  # a page's own URL first: it must still go through main.py
def test_page_renders_without_exception_and_nothing_overflows(page, url):
    """Each page renders with no exception (a screenshot of the whole page); then, for the pages with segmented
    controls and charts, at a laptop's width and with the window narrowed as a user would (sidebar open), every
    selection control stays inside its column (the segmented controls wrap their options) and no text of a chart
    leaves it or covers another (the beam widths are the ticks of their own panel, the legends sit under the
    plots, long titles wrap)."""
    timed_run(page, lambda: page.goto(f"{page.base}/{url}"), reload=True, **PAGES[url])
    assert page.locator('[data-testid="stException"]').count() == 0
    assert page.get_by_role("button", name="Reload").is_visible()  # main.py's sidebar: routed by st.navigation
    assert page.locator('[data-testid="stHeading"]').first.is_visible()
    assert screenshot(page, url or "runs").stat().st_size > 10_000
    if url in LAID_OUT:
        nothing_overflows(page, url or "runs")


def nothing_overflows(page, name: str) -> None:
    """At 1280 px, then 800 px wide (each screenshot `name`-<width>px.png), no selection control reaches past its
    column and no text of a chart leaves it or covers another."""
    try:
        for width in (1280, 800):
            page.set_viewport_size({"width": width, "height": 1000})
            height = page.evaluate("document.querySelector('[data-testid=\"stMain\"]').scrollHeight")
            page.set_viewport_size({"width": width, "height": max(height, 1000)})  # every chart drawn on screen
            page.wait_for_timeout(500)  # the charts redrawn at the new width
            assert page.locator('[data-testid="stException"]').count() == 0
            page.screenshot(path=str(ARTIFACTS / f"{name}-{width}px.png"))
            assert page.evaluate(OVERFLOWING) == [], width
            assert page.evaluate(CHART_TEXT_CLASHES) == [], width
    finally:
        page.set_viewport_size({"width": 1400, "height": 1000})


def test_fronts_over_training_filters_and_effective_diversity_fit_their_columns(page):
    """The Quality vs diversity page on the filtered sweep of the real chain (validation split, both checkpoints,
    t=1 with top_p and min_p, effective diversity at ROUGE-1 threshold 0), opened from a link naming both steps
    and the effective Self-BLEU axis: one front per step, a dotted line per sampling filter, the hypervolume per
    step, each inside its column at both widths."""
    query = "split=validation&quality=rouge1&diversity=effective_self_bleu&steps=2&steps=4"
    timed_run(page, lambda: page.goto(f"{page.base}/quality_diversity?{query}"), reload=True, charts=3)
    assert page.locator('[data-testid="stException"]').count() == 0
    assert page.get_by_label("Diversity", exact=True).input_value() == "effective_self_bleu"
    legend = page.locator(".js-plotly-plot .legendtext").evaluate_all("texts => texts.map(t => t.textContent)")
    assert any("top_p=0.9" in text for text in legend) and any("min_p=0.05" in text for text in legend), legend
    assert page.get_by_text("Hypervolume of each method's front").is_visible()
    nothing_overflows(page, "quality_diversity-filters")


def test_hostile_tokens_render_as_text(page):
    timed_run(page, lambda: page.goto(f"{page.base}/token_rewards"), reload=True, **PAGES["token_rewards"])
    # the chosen side of the first pair of the hostile preference set
    picks = (("Data", HOSTILE), ("Prompt (best match first)", "h0:"), ("Completion", "chosen of pair 0"))
    for label, option in picks:
        if not page.get_by_label(label, exact=True).input_value().startswith(option):
            timed_run(page, lambda label=label, option=option: choose(page, label, option), **PAGES["token_rewards"])
    assert page.get_by_label("Completion", exact=True).input_value().startswith("chosen of pair 0")
    tokens = page.locator(".token-rewards").first
    for hostile in HOSTILE_TOKENS:
        assert hostile in tokens.inner_text()
    assert page.locator('[data-testid="stCode"]').filter(has_text=HOSTILE_TOKENS[0]).first.is_visible()  # prompt
    assert page.locator(".token-rewards script, .token-rewards img, .token-rewards [onerror]").count() == 0
    assert page.locator("script").filter(has_text="alert(1)").count() == 0
    screenshot(page, "token_rewards_hostile")
    page.wait_for_timeout(300)  # a script would have run by now
    assert page.dialogs == []


def test_a_link_opens_the_view_it_names(page):
    """A link with query parameters opens the token view on the checkpoint, partner, score and colouring it
    names, and the page's "Copy link" shows that same address back."""
    query = "data=test&checkpoint=iqlearn%2Fseed1%404&beside=none&score=logp_sum&colour=logp"
    url = f"{page.base}/token_rewards?{query}"
    timed_run(page, lambda: page.goto(url), reload=True, charts=1, selector=".token-rewards")
    assert page.get_by_label("Checkpoint", exact=True).input_value() == "iqlearn/seed1@4"
    assert page.get_by_label("Side by side with", exact=True).input_value() == "none"
    for group, pressed in (("Sequence score", "logp_sum"), ("Colour by", "log π")):
        control = page.locator('[data-testid="stButtonGroup"]').filter(has_text=group)
        assert control.locator('button[aria-checked="true"], button[kind$="Active"]').inner_text() == pressed
    page.get_by_role("button", name="Copy link").click()
    shown = page.locator('[data-testid="stPopoverBody"] [data-testid="stCode"]').inner_text().strip()
    assert shown.startswith(f"{page.base}/token_rewards?data=test&checkpoint=iqlearn%2Fseed1%404&beside=none")
    assert "score=logp_sum" in shown and "colour=logp" in shown
    page.screenshot(path=str(ARTIFACTS / "copy-link.png"))


def test_findings_page_renders_a_grids_report(page, quick_findings):
    """The Findings page over the toy quick grid (tests/test_findings.py), in another tab of the same browser: its
    verdict table and each finding's figure, with no exception, and a figure saved as SVG and as PNG by its
    buttons (each file drawn on the click)."""
    grid, _ = quick_findings
    with serve_app(grid, ARTIFACTS / "streamlit-findings.log") as base:
        tab = page.context.new_page()
        try:
            timed_run(tab, lambda: tab.goto(f"{base}/findings"), reload=True, selector='[data-testid="stImage"]')
            assert tab.locator('[data-testid="stException"]').count() == 0
            assert tab.get_by_role("heading", name="Findings").first.is_visible()
            assert tab.get_by_text("Verdict:").count() == len(R.RULES)  # every finding, with its verdict
            screenshot(tab, "findings")
            # a figure's file is drawn when its button is clicked, not with the page
            for fmt, head in (("SVG", "<?xml"), ("PNG", "\x89PNG")):
                with tab.expect_download() as download:
                    tab.locator('[data-testid="stDownloadButton"] button').filter(has_text=fmt).first.click()
                saved = Path(download.value.path()).read_bytes()
                assert saved.startswith(head.encode("latin-1")) and len(saved) > 10_000, fmt
                assert download.value.suggested_filename.endswith(f".{fmt.lower()}")
        finally:
            tab.close()


def test_box_statistics_are_the_boxes_plotly_draws(page, tmp_path):
    """The statistics a large Rewards vs quality figure sends instead of its points (tables.box_statistics) are
    those plotly.js itself computes from the points with its defaults: the small figure's boxes (every point
    sent), drawn by the Plotly bundled with plotly.py, hold the same quartiles, median and fences."""
    rng = np.random.default_rng(5)
    n = charts.SHOWN_POINTS - 1  # every point sent; odd and even groups, skewed and tied values, outliers on both sides
    seqs = pd.DataFrame({"em": (rng.random(n) < 0.4).astype(float),
                         S.R: np.r_[rng.standard_t(2, size=n - 1).round(1), [40.0]]})  # fmt: skip
    corr = {"spearman": 0.1, "spearman_low": 0.0, "spearman_high": 0.2, "n": float(n)}
    fig = charts.reward_quality_figure(seqs, S.R, "em", corr)
    assert fig.data[0].type == "box" and fig.data[0].boxpoints == "all"  # drawn from its points
    path = tmp_path / "boxes.html"
    fig.write_html(path, include_plotlyjs=True, div_id="boxes")
    tab = page.context.new_page()
    try:
        tab.goto(path.as_uri())
        tab.wait_for_function("document.getElementById('boxes').calcdata !== undefined")
        drawn = tab.evaluate("document.getElementById('boxes').calcdata[0].map("
                             "b => ({x: b.pos, n: b.pts.length, q1: b.q1, median: b.med, q3: b.q3, "
                             "lowerfence: b.lf, upperfence: b.uf}))")  # fmt: skip
    finally:
        tab.close()
    boxes = tables.box_statistics(seqs, "em", S.R)
    assert [b["x"] for b in drawn] == boxes["em"].tolist()
    for box, (_, ours) in zip(drawn, boxes.iterrows()):
        # rel 1e-6, approx's default: both interpolate in float64 (JavaScript numbers)
        assert {k: box[k] for k in tables.BOX_STATISTICS} == pytest.approx(ours[list(tables.BOX_STATISTICS)].to_dict())
