"""Tag stage: topics.yaml, the keyword matcher, and keeping the archive's tags in step with the rules.

A topic is a list of keywords (with optional `require`, `exclude`, `min_score`) or a boolean `query:`.
Matching follows `veille.query`'s normaliser (accents, case, ligatures, apostrophes, hyphens, regular
plurals, `*` prefixes, capitals-only acronyms). Score: each distinct keyword counts once per field it
occurs in -- title 3, summary 2, body 1 -- so one word repeated twenty times does not outweigh three
different ones.

`Tagger` compiles every topic once into a word index, so tagging an article costs a few set operations
whatever the number of topics; a phrase whose words are all there is then confirmed, and located for its
hit, by one search of the folded bytes. Re-tagging and previews do not scan the archive in Python: the rule is
compiled to an FTS5 expression that selects a superset of candidates, and only those are checked.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import time
from collections import Counter
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from functools import cached_property
from json.encoder import encode_basestring as _json_string  # the C encoder when available
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Sequence

from .config import Mapping, Sequence as YamlSequence, check_keys, load_yaml, require_mapping
from .errors import ConfigError, QueryError, VeilleError
from .query import (
    And, FoldedText, Near, Node, Not, Or, Term, Word, fold, low_pattern, normalize_tokens, parse_phrase,
    parse_query, stem, surface_forms, to_fts,
)
from .types import Field, Hit, TopicMatch

if TYPE_CHECKING:
    from .store import Store

__all__ = [
    "Topic", "load_topics", "parse_topic", "Tagger", "MarkedHit", "tag_articles", "tag_pending", "sync_topics",
    "retag", "RetagResult", "TopicRetag", "preview", "Preview", "PreviewSample", "suggest", "Suggestion",
    "FIELD_WEIGHTS", "topics_hash",
]

FIELD_WEIGHTS: tuple[tuple[Field, int], ...] = (("title", 3), ("summary", 2), ("body", 1))
CONTEXT_CHARS = 40
TOPIC_KEYS = {"label", "keywords", "require", "exclude", "min_score", "query"}
_SLUG = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")


# --------------------------------------------------------------------------------------------------
# topics.yaml


@dataclass(frozen=True)
class Topic:
    """One topic of topics.yaml, validated. Either `keywords` or `query` is set."""

    id: str
    label: str
    keywords: tuple[str, ...] = ()
    require: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()
    min_score: int = 1
    query: str | None = None
    line: int | None = None

    @cached_property
    def rule(self) -> dict[str, Any]:
        """What decides the tags, in a canonical form (the label and keyword order do not)."""
        def words(items: Iterable[str]) -> list[str]:
            return sorted({" ".join(k.split()) for k in items})

        if self.query is not None:
            return {"query": " ".join(self.query.split()), "min_score": self.min_score}
        return {"keywords": words(self.keywords), "require": words(self.require),
                "exclude": words(self.exclude), "min_score": self.min_score}

    @cached_property
    def rule_hash(self) -> str:
        canonical = json.dumps(self.rule, ensure_ascii=False, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode("utf-8")).hexdigest()

    @cached_property
    def rule_json(self) -> str:
        return json.dumps({"label": self.label, **self.rule, "keywords_order": list(self.keywords)}
                          if self.query is None else {"label": self.label, **self.rule}, ensure_ascii=False)


def load_topics(path: str | Path, text: str | None = None) -> list[Topic]:
    """Read and validate topics.yaml; `ConfigError` names file, line and key of the first problem."""
    path = str(path)
    doc = require_mapping(path, load_yaml(path, text), "")
    check_keys(path, doc, {"topics"}, "")
    items = doc.get("topics")
    if not isinstance(items, Mapping) or not items:
        raise ConfigError(path, doc.line_of("topics") if "topics" in doc else doc.line, "topics",
                          "expected the topics, one block per topic id",
                          "e.g.\ntopics:\n  smart-city:\n    label: Smart city\n    keywords: [smart city]")
    return [parse_topic(path, topic_id, items[topic_id], items.line_of(topic_id)) for topic_id in items]


def parse_topic(path: str, topic_id: str, value: Any, line: int | None = None) -> Topic:
    """Validate one topic's block (also used for draft rules given to `veille topics preview --rule`)."""
    key = f"topics.{topic_id}"
    if not _SLUG.match(topic_id):
        raise ConfigError(path, line, key, f"{topic_id!r} is not a valid topic id",
                          "use lower-case letters, digits, '-' and '_', e.g. smart-city")
    block = require_mapping(path, value, key, line)
    check_keys(path, block, TOPIC_KEYS, key)
    label = block.get("label")
    if not isinstance(label, str) or not label.strip():
        raise ConfigError(path, block.line_of("label"), f"{key}.label",
                          "missing label" if "label" not in block else "the label must be a text",
                          "the label is the title of the topic's section in the digest")
    if "keywords" in block and "query" in block:
        raise ConfigError(path, block.line_of("query"), f"{key}.query", "use either keywords or query, not both",
                          "put the keywords in the query with OR, e.g. query: 'fibre OR THD'")
    if "keywords" not in block and "query" not in block:
        raise ConfigError(path, block.line, key, "missing keywords (or query)",
                          "e.g. keywords: [ville intelligente, smart city]")
    min_score = block.get("min_score", 1)
    if isinstance(min_score, bool) or not isinstance(min_score, int) or not 1 <= min_score <= 100:
        raise ConfigError(path, block.line_of("min_score"), f"{key}.min_score", "expected a whole number from 1 to 100",
                          "a title hit counts 3, summary 2, body 1")
    if "query" in block:
        for extra in ("require", "exclude"):
            if extra in block:
                raise ConfigError(path, block.line_of(extra), f"{key}.{extra}", f"{extra} cannot be used with query",
                                  "write it in the query: a AND (b OR c) for require, NOT x for exclude")
        query = block["query"]
        if not isinstance(query, str) or not query.strip():
            raise ConfigError(path, block.line_of("query"), f"{key}.query", "expected a query text",
                              "quote it: query: 'cybersécurité OR rançongiciel'")
        try:
            parse_query(query)
        except QueryError as e:
            raise ConfigError(path, block.line_of("query"), f"{key}.query",
                              f"{e.message} (character {e.position + 1} of the query)",
                              f"{query}\n{' ' * e.position}^") from None
        return Topic(topic_id, label.strip(), min_score=min_score, query=query.strip(), line=line)
    keywords = _keyword_list(path, block, "keywords", key, required=True)
    require = _keyword_list(path, block, "require", key)
    exclude = _keyword_list(path, block, "exclude", key)
    return Topic(topic_id, label.strip(), keywords, require, exclude, min_score, None, line)


def _keyword_list(path: str, block: Mapping, name: str, key: str, required: bool = False) -> tuple[str, ...]:
    if name not in block or block[name] is None:
        if required:
            raise ConfigError(path, block.line_of(name), f"{key}.{name}", "expected at least one keyword")
        return ()
    items = block[name]
    if not isinstance(items, YamlSequence):
        raise ConfigError(path, block.line_of(name), f"{key}.{name}", "expected a list of keywords",
                          f"e.g. {name}: [fibre optique, THD]")
    if required and not items:
        raise ConfigError(path, block.line_of(name), f"{key}.{name}", "expected at least one keyword")
    out = []
    for index, item in enumerate(items):
        where = items.item_lines[index] if index < len(items.item_lines) else block.line_of(name)
        if isinstance(item, bool) or not isinstance(item, (str, int, float)) or not str(item).strip():
            raise ConfigError(path, where, f"{key}.{name}[{index}]", "a keyword must be a word or phrase",
                              "quote it if it contains ':' or starts with '*'")
        text = " ".join(str(item).split())
        try:
            parse_phrase(text)
        except QueryError as e:
            raise ConfigError(path, where, f"{key}.{name}[{index}]", f"{text!r}: {e.message}") from None
        out.append(text)
    return tuple(out)


_COMMON = frozenset(stem(w) for w in """
de des du la le les l d a au aux en et un une pour sur par avec dans numerique public publique service ville
commune territoire donnee plan centre projet local locale national conseil agent reseau france etat
""".split())


def _anchor(words: tuple[Word, ...]) -> int:
    """The word of a phrase most likely to be rare: the longest plain word, skipping very common ones."""
    def rarity(index: int) -> tuple[int, int, int]:
        word = words[index]
        return (0 if word.prefix else 1, 0 if word.text in _COMMON else 1, len(word.text))

    return max(range(len(words)), key=lambda i: (rarity(i), -i))


def topics_hash(topics: Iterable[Topic]) -> str:
    """Version of a whole topic set (ids, order and rules): what `article_tagging` records."""
    return hashlib.sha256("\n".join(f"{t.id}:{t.rule_hash}" for t in topics).encode()).hexdigest()


# --------------------------------------------------------------------------------------------------
# Matcher


@dataclass(frozen=True)
class MarkedHit:
    """A hit with where the matched words are in `hit.text` (for highlighting)."""

    hit: Hit
    start: int
    end: int


_Result = tuple
"""(topic_id, score, (((keyword, field, text), mark start, mark end), ...)): plain tuples, this is the hot
path; `match` makes `Hit`s of them, `rows` JSON straight away."""
_KEYWORD, _REQUIRE, _EXCLUDE, _QUERY = range(4)


class _Compiled:
    __slots__ = ("topic", "keywords", "require", "exclude", "ast", "min_score", "order", "display")

    def __init__(self, topic: Topic) -> None:
        self.topic = topic
        self.keywords: list[tuple[int, str]] = []
        self.require: list[int] = []
        self.exclude: list[int] = []
        self.ast: tuple | None = None
        self.min_score = topic.min_score
        self.order: dict[int, int] = {}
        self.display: dict[int, str] = {}


class _FieldState:
    """One field of one article: its folded words and the atoms found in it (with positions once known).

    `found` maps an atom to its word positions, or None until they are needed (only NEAR needs them).
    `spans` holds the character offsets of an atom's first occurrence, known from searching the folded
    bytes when these have one byte per character (`folded.aligned`).
    """

    __slots__ = ("name", "weight", "folded", "relevant", "memo", "found", "_where", "spans")

    def __init__(self, name: Field, weight: int, folded: FoldedText, relevant: set[str],
                 memo: dict[str, tuple[int, ...]]) -> None:
        self.name = name
        self.weight = weight
        self.folded = folded
        self.relevant = relevant
        self.memo = memo  # as it was for this scan: the tagger may forget what it learnt since
        self.found: dict[int, list[int] | None] = {}
        self._where: dict[str, list[int]] | None = None
        self.spans: dict[int, tuple[int, int]] = {}

    def twin(self, name: Field, weight: int) -> "_FieldState":
        """This scan under another field's name and weight: a feed's summary is often its text too."""
        other = _FieldState(name, weight, self.folded, self.relevant, self.memo)
        other.found, other.spans = self.found, self.spans  # positions and offsets hold for both
        return other

    def anchors(self, aid: int) -> list[str]:
        """The field's words that are a spelling of the atom's anchor (only the slow paths need them)."""
        return [w for w in self.relevant if aid in self.memo[w]]

    def where(self, word: str) -> list[int]:
        """Positions of `word` in the field (computed once: `list.index` runs in C)."""
        if self._where is None:
            self._where = {}
        found = self._where.get(word)
        if found is None:
            words, found, i = self.folded.words, [], -1
            while True:
                try:
                    i = words.index(word, i + 1)
                except ValueError:
                    break
                found.append(i)
            self._where[word] = found
        return found


class Tagger:
    """All topics compiled once into a word index; `match()` is then cheap and needs no database.

    Picklable (plain dicts and sets), so it can be shipped to worker processes.
    """

    def __init__(self, topics: Sequence[Topic]) -> None:
        self.topics = tuple(topics)
        self._by_id = {t.id: i for i, t in enumerate(self.topics)}
        self._atoms: list[tuple[Word, ...]] = []
        self._atom_ids: dict[tuple[Word, ...], int] = {}
        self._atom_topics: list[set[int]] = []
        self._compiled = [self._compile(index, t) for index, t in enumerate(self.topics)]
        self._roles: list[list[tuple[int, int]]] = [[] for _ in self._atoms]
        for index, c in enumerate(self._compiled):
            roles = ([(aid, _QUERY) for aid, topics in enumerate(self._atom_topics) if index in topics]
                     if c.ast is not None
                     else [(aid, _KEYWORD) for aid, _ in c.keywords] + [(aid, _REQUIRE) for aid in c.require]
                     + [(aid, _EXCLUDE) for aid in c.exclude])
            for aid, role in dict.fromkeys(roles):
                self._roles[aid].append((index, role))
        # The same roles split for `_run`: most atoms are only ever keywords.
        self._keyword_of = [tuple(i for i, role in roles if role == _KEYWORD) for roles in self._roles]
        self._other_roles = [tuple((i, role) for i, role in roles if role != _KEYWORD) for roles in self._roles]
        self._simple = [len(a) == 1 and not a[0].caps for a in self._atoms]
        self._forms = [tuple(None if w.prefix else frozenset(surface_forms(w.text)) for w in a) for a in self._atoms]
        # Each phrase is indexed by its least common-looking word (its anchor), so that frequent words
        # like "ville" or "service" do not make every article a candidate for dozens of phrases.
        self._anchor = [_anchor(a) for a in self._atoms]
        # Word numbers (regex groups) that must be written in capitals.
        self._caps = [tuple(j + 1 for j, w in enumerate(a) if w.caps) for a in self._atoms]
        self._rest = [tuple(f for j, f in enumerate(forms) if f is not None and j != k)
                      for forms, k in zip(self._forms, self._anchor)]
        self._anchor_stem: dict[str, list[int]] = {}
        self._anchor_prefix: dict[str, list[int]] = {}
        for aid, atom in enumerate(self._atoms):
            word = atom[self._anchor[aid]]
            target = self._anchor_prefix if word.prefix else self._anchor_stem
            target.setdefault(word.text, []).append(aid)
        self._prefix_lengths = sorted({len(p) for p in self._anchor_prefix})
        # Text words that can be an anchor: every spelling of every anchor stem, known in advance; words
        # matching an anchor prefix are learnt as they come (memoised).
        self._stem_memo: dict[str, tuple[int, ...]] = {}
        for stemmed, aids in self._anchor_stem.items():
            for form in surface_forms(stemmed) or [stemmed]:
                self._stem_memo[form] = tuple(aids)
        # The other words of the phrases: a phrase is only searched for when they are all in the field.
        self._rest_vocab: frozenset[str] = frozenset().union(*(f for rest in self._rest for f in rest))
        self._forget()
        # `_pattern`s for texts without and with œ/æ.
        self._patterns: tuple[dict[int, tuple[re.Pattern[bytes], bytes]], ...] = ({}, {})
        self.rule_hash = topics_hash(self.topics)
        self.topic_hashes = {t.id: t.rule_hash for t in self.topics}

    # -- compilation ---------------------------------------------------------------------------------

    def _atom(self, words: tuple[Word, ...], topic_index: int) -> int:
        aid = self._atom_ids.get(words)
        if aid is None:
            aid = self._atom_ids[words] = len(self._atoms)
            self._atoms.append(words)
            self._atom_topics.append(set())
        self._atom_topics[aid].add(topic_index)
        return aid

    def _compile(self, index: int, topic: Topic) -> _Compiled:
        c = _Compiled(topic)
        if topic.query is not None:
            c.ast = self._compile_node(parse_query(topic.query), index)
            return c
        for keyword in topic.keywords:
            aid = self._atom(parse_phrase(keyword), index)
            if aid not in c.display:
                c.display[aid] = keyword
                c.order[aid] = len(c.keywords)
                c.keywords.append((aid, keyword))
        c.require = list(dict.fromkeys(self._atom(parse_phrase(k), index) for k in topic.require))
        c.exclude = list(dict.fromkeys(self._atom(parse_phrase(k), index) for k in topic.exclude))
        return c

    def _compile_node(self, node: Node, index: int) -> tuple:
        if isinstance(node, Term):
            return ("term", self._atom(node.words, index), node.title, node.raw)
        if isinstance(node, Near):
            return ("near", self._atom(node.left.words, index), self._atom(node.right.words, index),
                    node.distance, node.title, node.raw)
        if isinstance(node, Not):
            return ("not", self._compile_node(node.child, index))
        if isinstance(node, And):
            return ("and", tuple(self._compile_node(c, index) for c in node.children))
        assert isinstance(node, Or)
        return ("or", tuple(self._compile_node(c, index) for c in node.children))

    def fts_query(self, topic_id: str) -> str:
        """An FTS5 expression selecting a superset of the articles this topic can tag."""
        topic = self.topics[self._by_id[topic_id]]
        if topic.query is not None:
            return to_fts(parse_query(topic.query), candidates=True)
        compiled = self._compiled[self._by_id[topic_id]]

        def any_of(aids: list[int]) -> str:
            alternatives = [Term(self._atoms[aid], "") for aid in aids]
            return to_fts(Or(tuple(alternatives)) if len(alternatives) > 1 else alternatives[0])

        expr = any_of([aid for aid, _ in compiled.keywords])
        if compiled.require:
            expr = f"({expr}) AND {any_of(compiled.require)}"
        return expr

    def index_scores(self, store: "Store", topic_id: str, since: datetime) -> tuple[dict[int, int], dict[int, str]] | None:
        """Scores of a keyword topic over the articles published since `since`, from the full-text index
        alone: (article id -> score, article id -> published_at). None when the index cannot decide
        (query rules, words required in capitals): then check candidates with `match`.
        """
        from .query import exact_fts

        c = self._compiled[self._by_id[topic_id]]
        if c.ast is not None:
            return None
        atoms = [a for a, _ in c.keywords] + c.require + c.exclude
        expressions = {aid: exact_fts(self._atoms[aid]) for aid in atoms}
        uncased = {aid: exact_fts(tuple(replace(w, caps=False) for w in self._atoms[aid]))
                   for aid in atoms if expressions[aid] is None}
        if any(e is None for e in uncased.values()):
            return None
        published = store.published_since(since)
        window = published.keys()
        checked: dict[int, dict[str, set[int]]] = {}

        def in_capitals(aid: int) -> dict[str, set[int]]:
            """Where a capitals-only phrase really occurs: the index finds it in any case, the matcher checks."""
            if aid not in checked:
                words = self._atoms[aid]
                keyword = " ".join(w.text.upper() if w.caps else w.text + ("*" if w.prefix else "") for w in words)
                probe = Tagger([Topic("probe", "probe", (keyword,))])
                fields: dict[str, set[int]] = {"title": set(), "summary": set(), "text": set()}
                candidates = sorted(store.fts_ids(uncased[aid]) & window)
                for row in store.article_texts(candidates):
                    for match in probe.match(row["title"], row["summary"], row["text"]):
                        for hit in match.hits:
                            fields["text" if hit.field == "body" else hit.field].add(row["id"])
                checked[aid] = fields
            return checked[aid]

        def ids(aid: int, column: str | None = None) -> set[int]:
            if expressions[aid] is None:
                found = in_capitals(aid)
                return found[column] if column else found["title"] | found["summary"] | found["text"]
            expr = expressions[aid]
            return store.fts_ids(f"{{{column}}} : {expr}" if column else expr) & window

        scores: Counter = Counter()
        for aid, _ in c.keywords:
            for (_, weight), column in zip(FIELD_WEIGHTS, ("title", "summary", "text")):
                for i in ids(aid, column):
                    scores[i] += weight
        keep = {i for i, score in scores.items() if score >= c.min_score}
        if c.require:
            keep &= set().union(*(ids(aid) for aid in c.require))
        if c.exclude:
            keep -= set().union(*(ids(aid) for aid in c.exclude))
        return {i: scores[i] for i in keep}, {i: published[i] for i in keep}

    # -- matching ------------------------------------------------------------------------------------

    def _forget(self) -> None:
        self._memo = dict(self._stem_memo)
        self._relevant = set(self._stem_memo)
        self._lookup = self._relevant | self._rest_vocab
        self._known: set[str] = set()

    def _learn(self, words: set[str]) -> None:
        """Index new words against the anchor prefixes (only topics with `*` keywords need this)."""
        if len(self._known) > 2_000_000:
            self._forget()
        for w in words:
            self._known.add(w)
            aids = list(self._memo.get(w, ()))
            for length in self._prefix_lengths:
                if length > len(w):
                    break
                aids.extend(self._anchor_prefix.get(w[:length], ()))
            if aids:
                self._memo[w] = tuple(aids)
                self._relevant.add(w)
                self._lookup.add(w)

    def _scan(self, name: Field, weight: int, text: str) -> _FieldState | None:
        folded = FoldedText(text)
        words = folded.words
        if self._prefix_lengths:
            new = set(words) - self._known
            if new:
                self._learn(new)
        # One pass over the words (hashing each once) finds the anchors and the other words of phrases.
        present = self._lookup.intersection(words)
        relevant = self._relevant.intersection(present)
        if not relevant:
            return None
        memo = self._memo
        state = _FieldState(name, weight, folded, relevant, memo)
        candidates: set[int] = set()
        for w in relevant:
            candidates.update(memo[w])
        found, spans, simple, rest, caps = state.found, state.spans, self._simple, self._rest, self._caps
        aligned, find = folded.aligned, folded.find
        patterns = self._patterns[folded.ligatures]
        for aid in candidates:
            if simple[aid]:
                found[aid] = None
                continue
            for f in rest[aid]:
                if f.isdisjoint(present):
                    break  # a word of the phrase is not in the field: no need to search for it
            else:
                # One search of the folded bytes tells whether the atom is there and, for its hit, where.
                pattern, head = patterns.get(aid) or self._pattern(aid, folded.ligatures)
                span = find(pattern, head, caps[aid])
                if span is not None:
                    found[aid] = None
                    if aligned:
                        spans[aid] = span
        return state if found else None

    def prepare(self) -> None:
        """Compile every phrase's pattern now rather than at its first match: a pool process does it
        while the main process is still starting, so the pass's first feeds do not wait for it."""
        for aid, simple in enumerate(self._simple):
            if not simple and aid not in self._patterns[False]:
                self._pattern(aid, False)

    def _pattern(self, aid: int, ligatures: bool) -> tuple[re.Pattern[bytes], bytes]:
        """The atom's `low_pattern` and the literal its matches start with (b"" if too short to help),
        compiled on first use: a one-topic tagger for a preview needs few."""
        # The same spellings as the word index: the anchor's forms are the `_stem_memo` ones, and
        # `surface_forms` of a stem is never empty (the word it came from is one of them).
        parts = [((w.text,), True) if w.prefix else (surface_forms(w.text), False) for w in self._atoms[aid]]
        pattern = low_pattern(parts, ligatures, bool(self._caps[aid]))
        # A head of one or two letters ("e-santé") would stop `bytes.find` at every other word.
        head = os.path.commonprefix(list(parts[0][0])).encode("ascii")
        compiled = self._patterns[ligatures][aid] = (pattern, head if len(head) >= 3 and not ligatures else b"")
        return compiled

    def _find(self, folded: FoldedText, aid: int) -> tuple[int, int] | None:
        """Offsets in the folded bytes of the atom's first occurrence (capitals checked), or None."""
        pattern, head = self._patterns[folded.ligatures].get(aid) or self._pattern(aid, folded.ligatures)
        return folded.find(pattern, head, self._caps[aid])

    def _verify(self, state: _FieldState, aid: int, anchors: list[str]) -> list[int]:
        """Start positions where the whole phrase occurs around its anchor word (other words, capitals)."""
        atom, forms, k = self._atoms[aid], self._forms[aid], self._anchor[aid]
        words, folded = state.folded.words, state.folded
        size, length = len(words), len(atom)
        out = []
        for w in anchors:
            for p in state.where(w):
                i = p - k
                if i < 0 or i + length > size:
                    continue
                ok = True
                for j in range(length):
                    if j == k:
                        continue
                    f = forms[j]
                    if not (words[i + j] in f if f is not None else words[i + j].startswith(atom[j].text)):
                        ok = False
                        break
                if ok and all(folded.caps(i + j) for j, word in enumerate(atom) if word.caps):
                    out.append(i)
        out.sort()
        return out

    def _first(self, state: _FieldState, aid: int) -> int:
        """Where the atom first occurs in the field (cheap for single words: `list.index` stops early)."""
        found = state.found[aid]
        if found is None and self._simple[aid]:
            words, candidates = state.folded.words, state.anchors(aid)
            return words.index(candidates[0]) if len(candidates) == 1 else min(words.index(w) for w in candidates)
        return self._positions(state, aid)[0]

    def _positions(self, state: _FieldState, aid: int) -> list[int]:
        found = state.found[aid]
        if found is None:
            if self._simple[aid]:
                found = sorted(i for w in state.anchors(aid) for i in state.where(w))
            else:
                found = self._verify(state, aid, state.anchors(aid))
            state.found[aid] = found
        return found

    def _run(self, title: str, summary: str, text: str) -> list[_Result]:
        fields: list[_FieldState] = []
        keyword_hits: dict[int, list[tuple[_FieldState, int]]] = {}
        flagged: set[tuple[int, int]] = set()
        queries: set[int] = set()
        keyword_of, other_roles = self._keyword_of, self._other_roles
        scanned: list[tuple[str, _FieldState | None]] = []
        for (name, weight), value in zip(FIELD_WEIGHTS, (title, summary, text)):
            if not value:
                continue
            # A field equal to an earlier one (a feed's summary standing for its text) is not scanned again.
            same = next((s for v, s in scanned if v == value), False)
            if same is False:
                state = self._scan(name, weight, value)
                scanned.append((value, state))
            else:
                state = same.twin(name, weight) if same is not None else None
            if state is None:
                continue
            fields.append(state)
            for aid in state.found:
                for index in keyword_of[aid]:
                    hits = keyword_hits.get(index)
                    if hits is None:
                        keyword_hits[index] = [(state, aid)]
                    else:
                        hits.append((state, aid))
                for index, role in other_roles[aid]:
                    if role == _QUERY:
                        queries.add(index)
                    else:
                        flagged.add((index, role))
        results = []
        for index in sorted(keyword_hits.keys() | queries):
            c = self._compiled[index]
            if c.ast is not None:
                result = self._evaluate_query(c, fields)
            elif (index, _EXCLUDE) in flagged or (c.require and (index, _REQUIRE) not in flagged):
                continue
            else:
                result = self._evaluate_keywords(c, keyword_hits[index])
            if result is not None:
                results.append(result)
        return results

    def _evaluate_keywords(self, c: _Compiled, found: list[tuple[_FieldState, int]]) -> _Result | None:
        score = 0
        for state, _ in found:
            score += state.weight
        if score < c.min_score:
            return None
        display, term_hit = c.display, self._term_hit
        if len(found) > 1:
            order = c.order
            found.sort(key=lambda item: (-item[0].weight, order[item[1]]))
        return c.topic.id, score, tuple([term_hit(state, aid, display[aid]) for state, aid in found])

    def _evaluate_query(self, c: _Compiled, fields: list[_FieldState]) -> _Result | None:
        assert c.ast is not None
        present = set().union(*(s.found for s in fields))
        ok, contributions = self._eval(c.ast, fields, present)
        if not ok:
            return None
        unique = list(dict.fromkeys((id(state), node) for state, node in contributions))
        by_id = {id(state): state for state, _ in contributions}
        score = sum(by_id[sid].weight for sid, _ in unique)
        if score < c.min_score:
            return None
        unique.sort(key=lambda item: -by_id[item[0]].weight)
        return c.topic.id, score, tuple(self._hit(by_id[sid], node) for sid, node in unique)

    def _eval(self, node: tuple, fields: list[_FieldState], present: set[int]) -> tuple[bool, list]:
        """Whether the node holds, and the (field, term) pairs that count towards the score.

        `present`: the atoms found in any field, so that the many absent words of an OR cost little.
        """
        kind = node[0]
        if kind == "term":
            _, aid, title, _raw = node
            found = [(s, node) for s in fields if aid in s.found and (not title or s.name == "title")]
            return bool(found), found
        if kind == "near":
            _, left, right, distance, title, _raw = node
            found = [(s, node) for s in fields if (not title or s.name == "title")
                     and left in s.found and right in s.found and self._near(s, left, right, distance)]
            return bool(found), found
        if kind == "not":
            ok, _ = self._eval(node[1], fields, present)
            return not ok, []
        if kind == "and":
            out: list = []
            for child in node[1]:
                ok, contributions = self._eval(child, fields, present)
                if not ok:
                    return False, []
                out.extend(contributions)
            return True, out
        out = []
        any_ok = False
        for child in node[1]:
            if child[0] == "term" and child[1] not in present:
                continue  # false, and counts for nothing
            ok, contributions = self._eval(child, fields, present)
            if ok:
                any_ok = True
                out.extend(contributions)
        return any_ok, out

    def _near_pair(self, state: _FieldState, left: int, right: int, distance: int) -> tuple[int, int] | None:
        """The first (start, end) word span where both atoms occur at most `distance` words apart."""
        len_l, len_r = len(self._atoms[left]), len(self._atoms[right])
        for p in self._positions(state, left):
            for q in self._positions(state, right):
                gap = q - (p + len_l) if q >= p else p - (q + len_r)
                if gap <= distance:
                    return min(p, q), max(p + len_l, q + len_r) - 1
        return None

    def _near(self, state: _FieldState, left: int, right: int, distance: int) -> bool:
        return self._near_pair(state, left, right, distance) is not None

    def _hit(self, state: _FieldState, node: tuple) -> tuple[tuple[str, Field, str], int, int]:
        if node[0] != "near":
            return self._term_hit(state, node[1], node[-1])
        span = self._near_pair(state, node[1], node[2], node[3])
        assert span is not None
        start, end = state.folded.span(*span)
        text, mark_start, mark_end = _context(state.folded.text, start, end)
        return (node[-1], state.name, text), mark_start, mark_end

    def _term_hit(self, state: _FieldState, aid: int, keyword: str) -> tuple[tuple[str, Field, str], int, int]:
        """The hit of the atom's first occurrence in the field (one per keyword and field)."""
        span = state.spans.get(aid)
        if span is None:
            if state.folded.aligned and self._simple[aid]:
                span = state.spans[aid] = self._find(state.folded, aid)
            if span is None:  # texts whose folded bytes are not one per character
                first = self._first(state, aid)
                span = state.folded.span(first, first + len(self._atoms[aid]) - 1)
        text, mark_start, mark_end = _context(state.folded.text, *span)
        return (keyword, state.name, text), mark_start, mark_end

    def match(self, title: str, summary: str, text: str) -> list[TopicMatch]:
        """The topics this article gets, in topics.yaml order, with score and hits."""
        return [TopicMatch(topic_id, score, tuple([Hit(*h[0]) for h in hits]))
                for topic_id, score, hits in self._run(title or "", summary or "", text or "")]

    def rows(self, title: str, summary: str, text: str) -> tuple["TagRow", ...]:
        """`tag_rows(self, self.match(...))` without the `TopicMatch`es and `Hit`s in between: the
        pipeline's workers tag every article and only send the rows on."""
        hashes = self.topic_hashes
        return tuple([(topic_id, score, _hits_json([h[0] for h in hits]), hashes[topic_id])
                      for topic_id, score, hits in self._run(title or "", summary or "", text or "")])

    def match_marked(self, title: str, summary: str, text: str) -> list[tuple[TopicMatch, tuple[MarkedHit, ...]]]:
        """Like `match`, with the position of the matched words inside each hit's text."""
        return [(TopicMatch(topic_id, score, tuple(Hit(*h[0]) for h in hits)),
                 tuple(MarkedHit(Hit(*h[0]), h[1], h[2]) for h in hits))
                for topic_id, score, hits in self._run(title or "", summary or "", text or "")]


def _squash(text: str) -> str:
    """Runs of whitespace as one space, keeping one at either end if there was some."""
    inner = " ".join(text.split())
    if not inner:
        return " " if text else ""
    return (" " if text[0].isspace() else "") + inner + (" " if text[-1].isspace() else "")


def _context(text: str, start: int, end: int, width: int = CONTEXT_CHARS) -> tuple[str, int, int]:
    """The matched words with about `width` characters on each side, cut between words."""
    left = start - width
    if left > 0:
        cut = text.find(" ", left, start)
        newline = text.find("\n", left, start)
        if newline >= 0 and (cut < 0 or newline < cut):
            cut = newline
        left = cut + 1 if cut >= 0 else start
    else:
        left = 0
    right = end + width
    if right < len(text):
        cut = max(text.rfind(" ", end, right), text.rfind("\n", end, right))
        right = cut if cut > end else end
    else:
        right = len(text)
    before, middle, after = text[left:start], text[start:end], text[end:right]
    segment = text[left:right]
    if not segment.isprintable() or "  " in segment:
        before, middle, after = _squash(before), _squash(middle), _squash(after)
    pre = ("… " if left > 0 else "") + before.lstrip()
    post = after.rstrip() + (" …" if right < len(text) else "")
    return pre + middle + post, len(pre), len(pre) + len(middle)


def _hits_json(hits: Iterable[tuple[str, Field, str]]) -> str:
    """article_topics.hits: [{"keyword", "field", "text"}] of (keyword, field, text) triples, written
    directly: this runs per tagged article."""
    quote = _json_string
    return "[" + ",".join(f'{{"keyword":{quote(keyword)},"field":"{field}","text":{quote(text)}}}'
                          for keyword, field, text in hits) + "]"


def _chunks(items: Sequence, size: int) -> Iterable[Sequence]:
    for i in range(0, len(items), size):
        yield items[i:i + size]


# --------------------------------------------------------------------------------------------------
# Keeping the archive in step


def sync_topics(store: "Store", topics: Sequence[Topic]) -> list[str]:
    """Store topics (label, order, rule and its version history); retire those gone from the file.

    Returns the ids whose archive tags do not follow the current rule yet (changed rule, new topic,
    or a re-tag that was interrupted): pass them to `retag`.
    """
    from .store import iso, utcnow

    store.save_topics([(t.id, t.label, t.rule_hash, t.rule_json) for t in topics], iso(utcnow()))
    states = store.topic_states()
    return [t.id for t in topics if states[t.id].tagged_hash != t.rule_hash]


def tag_articles(store: "Store", tagger: Tagger, article_ids: Iterable[int]) -> int:
    """Tag freshly stored (or updated) articles with every topic; returns how many got a topic.

    Each article's tags become exactly what the current rules give, in one transaction per chunk (or
    in the caller's transaction if one is open).
    """

    ids = list(dict.fromkeys(article_ids))
    if not ids:
        return 0
    active = {topic_id for topic_id, state in store.topic_states().items() if state.active}
    if active != {t.id for t in tagger.topics}:
        sync_topics(store, tagger.topics)  # the tags below reference topics, and only these are current
    tagged = 0
    for chunk in _chunks(ids, 1000):
        rows = store.article_texts(chunk)
        tagged += store_matches(store, tagger, [(r["id"], tagger.match(r["title"], r["summary"], r["text"]))
                                                for r in rows], synced=True)
    return tagged


TagRow = tuple[str, int, str, str]
"""One stored tag: (topic_id, score, hits JSON, rule_hash), as `article_topics` holds it."""


def tag_rows(tagger: Tagger, matches: Sequence[TopicMatch]) -> tuple[TagRow, ...]:
    """An article's matches as the rows `store_tag_rows` writes. The pipeline makes them in its worker
    processes: a row is four plain values, where a `TopicMatch` with its `Hit`s is a dozen objects to
    pickle, send and rebuild in the main process."""
    hashes = tagger.topic_hashes
    return tuple((m.topic_id, m.score, _hits_json([(h.keyword, h.field, h.text) for h in m.hits]), hashes[m.topic_id]) for m in matches)


def store_matches(store: "Store", tagger: Tagger, matched: Sequence[tuple[int, Sequence[TopicMatch]]],
                  synced: bool = False) -> int:
    """Store tags matched elsewhere; returns how many articles got a topic. Each article's tags become
    exactly `matched`'s."""
    return store_tag_rows(store, tagger, [(article_id, tag_rows(tagger, matches)) for article_id, matches in matched],
                          synced)


def store_tag_rows(store: "Store", tagger: Tagger, tagged: Sequence[tuple[int, Sequence[TagRow]]],
                   synced: bool = False) -> int:
    """`store_matches` for rows made by `tag_rows` (in the pipeline's workers)."""
    from .store import iso, utcnow

    if not tagged:
        return 0
    if not synced:
        active = {topic_id for topic_id, state in store.topic_states().items() if state.active}
        if active != {t.id for t in tagger.topics}:
            sync_topics(store, tagger.topics)
    store.store_article_tags([article_id for article_id, _ in tagged],
                             [(article_id, *row) for article_id, rows in tagged for row in rows],
                             tagger.rule_hash, iso(utcnow()))
    return sum(1 for _, rows in tagged if rows)


def tag_pending(store: "Store", tagger: Tagger) -> int:
    """Tag the articles that were stored but never tagged (e.g. the process stopped in between)."""
    return tag_articles(store, tagger, store.untagged_article_ids())


@dataclass(frozen=True)
class TopicRetag:
    topic_id: str
    candidates: int
    """Articles the full-text index proposed (a superset); each was checked by the matcher."""
    tagged: int
    gained: int
    lost: int
    seconds: float


@dataclass(frozen=True)
class RetagResult:
    topics: tuple[TopicRetag, ...] = ()

    @property
    def changed(self) -> int:
        return sum(t.gained + t.lost for t in self.topics)


def retag(store: "Store", topics: Sequence[Topic], topic_ids: Sequence[str] | None = None) -> RetagResult:
    """Re-tag the archive for some topics: those given, or (None) those whose rule changed.

    Topics not concerned are not touched. Each topic is done in one transaction, which also records
    the rule version, so an interrupted run resumes with the topics left.
    """
    from .store import iso, utcnow

    by_id = {t.id: t for t in topics}
    if topic_ids is None:
        states = store.topic_states()
        todo = [t.id for t in topics if t.id not in states or states[t.id].tagged_hash != t.rule_hash]
    else:
        unknown = [i for i in topic_ids if i not in by_id]
        if unknown:
            raise VeilleError(f"unknown topic {unknown[0]!r}: not in topics.yaml (see `veille topics list`)")
        todo = list(dict.fromkeys(topic_ids))
    if todo:
        states = store.topic_states()
        if any(i not in states or not states[i].active for i in todo):
            sync_topics(store, topics)
    if todo:
        # A new archive has nothing to re-tag, only the rule versions to record: compiling a matcher
        # per topic for nothing cost a first pass 60 ms before its first request.
        with store.transaction():
            if not store.has_articles():
                for topic_id in todo:
                    store.mark_topic_tagged(topic_id, by_id[topic_id].rule_hash)
                return RetagResult(tuple(TopicRetag(topic_id, 0, 0, 0, 0, 0.0) for topic_id in todo))
    results = []
    for topic_id in todo:
        started = time.perf_counter()
        topic = by_id[topic_id]
        tagger = Tagger([topic])
        expr = tagger.fts_query(topic_id)
        now = iso(utcnow())
        with store.transaction():
            old = store.topic_article_ids(topic_id)
            rows = store.fts_articles(expr)
            tags = []
            for row in rows:
                for _topic_id, score, hits, rule_hash in tagger.rows(row["title"], row["summary"], row["text"]):
                    tags.append((row["id"], score, hits, rule_hash))
            new = {t[0] for t in tags}
            store.replace_topic_tags(topic_id, tags, old - new, now)
            store.mark_topic_tagged(topic_id, topic.rule_hash)
        results.append(TopicRetag(topic_id, len(rows), len(new), len(new - old), len(old - new),
                                  time.perf_counter() - started))
    if todo and set(todo) >= set(by_id):
        # Every topic went over the whole archive: each article has now been through the full set.
        with store.transaction():
            store.mark_all_tagged(topics_hash(topics))
    return RetagResult(tuple(results))


# --------------------------------------------------------------------------------------------------
# Preview and suggestions (staff tools)


@dataclass(frozen=True)
class PreviewSample:
    article_id: int
    published_at: datetime
    title: str
    score: int
    hits: tuple[MarkedHit, ...]


@dataclass(frozen=True)
class Preview:
    """What a rule tags in the archive over the last `weeks`, compared with the stored tags."""

    topic_id: str
    label: str
    draft: bool
    weeks: int
    since: datetime
    candidates: int
    total: int
    per_week: tuple[tuple[str, int], ...]
    samples: tuple[PreviewSample, ...]
    gained: int
    lost: int
    gained_samples: tuple[PreviewSample, ...]
    lost_samples: tuple[PreviewSample, ...]
    seconds: float = 0.0


def _weeks_between(since: datetime, until: datetime) -> list[str]:
    from .digest import iso_week

    weeks, day = [], since
    while day <= until:
        week = iso_week(day)
        if not weeks or weeks[-1] != week:
            weeks.append(week)
        day += timedelta(days=1)
    last = iso_week(until)
    if weeks[-1] != last:
        weeks.append(last)
    return weeks


def preview(store: "Store", topic_or_draft: Topic, weeks: int = 12, samples: int = 10,
            draft: bool = False, now: datetime | None = None, use_index: bool = True) -> Preview:
    """Run a topic's rule (current or draft) over the archive's last `weeks` without storing anything.

    Keyword rules without capitals-only words are evaluated on the full-text index alone (exact
    spellings per field give the scores), so even a rule matching half the archive answers at once;
    other rules (and `use_index=False`) check every candidate with the matcher. Samples are always
    explained by the matcher. Gained and lost compare with the tags stored for the same topic id.
    """
    from .digest import iso_week
    from .store import parse_iso, utcnow

    started = time.perf_counter()
    topic = topic_or_draft
    now = now or utcnow()
    since = now - timedelta(weeks=weeks)
    tagger = Tagger([topic])
    scored = tagger.index_scores(store, topic.id, since) if use_index else None
    if scored is not None:
        matched, candidates = scored, len(scored[0])
    else:
        rows = store.fts_articles(tagger.fts_query(topic.id), since=since)
        matched = ({}, {})
        for row in rows:
            results = tagger.match(row["title"], row["summary"], row["text"])
            if results:
                matched[0][row["id"]] = results[0].score
                matched[1][row["id"]] = row["published_at"]
        candidates = len(rows)
    scores, published = matched
    counts = Counter(iso_week(parse_iso(published[i])) for i in scores)
    per_week = tuple((w, counts.get(w, 0)) for w in _weeks_between(since, now))
    current = store.topic_article_ids(topic.id, since)
    gained = [i for i in scores if i not in current]
    lost = sorted(current - scores.keys())

    def latest(ids: Iterable[int]) -> list[int]:
        return sorted(ids, key=lambda i: (published[i], i), reverse=True)[:samples]

    def explained(ids: list[int]) -> tuple[PreviewSample, ...]:
        out = []
        for row in sorted(store.article_texts(ids), key=lambda r: (r["published_at"], r["id"]), reverse=True):
            for match, marks in tagger.match_marked(row["title"], row["summary"], row["text"]):
                out.append(PreviewSample(row["id"], parse_iso(row["published_at"]), row["title"], match.score, marks))
        return tuple(out)

    lost_rows = store.tagged_briefs(topic.id, lost)
    lost_samples = sorted((PreviewSample(r["id"], parse_iso(r["published_at"]), r["title"], r["score"],
                                         _marked_from_json(r["hits"])) for r in lost_rows),
                          key=lambda s: (s.published_at, s.article_id), reverse=True)[:samples]
    return Preview(
        topic.id, topic.label, draft, weeks, since, candidates, len(scores), per_week,
        explained(latest(scores)), len(gained), len(lost), explained(latest(gained)), tuple(lost_samples),
        time.perf_counter() - started,
    )


def _marked_from_json(hits_json: str) -> tuple[MarkedHit, ...]:
    try:
        hits = json.loads(hits_json or "[]")
    except ValueError:
        return ()
    return tuple(MarkedHit(Hit(h.get("keyword", ""), h.get("field", "body"), h.get("text", "")), 0, 0)
                 for h in hits if isinstance(h, dict))


@dataclass(frozen=True)
class Suggestion:
    """A word or phrase far more frequent in the topic's articles than elsewhere."""

    text: str
    in_topic: int
    """Sampled topic articles containing it."""
    elsewhere: int
    """Sampled other articles containing it."""
    ratio: float
    """How many times more frequent (by share of articles) in the topic than elsewhere."""


_STOPWORDS = frozenset(stem(w) for w in """
a au aux avec ce ces cet cette c ca cela celle celui ceux comme dans de des du d elle elles en entre est et
etre ete etait fait faire il ils je j l la le les leur leurs lui mais me meme mes m ne n nos notre nous on ou
par pas plus pour qu que qui quoi s sa sans se ses si son sont sur ta te tes toi ton tous tout toute toutes
tres un une vos votre vous y a ont avait avoir aussi ainsi alors apres avant bien car chez deja depuis donc
dont encore lors moins peu puis quand sous vers voici voila autre autres afin ici la-bas non oui selon
cas fois ans an annee annees jour jours mois semaine dernier derniere premier premiere deux trois quatre
plusieurs chaque certains certaines tel telle tels aujourd hui hier demain ete sera seront peut doit
malgre pendant contre durant sauf parmi aupres grace face hors lorsque tandis ainsi notamment toutefois
cependant egalement enfin surtout tant trop tres beaucoup moins mieux deja souvent jamais toujours
""".split())


def suggest(store: "Store", topic_id: str, limit: int = 30, topic: Topic | None = None, sample: int = 1500,
            text_chars: int = 3000) -> list[Suggestion]:
    """Words and two-word phrases over-represented in the topic's articles and not covered by its rule.

    Compares document frequencies in the topic's most recent articles with a fixed spread sample of
    the rest of the archive. What `topic` (default: the rule stored by `sync_topics`) already matches
    is left out.
    """
    if topic is not None:
        rule = topic.rule
    else:
        states = store.topic_states()
        if topic_id not in states:
            raise VeilleError(f"unknown topic {topic_id!r}: run `veille retag` once so the archive knows it")
        rule = json.loads(states[topic_id].rule_json)
    covered = _covered_words(rule)
    inside = store.topic_sample(topic_id, sample, text_chars)
    outside = store.background_sample(topic_id, sample, text_chars)
    if not inside:
        return []
    count_in = _doc_frequencies(inside)
    count_out = _doc_frequencies(outside)
    n_in, n_out = len(inside), max(len(outside), 1)
    floor = max(2, math.ceil(0.03 * n_in))
    scored = []
    for term, c_in in count_in.items():
        if c_in < floor or _is_covered(term, covered):
            continue
        c_out = count_out.get(term, 0)
        ratio = ((c_in + 0.5) / (n_in + 1)) / ((c_out + 0.5) / (n_out + 1))
        if ratio < 3:
            continue
        scored.append((c_in / n_in * math.log(ratio), term, c_in, c_out, ratio))
    scored.sort(key=lambda x: (-x[0], x[1]))
    kept: list[tuple] = []
    for item in scored:
        term = item[1]
        if len(term) == 1 and any(term[0] in other[1] and other[2] >= 0.8 * item[2]
                                  for other in scored if len(other[1]) == 2):
            continue
        kept.append(item)
        if len(kept) >= limit:
            break
    shown = _display_forms([k[1] for k in kept], inside)
    return [Suggestion(shown[term], c_in, c_out, round(ratio, 1)) for _, term, c_in, c_out, ratio in kept]


def _covered_words(rule: dict) -> list[tuple[Word, ...]]:
    phrases = []
    if rule.get("query"):
        from .query import terms

        for term in terms(parse_query(rule["query"])):
            phrases.extend([term.left.words, term.right.words] if isinstance(term, Near) else [term.words])
    for keyword in rule.get("keywords", []):
        phrases.append(parse_phrase(keyword))
    return phrases


def _is_covered(term: tuple[str, ...], covered: list[tuple[Word, ...]]) -> bool:
    """Whether the rule already matches the term: a one-word keyword in it, or it is part of a keyword."""
    def same(word: Word, stemmed: str) -> bool:
        return stemmed.startswith(word.text) if word.prefix else word.text == stemmed

    for phrase in covered:
        if len(phrase) == 1 and any(same(phrase[0], w) for w in term):
            return True
        for start in range(len(phrase) - len(term) + 1):
            if all(same(p, w) for p, w in zip(phrase[start:start + len(term)], term)):
                return True
    return False


def _doc_frequencies(rows: Sequence) -> Counter:
    counts: Counter = Counter()
    for row in rows:
        terms: set[tuple[str, ...]] = set()
        for value in (row["title"], row["summary"], row["text"]):
            stems = [stem(w) for w in fold(value or "")]
            for i, s in enumerate(stems):
                good = len(s) >= 3 and s not in _STOPWORDS and not s.isdigit()
                if good:
                    terms.add((s,))
                    if i + 1 < len(stems):
                        t = stems[i + 1]
                        if len(t) >= 3 and t not in _STOPWORDS and not t.isdigit():
                            terms.add((s, t))
        counts.update(terms)
    return counts


def _display_forms(wanted: list[tuple[str, ...]], rows: Sequence) -> dict[tuple[str, ...], str]:
    """How the suggested stems are most often written in the topic's articles (accents, capitals)."""
    forms: dict[tuple[str, ...], Counter] = {w: Counter() for w in wanted}
    for row in rows[:300]:
        for value in (row["title"], row["summary"], row["text"]):
            tokens = normalize_tokens(value or "")
            for i, token in enumerate(tokens):
                for size in (1, 2):
                    key = tuple(t.stem for t in tokens[i:i + size])
                    if len(key) == size and key in forms:
                        original = value[token.start:tokens[i + size - 1].end]
                        forms[key][original if tokens[i].caps else original.lower()] += 1
        if all(forms[w] for w in wanted):
            break
    return {w: (forms[w].most_common(1)[0][0] if forms[w] else " ".join(w)) for w in wanted}
