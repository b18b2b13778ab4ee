"""The fetch stage against a real HTTP server on 127.0.0.1: caching, redirects, failures, limits, guard, robots."""

from __future__ import annotations

import asyncio
import gzip
import socket
import threading
import time
import tracemalloc
import zlib
from datetime import datetime, timedelta, timezone
from email.utils import format_datetime

import brotli
import httpx
import pytest

from veille.errors import FetchError
from veille.fetch import (
    REASONS, Fetcher, classify_exception, is_blocked_address, next_attempt, parse_retry_after, user_agent,
)

from .httpserver import FixtureServer
from .pki import server_context

FEED = """<?xml version="1.0" encoding="utf-8"?>
<rss version="2.0"><channel><title>Territoires connectés</title>
<item><title>La communauté de communes du Val-Vert ouvre son portail de démarches en ligne</title>
<link>https://www.exemple-territoires.fr/actualites/portail-val-vert</link></item>
</channel></rss>"""

ARTICLE = """<html lang="fr"><head><title>Fibre : Saint-Aubin-des-Landes raccordée</title></head>
<body><article><h1>Fibre : Saint-Aubin-des-Landes raccordée</h1>
<p>Le syndicat mixte départemental a achevé le déploiement de la fibre optique dans les hameaux.</p>
</article></body></html>"""


def run(coro):
    return asyncio.run(coro)


async def fetch(settings, url: str, **kwargs):
    async with Fetcher(settings) as fetcher:
        return await fetcher.fetch(url, **kwargs)


def fetch_error(settings, url: str, **kwargs) -> FetchError:
    with pytest.raises(FetchError) as info:
        run(fetch(settings, url, **kwargs))
    error = info.value
    assert error.reason in REASONS
    assert url in str(error), "every error names the URL"
    assert error.hint == REASONS[error.reason]
    return error


# -- conditional GET ------------------------------------------------------------------------------


def test_etag_then_not_modified(http_server, settings):
    url = http_server.serve("/flux.xml", FEED, content_type="application/rss+xml; charset=utf-8")

    async def twice():
        async with Fetcher(settings) as fetcher:
            first = await fetcher.fetch(url)
            second = await fetcher.fetch(url, etag=first.etag, last_modified=first.last_modified)
            return first, second

    first, second = run(twice())
    assert first.status == 200 and not first.not_modified
    assert first.content == FEED.encode()
    assert first.content_type == "application/rss+xml" and first.charset == "utf-8"
    assert first.etag and first.last_modified == "Mon, 23 Nov 2026 08:00:00 GMT"
    assert second.not_modified and second.status == 304 and second.content == b""
    assert second.etag == first.etag and second.url == url
    sent = http_server.hits("/flux.xml")[1].headers
    assert sent["if-none-match"] == first.etag
    assert sent["user-agent"].startswith("veille/") and settings.contact in sent["user-agent"]
    assert {"gzip", "deflate", "br"} <= {c.strip() for c in sent["accept-encoding"].split(",")}


def test_last_modified_only_conditional_get(http_server, settings):
    url = http_server.serve("/actus.xml", FEED, etag=False, content_type="application/xml")
    first = run(fetch(settings, url))
    assert first.etag is None and first.last_modified == "Mon, 23 Nov 2026 08:00:00 GMT"
    assert first.content_type == "application/xml" and first.charset is None
    second = run(fetch(settings, url, last_modified=first.last_modified))
    assert second.not_modified and second.status == 304
    assert second.last_modified == first.last_modified, "a 304 keeps the validator we already had"
    sent = http_server.hits("/actus.xml")[1].headers
    assert sent["if-modified-since"] == first.last_modified and "if-none-match" not in sent


def test_accept_header_is_passed(http_server, settings):
    url = http_server.serve("/sitemap.xml", "<urlset/>", content_type="application/xml")
    run(fetch(settings, url, accept="application/xml"))
    assert http_server.hits("/sitemap.xml")[0].headers["accept"] == "application/xml"


# -- redirects ------------------------------------------------------------------------------------


def test_permanent_chain_updates_source_url(http_server, settings):
    final = http_server.serve("/nouveau/flux.xml", FEED)
    http_server.redirect("/ancien/flux.xml", "/transition/flux.xml", 301)
    http_server.redirect("/transition/flux.xml", "/nouveau/flux.xml", 308)
    response = run(fetch(settings, http_server.url("/ancien/flux.xml")))
    assert response.status == 200 and response.content == FEED.encode()
    assert response.url == final and response.permanent_redirect == final
    assert response.requested_url == http_server.url("/ancien/flux.xml")


def test_temporary_hop_keeps_source_url(http_server, settings):
    final = http_server.serve("/campagne/flux.xml", FEED)
    http_server.redirect("/flux.xml", "/relais", 301)
    http_server.redirect("/relais", "/campagne/flux.xml", 302)
    response = run(fetch(settings, http_server.url("/flux.xml")))
    assert response.url == final and response.permanent_redirect is None


def test_relative_location(http_server, settings):
    final = http_server.serve("/dossier/page.html", ARTICLE)
    http_server.handle("/dossier/ancienne.html", lambda h: h.send_simple(307, b"", {"Location": "page.html"}))
    response = run(fetch(settings, http_server.url("/dossier/ancienne.html")))
    assert response.url == final and response.permanent_redirect is None


def test_redirect_loop(http_server, settings):
    http_server.redirect("/a", "/b")
    http_server.redirect("/b", "/a")
    error = fetch_error(settings, http_server.url("/a"))
    assert error.reason == "too_many_redirects" and "loop" in error.message


def test_more_than_max_redirects(http_server, settings):
    for i in range(7):
        http_server.redirect(f"/r{i}", f"/r{i + 1}", 302)
    http_server.serve("/r7", ARTICLE)
    error = fetch_error(settings, http_server.url("/r0"))
    assert error.reason == "too_many_redirects" and "more than 5 redirects" in error.message
    assert len(http_server.requests) == 6, "the initial request plus max_redirects hops, then stop"
    # exactly max_redirects hops still succeed
    response = run(fetch(settings, http_server.url("/r2")))
    assert response.url == http_server.url("/r7")


def test_redirect_to_other_scheme(http_server, settings):
    http_server.handle("/ftp", lambda h: h.send_simple(302, b"", {"Location": "ftp://127.0.0.1/fichier"}))
    http_server.handle("/vide", lambda h: h.send_simple(301, b""))
    assert fetch_error(settings, http_server.url("/ftp")).reason == "bad_redirect"
    assert fetch_error(settings, http_server.url("/vide")).reason == "bad_redirect"


def test_bad_url_makes_no_request(http_server, settings):
    assert fetch_error(settings, "ftp://127.0.0.1/flux.xml").reason == "bad_url"
    assert http_server.requests == []


# -- HTTP failures --------------------------------------------------------------------------------


@pytest.mark.parametrize("status, reason", [
    (404, "not_found"), (410, "gone"), (500, "server_error"), (502, "server_error"), (403, "forbidden"),
    (400, "client_error"), (401, "client_error"),
])
def test_status_reasons(http_server, settings, status, reason):
    url = http_server.serve("/page", "erreur", status=status)
    error = fetch_error(settings, url)
    assert error.reason == reason and error.status == status and error.retry_after is None
    assert f"HTTP {status}" in error.message


def test_forbidden_hint_mentions_anti_bot(http_server, settings):
    url = http_server.serve("/protege", "Accès refusé", status=403)
    assert "anti-bot" in str(fetch_error(settings, url))


def test_rate_limited_with_retry_after_seconds(http_server, settings):
    url = http_server.serve("/flux", "trop de requêtes", status=429, headers={"Retry-After": "120"})
    error = fetch_error(settings, url)
    assert error.reason == "rate_limited" and error.status == 429 and error.retry_after == 120


def test_unavailable_with_retry_after_http_date(http_server, settings):
    when = format_datetime(datetime.now(timezone.utc) + timedelta(hours=1), usegmt=True)
    url = http_server.serve("/flux", "maintenance", status=503, headers={"Retry-After": when})
    error = fetch_error(settings, url)
    assert error.reason == "server_error" and error.status == 503
    assert 3500 <= error.retry_after <= 3601


def test_parse_retry_after():
    now = datetime(2026, 11, 23, 8, 0, tzinfo=timezone.utc)
    assert parse_retry_after("45", now) == 45
    assert parse_retry_after("Mon, 23 Nov 2026 08:10:00 GMT", now) == 600
    assert parse_retry_after("Mon, 23 Nov 2026 07:00:00 GMT", now) == 0, "a date in the past means now"
    assert parse_retry_after("bientôt", now) is None and parse_retry_after(None, now) is None


# -- network failures -----------------------------------------------------------------------------


def test_connection_refused(settings):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    error = fetch_error(settings, f"http://127.0.0.1:{port}/flux.xml")
    assert error.reason == "connection" and isinstance(error.__cause__, Exception)


def test_tls_failure(http_server, settings):
    http_server.serve("/flux.xml", FEED)
    error = fetch_error(settings, http_server.url("/flux.xml").replace("http://", "https://"))
    assert error.reason == "tls" and error.__cause__ is not None


@pytest.fixture
def https_server(pki):
    with FixtureServer(tls=server_context(pki)) as server:
        yield server


def test_https_with_a_trusted_certificate_keeps_its_connection(https_server, settings, trust_ca):
    """The real sources are HTTPS: the handshake, a conditional GET and the reuse of the connection."""
    url = https_server.serve("/flux.xml", FEED, content_type="application/rss+xml; charset=utf-8")
    assert url.startswith("https://127.0.0.1:")

    async def twice():
        async with Fetcher(settings) as fetcher:
            first = await fetcher.fetch(url)
            second = await fetcher.fetch(url, etag=first.etag)
            return first, second

    first, second = run(twice())
    assert first.status == 200 and first.content == FEED.encode() and first.charset == "utf-8"
    assert second.not_modified
    assert len(https_server.connections) == 1, "the second request reused the TLS connection"


def test_the_trust_store_is_loaded_at_the_first_handshake_only(http_server, https_server, settings, trust_ca):
    """Plain-HTTP requests never pay for loading the CA bundle; the pool's placeholder trusts nothing."""
    plain = http_server.serve("/flux.xml", FEED, content_type="application/rss+xml; charset=utf-8")
    secure = https_server.serve("/flux.xml", FEED, content_type="application/rss+xml; charset=utf-8")

    async def both():
        async with Fetcher(settings) as fetcher:
            placeholder = fetcher._transport._pool._ssl_context
            assert (await fetcher.fetch(plain)).status == 200
            before = placeholder._trusted
            assert (await fetcher.fetch(secure)).status == 200
            return placeholder, before

    placeholder, before = run(both())
    assert before is None
    assert placeholder.cert_store_stats()["x509_ca"] == 0
    assert placeholder._trusted.cert_store_stats()["x509_ca"] == 1  # the test CA, from SSL_CERT_FILE


def test_an_idle_connection_the_server_closed_is_not_reused(http_server, settings):
    """Servers drop idle keep-alive connections without a word: the next request opens a new one
    instead of failing on the dead one."""
    def answer_then_hang_up(handler):
        handler.send_simple(200, FEED.encode(), content_type="application/rss+xml")
        handler.close_connection = True  # closed after the answer, which announced keep-alive

    url = http_server.handle("/flux.xml", answer_then_hang_up)

    async def twice():
        async with Fetcher(settings) as fetcher:
            first = await fetcher.fetch(url)
            await asyncio.sleep(0.2)  # the server's close reaches us
            return first, await fetcher.fetch(url)

    first, second = run(twice())
    assert first.content == second.content == FEED.encode()
    assert len(http_server.connections) == 2


@pytest.mark.parametrize(("ca", "cert"), [("other-ca", "server"), ("ca", "elsewhere")])
def test_https_refuses_an_untrusted_certificate(pki, settings, monkeypatch, ca, cert):
    """A certificate from a CA we do not trust, or for another name: `tls`, and no request is sent."""
    monkeypatch.setenv("SSL_CERT_FILE", str(pki / f"{ca}.pem"))
    with FixtureServer(tls=server_context(pki, cert)) as server:
        error = fetch_error(settings, server.serve("/flux.xml", FEED))
        assert server.requests == []
    assert error.reason == "tls" and "certificate" in str(error).lower()


def test_dns_failure_classification():
    try:
        try:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        except socket.gaierror as e:
            raise httpx.ConnectError("[Errno -2] Name or service not known") from e
    except httpx.ConnectError as e:
        assert classify_exception(e) == "dns"
    assert classify_exception(httpx.ReadTimeout("slow")) == "timeout"
    assert classify_exception(httpx.RemoteProtocolError("Server disconnected")) == "connection"


def test_read_timeout(http_server, settings):
    def slow(h):
        time.sleep(1.2)
        h.send_simple(200, b"trop tard")

    url = http_server.handle("/lent", slow)
    error = fetch_error(settings.replace(read_timeout=0.3), url)
    assert error.reason == "timeout" and "deadline" not in error.message


def test_trickling_server_cut_by_deadline(http_server, settings):
    def trickle(h):
        h.send_head(200, 40, content_type="text/html; charset=utf-8")
        try:
            for _ in range(40):
                h.wfile.write(b"x")
                h.wfile.flush()
                time.sleep(0.1)
        except OSError:
            pass

    url = http_server.handle("/goutte", trickle)
    error = fetch_error(settings.replace(read_timeout=2.0, request_deadline=0.8), url)
    assert error.reason == "timeout" and "deadline" in error.message


def test_a_body_cut_short_is_a_connection_error(http_server, settings):
    """The server announces 1,000 bytes, sends 100 and hangs up: an error, never a truncated feed."""
    def cut(h):
        h.send_head(200, 1000, content_type="application/rss+xml")
        h.wfile.write(FEED.encode()[:100])
        h.wfile.flush()
        h.close_connection = True

    error = fetch_error(settings, http_server.handle("/coupe.xml", cut))
    assert error.reason == "connection"


def test_a_tls_handshake_that_never_comes_times_out(settings):
    """A port that accepts the connection and then says nothing: the connect timeout covers the handshake."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        accepted = []
        threading.Thread(target=lambda: accepted.append(listener.accept()), daemon=True).start()
        started = time.monotonic()
        error = fetch_error(settings.replace(connect_timeout=0.5), f"https://127.0.0.1:{listener.getsockname()[1]}/flux")
        assert time.monotonic() - started < 4
        for conn, _ in accepted:
            conn.close()
    assert error.reason == "timeout" and accepted


# -- body size and decompression ------------------------------------------------------------------


def test_too_large_by_content_length(http_server, settings):
    url = http_server.serve("/gros", "x" * 5000)
    error = fetch_error(settings.replace(max_body_bytes=1000), url)
    assert error.reason == "too_large" and "Content-Length" in error.message


def test_too_large_while_streaming(http_server, settings):
    sent = []

    def endless(h):
        h.send_head(200, None, {"Connection": "close"}, content_type="text/html")
        h.close_connection = True
        try:
            for _ in range(200):
                h.wfile.write(b"y" * 1000)
                sent.append(1000)
        except OSError:
            pass

    url = http_server.handle("/flot", endless)
    error = fetch_error(settings.replace(max_body_bytes=5000), url)
    assert error.reason == "too_large" and "Content-Length" not in error.message


def _gzip_bomb(size: int) -> bytes:
    c = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    block = b"\0" * (1 << 20)
    return b"".join(c.compress(block) for _ in range(size >> 20)) + c.flush()


def _brotli_bomb(size: int) -> bytes:
    c = brotli.Compressor(quality=1)
    block = b"\0" * (1 << 20)
    return b"".join(c.process(block) for _ in range(size >> 20)) + c.finish()


@pytest.mark.parametrize("encoding, make, size", [("gzip", _gzip_bomb, 64 << 20), ("br", _brotli_bomb, 512 << 20)])
def test_decompression_bomb_cut_early(http_server, settings, encoding, make, size):
    bomb = make(size)
    assert len(bomb) < 200_000, "small on the wire"
    url = http_server.serve("/bombe", bomb, headers={"Content-Encoding": encoding})
    tracemalloc.start()
    try:
        with pytest.raises(FetchError) as info:
            run(fetch(settings.replace(max_body_bytes=1_000_000), url))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert info.value.reason == "too_large"
    assert peak < 16_000_000, f"decoding allocated {peak:,} bytes: the bomb was not cut early"


@pytest.mark.parametrize("encoding, encode", [
    ("gzip", gzip.compress),
    ("deflate", zlib.compress),
    ("deflate", lambda b: zlib.compress(b)[2:-4]),  # raw deflate, as some servers send it
    ("br", brotli.compress),
])
def test_compressed_bodies_are_decoded(http_server, settings, encoding, encode):
    body = (ARTICLE * 50).encode()
    url = http_server.serve("/article", encode(body), headers={"Content-Encoding": encoding})
    assert run(fetch(settings, url)).content == body


def test_undecodable_bodies(http_server, settings):
    broken = http_server.serve("/casse", b"ceci n'est pas du gzip", headers={"Content-Encoding": "gzip"})
    unknown = http_server.serve("/zstd", b"\x28\xb5\x2f\xfd", headers={"Content-Encoding": "zstd"})
    assert fetch_error(settings, broken).reason == "bad_content"
    assert fetch_error(settings, unknown).reason == "bad_content"


# -- concurrency and politeness ---------------------------------------------------------------------


class InFlight:
    """Server side: counts requests being handled at once."""

    def __init__(self, hold: float = 0.15) -> None:
        self.hold = hold
        self.now = self.peak = 0
        self.lock = threading.Lock()

    def __call__(self, h) -> None:
        with self.lock:
            self.now += 1
            self.peak = max(self.peak, self.now)
        time.sleep(self.hold)
        with self.lock:
            self.now -= 1
        h.send_simple(200, b"ok")


async def _many(settings, urls: list[str]) -> None:
    async with Fetcher(settings) as fetcher:
        await asyncio.gather(*(fetcher.fetch(u) for u in urls))


def test_per_host_concurrency_never_exceeded(http_server, settings):
    counter = InFlight()
    http_server.handle("/page", counter)
    run(_many(settings.replace(per_host_concurrency=2, concurrency=10), [http_server.url("/page")] * 8))
    assert counter.peak == 2
    assert len(http_server.hits("/page")) == 8


def test_global_concurrency_never_exceeded(http_server, settings):
    counter = InFlight()
    http_server.handle("/page", counter)
    run(_many(settings.replace(per_host_concurrency=10, concurrency=3), [http_server.url("/page")] * 9))
    assert counter.peak == 3


def test_politeness_delay_between_request_starts(http_server, settings):
    starts: list[float] = []

    def stamp(h):
        starts.append(time.monotonic())
        h.send_simple(200, b"ok")

    http_server.handle("/page", stamp)
    run(_many(settings.replace(politeness_delay=0.3, per_host_concurrency=2), [http_server.url("/page")] * 4))
    gaps = [b - a for a, b in zip(starts, starts[1:])]
    assert len(starts) == 4 and min(gaps) >= 0.2, gaps


# -- robots.txt -----------------------------------------------------------------------------------

ROBOTS = """User-agent: veille
Disallow: /espace-elus/

User-agent: *
Disallow: /recherche
"""


def test_robots_disallow_and_allow(http_server, settings):
    http_server.serve("/robots.txt", ROBOTS, content_type="text/plain")
    allowed = http_server.serve("/actualites/fibre.html", ARTICLE)
    forbidden = http_server.url("/espace-elus/compte-rendu.html")
    http_server.serve("/espace-elus/compte-rendu.html", ARTICLE)

    async def go():
        async with Fetcher(settings) as fetcher:
            ok = await fetcher.fetch(allowed, robots=True)
            with pytest.raises(FetchError) as info:
                await fetcher.fetch(forbidden, robots=True, source_id="val-vert")
            unchecked = await fetcher.fetch(forbidden)  # feeds and listings are not article pages
            return ok, info.value, unchecked, await fetcher.allowed_by_robots(http_server.url("/recherche"))

    ok, error, unchecked, search_allowed = run(go())
    assert ok.status == 200 and unchecked.status == 200
    assert error.reason == "robots" and error.source_id == "val-vert" and forbidden in str(error)
    assert search_allowed, "the 'veille' group replaces '*' for us"
    assert len(http_server.hits("/robots.txt")) == 1, "robots.txt is fetched once per host"
    assert len(http_server.hits("/espace-elus/compte-rendu.html")) == 1, "only the unchecked fetch reached it"


def test_robots_disallow_all(http_server, settings):
    http_server.serve("/robots.txt", "User-agent: *\nDisallow: /\n", content_type="text/plain")
    url = http_server.serve("/article.html", ARTICLE)
    assert fetch_error(settings, url, robots=True).reason == "robots"
    assert http_server.hits("/article.html") == []


def test_missing_robots_allows(http_server, settings):
    url = http_server.serve("/article.html", ARTICLE)
    assert run(fetch(settings, url, robots=True)).status == 200
    assert len(http_server.hits("/robots.txt")) == 1


def test_unreachable_robots_allows(http_server, settings):
    http_server.serve("/robots.txt", "panne", status=500)
    url = http_server.serve("/article.html", ARTICLE)
    assert run(fetch(settings, url, robots=True)).status == 200


# -- outbound guard -------------------------------------------------------------------------------


@pytest.mark.parametrize("address", [
    "10.0.0.1", "192.168.1.10", "172.16.0.5", "127.0.0.1", "169.254.169.254", "100.64.0.1", "0.0.0.0",
    "224.0.0.1", "240.0.0.1", "::1", "::", "::ffff:127.0.0.1", "::ffff:10.0.0.1", "fc00::1", "fe80::1",
    "ff02::1", "2002:7f00:1::", "64:ff9b::a00:1",
])
def test_guard_blocks_non_public_addresses(address):
    assert is_blocked_address(address)


@pytest.mark.parametrize("address", ["93.184.216.34", "2606:2800:220:1:248:1893:25c8:1946", "1.1.1.1"])
def test_guard_allows_public_addresses(address):
    assert not is_blocked_address(address)


@pytest.fixture
def guarded(settings):
    return settings.replace(allow_private=False)


def test_guard_refuses_loopback_before_any_request(http_server, guarded):
    url = http_server.serve("/flux.xml", FEED)
    error = fetch_error(guarded, url)
    assert error.reason == "blocked_address" and "allow_private" in error.hint
    assert http_server.requests == []


def test_guard_resolves_names(http_server, guarded):
    http_server.serve("/flux.xml", FEED)
    error = fetch_error(guarded, f"http://localhost:{http_server.port}/flux.xml")
    assert error.reason == "blocked_address"
    assert http_server.requests == []


def test_guard_checks_the_connected_peer(http_server, guarded):
    """DNS rebinding: even if the name looked public when checked, the connection itself is refused."""
    url = http_server.serve("/flux.xml", FEED)

    async def go():
        async with Fetcher(guarded) as fetcher:
            fetcher._public_hosts.add("127.0.0.1")  # as if a resolver had answered a public address
            await fetcher.fetch(url)

    with pytest.raises(FetchError) as info:
        run(go())
    assert info.value.reason == "blocked_address"
    assert http_server.requests == []


def test_guard_lifted_by_env(http_server, guarded, monkeypatch):
    url = http_server.serve("/flux.xml", FEED)
    monkeypatch.setenv("VEILLE_ALLOW_PRIVATE", "1")
    response = run(fetch(guarded, f"http://localhost:{http_server.port}/flux.xml"))
    assert response.status == 200 and response.content == FEED.encode()
    assert run(fetch(guarded, url)).status == 200


def test_guard_lifted_per_source(http_server, guarded):
    url = http_server.serve("/flux.xml", FEED)
    assert run(fetch(guarded, url, allow_private=True)).status == 200

    async def mixed():
        async with Fetcher(guarded) as fetcher:
            await fetcher.fetch(url, allow_private=True)
            with pytest.raises(FetchError) as info:
                await fetcher.fetch(url)
            return info.value

    assert run(mixed()).reason == "blocked_address", "one source's permission does not leak to others"


# -- retry policy and identity --------------------------------------------------------------------


def test_next_attempt_grows_and_is_capped(settings):
    now = datetime(2026, 11, 23, 8, 0, tzinfo=timezone.utc)
    waits = [next_attempt(n, now, settings) - now for n in range(1, 8)]
    assert timedelta(minutes=4) <= waits[0] <= timedelta(minutes=5)
    assert all(b > a for a, b in zip(waits, waits[1:])), waits
    for failures in (12, 30, 500):
        wait = next_attempt(failures, now, settings) - now
        assert settings.max_backoff * 0.8 <= wait <= settings.max_backoff
    short = settings.replace(max_backoff=timedelta(minutes=30))
    assert next_attempt(10, now, short) - now <= timedelta(minutes=30)


def test_next_attempt_retry_after_wins_when_longer(settings):
    now = datetime(2026, 11, 23, 8, 0, tzinfo=timezone.utc)
    assert next_attempt(1, now, settings, retry_after=7200) == now + timedelta(hours=2)
    assert next_attempt(1, now, settings, retry_after=10) - now >= timedelta(minutes=4)


def test_user_agent(settings):
    agent = user_agent(settings.replace(contact="mailto:veille@territoires.example"))
    assert agent.startswith("veille/") and agent.endswith("(+mailto:veille@territoires.example)")


def test_custom_user_agent(http_server, settings):
    url = http_server.serve("/flux.xml", FEED)

    async def go():
        async with Fetcher(settings, user_agent="veille-test/1.0") as fetcher:
            await fetcher.fetch(url)

    run(go())
    assert http_server.requests[0].headers["user-agent"] == "veille-test/1.0"
