"""Dedupe stage: canonical URLs and SimHash near-duplicates, alone and through the store."""

from __future__ import annotations

import json
import sqlite3
from dataclasses import replace
from datetime import datetime, timezone
from pathlib import Path

import pytest
from hypothesis import given, settings, strategies as st

from veille import dedupe
from veille.dedupe import NEAR_DUPLICATE_BITS, canonical_url, hamming, simhash
from veille.extract import build_article
from veille.store.articles import FetchLog
from veille.types import Entry, Source

DISPATCHES = {d["id"]: d for d in json.loads(
    (Path(__file__).parent / "fixtures" / "pages" / "dispatches.json").read_text(encoding="utf-8"))}
FETCHED = datetime(2025, 2, 5, 12, 0, tzinfo=timezone.utc)


# --------------------------------------------------------------------------------------------------
# Canonical URLs


@pytest.mark.parametrize("variant", [
    "https://www.mairie.example/actu/budget-2025?utm_source=rss&utm_medium=feed",
    "https://www.mairie.example/actu/budget-2025?xtor=RSS-12",
    "https://WWW.Mairie.Example:443/actu/budget-2025#commentaires",
    "https://www.mairie.example./actu/budget-2025?fbclid=IwAR0abc&gclid=xyz&mtm_campaign=lettre",
    "  https://www.mairie.example/actu/budget-2025?pk_campaign=a&at_medium=b&_ga=2.1  ",
    "HTTPS://www.mairie.example/actu/./budget-2025",
    "https://www.mairie.example/actu/x/../budget-2025",
])
def test_tracking_variants_canonicalise_equal(variant: str) -> None:
    assert canonical_url(variant) == "https://www.mairie.example/actu/budget-2025"


@pytest.mark.parametrize(("a", "b"), [
    ("https://www.mairie.example/a?b=2&a=1", "https://www.mairie.example/a?a=1&b=2"),
    ("http://www.mairie.example:80", "http://www.mairie.example/"),
    ("https://www.mairie.example/actualit%c3%a9s", "https://www.mairie.example/actualités"),
    ("https://www.mairie.example/%7Eservice", "https://www.mairie.example/~service"),
    ("https://www.mairie.example/a?q=caf%C3%A9", "https://www.mairie.example/a?q=café"),
    ("https://www.café-mairie.example/a", "https://www.xn--caf-mairie-d7a.example/a"),
])
def test_equivalent_forms(a: str, b: str) -> None:
    assert canonical_url(a) == canonical_url(b)


@pytest.mark.parametrize(("a", "b"), [
    ("https://www.mairie.example/actu?id=12", "https://www.mairie.example/actu?id=13"),
    ("https://www.mairie.example/Actu/Budget", "https://www.mairie.example/actu/budget"),
    ("https://www.mairie.example/actu/", "https://www.mairie.example/actu"),
    ("https://www.mairie.example/actu/index.html", "https://www.mairie.example/actu/"),
    ("https://mairie.example/actu", "https://www.mairie.example/actu"),
    ("http://www.mairie.example/actu", "https://www.mairie.example/actu"),
    ("https://www.mairie.example/#!/actu/12", "https://www.mairie.example/#!/actu/13"),
    ("https://www.mairie.example/page?actu_id=12", "https://www.mairie.example/page?actu_id=13"),
    ("https://www.mairie.example/agenda?from=2025-01-01", "https://www.mairie.example/agenda?from=2025-02-01"),
    ("https://www.mairie.example:8443/a", "https://www.mairie.example/a"),
])
def test_different_pages_stay_different(a: str, b: str) -> None:
    assert canonical_url(a) != canonical_url(b)


@pytest.mark.parametrize("odd", ["", "   ", "not a url", "mailto:maire@mairie.example", "http://[::1", "http://:80",
                                 "https://x.example:99999/", "//cdn.example/x", "javascript:alert(1)", "\x00\ud800"])
def test_odd_strings_do_not_raise(odd: str) -> None:
    once = canonical_url(odd)
    assert isinstance(once, str)
    assert canonical_url(once) == once


@settings(max_examples=500, deadline=None)
@given(st.text(max_size=120))
def test_canonical_url_never_raises_and_is_idempotent_on_any_text(text: str) -> None:
    once = canonical_url(text)
    assert canonical_url(once) == once


_segment = st.text(alphabet=st.sampled_from(list("abcXYZé0~-._%/?&=#!+ ")), max_size=12)


@settings(max_examples=500, deadline=None)
@given(st.sampled_from(["http", "https", "HTTP"]), st.sampled_from(["www.mairie.example", "Ville.EXAMPLE", "127.0.0.1",
                                                                   "[::1]", "xn--mairie-9ua.example"]),
       st.sampled_from(["", ":80", ":443", ":8080"]), _segment, _segment, _segment)
def test_canonical_url_is_idempotent_on_url_shapes(scheme, host, port, path, query, fragment) -> None:
    url = f"{scheme}://{host}{port}/{path}?{query}#{fragment}"
    once = canonical_url(url)
    assert canonical_url(once) == once
    assert "utm_" not in once


# --------------------------------------------------------------------------------------------------
# SimHash


def syndicated(text: str) -> str:
    """A regional site's copy of a dispatch: one sentence of its own and the agency credit."""
    first, rest = text.split("\n\n", 1)
    return first + " Contactée, la préfecture n'a pas souhaité commenter.\n\n" + rest + "\n\n(Avec AFP)"


@pytest.mark.parametrize("dispatch", sorted(DISPATCHES))
def test_syndicated_copy_is_a_near_duplicate(dispatch: str) -> None:
    """Heavier edits (byline + boilerplate + cuts) are only caught ~76% of the time: see bench/dedupe.py."""
    original = DISPATCHES[dispatch]["text"]
    assert hamming(simhash(original), simhash(syndicated(original))) <= NEAR_DUPLICATE_BITS


@pytest.mark.parametrize(("a", "b"), [("cyber-1", "cyber-2"), ("fibre-1", "fibre-2"), ("inclusion-1", "inclusion-2"),
                                      ("opendata-1", "opendata-2"), ("urba-1", "urba-2"), ("ia-1", "ia-2")])
def test_different_article_on_the_same_topic_is_not(a: str, b: str) -> None:
    distance = hamming(simhash(DISPATCHES[a]["text"]), simhash(DISPATCHES[b]["text"]))
    assert distance > 2 * NEAR_DUPLICATE_BITS


def test_simhash_range_and_short_texts() -> None:
    assert simhash("Conseil municipal ce soir.") == 0
    assert simhash("") == 0
    for dispatch in DISPATCHES.values():
        h = simhash(dispatch["text"])
        assert h != 0
        assert -(1 << 63) <= h < (1 << 63)  # SQLite INTEGER
        assert simhash(dispatch["text"]) == h  # deterministic


def test_hamming() -> None:
    assert hamming(0, -1) == 64
    assert hamming(-1, -1) == 0
    assert hamming(5, 6) == hamming(6, 5) == 2


_STABILITY_SCRIPT = """
import json, sys
from veille.dedupe import simhash
texts = json.load(sys.stdin)
print(json.dumps([simhash(t) for t in texts]))
"""


@pytest.mark.parametrize("hash_seed", ["0", "4242"])
def test_simhash_is_stable_across_processes(hash_seed: str) -> None:
    """Stored hashes are compared with hashes computed by later runs: nothing may depend on the process."""
    import os
    import subprocess
    import sys

    texts = [d["text"] for d in DISPATCHES.values()] + ["Conseil municipal ce soir.",
                                                        " ".join(["Délibération n° 12 du conseil."] * 3000)]
    env = {**os.environ, "PYTHONHASHSEED": hash_seed}
    out = subprocess.run([sys.executable, "-c", _STABILITY_SCRIPT], input=json.dumps(texts), env=env,
                         cwd=Path(__file__).parents[1], capture_output=True, text=True, check=True).stdout
    assert json.loads(out) == [simhash(t) for t in texts]


def test_simhash_value_is_pinned() -> None:
    """Changing the hash function re-keys every stored hash: old and new articles would never cluster.

    If this fails on purpose, the store needs a migration that recomputes `articles.simhash`.
    """
    assert simhash(DISPATCHES["cyber-1"]["text"]) == 4677248859964479364
    assert simhash(DISPATCHES["ia-2"]["text"]) == -1821570422612308491


def _reference_simhash(text: str, min_words: int = 40) -> int:
    """The documented definition, one word and one bit at a time in plain Python."""
    import re
    from itertools import pairwise

    mask = (1 << 64) - 1

    def mix(x: int) -> int:
        x ^= x >> 30
        x = x * 0xBF58476D1CE4E5B9 & mask
        x ^= x >> 27
        x = x * 0x94D049BB133111EB & mask
        return x ^ x >> 31

    words = [sum(ord(c) * pow(dedupe._BASE, j, 1 << 64) for j, c in enumerate(w)) & mask
             for w in re.findall(r"\w+", text.lower())]
    features = [mix(a ^ (b * 0x9E3779B97F4A7C15 & mask)) for a, b in pairwise(words)] or words
    if len(features) < min_words:
        return 0
    value = sum(1 << bit for bit in range(64) if 2 * sum(f >> bit & 1 for f in features) > len(features))
    return value - (1 << 64) if value >= (1 << 63) else value or 1


@pytest.mark.parametrize("text", [
    DISPATCHES["fibre-1"]["text"],
    " ".join(DISPATCHES[k]["text"] for k in sorted(DISPATCHES)),  # > 255 features: counters in blocks
    "L’État a versé 1 200 000 € aux EPCI ; l'ÉCOLE numérique_2025 (Île-de-France) — 𝐀𝐁 ça… " * 12,
    ("Le SDIS et la métropole mutualisent leur centre de données. " * 800),  # > 32,768 characters
])
def test_vectorised_simhash_matches_the_plain_definition(text: str) -> None:
    assert simhash(text) == _reference_simhash(text) != 0


@settings(max_examples=200, deadline=None)
@given(st.text(alphabet=st.sampled_from(list("aéÉß_1 ,.'’-\n\t€İ") + ["\ud800", "𝐀", "ǅ"]), max_size=300))
def test_words_are_the_regex_words(text: str) -> None:
    """The lookup-table tokenizer splits exactly like `\\w+` on the lower-cased text, odd characters included."""
    assert simhash(text, min_words=1) == _reference_simhash(text, min_words=1)


_BATCH_TEXT = st.lists(st.sampled_from(["commune", "Mairie", "ÉCOLE", "données", "ß", "İle", "x_1", "𝐀", "ǅ", "\ud800"]),
                       max_size=60).map(" ".join) | st.text(alphabet=st.sampled_from(list("aé ,'\nİ")), max_size=40)


@settings(max_examples=200, deadline=None)
@given(st.lists(_BATCH_TEXT, max_size=12), st.sampled_from([0, 1, 2, 5, 40]), st.sampled_from([0, 3]))
def test_batch_simhashes_equal_one_at_a_time(texts: list[str], min_words: int, seed: int) -> None:
    """A feed's texts hashed together: no word or shingle crosses from one text to the next, short
    texts (no shingle, or fewer than min_words) behave as alone."""
    assert dedupe.simhashes(texts, min_words, seed=seed) == [simhash(t, min_words, seed=seed) for t in texts]


def test_batch_simhashes_of_long_and_many_texts() -> None:
    texts = [DISPATCHES[k]["text"] for k in sorted(DISPATCHES)]
    texts += ["", "Trop court.", "Le SDIS et la métropole mutualisent leur centre de données. " * 800,
              " ".join(texts)]  # > 255 shingles in one text, > 32,768 characters in the batch
    assert dedupe.simhashes(texts) == [simhash(t) for t in texts]
    assert dedupe.simhashes([]) == []


def test_seed_selects_another_hash_function() -> None:
    text = DISPATCHES["urba-1"]["text"]
    assert simhash(text, seed=0) == simhash(text)
    others = {simhash(text, seed=s) for s in range(1, 9)}
    assert len(others) == 8 and simhash(text) not in others


# --------------------------------------------------------------------------------------------------
# With the real store: copies share a cluster, different articles do not


def test_store_clusters_syndicated_copies(store) -> None:
    store.sync_sources([Source(id="agence", name="Agence", type="feed", url="https://agence.example/rss"),
                        Source(id="echo", name="L'Écho", type="feed", url="https://echo.example/rss")])

    def article(source: str, slug: str, text: str):
        item = Entry(source_id=source, url=f"https://{source}.example/{slug}", title=slug, content=text,
                     published=FETCHED)
        return build_article(item, None, FETCHED)

    log = FetchLog(source_id="agence", url="https://agence.example/rss", started_at=FETCHED, duration_ms=1)
    store.save_source_batch("agence", [article("agence", "cyber-1", DISPATCHES["cyber-1"]["text"]),
                                       article("agence", "cyber-2", DISPATCHES["cyber-2"]["text"])], log, [])
    copy = article("echo", "mairie-piratee", syndicated(DISPATCHES["cyber-1"]["text"]))
    store.save_source_batch("echo", [copy], FetchLog(**{**log.__dict__, "source_id": "echo"}), [])
    clusters = {row["url"].rsplit("/", 1)[1]: row["cluster_id"] for row in store.query("SELECT url, cluster_id FROM articles")}
    assert clusters["mairie-piratee"] == clusters["cyber-1"]
    assert clusters["cyber-2"] != clusters["cyber-1"]
    assert dedupe.NEAR_DUPLICATE_BITS == NEAR_DUPLICATE_BITS


def test_a_rolled_back_batch_leaves_no_trace_in_the_cluster_index(store) -> None:
    """The index may hold rows of a batch that never landed: after a failure it is rebuilt from the database."""
    store.sync_sources([Source(id="agence", name="Agence", type="feed", url="https://agence.example/rss")])
    entry = Entry(source_id="agence", url="https://agence.example/cyber-1", title="cyber-1",
                  content=DISPATCHES["cyber-1"]["text"], published=FETCHED)
    orphan = build_article(replace(entry, source_id="inconnue", url="https://x.example/a"),
                           None, FETCHED)
    log = FetchLog(source_id="agence", url="https://agence.example/rss", started_at=FETCHED, duration_ms=1)
    with pytest.raises(sqlite3.IntegrityError):  # unknown source: the foreign key fails after the first insert
        store.save_source_batch("agence", [build_article(entry, None, FETCHED), orphan], log, [])
    assert store.article_count() == 0 and store._cluster_index is None
    copy = build_article(replace(entry, url="https://agence.example/copie"), None, FETCHED)
    store.save_source_batch("agence", [copy], log, [])
    assert store.scalar("SELECT count(*) FROM clusters c JOIN articles a ON a.cluster_id = c.id") == 1


def test_cluster_index_respects_the_threshold_and_the_window() -> None:
    import random

    from datetime import timedelta

    from veille.store.clusters import WINDOW, ClusterIndex

    index = ClusterIndex()
    monday = datetime(2026, 11, 23, 8, tzinfo=timezone.utc)
    base = simhash(" ".join(f"mot{i} commune{i % 7}" for i in range(120)))
    near = base ^ 0b1011  # 3 bits away
    index.add(1, base, 10, monday)
    assert index.find(near, monday + timedelta(days=2)) == 10
    assert index.find(near, monday + WINDOW + timedelta(days=1)) is None
    assert index.find(base ^ ((1 << NEAR_DUPLICATE_BITS + 1) - 1), monday) is None  # one bit too far
    for i in range(2, 3000):  # grows past its first allocation
        index.add(i, random.Random(i).getrandbits(64) - (1 << 63) or 1, 100 + i, monday)
    assert index.find(near, monday) == 10 and index.size == 2999


def test_a_batch_resolves_its_own_repeats_exactly_as_one_by_one(tmp_path) -> None:
    """The store writes a batch with bulk lookups and multi-row inserts; entries that meet again inside
    the batch (same guid, a tracking-parameter copy of a URL, a changed title, a syndicated copy) must
    end as they would, written one at a time."""
    from veille.store import Store

    def entry(slug: str, text: str, guid: str | None = None, title: str | None = None, query: str = "",
              source: str = "agence") -> Entry:
        return Entry(source_id=source, url=f"https://agence.example/{slug}{query}", guid=guid,
                     title=title or slug, content=text, published=FETCHED)

    cyber, other = DISPATCHES["cyber-1"]["text"], DISPATCHES["cyber-2"]["text"]
    entries = [
        entry("cyber-1", cyber, guid="g1"),
        entry("cyber-2", other, guid="g2"),
        entry("cyber-1", cyber, guid="g1"),                                      # the same item twice
        entry("cyber-1", cyber, guid="g1", title="cyber-1, mis à jour"),         # then changed
        entry("cyber-2", other, query="?utm_source=rss&xtor=RSS-1"),             # same page, no guid
        entry("reprise", syndicated(cyber), guid="g3"),                          # a copy: same cluster
        entry("cyber-1", cyber, guid="g4", title="cyber-1, mis à jour"),         # same URL, another guid
        entry("cyber-2", other + " Mise à jour : le xylophoniste municipal a porté plainte.", guid="g2"),
    ]
    articles = [build_article(e, None, FETCHED) for e in entries]
    updated = other + " Mise à jour : le xylophoniste municipal a porté plainte."
    later = [build_article(e, None, FETCHED) for e in (                           # a second batch, on stored rows:
        entry("cyber-2", updated, guid="g2", title="cyber-2, corrigé"),              # found by guid and changed,
        entry("cyber-2", updated, title="cyber-2, corrigé", query="?xtor=RSS-2"))]   # then by URL: already so
    log = FetchLog(source_id="agence", url="https://agence.example/rss", started_at=FETCHED, duration_ms=1)

    def archive(batches: list[list]) -> tuple:
        with Store.open(tmp_path / f"{len(batches)}.db") as store:
            store.sync_sources([Source(id="agence", name="Agence", type="feed", url="https://agence.example/rss")])
            outcomes = [o for batch in batches for o in store.save_source_batch("agence", batch, log, []).outcomes]
            rows = store.query("SELECT id, guid, url, canonical_url, title, text, cluster_id FROM articles ORDER BY id")
            urls = store.query("SELECT url, article_id FROM article_urls ORDER BY url")
            fts = store.query("SELECT rowid FROM articles_fts WHERE articles_fts MATCH 'xylophoniste' ORDER BY rowid")
            return (outcomes, [tuple(r) for r in rows], [tuple(r) for r in urls], [tuple(r) for r in fts],
                    store.scalar("SELECT count(*) FROM clusters"))

    together, one_by_one = archive([articles, later]), archive([[a] for a in articles + later])
    assert together == one_by_one
    outcomes, rows, _, fts, clusters = together
    assert [status for _, status in outcomes] == ["new", "new", "same", "updated", "same", "new", "same", "updated",
                                                  "updated", "same"]
    assert len(rows) == 3 and rows[0][4] == "cyber-1, mis à jour"
    assert rows[2][6] == rows[0][6] and clusters == 2, "the syndicated copy joined the dispatch's cluster"
    assert fts == [(rows[1][0],)], "the full-text index follows the update made within the batch"
