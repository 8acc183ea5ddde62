"""Pure readers of what an unpacked Debian tree holds, for the corpus builder and the task builder.

    man_files(tree)          (name, section, path) of every English man page; read_man_source(path) its roff
    mo_files(tree)           (language, domain, path) of every gettext catalog
    read_mo(path)            a gettext .mo catalog as [(msgctxt, msgid, msgstr)]
    rst_to_text(src)         reStructuredText (Python's documentation sources) as plain paragraphs
    wordnet_synsets(path)    the synsets of a WordNet data.<pos> file: (offset, words, gloss)

A tree is a directory a .deb was unpacked into (tasks/debian.py); the readers take file contents or paths inside
one, so the builders run as well on a tiny fake tree made by a test. Man pages become text in tasks/roff.py.
"""

import gzip
import re
import struct
from pathlib import Path

# ---------------------------------------------------------------------------------------------------------------
# Files inside an unpacked tree

MAN_ROOT = "usr/share/man"
LOCALE_ROOT = "usr/share/locale"
_MAN_FILE = re.compile(r"^(?P<name>.+)\.(?P<section>[1-9n][a-z0-9]*)(?:\.gz)?$")


def man_files(tree) -> list[tuple[str, str, Path]]:
    """(name, section, path) of every English man page file in a tree (usr/share/man/man*/; translations
    under usr/share/man/<lang>/ and symbolic links are left out), sorted by path."""
    root = Path(tree) / MAN_ROOT
    out = []
    for path in sorted(root.glob("man*/*")):
        m = _MAN_FILE.match(path.name)
        if m and path.is_file() and not path.is_symlink():
            out.append((m["name"], m["section"], path))
    return out


def read_man_source(path) -> str:
    """The roff source of a man page file, gunzipped when it ends in .gz (UTF-8, bad bytes as Latin-1)."""
    data = Path(path).read_bytes()
    if str(path).endswith(".gz"):
        data = gzip.decompress(data)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return data.decode("latin-1")


def mo_files(tree, lang: str | None = None) -> list[tuple[str, str, Path]]:
    """(language, domain, path) of every gettext catalog under usr/share/locale/<lang>/LC_MESSAGES/, sorted;
    `lang` keeps one language directory (exactly: "fr" and not "fr_CA")."""
    root = Path(tree) / LOCALE_ROOT
    pattern = f"{lang}/LC_MESSAGES/*.mo" if lang else "*/LC_MESSAGES/*.mo"
    return [(p.parent.parent.name, p.stem, p) for p in sorted(root.glob(pattern)) if p.is_file()]


# ---------------------------------------------------------------------------------------------------------------
# gettext .mo catalogs


def read_mo(path) -> list[tuple[str | None, str, str]]:
    """(msgctxt, msgid, msgstr) of every message in a GNU .mo catalog, in the catalog's order; the header
    entry (empty msgid) is left out. Plural messages keep the singular msgid and msgstr[0]. Fuzzy and
    untranslated messages are not in a .mo file (msgfmt leaves them out). Strings are decoded with the
    catalog's declared charset (UTF-8 if none)."""
    data = Path(path).read_bytes()
    if len(data) < 20:
        raise ValueError(f"{path}: too short for a .mo catalog")
    magic = struct.unpack("<I", data[:4])[0]
    endian = "<" if magic == 0x950412DE else ">" if magic == 0xDE120495 else None
    if endian is None:
        raise ValueError(f"{path}: not a .mo catalog (magic {magic:#x})")
    _, count, orig_at, trans_at = struct.unpack(endian + "4I", data[4:20])

    def entry(table, k):
        length, offset = struct.unpack(endian + "2I", data[table + 8 * k : table + 8 * k + 8])
        return data[offset : offset + length]

    raw = [(entry(orig_at, k), entry(trans_at, k)) for k in range(count)]
    charset = "utf-8"
    for msgid, msgstr in raw:
        if msgid == b"":
            m = re.search(rb"charset=([-\w]+)", msgstr)
            if m and m.group(1).lower() not in (b"charset", b""):
                charset = m.group(1).decode("ascii")
    out = []
    for msgid, msgstr in raw:
        if msgid == b"":
            continue
        ctxt = None
        if b"\x04" in msgid:
            ctxt_b, msgid = msgid.split(b"\x04", 1)
            ctxt = ctxt_b.decode(charset, errors="replace")
        out.append(
            (
                ctxt,
                msgid.split(b"\x00")[0].decode(charset, errors="replace"),
                msgstr.split(b"\x00")[0].decode(charset, errors="replace"),
            )
        )
    return out


# ---------------------------------------------------------------------------------------------------------------
# reStructuredText (the Python documentation's sources)

_ROLE = re.compile(r":[\w:+-]+:`([^`]*)`")
_INLINE_LITERAL = re.compile(r"``(.+?)``")
_REF = re.compile(r"`([^`<]+?)\s*<[^`>]*>`_{1,2}")
_INTERPRETED = re.compile(r"`([^`]+)`_{0,2}")
_EMPHASIS = re.compile(r"(?<![\w*])\*{1,2}(?=\S)([^*]+?)(?<=\S)\*{1,2}(?![\w*])")
_UNDERLINE = re.compile(r"^([=\-~^\"'`#*+<>_:.])\1{2,}\s*$")
_TABLE_LINE = re.compile(r"^(\+[-=+]+\+|=+( +=+)+|\|.*\|)$")
_DIRECTIVE = re.compile(r"^(\s*)\.\.\s+([\w:-]+)::\s*(.*)$")
# Directives whose body is text worth keeping; any other directive (index, toctree, image, module
# metadata, audit events...) is dropped with its body.
_TEXT_DIRECTIVES = frozenset(
    "note warning tip important caution attention seealso versionadded versionchanged deprecated "
    "deprecated-removed function method class exception attribute data decorator decoratormethod "
    "classmethod staticmethod module-level opcode describe envvar option cmdoption c:function c:macro "
    "c:type c:member c:var c:struct pdbcommand productionlist code-block sourcecode impl-detail "
    "availability glossary topic rubric admonition coroutinefunction coroutinemethod abstractmethod "
    "awaitablefunction awaitablemethod term index-ignored doctest testcode testoutput".split()
)


def _role_text(m: re.Match) -> str:
    text = m.group(1)
    link = re.match(r"(.*?)\s*<[^>]*>$", text)
    if link and link.group(1):
        return link.group(1)
    text = text.lstrip("!")
    return text.split(".")[-1] if text.startswith("~") else text


def rst_inline(text: str) -> str:
    """Inline markup of one line of reST removed: roles (:func:`~os.path.join` -> join), ``literals``,
    `links <...>`_, *emphasis*, **strong**."""
    text = _ROLE.sub(_role_text, text)
    text = _INLINE_LITERAL.sub(r"\1", text)
    text = _REF.sub(r"\1", text)
    text = _INTERPRETED.sub(r"\1", text)
    text = _EMPHASIS.sub(r"\1", text)
    return text.replace("\\ ", "").replace("|version|", "3.11")


def rst_to_text(source: str) -> str:
    """Plain text of a reST document: section titles kept as lines (their under/overlines dropped),
    paragraphs re-filled to one line each, literal blocks kept line by line, inline markup removed,
    directives kept as their argument and text body (see _TEXT_DIRECTIVES) or dropped with their body,
    comments, labels, substitution definitions and field lists of directives dropped."""
    lines = source.replace("\r\n", "\n").split("\n")
    paragraphs, buf, literal = [], [], False
    skip_indent = None  # inside a dropped directive or comment: drop lines indented deeper than this
    literal_indent = None

    def flush():
        nonlocal buf
        if buf:
            if literal:
                block = "\n".join(buf).strip("\n").rstrip()
                if block.strip():
                    paragraphs.append(_dedent(block))
            elif any(_TABLE_LINE.match(x.strip()) for x in buf):  # grid or simple table: keep its lines
                paragraphs.append("\n".join(x.rstrip() for x in buf))
            else:
                text = " ".join(" ".join(buf).split())
                if text:
                    paragraphs.append(text)
        buf = []

    for i, line in enumerate(lines):
        indent = len(line) - len(line.lstrip())
        stripped = line.strip()
        if skip_indent is not None:
            if not stripped or indent > skip_indent:
                continue
            skip_indent = None
        if literal_indent is not None:
            if not stripped:
                buf.append("")
                continue
            if indent > literal_indent:
                buf.append(line)
                continue
            flush()
            literal, literal_indent = False, None
        if not stripped:
            flush()
            continue
        if _UNDERLINE.match(stripped) and (not buf or len(stripped) >= len(" ".join(buf).strip()) - 1):
            if buf:  # the line(s) above are a title
                title = rst_inline(" ".join(" ".join(buf).split()))
                buf = []
                paragraphs.append(title)
            continue
        d = _DIRECTIVE.match(line)
        if d:
            flush()
            kind, argument = d.group(2), d.group(3).strip()
            if kind in _TEXT_DIRECTIVES:
                if argument and kind not in ("code-block", "sourcecode", "productionlist", "index-ignored"):
                    paragraphs.append(rst_inline(argument))
                if kind in ("code-block", "sourcecode", "productionlist", "doctest", "testcode", "testoutput"):
                    literal, literal_indent = True, indent
            else:
                skip_indent = indent
            continue
        if stripped.startswith(".. ") or stripped == "..":  # comment, label, footnote, substitution
            flush()
            skip_indent = indent
            continue
        if stripped.startswith(":") and re.match(r":[\w -]+:( |$)", stripped) and not buf:
            continue  # a directive option or field list line
        if stripped.endswith("::"):
            text = stripped[:-2].rstrip()
            buf.append(rst_inline(text + ":" if text and not text.endswith(":") else text))
            flush()
            literal, literal_indent = True, indent
            continue
        if stripped.startswith(">>>") and not buf:
            literal, literal_indent = True, indent - 1
            buf.append(line)
            continue
        buf.append(rst_inline(stripped) if not _TABLE_LINE.match(stripped) else stripped)
    flush()
    return "\n\n".join(p for p in paragraphs if p.strip())


def _dedent(block: str) -> str:
    lines = block.split("\n")
    indents = [len(x) - len(x.lstrip()) for x in lines if x.strip()]
    cut = min(indents) if indents else 0
    return "\n".join(x[cut:].rstrip() for x in lines)


# ---------------------------------------------------------------------------------------------------------------
# WordNet


def wordnet_synsets(path) -> list[tuple[int, list[str], str]]:
    """(offset, words, gloss) of every synset of a WordNet 3.0 data.<pos> file; words with '_' as spaces and
    adjective markers like "(a)" removed; the gloss is the text after '|' (definition; "examples")."""
    out = []
    with open(path, encoding="utf-8", errors="replace") as fh:
        for line in fh:
            if line.startswith("  ") or "|" not in line:
                continue  # licence header
            head, gloss = line.split("|", 1)
            fields = head.split()
            count = int(fields[3], 16)
            words = [re.sub(r"\([a-z]+\)$", "", fields[4 + 2 * k]).replace("_", " ") for k in range(count)]
            out.append((int(fields[0]), words, gloss.strip()))
    return out
