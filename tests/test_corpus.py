"""The corpus builder on a tiny fake unpacked package tree (no network), and its parsers on literal input."""

import gzip
import json
import struct

import pytest

from common.io import sha256_file
from tasks import debian, roff, sources
from tasks.corpus import CorpusConfig, Document, build_corpus, is_prose_msgid, scrub
from tasks.text import msgid_key, normalize, split_of, summarize_candidate, summary_key

ROFF = r""".\" A comment that must not show
.TH DEMO 1 "2024" "demo 1.0" "User Commands"
.de Vb
.nf
..
.de Ve
.fi
..
.ds Q \(lqquoted\(rq
.SH NAME
demo \- show a \fBdemo\fR of things
.SH SYNOPSIS
.B demo
[\fI\,OPTION\/\fR]... \fIFILE\fP
.SH DESCRIPTION
The
.B demo
program reads each
.IR FILE ,
and prints it\(emfast.
It uses \*Q strings.
.PP
A second paragraph with \e backslash and \(aqquotes\(aq.
.if n .nr X 1
.if t This line is for typesetters only.
.ie n On terminals, this line shows.
.el But not this one.
.TP
.BR \-v ", " \-\-verbose
print more
.IP \(bu 2
a bullet item
.Vb
    code  line 1
    code  line 2
.Ve
.TS
tab(;);
l l.
Key;Value
_
a;1
.TE
.SH "SEE ALSO"
.BR other (1)
"""


def test_roff_to_text_literal_page():
    sections = roff.roff_to_sections(ROFF)
    assert [h for h, _ in sections] == ["NAME", "SYNOPSIS", "DESCRIPTION", "SEE ALSO"]
    text = roff.roff_to_text(ROFF)
    assert text == (
        "NAME\n\ndemo - show a demo of things\n\n"
        "SYNOPSIS\n\ndemo [OPTION]... FILE\n\n"
        "DESCRIPTION\n\n"
        "The demo program reads each FILE, and prints it—fast. It uses “quoted” strings.\n\n"
        "A second paragraph with \\ backslash and 'quotes'. On terminals, this line shows.\n\n"
        "-v, --verbose\n\nprint more\n\n"
        "• a bullet item\n\n"
        "    code  line 1\n    code  line 2\n\n"
        "Key  Value\na  1\n\n"
        "SEE ALSO\n\nother(1)"
    )


def test_roff_kind_and_glyphs():
    assert roff.roff_kind(".so man3/other.3\n") == "alias"
    assert roff.roff_kind('.\\" c\n.Dd May 1, 2020\n.Dt X 1\n') == "mdoc"
    assert roff.roff_kind(ROFF) == "man"
    assert roff.roff_to_text(".SH NAME\ncaf\\['e] \\[u00E9]t\\('e \\- x y\n") == "NAME\n\ncafé été - x y"


def write_mo(path, messages, charset="UTF-8"):
    """A GNU .mo catalog holding `messages` [(msgid, msgstr)] plus a header, written like msgfmt does."""
    entries = sorted([("", f"Content-Type: text/plain; charset={charset}\n")] + list(messages))
    ids = [m.encode(charset) for m, _ in entries]
    strs = [s.encode(charset) for _, s in entries]
    n = len(entries)
    orig_at, trans_at = 28, 28 + 8 * n
    data_at = trans_at + 8 * n
    blob, orig, trans = b"", [], []
    for table, values in ((orig, ids), (trans, strs)):
        for v in values:
            table.append((len(v), data_at + len(blob)))
            blob += v + b"\0"
    header = struct.pack("<7I", 0x950412DE, 0, n, orig_at, trans_at, 0, 0)
    body = b"".join(struct.pack("<2I", *e) for e in orig) + b"".join(struct.pack("<2I", *e) for e in trans)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(header + body + blob)


def test_read_mo_round_trip(tmp_path):
    write_mo(
        tmp_path / "x.mo",
        [("Hello world.", "Bonjour le monde."), ("ctx\x04Open", "Ouvrir"), ("one\x00many", "un\x00plusieurs")],
    )
    assert sources.read_mo(tmp_path / "x.mo") == [
        (None, "Hello world.", "Bonjour le monde."),
        ("ctx", "Open", "Ouvrir"),
        (None, "one", "un"),
    ]
    (tmp_path / "bad.mo").write_bytes(b"\0" * 40)
    with pytest.raises(ValueError, match="not a .mo catalog"):
        sources.read_mo(tmp_path / "bad.mo")


def test_rst_to_text():
    src = """:mod:`shutil` --- File operations
=================================

.. module:: shutil
   :synopsis: dropped

The :func:`~shutil.copy` function copies ``src`` to *dst*; see `the docs <https://x>`_.

.. function:: copy(src, dst)

   Copy a file. Example::

      copy("a", "b")

.. index:: single: dropped
"""
    assert sources.rst_to_text(src) == (
        "shutil --- File operations\n\n"
        "The copy function copies src to dst; see the docs.\n\n"
        "copy(src, dst)\n\n"
        "Copy a file. Example:\n\n"
        'copy("a", "b")'
    )


def test_scrub_drops_lines_holding_heldout_strings():
    text = "Title\n\nThe first held out\nsentence spans lines.\n\nKept line here.\nunload a kernel module\nshort"
    docs = [Document("k", "man:p", "p", text)]
    heldout = {"The first held out sentence spans lines.", "load a kernel module", "short"}
    assert scrub(docs, heldout, min_chars=20) == 3
    # the spanning string drops both its lines; a string inside a word
    # ("un|load") is not at a token boundary and stays; a short string goes only as a whole line
    assert docs[0].text == "Title\n\n\nKept line here.\nunload a kernel module"
    docs = [Document("k", "man:p", "p", "Intro.\n\nSynchronize cached writes\n\nIf one or more files.")]
    assert scrub(docs, {"Synchronize cached writes If one or more files."}, min_chars=20) == 2
    assert docs[0].text == "Intro.\n\n"  # a string across a blank line is found too


def test_prose_msgids():
    assert is_prose_msgid("Cannot open the file now", 3)
    for msgid in ("%B: cannot link", "Value {name} is bad", "Use it", "--help display", "12 34 56 78"):
        assert not is_prose_msgid(msgid, 3), msgid


def _page(name, summary, description):
    return f".TH {name.upper()} 1\n.SH NAME\n{name} \\- {summary}\n.SH DESCRIPTION\n{description}\n"


def _description(i):
    return (
        f"The tool number {i} reads every input file given on its command line and writes a report "
        f"about the contents of each one to the standard output, in the order given, for case {i}."
    )


def make_fixture(root):
    """Unpacked trees of four fake packages: man pages (one gzipped, one alias, one translated, one copying
    a held-out page's description), gettext catalogs, WordNet and Python documentation sources."""
    man = root / "fake-man" / "usr/share/man"
    pages = {f"tool{i}": (f"handle the files of case {i}", _description(i)) for i in range(12)}
    splits = {n: split_of("summarize", summary_key(s)) for n, (s, _) in pages.items()}
    assert {"train", "test"} <= set(splits.values()) or {"train", "validation"} <= set(splits.values())
    heldout_name = next(n for n, s in splits.items() if s != "train")
    for name, (summary, description) in pages.items():
        (man / "man1").mkdir(parents=True, exist_ok=True)
        (man / "man1" / f"{name}.1").write_text(_page(name, summary, description))
    # a train page that quotes the held-out page's description: scrubbed
    copy_name = next(
        f"copy{i}" for i in range(100) if split_of("summarize", summary_key(f"copy things {i}")) == "train"
    )
    (man / "man1" / f"{copy_name}.1").write_text(
        _page(
            copy_name,
            f"copy things {copy_name[4:]}",
            "Some prose that stays in the corpus because nothing held out is "
            "in it, and it is long enough.\n.PP\n" + pages[heldout_name][1] + "\n.PP\nMore prose that stays.",
        )
    )
    (man / "man1" / "zipped.1.gz").write_bytes(
        gzip.compress(_page("zipped", "a gzipped page", _description(99)).encode())
    )
    (man / "man1" / "alias.1").write_text(".so man1/tool0.1\n")
    (man / "fr" / "man1").mkdir(parents=True)
    (man / "fr" / "man1" / "tool0.1").write_text(_page("tool0", "un outil", "Texte français."))
    msgs = [
        (f"The operation number {i} could not be completed.", f"L'opération numéro {i} n'a pas pu aboutir.")
        for i in range(30)
    ]
    write_mo(root / "fake-l10n" / "usr/share/locale/fr/LC_MESSAGES/fake.mo", msgs)
    german_only = next(
        m for m in (f"Only in the German catalog {i}." for i in range(100)) if split_of("translate", m) == "train"
    )
    write_mo(
        root / "fake-l10n" / "usr/share/locale/de/LC_MESSAGES/fake.mo",
        [(m, f"Die Operation {i} schlug fehl.") for i, (m, _) in enumerate(msgs)] + [(german_only, "Nur hier.")],
    )
    wn = root / "fake-wordnet" / "usr/share/wordnet"
    wn.mkdir(parents=True)
    wn.joinpath("data.verb").write_text(
        "  1 This software and database is being provided to you, the LICENSEE\n"
        + "".join(
            f'{100 + k:08d} 03 n 02 word_{k} 0 synonym{k}(a) 0 000 | a made-up meaning number {k}; "an example"\n'
            for k in range(5)
        )
    )
    docs = root / "fake-pydoc" / "usr/share/doc/python3.11/html/_sources"
    (docs / "library").mkdir(parents=True)
    (docs / "library" / "demo.rst.txt").write_text(
        "Demo\n====\n\nThe :mod:`demo` module shows *prose* in the corpus, long enough to be kept by the "
        "builder's filter on length.\n"
    )
    (docs / "whatsnew").mkdir()
    (docs / "whatsnew" / "3.11.rst.txt").write_text(
        "Release notes that are left out of the corpus by default, whatever their length is.\n"
    )
    return {p.name: p for p in sorted(root.iterdir())}, pages, heldout_name


def _corpus_texts(out):
    return [json.loads(line)["text"] for split in ("train", "validation") for line in open(out / f"{split}.jsonl")]


def test_build_on_fixture_is_deterministic_and_writes_manifest(tmp_path):
    trees, _, _ = make_fixture(tmp_path / "trees")
    cfg = CorpusConfig(min_doc_chars=50, validation_fraction=0.3)
    m1 = build_corpus(trees, tmp_path / "a", cfg, {"fake-man": {"version": "1.0", "sha256": "00"}})
    m2 = build_corpus(trees, tmp_path / "b", cfg, {"fake-man": {"version": "1.0", "sha256": "00"}})
    for name in ("train.jsonl", "validation.jsonl", "manifest.json"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    assert m1 == m2
    for name, digest in m1["outputs"].items():
        assert sha256_file(tmp_path / "a" / name) == digest
    assert m1["splits"]["validation"]["documents"] > 0 and m1["splits"]["train"]["documents"] > 0
    by_package = {p["package"]: p for p in m1["packages"]}
    assert by_package["fake-man"]["version"] == "1.0" and by_package["fake-man"]["sha256"] == "00"
    assert "usr/share/man/man1/zipped.1.gz" in by_package["fake-man"]["files"]
    assert not any("/fr/" in f for f in by_package["fake-man"]["files"])  # translated pages are not read
    assert sorted(m1["sources"]) == ["gettext", "man", "python-doc", "wordnet"]
    assert m1["counts"]["man_aliases"] == 1
    rows = [json.loads(line) for line in open(tmp_path / "a" / "train.jsonl")] + [
        json.loads(line) for line in open(tmp_path / "a" / "validation.jsonl")
    ]
    assert (
        sum(len(r["text"]) for r in rows)
        == m1["splits"]["train"]["characters"] + m1["splits"]["validation"]["characters"]
    )
    texts = "\n".join(r["text"] for r in rows)
    assert "Only in the German catalog" in texts  # msgids: the union over languages
    assert "word 0, synonym0: a made-up meaning number 0" in texts and "LICENSEE" not in texts
    assert "The demo module shows prose" in texts and "Release notes" not in texts
    assert "Texte français" not in texts and "un outil" not in texts


def test_heldout_task_items_are_not_in_the_corpus(tmp_path):
    trees, pages, heldout_name = make_fixture(tmp_path / "trees")
    build_corpus(trees, tmp_path / "out", CorpusConfig(min_doc_chars=50))
    corpus = [normalize(t) for t in _corpus_texts(tmp_path / "out")]
    # every man page of the fixture as the summarisation task would see it
    heldout, kept = [], []
    for name, section, path in sources.man_files(trees["fake-man"]):
        item = summarize_candidate(roff.roff_to_sections(sources.read_man_source(path)))
        if item is not None:
            (kept if split_of("summarize", item["key"]) == "train" else heldout).append(item)
    assert heldout and kept
    for item in heldout:
        for text in (item["document"], item["summary"]):
            assert not any(text in doc for doc in corpus), text
    assert all(any(i["document"] in doc for doc in corpus) for i in kept if i["names"].startswith("tool"))
    # the page quoting a held-out description keeps its other lines
    assert any("Some prose that stays" in doc and "More prose that stays" in doc for doc in corpus)
    # held-out msgids (inputs) and their French msgstrs (references) are absent too, train ones present
    for msgctxt, msgid, msgstr in sources.read_mo(trees["fake-l10n"] / "usr/share/locale/fr/LC_MESSAGES/fake.mo"):
        present = any(msgid in doc for doc in corpus)
        assert present == (split_of("translate", msgid_key(msgid)) == "train"), msgid
        assert not any(msgstr in doc for doc in corpus)


def test_fetch_failure_names_the_package(tmp_path, monkeypatch):
    calls = []

    def fake_run(cmd, cwd, what):  # apt-get update succeeds, the download finds no such version
        calls.append(cmd[:2])
        if cmd[:2] == ["apt-get", "download"]:
            raise debian.FetchError(f"{what}: E: Version '1.0' for 'no-such-package' was not found")

    monkeypatch.setattr(debian, "_run", fake_run)
    with pytest.raises(debian.FetchError, match="no-such-package=1.0"):
        debian.fetch(tmp_path / "cache", [("no-such-package", "1.0")])
    assert calls == [["apt-get", "update"], ["apt-get", "download"]]


@pytest.mark.parametrize("command", ["text", "corpus"])
def test_a_failed_download_is_one_line_from_the_command(monkeypatch, tmp_path, command):
    from tasks.__main__ import main

    def fail(cache):
        raise debian.FetchError("no-such-package=1.0: apt-get download failed")

    monkeypatch.setattr(debian, "fetch", fail)
    with pytest.raises(SystemExit) as stop:
        main([command, "--out", str(tmp_path / "out")])
    assert str(stop.value) == "error: no-such-package=1.0: apt-get download failed"
    assert not (tmp_path / "out").exists()
