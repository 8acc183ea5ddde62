"""The experiment grid: one YAML file gives one run per point under one directory, trained (a finished run is
kept, an interrupted one resumed), swept over decodings and scored for rewards.

    python -m findings grid --config configs/findings/quick.yaml
    ACCELERATE_USE_CPU=1 accelerate launch --multi_gpu --num_processes 2 -m findings grid --config ...  # 2 CPU procs
    accelerate launch --num_processes 4 -m findings grid --config ...                                  # 4 GPUs

The YAML file:

    output_dir: runs/findings/quick          # the grid directory
    base: {model: small, max_steps: 250, ...}   # TrainConfig fields of every run
    methods:                                 # named presets of fields, for the `method` axis
      - {name: mle, objective: mle, beta: 0.0}
      - {name: iqlearn-lam0.1, objective: iqlearn, lam: 0.1}
    grid:                                    # sub-grids; the plan is the union of their points
      - axes: {method: [mle, iqlearn-lam0.1], seed: [0, 1, 2]}      # the product of the axes
      - axes: {method: [mle], train_size: [250, 1000], seed: [0, 1, 2]}
        decodings: {temperatures: [0], beams: [1]}                 # this sub-grid's cells (and top_p, min_p)
        rewards: false                                             # no reward extraction for these runs
    sweep: {temperatures: [0, 0.5, 1], top_p: [0.9, 1], beams: [1, 4], samples: 5, ...}  # analysis.sweep.sweep options
    rewards: {limit: 50, n_boot: 1000, preferences: null}          # or false; preferences: a JSONL of pairs
    findings: {quality: exact_match}         # the report's quality metric (default: the task's first)

An axis is any TrainConfig field (objective, lam, beta, alpha, seed, train_size, ...) or `method`, whose values
are preset names (or inline presets `{name: ..., field: value}`). A point's fields are the base's, then its
method preset's, then its other axes' values; every point's config is built through irl.config's loader, so a
wrong field or value fails before any work, naming it. Run names read as the point: the method, then
`<field><value>` for each other axis, then `seed<k>` as a subdirectory: `iqlearn-lam0.1/seed1`,
`mle-train_size250/seed0` (an axis value None leaves the field to the base or its default, and out of the
name). Two sub-grids naming the same point must give it the same fields; it is trained once and swept over
both sub-grids' cells.

Steps, each skipping what is on disk: (1) train every point in order: a run whose last checkpoint is at
max_steps is kept (after checking that the grid's fields still match its config.yaml), a run with a config.yaml
and no final checkpoint is resumed (`resume`, as demo.py does), others start; (2) sweep every run's last
checkpoint with analysis.sweep.sweep (cells already written are skipped); (3) extract rewards on the task's
preference set and on the sweep's samples (`extract_rewards`). Under `accelerate launch` every process runs the
same plan: training and the sweep share their work across processes, and only the main process writes (reward
extraction runs on it alone).
"""

import inspect
import itertools
import re
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import yaml

from analysis import schema as S
from common.io import FileError, read_yaml
from findings import layout as L
from irl import runs
from irl.runs import checkpoint_config, read_config

TOP_KEYS = ("output_dir", "base", "methods", "grid", "sweep", "rewards", "findings")
SUBGRID_KEYS = ("axes", "decodings", "rewards")
CELL_KEYS = ("temperatures", "top_p", "min_p", "beams")  # a sub-grid's decodings (or the sweep's, for all)
METHOD = "method"
SEED = "seed"
REWARD_KEYS = ("limit", "n_boot", "preferences")
FINDINGS_KEYS = ("quality",)


class GridError(ValueError):
    """The grid file is invalid or disagrees with what is on disk; the message names the key or run."""


@dataclass
class Point:
    """One run of the grid: its name under the grid directory, its TrainConfig fields, the decoding cells it is
    swept over and whether its rewards are extracted."""

    name: str
    values: dict
    temperatures: tuple
    beams: tuple
    rewards: bool = True
    top_p: tuple = (1.0,)  # the sampled cells' filters (analysis.sweep.decoding_grid)
    min_p: tuple = (0.0,)


@dataclass
class Grid:
    """A grid file, expanded: the grid directory, the points in plan order, the sweep's options (besides the
    cells), the reward settings (None: none extracted), the findings settings and the file's text."""

    output_dir: Path
    points: list[Point]
    sweep: dict
    rewards: dict | None
    findings: dict
    text: str

    def run_dir(self, point: Point) -> Path:
        return self.output_dir / point.name


# ---------------------------------------------------------------------------------------------------------------
# Expanding a grid file


def _text(value) -> str:
    """A value as it appears in a run name: 0.1, 250, true, a,b (lists); characters unsafe in paths become _."""
    if isinstance(value, bool):
        text = str(value).lower()
    elif isinstance(value, float):
        text = f"{value:g}"
    elif isinstance(value, (list, tuple)):
        text = ",".join(map(_text, value))
    else:
        text = str(value)
    return re.sub(r"[^\w.,=+-]", "_", text)


def _presets(methods) -> dict[str, dict]:
    found = {}
    for preset in methods or []:
        if not isinstance(preset, dict) or "name" not in preset:
            raise GridError(f"methods: each preset is a mapping with a name, got {preset!r}")
        if preset["name"] in found:
            raise GridError(f"methods: preset {preset['name']!r} is given twice")
        found[preset["name"]] = {k: v for k, v in preset.items() if k != "name"}
    return found


def _method(value, presets: dict) -> tuple[str, dict]:
    """(name, fields) of one value of the method axis: a preset name, or an inline preset."""
    if isinstance(value, dict):
        if "name" not in value:
            raise GridError(f"method axis: an inline preset needs a name, got {value!r}")
        return str(value["name"]), {k: v for k, v in value.items() if k != "name"}
    if value not in presets:
        raise GridError(f"method axis: no preset named {value!r} (methods: {sorted(presets)})")
    return str(value), presets[value]


def expand(spec: dict) -> list[Point]:
    """The points of a grid file's mapping, in plan order (sub-grids in order, each the product of its axes in
    the order written, the last axis varying fastest); a point named twice is one point."""
    unknown = sorted(set(spec) - set(TOP_KEYS))
    if unknown:
        raise GridError(f"unknown key(s) {unknown}; a grid file has {list(TOP_KEYS)}")
    if not spec.get("grid"):
        raise GridError("grid: give at least one sub-grid ({axes: {field: [values], ...}})")
    base, presets = dict(spec.get("base") or {}), _presets(spec.get("methods"))
    sweep = spec.get("sweep") or {}
    points: dict[str, Point] = {}
    for i, sub in enumerate(spec["grid"]):
        where = f"grid[{i}]"
        if not isinstance(sub, dict) or not isinstance(sub.get("axes"), dict) or not sub["axes"]:
            raise GridError(f"{where}: expected {{axes: {{field: [values], ...}}}}")
        unknown = sorted(set(sub) - set(SUBGRID_KEYS))
        if unknown:
            raise GridError(f"{where}: unknown key(s) {unknown}; a sub-grid has {list(SUBGRID_KEYS)}")
        axes = {k: v if isinstance(v, list) else [v] for k, v in sub["axes"].items()}
        for field in ("output_dir", "resume"):
            if field in axes or field in base:
                raise GridError(f"{where}: {field} is set by the grid, not by an axis or the base")
        cells = {**{k: sweep[k] for k in CELL_KEYS if k in sweep}, **(sub.get("decodings") or {})}
        if set(cells) - set(CELL_KEYS):
            raise GridError(f"{where}.decodings: only {', '.join(CELL_KEYS)}, got {sorted(cells)}")
        temperatures = tuple(float(t) for t in cells.get("temperatures", (0.0, 0.25, 0.5, 0.75, 1.0)))
        beams = tuple(int(b) for b in cells.get("beams", (1, 2, 4, 8)))
        top_p = tuple(float(p) for p in cells.get("top_p", (1.0,)))
        min_p = tuple(float(p) for p in cells.get("min_p", (0.0,)))
        for combo in itertools.product(*axes.values()):
            chosen = dict(zip(axes, combo))
            values, parts = dict(base), []
            if METHOD in chosen:
                name, fields = _method(chosen.pop(METHOD), presets)
                values.update(fields)
                parts.append(name)
            seed = chosen.pop(SEED, None)
            chosen = {k: v for k, v in chosen.items() if v is not None}  # None: the base's (or default) value
            values.update(chosen)
            parts += [f"{k}{_text(v)}" for k, v in chosen.items()]
            name = "-".join(parts) or "run"
            if SEED in axes:
                values[SEED] = seed
                name += f"/seed{_text(seed)}"
            point = Point(name, values, temperatures, beams, sub.get("rewards", True) is not False, top_p, min_p)
            if name in points:
                old = points[name]
                if old.values != values:
                    diff = sorted(k for k in old.values.keys() | values.keys() if old.values.get(k) != values.get(k))
                    raise GridError(f"{where}: run {name!r} is planned twice with different fields {diff}")
                old.temperatures = tuple(sorted(set(old.temperatures) | set(temperatures)))
                old.beams = tuple(sorted(set(old.beams) | set(beams)))
                old.top_p = tuple(sorted(set(old.top_p) | set(top_p)))
                old.min_p = tuple(sorted(set(old.min_p) | set(min_p)))
                old.rewards = old.rewards or point.rewards
            else:
                points[name] = point
    return list(points.values())


def check_sweep_options(options: dict) -> None:
    """The sweep's options (besides the run directories and the cells) are analysis.sweep.sweep's: checked before
    any training (importing the sweep imports torch, so `plan` and `report` leave it)."""
    from analysis.sweep import sweep

    allowed = set(inspect.signature(sweep).parameters) - {"run_dirs", "checkpoints", *CELL_KEYS}
    unknown = sorted(set(options) - allowed)
    if unknown:
        raise GridError(f"sweep: unknown option(s) {unknown}; analysis.sweep.sweep takes {sorted(allowed)}")


def _reward_settings(spec: dict, sweep: dict) -> dict | None:
    rewards = spec.get("rewards", {})
    if rewards is False:
        return None
    unknown = sorted(set(rewards or {}) - set(REWARD_KEYS))
    if unknown:
        raise GridError(f"rewards: unknown key(s) {unknown}; rewards has {list(REWARD_KEYS)} (or is false)")
    return {"limit": sweep.get("limit"), "n_boot": 1000, "preferences": None, **(rewards or {})}


def load_grid(path) -> Grid:
    """Read and expand a grid file; every point's config is built once here, so a bad field fails now."""
    try:
        spec = read_yaml(path)
    except FileError as e:
        raise GridError(f"--config {e}") from None
    text = Path(path).read_text()
    if "output_dir" not in spec:
        raise GridError(f"{path}: a grid file is a mapping with output_dir, base, methods, grid, sweep, ...")
    sweep = {k: v for k, v in (spec.get("sweep") or {}).items() if k not in CELL_KEYS}
    findings = dict(spec.get("findings") or {})
    if set(findings) - set(FINDINGS_KEYS):
        raise GridError(f"findings: unknown key(s) {sorted(set(findings) - set(FINDINGS_KEYS))}; it has "
                        f"{list(FINDINGS_KEYS)}")  # fmt: skip
    grid = Grid(Path(spec["output_dir"]), expand(spec), sweep, _reward_settings(spec, sweep), findings, text)
    for point in grid.points:
        build_config(point.values, grid.run_dir(point))
    return grid


def build_config(values: dict, output_dir, resume: bool = False):
    """The TrainConfig of a point, through irl.config's loader (a YAML file of its fields, then flags), so the
    fields' names, types and checks are the training command's own."""
    from irl.config import ConfigError, load_config

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "point.yaml"
        path.write_text(yaml.safe_dump({**values, "output_dir": str(output_dir)}, sort_keys=False))
        try:
            return load_config(["--config", str(path), *(["--resume"] if resume else [])])
        except ConfigError as e:
            raise ConfigError(f"run {output_dir}: {e}") from None


# ---------------------------------------------------------------------------------------------------------------
# Running it


def _check_unchanged(run_dir: Path, cfg, values: dict) -> None:
    """Refuse a run on disk whose config differs from the grid's fields for it (a kept result would not be what
    the grid file says)."""
    from irl.config import read_config

    saved = read_config(run_dir / runs.CONFIG)
    changed = sorted(k for k in values if getattr(saved, k) != getattr(cfg, k))
    if changed:
        diffs = ", ".join(f"{k}: {getattr(saved, k)!r} there, {getattr(cfg, k)!r} in the grid" for k in changed)
        raise GridError(f"{run_dir} was trained with other settings ({diffs}); delete it or restore the grid file")


def train_point(grid: Grid, point: Point, callbacks=None) -> str:
    """Train one point, or finish it: "kept" (finished run found), "resumed" or "trained"."""
    from irl.train import train

    run_dir = grid.run_dir(point)
    cfg = build_config(point.values, run_dir)
    status = "trained"
    if (run_dir / runs.CONFIG).exists():
        _check_unchanged(run_dir, cfg, point.values)
        last = runs.last_checkpoint(run_dir)
        if last is not None and runs.step_of(last) == cfg.max_steps:
            return "kept"
        cfg, status = build_config(point.values, run_dir, resume=True), "resumed"
    train(cfg, callbacks=callbacks)
    return status


def held_out_split(run_dir: Path) -> str:
    """The split a run's sweep decodes by default (irl.data.held_out_split of its data)."""
    from irl.config import read_config
    from irl.data import held_out_split as split_of, load_splits

    return split_of(load_splits(read_config(Path(run_dir) / runs.CONFIG)))


def preference_file(config: dict, settings: dict) -> Path | None:
    """The preference pairs a run's rewards are scored on besides the built-in math set: the grid's
    `rewards.preferences` file, else a built-in text task's data/<task>/preferences.jsonl when it exists."""
    from tasks.text import TASKS, task_dir

    if settings["preferences"]:
        return Path(settings["preferences"])
    if config["data"] in TASKS:
        path = task_dir(config["data"]) / "preferences.jsonl"
        return path if path.is_file() else None
    return None


def extract_rewards(checkpoint: Path, split: str, settings: dict) -> str:
    """Rewards of a checkpoint on the task's preference set and on its sweep's default cell (sampling at the
    highest temperature), each beside the likelihood baselines: for the math task analysis.report.reward_report
    (the built-in preference set, the first `limit` test problems); for other data the sweep cell's first `limit`
    prompts and the pairs of `preference_file` (analysis.rewards.score_checkpoint, as analysis.report's
    preference_report). Skips what is written; returns "kept" or "extracted"."""
    from analysis import reward_data as D
    from analysis.cli import BUILTIN_PREFERENCES
    from analysis.report import reward_report
    from analysis.rewards import Data, load, score_checkpoint

    limit, n_boot = settings["limit"], settings["n_boot"]
    samples = D.read_sweep(runs.sweep_dir(checkpoint, split))
    decoding = D.default_decoding(samples)
    config = checkpoint_config(checkpoint)
    math = config["data"] == "math"
    pairs = None if math else preference_file(config, settings)
    names = [runs.sweep_rewards_name(split, decoding, limit), runs.rewards_name(BUILTIN_PREFERENCES, limit) if math
             else runs.pairs_rewards_name(pairs) if pairs else None]  # fmt: skip
    if all((runs.rewards_dir(checkpoint, n) / runs.SUMMARY_FILE).is_file() for n in names if n):
        return "kept"
    if math:
        reward_report(checkpoint, sweep_split=split, limit=limit, n_boot=n_boot)
        return "extracted"
    cell = samples[samples[S.DECODING] == decoding]
    if limit is not None:
        cell = cell[cell[S.PROMPT_ID].isin(cell[S.PROMPT_ID].drop_duplicates()[:limit])]
    data = [Data(names[0], D.sweep_rows(cell))]
    if pairs is not None:
        data.append(load(str(pairs), checkpoint, name=names[1]))
    score_checkpoint(checkpoint, data, n_boot=n_boot)
    return "extracted"


def _state():
    """This process's place among those `accelerate launch` started (CPU processes join one group only when
    told, as in analysis/sweep.py)."""
    import torch
    from accelerate import PartialState

    return PartialState(cpu=not torch.cuda.is_available())


def train_all(grid: Grid, callbacks=None) -> dict[str, str]:
    """Train every point in plan order (`train_point`); returns each run's status by name."""
    state = _state()
    statuses = {}
    for i, point in enumerate(grid.points, 1):
        state.wait_for_everyone()  # every process sees the same run directories before deciding
        t = time.perf_counter()
        statuses[point.name] = train_point(grid, point, callbacks)
        if state.is_main_process:
            print(f"[grid {i}/{len(grid.points)}] {point.name}: {statuses[point.name]} "
                  f"({time.perf_counter() - t:.0f} s)", flush=True)  # fmt: skip
    return statuses


def run_grid(grid: Grid, callbacks=None) -> dict[str, float]:
    """Train, sweep and score every point of `grid` (module docstring); returns each stage's wall time in s."""
    from analysis.sweep import sweep
    from common.io import atomic_write_text

    check_sweep_options(grid.sweep)
    state = _state()
    say = print if state.is_main_process else (lambda *a, **k: None)
    if state.is_main_process:
        atomic_write_text(grid.output_dir / L.GRID_FILE, grid.text)
    seconds = {}
    start = time.perf_counter()
    train_all(grid, callbacks)
    seconds["train"] = time.perf_counter() - start

    t = time.perf_counter()
    by_cells: dict[tuple, list[Path]] = {}
    for point in grid.points:
        cells = (point.temperatures, point.beams, point.top_p, point.min_p)
        by_cells.setdefault(cells, []).append(grid.run_dir(point))
    for (temperatures, beams, top_p, min_p), run_dirs in by_cells.items():
        state.wait_for_everyone()
        sweep(run_dirs, "last", temperatures, beams, **grid.sweep, top_p=top_p, min_p=min_p)
    seconds["sweep"] = time.perf_counter() - t
    say(f"[grid] swept {len(grid.points)} runs in {seconds['sweep']:.0f} s", flush=True)

    t = time.perf_counter()
    if grid.rewards is not None and state.is_main_process:
        splits = {}
        for point in (p for p in grid.points if p.rewards):
            run_dir = grid.run_dir(point)
            data = read_config(run_dir)["data"]
            if data not in splits:  # the held-out split depends on which splits the data has
                splits[data] = grid.sweep.get("split") or held_out_split(run_dir)
            extract_rewards(runs.last_checkpoint(run_dir), splits[data], grid.rewards)
    state.wait_for_everyone()
    seconds["rewards"] = time.perf_counter() - t
    say(f"[grid] rewards in {seconds['rewards']:.0f} s", flush=True)
    return seconds


