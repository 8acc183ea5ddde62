"""Calculator mode for math word problems (METHOD.md §5, "with a calculator").

While decoding, every arithmetic expression the model writes before "=" is evaluated and the true result
is inserted after the "=". Three pieces:

- `evaluate_expression(text)`: the value of the expression that ends `text` (the text up to an "="), or
  None when there is none we can read with certainty.
- `CalculatorLogitsProcessor`: a `transformers.LogitsProcessor` that forces the result's tokens during
  `model.generate` (greedy, sampling, beam search).
- `calculator_rewrite(text)`: the same calculator applied offline to a finished solution.

Usage:
    processor = CalculatorLogitsProcessor(tokenizer, prompt_length=batch["input_ids"].shape[1])
    model.generate(**batch, logits_processor=LogitsProcessorList([processor]))
"""

import ast
import functools
import re
import weakref
from fractions import Fraction

import torch
from transformers import LogitsProcessor

_NUMBER = r"\d{1,3}(?:,\d{3})+(?:\.\d+)?|\d+(?:\.\d+)?|\.\d+"
# Order matters: x/X before a number is multiplication ("9 x 12", "72x0.5"; in "2x + 100" it is a variable),
# "/day" after a number is a unit ("£195/day"), "grams/5" is a unit then a division, "time(s)" is one word.
_TOKEN = re.compile(
    rf"""(?P<num>[$£€¥]?(?:{_NUMBER})%?)
    |(?P<times>(?<![A-Za-z])[xX](?=\s*[$£€¥(.\d]))
    |(?P<word>[A-Za-z][A-Za-z'’-]*(?:\(s\))?(?:/[A-Za-z]+)*|/[A-Za-z]+)
    |(?P<op>[-+*/×÷−])
    |(?P<lp>\()
    |(?P<rp>\))
    |(?P<other>\S)""",
    re.VERBOSE,
)
_OPERATORS = {"x": "*", "X": "*", "×": "*", "÷": "/", "−": "-"}
# An expression starts after the last "=", line break, ":", ";", ", " or sentence end before it.
_CLAUSE_BOUNDARY = re.compile(r"=|\n|:|;|,\s|[.!?]\s")
_BULLET = re.compile(r"^\s*[-*•]\s+")
# Words after a number are its unit ("7 skeins per pair of leg warmers"); a longer run is prose, not a unit.
_MAX_UNIT_WORDS = 6
_BINARY = {
    ast.Add: Fraction.__add__,
    ast.Sub: Fraction.__sub__,
    ast.Mult: Fraction.__mul__,
    ast.Div: Fraction.__truediv__,
}
# The written result after an "=": optional currency, optional minus, a number.
_WRITTEN_RESULT = re.compile(rf"\s*[$£€¥]?(?P<num>-?(?:{_NUMBER})(?:/\d+)?)")


def _tokens(clause: str) -> list[tuple[str, str]]:
    return [(m.lastgroup, m.group()) for m in _TOKEN.finditer(clause)]


def _source(tokens: list[tuple[str, str]]) -> str | None:
    """Python source for tokens with unit words dropped, or None if a word is not a unit of a number.

    A single letter other than "a" is a variable, never a unit ("2x + 100", "y + x"); "4(12)" is 4 * (12).
    """
    parts, unit_words = [], None  # unit_words: words since the last number/")", None if not after one
    for kind, text in tokens:
        if kind == "word":
            if unit_words is None or unit_words == _MAX_UNIT_WORDS or (len(text) == 1 and text not in "aA"):
                return None  # a word in operand position: a variable ("T"), "half", prose
            unit_words += 1
            continue
        if kind == "other":
            return None
        if kind == "num":
            text = text.lstrip("$£€¥").replace(",", "").rstrip("%")
        if kind == "lp" and unit_words == 0:
            parts.append("*")
        parts.append(_OPERATORS.get(text, text))
        unit_words = 0 if kind in ("num", "rp") else None
    return " ".join(parts)


def _evaluate(node: ast.AST) -> Fraction:
    """Exact value of an AST made of numbers, + - * / and unary signs; ValueError on anything else."""
    if isinstance(node, ast.Constant) and type(node.value) in (int, float):
        return Fraction(str(node.value))  # str() keeps the written decimal, so 0.1 + 0.2 is exactly 0.3
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
        value = _evaluate(node.operand)
        return -value if isinstance(node.op, ast.USub) else value
    if isinstance(node, ast.BinOp) and type(node.op) in _BINARY:
        return _BINARY[type(node.op)](_evaluate(node.left), _evaluate(node.right))
    raise ValueError(f"not arithmetic: {ast.dump(node)}")


def _format(value: Fraction) -> str:
    """Integers without ".0"; otherwise at most 4 decimals, trailing zeros stripped."""
    value = round(value, 4)
    if value.denominator == 1:
        return str(value.numerator)
    return f"{float(value):.4f}".rstrip("0")


@functools.lru_cache(maxsize=4096)  # a row writing a number asks for the same text at each of its steps
def evaluate_expression(text_before_equals: str) -> str | None:
    """The result of the arithmetic expression that ends `text_before_equals`, formatted, or None.

    The expression is the longest parseable run of numbers, operators and parentheses at the end of the
    current clause (text after the last "=", line break, ":", ";", ", " or sentence end), where up to six
    words after a number or ")" are read as its unit ("240 shrimp / 12 shrimp/minute" -> 240 / 12).
    Currency signs and thousands separators are dropped. None when there is no binary operator, when an
    operand is a word ("135 + T", "half * 188 beetles": the run is then preceded by an operator), when a
    percentage is multiplied or divided (the references mean both 40% = 0.4 and 100% = 100 there), when
    "÷" and "/" are mixed, on division by zero, or when the run does not parse.
    """
    clause = _BULLET.sub("", _CLAUSE_BOUNDARY.split(text_before_equals)[-1])
    tokens = _tokens(clause)
    for start in range(len(tokens)):
        source = _source(tokens[start:])
        if source is None:
            continue
        try:
            tree = ast.parse(source, mode="eval").body
        except SyntaxError:
            continue
        if start > 0 and tokens[start - 1][0] in ("op", "times"):
            return None  # the expression goes on to the left with an operand we cannot read
        break
    else:
        return None
    binary_ops = [type(n.op) for n in ast.walk(tree) if isinstance(n, ast.BinOp)]
    if not binary_ops:
        return None
    texts = [text for _, text in tokens[start:]]
    if any(t.endswith("%") for t in texts) and {ast.Mult, ast.Div} & set(binary_ops):
        return None
    if "÷" in texts and "/" in texts:
        return None  # "15÷2/5" means 15 ÷ (2/5) in the references, (15 ÷ 2) / 5 by precedence
    try:
        return _format(_evaluate(tree))
    except (ValueError, ZeroDivisionError):
        return None


def calculator_rewrite(solution_text: str) -> str:
    """`solution_text` with each number written right after an "=" replaced by the calculator's result.

    "=" signs are processed left to right on the rewritten text, as in decoding. Where the expression
    cannot be evaluated or no number follows the "=", the text is kept. A currency sign after "=" is
    kept; the number itself is written as the calculator formats it ("$32,000" -> "$32000", "4.0" -> "4").
    """
    first, *pieces = solution_text.split("=")
    out = first
    for piece in pieces:
        result = evaluate_expression(out)
        written = _WRITTEN_RESULT.match(piece)
        if result is not None and written:
            piece = piece[: written.start("num")] + result + piece[written.end("num") :]
        out += "=" + piece
    return out


# tokenizer -> (block_after_number, block_after_separator, equals, blocking): see CalculatorLogitsProcessor.__init__
_SURFACES = weakref.WeakKeyDictionary()


def _token_surfaces(tokenizer) -> list[str]:
    """The text each token id adds after other text, leading space included.

    Decoding a token alone drops a SentencePiece token's leading space, so each id is decoded after an
    anchor token and the anchor's text is cut off.
    """
    anchor = tokenizer.encode("a", add_special_tokens=False)
    prefix = tokenizer.decode(anchor)
    texts = tokenizer.batch_decode([anchor + [i] for i in range(len(tokenizer))])
    return [t[len(prefix) :] if t.startswith(prefix) else t for t in texts]


class CalculatorLogitsProcessor(LogitsProcessor):
    """Forces the calculator's result after every "=" the model writes, during `generate`.

    For each row, the generated text (`input_ids[:, prompt_length:]` decoded; left padding puts every
    row's generation at that column) is read at every step:

    - it ends with "=" and the expression before it evaluates to r: force the first token of " " + r;
    - the text after the last "=" is a proper prefix of " " + r and the row ends with the first k tokens
      of " " + r: force token k + 1;
    - the text after the last "=" is exactly " " + r: forbid tokens that start with a digit, or with
      ".", "," or "/" and a digit, for one step, so the model cannot extend the inserted number
      ("= 12" + "0" -> "= 120": a wrong value that looks as if the calculator had written it);
    - it is " " + r + "." (or "," or "/"): forbid digit tokens for one step (a character-level vocabulary
      would otherwise write "12" "." "5"; a lone "." stays allowed because it ends sentences).

    Forcing sets every other score to -inf and the forced one to 0 (log-probability 1: the calculator's
    tokens are not the model's choice, so under beam search they do not change a beam's score).

    State is derived from each row's token ids at every step, never kept per row index: beam search
    reorders (and duplicates) rows between steps, and sampling with num_return_sequences > 1 expands
    rows, so a row's position in the batch says nothing about its history; its text does. The processor
    only reads `input_ids` and edits `scores`, so it works with the KV cache. For encoder-decoder models
    pass prompt_length=1 (the decoder start token).

    A "=" must end a token for the calculator to fire (a token "=$" or "= " makes it skip that "=").
    """

    def __init__(self, tokenizer, prompt_length: int):
        self.tokenizer = tokenizer
        self.prompt_length = prompt_length  # the column generation starts at; set per batch of prompts
        self._targets = {}  # result -> the ids of " " + result
        if tokenizer not in _SURFACES:  # decoding the whole vocabulary: once per tokenizer
            surfaces = _token_surfaces(tokenizer)
            special = set(tokenizer.all_special_ids)
            _SURFACES[tokenizer] = (
                torch.tensor([i for i, s in enumerate(surfaces) if re.match(r"[0-9]|[.,/][0-9]", s)]),
                torch.tensor([i for i, s in enumerate(surfaces) if re.match(r"[0-9]", s)]),
                # tokens whose text holds a "=", and tokens whose text holds a character no number after "=" has
                # (not a part of a character, which the next token may complete; not a special token, which
                # decoding skips): `_past_the_number` reads a row's ids with these instead of decoding them
                frozenset(i for i, s in enumerate(surfaces) if "=" in s and i not in special),
                frozenset(i for i, s in enumerate(surfaces) if re.search(r"[^\s\-0-9.,]", s) and "=" not in s
                          and "\ufffd" not in s and i not in special),  # fmt: skip
            )
        self.block_after_number, self.block_after_separator, self.equals, self.blocking = _SURFACES[tokenizer]

    def forced_positions(self, completion_ids: list[int]) -> list[int]:
        """Positions of a completion decoded with this processor whose token the calculator forced. The action
        depends only on the ids before a position, so replaying it on each prefix finds them exactly."""
        return [
            t for t in range(len(completion_ids)) if self._action(completion_ids[:t]) == ("force", completion_ids[t])
        ]

    def _target(self, result: str) -> list[int]:
        """The token ids of " " + result, as the calculator writes it."""
        if result not in self._targets:
            self._targets[result] = self.tokenizer.encode(" " + result, add_special_tokens=False)
        return self._targets[result]

    def _past_the_number(self, ids: list[int]) -> bool:
        """Whether `_action` of these ids is None for want of a number after a "=", read from the ids backwards
        without decoding them: no token holds a "=", or a token after the last one that does holds a character
        that no text after the last "=" that `_action` reads has (anything but a space, "-", a digit, "." or ",").
        Most rows at most steps are past the number: each step's cost is then a token or two, not decoding the
        row's whole text."""
        for token in reversed(ids):
            if token in self.equals:
                return False
            if token in self.blocking:
                return True
        return True

    def _action(self, ids: list[int]) -> tuple[str, int | torch.Tensor] | None:
        """("force", token id), ("block", token ids) or None for one row's generated ids."""
        if self._past_the_number(ids):
            return None
        text = self.tokenizer.decode(ids, skip_special_tokens=True)
        head, equals, tail = text.rpartition("=")
        if not equals or not re.fullmatch(r"\s?-?[0-9.,]*", tail):
            return None  # cheap exit: past the number after the last "="
        result = evaluate_expression(head)
        if result is None:
            return None
        target = self._target(result)
        if tail == "":
            return "force", target[0]
        for k in range(len(target) - 1, 0, -1):
            written = self.tokenizer.decode(target[:k])
            if ids[-k:] == target[:k] and tail.strip() == written.strip():
                return "force", target[k]
        number = tail.lstrip()
        if number == result:
            return "block", self.block_after_number
        if number in (result + ".", result + ",", result + "/"):
            return "block", self.block_after_separator
        return None

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        scores = scores.clone()  # (B, V)
        for row, ids in enumerate(input_ids[:, self.prompt_length :].tolist()):
            action = self._action(ids)
            if action is None:
                continue
            kind, tokens = action
            if kind == "force":
                scores[row] = -float("inf")
                scores[row, tokens] = 0.0
            else:
                scores[row, tokens] = -float("inf")
        return scores
