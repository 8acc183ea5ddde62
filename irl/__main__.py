"""Command line of the training backend.

    python -m irl train --config configs/demo_mle.yaml [--field value ...]   # train (see irl/train.py)
    python -m irl train --help                                               # every config field
    python -m irl train --config configs/demo_mle.yaml --dry_run             # predicted peak memory, no training
    python -m irl data --out data/math                                      # write the built-in task as JSONL
    python -m irl pretrain --config configs/base.yaml [--field value ...]    # pretrain a base model (irl/pretrain.py)
    python -m irl export --run build/base/run --out models/base             # ship a pretraining run's checkpoint
    python -m irl corpus --out data/corpus                                  # English text corpus (irl/corpus.py)
    python -m irl tasks --out data                                          # summarize/translate (irl/text_tasks.py)

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

        dry_run = "--dry_run" in rest  # irl/memory.py: predict the run's peak memory and stop
        try:
            cfg = load_config([a for a in rest if a != "--dry_run"])  # --help exits here, before data or models load
        except ConfigError as e:
            sys.exit(f"error: {e}")
        from irl.data import DataError
        from irl.memory import dry_run_train
        from irl.model import ModelError
        from irl.train import run

        try:
            dry_run_train(cfg) if dry_run else run(cfg)
        except (ConfigError, DataError, ModelError) as e:
            sys.exit(f"error: {e}")
    elif command in ("pretrain", "export"):
        from irl.config import ConfigError
        from irl.data import DataError
        from irl.model import ModelError
        from irl.pretrain import export_main, main as pretrain_main

        try:
            (pretrain_main if command == "pretrain" else export_main)(rest)
        except (ConfigError, DataError, ModelError) as e:
            sys.exit(f"error: {e}")
    elif command == "data":
        from irl.data import export_builtin

        export_builtin(rest)
    elif command == "corpus":
        from irl.corpus import main as corpus_main

        corpus_main(rest)
    elif command == "tasks":
        from irl.text_tasks import main as tasks_main

        tasks_main(rest)
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main()
