"""Command line of the data floor.

    python -m tasks math --out data/math                  # the built-in math task's splits as JSONL (tasks/math.py)
    python -m tasks text --out data                       # data/summarize/ and data/translate/ (tasks/text.py)
    python -m tasks corpus --out build/base/corpus        # the base model's pretraining corpus (tasks/corpus.py)

`text` and `corpus` download the pinned Debian packages once into .cache/debian (`--cache` for another).
"""

import sys


def main(argv=None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    command, rest = (argv[0], argv[1:]) if argv else ("--help", [])
    if command == "math":
        from tasks.math import main as run
    elif command == "text":
        from tasks.text import main as run
    elif command == "corpus":
        from tasks.corpus import main as run
    else:
        sys.exit(__doc__)
    from tasks.debian import FetchError

    try:
        run(rest)
    except FetchError as e:  # a package the archive no longer carries, or apt's own error: one line naming it
        sys.exit(f"error: {e}")


if __name__ == "__main__":
    main()
