"""Feed parsing throughput: lxml fast path vs feedparser, one process and a ProcessPoolExecutor.

    .venv/bin/python bench/parse.py [--feeds 1000] [--entries 20]

Generates invented French RSS 2.0 feeds of the ingestion benchmark's shape (20 entries, ~35 KB, HTML
descriptions and content:encoded, dates with offsets) and parses them all. The ingestion target is
150 feeds/s cold on 2 cores for the whole pipeline, so parsing must stay far above it.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from veille.parse import parse_feed, parse_feed_feedparser  # noqa: E402

PARAGRAPH = ("<p>La communauté d’agglomération poursuit le déploiement de son <a href='/schema'>schéma "
             "directeur</a> numérique &amp; accompagne les {n} communes membres dans la dématérialisation "
             "des démarches, avec des conseillers numériques itinérants.</p>\n")


def make_feed(number: int, entries: int) -> bytes:
    items = []
    for i in range(entries):
        body = "".join(PARAGRAPH.format(n=number + i + k) for k in range(6))
        items.append(
            f"<item><title>Actualité {number}-{i} : l’agglo investit dans le numérique</title>"
            f"<link>https://www.agglo-{number}.example/actualites/{i}</link>"
            f'<guid isPermaLink="false">agglo-{number}-{i}</guid>'
            f"<pubDate>Mon, 03 Feb 2025 10:{i % 60:02d}:00 +0100</pubDate><dc:creator>Rédaction</dc:creator>"
            f"<description><![CDATA[{PARAGRAPH.format(n=i)}]]></description>"
            f"<content:encoded><![CDATA[{body}]]></content:encoded></item>")
    return ('<?xml version="1.0" encoding="UTF-8"?><rss version="2.0" '
            'xmlns:content="http://purl.org/rss/1.0/modules/content/" xmlns:dc="http://purl.org/dc/elements/1.1/">'
            f"<channel><title>Agglo {number}</title><link>https://www.agglo-{number}.example/</link>"
            f"<language>fr</language>{''.join(items)}</channel></rss>").encode()


def _fast(content: bytes) -> int:
    return len(parse_feed("bench", content, "https://www.agglo.example/feed").entries)


def _slow(content: bytes) -> int:
    return len(parse_feed_feedparser("bench", content, "https://www.agglo.example/feed").entries)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--feeds", type=int, default=1000)
    parser.add_argument("--entries", type=int, default=20)
    args = parser.parse_args()
    feeds = [make_feed(n, args.entries) for n in range(args.feeds)]
    size = sum(map(len, feeds)) / len(feeds) / 1000
    workers = os.cpu_count() or 1
    print(f"{args.feeds} feeds x {args.entries} entries, {size:.0f} KB each, {workers} cores\n")
    print(f"{'path':12} {'mode':26} {'feeds/s':>8} {'entries/s':>10}")
    for name, fn, count in (("lxml fast", _fast, len(feeds)), ("feedparser", _slow, max(1, len(feeds) // 4))):
        work = feeds[:count]
        start = time.perf_counter()
        total = sum(map(fn, work))
        rate = count / (time.perf_counter() - start)
        print(f"{name:12} {'single process':26} {rate:8.0f} {rate * total / count:10.0f}")
        with ProcessPoolExecutor(max_workers=workers) as pool:
            list(pool.map(fn, work[:workers]))  # start the workers outside the clock
            start = time.perf_counter()
            total = sum(pool.map(fn, work, chunksize=8))
            rate = count / (time.perf_counter() - start)
        print(f"{name:12} {f'ProcessPoolExecutor({workers})':26} {rate:8.0f} {rate * total / count:10.0f}")


if __name__ == "__main__":
    main()
