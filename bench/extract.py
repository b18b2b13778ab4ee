"""Extraction quality and throughput on the developer article set (../shared/data/articles).

    .venv/bin/python bench/extract.py [--rounds 5] [--configs]

Quality: aeb/ (reference article bodies) -> token precision/recall/F1 of lower-cased word tokens
(multiset overlap, mean over pages); trafilatura-fr/ (must/must-not segments) -> pooled segment F1.
Throughput: pages/s of `veille.extract.extract_page`, one process vs a ProcessPoolExecutor over all cores.
`--configs` also scores a few trafilatura option sets, to justify `EXTRACT_OPTIONS`.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from veille.extract import EXTRACT_OPTIONS, extract_page  # noqa: E402

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "articles"
_WORD = re.compile(r"\w+")


def load() -> list[tuple[str, str, bytes, dict]]:
    pages = []
    for folder in ("aeb", "trafilatura-fr"):
        for html_path in sorted((DATA / folder).glob("*.html")):
            truth = json.loads(html_path.with_suffix(".json").read_text(encoding="utf-8"))
            pages.append((folder, html_path.stem, html_path.read_bytes(), truth))
    return pages


def token_prf(output: str, reference: str) -> tuple[float, float, float]:
    got, want = Counter(_WORD.findall(output.lower())), Counter(_WORD.findall(reference.lower()))
    overlap = sum((got & want).values())
    p = overlap / sum(got.values()) if got else 0.0
    r = overlap / sum(want.values()) if want else 0.0
    return p, r, (2 * p * r / (p + r) if p + r else 0.0)


def norm(text: str) -> str:
    return " ".join(text.split())


def score(pages: list, texts: list[str]) -> dict[str, float]:
    aeb = [token_prf(text, truth["articleBody"]) for (folder, _, _, truth), text in zip(pages, texts)
           if folder == "aeb"]
    tp = fn = fp = 0
    for (folder, _, _, truth), text in zip(pages, texts):
        if folder != "trafilatura-fr":
            continue
        out = norm(text)
        tp += sum(norm(s) in out for s in truth.get("with", []))
        fn += sum(norm(s) not in out for s in truth.get("with", []))
        fp += sum(norm(s) in out for s in truth.get("without", []))
    p = tp / (tp + fp) if tp + fp else 0.0
    r = tp / (tp + fn) if tp + fn else 0.0
    return {
        "aeb_p": sum(x[0] for x in aeb) / len(aeb), "aeb_r": sum(x[1] for x in aeb) / len(aeb),
        "aeb_f1": sum(x[2] for x in aeb) / len(aeb),
        "fr_p": p, "fr_r": r, "fr_f1": 2 * p * r / (p + r) if p + r else 0.0,
    }


def _extract(args: tuple[bytes, str]) -> str:
    content, url = args
    return extract_page(content, url).text


def _trafilatura_text(args: tuple[bytes, str, dict]) -> str:
    import trafilatura

    content, url, options = args
    return trafilatura.extract(content, url=url, **options) or ""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5, help="passes over the 38 pages for throughput")
    parser.add_argument("--configs", action="store_true", help="also score alternative trafilatura options")
    args = parser.parse_args()
    if not DATA.is_dir():
        sys.exit(f"{DATA} is absent: this benchmark needs the developer article set")
    pages = load()
    jobs = [(content, truth.get("url") or f"https://{stem}.invalid/") for _, stem, content, truth in pages]

    rows: list[tuple[str, dict[str, float]]] = []
    if args.configs:
        variants = {
            "trafilatura.extract() defaults": {},
            "extract() no comments": {"include_comments": False},
            "extract() favor_precision": {"include_comments": False, "favor_precision": True},
            "extract() favor_recall": {"include_comments": False, "favor_recall": True},
            "extract() no tables": {"include_comments": False, "include_tables": False},
        }
        for name, options in variants.items():
            texts = [_trafilatura_text((c, u, options)) for c, u in jobs]
            rows.append((name, score(pages, texts)))
    texts = [_extract(job) for job in jobs]
    rows.append(("veille extract_page " + ",".join(k for k, v in EXTRACT_OPTIONS.items() if v is True), score(pages, texts)))

    print(f"\nQuality on {sum(p[0] == 'aeb' for p in pages)} aeb + {sum(p[0] != 'aeb' for p in pages)} "
          "trafilatura-fr pages")
    print(f"{'extractor':58} {'aeb P':>6} {'aeb R':>6} {'aeb F1':>7} {'fr P':>6} {'fr R':>6} {'fr F1':>6}")
    for name, s in rows:
        print(f"{name:58} {s['aeb_p']:6.3f} {s['aeb_r']:6.3f} {s['aeb_f1']:7.3f} "
              f"{s['fr_p']:6.3f} {s['fr_r']:6.3f} {s['fr_f1']:6.3f}")

    work = jobs * args.rounds
    start = time.perf_counter()
    for job in work:
        _extract(job)
    single = len(work) / (time.perf_counter() - start)
    workers = os.cpu_count() or 1
    with ProcessPoolExecutor(max_workers=workers) as pool:
        list(pool.map(_extract, jobs[:workers]))  # start the workers and import trafilatura outside the clock
        start = time.perf_counter()
        list(pool.map(_extract, work, chunksize=2))
        pooled = len(work) / (time.perf_counter() - start)
    megabytes = sum(len(c) for c, _ in jobs) / 1e6
    print(f"\nThroughput ({len(work)} pages, {megabytes * args.rounds:.1f} MB, {workers} cores)")
    print(f"{'mode':32} {'pages/s':>8} {'speed-up':>9}")
    print(f"{'single process':32} {single:8.1f} {1.0:9.2f}")
    print(f"{f'ProcessPoolExecutor({workers})':32} {pooled:8.1f} {pooled / single:9.2f}")


if __name__ == "__main__":
    main()
