"""Built-in real-text tasks made from Debian packages (tasks/debian.py), and the split rule they share with the
corpus builder (tasks/corpus.py).

    python -m tasks text --out data                          # data/summarize/ and data/translate/ (committed)
    python -m tasks text --out data --cache .cache/debian    # the package cache (the corpus builder's)

- `summarize`: a man page's DESCRIPTION (its first sentences, at most MAX_DOCUMENT_WORDS words) -> the
  description in its NAME line ("ls - list directory contents" -> "list directory contents"); ROUGE.
- `translate`: an English gettext msgid -> its French msgstr, from the packages' .mo catalogs; chrF, BLEU.

Each task directory holds train/validation/test.jsonl ({"id", "prompt", "completion", ...}), preferences.jsonl
(pairs on the test split) and a README with sizes, sources, licences and the trivial baselines' scores
(analysis/baselines.py). Prompts end without trailing whitespace and completions start with one space, so
that a byte-level BPE tokenises the completion's first word as in running text. `data: summarize` or
`data: translate` trains on them (irl.data.load_splits); TASKS declares their metrics.

Splits. An item's split is a hash of a stable key (`split_of`): the summary of a man page, the msgid of a
message. The corpus builder applies the same rule to every man page and every msgid it reads, before any
task is built, leaves out those whose key falls in validation or test, and scrubs the held-out inputs and
references from the rest; pages or messages that share a summary or a msgid share a split.
"""

import hashlib
import json
import random
import re
from collections import Counter
from pathlib import Path

from common.io import atomic_write_text
from tasks import debian, roff, sources

TASK_SPLITS = ("train", "validation", "test")
# Fractions of keys in the held-out splits; the rest is train.
TEST_FRACTION = 0.1
VALIDATION_FRACTION = 0.1

MAX_DOCUMENT_WORDS = 120
MIN_DOCUMENT_WORDS = 20
SUMMARY_WORDS = (2, 20)
SENTENCE_WORDS = (4, 30)


def normalize(text: str) -> str:
    """Whitespace collapsed to single spaces, ends stripped: the form keys and held-out checks compare."""
    return " ".join(text.split())


def split_of(task: str, key: str) -> str:
    """The split of an item of `task` with stable key `key`: "test", "validation" or "train", from the first
    8 bytes of sha256(task + "\\n" + key) read as a number in [0, 1). The one split rule of the tasks and the
    corpus builder."""
    u = int.from_bytes(hashlib.sha256(f"{task}\n{key}".encode()).digest()[:8], "big") / 2**64
    return "test" if u < TEST_FRACTION else "validation" if u < TEST_FRACTION + VALIDATION_FRACTION else "train"


# ---------------------------------------------------------------------------------------------------------------
# summarize: man page -> candidate item

_NAME_DASH = re.compile(r"\s+(?:\\-|-|–|—)+\s+")


def summary_key(summary: str) -> str:
    """The split key of a summarisation item: its summary, case and whitespace folded."""
    return normalize(summary).lower()


def name_line(sections) -> tuple[str, str] | None:
    """(names, summary) from a converted page's NAME section: "ls, dir - list directory contents" ->
    ("ls, dir", "list directory contents"); None without a NAME section or a dash."""
    for heading, paragraphs in sections:
        if heading.upper() == "NAME":
            text = normalize(" ".join(paragraphs))
            parts = _NAME_DASH.split(text, maxsplit=1)
            if len(parts) == 2 and parts[0] and parts[1]:
                return parts[0], parts[1]
            return None
    return None


def description_excerpt(sections, max_words: int = MAX_DOCUMENT_WORDS) -> str:
    """The task input: the DESCRIPTION section's prose paragraphs (one-line paragraphs; no-fill blocks such as
    code and tables, which hold newlines, are left out), joined and cut to at most `max_words` words, at the
    last sentence end within them when that keeps at least half of them."""
    for heading, paragraphs in sections:
        if heading.upper() == "DESCRIPTION":
            words = normalize(" ".join(p for p in paragraphs if "\n" not in p)).split()
            if len(words) <= max_words:
                return " ".join(words)
            words = words[:max_words]
            ends = [i for i, w in enumerate(words) if w.endswith((".", "!", "?")) and i + 1 >= max_words // 2]
            return " ".join(words[: ends[-1] + 1] if ends else words)
    return ""


def summarize_candidate(sections) -> dict | None:
    """{"key", "names", "summary", "document"} for a converted man page, or None when it has no usable NAME
    line or DESCRIPTION (summary of SUMMARY_WORDS words, document of at least MIN_DOCUMENT_WORDS words)."""
    parsed = name_line(sections)
    if parsed is None:
        return None
    names, summary = parsed
    document = description_excerpt(sections)
    if not SUMMARY_WORDS[0] <= len(summary.split()) <= SUMMARY_WORDS[1]:
        return None
    if len(document.split()) < MIN_DOCUMENT_WORDS:
        return None
    return {"key": summary_key(summary), "names": names, "summary": summary, "document": document}


# ---------------------------------------------------------------------------------------------------------------
# translate: gettext message -> candidate pair

# Markup, format directives, escapes, accelerators, options and placeholders: a message holding one is not a
# plain sentence.
_NOT_PLAIN = re.compile(r"[%{}$\\<>_&@`|\t\n\[\]#=*~^]|--|\.\.\.|\s-\w|^\W")


def msgid_key(msgid: str) -> str:
    """The split key of a translation item (and of any msgid the corpus reads): the msgid, whitespace folded."""
    return normalize(msgid)


_PLAIN_END = re.compile(r"[\w.!?)»]$")


def is_plain_sentence(text: str) -> bool:
    """A plain sentence or phrase: SENTENCE_WORDS words, a capital first letter, ending in a letter, a digit,
    . ! ? or ), and free of markup, format directives, escapes, accelerators, options and placeholders (see
    _NOT_PLAIN). "Could not open the file." and "Whether the window is visible" are; "Save _As", "%s: not
    found", "Use --force" and "Options:" are not."""
    words = text.split()
    return (
        SENTENCE_WORDS[0] <= len(words) <= SENTENCE_WORDS[1]
        and text[:1].isupper()
        and bool(_PLAIN_END.search(text))
        and not _NOT_PLAIN.search(text)
    )


def translate_candidate(msgctxt, msgid: str, msgstr: str) -> dict | None:
    """{"key", "source", "target"} for a catalog message that is a plain sentence (is_plain_sentence) with a
    non-empty translation that differs from it, is free of the same markup (French quotes « » allowed) and
    ends the same way; None otherwise."""
    source, target = normalize(msgid), normalize(msgstr)
    if not (is_plain_sentence(msgid.strip()) and target and target != source):  # raw: no newline or tab inside
        return None
    if _NOT_PLAIN.search(msgstr.strip().replace("«", "").replace("»", "")) or not _PLAIN_END.search(target):
        return None
    return {"key": msgid_key(msgid), "source": source, "target": target}


# ---------------------------------------------------------------------------------------------------------------
# Prompts, items, splits

# Prompts end without trailing whitespace and completions start with one space, so that a byte-level BPE
# tokenises the completion's first word as in running text (" list", not "list").
PROMPTS = {
    "summarize": "Summarize: {input}\nSummary:",
    "translate": "Translate to French: {input}\nFrench:",
}

# Each task's quality metrics (names of analysis/metrics.py's modules, all higher-is-better), main one first: the
# headline of every table, and the metric the trivial baselines' settings are chosen by. analysis.schema.TASK_METRICS
# reads them from here.
METRICS = {"summarize": ("rougeLsum", "rouge1", "rouge2"), "translate": ("chrf", "bleu")}
TASKS = {task: {"metrics": metrics, "main": metrics[0]} for task, metrics in METRICS.items()}

DATA_DIR = Path(__file__).resolve().parent.parent / "data"


def task_dir(task: str) -> Path:
    """The committed JSONL directory of a built-in text task: data/<task>/."""
    if task not in TASKS:
        raise ValueError(f"unknown text task {task!r}; choose one of {sorted(TASKS)}")
    return DATA_DIR / task


def preferences_path(task: str) -> Path:
    """The committed preference pairs of a task's test split: data/<task>/preferences.jsonl."""
    return task_dir(task) / "preferences.jsonl"


def task_input(task: str, prompt: str) -> str:
    """The input text inside a task prompt (the inverse of PROMPTS[task].format)."""
    head, tail = PROMPTS[task].split("{input}")
    if not (prompt.startswith(head) and prompt.endswith(tail)):
        raise ValueError(f"not a {task} prompt: {prompt[:80]!r}")
    return prompt[len(head) : len(prompt) - len(tail)]


def task_splits(task: str) -> dict[str, list[dict]]:
    """The committed splits of a task as {split: rows} (every field kept), read without torch; training
    reads them through irl.data.load_splits."""
    out = {}
    for split in TASK_SPLITS:
        path = task_dir(task) / f"{split}.jsonl"
        with open(path, encoding="utf-8") as fh:
            out[split] = [json.loads(line) for line in fh if line.strip()]
    return out


def make_example(task: str, item_id: str, input_text: str, reference: str, **extra) -> dict:
    """A TRL prompt/completion row: prompt per PROMPTS (no trailing whitespace), completion " " + reference
    (task_input gives the input back from the prompt)."""
    template = PROMPTS[task]
    return {"id": item_id, "prompt": template.format(input=input_text), "completion": " " + reference, **extra}


def summarize_items(trees: dict[str, Path], versions: dict[str, str]) -> tuple[list[dict], dict]:
    """Summarisation examples of every man page in the trees ({package: dir}), with their split, deduplicated:
    one page per summary key (the first by package, section, name), and pages whose excerpt is shared with
    another summary dropped. Returns (examples with a "split" field, counts)."""
    by_key, counts = {}, {"pages": 0, "candidates": 0}
    for package in sorted(trees):
        for name, section, path in sorted(sources.man_files(trees[package]), key=lambda f: (f[1], f[0])):
            source = sources.read_man_source(path)
            if roff.roff_kind(source) != "man":
                continue
            counts["pages"] += 1
            item = summarize_candidate(roff.roff_to_sections(source))
            if item is None:
                continue
            counts["candidates"] += 1
            item |= {"package": package, "version": versions.get(package, ""), "page": f"{name}({section})"}
            by_key.setdefault(item["key"], item)
    counts["duplicate_summaries"] = counts["candidates"] - len(by_key)
    keys_of_document: dict[str, set] = {}
    for item in by_key.values():
        keys_of_document.setdefault(item["document"], set()).add(item["key"])
    items = [i for i in by_key.values() if len(keys_of_document[i["document"]]) == 1]
    counts["shared_excerpts"] = len(by_key) - len(items)
    examples = [
        make_example(
            "summarize",
            f"summarize/{i['package']}/{i['page']}",
            i["document"],
            i["summary"],
            split=split_of("summarize", i["key"]),
            package=i["package"],
            version=i["version"],
            page=i["page"],
        )
        for i in items
    ]
    return examples, counts


def translate_items(trees: dict[str, Path], versions: dict[str, str], lang: str = "fr") -> tuple[list[dict], dict]:
    """Translation examples of every `lang` catalog in the trees: plain-sentence messages with plain
    translations (translate_candidate), one per msgid key (the first by package and domain). Returns
    (examples with a "split" field, counts)."""
    by_key, counts = {}, {"messages": 0, "candidates": 0}
    for package in sorted(trees):
        for _, domain, path in sources.mo_files(trees[package], lang):
            for msgctxt, msgid, msgstr in sources.read_mo(path):
                counts["messages"] += 1
                pair = translate_candidate(msgctxt, msgid, msgstr)
                if pair is None:
                    continue
                counts["candidates"] += 1
                by_key.setdefault(
                    pair["key"], pair | {"package": package, "version": versions.get(package, ""), "domain": domain}
                )
    counts["duplicate_msgids"] = counts["candidates"] - len(by_key)
    examples = [
        make_example(
            "translate",
            f"translate/{p['package']}/{p['domain']}/{hashlib.sha256(p['key'].encode()).hexdigest()[:12]}",
            p["source"],
            p["target"],
            split=split_of("translate", p["key"]),
            package=p["package"],
            version=p["version"],
            domain=p["domain"],
        )
        for p in by_key.values()
    ]
    return examples, counts


def by_split(examples: list[dict]) -> dict[str, list[dict]]:
    """{split: examples sorted by id}, the "split" field removed."""
    out = {s: [] for s in TASK_SPLITS}
    for ex in examples:
        ex = dict(ex)
        out[ex.pop("split")].append(ex)
    return {s: sorted(rows, key=lambda r: r["id"]) for s, rows in out.items()}


# ---------------------------------------------------------------------------------------------------------------
# Preference pairs

_STOPWORDS = frozenset(
    "a an the of to in on for from with by and or not no is are be as at it its this that these those all any "
    "each into than then when which who whom whose what where how file files de des du la le les un une et en "
    "pour par sur dans est pas ne".split()
)
_WORD = re.compile(r"[^\W\d_]{4,}")


def content_words(text: str) -> list[re.Match]:
    """Words of at least 4 letters that are not stopwords, as matches (with their offsets)."""
    return [m for m in _WORD.finditer(text) if m.group().lower() not in _STOPWORDS]


def first_difference(a: str, b: str) -> int:
    """The offset of the first character where a and b differ (the shorter length when one is a prefix)."""
    n = min(len(a), len(b))
    return next((i for i in range(n) if a[i] != b[i]), n)


def corrupt_reference(completion: str, donors: list[str], rng: random.Random) -> str | None:
    """`completion` with one content word replaced by a content word of a donor reference (another item's)
    that is not a prefix of it nor it of the donor's word, case matched to the replaced word's first letter;
    None if there is no such pair."""
    targets = content_words(completion)
    if not targets:
        return None
    target = rng.choice(targets)
    t = target.group().lower()
    # neither word a prefix of the other, so the texts differ at a character both have (error_char)
    candidates = sorted({m.group() for d in donors for m in content_words(d)})
    candidates = [w for w in candidates if not (w.lower().startswith(t) or t.startswith(w.lower()))]
    if not candidates:
        return None
    word = rng.choice(candidates)
    word = word[0].upper() + word[1:] if target.group()[0].isupper() else word[0].lower() + word[1:]
    return completion[: target.start()] + word + completion[target.end() :]


def preference_pairs(examples: list[dict], seed: int = 0) -> list[dict]:
    """Pairs for each example (a split's rows): chosen = its completion (the reference); rejected =
    - kind "other_item": the completion of another example of the split with a different reference, drawn
      with a generator seeded by (seed, id);
    - kind "corrupted": the completion with one content word replaced by a content word from the references
      of 20 other drawn examples (corrupt_reference), with `error_char` the offset in `rejected` of its first
      character that differs from `chosen`.
    Fields: id, prompt_id, prompt, chosen, rejected, kind, source (= kind, the column analysis groups pairs
    by), error_char (corrupted pairs only)."""
    pairs = []
    for ex in examples:
        rng = random.Random(f"{seed}/{ex['id']}")
        others = [o for o in examples if normalize(o["completion"]).lower() != normalize(ex["completion"]).lower()]
        if not others:
            continue
        base = {"prompt_id": ex["id"], "prompt": ex["prompt"], "chosen": ex["completion"]}
        other = rng.choice(others)
        pairs.append(
            {
                "id": f"{ex['id']}#other_item",
                **base,
                "rejected": other["completion"],
                "kind": "other_item",
                "source": "other_item",
            }
        )
        donors = [o["completion"] for o in rng.sample(others, min(20, len(others)))]
        bad = corrupt_reference(ex["completion"], donors, rng)
        if bad is not None and bad != ex["completion"]:
            pairs.append(
                {
                    "id": f"{ex['id']}#corrupted",
                    **base,
                    "rejected": bad,
                    "kind": "corrupted",
                    "source": "corrupted",
                    "error_char": first_difference(ex["completion"], bad),
                }
            )
    return pairs


# ---------------------------------------------------------------------------------------------------------------
# Writing the tasks

DESCRIPTIONS = {
    "summarize": (
        "Summarisation of Unix manual pages: the input is a man page's DESCRIPTION section (its prose "
        f"paragraphs, cut to at most {MAX_DOCUMENT_WORDS} words at a sentence end when that keeps at least half "
        "of them), the reference the description in its NAME line (`ls - list directory contents` -> "
        "`list directory contents`). One page per summary (case and whitespace folded; the first by package, "
        "section and name); pages whose excerpt is shared by another summary are dropped."
    ),
    "translate": (
        "English to French translation of program messages: the input is a gettext msgid, the reference its "
        "French msgstr, from the packages' usr/share/locale/fr/LC_MESSAGES/*.mo catalogs (parsed by "
        "tasks.sources.read_mo; .mo files hold no fuzzy or untranslated entries). Only plain sentences and phrases "
        f"are kept: {SENTENCE_WORDS[0]}-{SENTENCE_WORDS[1]} words, a capital first letter, ending in a letter, "
        "digit, . ! ? or ), no format directive, markup, accelerator, option or placeholder on either side, a "
        "translation that differs from the msgid; one pair per msgid (the first by package and domain)."
    ),
}


def copyright_licenses(tree, package: str) -> list[str]:
    """The licence names in a package's machine-readable copyright file (usr/share/doc/<package>/copyright,
    `License:` fields), sorted; empty when the file is absent or not in that format."""
    path = Path(tree) / "usr/share/doc" / package / "copyright"
    if not path.is_file():
        return []
    names = re.findall(r"^License:[ \t]*(\S.*)$", path.read_text(encoding="utf-8", errors="replace"), re.M)
    return sorted({n.strip() for n in names})


def write_task(task: str, examples: list[dict], counts: dict, trees: dict, versions: dict, out, seed: int = 0) -> dict:
    """Write out/<task>/{train,validation,test}.jsonl, preferences.jsonl (test split) and README.md, the task's
    card (the trivial baselines' scores are added to it by `python -m analysis.baselines --card`). Returns
    {"sizes", "preferences"}."""
    out = Path(out) / task
    splits = by_split(examples)
    for split, rows in splits.items():
        atomic_write_text(out / f"{split}.jsonl", "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    pairs = preference_pairs(splits["test"], seed)
    atomic_write_text(out / "preferences.jsonl", "".join(json.dumps(p, ensure_ascii=False) + "\n" for p in pairs))
    sizes = {s: len(rows) for s, rows in splits.items()}
    kinds = dict(sorted(Counter(p["kind"] for p in pairs).items()))
    used = Counter(ex["package"] for ex in examples)
    package_lines = []
    for p in sorted(used):
        licenses = ", ".join(copyright_licenses(trees[p], p)) or "see its copyright file"
        package_lines.append(f"| {p} | {versions.get(p, '')} | {used[p]} | {licenses} |")
    prompt_shown = PROMPTS[task].replace("\n", "\\n")
    key_rule = "the summary, case and whitespace folded" if task == "summarize" else "the msgid, whitespace folded"
    size_table = "".join(f"| {s} | {n} |\n" for s, n in sizes.items())
    kind_counts = ", ".join(f"{k}: {v}" for k, v in kinds.items())
    package_table = "\n".join(package_lines)
    text = f"""# data/{task}/

{DESCRIPTIONS[task]}

Built by `python -m tasks text --out data` (tasks/text.py) from the pinned Debian packages of
tasks.debian.PACKAGES, downloaded once into `.cache/debian` (the corpus builder's cache; `--cache` for another).
The same packages give byte-identical files.

## Format

`train.jsonl`, `validation.jsonl`, `test.jsonl`: one `{{"id", "prompt", "completion", ...}}` per line (TRL's
prompt/completion convention; `package`, `version` and the page or catalog domain say where it came from).
The prompt is `{prompt_shown}` and ends without trailing whitespace; the completion is the reference with
ONE leading space, so that a byte-level BPE tokenises its first word as in running text. Train on it with
`data: {task}` in a config (irl/data.py). Metrics: {", ".join(TASKS[task]["metrics"])} (analysis/metrics.py;
the main one {TASKS[task]["main"]}; higher is better for all).

Splits come from a hash of each item's key (tasks.text.split_of on {key_rule}): {TEST_FRACTION:.0%} test,
{VALIDATION_FRACTION:.0%} validation, the rest train, so items that share a key share a split and no test prompt
is in train. The corpus builder (tasks/corpus.py) applies the same rule and leaves every validation and test
item out of the pretraining corpus.

| split | examples |
|---|---|
{size_table}
Build counts: {json.dumps(counts)}.

`preferences.jsonl`: {len(pairs)} pairs on the test split ({kind_counts}), fields `id, prompt_id, prompt,
chosen, rejected, kind, source, error_char`. `chosen` is the reference completion; `rejected` is another test
item's completion (`other_item`) or the reference with one content word replaced by a content word of another
test reference (`corrupted`, with `error_char` the offset in `rejected` of the first character that differs
from `chosen`). `source` repeats `kind` for `python -m analysis rewards --data data/{task}/preferences.jsonl`,
which groups pairs by it.

## Sources and licences

Every text keeps the licence of the package it comes from (its `usr/share/doc/<package>/copyright`):

| package | version | examples | licences named in its copyright file |
|---|---|---|---|
{package_table}
"""
    atomic_write_text(out / "README.md", text)
    return {"sizes": sizes, "preferences": kinds}


def build_tasks(trees: dict[str, Path], versions: dict[str, str], out, seed: int = 0) -> dict:
    """Both tasks from unpacked trees ({package: dir}) into out/summarize/ and out/translate/."""
    summaries, s_counts = summarize_items(trees, versions)
    translations, t_counts = translate_items(trees, versions)
    return {
        "summarize": write_task("summarize", summaries, s_counts, trees, versions, out, seed),
        "translate": write_task("translate", translations, t_counts, trees, versions, out, seed),
    }


def main(argv=None) -> None:
    """`python -m tasks text --out data [--cache .cache/debian]`: build data/summarize/ and data/translate/."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m tasks text", description=main.__doc__)
    parser.add_argument("--out", required=True)
    parser.add_argument("--cache", default=".cache/debian", help="downloaded .debs and unpacked trees")
    parser.add_argument("--seed", type=int, default=0, help="seed of the preference pairs' draws")
    args = parser.parse_args(argv)
    fetched = debian.fetch(args.cache)  # FetchError: said in one line by tasks/__main__.py
    trees = {p: f["tree"] for (p, _), f in fetched.items()}
    versions = {p: v for p, v in fetched}
    for task, result in build_tasks(trees, versions, args.out, args.seed).items():
        print(f"{args.out}/{task}: {result['sizes']}, preference pairs {result['preferences']}")
