"""Fetch stage: polite, bounded, guarded HTTP GETs on one shared httpx client.

Why it is built this way:
- One httpx transport per pass with a pool sized to `concurrency`, so keep-alive connections are reused.
  Requests go straight to the transport: the client layer would only add cookie-jar bookkeeping (we keep
  no cookies: fetches are stateless), auth and redirect machinery we do not use, at a cost per request.
- Limits are layered per host (slots + a gate spacing request starts) before the global semaphore, so a
  slow or throttled host never holds global slots while it waits its turn.
- `request_deadline` bounds each request's network exchange (asyncio.timeout), not its wait in the
  queues: a source queued behind thirty articles of a polite host must not time out for it.
- Redirects are followed by hand: every hop goes through the outbound guard, robots.txt and the host's
  limits, and we learn whether the whole chain was permanent (the pipeline then stores the new URL).
- Bodies are decoded here, not by httpx, with decompressors whose OUTPUT is bounded per call: httpx's own
  decoders inflate a whole network chunk at once, and 64 KiB of brotli can expand to gigabytes.
- Connections are asyncio's own streams (`_Stream`), not httpcore's default anyio backend, which cost
  more CPU per request than the rest of it.
- The outbound guard checks resolved addresses before connecting, and the transport checks the peer of
  every new connection before a byte is sent (DNS rebinding). Proxies are deliberately not supported: the
  guard must see the real peer.
"""

from __future__ import annotations

import asyncio
import contextvars
import ipaddress
import math
import os
import random
import select
import socket
import ssl
import time
import zlib
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from email.utils import parsedate_to_datetime
from importlib import metadata
from typing import Any, AsyncIterator, Iterator
from urllib.parse import urljoin
from urllib.robotparser import RobotFileParser

import brotli
import httpcore
import httpx

from .config import Settings, parse_bool
from .errors import ConfigError, FetchError
from .types import Response

__all__ = [
    "REASONS", "Fetcher", "next_attempt", "user_agent", "is_blocked_address", "parse_retry_after",
    "classify_exception",
]

# --------------------------------------------------------------------------------------------------
# Failure reasons: the one place that names what went wrong and what staff can do about it.

REASONS: dict[str, str] = {
    "timeout": "the site did not answer in time; usually temporary, veille retries later. If it lasts, "
               "open the URL in a browser",
    "tls": "the site's HTTPS certificate or TLS setup was refused; check http:// vs https:// in the URL "
           "or tell the publisher their certificate is invalid",
    "dns": "the domain name does not resolve; check the URL for typos, the site may have closed or moved",
    "connection": "the connection was refused or cut; usually temporary. If it lasts, the site may be down "
                  "or have moved",
    "not_found": "the page does not exist (404); find the feed's or page's new address on the site and "
                 "update sources.yaml",
    "gone": "the publisher removed this resource for good (410), so the source is disabled; find a "
            "replacement and update sources.yaml",
    "rate_limited": "the site asks us to slow down (429); veille waits as asked. If it persists, lengthen "
                    "the source's interval",
    "server_error": "the site itself failed (5xx); usually temporary, veille retries with growing delays",
    "forbidden": "access refused (403), often by an anti-bot protection (Cloudflare, DataDome...); ask the "
                 "publisher to allow the 'veille' User-Agent, or use their RSS feed instead",
    "client_error": "the site refused the request (4xx); open the URL in a browser, it may need a login "
                    "or a different address",
    "too_large": "the answer is larger than max_body_bytes; check that the URL is a feed or an article, "
                 "not a file, and raise max_body_bytes only if it is legitimate",
    "too_many_redirects": "the URL redirects in a loop or too many times; open it in a browser and put the "
                          "final address in sources.yaml",
    "bad_redirect": "the site redirects without a usable http(s) address; open the URL in a browser and put "
                    "the final address in sources.yaml",
    "blocked_address": "the URL leads to a private, local or reserved network address, refused for safety; "
                       "if the source really is internal, set allow_private: true on it",
    "robots": "the site's robots.txt forbids veille to fetch this page; keep feed excerpts "
              "(full_text: false) or ask the publisher for permission",
    "bad_content": "the answer could not be decoded (broken or unsupported compression); tell the publisher, "
                   "veille retries later",
    "bad_url": "the URL is not a valid http(s) address; fix it in sources.yaml",
}

_STATUS_REASONS = {403: "forbidden", 404: "not_found", 410: "gone", 429: "rate_limited"}
_REDIRECTS = frozenset({301, 302, 303, 307, 308})
_PERMANENT = frozenset({301, 308})


def _status_reason(status: int) -> str | None:
    """The reason for a final HTTP status, or None when it is a success."""
    if status < 400:
        return None
    return _STATUS_REASONS.get(status) or ("server_error" if status >= 500 else "client_error")


def _chain(exc: BaseException) -> Iterator[BaseException]:
    """The exception, its causes and contexts, and the members of exception groups."""
    seen: set[int] = set()
    stack = [exc]
    while stack:
        e = stack.pop()
        if id(e) in seen:
            continue
        seen.add(id(e))
        yield e
        if isinstance(e, BaseExceptionGroup):
            stack.extend(e.exceptions)
        stack.extend(x for x in (e.__cause__, e.__context__) if x is not None)


def classify_exception(exc: BaseException) -> str:
    """Map a network-level exception (httpx, OSError, deadline) to a key of `REASONS`."""
    if isinstance(exc, (httpx.TimeoutException, TimeoutError)):
        return "timeout"
    if isinstance(exc, (httpx.UnsupportedProtocol, httpx.InvalidURL)):
        return "bad_url"
    if isinstance(exc, httpx.DecodingError):
        return "bad_content"
    for e in _chain(exc):
        if isinstance(e, ssl.SSLError):
            return "tls"
        if isinstance(e, socket.gaierror):
            return "dns"
        if isinstance(e, (httpx.TimeoutException, httpcore.TimeoutException, TimeoutError)):
            return "timeout"
    return "connection"


def _detail(exc: BaseException) -> str:
    """The most telling text of an exception chain: the OS's words (e.g. 'Connection refused') if any."""
    for e in _chain(exc):
        if isinstance(e, OSError) and e.strerror and not isinstance(e, ssl.SSLError):
            return e.strerror
    return str(exc) or type(exc).__name__


_NETWORK_MESSAGES = {
    "timeout": "no answer in time",
    "tls": "TLS handshake failed",
    "dns": "the host name does not resolve",
    "connection": "connection failed",
    "bad_url": "invalid URL",
    "bad_content": "undecodable answer",
}

# --------------------------------------------------------------------------------------------------
# Identity and retry policy

try:
    _VERSION = metadata.version("veille")
except metadata.PackageNotFoundError:  # running from a source tree that was never installed
    _VERSION = "0"

ROBOTS_TOKEN = "veille"
_FIRST_BACKOFF = timedelta(minutes=5)
_MAX_RETRY_AFTER = timedelta(days=7)
"""A Retry-After beyond a week is a publisher asking us to stop; the failing-source report covers that."""


def user_agent(settings: Settings) -> str:
    """Descriptive User-Agent: publishers who see us in their logs can find and reach the operator."""
    return f"{ROBOTS_TOKEN}/{_VERSION} (+{settings.contact})"


_default_user_agent = user_agent


def parse_retry_after(value: str | None, now: datetime | None = None) -> float | None:
    """Seconds to wait from a Retry-After header (delta-seconds or HTTP-date); None when absent or unreadable."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return max(0.0, (when - (now or datetime.now(timezone.utc))).total_seconds())


def next_attempt(failures: int, now: datetime, settings: Settings, retry_after: float | None = None) -> datetime:
    """When to try a failing source again: 5 min after the first failure, doubling, capped by max_backoff.

    Jitter only shortens the wait (by up to 20 %), so the cap holds and sources that failed together
    (one publisher down) do not all come back in the same second. A longer Retry-After wins.
    """
    delay = 0.0
    if failures >= 1:
        base = _FIRST_BACKOFF.total_seconds() * 2.0 ** min(failures - 1, 40)
        delay = min(base, settings.max_backoff.total_seconds()) * random.uniform(0.8, 1.0)
    if retry_after is not None and retry_after > delay:
        delay = min(retry_after, _MAX_RETRY_AFTER.total_seconds())
    return now + timedelta(seconds=delay)


# --------------------------------------------------------------------------------------------------
# Outbound guard

_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_ALLOWED: contextvars.ContextVar[bool] = contextvars.ContextVar("veille_fetch_allow_private", default=False)
"""Set for the duration of one `fetch(allow_private=True)`, so the transport's peer check lets it through."""


def is_blocked_address(ip: str | ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    """True for every address a public news site cannot legitimately live on.

    IPv6 forms that embed an IPv4 address (mapped, 6to4, Teredo, NAT64) are judged on that IPv4 address,
    otherwise `::ffff:127.0.0.1` would pass as a "global" IPv6 address.
    """
    if isinstance(ip, str):
        ip = ipaddress.ip_address(ip)
    if isinstance(ip, ipaddress.IPv6Address):
        embedded = ip.ipv4_mapped or ip.sixtofour or (ip.teredo[1] if ip.teredo else None)
        if embedded is None and ip in _NAT64:
            embedded = ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
        if embedded is not None:
            return is_blocked_address(embedded)
    return (
        ip.is_private or ip.is_loopback or ip.is_link_local or ip.is_reserved or ip.is_multicast
        or ip.is_unspecified or not ip.is_global
    )


class _Blocked(Exception):
    """Raised by the guard (before fetch or at connect time); turned into FetchError('blocked_address')."""

    def __init__(self, host: str, ip: str) -> None:
        self.host = host
        self.ip = ip
        super().__init__(f"{host} resolves to {ip}")


class _Stream(httpcore.AsyncNetworkStream):
    """One connection for httpcore on asyncio's own streams.

    httpcore's default backend goes through anyio, whose cancel scope around every read and write
    (current task lookups, scope stacks) cost more than the rest of a keep-alive request: with this
    stream a 304 costs 25 % less CPU and a warm pass of 1,000 feeds 0.15-0.2 s less (bench/ingest.py's
    corpus, old and new code run one after the other). Timeouts and
    errors are httpcore's, raised from the original exception, so `classify_exception` still finds
    the OSError or SSLError behind them.
    """

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader, self._writer = reader, writer
        self._poll: Any = None
        """A poll object on the socket, made at the first `is_readable` check (httpcore asks before
        every reuse of a kept-alive connection, often several times)."""

    async def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        try:
            async with asyncio.timeout(timeout):
                return await self._reader.read(max_bytes)
        except TimeoutError as e:
            raise httpcore.ReadTimeout(f"no data for {timeout:g} s") from e
        except OSError as e:
            raise httpcore.ReadError(str(e) or type(e).__name__) from e

    async def write(self, buffer: bytes, timeout: float | None = None) -> None:
        if not buffer:
            return
        try:
            async with asyncio.timeout(timeout):
                self._writer.write(buffer)
                await self._writer.drain()
        except TimeoutError as e:
            raise httpcore.WriteTimeout(f"could not send for {timeout:g} s") from e
        except OSError as e:
            raise httpcore.WriteError(str(e) or type(e).__name__) from e

    async def aclose(self) -> None:
        self._writer.close()

    async def start_tls(self, ssl_context: ssl.SSLContext, server_hostname: str | None = None,
                        timeout: float | None = None) -> httpcore.AsyncNetworkStream:
        if isinstance(ssl_context, _DeferredTrust):
            ssl_context = ssl_context.trusted()
        try:
            async with asyncio.timeout(timeout):
                await self._writer.start_tls(ssl_context, server_hostname=server_hostname)
        except BaseException as e:
            self._writer.close()
            if isinstance(e, TimeoutError):
                raise httpcore.ConnectTimeout(f"no TLS handshake within {timeout:g} s") from e
            if isinstance(e, OSError):  # ssl.SSLError included
                raise httpcore.ConnectError(str(e) or type(e).__name__) from e
            raise
        return self

    def get_extra_info(self, info: str) -> Any:
        if info == "is_readable":  # an idle keep-alive connection that the server closed, or that got stray bytes
            sock = self._writer.get_extra_info("socket")
            if self._reader.at_eof() or sock is None or sock.fileno() < 0:
                return True
            if self._poll is None:
                self._poll = select.poll()
                self._poll.register(sock, select.POLLIN)
            return bool(self._poll.poll(0))
        key = _EXTRA_INFO.get(info)
        return self._writer.get_extra_info(key) if key else None


_EXTRA_INFO = {"ssl_object": "ssl_object", "client_addr": "sockname", "server_addr": "peername", "socket": "socket"}
"""httpcore's names for a connection's facts -> asyncio's."""


class _GuardedBackend(httpcore.AsyncNetworkBackend):
    """asyncio connections (`_Stream`) whose peer is checked before TLS or the request is sent (DNS rebinding)."""

    def __init__(self, enforce: bool) -> None:
        self._enforce = enforce

    async def connect_tcp(self, host: str, port: int, timeout: float | None = None,
                          local_address: str | None = None, socket_options: Any = None) -> httpcore.AsyncNetworkStream:
        try:
            async with asyncio.timeout(timeout):
                reader, writer = await asyncio.open_connection(
                    host, port, local_addr=(local_address, 0) if local_address else None, happy_eyeballs_delay=0.25)
        except TimeoutError as e:
            raise httpcore.ConnectTimeout(f"no connection within {timeout:g} s") from e
        except OSError as e:  # socket.gaierror included
            raise httpcore.ConnectError(str(e) or type(e).__name__) from e
        stream = _Stream(reader, writer)
        sock = writer.get_extra_info("socket")
        for option in socket_options or ():
            sock.setsockopt(*option)
        if self._enforce and not _ALLOWED.get():
            peer = writer.get_extra_info("peername")
            if not peer or is_blocked_address(peer[0]):
                await stream.aclose()
                raise _Blocked(host, str(peer[0]) if peer else "an unknown address")
        return stream

    async def connect_unix_socket(self, path: str, timeout: float | None = None,
                                  socket_options: Any = None) -> httpcore.AsyncNetworkStream:
        raise httpcore.ConnectError("unix sockets are not used by veille")

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


class _DeferredTrust(ssl.SSLContext):
    """What the connection pool holds instead of a TLS context: `_Stream.start_tls` swaps it for
    `trusted()`, httpx's default context (certifi's bundle, or SSL_CERT_FILE/SSL_CERT_DIR), made at
    the first handshake. Loading the bundle took 25 ms before every pass's first request, https or
    not. Used as is, it trusts no certificate: a handshake would fail, never pass unchecked."""

    _trusted: ssl.SSLContext | None = None

    def trusted(self) -> ssl.SSLContext:
        if self._trusted is None:
            context = httpx.create_ssl_context()
            context.set_alpn_protocols(["http/1.1"])
            self._trusted = context
        return self._trusted


class _Transport(httpx.AsyncHTTPTransport):
    """httpx's transport with our network backend (httpx has no public parameter for it)."""

    def __init__(self, limits: httpx.Limits, backend: httpcore.AsyncNetworkBackend) -> None:
        context = _DeferredTrust(ssl.PROTOCOL_TLS_CLIENT)
        super().__init__(verify=context, limits=limits, trust_env=False)
        self._pool = httpcore.AsyncConnectionPool(
            ssl_context=context,
            max_connections=limits.max_connections,
            max_keepalive_connections=limits.max_keepalive_connections,
            keepalive_expiry=limits.keepalive_expiry,
            network_backend=backend,
        )


# --------------------------------------------------------------------------------------------------
# Bounded decoders

_ACCEPT = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"
_PIECE = 64 * 1024
"""Largest output of one decompression call: what a bomb can make us allocate before the size check."""


class _Identity:
    def decode(self, data: bytes) -> Iterator[bytes]:
        yield data

    def flush(self) -> Iterator[bytes]:
        return iter(())


class _Zlib:
    """gzip (possibly multi-member) or deflate (zlib-wrapped, or raw as some servers send it)."""

    def __init__(self, gzip: bool) -> None:
        self._gzip = gzip
        self._wbits = 16 + zlib.MAX_WBITS if gzip else zlib.MAX_WBITS
        self._d = zlib.decompressobj(self._wbits)
        self._started = False

    def decode(self, data: bytes) -> Iterator[bytes]:
        while data:
            try:
                out = self._d.decompress(data, _PIECE)
            except zlib.error:
                if self._gzip or self._started:
                    raise
                self._wbits = -zlib.MAX_WBITS
                self._d = zlib.decompressobj(self._wbits)
                out = self._d.decompress(data, _PIECE)
            self._started = True
            if out:
                yield out
            if self._d.eof:
                data = self._d.unused_data if self._gzip else b""
                if data:
                    self._d = zlib.decompressobj(self._wbits)
            else:
                data = self._d.unconsumed_tail

    def flush(self) -> Iterator[bytes]:
        out = self._d.flush()
        if out:
            yield out


class _Brotli:
    def __init__(self) -> None:
        self._d = brotli.Decompressor()

    def decode(self, data: bytes) -> Iterator[bytes]:
        out = self._d.process(data, output_buffer_limit=_PIECE)
        if out:
            yield out
        while not self._d.can_accept_more_data():
            out = self._d.process(b"", output_buffer_limit=_PIECE)
            if not out:
                break
            yield out

    def flush(self) -> Iterator[bytes]:
        return iter(())


def _decoder(content_encoding: str | None) -> _Identity | _Zlib | _Brotli | None:
    """The decoder for a Content-Encoding, or None when unsupported (we only advertise gzip, deflate, br)."""
    codings = [c.strip().lower() for c in (content_encoding or "").split(",") if c.strip()]
    codings = [c for c in codings if c != "identity"]
    if not codings:
        return _Identity()
    if len(codings) > 1:
        return None
    coding = codings[0]
    if coding in ("gzip", "x-gzip"):
        return _Zlib(gzip=True)
    if coding == "deflate":
        return _Zlib(gzip=False)
    if coding == "br":
        return _Brotli()
    return None


def _content_type(value: str | None) -> tuple[str, str | None]:
    """Media type without parameters (lower case) and the charset parameter, if any."""
    if not value:
        return "", None
    media, _, params = value.partition(";")
    charset = None
    for param in params.split(";"):
        key, _, val = param.partition("=")
        if key.strip().lower() == "charset":
            charset = val.strip().strip("\"'") or None
    return media.strip().lower(), charset


# --------------------------------------------------------------------------------------------------
# The fetcher


@dataclass
class _Host:
    slots: asyncio.Semaphore
    gate: asyncio.Lock = field(default_factory=asyncio.Lock)
    last_start: float = -math.inf


@dataclass
class _Answer:
    status: int
    headers: httpx.Headers
    content: bytes


class Fetcher:
    """`async with Fetcher(settings) as f: r = await f.fetch(url, etag=...)` -- one per fetch pass."""

    def __init__(self, settings: Settings, *, user_agent: str | None = None) -> None:
        self.settings = settings
        self.user_agent = user_agent or _default_user_agent(settings)
        self.allow_private = settings.allow_private or _env_allows_private()
        limits = httpx.Limits(max_connections=settings.concurrency,
                              max_keepalive_connections=settings.concurrency, keepalive_expiry=15.0)
        self._transport = _Transport(limits, _GuardedBackend(enforce=not self.allow_private))
        self._headers = {
            "User-Agent": self.user_agent,
            "Accept-Encoding": "gzip, deflate, br",
            "Accept-Language": "fr-FR,fr;q=0.9,en;q=0.5",
        }
        self._timeout = httpx.Timeout(connect=settings.connect_timeout, read=settings.read_timeout,
                                      write=settings.read_timeout, pool=settings.request_deadline).as_dict()
        self._global = asyncio.Semaphore(settings.concurrency)
        self._hosts: dict[str, _Host] = {}
        self._public_hosts: set[str] = set()
        self._robots: dict[str, RobotFileParser | None] = {}
        self._robots_locks: dict[str, asyncio.Lock] = {}

    async def __aenter__(self) -> "Fetcher":
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._transport.aclose()

    # -- public API -------------------------------------------------------------------------------

    async def fetch(self, url: str, *, source_id: str | None = None, etag: str | None = None,
                    last_modified: str | None = None, allow_private: bool = False, robots: bool = False,
                    accept: str | None = None) -> Response:
        """GET `url`, following redirects; raise `FetchError` with a `REASONS` key on any failure.

        `etag`/`last_modified` make it conditional (a 304 gives `not_modified=True`); `robots=True` is for
        article pages, which must be allowed by the site's robots.txt; `allow_private` is the source's
        own permission to reach a private address.
        """
        token = _ALLOWED.set(True) if allow_private and not self.allow_private else None
        try:
            return await self._fetch(url, source_id, etag, last_modified, allow_private, robots, accept)
        finally:
            if token is not None:
                _ALLOWED.reset(token)

    async def allowed_by_robots(self, url: str, *, allow_private: bool = False) -> bool:
        """Whether robots.txt lets the 'veille' token fetch `url`; a missing or unreachable robots.txt allows."""
        try:
            parsed = httpx.URL(url)
        except httpx.InvalidURL:
            return True
        key = f"{parsed.scheme}://{parsed.netloc.decode('ascii')}"
        if key not in self._robots:
            lock = self._robots_locks.setdefault(key, asyncio.Lock())
            async with lock:
                if key not in self._robots:
                    self._robots[key] = await self._load_robots(key, allow_private)
        parser = self._robots[key]
        return parser is None or parser.can_fetch(ROBOTS_TOKEN, url)

    # -- internals --------------------------------------------------------------------------------

    def _error(self, reason: str, source_id: str | None, url: str, message: str, *,
               status: int | None = None, retry_after: float | None = None) -> FetchError:
        return FetchError(source_id, url, reason, message, REASONS[reason], status=status, retry_after=retry_after)

    async def _fetch(self, url: str, source_id: str | None, etag: str | None, last_modified: str | None,
                     allow_private: bool, robots: bool, accept: str | None) -> Response:
        headers = {**self._headers, "Accept": accept or _ACCEPT}
        if etag:
            headers["If-None-Match"] = etag
        if last_modified:
            headers["If-Modified-Since"] = last_modified
        guarded = not (self.allow_private or allow_private)
        current, chain, elapsed = url, [url], 0.0
        permanent = True
        for _hop in range(self.settings.max_redirects + 1):
            where = "" if current == url else f" (redirected to <{current}>)"
            try:
                target = httpx.URL(current)
            except httpx.InvalidURL as e:
                raise self._error("bad_url", source_id, url, f"invalid URL{where}: {e}") from e
            if target.scheme not in ("http", "https") or not target.host:
                reason = "bad_url" if current == url else "bad_redirect"
                raise self._error(reason, source_id, url, f"only absolute http(s) URLs are fetched{where}")
            host = target.raw_host.decode("ascii").lower()
            if guarded:
                await self._guard(host, target.port or (443 if target.scheme == "https" else 80), source_id, url, where)
            if robots and not await self.allowed_by_robots(current, allow_private=allow_private):
                raise self._error("robots", source_id, url, f"robots.txt disallows this page{where}")
            async with self._slot(host):
                started = time.perf_counter()
                try:
                    async with asyncio.timeout(self.settings.request_deadline):
                        answer = await self._exchange(target, headers, source_id, url, where)
                except FetchError:
                    raise
                except TimeoutError as e:
                    raise self._error("timeout", source_id, url, f"no complete answer within the "
                                      f"{self.settings.request_deadline:g} s deadline{where}") from e
                except _Blocked as e:
                    raise self._error("blocked_address", source_id, url, f"refused to connect: {e}{where}") from e
                except (httpx.HTTPError, httpcore.NetworkError, OSError) as e:
                    reason = classify_exception(e)
                    raise self._error(reason, source_id, url,
                                      f"{_NETWORK_MESSAGES[reason]}{where}: {_detail(e)}") from e
                elapsed += time.perf_counter() - started
            status = answer.status
            if status in _REDIRECTS:
                location = answer.headers.get("location")
                if not location:
                    raise self._error("bad_redirect", source_id, url,
                                      f"HTTP {status} without a Location header{where}", status=status)
                permanent = permanent and status in _PERMANENT
                current = urljoin(current, location.strip())
                chain.append(current)
                continue
            if status == 304:
                return Response(
                    url=current, requested_url=url, status=304, not_modified=True,
                    etag=answer.headers.get("etag") or etag,
                    last_modified=answer.headers.get("last-modified") or last_modified,
                    permanent_redirect=current if permanent and current != url else None, elapsed=elapsed,
                )
            reason = _status_reason(status)
            if reason is not None:
                retry_after = (parse_retry_after(answer.headers.get("retry-after"))
                               if status in (429, 503) else None)
                phrase = httpx.codes.get_reason_phrase(status)
                raise self._error(reason, source_id, url, f"HTTP {status} {phrase}{where}".rstrip(),
                                  status=status, retry_after=retry_after)
            media, charset = _content_type(answer.headers.get("content-type"))
            return Response(
                url=current, requested_url=url, status=status, content=answer.content, content_type=media,
                charset=charset, etag=answer.headers.get("etag"), last_modified=answer.headers.get("last-modified"),
                permanent_redirect=current if permanent and current != url else None, elapsed=elapsed,
            )
        repeat = next((i for i, u in enumerate(chain) if u in chain[:i]), None)
        if repeat is not None:
            what = "a redirect loop: " + " -> ".join(chain[: repeat + 1])
        else:
            what = f"more than {self.settings.max_redirects} redirects: {chain[0]} -> ... -> {chain[-1]}"
        raise self._error("too_many_redirects", source_id, url, what)

    async def _exchange(self, target: httpx.URL, headers: dict[str, str], source_id: str | None,
                        url: str, where: str) -> _Answer:
        """One request/response; only 2xx bodies are kept, others are drained so the connection is reused."""
        request = httpx.Request("GET", target, headers=headers, extensions={"timeout": self._timeout})
        response = await self._transport.handle_async_request(request)
        try:
            if 200 <= response.status_code < 300:
                content = await self._read_body(response, source_id, url, where)
            else:
                content = b""
                await _drain(response)
            return _Answer(response.status_code, response.headers, content)
        finally:
            await response.aclose()

    async def _read_body(self, response: httpx.Response, source_id: str | None, url: str, where: str) -> bytes:
        limit = self.settings.max_body_bytes
        too_large = f"the answer is larger than {limit:,} bytes{where}"
        length = response.headers.get("content-length", "")
        if length.strip().isdigit() and int(length) > limit:
            raise self._error("too_large", source_id, url, f"{too_large} (Content-Length: {int(length):,})",
                              status=response.status_code)
        encoding = response.headers.get("content-encoding")
        decoder = _decoder(encoding)
        if decoder is None:
            raise self._error("bad_content", source_id, url, f"unsupported Content-Encoding {encoding!r}{where}",
                              status=response.status_code)
        parts: list[bytes] = []
        size = 0
        try:
            async for chunk in response.aiter_raw():
                for piece in decoder.decode(chunk):
                    size += len(piece)
                    if size > limit:
                        raise self._error("too_large", source_id, url, too_large, status=response.status_code)
                    parts.append(piece)
            for piece in decoder.flush():
                size += len(piece)
                if size > limit:
                    raise self._error("too_large", source_id, url, too_large, status=response.status_code)
                parts.append(piece)
        except (zlib.error, brotli.error) as e:
            raise self._error("bad_content", source_id, url, f"cannot decode the {encoding} body{where}: {e}",
                              status=response.status_code) from e
        return b"".join(parts)

    async def _guard(self, host: str, port: int, source_id: str | None, url: str, where: str) -> None:
        """Refuse a host that is, or resolves to, a non-public address; no connection is made before."""
        if host in self._public_hosts:
            return
        try:
            addresses = [ipaddress.ip_address(host)]
        except ValueError:
            try:
                infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
            except socket.gaierror as e:
                raise self._error("dns", source_id, url, f"cannot resolve {host}{where}: {e.strerror}") from e
            except UnicodeError as e:
                raise self._error("bad_url", source_id, url, f"invalid host name {host!r}{where}") from e
            addresses = [ipaddress.ip_address(info[4][0]) for info in infos]
        for address in addresses:
            if is_blocked_address(address):
                raise self._error("blocked_address", source_id, url,
                                  f"{host} is a non-public address ({address}){where}")
        self._public_hosts.add(host)

    @asynccontextmanager
    async def _slot(self, host: str) -> AsyncIterator[None]:
        """Per-host slot, then (if politeness applies) the host's turn, then a global slot."""
        state = self._hosts.get(host)
        if state is None:
            state = self._hosts[host] = _Host(asyncio.Semaphore(self.settings.per_host_concurrency))
        delay = self.settings.politeness_delay
        async with state.slots:
            if delay > 0:
                async with state.gate:
                    loop = asyncio.get_running_loop()
                    wait = state.last_start + delay - loop.time()
                    if wait > 0:
                        await asyncio.sleep(wait)
                    await self._global.acquire()
                    state.last_start = loop.time()
            else:
                await self._global.acquire()
            try:
                yield
            finally:
                self._global.release()

    async def _load_robots(self, key: str, allow_private: bool) -> RobotFileParser | None:
        """The parsed robots.txt of an origin, or None (= everything allowed) when absent or unreachable."""
        try:
            response = await self.fetch(f"{key}/robots.txt", allow_private=allow_private, accept="text/plain")
        except FetchError:
            return None
        try:
            text = response.content.decode(response.charset or "utf-8", errors="replace")
        except LookupError:
            text = response.content.decode("utf-8", errors="replace")
        parser = RobotFileParser()
        parser.parse(text.splitlines())
        return parser


async def _drain(response: httpx.Response) -> None:
    """Read a small unwanted body to its end so HTTP/1.1 can reuse the connection; give up on big ones."""
    drained = 0
    try:
        async for chunk in response.aiter_raw():
            drained += len(chunk)
            if drained > _PIECE:
                return
    except httpx.HTTPError:
        pass


def _env_allows_private() -> bool:
    value = os.environ.get("VEILLE_ALLOW_PRIVATE")
    if value is None:
        return False
    try:
        return parse_bool(value)
    except ValueError as e:
        raise ConfigError("environment variable VEILLE_ALLOW_PRIVATE", None, "allow_private", str(e)) from None
