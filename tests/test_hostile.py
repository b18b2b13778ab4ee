"""Hostile sources end to end: each attack goes through `Watch.fetch()` beside a healthy source.

For every attack the pass must complete, the hostile source be reported failed with the reason staff
act on (or its content be parsed safely), the healthy source be stored in full, and the archive pass
`PRAGMA integrity_check`. Everything is served by a FixtureServer on 127.0.0.1.
"""

from __future__ import annotations

import sqlite3
import tracemalloc
from pathlib import Path

import pytest

from veille.core import Watch
from veille.parse import MAX_ENTRIES

from . import hostile
from .corpus import STORIES, rss
from .httpserver import FixtureServer

HEALTHY = "sain"


def source_entry(sid: str, url: str, kind: str = "feed", extra: str = "") -> str:
    return f"  - id: {sid}\n    name: Source {sid}\n    type: {kind}\n    url: {url}\n{extra}"


def write_sources(path: Path, *entries: str, allow_private: bool = True) -> Path:
    flag = "true" if allow_private else "false"
    path.write_text(f"defaults: {{interval: 1h, allow_private: {flag}}}\nsources:\n" + "".join(entries),
                    encoding="utf-8")
    return path


class Pass:
    """One fetch pass over the healthy source and the hostile ones; keeps the Watch for inspection."""

    def __init__(self, tmp_path: Path, settings, server: FixtureServer, *entries: str,
                 healthy: bool = True, full_text: bool | None = None, allow_private: bool = True) -> None:
        self.db = tmp_path / "veille.db"
        extra = [source_entry(HEALTHY, hostile.healthy_feed(server), extra="    full_text: false\n")] if healthy else []
        sources = write_sources(tmp_path / "sources.yaml", *extra, *entries, allow_private=allow_private)
        self.watch = Watch(db=self.db, sources=sources, topics=tmp_path / "none.yaml", config=None,
                           settings=settings)
        self.result = self.watch.fetch(full_text=full_text)
        self.by_id = {r.source_id: r for r in self.result.sources}
        if healthy:
            assert (self.by_id[HEALTHY].status, self.by_id[HEALTHY].new) == ("ok", len(STORIES)), self.by_id[HEALTHY]

    def reason(self, sid: str) -> str | None:
        r = self.by_id[sid]
        assert r.status == "failed", r
        assert r.error and r.hint, "a failure says what happened and what to do"
        return r.reason

    def rows(self, sql: str, params=()) -> list[sqlite3.Row]:
        return self.watch.store.query(sql, params)

    def close(self) -> None:
        self.watch.close()
        assert hostile.integrity(self.db) == "ok"


@pytest.fixture
def run_pass(tmp_path, settings, http_server):
    opened: list[Pass] = []

    def make(*entries: str, server: FixtureServer | None = None, settings_=None, **kwargs) -> Pass:
        p = Pass(tmp_path, settings_ or settings, server or http_server, *entries, **kwargs)
        opened.append(p)
        return p

    yield make
    for p in opened:
        p.close()


# -- decompression bombs ----------------------------------------------------------------------------


@pytest.mark.parametrize("encoding", ["gzip", "deflate", "br"])
def test_decompression_bomb_is_cut_and_reported(http_server, run_pass, encoding):
    body = hostile.bomb(encoding, 1024)  # 1 GiB of zeros once decoded
    assert len(body) < 1_100_000
    url = http_server.serve("/bombe.xml", body, content_type="application/rss+xml",
                            headers={"Content-Encoding": encoding})
    tracemalloc.start()
    try:
        p = run_pass(source_entry("bombe", url))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert p.reason("bombe") == "too_large"
    assert "10,000,000 bytes" in p.by_id["bombe"].error
    assert peak < 40_000_000, f"the pass allocated {peak:,} bytes: the bomb was inflated"
    log = p.rows("SELECT reason, error FROM fetch_log WHERE source_id = 'bombe'")
    assert [r["reason"] for r in log] == ["too_large"] and url in log[0]["error"]


def test_gzipped_sitemap_file_bomb_is_refused(http_server, run_pass):
    url = http_server.serve("/sitemap.xml.gz", hostile.gzip_file_bomb(512), content_type="application/gzip")
    p = run_pass(source_entry("plan", url, "sitemap"))
    assert p.reason("plan") == "bad_content"
    assert "10,000,000 bytes" in p.by_id["plan"].error


# -- slow and wandering servers ---------------------------------------------------------------------


def test_trickling_server_is_ended_by_the_total_deadline(http_server, run_pass, settings):
    url = http_server.handle("/goutte.xml", hostile.trickle(seconds=20))
    p = run_pass(source_entry("goutte", url), settings_=settings.replace(read_timeout=5.0, request_deadline=2.5))
    assert p.reason("goutte") == "timeout"
    assert "deadline" in p.by_id["goutte"].error
    state = p.watch.store.source_state("goutte")
    assert state.consecutive_failures == 1 and state.next_attempt_at is not None


def test_endless_and_looping_redirects(http_server, run_pass, settings):
    endless = hostile.endless_redirects(http_server, "/sans-fin")
    loop = hostile.redirect_loop(http_server, "/boucle-a", "/boucle-b")
    p = run_pass(source_entry("sans-fin", endless), source_entry("boucle", loop))
    assert p.reason("sans-fin") == "too_many_redirects"
    assert p.reason("boucle") == "too_many_redirects"
    assert "loop" in p.by_id["boucle"].error
    hops = [r for r in http_server.requests if r.path.startswith("/sans-fin")]
    assert len(hops) == settings.max_redirects + 1, "the chain is abandoned at max_redirects"


# -- the outbound guard ---------------------------------------------------------------------------


@pytest.fixture
def guarded(settings):
    """Guard on: the setting off, no environment variable (conftest clears VEILLE_*), sources not allowed."""
    return settings.replace(allow_private=False)


def test_guard_refuses_a_loopback_source_before_any_connection(http_server, run_pass, guarded, tmp_path):
    url = http_server.serve("/interne.xml", rss([]), content_type="application/rss+xml")
    by_name = url.replace("127.0.0.1", "localhost")
    p = run_pass(source_entry("interne", url, extra="    allow_private: false\n"),
                 source_entry("nom-local", by_name, extra="    allow_private: false\n"),
                 healthy=False, settings_=guarded, allow_private=False)
    assert p.reason("interne") == "blocked_address"
    assert p.reason("nom-local") == "blocked_address"
    assert "allow_private" in p.by_id["interne"].hint
    assert http_server.requests == [], "refused before any connection"


def test_guard_is_lifted_per_source_and_by_the_environment(http_server, tmp_path, guarded, monkeypatch):
    url = hostile.healthy_feed(http_server)
    sources = write_sources(tmp_path / "s.yaml", source_entry("permis", url, extra="    allow_private: true\n"),
                            source_entry("refuse", url, extra="    allow_private: false\n"), allow_private=False)
    with Watch(db=tmp_path / "a.db", sources=sources, topics=tmp_path / "none.yaml", config=None,
               settings=guarded) as watch:
        status = {r.source_id: (r.status, r.reason) for r in watch.fetch(full_text=False).sources}
    assert status == {"permis": ("ok", None), "refuse": ("failed", "blocked_address")}
    monkeypatch.setenv("VEILLE_ALLOW_PRIVATE", "1")
    with Watch(db=tmp_path / "b.db", sources=sources, topics=tmp_path / "none.yaml", config=None,
               settings=guarded) as watch:
        assert {r.status for r in watch.fetch(full_text=False).sources} == {"ok"}


def test_guard_checks_every_redirect_hop(run_pass, guarded):
    """A public site redirecting to a loopback address: the hop is refused before connecting.

    Only loopback exists in tests, so a second server on 127.0.0.2 plays the public site: the guard's
    address test is told that this one address is public, and nothing else changes. The real target
    (127.0.0.1) must then be refused at the redirect, with zero requests reaching it.
    """
    with hostile.public_stand_in(), FixtureServer(host=hostile.PUBLIC_STAND_IN) as public, FixtureServer() as internal:
        internal.serve("/admin/flux.xml", rss([]), content_type="application/rss+xml")
        public.redirect("/flux.xml", internal.url("/admin/flux.xml"), status=302)
        public.redirect("/ailleurs.xml", f"http://127.0.0.1:{internal.port}/admin/flux.xml", status=301)
        direct = hostile.healthy_feed(public)
        p = run_pass(source_entry("rebond", public.url("/flux.xml")),
                     source_entry("rebond-301", public.url("/ailleurs.xml")),
                     source_entry("public", direct), healthy=False, settings_=guarded, full_text=False,
                     allow_private=False)
        assert p.by_id["public"].status == "ok" and p.by_id["public"].new == len(STORIES)
        assert p.reason("rebond") == "blocked_address"
        assert p.reason("rebond-301") == "blocked_address"
        assert "redirected to" in p.by_id["rebond"].error and "127.0.0.1" in p.by_id["rebond"].error
        assert internal.requests == [], "the loopback target never saw a request"
        assert len(public.hits("/flux.xml")) == 1
        assert p.watch.store.source_state("rebond-301").current_url == public.url("/ailleurs.xml"), \
            "a refused permanent redirect does not move the source"


# -- XML attacks ----------------------------------------------------------------------------------


def no_passwd(db: Path) -> None:
    for value in hostile.walk_text(db):
        for marker in hostile.PASSWD_MARKERS:
            assert marker not in value, f"/etc/passwd leaked into the archive: {value[:200]!r}"
    raw = db.read_bytes() + (db.with_name(db.name + "-wal").read_bytes() if db.with_name(db.name + "-wal").exists() else b"")
    assert b"root:x:0:0" not in raw


@pytest.mark.parametrize("padding", [0, 70_000], ids=["", "padded-prolog"])
@pytest.mark.parametrize("kind", ["rss", "atom"])
def test_billion_laughs_feed_is_parsed_without_expansion(http_server, run_pass, kind, padding):
    url = http_server.serve(f"/rires.{kind}", hostile.billion_laughs(kind, http_server.base, padding),
                            content_type="application/xml")
    tracemalloc.start()
    try:
        p = run_pass(source_entry("rires", url, extra="    full_text: false\n"))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    result = p.by_id["rires"]
    assert result.status in ("ok", "failed")
    if result.status == "failed":
        assert result.reason == "bad_content"
    longest = p.rows("SELECT max(length(title) + length(summary) + length(text)) n FROM articles")[0]["n"]
    assert longest < 10_000, "no entity was expanded into the archive"
    assert "lollollol" not in " ".join(hostile.walk_text(p.db))
    assert peak < 60_000_000, f"{peak:,} bytes allocated"


@pytest.mark.parametrize("padding", [0, 70_000], ids=["", "padded-prolog"])
@pytest.mark.parametrize("kind", ["rss", "atom"])
def test_billion_laughs_reaches_feedparser_defused(kind, padding):
    """feedparser drops nested entity declarations only when the DOCTYPE starts a line; veille hands it
    a document where every declaration left is a character reference or plain text, however long the
    prolog before the DOCTYPE."""
    from veille.parse import _ENTITY_DECL, defuse_doctype, parse_feed_feedparser

    bomb = hostile.billion_laughs(kind, "http://127.0.0.1:9", padding)
    defused = defuse_doctype(bomb)
    assert [m.group(1) for m in _ENTITY_DECL.finditer(defused)] == [b"lol0"], "only the plain-text entity is left"
    assert b"&lol1;" not in defused.split(b"]>")[0] and b"\n<!DOCTYPE " in defused
    parsed = parse_feed_feedparser("rires", bomb, "http://127.0.0.1:9/rires.xml")
    assert [len(e.title) + len(e.summary) for e in parsed.entries] == [len("Bombe &lol9;") + len("&lol9;")]
    kept = (b'<?xml version="1.0"?><!DOCTYPE rss [<!ENTITY cubed "&#179;"><!ENTITY mairie "Mairie de Vence">'
            b'<!ENTITY bombe "&cubed;&cubed;">]><rss version="2.0"><channel><title>T</title><item>'
            b'<title>Chauffage : 12 m&cubed; par an, &mairie;</title><link>http://127.0.0.1:9/a</link>'
            b'</item></channel></rss>')
    assert [e.title for e in parse_feed_feedparser("s", kept, "http://127.0.0.1:9/f").entries] == [
        "Chauffage : 12 m³ par an, Mairie de Vence"], "safe declarations still work"


@pytest.mark.parametrize("padding", [0, 70_000], ids=["", "padded-prolog"])
def test_billion_laughs_sitemap_is_refused(http_server, run_pass, padding):
    url = http_server.serve("/rires-sitemap.xml", hostile.billion_laughs("sitemap", http_server.base, padding),
                            content_type="application/xml")
    p = run_pass(source_entry("rires", url, "sitemap"))
    assert p.reason("rires") == "bad_content"
    assert "entities" in p.by_id["rires"].error


@pytest.mark.parametrize("kind", ["rss", "atom", "sitemap", "rss-external-dtd"])
def test_external_entities_never_read_files_or_fetch_dtds(http_server, run_pass, kind):
    dtd = http_server.serve("/piege.dtd", hostile.EVIL_DTD, content_type="application/xml-dtd")
    body = hostile.external_entity(kind, http_server.base, dtd_url=dtd)
    url = http_server.serve("/piege.xml", body, content_type="application/xml")
    source_type = "sitemap" if kind == "sitemap" else "feed"
    p = run_pass(source_entry("piege", url, source_type, "    full_text: false\n"))
    if kind == "sitemap":
        assert p.reason("piege") == "bad_content"
    else:
        assert p.by_id["piege"].status == "ok", p.by_id["piege"]
        titles = [r["title"] for r in p.rows("SELECT title FROM articles WHERE source_id = 'piege'")]
        assert len(titles) == 1 and titles[0].startswith(("Mot de passe", "Article"))
    no_passwd(p.db)
    assert http_server.hits("/piege.dtd") == [], "no parser fetched the external DTD"


# -- huge and binary documents ----------------------------------------------------------------------


def test_feed_of_100000_entries_is_capped(http_server, run_pass):
    body = hostile.huge_feed(100_000, http_server.base)
    assert len(body) < 10_000_000
    url = http_server.serve("/fleuve.xml", body, content_type="application/rss+xml")
    p = run_pass(source_entry("fleuve", url, extra="    full_text: false\n"))
    result = p.by_id["fleuve"]
    assert (result.status, result.entries, result.new) == ("ok", MAX_ENTRIES, MAX_ENTRIES)
    assert p.watch.store.article_count() == MAX_ENTRIES + len(STORIES)


def test_sitemap_of_100000_urls_keeps_the_newest(http_server, run_pass):
    url = http_server.serve("/plan-fleuve.xml", hostile.huge_sitemap(100_000, http_server.base),
                            content_type="application/xml")
    p = run_pass(source_entry("plan", url, "sitemap", "    full_text: false\n"))
    result = p.by_id["plan"]
    assert (result.status, result.new) == ("ok", MAX_ENTRIES)
    days = {r["d"] for r in p.rows("SELECT substr(published_at, 1, 10) d FROM articles WHERE source_id = 'plan'")}
    # The newest day listed is 28 December (Paris midnight = the 27th in UTC); the next one is the 24th.
    assert days and days <= {"2025-12-27", "2025-12-28"}, "the cap keeps the newest entries"


@pytest.mark.parametrize("length", [True, False], ids=["content-length", "streamed"])
def test_html_page_of_50_mb_is_too_large(http_server, run_pass, length):
    url = http_server.handle("/enorme", hostile.stream(50 * hostile.MB, length=length))
    p = run_pass(source_entry("enorme", url, "html", '    link_selector: "h3 a"\n'))
    assert p.reason("enorme") == "too_large"
    assert ("Content-Length" in p.by_id["enorme"].error) is length


@pytest.mark.parametrize("magic", [b"", b"\x89PNG\r\n\x1a\n", b"%PDF-1.7\n", b"\x00\x00\x00\x18ftypmp42"],
                         ids=["random", "png", "pdf", "mp4"])
def test_binary_served_as_html_is_refused_cleanly(http_server, run_pass, magic):
    blob = hostile.binary(300_000, magic=magic)
    feed = http_server.serve("/binaire.xml", blob, content_type="text/html; charset=utf-8")
    listing = http_server.serve("/binaire.html", blob, content_type="text/html")
    sitemap = http_server.serve("/binaire-plan.xml", blob, content_type="text/html")
    p = run_pass(source_entry("flux", feed), source_entry("liste", listing, "html", '    link_selector: "h3 a"\n'),
                 source_entry("plan", sitemap, "sitemap"))
    for sid in ("flux", "liste", "plan"):
        assert p.reason(sid) == "bad_content", (sid, p.by_id[sid])
    assert all("unexpected error" not in (r.error or "") for r in p.result.sources), "no crash path was taken"


def test_hostile_article_pages_keep_the_feed_text(http_server, run_pass, settings):
    """A healthy feed whose article pages attack: each entry is stored with its feed text, none lost."""
    feed = hostile.page_traps(http_server)
    p = run_pass(source_entry("pieges", feed), settings_=settings.replace(read_timeout=5.0, request_deadline=2.5))
    result = p.by_id["pieges"]
    assert (result.status, result.new) == ("ok", len(hostile.PAGE_TRAPS))
    stored = {r["guid"]: (r["text_source"], r["text"]) for r in
              p.rows("SELECT guid, text_source, text FROM articles WHERE source_id = 'pieges'")}
    assert set(stored) == {f"piege-{slug}" for slug in hostile.PAGE_TRAPS}
    for guid, (source, text) in stored.items():
        assert source == "feed" and text.startswith("Résumé du flux"), (guid, source, text[:80])


# -- injection ------------------------------------------------------------------------------------


def test_injected_markup_is_stored_as_inert_text(http_server, run_pass):
    url = http_server.serve("/cyber.xml", hostile.injection_feed(http_server.base), content_type="application/rss+xml")
    p = run_pass(source_entry("cyber", url, extra="    full_text: false\n"))
    assert p.by_id["cyber"].new == hostile.INJECTION_STORED, "items linking to javascript: or data: are dropped"
    for row in p.rows("SELECT title, summary, text, url FROM articles WHERE source_id = 'cyber'"):
        for value in row:
            assert "<script" not in value and "onerror=" not in value and "<img" not in value
        assert row["url"].startswith(http_server.base)
    urls = [r["url"] for r in p.rows("SELECT url FROM article_urls")]
    assert not any(u.startswith(("javascript:", "data:")) for u in urls)


TOPICS = """topics:
  cyber:
    label: Cybersécurité
    keywords: [cyberattaque, rançongiciel, cybersécurité]
"""


def test_injection_reaches_no_digest_no_email_and_no_header(http_server, tmp_path, settings):
    """Hostile feed -> fetch -> tag -> digest folder -> outbox .eml and SMTP: nothing of the attack survives."""
    from email import message_from_bytes, policy

    from veille.digest import iso_week
    from veille.mail import deliver_week
    from veille.store import parse_iso

    from .smtpserver import SmtpServer

    url = http_server.serve("/cyber.xml", hostile.injection_feed(http_server.base), content_type="application/rss+xml")
    sources = write_sources(tmp_path / "sources.yaml", source_entry("cyber", url, extra="    full_text: false\n"))
    (tmp_path / "topics.yaml").write_text(TOPICS, encoding="utf-8")
    mail_settings = settings.replace(
        digests_dir=str(tmp_path / "digests"), public_url="http://127.0.0.1:9/veille", smtp_rate=1000.0,
        mail_from="veille@territoires-numeriques.fr", organisation="Association des territoires numériques")
    with Watch(db=tmp_path / "veille.db", sources=sources, topics=tmp_path / "topics.yaml", config=None,
               settings=mail_settings) as watch:
        assert watch.fetch().sources[0].new == hostile.INJECTION_STORED
        store = watch.store
        tagged = store.scalar("SELECT count(DISTINCT article_id) FROM article_topics WHERE topic_id = 'cyber'")
        assert tagged == hostile.INJECTION_STORED, "every hostile item is tagged, so every one reaches the digest"
        week = iso_week(parse_iso(store.scalar("SELECT max(published_at) FROM articles")))
        store.upsert_member("alice.martin@mairie-villebois.fr", "Alice Martin", "Mairie de Villebois", None)
        store.upsert_member("bruno.leroy@cc-vallon.fr", "Bruno Leroy", "CC du Vallon", ["cyber"])
        outbox = deliver_week(store, week, mail_settings, watch.load_sources(), send=False)
        assert len(outbox.written) == 2
        with SmtpServer() as smtp:
            smtp_settings = mail_settings.replace(smtp_host=smtp.host, smtp_port=smtp.port, smtp_tls="none")
            sent = deliver_week(store, week, smtp_settings, watch.load_sources(), send=True)
            received = list(smtp.messages)
    assert len(sent.sent) == 2 and len(received) == 2
    assert sorted(r for m in received for r in m.rcpt_tos) == sorted(sent.sent), "no recipient was injected"

    folder = Path(outbox.folder)
    documents = {name: (folder / name).read_text(encoding="utf-8") for name in ("index.html", "digest.md", "digest.json")}
    assert "Cyberattaque à Villebois" in documents["index.html"], "the items themselves are in the digest"
    emails = [p.read_bytes() for p in sorted(Path(outbox.outbox).glob("*.eml"))] + [m.data for m in received]
    assert len(emails) == 4
    for raw in emails:
        text = message_from_bytes(raw, policy=policy.default).get_body(("plain",)).get_content()
        assert "Cyberattaque à Villebois" in text
    assert hostile.injection_problems(documents, emails) == []
    planted = {"index.html": documents["index.html"].replace("</body>", f"{hostile.SCRIPT}</body>")}
    assert hostile.injection_problems(planted, []) != [], "the checker does see markup when it is there"


def test_every_attack_at_once(tmp_path, settings, http_server):
    """The whole battery in one pass, concurrently (what bench/robustness measures): every case survived."""
    with hostile.public_stand_in(), FixtureServer(host=hostile.PUBLIC_STAND_IN) as public:
        sources = hostile.battery_sources(tmp_path / "sources.yaml", http_server, public)
        guarded = settings.replace(allow_private=False, read_timeout=5.0, request_deadline=3.0, concurrency=8)
        with Watch(db=tmp_path / "veille.db", sources=sources, topics=tmp_path / "none.yaml", config=None,
                   settings=guarded) as watch:
            result = watch.fetch()
    verdicts = hostile.battery_verdicts(result, tmp_path / "veille.db", http_server)
    assert len(verdicts) == len(hostile.HOSTILE_CASES) >= 25
    assert {name: why for name, why in verdicts.items() if why} == {}
    assert not http_server.hits("/h/interne.xml") and not http_server.hits("/h/interne-3.xml"), \
        "guarded sources never reached the loopback server"
