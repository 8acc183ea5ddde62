"""roff man pages (the `man` macros, with tbl tables and the common requests) rendered to plain text.

    roff_kind(source)          "man", "mdoc" or "other": only `man` pages are rendered
    roff_to_sections(source)   [(heading, [paragraph, ...]), ...]
    sections_to_text(sections) the paragraphs joined as running text; roff_to_text(source) both in one

Pure functions of the source text: the corpus builder and the summarise task read man pages through them.
"""

import re
import unicodedata

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
