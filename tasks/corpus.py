"""A corpus of real English text from pinned Debian packages, for pretraining a base language model.

    python -m tasks corpus --out data/corpus                  # download, unpack, build (cache in .cache/debian)
    python -m tasks corpus --out data/corpus --cache DIR      # another package cache

The packages and their exact versions are tasks.debian.PACKAGES. Each is fetched with `apt-get download
PKG=VERSION` (after one `apt-get update`) and unpacked with `dpkg-deb -x` into the cache, never installed;
a second run reuses the cache. From the unpacked trees the builder reads:

- man pages (usr/share/man/man*/, English only): roff converted to plain text (tasks.roff.roff_to_sections);
  `.so` aliases and BSD mdoc pages are skipped and counted, and so are Perl's release notes and module pages
  (`man_exclude`);
- gettext catalogs (usr/share/locale/*/LC_MESSAGES/*.mo): the English msgids, the union over a domain's
  languages, those that read as prose (is_prose_msgid: no format directive, mostly letters, at least
  `min_msgid_words` words); `mo_chunk` per document;
- WordNet 3.0 (usr/share/wordnet/data.verb, .adj, .adv): "words: gloss" lines, `wordnet_chunk` synsets per document;
- the Python documentation's reStructuredText sources (usr/share/doc/python3.*/html/_sources/; release
  notes, the C API and legacy distutils guides left out), converted to plain text (tasks.sources.rst_to_text).

Held-out task items never enter the corpus. Each man page and each msgid is given the split of the task
item it would make (tasks.text.split_of on its summary or msgid key) and is left out unless that split
is train, whether or not it becomes a task item. The inputs and references of the held-out task items
(description excerpts and summaries; msgids and French msgstrs) are then scrubbed from every remaining
document: a line holding one of at least `scrub_min_chars` characters (compared with whitespace collapsed,
lines joined by a space, at token boundaries) or equal to a shorter one is dropped (see `scrub`).

Output, byte-identical for the same packages (sorted iteration, no time stamps):

    DIR/train.jsonl, DIR/validation.jsonl   one {"text", "source"} per document; source is "<kind>:<package>"
                                            with kind man, gettext, wordnet or python-doc; the split of a
                                            document is a hash of its key (`validation_fraction` of them to validation)
    DIR/manifest.json                       packages (version, sha256 of the .deb, files used, documents and
                                            characters), totals per source and split, counts (pages read,
                                            held out, excluded, skipped; msgids; lines scrubbed; documents
                                            too short or duplicated), the settings, the sha256 of each output
"""

import argparse
import hashlib
import json
import re
import unicodedata
from bisect import bisect_right
from dataclasses import asdict, dataclass
from pathlib import Path

from common.io import atomic_write_text
from tasks import debian, roff, sources
from tasks.text import (
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
    python_doc_exclude: tuple[str, ...] = ("whatsnew", "includes", "c-api", "distutils", "install", "license.rst.txt")
    """Top-level entries of the Python documentation sources left out: release notes, include fragments, the
    C API reference, legacy distutils and install guides, the licence texts."""
    man_exclude: str = r"^perl\d+delta\.|^perl(toc|api|intern)\.|\.3perl$"
    """Regex on "<name>.<section>" of man pages left out: Perl's release notes, table of contents and generated
    API listings, and its 3perl module pages (they would make Perl a quarter of the corpus)."""
    wordnet_files: tuple[str, ...] = ("data.verb", "data.adj", "data.adv")
    """WordNet data files read (the nouns' 8 M characters of glosses would outweigh the rest of the corpus)."""

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


# printf and Python format directives, {placeholders}: messages holding one are templates, not prose
_FORMAT = re.compile(r"%[-+ #0-9.*]*[hlLqjzt]*[a-zA-Z%]|%\(\w+\)|\{[\w.]*\}")


def is_prose_msgid(text: str, min_words: int) -> bool:
    """A msgid worth a place in the corpus: at least `min_words` words, starts with a letter, no format
    directive or placeholder, at least 60% letters (spaces aside)."""
    return (
        len(text.split()) >= min_words
        and text[:1].isalpha()
        and not _FORMAT.search(text)
        and sum(c.isalpha() for c in text) >= 0.6 * len(text.replace(" ", ""))
    )


class _Collector:
    """Reads the documents of every tree and what was held out."""

    def __init__(self, cfg: CorpusConfig):
        self.cfg = cfg
        self.documents: list[Document] = []
        self.files: dict[str, list[str]] = {}  # package -> files used, relative to its tree
        self.heldout: set[str] = set()  # inputs and references of held-out pages and messages, normalised
        self.counts = {
            "man_pages": 0,
            "man_aliases": 0,
            "man_mdoc": 0,
            "man_excluded": 0,
            "man_heldout": 0,
            "msgids": 0,
            "msgids_heldout": 0,
        }

    def use(self, package, tree, path):
        self.files.setdefault(package, []).append(str(Path(path).relative_to(tree)))

    def man_pages(self, package, tree):
        exclude = re.compile(self.cfg.man_exclude)
        for name, section, path in sources.man_files(tree):
            source = sources.read_man_source(path)
            kind = roff.roff_kind(source)
            if kind != "man":
                self.counts[f"man_{'aliases' if kind == 'alias' else 'mdoc'}"] += 1
                continue
            sections = roff.roff_to_sections(source)
            parsed = name_line(sections)
            if parsed is not None and split_of("summarize", summary_key(parsed[1])) != "train":
                self.counts["man_heldout"] += 1
                candidate = summarize_candidate(sections)
                if candidate is not None:
                    self.heldout.update((candidate["summary"], candidate["document"]))
                continue
            if exclude.search(f"{name}.{section}"):  # after the held-out check: its task item may be held out
                self.counts["man_excluded"] += 1
                continue
            self.counts["man_pages"] += 1
            self.use(package, tree, path)
            text = roff.sections_to_text(sections)
            self.documents.append(Document(f"man/{package}/{section}/{name}", f"man:{package}", package, text))

    def catalogs(self, package, tree):
        domains: dict[str, dict[str, None]] = {}
        heldout = set()
        for lang, domain, path in sources.mo_files(tree):
            self.use(package, tree, path)
            for msgctxt, msgid, msgstr in sources.read_mo(path):
                if split_of("translate", msgid_key(msgid)) != "train":
                    heldout.add(msgid_key(msgid))
                    pair = translate_candidate(msgctxt, msgid, msgstr) if lang == self.cfg.translate_language else None
                    if pair is not None:
                        self.heldout.update((pair["source"], pair["target"]))
                    continue
                if is_prose_msgid(msgid.strip(), self.cfg.min_msgid_words):
                    domains.setdefault(domain, {})[msgid.strip()] = None
        self.counts["msgids_heldout"] += len(heldout)
        for domain in sorted(domains):
            msgids = sorted(domains[domain])
            self.counts["msgids"] += len(msgids)
            for start in range(0, len(msgids), self.cfg.mo_chunk):
                text = "\n\n".join(msgids[start : start + self.cfg.mo_chunk])
                self.documents.append(
                    Document(f"gettext/{package}/{domain}/{start}", f"gettext:{package}", package, text)
                )

    def wordnet(self, package, tree):
        for path in sorted((Path(tree) / "usr/share/wordnet").glob("data.*")):
            if path.name not in self.cfg.wordnet_files:
                continue
            self.use(package, tree, path)
            synsets = sources.wordnet_synsets(path)
            for start in range(0, len(synsets), self.cfg.wordnet_chunk):
                chunk = synsets[start : start + self.cfg.wordnet_chunk]
                text = "\n".join(f"{', '.join(words)}: {gloss}" for _, words, gloss in chunk)
                key = f"wordnet/{path.name}/{chunk[0][0]}"
                self.documents.append(Document(key, f"wordnet:{package}", package, text))

    def python_doc(self, package, tree):
        roots = {r.resolve(): r for r in sorted((Path(tree) / "usr/share/doc").glob("python3*/html/_sources"))}
        for root in sorted(roots.values()):  # python3.11-doc/html is a link to python3.11/html: read it once
            for path in sorted(root.rglob("*.rst.txt")):
                rel = path.relative_to(root)
                if rel.parts[0] in self.cfg.python_doc_exclude:
                    continue
                self.use(package, tree, path)
                text = sources.rst_to_text(path.read_text(encoding="utf-8", errors="replace"))
                self.documents.append(Document(f"python-doc/{package}/{rel}", f"python-doc:{package}", package, text))


def scrub(documents: list[Document], heldout: set[str], min_chars: int) -> int:
    """Drop, in place, every line of every document that holds a held-out string of at least `min_chars`
    characters, or equals a shorter one, comparing with whitespace collapsed and a document's non-blank lines
    joined by a space (a string that spans lines drops all of them). Occurrences are looked for at token boundaries
    (not strictly inside a word), through a dict of the strings' first `min_chars` characters. Repeats until
    none is found. Returns the number of lines dropped."""
    by_anchor: dict[str, list[str]] = {}
    for s in sorted(heldout):
        if len(s) >= min_chars:
            by_anchor.setdefault(s[:min_chars], []).append(s)
    short_strings = {s for s in heldout if 0 < len(s) < min_chars}
    boundary = re.compile(r"(?<!\w)|(?!\w)")
    dropped, pending = 0, list(range(len(documents)))
    while pending:
        changed = []
        for d in pending:
            lines = [normalize(line) for line in documents[d].text.split("\n")]
            kept_at = [i for i, line in enumerate(lines) if line]  # blank lines join nothing
            starts, offset = [], 0
            for i in kept_at:
                starts.append(offset)
                offset += len(lines[i]) + 1
            joined = " ".join(lines[i] for i in kept_at)
            flagged = {i for i, line in enumerate(lines) if line in short_strings}
            for m in boundary.finditer(joined):
                at = m.start()
                for s in by_anchor.get(joined[at : at + min_chars], ()):
                    if joined.startswith(s, at):
                        first, last = bisect_right(starts, at) - 1, bisect_right(starts, at + len(s) - 1) - 1
                        flagged.update(kept_at[first : last + 1])
            if flagged:
                kept = [line for i, line in enumerate(documents[d].text.split("\n")) if i not in flagged]
                documents[d].text = "\n".join(kept)
                dropped += len(flagged)
                changed.append(d)
        pending = changed
    return dropped


def collect(trees: dict[str, Path], cfg: CorpusConfig) -> tuple[list[Document], dict[str, list[str]], dict]:
    """Documents of the unpacked `trees` ({package: directory}), held-out items left out and scrubbed, cleaned,
    short ones and exact duplicates dropped, sorted by key. Returns (documents, files used per package,
    counts of what was read, held out, excluded and dropped)."""
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
        "counts": counts,
        "outputs": outputs,
    }
    atomic_write_text(out / "manifest.json", json.dumps(manifest, indent=1, ensure_ascii=False) + "\n")
    return manifest


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m tasks corpus", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, help="output directory")
    parser.add_argument("--cache", default=".cache/debian", help="downloaded .debs and unpacked trees")
    args = parser.parse_args(argv)
    fetched = debian.fetch(args.cache)  # FetchError: said in one line by tasks/__main__.py
    trees = {p: f["tree"] for (p, _), f in fetched.items()}
    packages = {p: {"version": v, "deb": f["deb"].name, "sha256": f["sha256"]} for (p, v), f in fetched.items()}
    manifest = build_corpus(trees, args.out, CorpusConfig(), packages)
    for split, entry in manifest["splits"].items():
        print(f"{args.out}/{split}.jsonl: {entry['documents']} documents, {entry['characters']} characters")
    for source, entry in manifest["sources"].items():
        print(f"  {source}: {entry['documents']} documents, {entry['characters']} characters")
    print("counts:", json.dumps(manifest["counts"]))
