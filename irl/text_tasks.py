"""Built-in real-text tasks made from Debian packages (irl/debian.py), and the split rule they share with the
corpus builder (irl/corpus.py).

- `summarize`: a man page's DESCRIPTION (its first sentences, at most MAX_DOCUMENT_WORDS words) -> the
  description in its NAME line ("ls - list directory contents" -> "list directory contents").
- `translate`: an English gettext msgid -> its French msgstr, from the packages' .mo catalogs.

Splits. An item's split is a hash of a stable key (`split_of`): the summary of a man page, the msgid of a
message. The corpus builder applies the same rule to every man page and every msgid it reads, before any
task is built, and leaves out those whose key falls in validation or test; so no held-out item of a task is
in the corpus, and pages or messages that share a summary or a msgid share a split.
"""

import hashlib
import re

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


def is_plain_sentence(text: str) -> bool:
    """A plain sentence: SENTENCE_WORDS words, starting with a capital letter, ending in . ! or ?, and free of
    markup, format directives, escapes, accelerators and placeholders (see _NOT_PLAIN)."""
    words = text.split()
    return (
        SENTENCE_WORDS[0] <= len(words) <= SENTENCE_WORDS[1]
        and text[:1].isupper()
        and text.rstrip().endswith((".", "!", "?"))
        and not _NOT_PLAIN.search(text)
    )


def translate_candidate(msgctxt, msgid: str, msgstr: str) -> dict | None:
    """{"key", "source", "target"} for a catalog message that is a plain sentence with a plain, different,
    non-empty translation; None otherwise."""
    source, target = normalize(msgid), normalize(msgstr)
    if not (is_plain_sentence(source) and target and target != source):
        return None
    if _NOT_PLAIN.search(target.replace("«", "").replace("»", "")) or not target.rstrip().endswith((".", "!", "?", "»")):
        return None
    return {"key": msgid_key(msgid), "source": source, "target": target}
