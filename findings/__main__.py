"""Command line of the experiment layer.

    python -m findings run --config configs/findings/quick.yaml      # grid, then report (make findings-quick)
    python -m findings grid --config configs/findings/full.yaml      # train, sweep and score every run
    python -m findings report --config configs/findings/full.yaml    # tables, rules, figures, report.md
    python -m findings plan --config configs/findings/full.yaml      # the runs the grid file gives, nothing run
    ACCELERATE_USE_CPU=1 accelerate launch --multi_gpu --num_processes 2 -m findings run --config ...

`run` and `report` print the report's path as their last line. Errors of the grid file, a config, the data, a
model, the sweep, the rewards or a result file print as one line (`error: ...`, exit status 1).
"""

import argparse
import sys
import time


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m findings", description=__doc__.split("\n")[0])
    parser.add_argument("command", choices=("run", "grid", "report", "plan"))
    parser.add_argument("--config", required=True, help="The grid file (configs/findings/*.yaml).")
    args = parser.parse_args(argv)

    from common.io import FileError
    from findings.grid import GridError, load_grid
    from irl.config import ConfigError

    errors = (GridError, ConfigError, FileError)
    try:
        grid = load_grid(args.config)
        if args.command == "plan":
            for point in grid.points:
                print(f"{grid.output_dir / point.name}: {point.values}")
            print(f"{len(grid.points)} runs")
            return
        from analysis.rewards import RewardError
        from analysis.sweep import SweepError
        from irl.data import DataError
        from irl.model import ModelError

        errors += (RewardError, SweepError, DataError, ModelError)
        main_process = True
        if args.command in ("run", "grid"):
            from accelerate import PartialState

            from findings.grid import run_grid
            from findings.report import record_timing

            start = time.perf_counter()
            seconds = run_grid(grid)
            seconds["total"] = time.perf_counter() - start
            main_process = PartialState().is_main_process
            if main_process:
                record_timing(grid, args.command, seconds, config=args.config)
        if args.command in ("run", "report") and main_process:
            from findings.report import write_report

            t = time.perf_counter()
            path = write_report(grid)
            print(f"[findings] report in {time.perf_counter() - t:.0f} s")
            print(path)
    except errors as e:
        sys.exit(f"error: {e}")
    finally:
        torch = sys.modules.get("torch")
        # leave the process group before the interpreter tears down gloo's threads (under accelerate launch)
        if torch is not None and torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()


if __name__ == "__main__":
    main()
