"""Command line of the training backend.

    python -m irl train --config configs/demo_mle.yaml [--field value ...]   # train (see irl/train.py)
    python -m irl train --help                                               # every config field
    python -m irl data --out data/math                                      # write the built-in task as JSONL

`train` parses its options before any work, so `--help` and a bad flag answer before data or models load; the
config is transformers' TrainingArguments, whose module imports torch, so that costs the torch import. A
command's own errors (bad config, data or model path) print as one line and exit with status 1.
"""

import sys


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    command, rest = (argv[0], argv[1:]) if argv else ("--help", [])
    if command == "train":
        from irl.config import ConfigError, load_config

        try:
            cfg = load_config(rest)  # --help exits here, before data or models load
        except ConfigError as e:
            sys.exit(f"error: {e}")
        from irl.data import DataError
        from irl.model import ModelError
        from irl.train import run

        try:
            run(cfg)
        except (ConfigError, DataError, ModelError) as e:
            sys.exit(f"error: {e}")
    elif command == "data":
        from irl.data import export_builtin

        export_builtin(rest)
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main()
