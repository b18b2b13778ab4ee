"""Hostile content for the FixtureServer, and the machinery of the crash tests.

Everything here is served on 127.0.0.1 only. Three families:

- documents and handlers that attack the pipeline: decompression bombs (valid gzip, deflate and brotli
  streams, built in milliseconds from repeated compressed blocks), a server trickling one byte per
  second, endless and looping redirects, XML entity expansion and external entities, feeds of 100,000
  entries, 50 MB pages, binary data served as HTML, and feeds whose titles carry markup, CR/LF and bidi
  overrides;
- a small invented French press corpus (`PressCorpus`) for passes that get killed;
- `cli_process`: a real `veille` process (fork of a pre-imported server, so a kill test can afford a
  hundred of them), and `archive_snapshot`, which reads what a kill must never break.
"""

from __future__ import annotations

import hashlib
import multiprocessing
import os
import random
import resource
import signal
import sqlite3
import struct
import threading
import time
import zlib
from contextlib import contextmanager
from dataclasses import dataclass, field
from email.utils import format_datetime
from datetime import datetime, timedelta, timezone
from functools import cache
from html import escape
from pathlib import Path
from typing import Callable, Iterator

import brotli

from .httpserver import FixtureServer, Handler, Request

MB = 1 << 20

# --------------------------------------------------------------------------------------------------
# Decompression bombs: valid streams of zeros, small on the wire, built without compressing gigabytes.


@cache
def _deflate_unit() -> bytes:
    """1 MiB of zeros as raw deflate blocks ending in a full flush: such units can be repeated at will."""
    c = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    return c.compress(b"\0" * MB) + c.flush(zlib.Z_FULL_FLUSH)


_FINAL_BLOCK = b"\x03\x00"  # an empty final fixed-Huffman block: ends a raw deflate stream


def _zero_crc32(size_mb: int) -> int:
    block, crc = b"\0" * MB, 0
    for _ in range(size_mb):
        crc = zlib.crc32(block, crc)
    return crc


@cache
def bomb(encoding: str, size_mb: int) -> bytes:
    """A valid `Content-Encoding: encoding` body that decodes to `size_mb` MiB of zeros."""
    unit = _deflate_unit()
    if encoding == "gzip":
        header = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x02\xff"
        trailer = struct.pack("<II", _zero_crc32(size_mb), (size_mb * MB) & 0xFFFFFFFF)
        return header + unit * size_mb + _FINAL_BLOCK + trailer
    if encoding == "deflate":  # zlib-wrapped, as RFC 9110 means it
        adler = ((size_mb * MB) % 65521) << 16 | 1  # Adler-32 of zeros: A stays 1, B adds 1 per byte
        return b"\x78\xda" + unit * size_mb + _FINAL_BLOCK + struct.pack(">I", adler)
    if encoding == "br":
        c = brotli.Compressor(quality=1)
        block = b"\0" * MB
        return b"".join(c.process(block) for _ in range(size_mb)) + c.finish()
    raise ValueError(encoding)


def gzip_file_bomb(size_mb: int) -> bytes:
    """A `.xml.gz` document (no Content-Encoding): the sitemap parser inflates it itself."""
    return bomb("gzip", size_mb)


# --------------------------------------------------------------------------------------------------
# Slow, endless and oversized answers


def trickle(seconds: float = 30.0, content_type: str = "application/rss+xml") -> Callable[[Handler], None]:
    """Headers at once, then one byte per second; gives up when the client goes or after `seconds`."""

    def handler(h: Handler) -> None:
        h.send_head(200, 100000, content_type=content_type)
        h.close_connection = True
        deadline = time.monotonic() + seconds
        try:
            h.wfile.write(b"<")
            h.wfile.flush()
            while time.monotonic() < deadline:
                time.sleep(1.0)
                h.wfile.write(b" ")
                h.wfile.flush()
        except OSError:
            pass

    return handler


def endless_redirects(server: FixtureServer, path: str) -> str:
    """`path?n=k` redirects to `path?n=k+1`, for ever."""

    def handler(h: Handler) -> None:
        n = int(h.path.rsplit("=", 1)[1]) if "?n=" in h.path else 0
        h.send_simple(302, b"", {"Location": server.url(f"{path}?n={n + 1}")})

    return server.handle(path, handler)


def redirect_loop(server: FixtureServer, a: str, b: str) -> str:
    server.redirect(a, b, status=302)
    server.redirect(b, a, status=302)
    return server.url(a)


def stream(total: int, *, content_type: str = "text/html; charset=utf-8", length: bool = True,
           chunk: bytes | None = None) -> Callable[[Handler], None]:
    """`total` bytes of an endless HTML page, with or without Content-Length (then until the client leaves)."""
    piece = chunk or ("<p>Le conseil communautaire a adopté le schéma directeur du numérique. </p>\n" * 800).encode()

    def handler(h: Handler) -> None:
        h.send_response(200)
        h.send_header("Content-Type", content_type)
        if length:
            h.send_header("Content-Length", str(total))
        else:
            h.send_header("Connection", "close")
            h.close_connection = True
        h.end_headers()
        sent = 0
        try:
            h.wfile.write(b"<!DOCTYPE html><html lang='fr'><body>")
            while sent < total:
                h.wfile.write(piece)
                sent += len(piece)
        except OSError:
            pass

    return handler


def binary(size: int = 200_000, seed: int = 7, magic: bytes = b"") -> bytes:
    """Random bytes (optionally after a file signature), the kind a misconfigured server labels text/html."""
    return magic + random.Random(seed).randbytes(size)


# --------------------------------------------------------------------------------------------------
# XML attacks

PASSWD_MARKERS = ("root:x:0:0", "/bin/bash", "/usr/sbin/nologin", "daemon:x:")
"""What /etc/passwd looks like: none of it may ever reach the archive."""


def _laughs(levels: int = 10) -> str:
    decls = ['<!ENTITY lol0 "lol">']
    for i in range(1, levels):
        decls.append(f'<!ENTITY lol{i} "{("&lol%d;" % (i - 1)) * 10}">')
    return "".join(decls)


def billion_laughs(kind: str, base: str, padding: int = 0) -> bytes:
    """Entity expansion (10^9 'lol's once resolved) in an RSS feed, an Atom feed or a sitemap; with
    `padding`, a comment of that many bytes before the DOCTYPE (checks that look at a fixed window of
    the document's head miss it)."""
    body = _billion_laughs(kind, base)
    if not padding:
        return body
    declaration_end = body.index(b"?>") + 2
    return body[:declaration_end] + b"\n<!-- " + b"x" * padding + b" -->\n" + body[declaration_end:]


def _billion_laughs(kind: str, base: str) -> bytes:
    dtd = _laughs()
    if kind == "rss":
        return f"""<?xml version="1.0" encoding="utf-8"?><!DOCTYPE rss [{dtd}]>
<rss version="2.0"><channel><title>Le Journal des rires &lol9;</title>
<item><title>Bombe &lol9;</title><link>{base}/articles/rires-rss</link><guid>rires</guid>
<description>&lol9;</description></item></channel></rss>""".encode()
    if kind == "atom":
        return f"""<?xml version="1.0" encoding="utf-8"?><!DOCTYPE feed [{dtd}]>
<feed xmlns="http://www.w3.org/2005/Atom"><title>Rires &lol9;</title><id>urn:x:rires</id>
<entry><title>Bombe &lol9;</title><link href="{base}/articles/rires-atom"/><id>urn:x:rires:1</id>
<updated>2026-11-20T08:00:00Z</updated><summary>&lol9;</summary></entry></feed>""".encode()
    if kind == "sitemap":
        return f"""<?xml version="1.0" encoding="utf-8"?><!DOCTYPE urlset [{dtd}]>
<urlset xmlns="http://www.sitemaps.org/schemas/sitemap/0.9"><url><loc>{base}/articles/&lol9;</loc></url>
</urlset>""".encode()
    raise ValueError(kind)


def external_entity(kind: str, base: str, dtd_url: str | None = None) -> bytes:
    """External entities pointing at /etc/passwd (general and parameter), and an external DTD on loopback.

    `dtd_url` (a route of the test server) shows whether any parser tried to fetch a DTD over the network.
    """
    decl = '<!ENTITY xxe SYSTEM "file:///etc/passwd">'
    if dtd_url:
        decl += f'<!ENTITY % remote SYSTEM "{dtd_url}"> %remote;'
    if kind == "rss":
        return f"""<?xml version="1.0" encoding="utf-8"?><!DOCTYPE rss [{decl}]>
<rss version="2.0"><channel><title>Flux piégé &xxe;</title>
<item><title>Mot de passe &xxe;</title><link>{base}/articles/piege-rss</link><guid>piege</guid>
<description>Contenu : &xxe;</description></item></channel></rss>""".encode()
    if kind == "atom":
        return f"""<?xml version="1.0" encoding="utf-8"?><!DOCTYPE feed [{decl}]>
<feed xmlns="http://www.w3.org/2005/Atom"><title>Piège &xxe;</title><id>urn:x:piege</id>
<entry><title>Mot de passe &xxe;</title><link href="{base}/articles/piege-atom"/><id>urn:x:piege:1</id>
<updated>2026-11-20T08:00:00Z</updated><summary>Contenu : &xxe;</summary></entry></feed>""".encode()
    if kind == "sitemap":
        return f"""<?xml version="1.0" encoding="utf-8"?><!DOCTYPE urlset [{decl}]>
<urlset xmlns="http://www.sitemaps.org/schemas/sitemap/0.9"><url><loc>{base}/articles/&xxe;</loc></url>
</urlset>""".encode()
    if kind == "rss-external-dtd":
        assert dtd_url
        return f"""<?xml version="1.0" encoding="utf-8"?><!DOCTYPE rss SYSTEM "{dtd_url}">
<rss version="2.0"><channel><title>Flux à DTD externe</title>
<item><title>Article &xxe;</title><link>{base}/articles/dtd</link><guid>dtd</guid>
<description>Texte</description></item></channel></rss>""".encode()
    raise ValueError(kind)


EVIL_DTD = b'<!ENTITY xxe SYSTEM "file:///etc/passwd">'


# --------------------------------------------------------------------------------------------------
# Huge documents, generated as they are sent


def huge_feed(entries: int, base: str) -> bytes:
    """An RSS feed of `entries` items (small ones, so 100,000 stay under the 10 MB body cap)."""
    head = b'<?xml version="1.0" encoding="utf-8"?><rss version="2.0"><channel><title>Flux fleuve</title>\n'
    items = b"".join(
        b"<item><title>Avis %d</title><link>%s/avis/%d</link></item>\n" % (i, base.encode(), i)
        for i in range(entries)
    )
    return head + items + b"</channel></rss>"


def huge_sitemap(urls: int, base: str) -> bytes:
    rows = b"".join(b"<url><loc>%s/deliberation/%d</loc><lastmod>2025-%02d-%02d</lastmod></url>\n"
                    % (base.encode(), i, 1 + i % 12, 1 + i % 28) for i in range(urls))
    return (b'<?xml version="1.0" encoding="utf-8"?><urlset xmlns="http://www.sitemaps.org/schemas/sitemap/0.9">\n'
            + rows + b"</urlset>")


# --------------------------------------------------------------------------------------------------
# Injection through feed fields

SCRIPT = '<script>alert("piratage")</script>'
ONERROR = '<img src="x" onerror="alert(document.domain)">'
JS_LINK = '<a href="javascript:alert(document.cookie)">Lire la suite</a>'
PIXEL = '<img src="http://127.0.0.1:9/pixel.gif?abonne=42" width="1" height="1" alt="">'
CRLF = "\r\nBcc: espion@exemple.invalid\r\nX-Injected: oui"
RLO = "\u202e"

INJECTED_MARKERS = ("<script", "alert(", "onerror", "javascript:", "pixel.gif", RLO)
"""None of these may appear in a digest page, an email part or an email header."""
HEADER_MARKERS = (*INJECTED_MARKERS, "X-Injected", "espion@exemple.invalid", "Bcc")
"""Nor these in any header: the CR/LF trick may leave inert text in a body, never a header."""


def injection_feed(base: str) -> bytes:
    """RSS whose titles and descriptions carry every trick; each item still talks about cyberattaques,
    so a topic takes it into the digest. Items whose link is not http(s) must be dropped."""

    def item(slug: str, title: str, description: str, link: str | None = None) -> str:
        return (f"<item><title>{escape(title)}</title><link>{escape(link or base + '/articles/' + slug)}</link>"
                f"<guid isPermaLink=\"false\">{slug}</guid><pubDate>{format_datetime(datetime(2026, 11, 24, 9, 0, tzinfo=timezone.utc))}"
                f"</pubDate><description>{escape(description)}</description></item>")

    items = [
        item("mairie-villebois", f"Cyberattaque à Villebois {SCRIPT}",
             f"La mairie de Villebois victime d'une cyberattaque. {SCRIPT} Les services sont perturbés."),
        item("plainte", f"Cyberattaque : la commune porte plainte {ONERROR}",
             f"{ONERROR}Le rançongiciel a chiffré les serveurs. {JS_LINK}"),
        item("departement", "Cyberattaque : le département renforce sa sécurité",
             f"{PIXEL}Le conseil départemental lance un plan de cybersécurité. {PIXEL}"),
        item("syndicat-eaux", f"Cyberattaque au syndicat des eaux{CRLF}", f"Une cyberattaque{CRLF} retarde la facturation."),
        item("piece-jointe", f"Cyberattaque {RLO}fdp.exe{RLO} : la pièce jointe piégée",
             f"Une cyberattaque par pièce jointe {RLO}exe.odt{RLO} vise les mairies."),
        item("lien-1", "Cyberattaque : lien piégé", "Un lien piégé circule.", link="javascript:alert(1)"),
        item("lien-2", "Cyberattaque : lien data", "Un autre lien piégé.",
             link="data:text/html;base64,PHNjcmlwdD5hbGVydCgxKTwvc2NyaXB0Pg=="),
    ]
    return (f"""<?xml version="1.0" encoding="utf-8"?><rss version="2.0"><channel>
<title>Cyber {SCRIPT} Hebdo</title><link>{base}/</link><description>Veille cyber</description>
{''.join(items)}</channel></rss>""").encode()


INJECTION_STORED = 5
"""Items of `injection_feed` with an http(s) link: those the archive keeps."""


def injection_problems(documents: dict[str, str], messages: list[bytes]) -> list[str]:
    """What of `injection_feed` reached the digest folder's `documents` or the emails; [] when nothing."""
    from email import message_from_bytes, policy

    problems = []
    texts = dict(documents)
    for raw in messages:
        msg = message_from_bytes(raw, policy=policy.default)
        for name in ("Bcc", "X-Injected"):
            if msg[name] is not None:
                problems.append(f"email to {msg['To']}: injected header {name}")
        for name, value in msg.items():
            if "\r" in str(value) or "\n" in str(value) or any(m in str(value) for m in HEADER_MARKERS):
                problems.append(f"email to {msg['To']}: header {name} carries {str(value)[:80]!r}")
        texts[f"email to {msg['To']} (html)"] = msg.get_body(("html",)).get_content()
        texts[f"email to {msg['To']} (text)"] = msg.get_body(("plain",)).get_content()
    for name, text in texts.items():
        problems += [f"{name}: contains {m!r}" for m in INJECTED_MARKERS if m in text]
        if any(line.lstrip().startswith(("Bcc:", "X-Injected:")) for line in text.splitlines()):
            problems.append(f"{name}: a line starts like an injected header")
        if (name.endswith("(html)") or name.endswith(".html")) and "<img" in text:
            problems.append(f"{name}: an <img> (tracking pixel) survived")
    return problems


# --------------------------------------------------------------------------------------------------
# An invented press corpus for passes that get killed


_COMMUNES = ("Saint-Aubin-des-Landes", "Villebois", "Montagnac", "Le Vigan", "Pontivy", "Castelnau",
             "Sainte-Foy", "Lavaur", "Brioude", "Quimperlé", "Saint-Flour", "Lodève", "Remiremont",
             "Figeac", "Morlaix", "Issoire")
_SUBJECTS = ("la fibre optique", "le portail citoyen", "l'open data", "la cybersécurité", "le tiers-lieu numérique",
             "les conseillers numériques", "la dématérialisation des marchés", "l'éclairage public connecté",
             "la médiathèque numérique", "le plan de sobriété numérique")
_VERBS = ("inaugure", "lance", "étend", "évalue", "mutualise", "finance", "modernise", "ouvre")
_FILLER = (
    "Le conseil municipal a voté le projet à l'unanimité lors de sa dernière séance.",
    "Les habitants pourront suivre l'avancement des travaux sur le site de la commune.",
    "L'intercommunalité apporte un soutien technique et une partie du financement.",
    "Le maire rappelle que le chantier s'inscrit dans le schéma départemental des usages numériques.",
    "Une réunion publique est prévue à la salle des fêtes au début du mois prochain.",
    "La région et l'État cofinancent l'opération dans le cadre du plan de relance.",
    "Les agents ont été formés pendant l'été pour accompagner les usagers.",
    "Le syndicat mixte assure la maîtrise d'ouvrage et le suivi des prestataires.",
    "Les associations locales seront associées à l'évaluation du dispositif.",
    "Un premier bilan sera présenté en conseil communautaire à l'automne.",
)


@dataclass(frozen=True)
class PressItem:
    source: int
    index: int
    title: str
    lead: str
    paragraphs: tuple[str, ...]
    published: datetime

    @property
    def slug(self) -> str:
        return f"s{self.source}/a{self.index}"


def press_items(sources: int, entries: int, seed: int = 48) -> list[PressItem]:
    """Distinct, plausible French local-news articles (each long enough for a SimHash of its own)."""
    rng = random.Random(seed)
    start = datetime(2026, 11, 23, 7, 0, tzinfo=timezone.utc)
    out = []
    for s in range(sources):
        for i in range(entries):
            commune = _COMMUNES[(s * entries + i) % len(_COMMUNES)]
            subject = _SUBJECTS[(s + 3 * i) % len(_SUBJECTS)]
            verb = _VERBS[(s * 7 + i) % len(_VERBS)]
            title = f"{commune} {verb} {subject} (dossier {s}-{i})"
            lead = f"À {commune}, la collectivité {verb} {subject} : un projet suivi de près par les élus."
            paragraphs = tuple(
                " ".join(rng.sample(_FILLER, 4)) + f" Référence du dossier : {s}-{i}-{p}, {commune}."
                for p in range(3)
            )
            out.append(PressItem(s, i, title, lead, paragraphs, start + timedelta(hours=s * entries + i)))
    return out


class PressCorpus:
    """`sources` feeds of `entries` items each, with their article pages, on a FixtureServer."""

    def __init__(self, server: FixtureServer, sources: int = 10, entries: int = 10) -> None:
        self.server = server
        self.items = press_items(sources, entries)
        self.sources = sources
        server.serve("/robots.txt", "User-agent: *\nAllow: /\n", content_type="text/plain")
        for s in range(sources):
            mine = [it for it in self.items if it.source == s]
            server.serve(f"/presse/s{s}/flux.xml", self.feed(mine, f"Journal {s}"),
                         content_type="application/rss+xml")
            for it in mine:
                server.serve(f"/presse/{it.slug}", self.page(it))

    def url(self, item: PressItem) -> str:
        return self.server.url(f"/presse/{item.slug}")

    def page(self, item: PressItem) -> str:
        body = "\n".join(f"<p>{escape(p)}</p>" for p in item.paragraphs)
        return f"""<!DOCTYPE html><html lang="fr"><head><meta charset="utf-8"><title>{escape(item.title)}</title>
<link rel="canonical" href="{self.url(item)}">
<meta property="article:published_time" content="{item.published.isoformat()}"></head>
<body><nav><a href="/">Accueil</a></nav><article><h1>{escape(item.title)}</h1>
<p><strong>{escape(item.lead)}</strong></p>{body}</article><footer>Mentions légales</footer></body></html>"""

    def feed(self, items: list[PressItem], title: str) -> bytes:
        rows = "".join(
            f"<item><title>{escape(it.title)}</title><link>{self.url(it)}</link><guid>{it.slug}</guid>"
            f"<pubDate>{format_datetime(it.published)}</pubDate><description>{escape(it.lead)}</description></item>"
            for it in items)
        return (f'<?xml version="1.0" encoding="utf-8"?><rss version="2.0"><channel><title>{title}</title>'
                f"<link>{self.server.base}/</link><description>Actualité locale</description>{rows}</channel></rss>"
                ).encode()

    def sources_yaml(self, path: Path) -> Path:
        lines = ["defaults: {interval: 1h, allow_private: true}", "sources:"]
        for s in range(self.sources):
            lines += [f"  - id: journal-{s}", f"    name: Journal {s}", "    type: feed",
                      f"    url: {self.server.url(f'/presse/s{s}/flux.xml')}"]
        path.write_text("\n".join(lines) + "\n", encoding="utf-8")
        return path


# --------------------------------------------------------------------------------------------------
# Stopping the server at an exact request


class RequestGate:
    """Holds the k-th request (1-based) until released, and tells the waiting test it arrived.

    Installed as the server's `on_request` hook, so a kill lands at an exact point of the pass: while
    that request is in flight. Later requests pass (the killed process sends none anyway).
    """

    def __init__(self, server: FixtureServer, at: int, hold: bool = True) -> None:
        self.at = at
        self.hold = hold
        self.count = 0
        self.reached = threading.Event()
        self.release = threading.Event()
        self._lock = threading.Lock()
        server.on_request = self

    def __call__(self, request: Request) -> None:
        with self._lock:
            self.count += 1
            mine = self.count == self.at
        if mine:
            self.reached.set()
            if self.hold:
                self.release.wait(10)


# --------------------------------------------------------------------------------------------------
# Real veille processes, cheaply


_CONTEXT: multiprocessing.context.BaseContext | None = None
_PRELOAD = ["veille.cli", "veille.core", "veille.fetch", "veille.parse", "veille.extract", "veille.store",
            "veille.mail", "veille.digest", "tests.hostile"]


def _context() -> multiprocessing.context.BaseContext:
    """A fork server that imported veille once: each CLI process then starts in milliseconds."""
    global _CONTEXT
    if _CONTEXT is None:
        ctx = multiprocessing.get_context("forkserver")
        ctx.set_forkserver_preload(_PRELOAD)
        _CONTEXT = ctx
    return _CONTEXT


def _run_cli(argv: list[str], env: dict[str, str], log: str, file_size_limit: int | None) -> None:
    fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    if file_size_limit is not None:  # a disk that fills up: writes past the limit fail with EFBIG
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (file_size_limit, file_size_limit))
    for name in [n for n in os.environ if n.startswith("VEILLE_")]:
        del os.environ[name]
    os.environ.update(env)
    from veille.cli import main

    main(argv, prog_name="veille")


def cli_process(argv: list[str], env: dict[str, str], log: Path,
                file_size_limit: int | None = None) -> multiprocessing.process.BaseProcess:
    """Start `veille ARGV` in its own process (exactly what `python -m veille.cli ARGV` runs) and return it.

    `p.pid` is the process to SIGKILL, `p.join()` waits, `p.exitcode` is the exit status (-9 when killed).
    Its stdout and stderr go to `log`; VEILLE_* variables are exactly `env`.
    """
    process = _context().Process(target=_run_cli, args=(list(argv), dict(env), str(log), file_size_limit),
                                 daemon=False)
    process.start()
    return process


def run_cli(argv: list[str], env: dict[str, str], log: Path, timeout: float = 120) -> int:
    p = cli_process(argv, env, log)
    p.join(timeout)
    if p.exitcode is None:
        p.kill()
        p.join()
        raise TimeoutError(f"veille {' '.join(argv)} did not finish in {timeout} s; see {log}")
    return p.exitcode


# --------------------------------------------------------------------------------------------------
# Kill points


@dataclass(frozen=True)
class KillPoint:
    """Where a SIGKILL lands.

    `request`: the k-th HTTP request of the pass (1-based), held by the server (`hold`) so the process
    is killed with that request in flight, or answered and the kill sent `delay` seconds later (the
    process is then parsing, extracting or committing). Without `request`, the kill comes `delay`
    seconds after the process started (opening and migrating the archive, syncing sources).
    """

    request: int | None
    hold: bool = True
    delay: float = 0.0
    full_text: bool = False

    @property
    def label(self) -> str:
        mode = "full" if self.full_text else "feeds"
        if self.request is None:
            return f"{mode}:start+{self.delay * 1000:.0f}ms"
        return f"{mode}:req{self.request}:" + ("held" if self.hold else f"+{self.delay * 1000:.0f}ms")


def fetch_kill_points(feeds: int, full_text_requests: int, full_text_points: int = 12) -> list[KillPoint]:
    """A spread of kill points over a feeds-only pass (`feeds` requests) and a full-text pass."""
    points = [KillPoint(None, delay=d) for d in (0.01, 0.04, 0.08, 0.15)]
    for k in range(1, feeds + 1):
        points.append(KillPoint(k))
        # Late kills only where the work left is several times their delay (about 55 ms after the
        # last feed's response, 95 ms after the third-last, on the reference machine).
        delays = ((0.0, 0.005, 0.02, 0.05) if k <= feeds // 2
                  else (0.0, 0.005, 0.02) if k <= feeds - 2 else (0.0, 0.005))
        points += [KillPoint(k, hold=False, delay=d) for d in delays]
    step = max(1, full_text_requests // max(1, full_text_points))
    for i, k in enumerate(range(1, full_text_requests + 1, step)):
        points.append(KillPoint(k, hold=i % 2 == 0, delay=0.0 if i % 2 == 0 else 0.01, full_text=True))
    return points


def kill_at(server: FixtureServer, point: KillPoint, argv: list[str], env: dict[str, str], log: Path,
            timeout: float = 60) -> int:
    """Run `veille ARGV`, SIGKILL it at `point`, and return its exit code (-9 when the kill landed)."""
    gate = RequestGate(server, point.request, point.hold) if point.request is not None else None
    process = cli_process(argv, env, log)
    try:
        if gate is not None:
            if not gate.reached.wait(timeout):
                raise TimeoutError(f"request {point.request} never came; see {log}")
        if point.delay:
            time.sleep(point.delay)
        try:
            os.kill(process.pid, signal.SIGKILL)
        except ProcessLookupError:  # it finished first: the caller sees its real exit code
            pass
    finally:
        if gate is not None:
            server.on_request = None
            gate.release.set()
        process.join(timeout)
    return process.exitcode


@dataclass(frozen=True)
class SendKillPoint:
    """A SIGKILL during `veille digest --send`: at the k-th MAIL, RCPT or DATA the SMTP server sees
    (for DATA, after the server kept the message and before its 250), or `delay` seconds after it."""

    stage: str
    k: int
    delay: float = 0.0

    @property
    def label(self) -> str:
        return f"{self.stage}{self.k}" + (f"+{self.delay * 1000:.0f}ms" if self.delay else "")


def send_kill_points(members: int, delayed_every: int = 1) -> list[SendKillPoint]:
    """Every MAIL, RCPT and DATA of the batch, and 3 ms after RCPT and DATA for every `delayed_every`-th member
    but the last (those land between the 'sending' commit and DATA, or between the 250 and the 'sent'
    commit; after the last member's 250 the process may well have exited within 3 ms)."""
    points = []
    for k in range(1, members + 1):
        points += [SendKillPoint("MAIL", k), SendKillPoint("RCPT", k), SendKillPoint("DATA", k)]
        if (k - 1) % delayed_every == 0 and k < members:
            points += [SendKillPoint("RCPT", k, 0.003), SendKillPoint("DATA", k, 0.003)]
    return points


def kill_sending_at(smtp, point: SendKillPoint, argv: list[str], env: dict[str, str], log: Path,
                    timeout: float = 60) -> int:
    """Run `veille ARGV` against the SmtpServer `smtp` and SIGKILL it at `point`; returns the exit code."""
    from .smtpserver import Script

    started = threading.Event()
    pid: list[int] = []

    def sigkill() -> None:
        try:
            os.kill(pid[0], signal.SIGKILL)
        except ProcessLookupError:  # it finished first: the caller sees its real exit code
            pass

    def kill() -> None:
        started.wait(timeout)
        if point.delay:
            threading.Timer(point.delay, sigkill).start()
        else:
            sigkill()

    smtp.script = Script(hook_at=(point.stage, point.k), hook=kill)
    smtp.counts.clear()
    process = cli_process(argv, env, log)
    pid.append(process.pid)
    started.set()
    process.join(timeout)
    smtp.script = Script()
    if process.exitcode is None:
        process.kill()
        process.join()
        raise TimeoutError(f"veille {' '.join(argv)} hung; see {log}")
    return process.exitcode


# --------------------------------------------------------------------------------------------------
# What a crash must never break


@dataclass
class Snapshot:
    integrity: str
    articles: list[tuple]
    duplicate_urls: int
    duplicate_guids: int
    orphans: int
    extra: dict = field(default_factory=dict)

    @property
    def keys(self) -> set[str]:
        return {a[1] for a in self.articles}


def integrity(db: Path) -> str:
    """`PRAGMA integrity_check` of an archive in whatever state a kill left it (maybe not even migrated)."""
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        return conn.execute("PRAGMA integrity_check").fetchone()[0]
    finally:
        conn.close()


def archive_snapshot(db: Path) -> Snapshot:
    """Integrity, duplicates and the articles (source, canonical URL, title, text source, text digest)."""
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        integrity = conn.execute("PRAGMA integrity_check").fetchone()[0]
        articles = sorted(
            (r[0], r[1], r[2], r[3], hashlib.sha1(r[4].encode()).hexdigest())
            for r in conn.execute("SELECT source_id, canonical_url, title, text_source, text FROM articles"))
        dup_urls = conn.execute("SELECT count(*) FROM (SELECT canonical_url FROM articles GROUP BY "
                                "canonical_url HAVING count(*) > 1)").fetchone()[0]
        dup_guids = conn.execute("SELECT count(*) FROM (SELECT source_id, guid FROM articles WHERE guid IS NOT NULL "
                                 "GROUP BY source_id, guid HAVING count(*) > 1)").fetchone()[0]
        orphans = conn.execute("SELECT (SELECT count(*) FROM article_urls u LEFT JOIN articles a ON a.id = "
                               "u.article_id WHERE a.id IS NULL) + (SELECT count(*) FROM articles a LEFT JOIN "
                               "clusters c ON c.id = a.cluster_id WHERE c.id IS NULL)").fetchone()[0]
        return Snapshot(integrity, articles, dup_urls, dup_guids, orphans)
    finally:
        conn.close()


def vm_hwm_kib(pid: int | str = "self") -> int:
    """Peak resident memory of a process (VmHWM, KiB), as the kernel counts it."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return 0


def walk_text(db: Path) -> Iterator[str]:
    """Every text value of the archive's tables (what an analyst or a digest could ever read)."""
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table' "
                                             "AND name NOT LIKE 'sqlite_%' AND name NOT LIKE '%fts%'")]
        for table in tables:
            for row in conn.execute(f'SELECT * FROM "{table}"'):  # names from sqlite_master, not input
                for value in row:
                    if isinstance(value, str):
                        yield value
    finally:
        conn.close()


# --------------------------------------------------------------------------------------------------
# The whole battery in one pass, every attack at once (test_hostile and bench/robustness)

PUBLIC_STAND_IN = "127.0.0.2"
"""A second loopback address that plays a public news site, so a redirect chain can start outside."""


@contextmanager
def public_stand_in() -> Iterator[None]:
    """Make the outbound guard take PUBLIC_STAND_IN for a public address (and nothing else changes)."""
    import ipaddress

    import veille.fetch

    real = veille.fetch.is_blocked_address

    def judged(ip) -> bool:
        return False if str(ipaddress.ip_address(str(ip))) == PUBLIC_STAND_IN else real(ip)

    veille.fetch.is_blocked_address = judged
    try:
        yield
    finally:
        veille.fetch.is_blocked_address = real


def healthy_feed(server: FixtureServer, prefix: str = "") -> str:
    """Four invented stories with their pages: the healthy source every hostile pass must store."""
    from .corpus import STORIES, page, rss

    items = []
    for story in STORIES:
        server.serve(f"{prefix}/articles/{story.slug}", page(story, server.base))
        items.append((story, server.url(f"{prefix}/articles/{story.slug}")))
    return server.serve(f"{prefix}/sain.xml", rss(items), content_type="application/rss+xml")


PAGE_TRAPS = ("bombe", "goutte", "enorme", "binaire", "pdf", "boucle", "rires")


def page_traps(server: FixtureServer, prefix: str = "/p") -> str:
    """A healthy feed whose article pages attack (bomb, trickle, 50 MB, binary, PDF, loop, entities)."""
    from .corpus import STORIES, Story, rss

    make = {
        "bombe": lambda: server.serve(f"{prefix}/bombe", bomb("gzip", 256), headers={"Content-Encoding": "gzip"}),
        "goutte": lambda: server.handle(f"{prefix}/goutte", trickle(30, "text/html")),
        "enorme": lambda: server.handle(f"{prefix}/enorme", stream(50 * MB, length=False)),
        "binaire": lambda: server.serve(f"{prefix}/binaire", binary(100_000)),
        "pdf": lambda: server.serve(f"{prefix}/pdf", binary(100_000, magic=b"%PDF-1.4\n")),
        "boucle": lambda: redirect_loop(server, f"{prefix}/boucle", f"{prefix}/boucle-2"),
        "rires": lambda: server.serve(f"{prefix}/rires", b"<!DOCTYPE html [" + _laughs().encode()
                                      + b"]><html><body><p>&lol9;</p></body></html>"),
    }
    items = []
    for i, slug in enumerate(PAGE_TRAPS):
        story = STORIES[i % len(STORIES)]
        items.append((Story(f"piege-{slug}", f"{story.title} ({slug})", f"Résumé du flux : {slug}.",
                            story.paragraphs, story.published), make[slug]()))
    return server.serve(f"{prefix}/pieges.xml", rss(items), content_type="application/rss+xml")


@dataclass(frozen=True)
class HostileCase:
    name: str
    source_type: str
    expect: str
    """The failure reason staff see, or "ok" when the content must be read safely."""
    serve: Callable[[FixtureServer, FixtureServer], str]
    """Publishes the attack on (the loopback server, the stand-in public server); returns the source URL."""
    options: str = ""
    guarded: bool = False
    """The source may not reach private addresses: the outbound guard must refuse it."""


_NO_PAGES = "    full_text: false\n"
_SELECTOR = '    link_selector: "h3 a"\n'


def _xml(server: FixtureServer, path: str, body: bytes, **kw) -> str:
    return server.serve(path, body, content_type=kw.pop("content_type", "application/xml"), **kw)


HOSTILE_CASES: tuple[HostileCase, ...] = (
    *(HostileCase(f"bombe-{enc}", "feed", "too_large",
                  lambda s, p, enc=enc: _xml(s, f"/h/bombe-{enc}.xml", bomb(enc, 1024), headers={"Content-Encoding": enc}))
      for enc in ("gzip", "deflate", "br")),
    HostileCase("bombe-sitemap-gz", "sitemap", "bad_content",
                lambda s, p: _xml(s, "/h/plan.xml.gz", gzip_file_bomb(512), content_type="application/gzip")),
    HostileCase("goutte-a-goutte", "feed", "timeout", lambda s, p: s.handle("/h/goutte.xml", trickle(30))),
    HostileCase("redirections-sans-fin", "feed", "too_many_redirects", lambda s, p: endless_redirects(s, "/h/sans-fin")),
    HostileCase("boucle-de-redirections", "feed", "too_many_redirects",
                lambda s, p: redirect_loop(s, "/h/boucle-a", "/h/boucle-b")),
    HostileCase("adresse-de-bouclage", "feed", "blocked_address",
                lambda s, p: _xml(s, "/h/interne.xml", b"<rss/>"), guarded=True),
    HostileCase("nom-de-bouclage", "feed", "blocked_address",
                lambda s, p: _xml(s, "/h/interne-2.xml", b"<rss/>").replace("127.0.0.1", "localhost"), guarded=True),
    HostileCase("redirection-vers-bouclage", "feed", "blocked_address",
                lambda s, p: p.redirect("/h/rebond.xml", s.url("/h/interne-3.xml"), status=302), guarded=True),
    *(HostileCase(f"milliard-de-rires-{kind}", "feed", "ok",
                  lambda s, p, kind=kind: _xml(s, f"/h/rires.{kind}", billion_laughs(kind, s.base)), _NO_PAGES)
      for kind in ("rss", "atom")),
    HostileCase("milliard-de-rires-sitemap", "sitemap", "bad_content",
                lambda s, p: _xml(s, "/h/rires-plan.xml", billion_laughs("sitemap", s.base))),
    *(HostileCase(f"entite-externe-{kind}", "feed", "ok",
                  lambda s, p, kind=kind: _xml(s, f"/h/xxe-{kind}.xml", external_entity(
                      kind, s.base, s.serve("/h/piege.dtd", EVIL_DTD, content_type="application/xml-dtd"))), _NO_PAGES)
      for kind in ("rss", "atom", "rss-external-dtd")),
    HostileCase("entite-externe-sitemap", "sitemap", "bad_content",
                lambda s, p: _xml(s, "/h/xxe-plan.xml", external_entity("sitemap", s.base))),
    HostileCase("flux-de-100000-entrees", "feed", "ok",
                lambda s, p: _xml(s, "/h/fleuve.xml", huge_feed(100_000, s.base)), _NO_PAGES),
    HostileCase("sitemap-de-100000-adresses", "sitemap", "ok",
                lambda s, p: _xml(s, "/h/plan-fleuve.xml", huge_sitemap(100_000, s.base)), _NO_PAGES),
    HostileCase("page-html-de-50-mo", "html", "too_large", lambda s, p: s.handle("/h/enorme", stream(50 * MB)),
                _SELECTOR),
    HostileCase("page-html-de-50-mo-sans-longueur", "html", "too_large",
                lambda s, p: s.handle("/h/enorme-2", stream(50 * MB, length=False)), _SELECTOR),
    *(HostileCase(f"binaire-en-text-html-{kind}", kind, "bad_content",
                  lambda s, p, kind=kind: s.serve(f"/h/binaire-{kind}", binary(300_000), content_type="text/html"),
                  _SELECTOR if kind == "html" else "")
      for kind in ("feed", "html", "sitemap")),
    HostileCase("png-en-text-html", "feed", "bad_content",
                lambda s, p: s.serve("/h/image", binary(300_000, magic=b"\x89PNG\r\n\x1a\n"), content_type="text/html")),
    HostileCase("pages-d-articles-piegees", "feed", "ok", lambda s, p: page_traps(s, "/h/p")),
    HostileCase("balises-et-en-tetes-injectes", "feed", "ok",
                lambda s, p: _xml(s, "/h/cyber.xml", injection_feed(s.base), content_type="application/rss+xml"),
                _NO_PAGES),
)


def battery_sources(path: Path, server: FixtureServer, public: FixtureServer,
                    cases: tuple[HostileCase, ...] = HOSTILE_CASES) -> Path:
    """sources.yaml: the healthy source, then one source per case (guarded ones without allow_private)."""
    lines = ["defaults: {interval: 1h, allow_private: true}", "sources:",
             f"  - id: sain\n    name: Source saine\n    type: feed\n    url: {healthy_feed(server)}"]
    for case in cases:
        lines.append(f"  - id: {case.name}\n    name: Attaque {case.name}\n    type: {case.source_type}\n"
                     f"    url: {case.serve(server, public)}\n" + case.options.rstrip("\n")
                     + ("\n    allow_private: false" if case.guarded else ""))
    path.write_text("\n".join(line.rstrip("\n") for line in lines) + "\n", encoding="utf-8")
    return path


def battery_verdicts(result, db: Path, server: FixtureServer,
                     cases: tuple[HostileCase, ...] = HOSTILE_CASES) -> dict[str, str | None]:
    """For each case: None when it was survived, else what went wrong. `result` is the pass's PassResult."""
    from veille.parse import MAX_ENTRIES

    by_id = {r.source_id: r for r in result.sources}
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    conn.row_factory = sqlite3.Row
    try:
        check = conn.execute("PRAGMA integrity_check").fetchone()[0]
        healthy = by_id.get("sain")
        leaked = [v[:60] for v in walk_text(db) if any(m in v for m in PASSWD_MARKERS)]
        verdicts: dict[str, str | None] = {}
        for case in cases:
            r = by_id.get(case.name)
            rows = conn.execute("SELECT title, summary, text, text_source, guid FROM articles WHERE source_id = ?",
                                (case.name,)).fetchall()
            problem = None
            if check != "ok":
                problem = f"integrity_check: {check}"
            elif healthy is None or (healthy.status, healthy.new) != ("ok", 4):
                problem = f"the healthy source suffered: {healthy}"
            elif r is None:
                problem = "no result"
            elif case.expect != "ok" and (r.status, r.reason) != ("failed", case.expect):
                problem = f"expected failed/{case.expect}, got {r.status}/{r.reason}: {r.error}"
            elif case.expect != "ok" and not (r.error and r.hint):
                problem = "the failure does not say what to do"
            elif case.expect == "ok" and r.status != "ok":
                problem = f"expected ok, got {r.status}/{r.reason}: {r.error}"
            elif leaked:
                problem = f"/etc/passwd leaked: {leaked[0]!r}"
            elif any(len(row[k]) > 50_000 for row in rows for k in ("title", "summary", "text")):
                problem = "an oversized field was stored (entity expansion?)"
            elif "dtd" in case.name and server.hits("/h/piege.dtd"):
                problem = "a parser fetched the external DTD"
            elif "100000" in case.name and r.new != MAX_ENTRIES:
                problem = f"{r.new} stored, expected the cap of {MAX_ENTRIES}"
            elif case.name == "pages-d-articles-piegees" and (
                    len(rows) != len(PAGE_TRAPS) or any(row["text_source"] != "feed" for row in rows)):
                problem = f"entries lost or page text kept: {[(row['guid'], row['text_source']) for row in rows]}"
            elif case.name.startswith("balises") and (len(rows) != INJECTION_STORED or any(
                    m in row[k] for row in rows for k in ("title", "summary", "text")
                    for m in ("<script", "<img", "onerror="))):
                problem = "markup stored as markup, or javascript:/data: links kept"
            verdicts[case.name] = problem
        return verdicts
    finally:
        conn.close()


__all__ = [
    "bomb", "gzip_file_bomb", "trickle", "endless_redirects", "redirect_loop", "stream", "binary",
    "billion_laughs", "external_entity", "EVIL_DTD", "PASSWD_MARKERS", "huge_feed", "huge_sitemap",
    "injection_feed", "INJECTED_MARKERS", "HEADER_MARKERS", "INJECTION_STORED", "PressCorpus", "PressItem", "press_items",
    "integrity", "RequestGate", "KillPoint", "fetch_kill_points", "kill_at", "SendKillPoint", "send_kill_points",
    "kill_sending_at", "cli_process", "run_cli", "archive_snapshot",
    "Snapshot", "vm_hwm_kib", "walk_text", "injection_problems", "PUBLIC_STAND_IN", "public_stand_in",
    "healthy_feed", "page_traps", "PAGE_TRAPS", "HostileCase", "HOSTILE_CASES", "battery_sources", "battery_verdicts",
]
