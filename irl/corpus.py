"""A corpus of real English text from pinned Debian packages, for pretraining a base language model.

    python -m irl corpus --out data/corpus                  # download, unpack, build (cache in .cache/debian)
    python -m irl corpus --out data/corpus --cache DIR      # another package cache

The packages and their exact versions are irl.debian.PACKAGES. Each is fetched with `apt-get download
PKG=VERSION` (after one `apt-get update`) and unpacked with `dpkg-deb -x` into the cache, never installed;
a second run reuses the cache. From the unpacked trees the builder reads:

- man pages (usr/share/man/man*/, English only): roff converted to plain text (irl.debian.roff_to_sections);
  `.so` aliases and BSD mdoc pages are skipped and counted;
- gettext catalogs (usr/share/locale/*/LC_MESSAGES/*.mo): the English msgids, the union over a domain's
  languages, those of at least `min_msgid_words` words that are mostly letters; `mo_chunk` per document;
- WordNet 3.0 (usr/share/wordnet/data.*): "words: gloss" lines, `wordnet_chunk` synsets per document;
- the Python documentation's reStructuredText sources (usr/share/doc/python3.*/html/_sources/, What's New
  left out), converted to plain text (irl.debian.rst_to_text).

Held-out task items never enter the corpus. Each man page and each msgid is given the split of the task
item it would make (irl.text_tasks.split_of on its summary or msgid key) and is left out unless that split
is train, whether or not it becomes a task item. The inputs and references of the pages and messages left
out (task inputs: description excerpts and msgids; references: summaries and French msgstrs) are then
scrubbed from every remaining document: a line holding one of at least `scrub_min_chars` characters
(compared with whitespace collapsed, lines joined by a space) or equal to a shorter one is dropped.

Output, byte-identical for the same packages (sorted iteration, no time stamps):

    DIR/train.jsonl, DIR/validation.jsonl   one {"text", "source"} per document; source is "<kind>:<package>"
                                            with kind man, gettext, wordnet or python-doc; the split of a
                                            document is a hash of its key (`validation_fraction` of them to validation)
    DIR/manifest.json                       packages (version, sha256 of the .deb, files used, documents and
                                            characters), totals per source and split, what was held out,
                                            the settings, and the sha256 of each output file
"""

import argparse
import hashlib
import json
import re
import unicodedata
from bisect import bisect_right
from dataclasses import asdict, dataclass
from pathlib import Path

from irl import debian
from irl.io import atomic_write_text
from irl.text_tasks import (
    msgid_key,
    name_line,
    normalize,
    split_of,
    summarize_candidate,
    summary_key,
    translate_candidate,
)


@dataclass(frozen=True)
class CorpusConfig:
    validation_fraction: float = 0.02
    """Share of documents (by a hash of their key) in validation.jsonl."""
    min_doc_chars: int = 200
    """Documents shorter than this after cleaning are dropped."""
    min_msgid_words: int = 3
    """gettext msgids with fewer words are left out (labels, single words)."""
    mo_chunk: int = 50
    """gettext messages per document."""
    wordnet_chunk: int = 100
    """WordNet synsets per document."""
    scrub_min_chars: int = 20
    """Held-out strings at least this long are searched inside lines; shorter ones only as whole lines."""
    translate_language: str = "fr"
    """The target language of the translation task, whose references are scrubbed."""
    python_doc_exclude: tuple[str, ...] = ("whatsnew", "includes")
    """Top-level folders of the Python documentation sources left out (release notes, include fragments)."""

    def __post_init__(self):
        if not 0 <= self.validation_fraction < 1:
            raise ValueError(f"validation_fraction must be in [0, 1), got {self.validation_fraction}")


@dataclass
class Document:
    key: str
    source: str  # "<kind>:<package>"
    package: str
    text: str


def clean_text(text: str) -> str:
    """NFC, control characters (other than newline and tab) removed, trailing spaces stripped, at most one
    blank line in a row."""
    text = unicodedata.normalize("NFC", text)
    text = "".join(c for c in text if c in "\n\t" or unicodedata.category(c)[0] != "C")
    lines = [line.rstrip() for line in text.split("\n")]
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip()


def document_split(key: str, fraction: float) -> str:
    u = int.from_bytes(hashlib.sha256(f"corpus\n{key}".encode()).digest()[:8], "big") / 2**64
    return "validation" if u < fraction else "train"


def _mostly_letters(text: str) -> bool:
    letters = sum(c.isalpha() for c in text)
    return letters >= 0.6 * len(text.replace(" ", "") or "x")


class _Collector:
    """Reads the documents of every tree and what was held out."""

    def __init__(self, cfg: CorpusConfig):
        self.cfg = cfg
        self.documents: list[Document] = []
        self.files: dict[str, list[str]] = {}  # package -> files used, relative to its tree
        self.heldout: set[str] = set()  # inputs and references of held-out pages and messages, normalised
        self.counts = {"man_pages": 0, "man_aliases": 0, "man_mdoc": 0, "man_heldout": 0,
                       "msgids": 0, "msgids_heldout": 0}

    def use(self, package, tree, path):
        self.files.setdefault(package, []).append(str(Path(path).relative_to(tree)))

    def man_pages(self, package, tree):
        for name, section, path in debian.man_files(tree):
            source = debian.read_man_source(path)
            kind = debian.roff_kind(source)
            if kind != "man":
                self.counts[f"man_{'aliases' if kind == 'alias' else 'mdoc'}"] += 1
                continue
            sections = debian.roff_to_sections(source)
            parsed = name_line(sections)
            if parsed is not None and split_of("summarize", summary_key(parsed[1])) != "train":
                self.counts["man_heldout"] += 1
                self.heldout.add(normalize(parsed[1]))
                candidate = summarize_candidate(sections)
                if candidate is not None:
                    self.heldout.add(candidate["document"])
                continue
            self.counts["man_pages"] += 1
            self.use(package, tree, path)
            text = debian.sections_to_text(sections)
            self.documents.append(Document(f"man/{package}/{section}/{name}", f"man:{package}", package, text))

    def catalogs(self, package, tree):
        domains: dict[str, dict[str, None]] = {}
        heldout = set()
        for lang, domain, path in debian.mo_files(tree):
            self.use(package, tree, path)
            for msgctxt, msgid, msgstr in debian.read_mo(path):
                if split_of("translate", msgid_key(msgid)) != "train":
                    heldout.add(normalize(msgid))
                    if lang == self.cfg.translate_language:
                        pair = translate_candidate(msgctxt, msgid, msgstr)
                        if pair is not None:
                            self.heldout.add(pair["target"])
                    continue
                text = normalize(msgid)
                if len(text.split()) >= self.cfg.min_msgid_words and _mostly_letters(text):
                    domains.setdefault(domain, {})[msgid.strip()] = None
        self.counts["msgids_heldout"] += len(heldout)
        self.heldout |= heldout
        for domain in sorted(domains):
            msgids = sorted(domains[domain])
            self.counts["msgids"] += len(msgids)
            for start in range(0, len(msgids), self.cfg.mo_chunk):
                text = "\n\n".join(msgids[start : start + self.cfg.mo_chunk])
                self.documents.append(Document(f"gettext/{package}/{domain}/{start}", f"gettext:{package}", package, text))

    def wordnet(self, package, tree):
        for path in sorted((Path(tree) / "usr/share/wordnet").glob("data.*")):
            self.use(package, tree, path)
            synsets = debian.wordnet_synsets(path)
            for start in range(0, len(synsets), self.cfg.wordnet_chunk):
                chunk = synsets[start : start + self.cfg.wordnet_chunk]
                text = "\n".join(f"{', '.join(words)}: {gloss}" for _, words, gloss in chunk)
                key = f"wordnet/{path.name}/{chunk[0][0]}"
                self.documents.append(Document(key, f"wordnet:{package}", package, text))

    def python_doc(self, package, tree):
        for root in sorted((Path(tree) / "usr/share/doc").glob("python3*/html/_sources")):
            for path in sorted(root.rglob("*.rst.txt")):
                rel = path.relative_to(root)
                if rel.parts[0] in self.cfg.python_doc_exclude:
                    continue
                self.use(package, tree, path)
                text = debian.rst_to_text(path.read_text(encoding="utf-8", errors="replace"))
                self.documents.append(Document(f"python-doc/{package}/{rel}", f"python-doc:{package}", package, text))


def scrub(documents: list[Document], heldout: set[str], min_chars: int) -> int:
    """Drop, in place, every line of every document that holds a held-out string of at least `min_chars`
    characters, or equals a shorter one, comparing with whitespace collapsed and lines joined by a space; a
    string that spans lines drops all of them. Repeats until none is found. Returns the lines dropped."""
    long_strings = sorted(s for s in heldout if len(s) >= min_chars)
    short_strings = {s for s in heldout if 0 < len(s) < min_chars}
    dropped = 0
    while True:
        paragraphs = [[normalize(p) for p in d.text.split("\n")] for d in documents]
        flagged = [set() for _ in documents]
        # one string of all documents, lines joined by " " and documents by "\0", searched per string
        starts, doc_starts, pieces, offset = [], [], [], 0
        for paras in paragraphs:
            doc_starts.append(offset)
            starts.append([])
            for p in paras:
                starts[-1].append(offset)
                offset += len(p) + 1
            pieces.append(" ".join(paras))
        big = "\0".join(pieces)
        for s in long_strings:
            at = big.find(s)
            while at != -1:
                d = bisect_right(doc_starts, at) - 1
                first = bisect_right(starts[d], at) - 1
                last = bisect_right(starts[d], at + len(s) - 1) - 1
                flagged[d].update(range(first, last + 1))
                at = big.find(s, at + 1)
        for d, paras in enumerate(paragraphs):
            flagged[d].update(i for i, p in enumerate(paras) if p in short_strings)
        if not any(flagged):
            return dropped
        for d, doc in enumerate(documents):
            if flagged[d]:
                kept = [p for i, p in enumerate(doc.text.split("\n")) if i not in flagged[d]]
                dropped += len(flagged[d])
                doc.text = "\n".join(kept)


def collect(trees: dict[str, Path], cfg: CorpusConfig) -> tuple[list[Document], dict[str, list[str]], dict]:
    """Documents of the unpacked `trees` ({package: directory}), held-out items left out and scrubbed, cleaned,
    short ones and exact duplicates dropped, sorted by key. Returns (documents, files used per package,
    counts of what was left out)."""
    c = _Collector(cfg)
    for package in sorted(trees):
        tree = trees[package]
        c.man_pages(package, tree)
        c.catalogs(package, tree)
        c.wordnet(package, tree)
        c.python_doc(package, tree)
    counts = dict(c.counts)
    counts["heldout_strings"] = len(c.heldout)
    counts["lines_scrubbed"] = scrub(c.documents, c.heldout, cfg.scrub_min_chars)
    seen, documents = set(), []
    counts["too_short"] = counts["duplicates"] = 0
    for doc in sorted(c.documents, key=lambda d: d.key):
        doc.text = clean_text(doc.text)
        if len(doc.text) < cfg.min_doc_chars:
            counts["too_short"] += 1
            continue
        digest = hashlib.sha256(doc.text.encode()).digest()
        if digest in seen:
            counts["duplicates"] += 1
            continue
        seen.add(digest)
        documents.append(doc)
    return documents, c.files, counts


def build_corpus(trees: dict[str, Path], out, cfg: CorpusConfig = CorpusConfig(), packages: dict | None = None) -> dict:
    """Write DIR/train.jsonl, DIR/validation.jsonl and DIR/manifest.json from unpacked trees ({package: dir}).

    `packages` ({package: {"version", "sha256"}}) adds each .deb's identity to the manifest. Returns the
    manifest."""
    out = Path(out)
    documents, files, counts = collect(trees, cfg)
    rows = {"train": [], "validation": []}
    per_package = {p: {"documents": 0, "characters": 0} for p in sorted(trees)}
    per_source, per_split = {}, {s: {"documents": 0, "characters": 0} for s in rows}
    for doc in documents:
        split = document_split(doc.key, cfg.validation_fraction)
        rows[split].append(json.dumps({"text": doc.text, "source": doc.source}, ensure_ascii=False) + "\n")
        for table, name in ((per_package, doc.package), (per_source, doc.source.split(":")[0]), (per_split, split)):
            entry = table.setdefault(name, {"documents": 0, "characters": 0})
            entry["documents"] += 1
            entry["characters"] += len(doc.text)
    outputs = {}
    for split, lines in rows.items():
        text = "".join(lines)
        atomic_write_text(out / f"{split}.jsonl", text)
        outputs[f"{split}.jsonl"] = hashlib.sha256(text.encode()).hexdigest()
    manifest = {
        "settings": asdict(cfg),
        "packages": [
            {"package": p, **(packages or {}).get(p, {}), **per_package[p], "files": files.get(p, [])}
            for p in sorted(trees)
        ],
        "sources": dict(sorted(per_source.items())),
        "splits": per_split,
        "left_out": counts,
        "outputs": outputs,
    }
    atomic_write_text(out / "manifest.json", json.dumps(manifest, indent=1, ensure_ascii=False) + "\n")
    return manifest


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m irl corpus", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, help="output directory")
    parser.add_argument("--cache", default=".cache/debian", help="downloaded .debs and unpacked trees")
    args = parser.parse_args(argv)
    try:
        fetched = debian.fetch(args.cache)
    except debian.FetchError as e:
        raise SystemExit(f"error: {e}") from None
    trees = {p: f["tree"] for (p, _), f in fetched.items()}
    packages = {p: {"version": v, "deb": f["deb"].name, "sha256": f["sha256"]} for (p, v), f in fetched.items()}
    manifest = build_corpus(trees, args.out, CorpusConfig(), packages)
    for split, entry in manifest["splits"].items():
        print(f"{args.out}/{split}.jsonl: {entry['documents']} documents, {entry['characters']} characters")
    for source, entry in manifest["sources"].items():
        print(f"  {source}: {entry['documents']} documents, {entry['characters']} characters")
    print("left out:", json.dumps(manifest["left_out"]))
