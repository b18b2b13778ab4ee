"""Bad input at the edges: properties checked on generated input (hypothesis), and a review gate on SQL.

- URL canonicalisation is idempotent and never raises;
- text normalisation and topic matching do not depend on case or accents;
- the query parser never crashes: a bad query is a `QueryError` pointing inside the query, and a query
  that parses always runs against a real SQLite full-text index;
- the digest's sanitisers hand out nothing that could be markup, a control character or a bad link;
- every SQL statement in veille/ is parameterised: dynamic SQL is only ever built from literals and
  `?` placeholders (checked on the syntax tree), apart from a few reviewed fragments listed here.
"""

from __future__ import annotations

import ast
import re
import unicodedata
from datetime import datetime, timezone
from pathlib import Path

import pytest
from hypothesis import HealthCheck, assume, example, given, settings, strategies as st

from veille import dedupe
from veille.digest import clean_text as digest_text, safe_url
from veille.errors import QueryError
from veille.parse import clean_text as parse_text
from veille.query import fold, normalize_tokens, parse_query, to_fts
from veille.search import search
from veille.store import Store
from veille.store.articles import FetchLog
from veille.tag import Tagger, Topic
from veille.types import Article, Source

ROOT = Path(__file__).resolve().parents[1]
PROFILE = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

FRENCH_LETTERS = "abcdefghijklmnopqrstuvwxyzàâäçéèêëîïôöùûüÿœæ"
FRENCH = FRENCH_LETTERS + FRENCH_LETTERS.upper() + "0123456789 '’-.,;:!?«»()\n\t"


def strip_accents(text: str) -> str:
    return "".join(c for c in unicodedata.normalize("NFKD", text) if not unicodedata.combining(c))


french_text = st.text(alphabet=FRENCH, max_size=120)
french_word = st.text(alphabet=FRENCH_LETTERS, min_size=4, max_size=12)

# -- URLs ---------------------------------------------------------------------------------------------

url_parts = st.builds(
    lambda scheme, host, port, path, params, fragment: (
        f"{scheme}://{host}{port}{path}" + ("?" + "&".join(f"{k}={v}" for k, v in params) if params else "")
        + fragment),
    st.sampled_from(["http", "https", "HTTP", "Https"]),
    st.sampled_from(["www.mairie-exemple.fr", "WWW.Ville-Exemple.FR", "127.0.0.1", "[::1]", "xn--lyon-dpa.fr",
                     "département.fr", "exemple.fr."]),
    st.sampled_from(["", ":80", ":443", ":8080", ":0", ":99999", ":abc"]),
    st.text(alphabet="abc/é%20-_.~;=", max_size=30).map(lambda p: "/" + p),
    st.lists(st.tuples(st.sampled_from(["utm_source", "id", "page", "xtor", "q", "UTM_Medium", "fbclid", "a"]),
                       st.text(alphabet="abc123é%&=+", max_size=8)), max_size=5),
    st.sampled_from(["", "#commentaires", "#"]),
)


@PROFILE
@given(st.one_of(st.text(max_size=200), url_parts))
@example("http://[::1")  # unbalanced IPv6 bracket
@example("http://exemple.fr:99999/")  # port out of range
@example("  https://WWW.Exemple.fr:443/a?b=1&utm_source=x#frag  ")
def test_canonical_url_is_idempotent_and_never_raises(url):
    once = dedupe.canonical_url(url)
    assert isinstance(once, str)
    assert dedupe.canonical_url(once) == once


feed_links = st.builds(
    lambda scheme, host, port, path, tail: f"{scheme}://{host}{port}{path}{tail}",
    st.sampled_from(["http", "https", "HTTP", "Https"]),
    st.lists(st.text(alphabet="abz09-", min_size=1, max_size=6), min_size=1, max_size=3).map(".".join)
    | st.sampled_from(["127.0.0.1", "Www.Exemple.fr", "exemple.fr.", "a..b", "xn--lyon-dpa.fr", "user@exemple.fr"]),
    st.sampled_from(["", ":", ":0", ":80", ":080", ":443", ":8080", ":65535", ":65536", ":99999"]),
    st.text(alphabet="/aZ09-._~:@!$&'()*+,;=%", max_size=30).map(lambda p: "/" + p) | st.just(""),
    st.sampled_from(["", "?", "?id=1", "#", "#haut", " ", "\t"]),
)


@PROFILE
@given(feed_links)
@example("http://exemple.fr/a/./b")
@example("https://exemple.fr:443/%7Eelus/")
def test_plain_links_take_the_shortcut_to_the_same_canonical_url(url):
    """`_canonical`'s shortcut for plain links gives exactly what the general road gives."""
    try:
        general = dedupe._canonical_general(url.strip())
    except ValueError:  # e.g. a port out of range: `canonical_url` keeps the URL as it is
        general = url.strip()
    assert dedupe.canonical_url(url) == general


@PROFILE
@given(feed_links, st.sampled_from([None, "", "http://127.0.0.1:1/feeds/", "https://www.exemple.fr/a/b;p?q=1"]))
@example("http://exemple.fr/a;", "http://exemple.fr/")
@example("HTTP://exemple.fr/a", "http://exemple.fr/")
def test_plain_links_take_the_shortcut_to_the_same_absolute_url(url, base):
    """`absolute_url`'s shortcut for plain absolute links gives exactly what urljoin and urlsplit give."""
    from veille.parse import _resolved_url, absolute_url

    assert absolute_url(url, base) == _resolved_url(url.strip().replace(" ", "%20"), base)


@PROFILE
@given(st.lists(st.tuples(st.sampled_from(["id", "page", "q", "rubrique"]), st.text(alphabet="abc123", max_size=5)),
                max_size=5, unique_by=lambda kv: kv[0]),
       st.lists(st.sampled_from(["utm_source=rss", "xtor=RSS-3", "fbclid=Iw", "at_medium=x", "mtm_campaign=y"]),
                max_size=4), st.randoms())
def test_canonical_url_drops_tracking_and_ignores_parameter_order(params, tracking, rng):
    query = [f"{k}={v}" for k, v in params] + tracking
    shuffled = list(query)
    rng.shuffle(shuffled)
    a = dedupe.canonical_url("https://www.exemple.fr/actualites/conseil?" + "&".join(query))
    b = dedupe.canonical_url("HTTPS://WWW.EXEMPLE.FR:443/actualites/conseil?" + "&".join(shuffled) + "#haut")
    assert a == b
    assert not any(t.split("=")[0] in a for t in tracking)


# -- text normalisation ---------------------------------------------------------------------------


@PROFILE
@given(french_text)
def test_folding_ignores_case_and_accents(text):
    words = fold(text)
    assert words == fold(text.upper()) == fold(text.lower()) == fold(strip_accents(text))
    assert all(w.isascii() and w == w.lower() for w in words)
    assert [t.text for t in normalize_tokens(text)] == words


@PROFILE
@given(st.text(max_size=200))
def test_normalisers_never_raise_on_any_unicode(text):
    fold(text)
    tokens = normalize_tokens(text)
    assert all(0 <= t.start <= t.end <= len(text) for t in tokens), "offsets point into the original"


@PROFILE
@given(st.text(max_size=300))
@example('<scr<script>ipt>alert("x")</script>')
@example("&lt;script&gt;alert(1)&lt;/script&gt;")
@example("Titre\u202egpj.exe\r\nBcc: x@y")
def test_digest_text_is_inert_and_stable(value):
    cleaned = digest_text(value)
    assert digest_text(cleaned) == cleaned, "cleaning twice changes nothing"
    assert not re.search(r"<\s*[a-zA-Z/!]", cleaned), "no tag survives"
    assert not re.search("[\x00-\x1f\x7f\u202a-\u202e\u2066-\u2069]", cleaned), "no control or bidi character"


@PROFILE
@given(st.text(max_size=300))
def test_archive_text_cleaning_is_stable(value):
    cleaned = parse_text(value)
    assert parse_text(cleaned) == cleaned
    assert "\x00" not in cleaned and "\r" not in cleaned


@PROFILE
@given(st.text(alphabet=st.sampled_from(list(" \t\n\r\x0b\x0c\x1c\x85\xa0\u2028\u2029\u3000\u202fab")) | st.characters(),
               max_size=200))
def test_text_cleaning_folds_spaces_as_its_definition_says(value):
    """clean_text folds lines with str.split (fast); the definition is the regex it replaced: runs of
    whitespace other than a newline become one space, lines are stripped, blank lines separate paragraphs."""
    from veille import parse

    text = parse._normalise(value.replace("\r\n", "\n").replace("\r", "\n").replace("\t", " "))
    blocks = ("\n".join(line for line in (re.sub(r"[^\S\n]+", " ", line).strip() for line in block.split("\n")) if line)
              for block in re.split(r"\n\s*\n", text))
    assert parse_text(value) == "\n\n".join(block for block in blocks if block)


@PROFILE
@given(st.text(alphabet=st.sampled_from(list("âÂÃÅ€‚™©¨±¯Ÿœ\x80\x82\x99\x9f\x1f\x00\u200b é a\n")), max_size=40)
       | st.text(max_size=60))
@example("la mairie de Ch\u00e2teau \u00e2\u20ac\u2122 l\u00e2\u201a\u00ac")
@example("\u00c2\x1f\u00af")
def test_repairs_run_whenever_they_could_change_the_text(value):
    """`_normalise` tries the mojibake and C1 repairs only on texts `_SUSPECT` flags: the same result as
    trying them on every text."""
    from veille import parse

    text = parse._fix_mojibake(parse._c1_to_cp1252(value))
    if parse._CONTROL.search(text):
        text = parse._fix_mojibake(parse._CONTROL.sub("", text))
    assert parse._normalise(value) == unicodedata.normalize("NFC", text)


@PROFILE
@given(st.one_of(st.text(max_size=80), url_parts,
                 st.sampled_from(["javascript:alert(1)", "JaVaScRiPt:alert(1)", " javascript:x", "data:text/html,x",
                                  "http://exemple.fr/\"onmouseover=\"x", "vbscript:x", "//exemple.fr/a",
                                  "http://exemple.fr/\u202egpj", "http:///chemin"])))
def test_digest_links_are_plain_http(url):
    result = safe_url(url)
    if result is not None:
        assert result == url
        assert re.match(r"(?i)https?://[^/\s]", result)
        assert not re.search(r"[\s<>\"'`\\\x00-\x1f\x7f\u202a-\u202e]", result)



@PROFILE
@given(st.text(max_size=80), st.text(max_size=200), st.text(max_size=300), st.text(max_size=40),
       st.booleans())
@example(title="\u00c3\x83\x80", description="", content="", author="", as_html=False)  # "À" encoded twice
def test_parsed_entries_are_already_clean(title, description, content, author, as_html):
    """build_article(parsed=True) trusts parse's text fields to be clean_text's fixed points: hold
    both parse paths (lxml and feedparser) to it, whatever a feed carries."""
    from xml.sax.saxutils import escape

    from veille.parse import parse_feed, parse_feed_feedparser

    def xml(value: str) -> str:
        value = re.sub("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]", "", value)
        return escape(f"<p>{value}</p><p>{value}</p>" if as_html else value)

    feed = (f'<?xml version="1.0" encoding="utf-8"?><rss version="2.0" xmlns:content='
            f'"http://purl.org/rss/1.0/modules/content/" xmlns:dc="http://purl.org/dc/elements/1.1/"><channel>'
            f"<title>Flux</title><item><title>{xml(title)}</title><link>http://127.0.0.1:9/a</link>"
            f"<description>{xml(description)}</description><content:encoded>{xml(content)}</content:encoded>"
            f"<dc:creator>{xml(author)}</dc:creator></item></channel></rss>").encode("utf-8")
    kind = "html" if as_html else "text"
    atom = (f'<?xml version="1.0" encoding="utf-8"?><feed xmlns="http://www.w3.org/2005/Atom"><title>Flux</title>'
            f'<id>urn:x:flux</id><entry><id>urn:x:1</id><title type="{kind}">{xml(title)}</title>'
            f'<link href="http://127.0.0.1:9/a"/><summary type="{kind}">{xml(description)}</summary>'
            f'<content type="{kind}">{xml(content)}</content><author><name>{xml(author)}</name></author>'
            f"<updated>2026-11-24T08:00:00Z</updated></entry></feed>").encode("utf-8")
    for parse, document in ((parse_feed, feed), (parse_feed_feedparser, feed), (parse_feed, atom),
                            (parse_feed_feedparser, atom)):
        for entry in parse("s", document, "http://127.0.0.1:9/flux.xml").entries:
            assert parse_text(entry.title, multiline=False) == entry.title
            assert parse_text(entry.summary) == entry.summary
            assert parse_text(entry.content) == entry.content
            assert parse_text(entry.author, multiline=False) == (entry.author or "")


# -- topic matching -------------------------------------------------------------------------------


@PROFILE
@given(st.lists(french_word, min_size=1, max_size=3), french_text, french_text,
       st.sampled_from(["title", "summary", "text"]))
def test_topic_matching_ignores_case_and_accents(keyword_words, before, after, field):
    keyword = " ".join(keyword_words)
    assume(fold(keyword) == [w.lower() for w in fold(keyword)] and not keyword.isupper())
    text = f"{before} {keyword} {after}"

    def scores(kw: str, t: str) -> list[tuple[str, int]]:
        tagger = Tagger([Topic(id="sujet", label="Sujet", keywords=(kw,))])
        fields = {"title": "", "summary": "", "text": "", field: t}
        return [(m.topic_id, m.score) for m in tagger.match(fields["title"], fields["summary"], fields["text"])]

    reference = scores(keyword, text)
    assert reference and reference[0][0] == "sujet", "a keyword present in the text is found"
    assert scores(keyword, text.upper()) == reference
    assert scores(keyword, strip_accents(text)) == reference
    assert scores(strip_accents(keyword), text) == reference
    assert scores(keyword.title(), text.lower()) == scores(keyword, text.lower())



@PROFILE
@given(st.text(max_size=120), st.text(max_size=120), st.sampled_from(["title", "summary", "text"]))
@example("½ œﬂ", "", "title")  # NFKD turns ½ into two words where one character folds into none
@example("ﬁ½", "Ǆ ǅ ǆ ǈ", "text")
def test_topic_matching_never_raises_on_any_unicode(before, after, field):
    tagger = Tagger([Topic(id="sante", label="Santé", keywords=("santé", "e-santé", "données de santé"))])
    fields = {"title": "", "summary": "", "text": "", field: f"{before} Santé {after}"}
    matches = tagger.match(fields["title"], fields["summary"], fields["text"])
    assert [m.topic_id for m in matches] == ["sante"], "the keyword is found whatever surrounds it"
    for hit in matches[0].hits:
        assert "santé" in hit.text.lower(), "a hit quotes the words that matched"

# -- the query language ---------------------------------------------------------------------------

QUERY_TOKENS = ["AND", "OR", "NOT", "NEAR", "NEAR/3", "NEAR/0", "NEAR/x", "(", ")", '"', "«", "»", "“", "”",
                "title:", "titre:", "*", "fibre", "numéri*", "cyber*", "'", "-", "RIP", "THD", "l'inclusion",
                "\"open data\"", "smart-city", ":", "\\", "^", "{", "}", "NOT(", "OR)", "a*b", "**", "é"]
query_text = st.one_of(
    st.text(max_size=60),
    st.lists(st.sampled_from(QUERY_TOKENS), max_size=12).map(" ".join),
    st.lists(st.sampled_from(QUERY_TOKENS), max_size=12).map("".join),
)


@pytest.fixture(scope="module")
def archive(tmp_path_factory):
    """A small real archive with its full-text index: every query that parses must run on it."""
    store = Store.open(tmp_path_factory.mktemp("props") / "veille.db")
    now = datetime(2026, 11, 24, 9, 0, tzinfo=timezone.utc)
    store.sync_sources([Source(id="presse", name="Presse locale", type="feed", url="http://127.0.0.1:9/flux.xml")])
    texts = ["La fibre optique arrive dans les hameaux grâce au réseau d'initiative publique (RIP).",
             "Cyberattaque : la mairie ressort les registres papier, l'ANSSI est prévenue.",
             "L'inclusion numérique progresse avec les conseillers numériques France Services.",
             "La métropole ouvre ses données de transport en open data sous Licence Ouverte."]
    articles = [Article(source_id="presse", url=f"http://127.0.0.1:9/a/{i}", canonical_url=f"http://127.0.0.1:9/a/{i}",
                        title=t.split(":")[0][:60], text=t, text_source="feed", published_at=now, fetched_at=now,
                        summary=t[:80]) for i, t in enumerate(texts)]
    store.save_source_batch("presse", articles, FetchLog("presse", "http://127.0.0.1:9/flux.xml", now, 1, 200),
                            cache=[])
    yield store
    store.close()


@PROFILE
@given(query_text)
@example("")
@example("((((")
@example('"phrase jamais fermée')
@example("NOT")
@example("title:")
@example("a NEAR/99999999999999999999 b")
def test_query_parser_never_crashes_and_valid_queries_run(archive, query):
    try:
        node = parse_query(query)
    except QueryError as e:
        assert 0 <= e.position <= len(query), "the error points inside the query"
        assert e.message and str(e).startswith(e.message)
        return
    to_fts(node)
    to_fts(node, candidates=True)
    result = search(archive, query, limit=5)
    assert result.total >= len(result.hits)


# -- every SQL statement is parameterised -----------------------------------------------------------

_SQL = re.compile(r"\b(SELECT|INSERT|UPDATE|DELETE|PRAGMA|CREATE|DROP|ALTER|REPLACE)\b|\b(FROM|WHERE|JOIN|VALUES)\b")

REVIEWED: dict[tuple[str, str, str], str] = {
    # (file, function, interpolated name): why it cannot carry a value
    ("veille/store/archive.py", "where", "article"):
        "table alias chosen by veille's own callers ('a'), never by input",
}
SQL_PRODUCERS = {"where", "id_set"}
"""Methods of ArticleFilter that return (SQL fragment, parameters): the fragment is literal text and
placeholders, checked by `test_reviewed_fragments_are_literal_too`; names unpacked from them are trusted."""


class _Scope:
    """Assignments of one function: what each local name may hold."""

    def __init__(self, func: ast.AST, trusted: set[str] = frozenset()) -> None:
        self.values: dict[str, list[ast.expr | None]] = {}
        self.trusted = trusted
        """Names whose content was reviewed (see REVIEWED)."""
        self.used: set[str] = set()
        for node in ast.walk(func):
            if isinstance(node, ast.Assign):
                for target in node.targets:
                    self._bind(target, node.value)
            elif isinstance(node, (ast.AugAssign, ast.AnnAssign)) and isinstance(node.target, ast.Name):
                self.values.setdefault(node.target.id, []).append(node.value)
            elif isinstance(node, (ast.For, ast.comprehension)):
                self._bind(node.target, ast.Subscript(value=node.iter, slice=ast.Constant(0)))
            elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                  and node.func.attr in ("append", "extend") and isinstance(node.func.value, ast.Name)):
                arg = node.args[0] if node.args else None
                if node.func.attr == "extend" and arg is not None:
                    arg = ast.Subscript(value=arg, slice=ast.Constant(0))
                self.values.setdefault(node.func.value.id, []).append(arg)
        if isinstance(func, (ast.FunctionDef, ast.AsyncFunctionDef)):
            for a in [*func.args.args, *func.args.kwonlyargs]:
                self.values.setdefault(a.arg, []).append(None)  # a parameter: unknown

    def _bind(self, target: ast.expr, value: ast.expr) -> None:
        if isinstance(target, ast.Name):
            self.values.setdefault(target.id, []).append(value)
        elif (isinstance(target, ast.Tuple) and isinstance(value, ast.Call) and isinstance(value.func, ast.Attribute)
              and value.func.attr in SQL_PRODUCERS and isinstance(target.elts[0], ast.Name)):
            self.values.setdefault(target.elts[0].id, []).append(ast.Constant(""))  # the reviewed fragment
            for t in target.elts[1:]:
                if isinstance(t, ast.Name):
                    self.values.setdefault(t.id, []).append(None)
        elif isinstance(target, (ast.Tuple, ast.List)):
            pairs = zip(target.elts, value.elts) if isinstance(value, (ast.Tuple, ast.List)) and \
                len(value.elts) == len(target.elts) else ((t, None) for t in target.elts)
            for t, v in pairs:
                if isinstance(t, ast.Name):
                    self.values.setdefault(t.id, []).append(v)


def _literal(node: ast.expr | None, scope: _Scope, seen: frozenset[str] = frozenset()) -> bool:
    """True when the expression's text can only come from literals of the code (and numbers)."""
    if node is None:
        return False
    if isinstance(node, ast.Constant):
        return isinstance(node.value, (str, int, float, type(None)))
    if isinstance(node, ast.JoinedStr):
        return all(_literal(v.value, scope, seen) for v in node.values if isinstance(v, ast.FormattedValue))
    if isinstance(node, (ast.List, ast.Tuple)):
        return all(_literal(e, scope, seen) for e in node.elts)
    if isinstance(node, ast.IfExp):
        return _literal(node.body, scope, seen) and _literal(node.orelse, scope, seen)
    if isinstance(node, ast.BoolOp):
        return all(_literal(v, scope, seen) for v in node.values)
    if isinstance(node, ast.BinOp):
        if isinstance(node.op, ast.Mult):  # "?" * len(x): a literal repeated
            return _literal(node.left, scope, seen) and _number(node.right)
        return isinstance(node.op, ast.Add) and _literal(node.left, scope, seen) and _literal(node.right, scope, seen)
    if isinstance(node, ast.Subscript):
        return _literal(node.value, scope, seen)
    if isinstance(node, (ast.GeneratorExp, ast.ListComp)):
        return _literal(node.elt, scope, seen)
    if isinstance(node, ast.Call):
        if _number(node):
            return True
        func = node.func
        if isinstance(func, ast.Attribute) and func.attr == "join" and len(node.args) == 1:
            return _literal(func.value, scope, seen) and _literal(node.args[0], scope, seen)
        return False
    if isinstance(node, ast.Name):
        if node.id in scope.trusted:
            scope.used.add(node.id)
            return True
        if node.id in seen:
            return True
        values = scope.values.get(node.id)
        return bool(values) and all(_literal(v, scope, seen | {node.id}) for v in values)
    return False


def _number(node: ast.expr) -> bool:
    if isinstance(node, ast.Constant):
        return isinstance(node.value, int)
    return isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in ("int", "len")


def _sql_sites():
    """(file, function, node, scope) of every f-string, %-format or .format() whose literal text is SQL."""
    for path in sorted((ROOT / "veille").rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        rel = path.relative_to(ROOT).as_posix()
        functions = [n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))]
        owner: dict[int, ast.AST] = {}
        for func in functions:  # innermost function wins: walk order visits outer functions first
            for node in ast.walk(func):
                owner[id(node)] = func
        for node in ast.walk(tree):
            text = None
            if isinstance(node, ast.JoinedStr):
                text = "".join(v.value for v in node.values if isinstance(v, ast.Constant))
            elif isinstance(node, ast.BinOp) and isinstance(node.op, ast.Mod) and isinstance(node.left, ast.Constant) \
                    and isinstance(node.left.value, str):
                text = node.left.value
            elif isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
                text = "".join(part.value for side in (node.left, node.right)
                               for part in (side.values if isinstance(side, ast.JoinedStr) else [side])
                               if isinstance(part, ast.Constant) and isinstance(part.value, str))
            elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "format" \
                    and isinstance(node.func.value, ast.Constant) and isinstance(node.func.value.value, str):
                text = node.func.value.value
            if text and _SQL.search(text) and re.search(r"[A-Z]{3}", text):
                func = owner.get(id(node), tree)
                name = getattr(func, "name", "<module>")
                trusted = {expr for (r, fn, expr) in REVIEWED if (r, fn) == (rel, name) and expr.isidentifier()}
                yield rel, name, node, _Scope(func, trusted)


def test_sql_is_built_only_from_literals_and_placeholders():
    sites = list(_sql_sites())
    assert len(sites) >= 10, "the scan sees the store's dynamic SQL"
    problems = []
    reviewed_seen = set()
    for rel, func, node, scope in sites:
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
            if not _literal(node, scope):
                problems.append(f"{rel}:{node.lineno} in {func}(): SQL concatenated with a value")
            reviewed_seen.update((rel, func, name) for name in scope.used)
            continue
        if not isinstance(node, ast.JoinedStr):
            problems.append(f"{rel}:{node.lineno} in {func}(): SQL built with % or .format()")
            continue
        for value in node.values:
            if not isinstance(value, ast.FormattedValue):
                continue
            expr = ast.unparse(value.value)
            key = (rel, func, expr)
            if key in REVIEWED:
                reviewed_seen.add(key)
                continue
            if not _literal(value.value, scope):
                problems.append(f"{rel}:{node.lineno} in {func}(): {{{expr}}} may carry a value into SQL; "
                                "pass it as a ? parameter")
            reviewed_seen.update((rel, func, name) for name in scope.used)
    assert problems == [], "\n".join(problems)
    assert reviewed_seen == set(REVIEWED), f"stale review entries: {set(REVIEWED) - reviewed_seen}"


def test_the_sql_gate_catches_values(tmp_path):
    """The checker itself: a value interpolated into SQL is caught, placeholders are not."""
    bad = ast.parse('def f(conn, name):\n    conn.execute(f"SELECT * FROM t WHERE name = \'{name}\'")\n')
    concat = ast.parse('def h(conn, name):\n    conn.execute("SELECT * FROM t WHERE name = " + name)\n')
    assert not _literal(next(n for n in ast.walk(concat) if isinstance(n, ast.BinOp)), _Scope(concat.body[0]))
    good = ast.parse('def g(conn, ids):\n    marks = ",".join("?" * len(ids))\n'
                     '    conn.execute(f"SELECT * FROM t WHERE id IN ({marks})", ids)\n')
    for tree, expected in ((bad, False), (good, True)):
        func = tree.body[0]
        fstring = next(n for n in ast.walk(func) if isinstance(n, ast.JoinedStr))
        verdicts = [_literal(v.value, _Scope(func)) for v in fstring.values if isinstance(v, ast.FormattedValue)]
        assert all(verdicts) is expected


def test_reviewed_fragments_are_literal_too():
    """ArticleFilter.where() and id_set() (the reviewed fragments' producers) use literals and ? only."""
    from veille.store.archive import ArticleFilter

    hostile = "x' OR 1=1 --"
    f = ArticleFilter(topics=(hostile,), sources=(hostile,), since=hostile, until=hostile)
    for sql, params in (f.where("a"), f.id_set()):
        assert hostile not in sql and "'" not in sql
        assert sql.count("?") == len(params) and hostile in params
