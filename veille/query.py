"""Text normalisation and the query language shared by topic rules and full-text search.

One normaliser serves topic matching, queries and the FTS index, so that a keyword, a search and the
index agree on what a word is:

- accents, case and the ligatures oe/ae are folded (`Numérique` = `numerique`, `cœur` = `coeur`);
- words are runs of Latin letters and digits; apostrophes (straight or curly), hyphens and every
  other sign separate words, so `l'inclusion` is `l` + `inclusion` and `smart-city` is `smart city`;
- regular French plurals share a stem (`réseaux` -> `reseau`, `territoriaux` -> `territorial`,
  `données` -> `donnee`); `stem()` is applied to keywords and text alike.

The index (`articles_fts`, unicode61 with diacritics removed) holds the original text so SQLite's
`snippet()` and `bm25()` work on what readers see. Its tokens are the same words, unstemmed and with
`œ` unfolded: `to_fts()` therefore expands a stem to its plural forms and ligature spellings, and
the result is a superset of what the exact matcher accepts (capitals-only words, for instance, are
checked by the matcher, not by the index). `exact_fts()` gives, when the index can tell, an expression
true exactly where the matcher would find a phrase (staff previews count with it).

Query syntax: words, "phrases" (also “…” and «…»), a trailing `*` for prefixes, implicit AND,
`AND`, `OR`, `NOT`, parentheses, `title:` before a word, phrase or group, and `a NEAR/n b` for two
words or phrases at most n words apart (n defaults to 10).
"""

from __future__ import annotations

import math
import os
import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass, replace
from itertools import islice, product
from typing import Union

from .errors import QueryError

__all__ = [
    "Word", "Token", "FoldedText", "Term", "And", "Or", "Not", "Near", "Node",
    "fold", "stem", "normalize_tokens", "parse_phrase", "parse_query", "to_fts", "exact_fts", "terms",
    "surface_forms", "low_pattern",
]

# --------------------------------------------------------------------------------------------------
# Normaliser

_LIGATURES = (("œ", "\x01"), ("Œ", "\x02"), ("æ", "\x03"), ("Æ", "\x04"), ("…", "."))
"""Characters NFKD does not fold (or folds to several characters): replaced one for one, so the folded
text keeps the original's offsets, and expanded to `oe`/`ae` only in the tokens."""
_MARKS = re.compile("[\u0300-\u036f\u1ab0-\u1aff\u1dc0-\u1dff\u20d0-\u20ff\ufe20-\ufe2f]+")


def _byte_table(keep_case: bool) -> bytes:
    table = bytearray(b" " * 256)
    for c in b"abcdefghijklmnopqrstuvwxyz0123456789":
        table[c] = c
    for c in b"ABCDEFGHIJKLMNOPQRSTUVWXYZ":
        table[c] = c if keep_case else c + 32
    for c, low in ((1, 1), (2, 1), (3, 3), (4, 3)):
        table[c] = c if keep_case else low
    return bytes(table)


_LOWER = _byte_table(False)
_KEEP_CASE = _byte_table(True)
_TOKEN = re.compile(rb"\S+")


def _latin1_table() -> bytes:
    table = bytearray(range(256))
    for code in range(0x80, 0x100):
        folded = _MARKS.sub("", unicodedata.normalize("NFKD", chr(code)))
        table[code] = ord(folded) if len(folded) == 1 and folded.isascii() else ord("?")
    table[0xE6], table[0xC6] = 3, 4  # æ Æ
    return bytes(table)


_LATIN1 = _latin1_table()
_SUBSTITUTES = {
    "’": "'", "‘": "'", "ʼ": "'", "‚": "'", "“": '"', "”": '"', "„": '"', "–": "-", "—": "-", "‒": "-",
    "―": "-", "‐": "-", "‑": "-", "…": ".", "•": " ", "€": " ", "\u202f": " ", "\u2009": " ", "\u2002": " ",
    "\u2003": " ", "\u2007": " ", "\u200b": " ", "\u2060": " ", "\ufeff": " ", "œ": "\x01", "Œ": "\x02",
    "™": " ", "‰": " ", "†": " ", "→": " ", "←": " ", "✓": " ", "▪": " ", "►": " ",
}


def _base(text: str) -> bytes:
    """ASCII bytes, one per character of `text` in the usual case (accents dropped, other signs `?`).

    French text is Latin-1 but for a handful of signs (’ œ … –) that are swapped one for one, then
    folded by a byte table: this runs at C speed. Other scripts take the NFKD road.
    """
    if text.isascii():
        return text.encode("ascii")
    if "’" in text:  # in most French texts: replacing it up front saves an exception per text
        text = text.replace("’", "'")
    while True:
        try:
            return text.encode("latin-1").translate(_LATIN1)
        except UnicodeEncodeError as e:
            substitute = _SUBSTITUTES.get(text[e.start])
            if substitute is None:
                return _base_nfkd(text)
            text = text.replace(text[e.start], substitute)


def _base_nfkd(text: str) -> bytes:
    for char, placeholder in _LIGATURES:
        if char in text:
            text = text.replace(char, placeholder)
    text = _MARKS.sub("", unicodedata.normalize("NFKD", text))
    return text.encode("ascii", "replace")


def _expand(folded: bytes) -> bytes:
    if b"\x01" in folded:
        folded = folded.replace(b"\x01", b"oe")
    if b"\x02" in folded:
        folded = folded.replace(b"\x02", b"OE")
    if b"\x03" in folded:
        folded = folded.replace(b"\x03", b"ae")
    if b"\x04" in folded:
        folded = folded.replace(b"\x04", b"AE")
    return folded


def fold(text: str) -> list[str]:
    """The words of `text`, folded (lower case, no accents, oe/ae), not stemmed. The fast path."""
    return _expand(_base(text).translate(_LOWER)).decode("ascii").split()


def _aligned(text: str) -> tuple[bytes, list[int] | None]:
    """Folded lower-case bytes and, when they are not one byte per character, the byte -> char map."""
    base = _base(text)
    if len(base) == len(text):
        return base.translate(_LOWER), None
    # Fold each character the way `_base` folded the whole text: a text that took the NFKD road must
    # not have its characters folded one by one on the Latin-1 road (½ is "1 2" there, "?" here).
    fold_char = _base if b"".join(_base(char) for char in text) == base else _base_nfkd
    offsets: list[int] = []
    pieces = []
    for index, char in enumerate(text):
        piece = fold_char(char)
        pieces.append(piece)
        offsets.extend([index] * len(piece))
    offsets.append(len(text))
    return b"".join(pieces).translate(_LOWER), offsets


_INVARIANT = frozenset("""
plus moins sans sous dans vers tres apres depuis puis mais jamais toujours alors lors fois parfois mois
bois pays temps corps cours recours concours parcours discours secours acces succes proces progres exces
deces expres pres dos gaz bus campus virus corpus consensus processus univers divers avis souris
""".split())
_STEMS: dict[str, str] = {}


def stem(word: str) -> str:
    """Light French plural folding of a folded word: -s, -x after eu/ou/eau, -aux -> -al.

    Deliberately simple and symmetric: keywords and text go through it alike, so a collision only
    matters when both sides collide. Words of three letters or less and a few invariable words
    (`plus`, `cours`, `accès`...) are left alone.
    """
    cached = _STEMS.get(word)
    if cached is not None:
        return cached
    result = word
    if len(word) > 3 and word not in _INVARIANT:
        last = word[-1]
        if last == "s":
            if word[-2] != "s":
                result = word[:-1]
        elif last == "x":
            if word.endswith("eaux"):
                result = word[:-1]
            elif word.endswith("aux"):
                result = word[:-3] + "al"
            elif word.endswith(("eux", "oux")):
                result = word[:-1]
    if len(_STEMS) > 500_000:
        _STEMS.clear()
    _STEMS[word] = result
    return result


def surface_forms(stemmed: str) -> list[str]:
    """Every folded word whose stem is `stemmed` (the word itself, its -s/-x/-aux plurals)."""
    candidates = {stemmed, stemmed + "s", stemmed + "x"}
    if stemmed.endswith("al"):
        candidates.add(stemmed[:-2] + "aux")
    return sorted(c for c in candidates if stem(c) == stemmed)


def _is_caps(original: str) -> bool:
    """A word written entirely in capitals (at least two letters); a plural s/x may be lower case."""
    core = original.rstrip("sx") if original[-1:] in ("s", "x") else original
    return sum(c.isalpha() for c in core) >= 2 and core.isupper()


@dataclass(frozen=True)
class Token:
    """One word of a text: folded form, stem, offsets in the original and whether it is in capitals."""

    text: str
    stem: str
    start: int
    end: int
    caps: bool


class FoldedText:
    """A text folded once for matching: its words, and on demand their capitals and offsets.

    The matcher works on `words` (plain strings, so set operations and `list.index` run in C); capitals
    and offsets are only computed for the few words that matched.
    """

    __slots__ = ("text", "_base", "low", "words", "aligned", "ligatures", "_case", "_lows", "_offsets", "_alow")

    def __init__(self, text: str) -> None:
        self.text = text
        self._base = _base(text)
        low = self.low = self._base.translate(_LOWER)
        # One byte per character: offsets in `low` are the text's.
        self.aligned = len(low) == len(text)
        # œ/æ placeholders in `low`: patterns need `low_pattern(..., ligatures=True)`.
        self.ligatures = b"\x01" in low or b"\x03" in low
        # `_expand` for lower case, whose placeholders are only these two.
        self.words = (low.replace(b"\x01", b"oe").replace(b"\x03", b"ae") if self.ligatures
                      else low).decode("ascii").split()
        self._case: list[str] | None = None
        self._lows: list[bytes] | None = None
        self._offsets: list[int] | None = None
        self._alow = low

    def caps_at(self, start: int, end: int) -> bool:
        """`caps` for the word at offsets start:end of `low`, without folding the whole text again."""
        return _is_caps(_expand(self._base[start:end].translate(_KEEP_CASE)).decode("ascii"))

    def find(self, pattern: re.Pattern[bytes], head: bytes = b"", caps: Sequence[int] = ()) -> tuple[int, int] | None:
        """Offsets in `low` of the first match of a `low_pattern` that starts a word and whose groups
        `caps` are words written in capitals; None if there is none.

        `head`, the literal beginning of every match, lets `bytes.find` (much faster than the regex
        engine's own scan) jump from one candidate position to the next.
        """
        low = self.low
        if head:
            at = low.find(head)
            while at >= 0:
                if at == 0 or low[at - 1] == 32:
                    m = pattern.match(low, at)
                    if m is not None and (not caps or all(self.caps_at(*m.span(g)) for g in caps)):
                        return at, m.end()
                at = low.find(head, at + 1)
            return None
        pos = 0
        while True:
            m = pattern.search(low, pos)
            if m is None:
                return None
            start = m.start()
            if (start == 0 or low[start - 1] == 32) and (not caps or all(self.caps_at(*m.span(g)) for g in caps)):
                return start, m.end()
            pos = start + 1  # not `m.end()`: a later match may start inside this one

    def caps(self, index: int) -> bool:
        """Whether word `index` is written in capitals."""
        if self._case is None:
            self._case = _expand(self._base.translate(_KEEP_CASE)).decode("ascii").split()
        return _is_caps(self._case[index])

    def span(self, first: int, last: int) -> tuple[int, int]:
        """Character offsets in the original text from the start of word `first` to the end of `last`."""
        if self._lows is None:
            if len(self._base) != len(self.text):
                self._alow, self._offsets = _aligned(self.text)
            self._lows = self._alow.split() if (b"\x01" in self._alow or b"\x03" in self._alow) else []
        low = self._alow
        if self._lows:  # ligatures: the folded words are longer than the text's, count on the text's
            token = self._lows[first]
            rank = self._lows[:first].count(token)
        else:
            word = self.words[first]
            token = word.encode("ascii")
            rank = 0 if self.words.index(word) == first else self.words[:first].count(word)
        size, end = len(token), len(low)
        at = -1
        while rank >= 0:
            at = low.find(token, at + 1)
            if at < 0:  # pragma: no cover - the words come from this very text
                return 0, 0
            if (at == 0 or low[at - 1] == 32) and (at + size == end or low[at + size] == 32):
                rank -= 1
        start, stop = at, at + size
        if last > first:
            for m in islice(_TOKEN.finditer(low, stop), last - first):
                stop = m.end()
        if self._offsets is not None:
            return self._offsets[start], self._offsets[stop - 1] + 1
        return start, stop


def _ligature_bytes(form: str) -> str:
    """`form` as a pattern also matching the one-byte œ/æ placeholders that `FoldedText.low` keeps.

    Exact: "oe" (and "ae") cannot overlap itself, so every way a folded word expands to `form` is
    covered by choosing, at each occurrence, the two letters or the placeholder.
    """
    return re.escape(form).replace("oe", "(?:oe|\x01)").replace("ae", "(?:ae|\x03)")


def low_pattern(parts: Sequence[tuple[Sequence[str], bool]], ligatures: bool = False,
                groups: bool = False) -> re.Pattern[bytes]:
    """A regex over `FoldedText.low` matching consecutive words: each part is (exact spellings, False)
    or ((prefix,), True); with `groups`, word i is group i + 1. Search with `FoldedText.find`, which
    adds the start-of-word check.

    Searching the folded bytes in C finds a phrase and its offsets at once, where walking the word
    list costs Python steps per occurrence. `ligatures=True` gives the slower pattern for a text whose
    `low` holds œ/æ placeholders. No leading look-behind: it would make `re` try every position
    (15x slower than letting it jump to the first letters).
    """
    letters = "[a-z0-9\x01\x03]*" if ligatures else "[a-z0-9]*"
    pieces = []
    for spellings, prefix in parts:
        if prefix:
            (start,) = spellings
            options = [_ligature_bytes(start) + letters] if ligatures else [re.escape(start) + letters]
            if ligatures and start[-1] in "oa":  # the word's œ/æ may straddle the end of the prefix
                options.append(_ligature_bytes(start[:-1]) + ("\x01" if start[-1] == "o" else "\x03") + letters)
        elif ligatures:
            options = [_ligature_bytes(s) for s in sorted(spellings)]
        else:
            # A literal common beginning lets `re` jump to candidate positions with a fast search.
            common = os.path.commonprefix(list(spellings))
            tails = sorted({s[len(common):] for s in spellings})
            endings = [t for t in tails if t]
            if not endings:
                tail = ""
            elif all(len(t) == 1 for t in endings):  # "", "s", "x": a character class
                tail = (endings[0] if len(endings) == 1 else f"[{''.join(endings)}]") + ("?" if "" in tails else "")
            else:
                tail = "(?:" + "|".join(map(re.escape, tails)) + ")"
            options = [re.escape(common) + tail]
        piece = options[0] if len(options) == 1 else "(?:" + "|".join(options) + ")"
        pieces.append(f"({piece})" if groups else piece)
    return re.compile((" +".join(pieces) + "(?![^ ])").encode("latin-1"))


def normalize_tokens(text: str) -> list[Token]:
    """The words of `text` with their offsets (the complete, slower form of `fold`)."""
    low, offsets = _aligned(text)
    tokens = []
    for m in _TOKEN.finditer(low):
        s, e = m.span()
        start, end = (s, e) if offsets is None else (offsets[s], offsets[e - 1] + 1)
        word = _expand(m.group()).decode("ascii")
        tokens.append(Token(word, stem(word), start, end, _is_caps(text[start:end])))
    return tokens


# --------------------------------------------------------------------------------------------------
# Phrases: the unit shared by keywords and query terms

_ELISIONS = frozenset({"l", "d", "qu", "j", "n", "s", "c", "m", "t", "jusqu", "lorsqu", "puisqu", "quoiqu"})
_APOSTROPHES = "'’‘ʼ`´"


@dataclass(frozen=True)
class Word:
    """One word of a phrase: its stem (or, for a prefix, its folded beginning) and whether capitals are required."""

    text: str
    prefix: bool = False
    caps: bool = False

    def matches(self, folded: str) -> bool:
        return folded.startswith(self.text) if self.prefix else stem(folded) == self.text


def parse_phrase(text: str, offset: int = 0, query: str | None = None) -> tuple[Word, ...]:
    """Words of a keyword or quoted phrase: `*` marks a prefix, a leading elided article is dropped.

    Raises `QueryError` (positions shifted by `offset` within `query`) when nothing is searchable or
    a `*` is misplaced.
    """
    where = query if query is not None else text
    tokens = normalize_tokens(text)
    words: list[Word] = []
    stars = {i for i, c in enumerate(text) if c == "*"}
    used: set[int] = set()
    for index, token in enumerate(tokens):
        prefix = token.end in stars
        if prefix:
            used.add(token.end)
            if len(token.text) < 2:
                raise QueryError(where, offset + token.start, "a prefix needs at least 2 letters before '*'")
        following = text[token.end:tokens[index + 1].start] if index + 1 < len(tokens) else ""
        if not words and index + 1 < len(tokens) and token.text in _ELISIONS and not prefix \
                and following and following[0] in _APOSTROPHES:
            continue
        words.append(Word(token.text if prefix else token.stem, prefix, token.caps))
    for position in sorted(stars - used):
        raise QueryError(where, offset + position, "'*' must end a word (numéri* matches numérique, numérisation)")
    if not words:
        raise QueryError(where, offset, f"nothing to search in {text.strip()!r}: write letters or digits")
    return tuple(words)


# --------------------------------------------------------------------------------------------------
# Query AST


@dataclass(frozen=True)
class Term:
    """A word or phrase; `title` restricts it to titles. `raw` is how it was written (for explanations)."""

    words: tuple[Word, ...]
    raw: str
    title: bool = False
    pos: int = 0


@dataclass(frozen=True)
class Near:
    left: Term
    right: Term
    distance: int
    title: bool = False
    pos: int = 0

    @property
    def raw(self) -> str:
        return f"{self.left.raw} NEAR/{self.distance} {self.right.raw}"


@dataclass(frozen=True)
class Not:
    child: "Node"
    pos: int = 0


@dataclass(frozen=True)
class And:
    children: tuple["Node", ...]
    pos: int = 0


@dataclass(frozen=True)
class Or:
    children: tuple["Node", ...]
    pos: int = 0


Node = Union[Term, Near, Not, And, Or]

_OPENING = {'"': '"', "“": "”", "«": "»", "„": "“"}
_STOP = set(" \t\r\n()") | set(_OPENING) | {"”", "»"}
_NEAR = re.compile(r"NEAR(?:/(\d+))?$")
_FIELD = re.compile(r"([^\W\d_]+):(?=\S)")
_FRENCH_OPERATORS = {"OU": "OR", "ET": "AND", "SAUF": "NOT"}
DEFAULT_NEAR = 10


@dataclass(frozen=True)
class _Lexeme:
    kind: str  # "(", ")", "OR", "AND", "NOT", "NEAR", "FIELD", "TERM", "END"
    pos: int
    text: str = ""
    value: int = 0
    quoted: bool = False


def _lex(query: str) -> list[_Lexeme]:
    out: list[_Lexeme] = []
    i, n = 0, len(query)
    while i < n:
        c = query[i]
        if c.isspace():
            i += 1
        elif c in "()":
            out.append(_Lexeme(c, i))
            i += 1
        elif c in _OPENING:
            close = query.find(_OPENING[c], i + 1)
            if c == "“" and close < 0:
                close = query.find('"', i + 1)
            if close < 0:
                raise QueryError(query, i, f"unclosed quote: add the closing {_OPENING[c]}")
            end = close + 1
            if end < n and query[end] == "*":
                end += 1
            out.append(_Lexeme("TERM", i, query[i + 1:close] + ("*" if query[end - 1] == "*" else ""), quoted=True))
            i = end
        elif c in "”»":
            raise QueryError(query, i, f"closing {c} without an opening quote")
        else:
            j = i
            while j < n and query[j] not in _STOP:
                j += 1
            word = query[i:j]
            field = _FIELD.match(word)
            if field is None and j < n and query[j] in "(" + "".join(_OPENING) and word.endswith(":") \
                    and word[:-1].isalpha():
                field = re.match(r"(\w+):", word)
            if field:
                name = field.group(1)
                if name.lower() != "title":
                    raise QueryError(query, i, f"unknown field '{name}:': only title: is supported")
                out.append(_Lexeme("FIELD", i, "title"))
                i += len(field.group(0))
                continue
            near = _NEAR.match(word)
            if word in ("OR", "AND", "NOT"):
                out.append(_Lexeme(word, i))
            elif near:
                out.append(_Lexeme("NEAR", i, value=int(near.group(1) or DEFAULT_NEAR)))
            elif word.upper().startswith("NEAR/") or word == "NEAR/":
                raise QueryError(query, i, "write NEAR/n in capitals with a number, e.g. fibre NEAR/5 commune")
            elif word in _FRENCH_OPERATORS:
                raise QueryError(query, i, f"operators are written in English: use {_FRENCH_OPERATORS[word]} "
                                           f"instead of {word}")
            elif word.startswith("-") and len(word) > 1 and word[1].isalnum():
                raise QueryError(query, i, f"to exclude a word write NOT {word[1:]}")
            else:
                out.append(_Lexeme("TERM", i, word))
            i = j
    out.append(_Lexeme("END", n))
    return out


class _Parser:
    def __init__(self, query: str) -> None:
        self.query = query
        self.lexemes = _lex(query)
        self.i = 0

    def peek(self) -> _Lexeme:
        return self.lexemes[self.i]

    def take(self) -> _Lexeme:
        lexeme = self.lexemes[self.i]
        self.i += 1
        return lexeme

    def error(self, pos: int, message: str) -> QueryError:
        return QueryError(self.query, pos, message)

    def parse(self) -> Node:
        if self.peek().kind == "END":
            raise self.error(0, "empty query: write at least one word")
        node = self.parse_or()
        end = self.peek()
        if end.kind == ")":
            raise self.error(end.pos, "unmatched ')': remove it or add '(' before")
        if end.kind != "END":  # pragma: no cover - parse_and consumes everything else
            raise self.error(end.pos, "unexpected text")
        _check(node, self.query, top=True)
        return node

    def parse_or(self) -> Node:
        start = self.peek().pos
        children = [self.parse_and()]
        while self.peek().kind == "OR":
            op = self.take()
            if self.peek().kind in ("END", ")", "OR"):
                raise self.error(op.pos, "OR needs a word or group on both sides")
            children.append(self.parse_and())
        return children[0] if len(children) == 1 else Or(tuple(children), start)

    def parse_and(self) -> Node:
        start = self.peek().pos
        children = [self.parse_unary()]
        while self.peek().kind not in ("OR", ")", "END"):
            if self.peek().kind == "AND":
                op = self.take()
                if self.peek().kind in ("END", ")", "OR", "AND"):
                    raise self.error(op.pos, "AND needs a word or group on both sides")
            children.append(self.parse_unary())
        return children[0] if len(children) == 1 else And(tuple(children), start)

    def parse_unary(self) -> Node:
        lexeme = self.peek()
        if lexeme.kind == "NOT":
            self.take()
            if self.peek().kind in ("END", ")", "OR", "AND"):
                raise self.error(lexeme.pos, "NOT needs a word or group after it")
            if self.peek().kind == "NOT":
                raise self.error(self.peek().pos, "NOT NOT cancels out: remove both")
            return Not(self.parse_unary(), lexeme.pos)
        return self.parse_near()

    def parse_near(self) -> Node:
        left_pos = self.peek().pos
        left = self.parse_primary()
        if self.peek().kind != "NEAR":
            return left
        op = self.take()
        if self.peek().kind in ("END", ")", "OR", "AND", "NOT", "NEAR"):
            raise self.error(op.pos, "NEAR needs a word or phrase on both sides")
        right_pos = self.peek().pos
        right = self.parse_primary()
        for side, pos in ((left, left_pos), (right, right_pos)):
            if not isinstance(side, Term):
                raise self.error(pos, "NEAR joins two words or phrases, not groups")
        if self.peek().kind == "NEAR":
            raise self.error(self.peek().pos, "NEAR joins exactly two words or phrases; "
                                              "combine several NEAR with AND")
        assert isinstance(left, Term) and isinstance(right, Term)
        title = left.title or right.title
        return Near(replace(left, title=title), replace(right, title=title), op.value, title, left.pos)

    def parse_primary(self) -> Node:
        lexeme = self.take()
        if lexeme.kind == "FIELD":
            nxt = self.peek()
            if nxt.kind not in ("TERM", "("):
                raise self.error(lexeme.pos, "title: must be followed by a word, a phrase or a group")
            return _in_title(self.parse_primary())
        if lexeme.kind == "(":
            if self.peek().kind == ")":
                raise self.error(lexeme.pos, "empty parentheses")
            inner = self.parse_or()
            if self.peek().kind != ")":
                raise self.error(lexeme.pos, "missing ')' for this '('")
            self.take()
            return inner
        if lexeme.kind == "TERM":
            offset = lexeme.pos + (1 if lexeme.quoted else 0)
            words = parse_phrase(lexeme.text, offset, self.query)
            raw = lexeme.text.strip()
            return Term(words, raw, False, lexeme.pos)
        if lexeme.kind == "END":
            raise self.error(lexeme.pos, "the query ends too early: a word or ')' is missing")
        if lexeme.kind == ")":
            raise self.error(lexeme.pos, "unexpected ')'")
        raise self.error(lexeme.pos, f"{lexeme.kind} needs a word or group before it")


def _in_title(node: Node) -> Node:
    if isinstance(node, Term):
        return replace(node, title=True)
    if isinstance(node, Near):
        return replace(node, left=replace(node.left, title=True), right=replace(node.right, title=True), title=True)
    if isinstance(node, Not):
        return replace(node, child=_in_title(node.child))
    assert isinstance(node, (And, Or))
    return replace(node, children=tuple(_in_title(c) for c in node.children))


def _check(node: Node, query: str, top: bool = False) -> None:
    """Rules FTS5 (and common sense) impose on NOT: it subtracts from something positive."""
    if isinstance(node, Not):
        if top:
            raise QueryError(query, node.pos, "a query cannot be only NOT: say what to find first, "
                                              "e.g. cybersécurité NOT \"jeu vidéo\"")
        _check(node.child, query)
    elif isinstance(node, Or):
        for child in node.children:
            if isinstance(child, Not):
                raise QueryError(query, child.pos, "NOT cannot be an alternative of OR: write (a OR b) NOT c")
            _check(child, query)
    elif isinstance(node, And):
        if all(isinstance(c, Not) for c in node.children):
            raise QueryError(query, node.pos, "a query cannot be only NOT: say what to find first")
        for child in node.children:
            _check(child, query)


def parse_query(text: str) -> Node:
    """Parse a query; `QueryError` says where (0-based position) and why."""
    return _Parser(text).parse()


def terms(node: Node, positive: bool = True) -> list[Term | Near]:
    """The words, phrases and NEAR pairs of a query (by default only those not under NOT)."""
    if isinstance(node, (Term, Near)):
        return [node]
    if isinstance(node, Not):
        return [] if positive else terms(node.child, positive)
    out: list[Term | Near] = []
    for child in node.children:
        out.extend(terms(child, positive))
    return out


# --------------------------------------------------------------------------------------------------
# Compilation to an FTS5 MATCH expression

_MAX_VARIANTS = 16


def _ligature_variants(word: str) -> list[str]:
    """`oeuvre` may be indexed as `oeuvre` or `œuvre` (unicode61 does not fold ligatures)."""
    parts = re.split(r"(oe|ae)", word)
    if len(parts) == 1:
        return [word]
    choices = [(p, "œ") if p == "oe" else (p, "æ") if p == "ae" else (p,) for p in parts]
    variants = ["".join(c) for c in product(*choices)]
    return variants[:_MAX_VARIANTS]


def _word_fts(word: Word) -> tuple[list[str], bool]:
    """Index spellings covering a word inside a phrase, and whether they are prefixes."""
    if word.prefix:
        return _ligature_variants(word.text), True
    forms = surface_forms(word.text) or [word.text]
    if forms == [word.text]:
        return _ligature_variants(word.text), False
    common = forms[0]
    for form in forms[1:]:
        while not form.startswith(common):
            common = common[:-1]
    return _ligature_variants(common), True


def _quote(token: str, prefix: bool) -> str:
    return f'"{token}"' + ("*" if prefix else "")


def _phrase_fts(words: tuple[Word, ...]) -> list[str]:
    """FTS5 phrases (no OR: usable inside NEAR) that together cover the phrase."""
    per_word = [_word_fts(w) for w in words]
    combos = 1
    for spellings, _ in per_word:
        combos *= len(spellings)
    if combos > _MAX_VARIANTS:
        per_word = [(spellings[:1], prefix) for spellings, prefix in per_word]
    return [" + ".join(_quote(t, p) for t, (_, p) in zip(choice, per_word))
            for choice in product(*(s for s, _ in per_word))]


def exact_fts(words: tuple[Word, ...]) -> str | None:
    """An FTS5 expression true exactly where the phrase occurs as the matcher sees it (every plural
    and ligature spelling, no prefix widening), or None when the index cannot tell: words required
    in capitals (the index ignores case) or too many spellings.
    """
    if any(w.caps for w in words):
        return None
    per_word = []
    for w in words:
        forms = [w.text] if w.prefix else (surface_forms(w.text) or [w.text])
        spellings = [v for form in forms for v in _ligature_variants(form)]
        per_word.append([(v, w.prefix) for v in dict.fromkeys(spellings)])
    if math.prod(len(x) for x in per_word) > 2 * _MAX_VARIANTS:
        return None
    phrases = [" + ".join(_quote(t, p) for t, p in choice) for choice in product(*per_word)]
    return "(" + " OR ".join(phrases) + ")"


def _term_fts(words: tuple[Word, ...]) -> str:
    if len(words) == 1 and not words[0].prefix:
        spellings = [v for form in (surface_forms(words[0].text) or [words[0].text]) for v in _ligature_variants(form)]
        alternatives = [_quote(s, False) for s in dict.fromkeys(spellings)]
    else:
        alternatives = _phrase_fts(words)
    return alternatives[0] if len(alternatives) == 1 else "(" + " OR ".join(alternatives) + ")"


def _in_column(expr: str, title: bool) -> str:
    return f"{{title}} : ({expr})" if title else expr


def to_fts(node: Node, candidates: bool = False) -> str:
    """An FTS5 MATCH expression for `articles_fts` (columns title, summary, text).

    With `candidates=True` NOT parts are left out, so the result is a superset of what the exact
    matcher accepts: the topic engine narrows the archive with it, then checks each candidate.
    """
    if isinstance(node, Term):
        return _in_column(_term_fts(node.words), node.title)
    if isinstance(node, Near):
        groups = [f"NEAR({a} {b}, {node.distance})"
                  for a in _phrase_fts(node.left.words) for b in _phrase_fts(node.right.words)]
        expr = groups[0] if len(groups) == 1 else "(" + " OR ".join(groups) + ")"
        return _in_column(expr, node.title)
    if isinstance(node, Or):
        return "(" + " OR ".join(to_fts(c, candidates) for c in node.children) + ")"
    if isinstance(node, And):
        positive = [to_fts(c, candidates) for c in node.children if not isinstance(c, Not)]
        expr = "(" + " AND ".join(positive) + ")" if len(positive) > 1 else positive[0]
        negative = [to_fts(c.child, candidates) for c in node.children if isinstance(c, Not)]
        if negative and not candidates:
            expr = f"({expr} NOT ({' OR '.join(negative)}))"
        return expr
    raise QueryError("", 0, "a query cannot be only NOT")  # _check rejects it before this point
