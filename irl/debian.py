"""Debian packages as a source of real English text: the pinned package list, download and unpack, and pure
parsers for what the packages hold.

    PACKAGES                 every (package, version) the corpus and the text tasks are built from
    fetch(cache)             `apt-get download PKG=VERSION` into cache/debs, `dpkg-deb -x` into cache/trees
                             (never installed); the only function here that touches the network
    roff_to_sections(src)    a man page (roff, `man` macros) as [(heading, [paragraph, ...]), ...]
    read_mo(path)            a gettext .mo catalog as [(msgctxt, msgid, msgstr)]
    rst_to_text(src)         reStructuredText (Python's documentation sources) as plain paragraphs
    wordnet_synsets(path)    the synsets of a WordNet data.<pos> file: (offset, words, gloss)

A tree is a directory a .deb was unpacked into; the parsers take file contents or paths inside one, so the
corpus builder and the task builder run as well on a tiny fake tree made by a test.
"""

import gzip
import re
import shutil
import struct
import subprocess
import tempfile
import unicodedata
from pathlib import Path

from irl.io import sha256_file

# The packages text comes from, with the exact versions (Debian 12 "bookworm", amd64 for arch-dependent
# packages). Versions are pinned so that the same list gives the same .debs; a version the archive no
# longer carries (a point or security release replaced it) fails the download, naming it.
PACKAGES: tuple[tuple[str, str], ...] = (
    # man pages: the Linux man-pages project (sections 2-7) and the pages of common command-line tools
    ("manpages", "6.03-2"),
    ("manpages-dev", "6.03-2"),
    ("coreutils", "9.1-1"),
    ("findutils", "4.9.0-4"),
    ("grep", "3.8-5"),
    ("sed", "4.9-1+deb12u1"),
    ("tar", "1.34+dfsg-1.2+deb12u1"),
    ("diffutils", "1:3.8-4"),
    ("gzip", "1.12-1"),
    ("gawk", "1:5.2.1-2"),
    ("make", "4.3-4.1"),
    ("procps", "2:4.0.2-3"),
    ("psmisc", "23.6-1"),
    ("util-linux", "2.38.1-5+deb12u3"),
    ("man-db", "2.11.2-2"),
    ("dpkg", "1.21.23"),
    ("apt", "2.6.2"),
    ("iproute2", "6.1.0-3"),
    ("e2fsprogs", "1.47.0-2+b2"),
    ("passwd", "1:4.13+dfsg1-1+deb12u2"),
    ("gettext", "0.21-12"),
    ("git-man", "1:2.39.5-0+deb12u3"),
    ("openssl", "3.0.22-1~deb12u2"),
    ("libssl-doc", "3.0.22-1~deb12u2"),
    ("libx11-doc", "2:1.8.4-2+deb12u2"),
    ("tcl8.6-doc", "8.6.13+dfsg-2"),
    ("perl-doc", "5.36.0-7+deb12u4"),
    # gettext catalogs (English msgids; French msgstrs for the translation task)
    ("bash", "5.2.15-2+b13"),
    ("cpio", "2.13+dfsg-7.1"),
    ("wget", "1.21.3-1+deb12u1"),
    ("nano", "7.2-1+deb12u1"),
    ("bison", "2:3.8.2+dfsg-1+b1"),
    ("sudo", "1.9.13p3-1+deb12u4"),
    ("git", "1:2.39.5-0+deb12u3"),
    ("util-linux-locales", "2.38.1-5+deb12u3"),
    ("e2fsprogs-l10n", "1.47.0-2"),
    ("gnupg-l10n", "2.2.40-1.1+deb12u2"),
    ("libc-l10n", "2.36-9+deb12u14"),
    ("debconf-i18n", "1.5.82"),
    ("aptitude-common", "0.8.13-5"),
    ("mc-data", "3:4.8.29-2"),
    ("binutils-common", "2.40-2"),
    ("libgtk-3-common", "3.24.38-2~deb12u3"),
    ("libglib2.0-data", "2.74.6-2+deb12u9"),
    ("postgresql-client-15", "15.20-0+deb12u1"),
    # WordNet 3.0 glosses and the Python 3.11 documentation (its reStructuredText sources)
    ("wordnet-base", "1:3.0-37"),
    ("python3.11-doc", "3.11.2-6+deb12u9"),
)


class FetchError(RuntimeError):
    """A package could not be downloaded or unpacked; the message names it."""


# ---------------------------------------------------------------------------------------------------------------
# Download and unpack (network: the Debian archive through apt)


def deb_stem(package: str, version: str) -> str:
    """`package_version` as apt-get download names the file (an epoch's ':' becomes '%3a')."""
    return f"{package}_{version.replace(':', '%3a')}"


def fetch(cache, packages=PACKAGES) -> dict[tuple[str, str], dict]:
    """Download (once) and unpack (once) each pinned package into `cache`.

    Returns {(package, version): {"deb": path, "sha256": hex digest of the .deb, "tree": unpacked dir}}.
    `apt-get update` runs once, before the first download, when a .deb is missing; nothing is installed.
    """
    cache = Path(cache).resolve()
    debs, trees = cache / "debs", cache / "trees"
    debs.mkdir(parents=True, exist_ok=True)
    trees.mkdir(parents=True, exist_ok=True)
    updated = False
    out = {}
    for package, version in packages:
        stem = deb_stem(package, version)
        found = sorted(debs.glob(f"{stem}_*.deb"))
        if not found:
            if not updated:
                _run(["apt-get", "update", "-q"], cwd=debs, what="apt-get update")
                updated = True
            _run(["apt-get", "download", "-q", f"{package}={version}"], cwd=debs, what=f"{package}={version}")
            found = sorted(debs.glob(f"{stem}_*.deb"))
            if not found:
                raise FetchError(f"{package}={version}: apt-get download left no {stem}_*.deb in {debs}")
        deb = found[0]
        tree = trees / stem
        if not tree.is_dir():
            tmp = Path(tempfile.mkdtemp(dir=trees, prefix=f".{stem}."))
            try:
                _run(["dpkg-deb", "-x", str(deb), str(tmp)], cwd=trees, what=f"unpacking {deb.name}")
                tmp.rename(tree)
            except BaseException:
                shutil.rmtree(tmp, ignore_errors=True)
                raise
        out[(package, version)] = {"deb": deb, "sha256": sha256_file(deb), "tree": tree}
    return out


def _run(cmd, cwd, what):
    result = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    if result.returncode != 0:
        raise FetchError(f"{what}: `{' '.join(cmd)}` failed ({result.returncode}): {result.stderr.strip()[-500:]}")


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
# roff (man pages) -> plain text

# groff glyph names (\(xx, \[xx]) -> text. Accented letters (\('e) are composed in _glyph.
# fmt: off
GLYPHS = {
    "em": "—", "en": "–", "hy": "-", "mi": "-", "pl": "+", "eq": "=", "aq": "'", "dq": '"', "lq": "“",
    "rq": "”", "oq": "‘", "cq": "’", "bu": "•", "co": "©", "rg": "®", "tm": "™", "de": "°", "ga": "`",
    "aa": "´", "ha": "^", "ti": "~", "rs": "\\", "sl": "/", "ba": "|", "br": "|", "bv": "|", "or": "|",
    "mu": "×", "di": "÷", "+-": "±", "<=": "≤", ">=": "≥", "!=": "≠", "==": "≡", "~=": "≅", "->": "→",
    "<-": "←", "<>": "↔", "rA": "⇒", "lA": "⇐", "hA": "⇔", "ua": "↑", "da": "↓", "fm": "′", "sd": "″",
    "ct": "¢", "Po": "£", "Eu": "€", "eu": "€", "Ye": "¥", "sc": "§", "ps": "¶", "dg": "†", "dd": "‡",
    "at": "@", "sh": "#", "Fo": "«", "Fc": "»", "fo": "‹", "fc": "›", "r!": "¡", "r?": "¿", "ss": "ß",
    "ff": "ff", "fi": "fi", "fl": "fl", "Fi": "ffi", "Fl": "ffl", "AE": "Æ", "ae": "æ", "OE": "Œ",
    "oe": "œ", "o/": "ø", "O/": "Ø", "ul": "_", "ru": "_", "lB": "[", "rB": "]", "lC": "{", "rC": "}",
    "la": "⟨", "ra": "⟩", "no": "¬", "tno": "¬", "if": "∞", "sr": "√", "ca": "∩", "cu": "∪", "mo": "∈",
    "sb": "⊂", "sp": "⊃", "fa": "∀", "te": "∃", "pd": "∂", "gr": "∇", "is": "∫", "es": "∅", "OK": "✓",
    "ci": "○", "sq": "□", "lh": "☜", "rh": "☞", "Sd": "ð", "TP": "Þ", "Tp": "þ", "-D": "Ð", "*a": "α",
    "*b": "β", "*g": "γ", "*d": "δ", "*e": "ε", "*l": "λ", "*m": "μ", "*p": "π", "*r": "ρ", "*s": "σ",
    "*t": "τ", "*f": "φ", "*W": "Ω", "*w": "ω", "*S": "Σ", "*D": "Δ", "*G": "Γ", "*P": "Π", "*F": "Φ",
    "em-": "—", "lt": "⎧", "rt": "⎫", "lk": "⎨", "rk": "⎬", "lb": "⎩", "rb": "⎭", "bar": "|",
}
_ACCENTS = {"'": "\u0301", "`": "\u0300", "^": "\u0302", ":": "\u0308", '"': "\u0308", "~": "\u0303",
            ",": "\u0327", "o": "\u030a", "v": "\u030c"}
# fmt: on
_TABLE_NO_SPACE = re.compile(r"[ \t]+")


def _glyph(name: str) -> str:
    if name in GLYPHS:
        return GLYPHS[name]
    if name.startswith("u") and re.fullmatch(r"u[0-9A-Fa-f]{4,6}(_[0-9A-Fa-f]{4,6})*", name):
        return unicodedata.normalize("NFC", "".join(chr(int(h, 16)) for h in name[1:].split("_")))
    if name.startswith("char") and name[4:].isdigit():
        return chr(int(name[4:]))
    if len(name) == 2 and name[0] in _ACCENTS and name[1].isalpha():
        return unicodedata.normalize("NFC", name[1] + _ACCENTS[name[0]])
    if len(name) == 2 and name[1] in _ACCENTS and name[0].isalpha():
        return unicodedata.normalize("NFC", name[0] + _ACCENTS[name[1]])
    return ""


class _Roff:
    """A small nroff interpreter for the `man` macro package: enough to turn the man pages of a Debian
    system (hand-written, help2man, pod2man, DocBook, Sphinx output) into readable text.

    Understood: escapes (fonts, sizes and motions dropped; glyphs, strings, registers interpolated), `.ds`,
    `.nr`, `.tr`, `.de`/`.am` user macros (expanded with their arguments), `.if`/`.ie`/`.el` with `\\{ \\}`
    blocks (nroff mode: `n` true, `t` false), fill and no-fill (`.nf`/`.fi`, `.EX`/`.EE`), the man macros
    (.SH .SS .PP .TP .TQ .IP .HP .B .I .BR ... .SY .OP .UR .MT), tbl tables (cells joined by two spaces) and
    eqn (dropped).
    """

    def __init__(self):
        self.strings = {"R": "®", "Tm": "™", "lq": "“", "rq": "”", "S": "", "HF": "B"}
        self.registers = {".g": 1}
        self.macros: dict[str, list[str]] = {}
        self.translate: dict[str, str] = {}
        self.sections: list[tuple[str, list[str]]] = [("", [])]
        self.fill = True
        self.words: list[str] = []  # the line being filled
        self.lines: list[str] = []  # lines of the current paragraph
        self.pending_heading = False
        self.pending_tag = False
        self.prefix = ""  # an .IP bullet waiting for its paragraph
        self.last_cond = True
        self.continued = False  # the last expanded text ended in \c: the next text joins it without a space
        self.join_next = False
        self.link = ""  # the URL of an open .UR/.MT

    # -- escapes --------------------------------------------------------------------------------------------

    def _name(self, s, i):
        """A name after an escape: x, (xx or [xxx]. Returns (name, next index)."""
        if i >= len(s):
            return "", i
        if s[i] == "(":
            return s[i + 1 : i + 3], i + 3
        if s[i] == "[":
            j = s.find("]", i)
            return (s[i + 1 : j], j + 1) if j != -1 else (s[i + 1 :], len(s))
        return s[i], i + 1

    def _delimited(self, s, i):
        """An argument between two copies of a delimiter: 'xxx'. Returns (argument, next index)."""
        if i >= len(s):
            return "", i
        d = s[i]
        j = s.find(d, i + 1)
        return (s[i + 1 : j], j + 1) if j != -1 else (s[i + 1 :], len(s))

    def expand(self, s: str, depth: int = 0) -> str:
        out = []
        i, n = 0, len(s)
        self.continued = False
        while i < n:
            c = s[i]
            if c != "\\":
                out.append(c)
                i += 1
                continue
            i += 1
            if i >= n:
                break
            c = s[i]
            i += 1
            if c in '"#':  # comment to the end of the line
                break
            if c in "fFmMgkYV":  # font, family, colour, format, mark, string-valued register names: dropped
                _, i = self._name(s, i)
            elif c == "s":  # size: \s+1 \s-1 \s0 \s(12 \s[12] \s'12'
                if i < n and s[i] in "+-":
                    i += 1
                if i < n and s[i] in "([":
                    _, i = self._name(s, i)
                elif i < n and s[i] == "'":
                    _, i = self._delimited(s, i)
                else:
                    while i < n and s[i].isdigit():
                        i += 1
            elif c in "(":
                out.append(_glyph(s[i : i + 2]))
                i += 2
            elif c == "[":
                j = s.find("]", i)
                j = n if j == -1 else j
                out.append(" ".join(_glyph(part) for part in s[i:j].split()))
                i = j + 1
            elif c == "C":
                name, i = self._delimited(s, i)
                out.append(_glyph(name))
            elif c == "*":
                name, i = self._name(s, i)
                if depth < 10:
                    out.append(self.expand(self.strings.get(name, ""), depth + 1))
            elif c == "n":
                if i < n and s[i] in "+-":
                    i += 1
                name, i = self._name(s, i)
                out.append(str(self.registers.get(name, 0)))
            elif c == "N":
                code, i = self._delimited(s, i)
                out.append(chr(int(code)) if code.isdigit() else "")
            elif c in "hvwlLbDxXZSHRABoO":  # motions, lines, boxes, device controls, width: dropped
                arg, i = self._delimited(s, i)
                if c == "w":
                    out.append("0")
                elif c == "o":
                    out.append(arg[:1])
            elif c == "z":
                pass  # \zX prints X with zero width: keep X
            elif c in "e\\E":
                out.append("\\")
            elif c in " ~0":
                out.append(" ")
            elif c == "t":
                out.append("\t")
            elif c == "c":
                self.continued = True
            elif c == "-":
                out.append("-")
            elif c == "'":
                out.append("´")
            elif c in "&|^:%),/{}apurd!?":  # zero-width, break points, conditional braces
                pass
            else:
                out.append(c)
        text = "".join(out)
        return text.translate(str.maketrans(self.translate)) if self.translate else text

    # -- output ---------------------------------------------------------------------------------------------

    def add_text(self, text: str):
        if self.pending_heading:
            self.pending_heading = False
            self.start_section(text)
            return
        if self.pending_tag:  # the tag line of .TP: a paragraph of its own
            self.pending_tag = False
            self.words.append(text)
            self.paragraph()
            return
        if self.fill and self.join_next and self.words:
            self.words[-1] += text
        elif self.fill:
            self.words.append(text)
        else:
            self.lines.append(text.rstrip())
        self.join_next = self.continued

    def line_break(self):
        if self.words:
            line = " ".join(" ".join(self.words).split())
            self.words = []
            if line:
                self.lines.append(line)

    def paragraph(self):
        self.line_break()
        while self.lines and not self.lines[-1].strip():
            self.lines.pop()
        while self.lines and not self.lines[0].strip():
            self.lines.pop(0)
        if self.lines:
            text = "\n".join(self.lines)
            if self.prefix:
                text, self.prefix = f"{self.prefix} {text}", ""
            self.sections[-1][1].append(text)
        self.lines = []

    def start_section(self, heading: str):
        self.paragraph()
        self.sections.append((" ".join(heading.split()), []))

    # -- lines ----------------------------------------------------------------------------------------------

    def run(self, source: str):
        lines = source.replace("\r\n", "\n").split("\n")
        # line continuation: a line ending in an unescaped backslash joins the next one
        joined, buf = [], ""
        for line in lines:
            if line.endswith("\\") and (len(line) - len(line.rstrip("\\"))) % 2 == 1:
                buf += line[:-1]
                continue
            joined.append(buf + line)
            buf = ""
        if buf:
            joined.append(buf)
        self.lines_in = joined
        self.pos = 0
        self.table = None
        while self.pos < len(self.lines_in):
            line = self.lines_in[self.pos]
            self.pos += 1
            self.line(line)
        self.paragraph()
        return [(h, ps) for h, ps in self.sections if h or ps]

    def line(self, line: str, depth: int = 0):
        if self.table is not None:
            self.table_line(line)
            return
        if line[:1] in (".", "'"):
            self.request(line[1:].lstrip(" \t"), depth)
            return
        if not line.strip():
            if self.fill:
                self.paragraph()
            else:
                self.lines.append("")
            return
        if self.fill and line[:1] in " \t":
            self.line_break()
        text = self.expand(line)
        if not self.fill:
            self.add_text(text)
        elif text.strip() or self.pending_heading:
            self.add_text(text)

    def skip_block(self, rest: str):
        """Skip a false conditional's body: to the end of the line, or to the matching \\} of a \\{ block."""
        depth = rest.count("\\{") - rest.count("\\}")
        while depth > 0 and self.pos < len(self.lines_in):
            line = self.lines_in[self.pos]
            self.pos += 1
            depth += line.count("\\{") - line.count("\\}")

    def condition(self, rest: str) -> tuple[bool, str]:
        """Evaluate the condition at the start of an .if/.ie argument; (value, the rest of the line)."""
        negate = rest.startswith("!")
        if negate:
            rest = rest[1:]
        if not rest:
            return False, ""
        c = rest[0]
        if c in "ntoevh" and (len(rest) == 1 or not rest[1].isalnum()):
            value, rest = c in "no", rest[1:]
        elif c in "rdcmFS" and len(rest) > 1 and rest[1] in " \t":
            name, _, rest = rest[1:].lstrip().partition(" ")
            value = (
                (name in self.registers)
                if c == "r"
                else (name in self.strings or name in self.macros)
                if c == "d"
                else c == "c"
            )
        elif not c.isalnum() and c not in "\\(-+":  # 'string1'string2'
            end1 = rest.find(c, 1)
            end2 = rest.find(c, end1 + 1) if end1 != -1 else -1
            if end2 == -1:
                return False, ""
            value = self.expand(rest[1:end1]) == self.expand(rest[end1 + 1 : end2])
            rest = rest[end2 + 1 :]
        else:
            m = re.match(r"\S+", rest)
            expr = self.expand(m.group()) if m else ""
            rest = rest[m.end() :] if m else ""
            value = _numeric_true(expr)
        return value != negate, rest.lstrip()

    def conditional_body(self, value: bool, rest: str, depth: int):
        if not value:
            self.skip_block(rest)
            return
        body = rest.replace("\\{", "", 1).lstrip() if rest.lstrip().startswith("\\{") else rest
        if body.strip():
            self.line(body, depth + 1)

    def request(self, line: str, depth: int):
        if line.startswith('\\"') or line.startswith("\\#") or not line.strip():
            return
        m = re.match(r"([^\s\\]+)(.*)", line)
        if m is None:
            return
        name, rest = m.group(1), m.group(2).lstrip()
        if depth > 20:
            return
        if name in ("if", "ie", "el"):
            if name == "el":
                value = not self.last_cond
            else:
                value, rest = self.condition(rest)
                if name == "ie":
                    self.last_cond = value
            self.conditional_body(value, rest, depth)
            return
        if name in ("de", "de1", "am", "ig"):
            end = ".." if len(rest.split()) < 2 else "." + rest.split()[1]
            body = []
            while self.pos < len(self.lines_in):
                body_line = self.lines_in[self.pos]
                self.pos += 1
                if body_line.strip().replace(" ", "") == end or body_line.strip() == end:
                    break
                body.append(body_line.replace("\\\\", "\\"))
            if name != "ig" and rest.split():
                key = rest.split()[0]
                self.macros[key] = (self.macros.get(key, []) if name == "am" else []) + body
            return
        if name == "do":
            self.request(rest, depth + 1)
            return
        if name in self.macros:
            args = _args(rest)
            body = []
            for body_line in self.macros[name]:
                body_line = re.sub(
                    r"\\\$(\d)", lambda a: args[int(a.group(1)) - 1] if int(a.group(1)) <= len(args) else "", body_line
                )
                body.append(body_line.replace("\\$*", " ".join(args)).replace("\\$@", " ".join(f'"{a}"' for a in args)))
            # the body is read as its own input, so that a skipped conditional block stays inside it
            saved = self.lines_in, self.pos
            self.lines_in, self.pos = body, 0
            while self.pos < len(self.lines_in):
                self.pos += 1
                self.line(self.lines_in[self.pos - 1], depth + 1)
            self.lines_in, self.pos = saved
            return
        args = _args(rest)
        if name in ("ds", "ds1", "as", "as1"):
            key, _, value = rest.partition(" ")
            value = value.lstrip()
            value = value[1:] if value.startswith('"') else value
            self.strings[key] = (self.strings.get(key, "") if name.startswith("as") else "") + value
        elif name == "nr":
            if len(args) >= 2:
                self.registers[args[0]] = _number(self.expand(args[1]))
        elif name == "tr":
            chars = self.expand(rest.split()[0]) if rest.split() else ""
            for a, b in zip(chars[::2], chars[1::2] + " " * (len(chars) % 2)):
                self.translate[a] = b
        elif name == "TH":
            pass
        elif name in ("SH", "SS"):
            text = self.expand(" ".join(args))
            if name == "SS":
                self.paragraph()
                if text.strip():
                    self.words.append(text)
                    self.paragraph()
                else:
                    self.pending_tag = True
                return
            self.fill = True
            if text.strip():
                self.start_section(text)
            else:
                self.paragraph()
                self.pending_heading = True
        elif name in ("PP", "P", "LP", "sp", "HP"):
            self.paragraph()
        elif name in ("TP", "TQ"):
            self.paragraph()
            self.pending_tag = True
        elif name == "IP":
            self.paragraph()
            tag = self.expand(args[0]).strip() if args else ""
            if tag and len(tag) <= 4:
                self.prefix = tag
            elif tag:
                self.words.append(tag)
                self.paragraph()
        elif name in ("RS", "RE"):  # indentation: a paragraph of its own in plain text
            self.paragraph()
        elif name == "br":
            if self.fill:
                self.line_break()
        elif name in ("nf", "EX", "Vb"):
            self.paragraph()
            self.fill = False
        elif name in ("fi", "EE", "Ve"):
            self.paragraph()
            self.fill = True
        elif name in ("B", "I", "SM", "SB", "CW", "nop"):
            if args or name == "nop":
                self.add_text(self.expand(" ".join(args) if name != "nop" else rest))
        elif name in ("BR", "BI", "IB", "IR", "RB", "RI", "BB", "II", "RR"):
            self.add_text(self.expand("".join(args)))
        elif name in ("UR", "MT"):
            self.link = args[0] if args else ""
        elif name in ("UE", "ME"):
            text = self.expand("".join(args))
            self.add_text(f"<{self.link}>{text}" if self.link else text)
            self.link = ""
        elif name == "SY":
            self.paragraph()
            self.add_text(self.expand(" ".join(args)))
        elif name == "OP":
            self.add_text("[" + self.expand(" ".join(args)) + "]")
        elif name == "YS":
            self.paragraph()
        elif name == "TS":
            self.paragraph()
            self.table = {"format": True, "tab": "\t", "block": None}
        elif name == "EQ":
            while self.pos < len(self.lines_in) and not self.lines_in[self.pos].startswith(".EN"):
                self.pos += 1
            self.pos += 1
        elif name == "ce":
            self.line_break()
        # everything else (.so inside a page, layout requests, unknown macros) prints nothing

    def table_line(self, line: str):
        t = self.table
        if line.startswith(".TE"):
            self.table = None
            self.paragraph()
            return
        if t["format"]:
            stripped = line.strip()
            if stripped.endswith(";"):
                m = re.search(r"tab\s*\((.)\)", stripped)
                if m:
                    t["tab"] = m.group(1)
            elif stripped.endswith("."):
                t["format"] = False
            return
        if line.startswith(".T&"):
            t["format"] = True
            return
        if t["block"] is not None:  # inside T{ ... T}
            if line.startswith("T}"):
                t["cells"][-1] = " ".join(t["block"])
                t["block"] = None
                rest = line[2:]
                if rest.startswith(t["tab"]):
                    self.table_cells(rest[1:])
                else:
                    self.table_row()
            elif line[:1] not in (".", "'"):
                t["block"].append(self.expand(line).strip())
            return
        if line[:1] in (".", "'") or line.strip() in ("_", "=", ""):
            return
        t["cells"] = []
        self.table_cells(line)

    def table_cells(self, line: str):
        t = self.table
        for cell in line.split(t["tab"]):
            if cell.strip() == "T{":
                t["cells"].append("")
                t["block"] = []
                return
            t["cells"].append(_TABLE_NO_SPACE.sub(" ", self.expand(cell)).strip())
        self.table_row()

    def table_row(self):
        cells = [c for c in self.table["cells"] if c not in ("_", "=", "\\^")]
        if any(cells):
            self.lines.append("  ".join(c for c in cells if c))
        self.table["cells"] = []


def _args(rest: str) -> list[str]:
    """Macro arguments: whitespace-separated, "double quoted" with "" for a literal quote."""
    args, i, n = [], 0, len(rest)
    while i < n:
        while i < n and rest[i] in " \t":
            i += 1
        if i >= n:
            break
        if rest[i] == '"':
            i += 1
            buf = []
            while i < n:
                if rest[i] == '"':
                    if i + 1 < n and rest[i + 1] == '"':
                        buf.append('"')
                        i += 2
                        continue
                    i += 1
                    break
                buf.append(rest[i])
                i += 1
            args.append("".join(buf))
        else:
            j = i
            while j < n and rest[j] not in " \t":
                if rest[j] == "\\":
                    if rest[j + 1 : j + 2] == '"':
                        break
                    j += 2  # an escape, "\ " included, stays inside the argument
                    continue
                j += 1
            j = min(j, n)
            if rest[i:j]:
                args.append(rest[i:j])
            if rest[j : j + 2] == '\\"':
                break
            i = j
    return args


def _number(expr: str) -> int:
    m = re.match(r"[-+]?\d+", expr.strip())
    return int(m.group()) if m else 0


def _numeric_true(expr: str) -> bool:
    """A numeric condition after interpolation, evaluated as roff does (left to right, no precedence; units
    ignored): "1", "0-1", "3>2", "(1:0)&1". Anything it cannot read is false."""
    tokens = re.findall(r"\d+(?:\.\d*)?|<=|>=|==|!=|[-+*/%<>=&:()]|\S", re.sub(r"(?<=\d)[uicpPmnvsMf]", "", expr))
    pos = 0

    def value():
        nonlocal pos
        if pos < len(tokens) and tokens[pos] == "(":
            pos += 1
            v = chain()
            pos += pos < len(tokens) and tokens[pos] == ")"
            return v
        sign = 1
        while pos < len(tokens) and tokens[pos] in "+-":
            sign = -sign if tokens[pos] == "-" else sign
            pos += 1
        if pos < len(tokens) and re.fullmatch(r"\d+(?:\.\d*)?", tokens[pos]):
            pos += 1
            return sign * float(tokens[pos - 1])
        raise ValueError(expr)

    ops = {
        "+": lambda a, b: a + b,
        "-": lambda a, b: a - b,
        "*": lambda a, b: a * b,
        "/": lambda a, b: a // b if b else 0,
        "%": lambda a, b: a % b if b else 0,
        "<": lambda a, b: float(a < b),
        ">": lambda a, b: float(a > b),
        "<=": lambda a, b: float(a <= b),
        ">=": lambda a, b: float(a >= b),
        "=": lambda a, b: float(a == b),
        "==": lambda a, b: float(a == b),
        "!=": lambda a, b: float(a != b),
        "&": lambda a, b: float(a > 0 and b > 0),
        ":": lambda a, b: float(a > 0 or b > 0),
    }

    def chain():
        nonlocal pos
        v = value()
        while pos < len(tokens) and tokens[pos] in ops:
            op = tokens[pos]
            pos += 1
            v = ops[op](v, value())
        return v

    try:
        v = chain()
    except ValueError:
        return False
    return pos == len(tokens) and v > 0


def roff_kind(source: str) -> str:
    """The kind of a man page source: "man" (the man macro package), "alias" (a `.so other/page` redirection)
    or "mdoc" (a BSD mdoc page, not converted)."""
    for line in source.split("\n"):
        s = line.strip()
        if not s or s.startswith(('.\\"', "'\\\"", ".\\#", "'\\#")) or s in (".", "'"):
            continue
        if s.startswith(".so "):
            return "alias"
        if re.match(r"\.(Dd|Dt|Os)\b", s):
            return "mdoc"
        if s.startswith(".TH") or s.startswith(".SH"):
            return "man"
    return "man"


def roff_to_sections(source: str) -> list[tuple[str, list[str]]]:
    """A man page's roff source as [(heading, [paragraph, ...])], headings as written (e.g. "NAME",
    "DESCRIPTION"). Filled text becomes one line per paragraph; no-fill blocks (code, synopses) keep their
    lines; .TP tags are paragraphs of their own."""
    return _Roff().run(source)


def sections_to_text(sections: list[tuple[str, list[str]]]) -> str:
    """Plain text of a converted page: each heading on its own line, paragraphs separated by blank lines."""
    blocks = []
    for heading, paragraphs in sections:
        if heading:
            blocks.append(heading)
        blocks.extend(paragraphs)
    return "\n\n".join(blocks)


def roff_to_text(source: str) -> str:
    """A man page's roff source as plain text (see roff_to_sections)."""
    return sections_to_text(roff_to_sections(source))


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
