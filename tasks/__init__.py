"""Making data: the floor below training. Nothing here imports torch, training or analysis.

    tasks/math.py      the built-in math task (GSM8K-style problems from reasoning-gym), generated in memory
    tasks/text.py      the real-text tasks summarize and translate, built from Debian packages into data/<task>/
    tasks/corpus.py    the English pretraining corpus of the shipped base model
    tasks/debian.py    the pinned Debian packages and their download (the only network access)
    tasks/sources.py   readers of what the packages hold: man pages, gettext catalogs, reStructuredText, WordNet
    tasks/roff.py      man pages (roff) rendered to plain text

Commands: `python -m tasks math|text|corpus --help`.
"""
