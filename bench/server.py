"""A fast fixture server for benchmarks: serves a folder on 127.0.0.1 from its own process.

`python bench/server.py ROOT [--port 0] [--base-placeholder URL]` loads every file of ROOT, then prints
`http://127.0.0.1:PORT` on the first line of stdout and serves `ROOT/<path>` for `GET /<path>` until
killed (SIGTERM/SIGINT). It runs apart from veille so the server never shares a GIL with what is measured.

HTTP/1.1 keep-alive, ETag and Last-Modified with 304 answers on If-None-Match/If-Modified-Since, and
`Content-Encoding: gzip` when the client accepts it, as a production web server would. The protocol code
is veille.demo.LoopbackServer (the demo uses the same server in a thread). Files are loaded, compressed
and validated before the URL is printed, so serving costs nothing but the socket writes. Generated
corpora write absolute links with a placeholder base (never fetched) that is replaced by the real one.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
from datetime import datetime, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from veille.demo import LoopbackServer, Resource  # noqa: E402

TYPES = {
    ".rss": "application/rss+xml; charset=utf-8",
    ".atom": "application/atom+xml; charset=utf-8",
    ".xml": "application/xml; charset=utf-8",
    ".html": "text/html; charset=utf-8",
    ".txt": "text/plain; charset=utf-8",
}


class FolderSite:
    """Every file under a root as a ready `Resource`, keyed by request path."""

    def __init__(self, root: Path, placeholder: str | None = None) -> None:
        self.root = root.resolve()
        self.placeholder = placeholder.encode() if placeholder else None
        self.resources: dict[str, Resource] = {"/robots.txt": Resource("User-agent: *\nAllow: /\n", TYPES[".txt"])}

    def load(self, base: str) -> int:
        for file in self.root.rglob("*"):
            if not file.is_file():
                continue
            body = file.read_bytes()
            if self.placeholder:
                body = body.replace(self.placeholder, base.encode())
            modified = datetime.fromtimestamp(file.stat().st_mtime, timezone.utc).replace(microsecond=0)
            self.resources["/" + file.relative_to(self.root).as_posix()] = Resource(
                body, TYPES.get(file.suffix, "application/octet-stream"), last_modified=modified, compress=True)
        return len(self.resources)

    def __call__(self, path: str) -> Resource | None:
        return self.resources.get(path)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("root", type=Path, help="folder to serve")
    parser.add_argument("--port", type=int, default=0, help="port on 127.0.0.1 (0: any free port)")
    parser.add_argument("--base-placeholder", help="base URL written in the files, replaced by the server's own")
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    site = FolderSite(args.root, args.base_placeholder)
    server = LoopbackServer(site, port=args.port)

    def ready(srv: LoopbackServer) -> None:
        count = site.load(srv.base)
        print(srv.base, flush=True)
        print(f"serving {count} files from {site.root}", file=sys.stderr)

    server.serve_forever(ready)
    print(f"served {server.hits} requests", file=sys.stderr)
    sys.stderr.flush()
    os._exit(0)


if __name__ == "__main__":
    main()
