"""Command line of the analysis stage.

    python -m analysis sweep   --run runs/demo/mle [...]          # decoding grid -> samples and aggregate tables
    python -m analysis rewards --checkpoint <dir> --data <...>    # per-token rewards of a checkpoint
    python -m analysis <command> --help                           # the options of each

Options are parsed (analysis/cli.py) before the stage's module, and torch with it, is imported. A command's
own errors print as one line and exit with status 1.
"""

import sys


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    command, rest = (argv[0], argv[1:]) if argv else ("--help", [])
    if command not in ("sweep", "rewards"):
        sys.exit(__doc__)
    from analysis import cli

    args = (cli.sweep_parser() if command == "sweep" else cli.rewards_parser()).parse_args(rest)  # --help, bad flags
    if command == "sweep":
        try:  # values out of range, before torch is imported
            cli.check_asked(args.checkpoints, args.samples, args.limit, args.max_new_tokens, args.batch_size)
        except cli.SweepError as e:
            sys.exit(f"error: {e}")
        from analysis.sweep import main as run
    else:
        from analysis.rewards import main as run
    run(rest)


if __name__ == "__main__":
    main()
