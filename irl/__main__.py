"""Command line of the training backend.

    python -m irl train --config configs/demo_mle.yaml [--field value ...]   # train (see irl/train.py)
    python -m irl train --help                                               # every config field
    python -m irl train --config configs/demo_mle.yaml --dry_run             # predicted peak memory, no training
    python -m irl pretrain --config configs/base.yaml [--field value ...]    # pretrain a base model (irl/pretrain.py)
    python -m irl export --run build/base/run --out models/base             # ship a pretraining run's checkpoint

`train` parses its options before any work, so `--help` and a bad flag answer before data or models load; the
config is transformers' TrainingArguments, whose module imports torch, so that costs the torch import. A
command's own errors (bad config, data or model path, a damaged file of a run) print as one line and exit with
status 1. Data is made by the floor below (`python -m tasks`).
"""

import sys


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    command, rest = (argv[0], argv[1:]) if argv else ("--help", [])
    if command == "train":
        from irl.config import ConfigError, load_config

        dry_run = "--dry_run" in rest  # irl/memory.py: predict the run's peak memory and stop
        try:
            cfg = load_config([a for a in rest if a != "--dry_run"])  # --help exits here, before data or models load
        except ConfigError as e:
            sys.exit(f"error: {e}")
        from irl.data import DataError
        from common.io import FileError
        from irl.memory import dry_run_train
        from irl.model import ModelError
        from irl.train import run

        try:
            dry_run_train(cfg) if dry_run else run(cfg)
        except (ConfigError, DataError, ModelError, FileError) as e:
            sys.exit(f"error: {e}")
    elif command in ("pretrain", "export"):
        from irl.config import ConfigError
        from irl.data import DataError
        from common.io import FileError
        from irl.model import ModelError
        from irl.pretrain import export_main, main as pretrain_main

        try:
            (pretrain_main if command == "pretrain" else export_main)(rest)
        except (ConfigError, DataError, ModelError, FileError) as e:
            sys.exit(f"error: {e}")
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main()
