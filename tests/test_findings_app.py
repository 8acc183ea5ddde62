"""The app's Findings page on a findings report shipped under the reports root (`--reports-dir`, docs/findings by
default), the way the repository ships them: <name>/findings/ alone, no run directories beside it. The report is
the toy quick grid's (tests/conftest.py `quick_findings`), copied.

    .venv/bin/python -m pytest -q tests/test_findings_app.py
"""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import streamlit as st
from streamlit.testing.v1 import AppTest

from app import data
from findings import layout as L
from tests.test_app import FileSystemCalls, page_text

REPO = Path(__file__).resolve().parents[1]
MAIN = str(REPO / "app" / "main.py")


def shipped(quick_findings, reports: Path, name: str, **keys) -> dict:
    """The quick grid's findings/ copied to reports/<name>/findings/, `keys` added to its findings.json (what
    the report writes about runs it lacks); the findings.json as the page will read it."""
    grid, _ = quick_findings
    out = reports / name / L.FINDINGS_DIR
    shutil.copytree(grid / L.FINDINGS_DIR, out)
    summary = json.loads((out / L.SUMMARY).read_text()) | keys
    (out / L.SUMMARY).write_text(json.dumps(summary))
    return summary


def test_findings_page_shows_a_grids_report_then_a_shipped_one_naming_the_runs_it_lacks(quick_findings, tmp_path):
    """The quick grid under the runs directory and a copy of its report shipped under the reports root. The page
    opens on the grid: one section per finding with the verdict of findings.json and its figure, each figure
    saved as PNG and SVG (its table as CSV). Then the shipped report, chosen in the Grid box (labelled by its
    root; the URL names it by root and path): every verdict again, the warning counts the one missing run and
    the list under it names it, and each timing is one caption. Run in a subprocess, so the page's imports are
    its own: no torch, transformers, evaluate or scipy."""
    grid, _ = quick_findings
    reports = tmp_path / "reports"
    summary = shipped(quick_findings, reports, "quick_copy", missing_runs=["a/seed0"], incomplete_runs=[])
    script = f"""
import json, sys
sys.argv = [{MAIN!r}, "--runs-dir", {str(grid.parent)!r}, "--reports-dir", {str(reports)!r}]
from streamlit.testing.v1 import AppTest
def shown(at):
    return {{"exceptions": [e.message for e in at.exception], "grids": at.selectbox[0].options,
            "url": at.query_params["grid"], "subheaders": [s.value for s in at.subheader],
            "markdown": [m.value for m in at.markdown], "warnings": [w.value for w in at.warning],
            "code": [c.value for c in at.code], "captions": [c.value for c in at.caption],
            "info": [i.value for i in at.info], "images": sum(type(e).__name__ == "Image" for e in at.main),
            "downloads": [b.proto.label for b in at.main.get("download_button")]}}
at = AppTest.from_file({MAIN!r}, default_timeout=120).run()
at.switch_page("views/findings.py").run()
on_grid = shown(at)
at.selectbox[0].select("reports:quick_copy").run()
print(json.dumps({{"grid": on_grid, "shipped": shown(at),
                  "heavy": sorted(m for m in ("torch", "transformers", "evaluate", "scipy") if m in sys.modules)}}))
"""
    out = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True, check=True)
    pages = json.loads(out.stdout.strip().splitlines()[-1])
    assert pages["heavy"] == []
    on_grid, on_report = pages["grid"], pages["shipped"]
    for page in (on_grid, on_report):
        assert page["exceptions"] == [] and page["info"] == []
        assert page["grids"] == ["runs: quick", "reports: quick_copy"]
        assert page["subheaders"] == [f"{n}. {f['title']}" for n, f in enumerate(summary["findings"], 1)]
        for f in summary["findings"]:
            assert any(f"**Verdict: {f['verdict_text']}.**" in m for m in page["markdown"]), f["title"]
        assert page["images"] == sum(f["figure"] in summary["figures"] for f in summary["findings"])
        # each figure saved as PNG and as SVG (and its table as CSV)
        assert page["downloads"].count("PNG") == page["downloads"].count("SVG") == page["images"]
    assert on_grid["url"] == "runs:quick" and on_grid["warnings"] == []
    assert on_report["url"] == "reports:quick_copy"
    assert on_report["warnings"] == ["This report lacks 1 of its grid's planned runs: its findings were computed "
                                     "without them."]  # fmt: skip
    assert "a/seed0: not started" in on_report["code"]
    assert summary["timings"]  # the quick grid's `run` invocation
    for t in summary["timings"]:
        assert f"Wall time of {L.timing_text(t)}." in on_report["captions"]


def test_reports_root_defaults_to_the_repositorys_docs_findings_whatever_the_cwd(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    assert data.reports_root([]) == REPO / "docs" / "findings"
    assert data.reports_root(["--reports-dir", "shipped"]) == tmp_path / "shipped"
    assert data.runs_root(["--runs-dir", "r", "--reports-dir", "shipped"]) == tmp_path / "r"


def test_no_report_outside_the_reports_root_is_listed_or_read(monkeypatch, quick_findings, tmp_path):
    """A reports root holding one report and symlinks to reports outside it (a report directory, a findings/
    folder, a findings.json): the page offers only its own report, and nothing under the other directory is
    opened or listed (audit events and inotify, tests/test_app.py) nor named on the page."""
    outside, reports, runs = tmp_path / "outside", tmp_path / "reports", tmp_path / "runs"
    runs.mkdir()
    shipped(quick_findings, outside, "theirs")
    shipped(quick_findings, reports, "ours")
    (reports / "linked").symlink_to(outside / "theirs")
    (reports / "folder").mkdir()
    (reports / "folder" / L.FINDINGS_DIR).symlink_to(outside / "theirs" / L.FINDINGS_DIR)
    (reports / "file" / L.FINDINGS_DIR).mkdir(parents=True)
    (reports / "file" / L.FINDINGS_DIR / L.SUMMARY).symlink_to(outside / "theirs" / L.FINDINGS_DIR / L.SUMMARY)
    st.cache_data.clear()
    monkeypatch.setattr(sys, "argv", [MAIN, "--runs-dir", str(runs), "--reports-dir", str(reports)])
    with FileSystemCalls(outside) as calls:
        at = AppTest.from_file(MAIN, default_timeout=60).run()
        at.switch_page("views/findings.py").run()
    assert not at.exception, [e.message for e in at.exception]
    assert at.selectbox[0].options == ["reports: ours"]
    assert [p for _, p in calls.audited if p.startswith(str(outside))] == [] and calls.kernel == []
    assert any(p.startswith(str(reports / "ours")) for _, p in calls.audited)  # the recording works
    assert not [text for text in page_text(at) if str(outside) in text or "theirs" in text]
