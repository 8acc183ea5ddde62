"""The findings report of a grid: its tables, the verdict of every rule (findings/rules.py), the figures and a
Markdown report, all in <grid>/findings/ (findings/layout.py), from what the grid wrote.

    python -m findings report --config configs/findings/quick.yaml

report.md states for each finding of the paper (METHOD.md section 6) the rule, the verdict and the numbers
behind it: means over seeds with their standard errors, and 95% intervals of every difference compared.
findings.json holds the same per finding, for the app's Findings page.
"""

import hashlib
import json
from pathlib import Path

import numpy as np
import pandas as pd

from analysis import schema as S
from analysis.results import read_jsonl
from analysis.stats import seed_mean_se
from findings import layout as L
from findings import rules as R
from findings import tables as T

SECTIONS = ("Summary", "Settings", "Preference accuracy", "Grid file")  # besides one section per finding


def _markdown_table(table: pd.DataFrame) -> str:
    cells = table.astype(object).where(table.notna(), "")
    head = "| " + " | ".join(map(str, cells.columns)) + " |"
    rule = "|" + "---|" * len(cells.columns)
    body = ["| " + " | ".join(str(v) for v in row) + " |" for row in cells.itertuples(index=False)]
    return "\n".join([head, rule, *body])


def code_version() -> str | None:
    """The workbench's commit (`git describe --always --dirty`: "-dirty" when tracked files were changed), or
    None outside a git checkout."""
    import subprocess

    try:
        out = subprocess.run(["git", "describe", "--always", "--dirty", "--abbrev=12"], capture_output=True,
                             text=True, cwd=Path(__file__).resolve().parents[1], timeout=30)  # fmt: skip
    except OSError:
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def record_timing(grid, command: str, seconds: dict, config: str | None = None) -> None:
    """Append one invocation's wall times (s per stage), its grid file and the code's commit to
    <grid>/findings/timings.jsonl, which every report quotes, so a report written later (`python -m findings
    report`) keeps the times and versions of the runs behind it."""
    from datetime import datetime, timezone

    from common.io import append_jsonl

    out_dir = grid.output_dir / L.FINDINGS_DIR
    out_dir.mkdir(parents=True, exist_ok=True)
    ended = datetime.now(timezone.utc).isoformat(timespec="seconds")
    append_jsonl(out_dir / L.TIMINGS, {"command": command, "config": config, "commit": code_version(),
                                       "ended": ended, "seconds": seconds})  # fmt: skip


def read_timings(grid) -> list[dict]:
    """The lines of <grid>/findings/timings.jsonl, oldest first (none before the first `grid` or `run`)."""
    return read_jsonl(grid.output_dir / L.FINDINGS_DIR / L.TIMINGS)


def run_fields(grid, keys=("data", "model", "max_steps", "math_sizes", "eval_steps")) -> list[str]:
    """`key=value` for each of `keys` the grid's runs set, or `key in {v1, v2}` where they set it differently
    (a `data` axis: its tasks)."""
    fields = []
    for key in keys:
        values = list(dict.fromkeys(str(p.values[key]) for p in grid.points if key in p.values))
        if values:
            fields.append(f"{key}={values[0]}" if len(values) == 1 else f"{key} in {{{', '.join(values)}}}")
    return fields


def _settings(grid, tables: dict, timings: list[dict], state: dict) -> list[str]:
    runs = tables[L.RUNS]
    metrics = ", ".join(runs["quality_metric"].unique())
    lines = [f"- {len(runs)} finished runs of {len(grid.points)} planned in `{grid.output_dir}` "
             f"({runs[L.GROUP].nunique()} groups, seeds {sorted(runs[S.SEED].unique().tolist())}); quality metric: "
             f"{metrics}.",
             "- Run fields: " + ", ".join(run_fields(grid)) + ".",
             f"- Sweep: {json.dumps(grid.sweep)}; rewards: {json.dumps(grid.rewards)}."]  # fmt: skip
    for key, text in (("incomplete", "started, not finished"), ("missing", "not started")):
        if state[key]:
            lines.append(f"- Left out, {text} ({len(state[key])}): " + ", ".join(f"`{n}`" for n in state[key]) + ".")
    for t in timings:  # a resumed invocation times only what it did
        lines.append(f"- Wall time of {L.timing_text(t)}.")
    small = tables.get(L.SMALL_DATA)
    se = S.seed_se_col(L.FINAL_NLL)
    if small is not None and len(small) and (small[S.N_SEEDS] > 1).any():
        many = small[small[S.N_SEEDS] > 1]
        if (many[se] == 0).all():
            lines.append("- **Warning:** runs that differ only in seed gave identical validation NLL: the seed does "
                         "not vary these runs, so seed errors are 0 and every comparison is untestable.")  # fmt: skip
    return lines


def _partial(grid, state: dict) -> list[str]:
    """The warning a report of an unfinished grid opens with (none once every planned run has finished)."""
    left = len(state["incomplete"]) + len(state["missing"])
    if not left:
        return []
    return [f"**Partial report:** {left} of the {len(grid.points)} planned runs have not finished (listed under "
            f"Settings); every table and verdict below is on the {len(state['finished'])} finished runs. Running "
            f"the same command again continues the grid and rewrites this report.", ""]  # fmt: skip


def _counts(found: R.Finding) -> str:
    outcomes = [c["outcome"] for c in found.comparisons]
    return ", ".join(f"{outcomes.count(o)} {o}" for o in dict.fromkeys(outcomes)) or "none"


def markdown(grid, found: list[R.Finding], tables: dict, figures: list[str], timings: list[dict],
             state: dict) -> str:  # fmt: skip
    """The report's text (see the module docstring); `state`: the grid's runs by state (tables.progress)."""
    out = [f"# Findings of the paper, tested on `{grid.output_dir}`", "",
           "Each finding of \"Imitating Language via Scalable Inverse Reinforcement Learning\" (METHOD.md section 6) "
           "is tested by a rule fixed in findings/rules.py before the runs, quoted below with its verdict; the "
           "settings are the grid file's (at the end). Numbers are means over seeds ± their standard error; "
           "intervals are 95%. " + R.__doc__.split("The verdict:")[0].split("\n\n", 1)[1].replace("\n", " ").strip(),
           "", *_partial(grid, state), "## Summary", "",
           "| # | finding (paper) | verdict here | comparisons |", "|---|---|---|---|"]  # fmt: skip
    for n, f in enumerate(found, 1):
        out.append(f"| {n} | {f.claim} ({f.paper_figure}) | **{R.VERDICT_TEXT[f.verdict]}** | {_counts(f)} |")
    out += ["", "## Settings", "", *_settings(grid, tables, timings, state), ""]
    for n, f in enumerate(found, 1):
        out += [f"## {n}. {f.title}", "", f"**Paper ({f.paper_figure}).** {f.claim}", "",
                "**Rule.** " + f.rule.replace("\n", " "), "",
                f"**Verdict: {R.VERDICT_TEXT[f.verdict]}.**", ""]  # fmt: skip
        if f.note:
            out += [f"Not tested: {f.note}.", ""]
        out += [f"- {line}" for line in f.evidence]
        if f.figure in figures:
            out += ["", f"![{f.title}]({f.figure})"]
        out.append("")
    out += ["## Preference accuracy", ""]
    pref = tables.get(L.PREFERENCES)
    if pref is not None and len(pref):
        pref = pref[pref[L.SCORE].isin([S.R, S.LOGP_SUM])].astype({L.TRAIN_SIZE: object})
        pref[L.TRAIN_SIZE] = pref[L.TRAIN_SIZE].map(lambda n: "all" if pd.isna(n) else int(n))
        by = pref.groupby([S.METHOD, L.TRAIN_SIZE, L.SCORE], dropna=False)["accuracy"]
        table = by.apply(lambda seeds: "{:.3f} ± {:.3f}".format(*seed_mean_se(seeds)[:2])).reset_index()
        wide = table.pivot_table(index=[S.METHOD, L.TRAIN_SIZE], columns=L.SCORE, values="accuracy",
                                 aggfunc="first", dropna=False).reset_index()  # fmt: skip
        out += ["Pairwise accuracy on the task's preference set (mean over seeds ± SE), the reward beside the "
                "likelihood baseline; descriptive, no rule:", "", _markdown_table(wide), ""]  # fmt: skip
    else:
        out += ["No preference set was scored.", ""]
    out += ["## Grid file", "", f"sha256 `{hashlib.sha256(grid.text.encode()).hexdigest()}`:", "", "```yaml",
            grid.text.rstrip(), "```", ""]  # fmt: skip
    return "\n".join(out)


def _json_safe(obj):
    """`obj` with numpy scalars as Python numbers and NaN as null (findings.json is strict JSON)."""
    if isinstance(obj, dict):
        return {k: _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_json_safe(v) for v in obj]
    if isinstance(obj, np.generic):
        obj = obj.item()
    return None if isinstance(obj, float) and not np.isfinite(obj) else obj


def write_report(grid) -> Path:
    """Gather the grid's tables, decide every finding, draw the figures and write <grid>/findings/; returns the
    report's path."""
    import matplotlib.pyplot as plt

    from common.io import atomic_write, atomic_write_text
    from findings import figures as F

    out_dir = grid.output_dir / L.FINDINGS_DIR
    n_boot = (grid.rewards or {}).get("n_boot", 1000)
    state = T.progress(grid)
    tables = T.gather(grid, n_boot=n_boot, state=state)
    found = R.evaluate(tables)
    tables[L.COMPARISONS] = R.comparisons_table(found)
    T.write(tables, out_dir)
    quality = S.mean_col(tables[L.RUNS]["quality_metric"].iloc[0])
    drawn = []
    for name, fig in F.draw(tables, quality).items():
        if fig is not None:
            atomic_write(out_dir / name, lambda tmp, fig=fig: fig.savefig(tmp, dpi=110, format="png"))
            plt.close(fig)
            drawn.append(name)
    summary = {"grid": str(grid.output_dir), "grid_sha256": hashlib.sha256(grid.text.encode()).hexdigest(),
               "quality": quality, "figures": drawn, "timings": read_timings(grid),
               "planned_runs": len(grid.points), "missing_runs": state["missing"],
               "incomplete_runs": state["incomplete"], "findings": [f.to_dict() for f in found]}  # fmt: skip
    atomic_write_text(out_dir / L.SUMMARY, json.dumps(_json_safe(summary), indent=1) + "\n")
    path = out_dir / L.REPORT
    atomic_write_text(path, markdown(grid, found, tables, drawn, read_timings(grid), state))
    return path
