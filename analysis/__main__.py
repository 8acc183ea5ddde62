"""Command line of the analysis stage.

    python -m analysis sweep   --run runs/demo/mle [...]          # decoding grid -> samples and aggregate tables
    python -m analysis rewards --checkpoint <dir> --data <...>    # per-token rewards of a checkpoint
    python -m analysis <command> --help                           # the options of each
"""

import sys


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    command, rest = (argv[0], argv[1:]) if argv else ("--help", [])
    if command == "sweep":
        from analysis.sweep import main as run
    elif command == "rewards":
        from analysis.rewards import main as run
    else:
        sys.exit(__doc__)
    run(rest)


if __name__ == "__main__":
    main()
