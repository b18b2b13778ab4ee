"""Benchmark of the weekly digest: building and rendering every member's email, and sending over SMTP.

One command: `.venv/bin/python bench/digest.py [--articles 5000] [--members 2000] [--topics 20]`.
It generates a database with N articles published in week 2026-W48 (through the ingestion API; about
one article in eight belongs to a story covered by several sources), T topics tagged by direct inserts
into article_topics, and M members (a third follow every topic, the others one to five topics). Then:

- build: `build_digest` of the week (one pass over the week's articles and tags);
- render: `member_digest` + `render_email` + serialisation of every member's message (target with
  build: <= 10 s);
- outbox: `deliver_week(send=False)`, i.e. the above plus writing one .eml per member and the deliveries;
- smtp: `deliver_week(send=True)` to an aiosmtpd server on 127.0.0.1, `smtp_rate` raised to 10,000/s so
  the pacing does not hide the throughput (target >= 50 messages/s).

Prints a table of the settings used and of the measures beside the targets, and exits 1 when one is
missed: build + render over 10 s, SMTP under 50 messages/s, a member with news not received exactly once,
or any delivery failed, bounced or left uncertain.
"""

from __future__ import annotations

import argparse
import email
import email.policy
import json
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from veille.config import default_settings  # noqa: E402
from veille.digest import build_digest, member_digest, week_bounds  # noqa: E402
from veille.mail import deliver_week, message_bytes, render_email  # noqa: E402
from veille.store import Store, iso  # noqa: E402
from veille.store.articles import FetchLog  # noqa: E402
from veille.types import Article, Source  # noqa: E402

WEEK = "2026-W48"
BASE = "http://127.0.0.1:9"
TOPIC_WORDS = [
    ("cybersecurite", "Cybersécurité", ["rançongiciel", "cyberattaque", "ANSSI"]),
    ("open-data", "Données et open data", ["open data", "jeux de données", "data.gouv.fr"]),
    ("inclusion", "Inclusion numérique", ["conseillers numériques", "France services", "illectronisme"]),
    ("sobriete", "Numérique responsable", ["sobriété numérique", "empreinte environnementale"]),
    ("thd", "Très haut débit", ["fibre optique", "réseau d'initiative publique"]),
    ("smart-city", "Territoire intelligent", ["capteurs", "hyperviseur", "éclairage intelligent"]),
    ("ia", "Intelligence artificielle", ["intelligence artificielle", "IA générative"]),
    ("dematerialisation", "Dématérialisation", ["démarches en ligne", "guichet numérique"]),
    ("mutualisation", "Mutualisation", ["syndicat mixte", "mutualisation"]),
    ("commande-publique", "Commande publique", ["marché public", "appel d'offres"]),
    ("rgpd", "Protection des données", ["RGPD", "CNIL", "DPO"]),
    ("logiciels-libres", "Logiciels libres", ["logiciel libre", "Adullact"]),
    ("ecole", "Numérique éducatif", ["collèges", "tablettes", "ENT"]),
    ("sante", "e-santé", ["téléconsultation", "Mon espace santé"]),
    ("mobilite", "Mobilités", ["MaaS", "transport à la demande"]),
    ("tourisme", "Tourisme numérique", ["office de tourisme", "billetterie"]),
    ("elections", "Vie démocratique", ["budget participatif", "consultation citoyenne"]),
    ("rh", "Ressources humaines", ["télétravail", "agents territoriaux"]),
    ("finances", "Finances locales", ["dotation", "budget primitif"]),
    ("urbanisme", "Urbanisme", ["permis de construire", "PLUi"]),
]
SENTENCES = [
    "Le conseil communautaire a adopté mardi soir une délibération sur le schéma directeur du numérique.",
    "Les élus veulent mutualiser les serveurs et les logiciels métiers entre les communes membres.",
    "Le projet est financé par l'État, la région et la Banque des Territoires à hauteur de deux millions d'euros.",
    "Les agents seront formés au cours du premier semestre, avant une généralisation à la rentrée.",
    "La collectivité publiera les résultats en données ouvertes sur son portail.",
    "Lire la suite",
]


def generate(path: Path, n_articles: int, n_members: int, n_topics: int, seed: int = 48) -> None:
    rnd = random.Random(seed)
    store = Store.open(path)
    sources = [Source(id=f"source-{i:02d}", name=f"Journal territorial n° {i}", type="feed", url=f"{BASE}/{i}.xml")
               for i in range(40)]
    store.sync_sources(sources)
    start, end = week_bounds(WEEK)
    span = (end - start).total_seconds()
    per_source: dict[str, list[Article]] = {}
    made = 0
    while made < n_articles:
        copies = rnd.choice([2, 3, 4]) if rnd.random() < 0.05 else 1
        story_hash = (rnd.getrandbits(62) | 1) if copies > 1 else 0  # far apart: distinct stories
        published = start + timedelta(seconds=rnd.uniform(0, span - 3600))
        for c in range(min(copies, n_articles - made)):
            source = sources[rnd.randrange(len(sources))]
            key = f"a{made}"
            lead = " ".join(rnd.sample(SENTENCES, 4))
            per_source.setdefault(source.id, []).append(Article(
                source_id=source.id, url=f"{BASE}/{source.id}/{key}", canonical_url=f"{BASE}/{source.id}/{key}",
                title=f"Article {made} : la commune n° {made % 977} accélère sa transition numérique",
                text=lead + "\n\n" + " ".join(SENTENCES[:3]) * 3, text_source="page",
                published_at=published + timedelta(minutes=c * 37), fetched_at=end, guid=key, summary=lead,
                simhash=story_hash,
            ))
            made += 1
    for source_id, articles in per_source.items():
        log = FetchLog(source_id=source_id, url=f"{BASE}/{source_id}.xml", started_at=end, duration_ms=1, status=200)
        store.save_source_batch(source_id, articles, log, [])
    topics = TOPIC_WORDS[:n_topics]
    with store.transaction():
        for position, (topic_id, label, _) in enumerate(topics):
            store.conn.execute(
                "INSERT INTO topics (id, label, position, rule_hash, rule_json, active, updated_at) "
                "VALUES (?, ?, ?, 'bench', '{}', 1, ?)", (topic_id, label, position, iso(end)))
        rows = []
        story_topics: dict[int, list] = {}  # the copies of a story share their topics
        for article_id, cluster_id in store.conn.execute("SELECT id, cluster_id FROM articles").fetchall():
            chosen = story_topics.setdefault(cluster_id, rnd.sample(topics, rnd.choice([1, 1, 1, 2, 2, 3])))
            for topic_id, _, words in chosen:
                hits = [{"keyword": w, "field": "body", "text": w} for w in rnd.sample(words, min(2, len(words)))]
                rows.append((article_id, topic_id, rnd.randint(1, 12), json.dumps(hits, ensure_ascii=False), iso(end)))
        store.conn.executemany("INSERT INTO article_topics (article_id, topic_id, score, hits, rule_hash, tagged_at) "
                               "VALUES (?, ?, ?, ?, 'bench', ?)", rows)
    ids = [t[0] for t in topics]
    for i in range(n_members):
        follows = None if i % 3 == 0 else rnd.sample(ids, rnd.randint(1, 5))
        store.upsert_member(f"membre{i}@commune-{i}.fr", f"Membre {i}", f"Commune {i}", follows)
    store.close()


BUILD_RENDER_TARGET = 10.0
"""Seconds at most for build_digest + rendering every member's email."""
SMTP_RATE_TARGET = 50.0
"""Messages per second at least over SMTP on loopback."""


def main() -> int:
    """Run the benchmark; 0 when every target is met, 1 otherwise."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--articles", type=int, default=5000)
    parser.add_argument("--members", type=int, default=2000)
    parser.add_argument("--topics", type=int, default=20)
    parser.add_argument("--keep", action="store_true", help="Keep the work directory (database, digests, outbox).")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="veille-bench-digest-"))
    try:
        missed = run(work, args)
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    if missed:
        print("\nTARGETS MISSED:\n" + "\n".join(f"- {m}" for m in missed), file=sys.stderr)
        return 1
    print("\nall targets met")
    return 0


def run(work: Path, args: argparse.Namespace) -> list[str]:
    """Run and print the measures; returns the targets missed (empty: all met)."""
    db = work / "veille.db"
    t0 = time.perf_counter()
    generate(db, args.articles, args.members, min(args.topics, len(TOPIC_WORDS)))
    generated = time.perf_counter() - t0
    settings = default_settings().replace(digests_dir=str(work / "digests"), public_url=f"{BASE}/veille",
                                          smtp_rate=10_000.0, mail_from="veille@territoires-numeriques.fr")
    store = Store.open(db)

    t0 = time.perf_counter()
    digest = build_digest(store, WEEK, settings, [])
    build = time.perf_counter() - t0
    members = store.list_members(active_only=True)
    t0 = time.perf_counter()
    messages = []
    for member in members:
        md = member_digest(digest, member)
        if md is not None:
            messages.append(message_bytes(render_email(md, settings)))
    render = time.perf_counter() - t0
    sent_members = len(messages)
    sizes = [len(m) for m in messages]
    html_sizes = [len(email.message_from_bytes(m, policy=email.policy.default).get_body(("html",)).get_content()
                      .encode()) for m in messages[::10]]
    del messages

    t0 = time.perf_counter()
    outbox = deliver_week(store, WEEK, settings, [], send=False)
    outbox_time = time.perf_counter() - t0

    # the SMTP server runs in its own process, as a real one would
    server = subprocess.Popen([sys.executable, "-m", "tests.smtpserver"], cwd=ROOT, stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    port = int(server.stdout.readline())
    smtp_settings = settings.replace(smtp_host="127.0.0.1", smtp_port=port, smtp_tls="none")
    t0 = time.perf_counter()
    report = deliver_week(store, WEEK, smtp_settings, [], send=True)
    smtp_time = time.perf_counter() - t0
    server.stdin.close()
    counts = json.loads(server.stdout.readline())
    server.wait()
    received = counts["messages"]
    once = all(n == 1 for n in counts["recipients"].values())
    expected = {m.email.lower() for m in members if member_digest(digest, m) is not None}
    everyone_once = once and set(counts["recipients"]) == expected and received == len(expected)
    store.close()

    rate = received / smtp_time if smtp_time else 0.0
    print(f"veille digest benchmark (work dir {work}{'' if args.keep else ', removed at exit'}, "
          f"data generated in {generated:.1f} s)\n")
    print("| setting | value |\n|---|---|")
    for name, value in [("articles in the week", args.articles), ("topics", len(digest.topics)),
                        ("members", len(members)), ("members with news", sent_members),
                        ("section_cap", settings.section_cap), ("smtp_rate (raised for the benchmark)", settings.smtp_rate),
                        ("SMTP server", "aiosmtpd on 127.0.0.1 in its own process, no TLS")]:
        print(f"| {name} | {value} |")
    print("\n| measure | result | target |\n|---|---|---|")
    print(f"| build_digest (stories, sections, counts) | {build:.2f} s | |")
    print(f"| render {sent_members} member emails (digest + MIME) | {render:.2f} s | |")
    print(f"| build + render | {build + render:.2f} s | <= 10 s |")
    print(f"| deliver_week outbox (build, write archive, {len(outbox.written)} .eml, deliveries) | {outbox_time:.2f} s | |")
    print(f"| deliver_week SMTP: {received} messages | {smtp_time:.2f} s = {rate:.0f} msg/s | >= 50 msg/s |")
    print(f"| message size: median / max | {statistics.median(sizes) / 1024:.0f} KiB / {max(sizes) / 1024:.0f} KiB | |")
    print(f"| HTML part, 1 member in 10 (Gmail clips above 102 KiB): median / max | {statistics.median(html_sizes) / 1024:.0f} KiB / "
          f"{max(html_sizes) / 1024:.0f} KiB | |")
    print(f"| SMTP outcome | sent {len(report.sent)}, failed {len(report.failed)}, uncertain {len(report.uncertain)}, "
          f"bounced {len(report.bounced)}, each recipient once: {once} | every member with news once, nothing failed |")

    missed = []
    if build + render > BUILD_RENDER_TARGET:
        missed.append(f"build + render took {build + render:.2f} s (target <= {BUILD_RENDER_TARGET:.0f} s)")
    if rate < SMTP_RATE_TARGET:
        missed.append(f"SMTP sent {rate:.0f} msg/s (target >= {SMTP_RATE_TARGET:.0f} msg/s)")
    if not everyone_once:
        missing = len(expected - set(counts["recipients"]))
        extra = sum(1 for r, n in counts["recipients"].items() if n != 1 or r not in expected)
        missed.append(f"not every member with news received their digest exactly once ({len(expected)} expected, "
                      f"{received} messages received, {missing} missing, {extra} unexpected or duplicated)")
    if report.failed or report.bounced or report.uncertain or report.error or len(report.sent) != len(expected):
        missed.append(f"deliveries did not all succeed: sent {len(report.sent)} of {len(expected)}, failed "
                      f"{len(report.failed)}, bounced {len(report.bounced)}, uncertain {len(report.uncertain)}"
                      + (f", error: {report.error}" if report.error else ""))
    return missed


if __name__ == "__main__":
    sys.exit(main())
