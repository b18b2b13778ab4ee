"""A real HTTP server on 127.0.0.1 serving fixtures, for tests and benchmarks.

Routes are static (`serve(path, body, ...)`) with ETag/Last-Modified support, or callables that get the
request handler and write whatever they like (trickling bytes, bombs, resets). Every request is logged
so tests can assert what was asked (If-None-Match, User-Agent, how many hits).
"""

from __future__ import annotations

import hashlib
import ssl
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable


@dataclass
class Route:
    body: bytes = b""
    status: int = 200
    content_type: str = "text/html; charset=utf-8"
    headers: dict[str, str] = field(default_factory=dict)
    etag: bool = True
    last_modified: str | None = "Mon, 23 Nov 2026 08:00:00 GMT"
    handler: Callable[["Handler"], None] | None = None


@dataclass
class Request:
    method: str
    path: str
    headers: dict[str, str]


class Handler(BaseHTTPRequestHandler):
    server: "_Server"
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: object) -> None:
        pass

    def setup(self) -> None:
        super().setup()
        self.server.owner.connections.append(self.client_address)

    def do_HEAD(self) -> None:
        self.do_GET(head=True)

    def do_GET(self, head: bool = False) -> None:
        owner = self.server.owner
        path = self.path
        owner.requests.append(Request(self.command, path, {k.lower(): v for k, v in self.headers.items()}))
        if owner.on_request is not None:  # tests that must act at an exact request (kill points)
            owner.on_request(owner.requests[-1])
        route = owner.routes.get(path) or owner.routes.get(path.split("?", 1)[0])
        if route is None:
            self.send_simple(404, b"not found")
            return
        if route.handler is not None:
            route.handler(self)
            return
        tag = '"' + hashlib.sha1(route.body).hexdigest()[:16] + '"' if route.etag else None
        if route.status == 200 and (
            (tag and self.headers.get("If-None-Match") == tag)
            or (not tag and route.last_modified and self.headers.get("If-Modified-Since") == route.last_modified)
        ):
            self.send_response(304)
            if tag:
                self.send_header("ETag", tag)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        self.send_response(route.status)
        self.send_header("Content-Type", route.content_type)
        if tag:
            self.send_header("ETag", tag)
        if route.last_modified:
            self.send_header("Last-Modified", route.last_modified)
        for key, value in route.headers.items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(route.body)))
        self.end_headers()
        if not head:
            self.wfile.write(route.body)

    def send_simple(self, status: int, body: bytes = b"", headers: dict[str, str] | None = None,
                    content_type: str = "text/plain; charset=utf-8") -> None:
        self.send_head(status, len(body), headers, content_type)
        self.wfile.write(body)

    def send_head(self, status: int, length: int | None, headers: dict[str, str] | None = None,
                  content_type: str = "text/plain; charset=utf-8") -> None:
        """Status and headers only, announcing `length` bytes (None: no Content-Length), for handlers
        that then write the body their own way (slowly, partly, endlessly)."""
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        if length is not None:
            self.send_header("Content-Length", str(length))
        self.end_headers()


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    owner: "FixtureServer"


class FixtureServer:
    """`with FixtureServer() as srv: srv.serve('/feed', xml, content_type=...); srv.url('/feed')`."""

    def __init__(self, host: str = "127.0.0.1", tls: ssl.SSLContext | None = None) -> None:
        """`tls`: a server-side context, to serve HTTPS (tests/pki.py makes one)."""
        assert host.startswith("127."), "fixtures are only ever served on loopback"
        self.routes: dict[str, Route] = {}
        self.requests: list[Request] = []
        self.connections: list[tuple[str, int]] = []
        """The client address of every connection accepted (keep-alive: one for many requests)."""
        self.on_request: Callable[[Request], None] | None = None
        self._httpd = _Server((host, 0), Handler)
        self._httpd.owner = self
        if tls is not None:
            self._httpd.socket = tls.wrap_socket(self._httpd.socket, server_side=True)
        self.scheme = "https" if tls is not None else "http"
        self.host, self.port = self._httpd.server_address[:2]
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    @property
    def base(self) -> str:
        return f"{self.scheme}://{self.host}:{self.port}"

    def url(self, path: str) -> str:
        return self.base + path

    def serve(self, path: str, body: bytes | str = b"", **kwargs: object) -> str:
        if isinstance(body, str):
            body = body.encode("utf-8")
        self.routes[path] = Route(body=body, **kwargs)  # type: ignore[arg-type]
        return self.url(path)

    def handle(self, path: str, handler: Callable[[Handler], None]) -> str:
        self.routes[path] = Route(handler=handler)
        return self.url(path)

    def redirect(self, path: str, to: str, status: int = 301) -> str:
        assert to.startswith(("/", "http://127.", "https://127.")), "redirects stay on loopback"
        target = self.url(to) if to.startswith("/") else to
        return self.handle(path, lambda h: h.send_simple(status, b"", {"Location": target}))

    def hits(self, path: str) -> list[Request]:
        return [r for r in self.requests if r.path == path]

    def start(self) -> "FixtureServer":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()

    def __enter__(self) -> "FixtureServer":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
